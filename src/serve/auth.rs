//! HTTP Basic authentication against an htpasswd file of bcrypt entries
//! (`htpasswd -B`). A password checked once is remembered (by its SHA-256,
//! never in clear), since clients send credentials with every request and
//! bcrypt is slow on purpose.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use axum::http::{header, HeaderMap};
use base64::Engine;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};

#[derive(Default)]
pub(crate) struct Users {
    /// user → bcrypt hash; empty: no authentication.
    hashes: HashMap<String, String>,
    /// (user, SHA-256 of a password) found good.
    good: Mutex<HashSet<(String, String)>>,
}

impl Users {
    pub(crate) fn load(path: &Path) -> Result<Users> {
        let text = std::fs::read_to_string(path).ctx(|| format!("reading {}", path.display()))?;
        let mut hashes = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(Error::new(format!(
                    "{}:{}: not USER:HASH",
                    path.display(),
                    n + 1
                )));
            };
            if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
                return Err(Error::new(format!(
                    "{}:{}: {user}'s password is not a bcrypt hash",
                    path.display(),
                    n + 1
                ))
                .hint("write the file with `htpasswd -B`"));
            }
            hashes.insert(user.to_string(), hash.to_string());
        }
        if hashes.is_empty() {
            return Err(Error::new(format!("{} names no user", path.display()))
                .hint("add one with `htpasswd -B FILE USER`"));
        }
        Ok(Users {
            hashes,
            good: Mutex::default(),
        })
    }

    /// `Ok` when no credentials are needed or good ones were given.
    pub(crate) fn check(&self, headers: &HeaderMap) -> std::result::Result<(), &'static str> {
        if self.hashes.is_empty() {
            return Ok(());
        }
        let credentials = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok());
        let Some((user, password)) = credentials.as_deref().and_then(|c| c.split_once(':')) else {
            return Err("authentication required");
        };
        let key = (
            user.to_string(),
            Digest::of(password.as_bytes()).to_string(),
        );
        if self.good.lock().expect("not poisoned").contains(&key) {
            return Ok(());
        }
        let valid = self
            .hashes
            .get(user)
            .is_some_and(|hash| bcrypt::verify(password, hash).unwrap_or(false));
        if !valid {
            return Err("wrong user or password");
        }
        self.good.lock().expect("not poisoned").insert(key);
        Ok(())
    }
}
