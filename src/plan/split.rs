//! `--max-layer-size`: layers cut into parts, by path, that each fit
//! under the cap once compressed.

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

/// A layer as it was written: its compressed size and what each entry
/// cost compressed (read off the compressed stream); `costs` is needed only
/// when the size passes the cap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Measured {
    pub size: u64,
    pub costs: Option<Vec<u64>>,
}

/// The measurement of a layer with these entries, if it was written
/// before: what lets the plan cut by compressed size.
pub(crate) type Measure<'a> = &'a dyn Fn(&LayerPlan) -> Option<Measured>;

/// How many times a cut is made tighter when a part came out over the
/// cap (the costs of entries are estimates).
const TIGHTENINGS: usize = 8;

/// The layers, cut where `--max-layer-size` needs it, and which of them
/// must be written before it is known whether they fit.
pub(super) struct Split {
    pub layers: Vec<LayerPlan>,
    pub unmeasured: Vec<usize>,
}

/// Cuts the layers whose compressed size passes `cap` into parts, by path
/// (in order), that each compress to at most `cap`, as registries check.
///
/// A layer whose tar is under `cap` (less what compression can add) fits
/// whatever it compresses to. Another is cut only once it was measured
/// (written, `measured`) and came out over the cap; until then it is
/// listed as unmeasured. Its parts are cut from the measured costs of its
/// entries, then checked against their own measurements: a part over the
/// cap makes the cut tighter. The first part keeps the layer's steps; the
/// others say they continue it.
pub(super) fn split_layers(
    layers: Vec<LayerPlan>,
    cap: Option<u64>,
    measured: Option<Measure<'_>>,
) -> Result<Split> {
    let mut split = Split {
        layers: Vec::new(),
        unmeasured: Vec::new(),
    };
    let Some(cap) = cap else {
        split.layers = layers;
        return Ok(split);
    };
    let measure = |layer: &LayerPlan| measured.and_then(|m| m(layer));
    for layer in layers {
        let costs = match fits(&layer, cap, &measure) {
            Fit::Over(costs) => costs,
            fit => {
                if matches!(fit, Fit::Unknown) {
                    split.unmeasured.push(split.layers.len());
                }
                split.layers.push(layer);
                continue;
            }
        };
        for part in cut_measured(layer, &costs, cap, &measure)? {
            if matches!(fits(&part, cap, &measure), Fit::Unknown) {
                split.unmeasured.push(split.layers.len());
            }
            split.layers.push(part);
        }
    }
    Ok(split)
}

/// What is known of whether a layer fits under the cap.
enum Fit {
    Fits,
    /// It may pass the cap: it must be measured.
    Unknown,
    /// It was measured over the cap; what each entry costs.
    Over(Vec<u64>),
}

fn fits(layer: &LayerPlan, cap: u64, measure: &dyn Fn(&LayerPlan) -> Option<Measured>) -> Fit {
    // Gzip's framing and stored blocks, zstd's frame, the archive's end.
    let bound = cap.saturating_sub(cap / 1000 + 2048);
    if layer.entries.iter().map(tar_cost).sum::<u64>() <= bound {
        return Fit::Fits;
    }
    match measure(layer) {
        None => Fit::Unknown,
        Some(m) if m.size <= cap => Fit::Fits,
        Some(Measured {
            costs: Some(costs), ..
        }) if costs.len() == layer.entries.len() => Fit::Over(costs),
        Some(_) => Fit::Unknown,
    }
}

/// Cuts a layer measured over `cap` by its entries' costs, tighter each
/// time a measured part still passes the cap.
fn cut_measured(
    layer: LayerPlan,
    costs: &[u64],
    cap: u64,
    measure: &dyn Fn(&LayerPlan) -> Option<Measured>,
) -> Result<Vec<LayerPlan>> {
    // Costs are spread over gzip's 1 MiB members: a part may take up to a
    // member's worth more at each end than its entries' costs say.
    let mut budget = cap - cap / 50 - (cap / 10).min(1 << 20);
    for _ in 0..TIGHTENINGS {
        let parts = parts_of(&layer, cut_entries(layer.entries.clone(), budget, costs));
        let mut worst = 0;
        for part in &parts {
            let Some(size) = measure(part).map(|m| m.size).filter(|&size| size > cap) else {
                continue;
            };
            let files: Vec<&PlannedEntry> = (part.entries.iter())
                .filter(|e| e.meta.kind == EntryKind::File)
                .collect();
            if let [file] = files[..] {
                return Err(Error::new(format!(
                    "{} compresses to {size} bytes in the {} layer, more than --max-layer-size allows ({cap} bytes)",
                    file.path.display_abs(),
                    layer.role
                ))
                .hint(format!(
                    "a file cannot be split across layers; raise --max-layer-size to at least {size}"
                )));
            }
            worst = worst.max(size);
        }
        if worst == 0 {
            return Ok(parts);
        }
        budget = (u128::from(budget) * u128::from(cap) * 97 / 100 / u128::from(worst)) as u64;
    }
    Err(Error::new(format!(
        "the {} layer could not be cut into parts of at most {cap} bytes compressed (--max-layer-size)",
        layer.role
    ))
    .hint("raise --max-layer-size"))
}

/// The layers of `parts`: the first keeps what the layer says, the others
/// continue it.
fn parts_of(layer: &LayerPlan, parts: Vec<Vec<PlannedEntry>>) -> Vec<LayerPlan> {
    let count = parts.len();
    (parts.into_iter().enumerate())
        .map(|(i, mut entries)| {
            // Copies made for links whose target is elsewhere share content.
            relink(&mut entries);
            let (notes, steps) = if i == 0 {
                (layer.notes.clone(), layer.steps.clone())
            } else {
                (Vec::new(), Vec::new())
            };
            LayerPlan {
                role: layer.role.clone(),
                part: Some(Part {
                    number: i + 1,
                    of: count,
                }),
                notes,
                steps,
                entries,
                prefetch: None,
            }
        })
        .collect()
}

/// Cuts a layer's entries (in path order) into parts whose entries cost
/// at most `budget` compressed (an entry that costs more has a part of its
/// own); a hard link whose target went into an earlier part becomes a copy
/// of it, costing what the target does.
fn cut_entries(entries: Vec<PlannedEntry>, budget: u64, costs: &[u64]) -> Vec<Vec<PlannedEntry>> {
    let mut parts: Vec<Vec<PlannedEntry>> = vec![Vec::new()];
    let mut in_part: HashSet<ImagePath> = HashSet::new();
    let mut files: HashMap<ImagePath, (PlannedEntry, u64)> = HashMap::new();
    let mut used = 0;
    for (mut entry, &own) in entries.into_iter().zip(costs) {
        if entry.meta.kind == EntryKind::File {
            files.insert(entry.path.clone(), (entry.clone(), own));
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
                return own;
            }
            match target.and_then(|t| files.get(&t)) {
                Some((file, cost)) => {
                    *entry = PlannedEntry {
                        path: entry.path.clone(),
                        ..file.clone()
                    };
                    *cost
                }
                None => own,
            }
        };
        let mut cost = materialize(&mut entry, &in_part);
        if used + cost > budget && !parts.last().is_some_and(Vec::is_empty) {
            parts.push(Vec::new());
            in_part.clear();
            used = 0;
            cost = materialize(&mut entry, &in_part);
        }
        used += cost;
        in_part.insert(entry.path.clone());
        parts.last_mut().expect("one part at least").push(entry);
    }
    parts
}
