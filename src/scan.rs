//! Reads an image's layers once, bottom to top, into a [`MergedTree`],
//! checking each layer's diff-id on the way. While the bytes stream by it can
//! keep what later stages need: the content of selected subtrees goes to a
//! [`Spool`] on disk, and a few small files (such as /etc/passwd) are kept in
//! memory.

use std::collections::{HashMap, HashSet};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::ImageSource;
use crate::layer::{read_layer, EntryKind, ImagePath, LayerItem};
use crate::spool::Spool;
use crate::tree::{InodeRef, LayerChanges, MergedTree};

/// Small files are kept in memory only up to this size.
const MAX_KEPT_FILE: u64 = 16 << 20;

#[derive(Default)]
pub struct ScanOptions<'a> {
    /// Layers (by diff-id) not to read: their content is known to be in the
    /// other image already.
    pub skip: HashSet<Digest>,
    /// Subtrees whose file content is copied to the spool.
    pub spool: Option<(&'a [ImagePath], &'a mut Spool)>,
    /// Exact paths of small files to keep in memory.
    pub keep: &'a [ImagePath],
}

pub struct ScannedImage {
    pub tree: MergedTree,
    /// Content of the `keep` files as they are in the merged tree.
    pub kept: HashMap<ImagePath, Vec<u8>>,
    /// Indexes of the layers that were read.
    pub layers_read: Vec<usize>,
}

pub fn scan(
    source: &dyn ImageSource,
    what: &str,
    options: ScanOptions<'_>,
) -> Result<ScannedImage> {
    let ScanOptions {
        skip,
        mut spool,
        keep,
    } = options;
    let mut tree = MergedTree::default();
    let mut kept_by_inode: HashMap<InodeRef, Vec<u8>> = HashMap::new();
    let mut layers_read = Vec::new();
    let layers = &source.image().layers;
    for (index, layer) in layers.iter().enumerate() {
        if skip.contains(&layer.diff_id) {
            tracing::debug!(
                "{what}: layer {}/{} is shared, not read",
                index + 1,
                layers.len()
            );
            continue;
        }
        tracing::info!(
            "reading {what} layer {}/{}{}",
            index + 1,
            layers.len(),
            layer
                .blob
                .as_ref()
                .map(|(_, size)| format!(" ({})", human_size(*size)))
                .unwrap_or_default()
        );
        let layer_no = index as u32;
        let mut changes = LayerChanges::new(layer_no);
        let raw = source.open_layer(index)?;
        let diff_id = read_layer(raw, |ordinal, item| {
            match item {
                LayerItem::Whiteout(path) => changes.whiteout(path),
                LayerItem::Opaque(dir) => changes.opaque(dir),
                LayerItem::Entry(entry) => {
                    let inode = InodeRef {
                        layer: layer_no,
                        ordinal,
                    };
                    if entry.meta.kind == EntryKind::File {
                        if keep.contains(&entry.path) && entry.meta.size <= MAX_KEPT_FILE {
                            let mut data = Vec::with_capacity(entry.meta.size as usize);
                            entry.content.read_to_end(&mut data)?;
                            kept_by_inode.insert(inode, data);
                        } else if let Some((roots, spool)) = spool.as_mut() {
                            if roots.iter().any(|root| entry.path.is_within(root)) {
                                spool.store(inode, entry.meta.size, entry.content)?;
                            }
                        }
                    }
                    changes.entry(&tree, ordinal, entry.path, entry.meta);
                }
            }
            Ok(())
        })
        .map_err(|e| layer_error(e, what, index))?;
        if diff_id != layer.diff_id {
            return Err(Error::new(format!(
                "{what} layer {} has diff-id {diff_id}, but the image config says {}",
                index + 1,
                layer.diff_id
            ))
            .hint("the image is corrupt or was modified; fetch or export it again"));
        }
        tree.apply(changes);
        layers_read.push(index);
    }
    if let Some((_, spool)) = spool {
        spool.flush()?;
    }
    let kept = keep
        .iter()
        .filter_map(|path| {
            let node = tree.get(path)?;
            Some((path.clone(), kept_by_inode.get(&node.inode)?.clone()))
        })
        .collect();
    Ok(ScannedImage {
        tree,
        kept,
        layers_read,
    })
}

fn layer_error(err: Error, what: &str, index: usize) -> Error {
    let err = err.context(format!("{what} layer {}", index + 1));
    if err.hint_text().is_some() {
        err
    } else {
        err.hint("the layer is corrupt or truncated; fetch or export the image again")
    }
}

/// Copies the content of the given inodes of one layer to the spool: for
/// entries needed after the main scan (hard-link targets outside the selected
/// subtrees).
pub fn spool_inodes(
    source: &dyn ImageSource,
    what: &str,
    layer: u32,
    wanted: &HashSet<u32>,
    spool: &mut Spool,
) -> Result<()> {
    tracing::info!(
        "re-reading {what} layer {} for hard-link targets",
        layer + 1
    );
    let raw = source.open_layer(layer as usize)?;
    let diff_id = read_layer(raw, |ordinal, item| {
        if let LayerItem::Entry(entry) = item {
            if wanted.contains(&ordinal) && entry.meta.kind == EntryKind::File {
                spool.store(InodeRef { layer, ordinal }, entry.meta.size, entry.content)?;
            }
        }
        Ok(())
    })
    .map_err(|e| layer_error(e, what, layer as usize))?;
    if diff_id != source.image().layers[layer as usize].diff_id {
        return Err(Error::new(format!(
            "{what} layer {} changed while it was read",
            layer + 1
        )));
    }
    spool.flush()
}

pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
