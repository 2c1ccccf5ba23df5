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
