//! What a composed image says about where it came from: OCI annotations on
//! its manifest, as crane `rebase` and BuildKit write them for the base
//! image, plus our own for full and the selection. The creation time and
//! the selection are config labels too (`docker inspect` shows them, and
//! Dockerfile.compose writes them). Names and digests stay out of the
//! config: they depend on the transport the sources were read from (a
//! registry's manifest digest, an archive's image ID), and the config and
//! layers must not.

use std::collections::BTreeMap;

use crate::config::ConfigChange;
use crate::digest::Digest;
use crate::triton::{Component, ComponentKind};

pub(crate) const BASE_NAME: &str = "org.opencontainers.image.base.name";
pub(crate) const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
pub(crate) use crate::manifest::CREATED_ANNOTATION as CREATED;
/// full's reference and digest, and the selection, under our own prefix.
pub(crate) const FULL_NAME: &str = "io.triton-compose.full.name";
pub(crate) const FULL_DIGEST: &str = "io.triton-compose.full.digest";
pub(crate) const SELECTION: &str = "io.triton-compose.selection";

/// A source image as provenance names it.
pub(crate) struct Source<'a> {
    /// The reference as given (`oci:DIR:TAG`, a registry reference, ...).
    pub name: &'a str,
    /// Its manifest's digest (or image ID, see [`crate::image::SourceImage::id`]).
    pub id: Option<&'a Digest>,
}

/// A reference others can pull: registry references and engine images.
/// Local files (OCI layouts, archives) have none: their paths would make
/// the output depend on where the inputs lie.
pub(crate) fn pullable_name(name: &str) -> Option<String> {
    if name.starts_with("oci:") || name.starts_with("docker-archive:") {
        return None;
    }
    let name = name.strip_prefix("docker-daemon:").unwrap_or(name);
    Some(name.strip_prefix("docker://").unwrap_or(name).to_string())
}

/// The selection as one line: `backends=onnxruntime,python;caches=local`,
/// kinds and names sorted, so that every spelling of one selection gives
/// the same bytes.
pub(crate) fn selection(components: &[Component]) -> String {
    let mut parts = Vec::new();
    for (kind, word) in [
        (ComponentKind::Backend, "backends"),
        (ComponentKind::RepoAgent, "repoagents"),
        (ComponentKind::Cache, "caches"),
    ] {
        let mut names: Vec<&str> = components
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.name.as_str())
            .collect();
        names.sort();
        names.dedup();
        if !names.is_empty() {
            parts.push(format!("{word}={}", names.join(",")));
        }
    }
    parts.join(";")
}

/// RFC 3339 in UTC for seconds since the epoch.
pub(crate) fn rfc3339(seconds: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The annotations of a composed image.
pub(crate) fn annotations(
    min: &Source<'_>,
    full: &Source<'_>,
    components: &[Component],
    timestamp: u64,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(name) = pullable_name(min.name) {
        out.insert(BASE_NAME.to_string(), name);
    }
    if let Some(id) = min.id {
        out.insert(BASE_DIGEST.to_string(), id.to_string());
    }
    out.insert(CREATED.to_string(), rfc3339(timestamp));
    if let Some(name) = pullable_name(full.name) {
        out.insert(FULL_NAME.to_string(), name);
    }
    if let Some(id) = full.id {
        out.insert(FULL_DIGEST.to_string(), id.to_string());
    }
    out.insert(SELECTION.to_string(), selection(components));
    out
}

/// The annotations that are config labels too: the creation time and the
/// selection.
pub(crate) fn labels(annotations: &BTreeMap<String, String>) -> Vec<ConfigChange> {
    annotations
        .iter()
        .filter(|(k, _)| [CREATED, SELECTION].contains(&k.as_str()))
        .map(|(k, v)| ConfigChange::Label(k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn one_selection_one_spelling() {
        let c = |kind, name: &str| Component {
            kind,
            name: name.into(),
        };
        let a = [
            c(ComponentKind::Cache, "local"),
            c(ComponentKind::Backend, "python"),
            c(ComponentKind::Backend, "onnxruntime"),
        ];
        let b = [
            c(ComponentKind::Backend, "onnxruntime"),
            c(ComponentKind::Backend, "python"),
            c(ComponentKind::Cache, "local"),
        ];
        assert_eq!(selection(&a), "backends=onnxruntime,python;caches=local");
        assert_eq!(selection(&a), selection(&b));
        assert_eq!(pullable_name("oci:/x/y:latest"), None);
        assert_eq!(
            pullable_name("docker://nvcr.io/nvidia/tritonserver:24.10-py3-min").as_deref(),
            Some("nvcr.io/nvidia/tritonserver:24.10-py3-min")
        );
    }
}
