//! Reads an image's layers once, bottom to top, into a [`MergedTree`],
//! checking each layer's diff-id on the way. While the bytes stream by it can
//! keep what later stages need: the content of selected subtrees goes to a
//! [`Spool`] on disk, small files (such as /etc/passwd or dpkg's lists) are
//! kept in memory, and the dynamic-linking facts of ELF files are read
//! ([`crate::elf`]) without keeping their content.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, Write};

use crate::digest::Digest;
use crate::elf::{self, ElfInfo};
use crate::error::{Error, Result};
use crate::image::ImageSource;
use crate::layer::{read_layer, EntryKind, ImagePath, LayerItem};
use crate::spool::Spool;
use crate::tree::{InodeRef, LayerChanges, MergedTree};

/// Small files are kept in memory only up to this size.
const MAX_KEPT_FILE: u64 = 16 << 20;
/// ELF files up to this size are read in memory; larger ones go through a
/// scratch file, one at a time.
const ELF_IN_MEMORY: u64 = 16 << 20;

/// Chooses paths by their name.
pub type PathFilter<'a> = &'a (dyn Fn(&ImagePath) -> bool + Sync);

#[derive(Default)]
pub struct ScanOptions<'a> {
    /// Layers (by diff-id) not to read: their content is known to be in the
    /// other image already.
    pub skip: HashSet<Digest>,
    /// Files whose content is copied to the spool.
    pub spool: Option<(PathFilter<'a>, &'a mut Spool)>,
    /// Small files to keep in memory.
    pub keep: Option<PathFilter<'a>>,
    /// Files whose ELF dynamic section is read, if they are ELF files.
    pub elf: Option<PathFilter<'a>>,
}

/// What the planner knows of the min image's files.
pub enum MinView<'a> {
    /// min was read: what it holds is known.
    Scanned(&'a ScannedImage),
    /// full was built FROM min (min's layers are full's first layers) and
    /// min is not read: full's scan of its other layers says what full
    /// added or changed, and whatever full has outside them, min has.
    BaseOfFull,
}

pub struct ScannedImage {
    pub tree: MergedTree,
    /// Content of the `keep` files as they are in the merged tree.
    pub kept: HashMap<ImagePath, Vec<u8>>,
    /// Dynamic-linking facts of the ELF files the `elf` filter chose.
    pub elf: HashMap<InodeRef, ElfInfo>,
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
        elf,
    } = options;
    let keep = keep.unwrap_or(&|_| false);
    let wants_elf = elf.unwrap_or(&|_| false);
    let mut tree = MergedTree::default();
    let mut kept_by_inode: HashMap<InodeRef, Vec<u8>> = HashMap::new();
    let mut kept_paths: HashSet<ImagePath> = HashSet::new();
    let mut elf_infos: HashMap<InodeRef, ElfInfo> = HashMap::new();
    let mut elf_scratch: Option<std::fs::File> = None;
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
                    let kept = keep(&entry.path);
                    if kept {
                        kept_paths.insert(entry.path.clone());
                    }
                    if entry.meta.kind == EntryKind::File {
                        let size = entry.meta.size;
                        let wanted = wants_elf(&entry.path);
                        let spooled = spool
                            .as_ref()
                            .is_some_and(|(wanted, _)| wanted(&entry.path));
                        let info = if kept && size <= MAX_KEPT_FILE {
                            let mut data = Vec::with_capacity(size as usize);
                            entry.content.read_to_end(&mut data)?;
                            let info = wanted.then(|| elf::read(&data[..], size)).flatten();
                            kept_by_inode.insert(inode, data);
                            info
                        } else if let (true, Some((_, spool))) = (spooled, spool.as_mut()) {
                            spool.store(inode, size, entry.content)?;
                            if wanted {
                                spool.flush()?;
                                spool.slice(inode).and_then(|s| elf::read(&s, size))
                            } else {
                                None
                            }
                        } else if wanted {
                            sniff_elf(entry.content, size, &mut elf_scratch)?
                        } else {
                            None
                        };
                        if let Some(info) = info {
                            elf_infos.insert(inode, info);
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
    let kept = kept_paths
        .into_iter()
        .filter_map(|path| {
            let node = tree.get(&path)?;
            let data = kept_by_inode.get(&node.inode)?.clone();
            Some((path, data))
        })
        .collect();
    Ok(ScannedImage {
        tree,
        kept,
        elf: elf_infos,
        layers_read,
    })
}

/// Reads the ELF facts of a file streaming by, if it is one. Small files are
/// read in memory; large ones are copied to a reused scratch file first.
fn sniff_elf(
    content: &mut dyn Read,
    size: u64,
    scratch: &mut Option<std::fs::File>,
) -> Result<Option<ElfInfo>> {
    let mut head = [0u8; 4];
    if size < 4 {
        return Ok(None);
    }
    content.read_exact(&mut head)?;
    if !elf::is_elf(&head) {
        return Ok(None);
    }
    if size <= ELF_IN_MEMORY {
        let mut data = Vec::with_capacity(size as usize);
        data.extend_from_slice(&head);
        content.take(size - 4).read_to_end(&mut data)?;
        return Ok(elf::read(&data[..], size));
    }
    let file = match scratch {
        Some(file) => file,
        None => scratch.insert(tempfile::tempfile()?),
    };
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(&head)?;
    std::io::copy(&mut content.take(size - 4), file)?;
    Ok(elf::read(&*file, size))
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
/// subtrees, files a symlink led to under an unexpected name).
pub fn spool_inodes(
    source: &dyn ImageSource,
    what: &str,
    layer: u32,
    wanted: &HashSet<u32>,
    spool: &mut Spool,
) -> Result<()> {
    tracing::info!(
        "re-reading {what} layer {} for content the scan did not keep",
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
