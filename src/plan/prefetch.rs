//! eStargz's prefetch, planned: what the server reads first
//! ([`crate::slim::first_loads`]) goes first in the layer that holds it,
//! followed by the landmark, so that a lazy pull fetches it at once.
//! A new layer's entries are put in that order here; each of min's layers
//! gets the list of its own entries to write first.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// Puts the entries of `layer` that `first` names first, with the
/// directories above them and the files their hard links name, keeping
/// their order (parents before children, a link's target before it);
/// records how many there are.
pub(super) fn put_first(layer: &mut LayerPlan, first: &BTreeSet<ImagePath>) {
    let mut moved: BTreeSet<ImagePath> = BTreeSet::new();
    for entry in &layer.entries {
        if !first.contains(&entry.path) {
            continue;
        }
        match entry.meta.kind {
            EntryKind::File => {}
            EntryKind::HardLink => {
                let target = entry.meta.link_target.as_deref().map(ImagePath::parse);
                if let Some(Ok(target)) = target {
                    moved.extend(target.ancestors());
                    moved.insert(target);
                }
            }
            _ => continue,
        }
        moved.extend(entry.path.ancestors());
        moved.insert(entry.path.clone());
    }
    if moved.is_empty() {
        // Nothing to prefetch here: the layer says so.
        layer.prefetch = Some(0);
        return;
    }
    let (mut entries, rest): (Vec<PlannedEntry>, Vec<PlannedEntry>) =
        std::mem::take(&mut layer.entries)
            .into_iter()
            .partition(|e| moved.contains(&e.path));
    let count = entries.len();
    entries.extend(rest);
    layer.entries = entries;
    layer.prefetch = Some(count);
}

/// For each of min's `count` layers, the files of `first` whose copy in the
/// composed image is that layer's (no new layer replaces it), in path
/// order.
pub(super) fn min_layers(
    min: &ScannedImage,
    layers: &[LayerPlan],
    first: &BTreeSet<ImagePath>,
    count: usize,
) -> BTreeMap<usize, Vec<ImagePath>> {
    let added: BTreeSet<&ImagePath> = layers
        .iter()
        .flat_map(|l| &l.entries)
        .map(|e| &e.path)
        .collect();
    let mut out: BTreeMap<usize, Vec<ImagePath>> = (0..count).map(|i| (i, Vec::new())).collect();
    for path in first.iter().filter(|p| !added.contains(p)) {
        let Some(node) = min.tree.get(path) else {
            continue;
        };
        if node.meta.kind != EntryKind::File {
            continue;
        }
        if let Some(paths) = out.get_mut(&(node.inode.layer as usize)) {
            paths.push(path.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind, target: Option<&str>) -> PlannedEntry {
        let mut meta = EntryMeta::plain_dir(0o755, 0);
        meta.kind = kind;
        meta.link_target = target.map(|t| t.as_bytes().to_vec());
        PlannedEntry {
            path: ImagePath::parse(path.as_bytes()).unwrap(),
            meta,
            content: Content::Inline(Vec::new()),
        }
    }

    fn layer(entries: Vec<PlannedEntry>) -> LayerPlan {
        LayerPlan {
            role: LayerRole::Core,
            part: None,
            notes: Vec::new(),
            steps: Vec::new(),
            entries,
            prefetch: None,
        }
    }

    fn paths(layer: &LayerPlan) -> Vec<String> {
        let name = |e: &PlannedEntry| String::from_utf8_lossy(e.path.as_bytes()).into_owned();
        layer.entries.iter().map(name).collect()
    }

    fn set(paths: &[&str]) -> BTreeSet<ImagePath> {
        paths
            .iter()
            .map(|p| ImagePath::parse(p.as_bytes()).unwrap())
            .collect()
    }

    #[test]
    fn first_files_come_first_with_their_directories_and_link_targets_in_order() {
        let mut plan = layer(vec![
            entry("a", EntryKind::Dir, None),
            entry("a/doc", EntryKind::File, None),
            entry("a/lib", EntryKind::Dir, None),
            entry("a/lib/libx.so.1", EntryKind::File, None),
            entry(
                "a/lib/liby.so",
                EntryKind::HardLink,
                Some("a/lib/libx.so.1"),
            ),
            entry("b", EntryKind::Dir, None),
            entry("b/run", EntryKind::File, None),
            entry("b/rest", EntryKind::File, None),
        ]);
        // A directory named alone is not prefetched: files are.
        put_first(&mut plan, &set(&["a/lib/liby.so", "b/run", "a"]));
        assert_eq!(
            paths(&plan),
            [
                "a",
                "a/lib",
                "a/lib/libx.so.1",
                "a/lib/liby.so",
                "b",
                "b/run",
                "a/doc",
                "b/rest"
            ]
        );
        assert_eq!(plan.prefetch, Some(6));
    }

    #[test]
    fn a_layer_with_nothing_read_first_says_so() {
        let mut plan = layer(vec![
            entry("a", EntryKind::Dir, None),
            entry("a/doc", EntryKind::File, None),
        ]);
        put_first(&mut plan, &set(&["elsewhere"]));
        assert_eq!(paths(&plan), ["a", "a/doc"]);
        assert_eq!(plan.prefetch, Some(0));
    }
}
