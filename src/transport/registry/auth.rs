//! Registry credentials and authentication challenges.
//!
//! Credentials come from `--authfile`/`REGISTRY_AUTH_FILE` (the `auths` map
//! of a containers-auth.json) or Docker's config (`auths`, `credsStore`,
//! `credHelpers`, through the docker_credential crate). They are never
//! printed: their Debug form is redacted, and errors name only the registry.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use serde_json::Value;

use crate::error::{Error, IoContext, Result};

#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (Docker's `identitytoken`).
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

impl Credential {
    pub(crate) fn basic_header(&self) -> Option<String> {
        match self {
            Credential::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Credential::IdentityToken(_) => None,
        }
    }
}

/// Keys under which a registry's credentials may be stored.
fn keys_for(registry: &str) -> Vec<String> {
    if registry == super::reference::DOCKER_HUB {
        vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
        ]
    } else {
        vec![
            registry.to_string(),
            format!("https://{registry}"),
            format!("http://{registry}"),
            format!("https://{registry}/v1/"),
        ]
    }
}

/// Finds credentials for `registry`: the auth file if one is named (flag or
/// REGISTRY_AUTH_FILE), else Docker's configuration. `None` means anonymous.
pub(crate) fn lookup(registry: &str, authfile: Option<&Path>) -> Result<Option<Credential>> {
    let from_env = std::env::var_os("REGISTRY_AUTH_FILE").map(std::path::PathBuf::from);
    if let Some(file) = authfile.map(Path::to_path_buf).or(from_env) {
        return from_auth_file(&file, registry);
    }
    for key in keys_for(registry) {
        match docker_credential::get_credential(&key) {
            Ok(docker_credential::DockerCredential::UsernamePassword(username, password)) => {
                return Ok(Some(Credential::Basic { username, password }))
            }
            Ok(docker_credential::DockerCredential::IdentityToken(token)) => {
                return Ok(Some(Credential::IdentityToken(token)))
            }
            Err(_) => continue,
        }
    }
    Ok(None)
}

fn from_auth_file(file: &Path, registry: &str) -> Result<Option<Credential>> {
    let text = std::fs::read(file).ctx(|| format!("reading the auth file {}", file.display()))?;
    let config: Value = serde_json::from_slice(&text)
        .ctx(|| format!("the auth file {} is not valid JSON", file.display()))?;
    let auths = config.get("auths").and_then(Value::as_object);
    let Some(entry) = keys_for(registry)
        .iter()
        .find_map(|k| auths.and_then(|a| a.get(k)))
    else {
        return Ok(None);
    };
    if let Some(token) = entry.get("identitytoken").and_then(Value::as_str) {
        return Ok(Some(Credential::IdentityToken(token.to_string())));
    }
    let encoded = entry
        .get("auth")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        })
        .ok_or_else(|| {
            Error::new(format!(
                "the auth file {} has an unreadable entry for {registry}",
                file.display()
            ))
            .hint("its `auth` must be base64 of USER:PASSWORD")
        })?;
    Ok(Some(Credential::Basic {
        username: decoded.0,
        password: decoded.1,
    }))
}

/// A `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

/// Parses `Bearer realm="...",service="...",scope="..."` (or `Basic realm=...`).
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let b = parse_challenge(r#"Basic realm="basic-realm""#).unwrap();
        assert_eq!(b.scheme, "basic");
    }

    #[test]
    fn reads_auth_files_and_redacts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            &file,
            format!(r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{auth}"}}}}}}"#),
        )
        .unwrap();
        let cred = lookup("127.0.0.1:5000", Some(&file)).unwrap().unwrap();
        assert_eq!(
            cred,
            Credential::Basic {
                username: "alice".into(),
                password: "s3cret".into()
            }
        );
        assert!(!format!("{cred:?}").contains("s3cret"));
        assert_eq!(lookup("other:1", Some(&file)).unwrap(), None);
    }
}
