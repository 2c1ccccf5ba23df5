//! The content-addressed store: what one compose learns, every later one
//! reuses. It sits beside the transports, as a cache under scan and
//! execute; no transport knows it.
//!
//! - **Source layer indexes**, by diff-id: a layer's entries (paths and
//!   metadata in archive order), the small files and ELF facts the planner
//!   and the dependency closure read ([`crate::scan::LayerIndex`]). A compose
//!   whose layers are all indexed plans without reading any layer.
//! - **Output layers**, by a key that digests exactly what determines their
//!   bytes (each entry's path, metadata and content identity, the
//!   compression and its level, and this program's version, which pins the
//!   compressors): the compressed blob, its digest and diff-id. The core,
//!   each component and the dependency layer are built once; every variant
//!   needing the same bytes reuses them.
//!
//! Everything is written to `tmp/` and renamed into place, so a killed run
//! never leaves an entry that is used; entries are checked when reused
//! (indexes carry a digest of their body, blobs are hashed) and a damaged
//! one is removed and rebuilt. Two composes sharing the store write the
//! same bytes under the same names, and a rename is atomic, so they never
//! corrupt it. Use refreshes an entry's modification time; past
//! `--store-max-size` the least recently used entries are evicted.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::digest::{digest_of, Digest, FileDigests};
use crate::error::{Error, IoContext, Result};
use crate::layer::{EstargzFacts, ImagePath, WrittenLayer};

/// Bumped whenever what an index holds changes meaning.
const INDEX_MAGIC: &[u8] = b"triton-compose index 1\n";

/// The index kind of what each entry of an output layer cost compressed.
const COSTS_KIND: &str = "costs-1";
/// The stamps of our own blobs, and of sources' blob files, when checked.
const OWN_STAMP: &str = "checked";
const SOURCE_STAMP: &str = "source";
/// The default bound on the store's size.
pub const DEFAULT_MAX_SIZE: u64 = 20 << 30;
/// Staging files older than this belong to runs that died.
const STALE_TMP: Duration = Duration::from_secs(6 * 3600);

pub struct Store {
    root: PathBuf,
    max_size: u64,
    /// Blobs checked against their digest (or written by us), with what
    /// their file looked like then: a blob taken again while its file is
    /// the same (inode, size, modification time) is not hashed again. The
    /// stamps are kept beside the records too (`layers/checked-DIGEST`),
    /// so that a repeat run reads no stored layer again; a long-running
    /// `serve` takes the same layers for every tag.
    checked: std::sync::Mutex<std::collections::HashMap<Digest, BlobStamp>>,
}

/// What identifies a blob file's state: device, inode, size, mtime.
#[derive(Clone, Copy, PartialEq, Eq)]
struct BlobStamp(u64, u64, u64, Option<SystemTime>);

impl BlobStamp {
    fn of(path: &Path) -> Option<BlobStamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(path).ok()?;
        Some(BlobStamp(
            meta.dev(),
            meta.ino(),
            meta.len(),
            meta.modified().ok(),
        ))
    }

    fn text(&self) -> Option<String> {
        let since = self.3?.duration_since(SystemTime::UNIX_EPOCH).ok()?;
        Some(format!(
            "{} {} {} {}",
            self.0,
            self.1,
            self.2,
            since.as_nanos()
        ))
    }

    fn parse(text: &str) -> Option<BlobStamp> {
        let mut fields = text.split_ascii_whitespace();
        let mut next = || fields.next()?.parse::<u128>().ok();
        let (dev, ino, len, nanos) = (next()?, next()?, next()?, next()?);
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).ok()?);
        Some(BlobStamp(
            u64::try_from(dev).ok()?,
            u64::try_from(ino).ok()?,
            u64::try_from(len).ok()?,
            Some(mtime),
        ))
    }
}

/// What a source's blob file looked like ([`Store::stamp`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SourceStamp(BlobStamp);

#[derive(Serialize, Deserialize)]
struct LayerRecord {
    digest: String,
    diff_id: String,
    size: u64,
    /// An eStargz layer's TOC digest and uncompressed size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    estargz: Option<(String, u64)>,
    /// The ELF files of the layer and their digests; a record from before
    /// they were kept has none, and its layer is built again.
    #[serde(default)]
    elf_files: Option<Vec<(ImagePath, FileDigests)>>,
}

/// What the store holds, by kind.
#[derive(Debug, Default, Serialize)]
pub struct Usage {
    pub indexes: (u64, u64),
    pub layers: (u64, u64),
    pub staging: (u64, u64),
    pub total: u64,
}

impl Store {
    /// The default location: `TRITON_COMPOSE_STORE`, else
    /// `$XDG_CACHE_HOME/triton-compose/store`, else `~/.cache/triton-compose/store`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("TRITON_COMPOSE_STORE").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir));
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(cache.join("triton-compose").join("store"))
    }

    pub fn open(root: &Path, max_size: u64) -> Result<Store> {
        for sub in ["index", "layers", "blobs/sha256", "tmp"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir)
                .ctx(|| format!("creating the store directory {}", dir.display()))
                .map_err(|e| e.hint("pass --store DIR with a writable directory, or --no-store"))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
            max_size,
            checked: Default::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn index_path(&self, kind: &str, diff_id: &Digest) -> PathBuf {
        self.root
            .join("index")
            .join(format!("{kind}-{}", diff_id.hex()))
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    fn record_path(&self, key: &Digest) -> PathBuf {
        self.root.join("layers").join(key.hex())
    }

    /// A file in `tmp/` to write before renaming it into place.
    fn staging(&self) -> Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(&crate::scratch::prefix("store"))
            .tempfile_in(self.root.join("tmp"))
            .ctx(|| format!("writing in the store {}", self.root.display()))
    }

    fn put_atomically(&self, path: &Path, mut content: impl Read) -> Result<()> {
        let mut staged = self.staging()?;
        std::io::copy(&mut content, &mut staged)?;
        staged.persist(path).map_err(|e| {
            Error::new(format!("cannot write {}", path.display())).with_source(e.error)
        })?;
        Ok(())
    }

    /// Reads a source layer's index of the given kind, if stored and sound.
    pub fn load_index<T: for<'de> Deserialize<'de>>(
        &self,
        kind: &str,
        diff_id: &Digest,
    ) -> Option<T> {
        let path = self.index_path(kind, diff_id);
        let bytes = fs::read(&path).ok()?;
        let decoded = decode_index(&bytes);
        match decoded {
            Some(value) => {
                touch(&path);
                Some(value)
            }
            None => {
                tracing::warn!(
                    "store: the index {} is damaged; it is removed and the layer read again",
                    path.display()
                );
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    pub fn save_index<T: Serialize>(&self, kind: &str, diff_id: &Digest, index: &T) -> Result<()> {
        let body = postcard::to_stdvec(index)
            .map_err(|e| Error::new("cannot encode a layer index").with_source(e))?;
        let body = zstd::bulk::compress(&body, 3)
            .map_err(|e| Error::new("cannot compress a layer index").with_source(e))?;
        let mut bytes = INDEX_MAGIC.to_vec();
        bytes.extend_from_slice(Digest::of(&body).hex().as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(&body);
        self.put_atomically(&self.index_path(kind, diff_id), &bytes[..])
    }

    fn log_path(&self, kind: &str, diff_id: &Digest) -> PathBuf {
        self.root
            .join("index")
            .join(format!("{kind}-{}.entries", diff_id.hex()))
    }

    /// Keeps the entry log that goes with the index `kind` of a layer
    /// (saved first: an index is only found with its log).
    pub fn save_index_log(&self, kind: &str, diff_id: &Digest, log: impl Read) -> Result<()> {
        self.put_atomically(&self.log_path(kind, diff_id), log)
    }

    /// The entry log of the index `kind` of a layer, unchecked: the index
    /// holds its digest.
    pub fn index_log(&self, kind: &str, diff_id: &Digest) -> Option<fs::File> {
        let path = self.log_path(kind, diff_id);
        let file = fs::File::open(&path).ok()?;
        touch(&path);
        Some(file)
    }

    /// Removes a layer's index and its log, when one of them is damaged.
    pub fn forget_index(&self, kind: &str, diff_id: &Digest) {
        tracing::warn!(
            "store: the index of layer {diff_id} ({kind}) is damaged; it is removed and the layer read again"
        );
        let _ = fs::remove_file(self.index_path(kind, diff_id));
        let _ = fs::remove_file(self.log_path(kind, diff_id));
    }

    /// The output layer stored under `key`, linked (or copied) to `dest`
    /// for the caller to keep whatever the store does meanwhile, and
    /// checked there against its digest. A damaged entry is removed, and
    /// `None` returned: the caller builds the layer again.
    pub fn take_layer(&self, key: &Digest, dest: &Path) -> Option<WrittenLayer> {
        let record_path = self.record_path(key);
        let record = self.record(key)?;
        let estargz = match record.estargz {
            Some((toc, uncompressed_size)) => Some(EstargzFacts {
                toc_digest: toc.parse().ok()?,
                uncompressed_size,
            }),
            None => None,
        };
        let written = WrittenLayer {
            digest: record.digest.parse().ok()?,
            diff_id: record.diff_id.parse().ok()?,
            size: record.size,
            estargz,
            elf_files: record.elf_files?,
            costs: None,
        };
        let blob = self.blob_path(&written.digest);
        let _ = fs::remove_file(dest);
        if fs::hard_link(&blob, dest).is_err() && fs::copy(&blob, dest).is_err() {
            // Evicted meanwhile, or never complete: build it again.
            return None;
        }
        let stamp = BlobStamp::of(dest);
        let seen = stamp.is_some() && self.checked_before(&written.digest) == stamp;
        if !seen {
            tracing::debug!("store: checking the layer blob {}", written.digest);
        }
        let sound = seen
            || File::open(dest).is_ok_and(|file| {
                digest_of(file)
                    .is_ok_and(|(digest, size)| digest == written.digest && size == written.size)
            });

        if !sound {
            tracing::warn!(
                "store: the layer blob {} is damaged; it is removed and the layer built again",
                blob.display()
            );
            let _ = fs::remove_file(dest);
            let _ = fs::remove_file(&blob);
            let _ = fs::remove_file(&record_path);
            self.lock_checked().remove(&written.digest);
            let _ = fs::remove_file(self.stamp_path(OWN_STAMP, &written.digest));
            return None;
        }
        touch(&record_path);
        touch(dest);
        // As the file is now (touched): what the next take compares with.
        self.remember_checked(&written.digest, dest);
        Some(written)
    }

    /// The stamp of a source's blob file, taken before it is read and
    /// checked ([`Store::remember_source`]).
    pub fn stamp(file: &Path) -> Option<SourceStamp> {
        BlobStamp::of(file).map(SourceStamp)
    }

    /// True when `file`, a source image's blob of `digest`, was checked
    /// against it before ([`Store::remember_source`]) and is unchanged
    /// since (the same inode, size and modification time).
    pub fn source_checked(&self, digest: &Digest, file: &Path) -> bool {
        let kept = self.kept_stamp(SOURCE_STAMP, digest);
        kept.is_some() && kept == BlobStamp::of(file)
    }

    /// Remembers that `file`, stamped `before` it was read, held the bytes
    /// of `digest`, as a check that read it found: unless it changed
    /// meanwhile, a later run need not hash it again.
    pub fn remember_source(&self, digest: &Digest, file: &Path, before: Option<SourceStamp>) {
        if let Some(SourceStamp(before)) = before.filter(|b| BlobStamp::of(file) == Some(b.0)) {
            self.keep_stamp(SOURCE_STAMP, digest, before);
        }
    }

    /// Where a blob's stamp of `kind` ([`OWN_STAMP`], [`SOURCE_STAMP`]) is
    /// kept, beside the records.
    fn stamp_path(&self, kind: &str, digest: &Digest) -> PathBuf {
        self.root
            .join("layers")
            .join(format!("{kind}-{}", digest.hex()))
    }

    fn kept_stamp(&self, kind: &str, digest: &Digest) -> Option<BlobStamp> {
        BlobStamp::parse(&fs::read_to_string(self.stamp_path(kind, digest)).ok()?)
    }

    fn keep_stamp(&self, kind: &str, digest: &Digest, stamp: BlobStamp) {
        if let Some(text) = stamp.text() {
            let _ = self.put_atomically(&self.stamp_path(kind, digest), text.as_bytes());
        }
    }

    /// Keeps the stamp of `file`, a blob of `digest` just checked (or
    /// written), for this process and the next.
    fn remember_checked(&self, digest: &Digest, file: &Path) {
        let Some(stamp) = BlobStamp::of(file) else {
            return;
        };
        self.lock_checked().insert(digest.clone(), stamp);
        self.keep_stamp(OWN_STAMP, digest, stamp);
    }

    fn lock_checked(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<Digest, BlobStamp>> {
        self.checked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn checked_before(&self, digest: &Digest) -> Option<BlobStamp> {
        if let Some(stamp) = self.lock_checked().get(digest).copied() {
            return Some(stamp);
        }
        self.kept_stamp(OWN_STAMP, digest)
    }

    fn record(&self, key: &Digest) -> Option<LayerRecord> {
        serde_json::from_slice(&fs::read(self.record_path(key)).ok()?).ok()
    }

    /// The compressed size of the layer stored under `key`.
    pub fn layer_size(&self, key: &Digest) -> Option<u64> {
        Some(self.record(key)?.size)
    }

    /// What each entry of the layer stored under `key` cost compressed,
    /// if that was kept ([`Store::put_costs`]).
    pub fn costs(&self, key: &Digest) -> Option<Vec<u64>> {
        self.load_index(COSTS_KIND, key)
    }

    /// Keeps what each entry of the layer stored under `key` cost.
    pub fn put_costs(&self, key: &Digest, costs: &[u64]) -> Result<()> {
        self.save_index(COSTS_KIND, key, &costs)
    }

    /// Keeps a layer just written at `staged` under `key`. The staged file
    /// stays where it is, for the sink.
    pub fn put_layer(&self, key: &Digest, written: &WrittenLayer, staged: &Path) -> Result<()> {
        let blob = self.blob_path(&written.digest);
        if !blob.exists() {
            let temp = self.staging()?;
            let temp_path = temp.path().to_path_buf();
            // A hard link when the store and the work directory share a
            // filesystem; a copy otherwise.
            drop(temp);
            if fs::hard_link(staged, &temp_path).is_err() {
                fs::copy(staged, &temp_path)
                    .ctx(|| format!("copying a layer into the store {}", self.root.display()))?;
            }
            fs::rename(&temp_path, &blob)
                .ctx(|| format!("storing a layer in {}", self.root.display()))?;
            // Its digest was taken as it was written.
            self.remember_checked(&written.digest, &blob);
        }
        let record = LayerRecord {
            digest: written.digest.to_string(),
            diff_id: written.diff_id.to_string(),
            size: written.size,
            estargz: (written.estargz.as_ref())
                .map(|e| (e.toc_digest.to_string(), e.uncompressed_size)),
            elf_files: Some(written.elf_files.clone()),
        };
        let bytes = serde_json::to_vec(&record).expect("records serialize");
        self.put_atomically(&self.record_path(key), &bytes[..])
    }

    /// Every file of the store with its size and last use, by kind.
    fn entries(&self) -> Vec<(&'static str, PathBuf, u64, SystemTime)> {
        let mut out = Vec::new();
        for (kind, dir) in [
            ("index", "index"),
            ("layer", "layers"),
            ("layer", "blobs/sha256"),
            ("staging", "tmp"),
        ] {
            let Ok(list) = fs::read_dir(self.root.join(dir)) else {
                continue;
            };
            for entry in list.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_file() {
                    let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    out.push((kind, entry.path(), meta.len(), used));
                }
            }
        }
        out
    }

    /// The bound the store is pruned to.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    pub fn usage(&self) -> Usage {
        let mut usage = Usage::default();
        for (kind, _, size, _) in self.entries() {
            let slot = match kind {
                "index" => &mut usage.indexes,
                "layer" => &mut usage.layers,
                _ => &mut usage.staging,
            };
            slot.0 += 1;
            slot.1 += size;
            usage.total += size;
        }
        usage
    }

    /// Removes what dead runs left in `tmp/`, then the least recently used
    /// entries until the store is at most `max_size` bytes (the store's
    /// bound when `None`). Returns the bytes freed.
    pub fn prune(&self, max_size: Option<u64>) -> u64 {
        let max_size = max_size.unwrap_or(self.max_size);
        let now = SystemTime::now();
        let staging = |store: &Store| -> u64 {
            store
                .entries()
                .iter()
                .filter(|e| e.0 == "staging")
                .map(|e| e.2)
                .sum()
        };
        // What dead runs left in tmp/ goes at once; what has no owner in its
        // name goes once it is old.
        let before = staging(self);
        crate::scratch::sweep(&self.root.join("tmp"));
        let mut freed = before.saturating_sub(staging(self));
        let mut live = Vec::new();
        for (kind, path, size, used) in self.entries() {
            let stale = now.duration_since(used).unwrap_or_default() > STALE_TMP;
            if kind == "staging" {
                if stale && fs::remove_file(&path).is_ok() {
                    freed += size;
                }
                continue;
            }
            live.push((path, size, used));
        }
        let mut total: u64 = live.iter().map(|(_, size, _)| size).sum();
        live.sort_by_key(|(_, _, used)| *used);
        for (path, size, _) in live {
            if total <= max_size {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= size;
                freed += size;
            }
        }
        freed
    }
}

fn decode_index<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    let rest = bytes.strip_prefix(INDEX_MAGIC)?;
    let (digest, body) = (rest.get(..64)?, rest.get(65..)?);
    if rest.get(64) != Some(&b'\n') || Digest::of(body).hex().as_bytes() != digest {
        return None;
    }
    let mut decoder = zstd::stream::read::Decoder::new(body).ok()?;
    let mut plain = Vec::new();
    // Indexes are metadata: a bound keeps a damaged one from ballooning.
    decoder
        .by_ref()
        .take(1 << 30)
        .read_to_end(&mut plain)
        .ok()?;
    postcard::from_bytes(&plain).ok()
}

/// Marks an entry as just used, for eviction.
fn touch(path: &Path) {
    if let Ok(file) = File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}
