//! Reads an image's layers into a [`MergedTree`] (whiteouts and opaque
//! directories applied), checking each layer's diff-id on the way.
//!
//! Each layer is read once, on its own, into a [`LayerIndex`]: its entries in
//! archive order, written to an [`EntryLog`] on disk, and in memory its
//! whiteouts, the small files kept (such as /etc/passwd or dpkg's lists) and
//! the dynamic-linking facts of ELF files ([`crate::elf`]).
//! Layers are read in parallel, largest first, at most one per core (for all
//! images of a compose together); content of the selected subtrees goes to a
//! [`Spool`] on disk as it streams by. The indexes are then applied bottom to
//! top, into a [`MergedTree`] that lives on disk too: memory does not grow
//! with the number of files. With a [`Store`], an index already stored for a
//! diff-id (its summary, and its log checked against the digest the summary
//! holds) is used instead of reading the layer, and a new one is stored.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, Write};
use std::sync::{Arc, Condvar, Mutex};

use serde::{Deserialize, Serialize};

use crate::digest::{CheckpointSlot, Digest};
use crate::elf::{self, ElfHashingReader, ElfInfo};
use crate::entrylog::{EntryLog, LogEntry, LogWriter};
use crate::error::{Error, Result};
use crate::image::ImageSource;
use crate::layer::ztoc::{self, AccessIndex};
use crate::layer::{read_layer, read_layer_with, EntryKind, ImagePath, LayerItem};
use crate::listed::Listed;
use crate::progress::human_size;
use crate::spool::Spool;
use crate::store::Store;
use crate::tree::{InodeRef, MergedTree, TreeBuilder};

/// What the scan of one image may hold in memory: kept small files, ELF
/// facts, whiteouts (each with a fixed cost). The entries themselves go to
/// disk ([`EntryLog`], then the [`MergedTree`]), so memory does not grow
/// with the image's file count.
pub(crate) const MAX_IMAGE_METADATA: u64 = 128 << 20;
/// What an entry costs on disk beyond its names: its record in the tree's
/// database and in its layer's log (about 270 bytes measured at a million
/// entries).
const ENTRY_COST: u64 = 256;
/// What the entries of an image may cost on disk ([`ENTRY_COST`] and their
/// names, links and attributes): this many bytes per compressed byte of the
/// image, and at least [`MAX_IMAGE_METADATA`]. A layer of names that
/// compresses to nothing (a "bomb": 60 KiB names in 200 compressed bytes)
/// is refused; an image with a million small files is not, since their tar
/// headers take room in its blobs too (about 12 compressed bytes for an
/// entry that costs 300 here, measured with one-line `.py` files).
const INDEX_PER_COMPRESSED_BYTE: u64 = 64;

/// Layers from this size (compressed) get access points.
const ACCESS_MIN_BLOB: u64 = 16 << 20;
/// Small files are kept in memory only up to this size.
const MAX_KEPT_FILE: u64 = 16 << 20;
/// ELF files up to this size are read in memory; larger ones go through a
/// scratch file, one at a time.
const ELF_IN_MEMORY: u64 = 16 << 20;

/// Chooses paths by their name.
pub(crate) type PathFilter<'a> = &'a (dyn Fn(&ImagePath) -> bool + Sync);

#[derive(Default)]
pub(crate) struct ScanOptions<'a> {
    /// Layers (by diff-id) not to read: their content is known to be in the
    /// other image already.
    pub skip: HashSet<Digest>,
    /// Files whose content is copied to the spool.
    pub spool: Option<(PathFilter<'a>, &'a mut Spool)>,
    /// Small files to keep in memory.
    pub keep: Option<PathFilter<'a>>,
    /// Small files to keep on disk ([`Listed`]): lists that grow with the
    /// image's file count.
    pub listed: Option<PathFilter<'a>>,
    /// Files whose ELF dynamic section is read, if they are ELF files.
    pub elf: Option<PathFilter<'a>>,
    /// Hash the ELF files the `elf` filter chose ([`ElfInfo::digests`]),
    /// for the SBOM: for the images whose layers are kept as they are (min).
    /// The store key's kind must say so too.
    pub digests: bool,
    /// Where indexes are reused from and kept, under a name that stands for
    /// the `keep` and `elf` filters (which must always be the same for it).
    pub store: Option<(&'a Store, &'a str)>,
    /// Keep access points of large gzip layers, for reading files again
    /// later: only for images content is copied from (full, gpu-min); the
    /// store key's kind must say so too.
    pub access: bool,
}

/// What the planner knows of the min image's files.
pub(crate) enum MinView<'a> {
    /// min was read: what it holds is known.
    Scanned(&'a ScannedImage),
    /// full was built FROM min (min's layers are full's first layers) and
    /// min is not read: full's scan of its other layers says what full
    /// added or changed, and whatever full has outside them, min has.
    BaseOfFull,
}

pub(crate) struct ScannedImage {
    pub tree: MergedTree,
    /// Content of the `keep` files as they are in the merged tree.
    pub kept: HashMap<ImagePath, Vec<u8>>,
    /// The `listed` files as they are in the merged tree, on disk.
    pub listed: Listed,
    /// Dynamic-linking facts of the ELF files the `elf` filter chose.
    pub elf: HashMap<InodeRef, ElfInfo>,
    /// Access points of the large gzip layers, by layer.
    pub access: HashMap<u32, Arc<AccessIndex>>,
}

/// A deletion a layer makes in the layers beneath it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Deletion {
    Whiteout(ImagePath),
    Opaque(ImagePath),
}

/// What a compose needs of one layer, read once (or taken from the store):
/// the part held in memory. Its entries are in an [`EntryLog`] on disk.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct LayerSummary {
    pub deletions: Vec<Deletion>,
    /// Content of the files the `keep` filter chose, by ordinal and path.
    pub kept: Vec<(u32, ImagePath, Vec<u8>)>,
    /// ELF facts of the files the `elf` filter chose, by ordinal.
    pub elf: Vec<(u32, ElfInfo)>,
    /// Access points into the gzip blob, for reading single files later
    /// without inflating the whole layer (large layers only).
    pub access: Option<AccessIndex>,
    /// How many entries the log holds, and its digest.
    pub entries: u64,
    pub log_digest: String,
}

/// One layer's index: its summary, and its entries on disk.
#[derive(Debug)]
pub(crate) struct LayerIndex {
    pub summary: LayerSummary,
    pub log: EntryLog,
}

/// At most one layer read per core, across every scan of the process.
fn read_permit() -> impl Drop {
    struct Permit(&'static (Mutex<usize>, Condvar));
    impl Drop for Permit {
        fn drop(&mut self) {
            if let Ok(mut free) = self.0 .0.lock() {
                *free += 1;
                self.0 .1.notify_one();
            }
        }
    }
    static SLOTS: std::sync::OnceLock<(Mutex<usize>, Condvar)> = std::sync::OnceLock::new();
    let slots = SLOTS.get_or_init(|| (Mutex::new(crate::layer::threads()), Condvar::new()));
    let mut free = slots.0.lock().unwrap_or_else(|e| e.into_inner());
    while *free == 0 {
        free = slots.1.wait(free).unwrap_or_else(|e| e.into_inner());
    }
    *free -= 1;
    Permit(slots)
}

/// What reading one layer yields: its index, and the spool its selected
/// content went to (if it had any).
type LayerRead = (LayerIndex, Option<Spool>);

pub(crate) fn scan(
    source: &dyn ImageSource,
    what: &str,
    options: ScanOptions<'_>,
) -> Result<ScannedImage> {
    let ScanOptions {
        skip,
        mut spool,
        keep,
        listed,
        elf,
        digests,
        store,
        access,
    } = options;
    let layers = &source.image().layers;
    for (index, layer) in layers.iter().enumerate() {
        if skip.contains(&layer.diff_id) {
            tracing::debug!(
                "{what}: layer {}/{} is shared, not read",
                index + 1,
                layers.len()
            );
        }
    }
    let mut wanted: Vec<usize> = (0..layers.len())
        .filter(|&i| !skip.contains(&layers[i].diff_id))
        .collect();
    // Largest first, so the longest read starts at once.
    wanted.sort_by_key(|&i| std::cmp::Reverse(layers[i].blob.as_ref().map_or(0, |b| b.1)));
    let spool_filter = spool.as_ref().map(|(filter, _)| *filter);
    let spool_dir = spool.as_ref().map(|(_, s)| s.dir().to_path_buf());
    let reader = LayerReader {
        source,
        what,
        keep: keep.unwrap_or(&|_| false),
        listed: listed.unwrap_or(&|_| false),
        elf: elf.unwrap_or(&|_| false),
        digests,
        spool: spool_filter.zip(spool_dir),
        store,
        access,
        metadata: std::sync::atomic::AtomicU64::new(0),
        index: std::sync::atomic::AtomicU64::new(0),
        index_budget: index_budget(source),
    };
    let results = reader.read_all(&wanted)?;
    let mut order = wanted;
    order.sort();
    let mut merged = Merged::new()?;
    for (index, read) in order.into_iter().zip(results) {
        let (layer_index, layer_spool) = read;
        if let (Some(from), Some((_, spool))) = (layer_spool, spool.as_mut()) {
            spool.absorb(from)?;
        }
        merged
            .apply(index as u32, layer_index)
            .map_err(|e| e.context(format!("{what} layer {}", index + 1)))?;
    }
    if let Some((_, spool)) = spool {
        spool.flush()?;
    }
    merged.finish(keep, listed)
}

/// The layers' indexes merged in order, as [`scan`] builds them.
struct Merged {
    tree: TreeBuilder,
    /// Kept files by inode, with the path they were found at.
    kept_by_inode: HashMap<InodeRef, (ImagePath, Vec<u8>)>,
    /// Listed files by inode: the path they were found at, and where their
    /// content is in `listed`.
    listed_by_inode: HashMap<InodeRef, (ImagePath, (u64, u64))>,
    listed: Listed,
    elf: HashMap<InodeRef, ElfInfo>,
    access: HashMap<u32, Arc<AccessIndex>>,
}

impl Merged {
    fn new() -> Result<Merged> {
        Ok(Merged {
            tree: TreeBuilder::new()?,
            kept_by_inode: HashMap::new(),
            listed_by_inode: HashMap::new(),
            listed: Listed::default(),
            elf: HashMap::new(),
            access: HashMap::new(),
        })
    }

    /// Lays one layer's index on the tree: its deletions, then its entries
    /// as they stream from its log.
    fn apply(&mut self, layer_no: u32, layer_index: LayerIndex) -> Result<()> {
        let inode = |ordinal| InodeRef {
            layer: layer_no,
            ordinal,
        };
        let LayerIndex { summary, log } = layer_index;
        let mut changes = self.tree.layer(layer_no)?;
        for deletion in &summary.deletions {
            match deletion {
                Deletion::Whiteout(path) => changes.whiteout(path)?,
                Deletion::Opaque(dir) => changes.opaque(dir)?,
            }
        }
        for entry in log.entries()? {
            let LogEntry {
                ordinal,
                path,
                meta,
                offset,
                content,
            } = entry?;
            if let Some(content) = content {
                let at = self.listed.append(&content)?;
                self.listed_by_inode
                    .insert(inode(ordinal), (path.clone(), at));
            }
            changes.entry(ordinal, path, meta, offset)?;
        }
        drop(changes);
        for (ordinal, path, data) in summary.kept {
            self.kept_by_inode.insert(inode(ordinal), (path, data));
        }
        for (ordinal, info) in summary.elf {
            self.elf.insert(inode(ordinal), info);
        }
        if let Some(points) = summary.access {
            self.access.insert(layer_no, Arc::new(points));
        }
        Ok(())
    }

    /// The scanned image: the kept files that are still visible where they
    /// were found, by path.
    fn finish(
        mut self,
        keep: Option<PathFilter<'_>>,
        listed: Option<PathFilter<'_>>,
    ) -> Result<ScannedImage> {
        let tree = self.tree.finish()?;
        // Still visible where it was found, and chosen there.
        let stays = |filter: Option<PathFilter<'_>>, path: &ImagePath, inode: InodeRef| {
            filter.is_some_and(|f| f(path)) && tree.get(path).is_some_and(|n| n.inode == inode)
        };
        for (inode, (path, at)) in std::mem::take(&mut self.listed_by_inode) {
            if stays(listed, &path, inode) {
                self.listed.place(path, at);
            }
        }
        let kept = self
            .kept_by_inode
            .into_iter()
            .filter(|(inode, (path, _))| stays(keep, path, *inode))
            .map(|(_, kept)| kept)
            .collect();
        tree.health()?;
        Ok(ScannedImage {
            tree,
            kept,
            listed: self.listed,
            elf: self.elf,
            access: self.access,
        })
    }
}

/// A layer's index from the store, with its log checked against the
/// digest its summary holds.
fn stored_index(store: &Store, kind: &str, diff_id: &Digest) -> Option<LayerIndex> {
    let summary = store.load_index::<LayerSummary>(kind, diff_id)?;
    let log = store.index_log(kind, diff_id).and_then(|file| {
        let digest: Digest = summary.log_digest.parse().ok()?;
        EntryLog::open_checked(file, summary.entries, &digest)
    });
    match log {
        Some(log) => Some(LayerIndex { summary, log }),
        None => {
            store.forget_index(kind, diff_id);
            None
        }
    }
}

/// Reads single layers for [`scan`].
struct LayerReader<'a> {
    source: &'a dyn ImageSource,
    what: &'a str,
    keep: PathFilter<'a>,
    listed: PathFilter<'a>,
    elf: PathFilter<'a>,
    /// [`ScanOptions::digests`].
    digests: bool,
    spool: Option<(PathFilter<'a>, std::path::PathBuf)>,
    store: Option<(&'a Store, &'a str)>,
    /// Keep access points ([`ScanOptions::access`]).
    access: bool,
    /// What the scan holds in memory so far, against [`MAX_IMAGE_METADATA`].
    metadata: std::sync::atomic::AtomicU64,
    /// What the entries cost on disk so far, against `index_budget`.
    index: std::sync::atomic::AtomicU64,
    index_budget: u64,
}

impl LayerReader<'_> {
    /// Reads the `wanted` layers, one per core at most; returns what each
    /// yielded, in layer order. The first failed read is the error.
    fn read_all(&self, wanted: &[usize]) -> Result<Vec<LayerRead>> {
        let mut order = wanted.to_vec();
        order.sort();
        // Read in the order asked (largest first), kept in layer order.
        let mut results: HashMap<usize, Option<Result<LayerRead>>> = wanted
            .iter()
            .copied()
            .zip(crate::layer::each_in_parallel(wanted, |&index| {
                self.layer(index)
            }))
            .collect();
        // A failed read is the error to report, not the layers left unread.
        let failed = order
            .iter()
            .copied()
            .find(|i| matches!(results.get(i), Some(Some(Err(_)))));
        if let Some(Some(Some(Err(err)))) = failed.map(|i| results.remove(&i)) {
            return Err(err);
        }
        order
            .into_iter()
            .map(|index| {
                results.remove(&index).flatten().unwrap_or_else(|| {
                    Err(Error::new(format!(
                        "{} layer {} was not read",
                        self.what,
                        index + 1
                    )))
                })
            })
            .collect()
    }

    /// Counts `bytes` held in memory; fails past [`MAX_IMAGE_METADATA`].
    fn charge(&self, bytes: u64) -> Result<()> {
        use std::sync::atomic::Ordering;
        let total = self.metadata.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total > MAX_IMAGE_METADATA {
            return Err(Error::new(format!(
                "{}: what its scan keeps in memory (small files, ELF facts, whiteouts) passes {} MiB",
                self.what,
                MAX_IMAGE_METADATA >> 20
            ))
            .hint("the image is malformed or hostile (a bomb of names); it was not used"));
        }
        Ok(())
    }

    /// Counts what an item costs in the on-disk index; fails past the
    /// image's budget.
    fn charge_index(&self, item: &LayerItem<'_>) -> Result<()> {
        self.charge_index_bytes(ENTRY_COST + metadata_cost(item))
    }

    fn charge_index_bytes(&self, bytes: u64) -> Result<()> {
        use std::sync::atomic::Ordering;
        let total = self.index.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total > self.index_budget {
            return Err(Error::new(format!(
                "{}: its layers' metadata (names, links, attributes) passes {} MiB, \
                 {INDEX_PER_COMPRESSED_BYTE} times what its blobs hold (and at least {} MiB)",
                self.what,
                self.index_budget >> 20,
                MAX_IMAGE_METADATA >> 20
            ))
            .hint("the image is malformed or hostile (a bomb of names); it was not used"));
        }
        Ok(())
    }

    fn layer(&self, index: usize) -> Result<LayerRead> {
        let layer = &self.source.image().layers[index];
        let count = self.source.image().layers.len();
        if let Some((store, kind)) = self.store {
            if let Some(found) = stored_index(store, kind, &layer.diff_id) {
                tracing::debug!(
                    "{}: layer {}/{} is indexed in the store, not read",
                    self.what,
                    index + 1,
                    count
                );
                return Ok((found, None));
            }
        }
        let _permit = read_permit();
        tracing::info!(
            "reading {} layer {}/{}{}",
            self.what,
            index + 1,
            count,
            layer
                .blob
                .as_ref()
                .map(|(_, size)| format!(" ({})", human_size(*size)))
                .unwrap_or_default()
        );
        let started = std::time::Instant::now();
        let (read, spool) = self
            .read(index)
            .map_err(|e| layer_error(e, self.what, index))?;
        tracing::debug!(
            "read {} layer {} in {:.2} s",
            self.what,
            index + 1,
            started.elapsed().as_secs_f64()
        );
        if let Some((store, kind)) = self.store {
            let saved = read
                .log
                .raw()
                .and_then(|raw| store.save_index_log(kind, &layer.diff_id, raw))
                .and_then(|()| store.save_index(kind, &layer.diff_id, &read.summary));
            if let Err(err) = saved {
                tracing::warn!(
                    "store: cannot keep the index of {} layer {}: {err}",
                    self.what,
                    index + 1
                );
            }
        }
        Ok((read, spool))
    }

    fn read(&self, index: usize) -> Result<(LayerIndex, Option<Spool>)> {
        let layer = &self.source.image().layers[index];
        let layer_no = index as u32;
        let mut out = LayerSummary::default();
        let mut log = LogWriter::new()?;
        let mut spool = match &self.spool {
            Some((_, dir)) => Some(Spool::create(dir)?),
            None => None,
        };
        let mut elf_scratch: Option<std::fs::File> = None;
        let with_access = self.access && layer.blob.as_ref().is_none_or(|b| b.1 >= ACCESS_MIN_BLOB);
        // Access points are checked by the checkpoints of the blob's own
        // digest check.
        let checkpoints: Option<CheckpointSlot> = with_access.then(Default::default);
        let raw = crate::progress::track_quietly(
            crate::scratch::Interruptible(
                self.source.open_layer_checked(index, checkpoints.clone())?,
            ),
            layer.blob.as_ref().map_or(0, |b| b.1),
            format!("{}: reading layer {}", self.what, index + 1),
        );
        let read = crate::digest::with_read_ahead(raw, |raw| {
            read_layer_with(raw, with_access, |ordinal, item| {
                let mut sinks = FileSinks {
                    out: &mut out,
                    listed: &mut None,
                    spool: spool.as_mut(),
                    elf_scratch: &mut elf_scratch,
                };
                self.item(
                    &mut sinks,
                    &mut log,
                    InodeRef {
                        layer: layer_no,
                        ordinal,
                    },
                    item,
                )
            })
        });
        let (diff_id, access) = read?;
        if diff_id != layer.diff_id {
            return Err(Error::new(format!(
                "{} layer {} has diff-id {diff_id}, but the image config says {}",
                self.what,
                index + 1,
                layer.diff_id
            ))
            .hint("the image is corrupt or was modified; fetch or export it again"));
        }
        if let Some(spool) = spool.as_mut() {
            spool.flush()?;
        }
        out.access = access.and_then(|found| {
            let checkpoints = checkpoints?.lock().ok()?.take();
            if checkpoints.is_none() {
                tracing::debug!(
                    "{} layer {}: no checkpoints of its blob, so no access points",
                    self.what,
                    index + 1
                );
            }
            found.with_checkpoints(checkpoints?)
        });
        let log = log.finish()?;
        out.entries = log.count;
        out.log_digest = log.digest.to_string();
        Ok((LayerIndex { summary: out, log }, spool))
    }

    /// Indexes one item of a layer: a deletion in the summary, an entry in
    /// the log (with what the filters take of a file's content).
    fn item(
        &self,
        sinks: &mut FileSinks<'_>,
        log: &mut LogWriter,
        inode: InodeRef,
        item: LayerItem<'_>,
    ) -> Result<()> {
        self.charge_index(&item)?;
        let entry = match item {
            LayerItem::Whiteout(path) => {
                self.charge(ENTRY_COST + path.as_bytes().len() as u64)?;
                sinks.out.deletions.push(Deletion::Whiteout(path));
                return Ok(());
            }
            LayerItem::Opaque(dir) => {
                self.charge(ENTRY_COST + dir.as_bytes().len() as u64)?;
                sinks.out.deletions.push(Deletion::Opaque(dir));
                return Ok(());
            }
            LayerItem::Entry(entry) => entry,
        };
        if entry.meta.kind == EntryKind::File {
            if let Some(info) =
                self.file(sinks, inode, &entry.path, entry.content, entry.meta.size)?
            {
                self.charge(ENTRY_COST + info.cost())?;
                sinks.out.elf.push((inode.ordinal, info));
            }
        }
        log.push(&LogEntry {
            ordinal: inode.ordinal,
            path: entry.path,
            meta: entry.meta,
            offset: entry.offset,
            content: sinks.listed.take(),
        })
    }

    /// Keeps, spools and reads the ELF facts of one file as the filters
    /// say; returns its ELF facts.
    fn file(
        &self,
        sinks: &mut FileSinks<'_>,
        inode: InodeRef,
        path: &ImagePath,
        content: &mut dyn Read,
        size: u64,
    ) -> Result<Option<ElfInfo>> {
        if !self.digests || !(self.elf)(path) {
            return self.file_facts(sinks, inode, path, content, size);
        }
        let mut hashing = ElfHashingReader::new(content);
        let Some(mut info) = self.file_facts(sinks, inode, path, &mut hashing, size)? else {
            return Ok(None);
        };
        // An ELF file is read whole above; this only makes sure of it.
        std::io::copy(&mut hashing, &mut std::io::sink())?;
        info.digests = hashing.finish();
        Ok(Some(info))
    }

    fn file_facts(
        &self,
        sinks: &mut FileSinks<'_>,
        inode: InodeRef,
        path: &ImagePath,
        content: &mut dyn Read,
        size: u64,
    ) -> Result<Option<ElfInfo>> {
        let kept = (self.keep)(path) && size <= MAX_KEPT_FILE;
        let listed = !kept && (self.listed)(path) && size <= MAX_KEPT_FILE;
        let wants_elf = (self.elf)(path);
        let spooled = self.spool.as_ref().is_some_and(|(wanted, _)| wanted(path));
        if kept || listed {
            if kept {
                self.charge(size + path.as_bytes().len() as u64)?;
            } else {
                self.charge_index_bytes(size)?;
            }
            let mut data = Vec::with_capacity(size as usize);
            content.read_to_end(&mut data)?;
            let info = wants_elf.then(|| elf::read(&data[..], size)).flatten();
            if spooled {
                if let Some(spool) = sinks.spool.as_mut() {
                    spool.store(inode, size, &mut &data[..])?;
                }
            }
            if kept {
                sinks.out.kept.push((inode.ordinal, path.clone(), data));
            } else {
                *sinks.listed = Some(data);
            }
            return Ok(info);
        }
        match sinks.spool.as_mut() {
            Some(spool) if spooled => {
                spool.store(inode, size, content)?;
                if !wants_elf {
                    return Ok(None);
                }
                spool.flush()?;
                Ok(spool.slice(inode).and_then(|s| elf::read(&s, size)))
            }
            _ if wants_elf => sniff_elf(content, size, sinks.elf_scratch),
            _ => Ok(None),
        }
    }
}

/// Where [`LayerReader::file`] puts what it takes of a file.
struct FileSinks<'a> {
    out: &'a mut LayerSummary,
    /// The content of a `listed` file, for its log entry.
    listed: &'a mut Option<Vec<u8>>,
    spool: Option<&'a mut Spool>,
    elf_scratch: &'a mut Option<std::fs::File>,
}

/// The on-disk index's budget for an image: [`INDEX_PER_COMPRESSED_BYTE`]
/// for each byte of its blobs (as far as they are known), at least
/// [`MAX_IMAGE_METADATA`].
fn index_budget(source: &dyn ImageSource) -> u64 {
    let compressed: u64 = source
        .image()
        .layers
        .iter()
        .filter_map(|l| l.blob.as_ref().map(|b| b.1))
        .sum();
    compressed
        .saturating_mul(INDEX_PER_COMPRESSED_BYTE)
        .max(MAX_IMAGE_METADATA)
}

/// What an item's metadata costs beyond [`ENTRY_COST`]: its names and
/// extended attributes.
fn metadata_cost(item: &LayerItem<'_>) -> u64 {
    match item {
        LayerItem::Whiteout(path) | LayerItem::Opaque(path) => path.as_bytes().len() as u64,
        LayerItem::Entry(entry) => {
            entry.path.as_bytes().len() as u64
                + entry
                    .meta
                    .link_target
                    .as_ref()
                    .map_or(0, |t| t.len() as u64)
                + entry
                    .meta
                    .xattrs
                    .iter()
                    .map(|(k, v)| (k.len() + v.len()) as u64)
                    .sum::<u64>()
        }
    }
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

/// Copies the content of the given files of one layer (ordinal, offset in
/// the uncompressed layer, size) to the spool through the layer's access
/// points, inflating only the spans that hold them. `Ok(false)` when the
/// transport cannot read part of a blob, or when the spans would read most
/// of the layer anyway: the caller reads the layer whole.
/// On an error nothing was added to the spool.
pub(crate) fn spool_inodes_at(
    source: &dyn ImageSource,
    what: &str,
    layer: u32,
    access: &AccessIndex,
    wanted: &[(u32, u64, u64)],
    spool: &mut Spool,
    stop: Option<crate::scratch::Stop<'_>>,
) -> Result<bool> {
    let mut wanted = wanted.to_vec();
    wanted.sort_by_key(|w| w.1);
    // Runs of files close enough to inflate through in one pass.
    let mut runs: Vec<Vec<(u32, u64, u64)>> = Vec::new();
    for file in wanted {
        match runs.last_mut() {
            Some(run)
                if run
                    .last()
                    .is_some_and(|last| file.1 <= last.1 + last.2 + ztoc::SPAN) =>
            {
                run.push(file)
            }
            _ => runs.push(vec![file]),
        }
    }
    let mut ranges = Vec::with_capacity(runs.len());
    for run in &runs {
        let start = run[0].1;
        let end = run.iter().map(|f| f.1 + f.2).max().unwrap_or(start);
        let Some(range) = ztoc::compressed_range(access, start, end - start) else {
            return Ok(false);
        };
        ranges.push((end, range));
    }
    // Runs start at the access point before them, so their ranges overlap:
    // past three quarters of the layer, one pass over it reads less.
    let to_read: u64 = ranges.iter().map(|(_, (_, from, to))| to - from).sum();
    if to_read > access.compressed / 4 * 3 {
        return Ok(false);
    }
    let mut local = Spool::create(spool.dir())?;
    let (mut compressed, mut inflated) = (0u64, 0u64);
    for (run, (end, (first, from, to))) in runs.iter().zip(ranges) {
        let Some(raw) = source.open_layer_range(layer as usize, from, to - from)? else {
            return Ok(false);
        };
        compressed += to - from;
        let raw = crate::scratch::Stoppable {
            inner: crate::scratch::Interruptible(raw),
            stop,
        };
        let mut reader = ztoc::RandomReader::new(access, first, raw)?;
        for &(ordinal, offset, size) in run {
            reader.skip_to(offset)?;
            local.store(
                InodeRef { layer, ordinal },
                size,
                &mut (&mut reader).take(size),
            )?;
        }
        inflated += end - access.points[first].out;
        reader.finish()?;
    }
    let files: u64 = runs.iter().flatten().map(|f| f.2).sum();
    tracing::info!(
        "reading {} of {what} layer {} through its access points ({} of {} compressed, {} inflated)",
        human_size(files),
        layer + 1,
        human_size(compressed),
        human_size(access.compressed),
        human_size(inflated),
    );
    spool.absorb(local)?;
    Ok(true)
}

/// Copies the content of the given inodes of one layer to the spool: for
/// entries needed after the main scan (hard-link targets outside the selected
/// subtrees, files a symlink led to under an unexpected name). Fails once
/// `stop` says so.
pub(crate) fn spool_inodes(
    source: &dyn ImageSource,
    what: &str,
    layer: u32,
    wanted: &HashSet<u32>,
    spool: &mut Spool,
    stop: Option<crate::scratch::Stop<'_>>,
) -> Result<()> {
    tracing::info!(
        "re-reading {what} layer {} for content the scan did not keep",
        layer + 1
    );
    let raw = crate::scratch::Stoppable {
        inner: crate::scratch::Interruptible(source.open_layer(layer as usize)?),
        stop,
    };
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
