//! The tag grammar of `serve`: component names joined by `.`, in any order
//! (`python.onnxruntime.checksum.local`); `latest` is every component full
//! has. Each name's kind is found by looking it up in full; a name full
//! offers under two kinds is ambiguous. A name that itself holds dots
//! (`pytorch-2.1`) is matched whole, longest first. Every spelling of one
//! selection has one canonical tag: the names sorted.

use crate::triton::{Component, ComponentKind};

/// The longest tag accepted (the distribution spec's limit).
pub(crate) const MAX_TAG: usize = 128;

/// Why a tag names no image, for a `MANIFEST_UNKNOWN` message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TagError(pub String);

/// The components a tag names, in canonical order.
pub(crate) fn parse(tag: &str, offered: &[Component]) -> Result<Vec<Component>, TagError> {
    if tag.len() > MAX_TAG {
        return Err(TagError(format!("tags are at most {MAX_TAG} characters")));
    }
    if tag == "latest" {
        return Ok(canonical_order(offered.to_vec()));
    }
    let kinds = |name: &str| -> Vec<ComponentKind> {
        offered
            .iter()
            .filter(|c| c.name == name)
            .map(|c| c.kind)
            .collect()
    };
    let parts: Vec<&str> = tag.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(TagError(format!(
            "{tag:?} has an empty component name: a tag is component names joined by single dots, \
             such as python.onnxruntime"
        )));
    }
    let mut chosen = Vec::new();
    let mut i = 0;
    while i < parts.len() {
        let matched = (i + 1..=parts.len())
            .rev()
            .map(|j| (j, parts[i..j].join(".")))
            .find(|(_, name)| !kinds(name).is_empty());
        let Some((j, name)) = matched else {
            return Err(unknown(parts[i], offered));
        };
        match kinds(&name).as_slice() {
            [kind] => chosen.push(Component { kind: *kind, name }),
            several => {
                let nouns: Vec<&str> = several.iter().map(|k| k.noun()).collect();
                return Err(TagError(format!(
                    "{name:?} is ambiguous: full has a {} of that name",
                    nouns.join(" and a ")
                )));
            }
        }
        i = j;
    }
    if chosen.is_empty() {
        return Err(TagError("a tag names at least one component".into()));
    }
    Ok(canonical_order(chosen))
}

fn canonical_order(mut components: Vec<Component>) -> Vec<Component> {
    components.sort_by(|a, b| (&a.name, a.kind).cmp(&(&b.name, b.kind)));
    components.dedup();
    components
}

/// The one tag every spelling of a selection maps to: its names, sorted.
pub(crate) fn canonical(components: &[Component]) -> String {
    let mut names: Vec<&str> = components.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    names.dedup();
    names.join(".")
}

fn unknown(name: &str, offered: &[Component]) -> TagError {
    let mut names: Vec<&str> = offered.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    names.dedup();
    let closest = names
        .iter()
        .map(|o| (strsim::jaro_winkler(name, o), *o))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, o)| format!("did you mean {o:?}? "))
        .unwrap_or_default();
    TagError(format!(
        "full has no component named {name:?}; {closest}components: {} (or latest for all)",
        names.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered() -> Vec<Component> {
        [
            (ComponentKind::Backend, "python"),
            (ComponentKind::Backend, "onnxruntime"),
            (ComponentKind::Backend, "pytorch-2.1"),
            (ComponentKind::Backend, "local"),
            (ComponentKind::RepoAgent, "checksum"),
            (ComponentKind::Cache, "local"),
            (ComponentKind::Cache, "redis"),
        ]
        .iter()
        .map(|(k, n)| Component {
            kind: *k,
            name: n.to_string(),
        })
        .collect()
    }

    #[test]
    fn every_spelling_of_a_selection_is_one_canonical_tag() {
        let a = parse("python.onnxruntime.checksum", &offered()).unwrap();
        let b = parse("checksum.python.onnxruntime", &offered()).unwrap();
        assert_eq!(a, b);
        assert_eq!(canonical(&a), "checksum.onnxruntime.python");
        assert_eq!(a[0].kind, ComponentKind::RepoAgent);
        let dotted = parse("pytorch-2.1.redis", &offered()).unwrap();
        assert_eq!(canonical(&dotted), "pytorch-2.1.redis");
        let all = parse("latest", &offered()).unwrap();
        assert_eq!(all.len(), offered().len());
    }

    #[test]
    fn unknown_ambiguous_and_long_tags_say_why() {
        let err = parse("python.onnxruntim", &offered()).unwrap_err();
        assert!(
            err.0.contains("\"onnxruntim\"") && err.0.contains("did you mean \"onnxruntime\""),
            "{err:?}"
        );
        let err = parse("local.python", &offered()).unwrap_err();
        assert!(
            err.0.contains("ambiguous") && err.0.contains("backend and a cache"),
            "{err:?}"
        );
        let err = parse(&"a".repeat(129), &offered()).unwrap_err();
        assert!(err.0.contains("128"));
        assert!(parse("python..checksum", &offered()).is_err());
    }

    #[test]
    fn empty_names_are_named_as_such() {
        let offered = [Component {
            kind: ComponentKind::Backend,
            name: "python".into(),
        }];
        for tag in ["python..python", ".python", "python.", "."] {
            let TagError(message) = parse(tag, &offered).unwrap_err();
            assert!(message.contains("empty component name"), "{tag}: {message}");
        }
    }
}
