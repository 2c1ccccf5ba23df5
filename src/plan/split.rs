//! `--max-layer-size`: layers cut into parts, by path, that each fit.

use std::collections::{HashMap, HashSet};

use super::layers::relink;
use super::*;

/// The bytes an entry takes in an uncompressed layer: its header, the
/// extension headers of a long name or link or of extended attributes, and
/// its content padded to 512.
fn tar_cost(entry: &PlannedEntry) -> u64 {
    let block = |n: u64| n.div_ceil(512) * 512;
    let mut cost = 512 + block(entry.meta.size);
    let long = |n: usize| if n > 100 { 512 + block(n as u64) } else { 0 };
    cost += long(entry.path.as_bytes().len() + 1);
    cost += long(entry.meta.link_target.as_ref().map_or(0, Vec::len));
    if !entry.meta.xattrs.is_empty() {
        let records: usize = entry
            .meta
            .xattrs
            .iter()
            .map(|(k, v)| k.len() + v.len() + 32)
            .sum();
        cost += 512 + block(records as u64);
    }
    cost
}

/// Splits layers whose content passes `cap` into several, by path (in
/// order), so that each compresses to at most `cap` bytes: compression
/// never grows data by more than a small margin, which is kept free. The
/// first part keeps the layer's steps; the others say they continue it.
pub(super) fn split_layers(layers: Vec<LayerPlan>, cap: Option<u64>) -> Result<Vec<LayerPlan>> {
    let Some(cap) = cap else {
        return Ok(layers);
    };
    // End-of-archive blocks, gzip framing and stored-block overhead.
    let budget = cap.saturating_sub(cap / 1000 + 2048);
    let mut out = Vec::new();
    for layer in layers {
        let total: u64 = layer.entries.iter().map(tar_cost).sum();
        if total <= budget {
            out.push(layer);
            continue;
        }
        let LayerPlan {
            role,
            notes,
            steps,
            entries,
            ..
        } = layer;
        let parts = split_entries(entries, budget).map_err(|path_cost| {
            let (path, cost) = path_cost;
            Error::new(format!(
                "{} takes {} bytes in the {} layer, more than --max-layer-size allows ({cap} bytes, less a margin for compression)",
                path.display_abs(),
                cost,
                role
            ))
            .hint("a file cannot be split across layers; raise --max-layer-size")
        })?;
        let count = parts.len();
        for (i, mut entries) in parts.into_iter().enumerate() {
            // Copies made for links whose target is elsewhere share content.
            relink(&mut entries);
            // The first part keeps what the layer says; the others continue it.
            let (notes, steps) = if i == 0 {
                (notes.clone(), steps.clone())
            } else {
                (Vec::new(), Vec::new())
            };
            out.push(LayerPlan {
                role: role.clone(),
                part: Some(Part {
                    number: i + 1,
                    of: count,
                }),
                notes,
                steps,
                entries,
                prefetch: None,
            });
        }
    }
    Ok(out)
}

/// Cuts a layer's entries (in path order) into parts of at most `budget`
/// tar bytes; a hard link whose target went into an earlier part becomes
/// a copy of it. An entry larger than the budget is the error: its path and
/// its cost.
fn split_entries(
    entries: Vec<PlannedEntry>,
    budget: u64,
) -> std::result::Result<Vec<Vec<PlannedEntry>>, (ImagePath, u64)> {
    let mut parts: Vec<Vec<PlannedEntry>> = vec![Vec::new()];
    let mut in_part: HashSet<ImagePath> = HashSet::new();
    let mut files: HashMap<ImagePath, PlannedEntry> = HashMap::new();
    let mut used = 0;
    for mut entry in entries {
        if entry.meta.kind == EntryKind::File {
            files.insert(entry.path.clone(), entry.clone());
        }
        // A hard link's target must be in its own layer part.
        let materialize = |entry: &mut PlannedEntry, in_part: &HashSet<ImagePath>| {
            let target = entry
                .meta
                .link_target
                .as_deref()
                .and_then(|t| ImagePath::parse(t).ok());
            if entry.meta.kind != EntryKind::HardLink
                || target.as_ref().is_some_and(|t| in_part.contains(t))
            {
                return;
            }
            if let Some(file) = target.and_then(|t| files.get(&t)) {
                *entry = PlannedEntry {
                    path: entry.path.clone(),
                    ..file.clone()
                };
            }
        };
        materialize(&mut entry, &in_part);
        let mut cost = tar_cost(&entry);
        if used + cost > budget && !parts.last().is_some_and(Vec::is_empty) {
            parts.push(Vec::new());
            in_part.clear();
            used = 0;
            materialize(&mut entry, &in_part);
            cost = tar_cost(&entry);
        }
        if cost > budget {
            return Err((entry.path, cost));
        }
        used += cost;
        in_part.insert(entry.path.clone());
        parts.last_mut().expect("one part at least").push(entry);
    }
    Ok(parts)
}
