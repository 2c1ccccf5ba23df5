//! Registry references as Docker spells them: `[host[:port]/]path[:tag][@digest]`,
//! with Docker Hub's defaults (`docker.io`, `library/`, `latest`).

use std::fmt;

use crate::digest::Digest;
use crate::error::{Error, Result};

pub(crate) const DOCKER_HUB: &str = "docker.io";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` as written (`docker.io` for Docker Hub).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference> {
        let bad = |why: &str| {
            Error::new(format!("invalid image reference {text:?}: {why}"))
                .hint("write it as [host[:port]/]repository[:tag][@sha256:digest]")
        };
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (
                rest,
                Some(digest.parse::<Digest>().map_err(|e| bad(e.message()))?),
            ),
            None => (text, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => {
                (&rest[..i], Some(rest[i + 1..].to_string()))
            }
            _ => (rest, None),
        };
        if name.is_empty() {
            return Err(bad("no repository"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let valid_component = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
                && !c.starts_with(['.', '_', '-'])
        };
        if !repository.split('/').all(valid_component) {
            return Err(bad(
                "repository names use lowercase letters, digits and . _ - separated by /",
            ));
        }
        if let Some(tag) = &tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                && !tag.starts_with(['.', '-']);
            if !ok {
                return Err(bad("tags use letters, digits and . _ - (at most 128)"));
            }
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host to talk to (Docker Hub's API host for `docker.io`).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// What goes in `/v2/<repo>/manifests/<here>`: the digest if given.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// True for registries reached on this machine, which Docker lets speak
    /// plain HTTP.
    pub fn is_local(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => &self.registry,
        };
        host == "localhost" || host.starts_with("127.") || host == "[::1]"
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_references() {
        let r = Reference::parse("nvcr.io/nvidia/tritonserver:24.10-py3").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("nvcr.io", "nvidia/tritonserver")
        );
        assert_eq!(r.tag.as_deref(), Some("24.10-py3"));
        let r = Reference::parse("ubuntu").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "library/ubuntu")
        );
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("localhost:5000/triton/full@{d}")).unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.manifest_reference(), d);
        assert!(r.is_local());
        assert!(Reference::parse("127.0.0.1:5000/x:1").unwrap().is_local());
        assert!(!Reference::parse("nvcr.io/x").unwrap().is_local());
        assert!(Reference::parse("Upper/Case").is_err());
        assert!(Reference::parse("x:bad tag").is_err());
        assert!(Reference::parse("x@sha256:123").is_err());
    }
}
