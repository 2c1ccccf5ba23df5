//! The state directory, bounded (`--state-max-size`).
//!
//! Each min/full pair and settings has an OCI layout under
//! `state/layouts/`; its `index.json` tags the selections composed there.
//! A [`Layout`] knows, for each tag, its manifest and every blob it
//! reaches, and when it was last served. When the layouts' blobs together
//! pass the bound, [`Bound::enforce`] evicts the least recently served tags
//! first: their entries (and their SBOM referrers) leave `index.json`, and
//! the blobs no remaining entry reaches are deleted. A tag just composed,
//! or with a blob download in flight, is never evicted.
//!
//! Composition is deterministic, so an evicted tag is composed again when
//! asked for and gets its old digest. Each layout keeps a small
//! `selections.json` (manifest digest → tag) so that a manifest asked for
//! by an evicted digest is composed again too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::digest::Digest;
use crate::error::{IoContext, Result};
use crate::image::media_type;
use crate::manifest::REF_NAME_ANNOTATION;

/// Largest manifest or index read while walking a layout (they are a few KiB).
pub(crate) const MAX_MANIFEST: u64 = 4 << 20;

/// The file that maps manifest digests to the tags that made them.
const SELECTIONS: &str = "selections.json";

/// A tag of a layout.
struct Tagged {
    digest: Digest,
    /// Every blob the tag reaches: its manifest, config, layers, referrers.
    blobs: HashSet<Digest>,
    /// When it was last served ([`Bound::tick`]); 0 when not since start.
    used: AtomicU64,
    /// Its place in `index.json` (the order composed), for ties.
    position: usize,
}

/// One OCI layout of the state directory.
pub(crate) struct Layout {
    pub(crate) dir: PathBuf,
    tags: RwLock<HashMap<String, Tagged>>,
    /// Every manifest digest composed here, and its tag (evicted or not).
    selections: Mutex<BTreeMap<String, String>>,
    /// Held while blobs are added or `index.json` is rewritten: by a
    /// compose for its whole length, and by an eviction.
    writing: Mutex<()>,
}

impl Layout {
    /// The layout in `dir` (empty if there is none yet).
    pub(crate) fn open(dir: &Path) -> Layout {
        let tags = read_tags(dir)
            .into_iter()
            .enumerate()
            .map(|(position, (tag, digest))| {
                let blobs = reachable(dir, std::slice::from_ref(&digest));
                let tagged = Tagged {
                    digest,
                    blobs,
                    used: AtomicU64::new(0),
                    position,
                };
                (tag, tagged)
            })
            .collect();
        let selections = std::fs::read(dir.join(SELECTIONS))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Layout {
            dir: dir.to_path_buf(),
            tags: RwLock::new(tags),
            selections: Mutex::new(selections),
            writing: Mutex::new(()),
        }
    }

    /// Held while composing into the layout (see [`Layout::writing`]).
    pub(crate) fn writing(&self) -> MutexGuard<'_, ()> {
        self.writing.lock().expect("not poisoned")
    }

    pub(crate) fn len(&self) -> usize {
        self.tags.read().expect("not poisoned").len()
    }

    /// The manifest `tag` names here, marked as served at `tick`.
    pub(crate) fn get(&self, tag: &str, tick: u64) -> Option<Digest> {
        let tags = self.tags.read().expect("not poisoned");
        let tagged = tags.get(tag)?;
        tagged.used.store(tick, Ordering::Relaxed);
        Some(tagged.digest.clone())
    }

    /// Records a selection just composed (and its digest, for good).
    pub(crate) fn insert(&self, tag: &str, digest: &Digest, tick: u64) {
        let blobs = reachable(&self.dir, std::slice::from_ref(digest));
        let tagged = Tagged {
            digest: digest.clone(),
            blobs,
            used: AtomicU64::new(tick),
            position: usize::MAX,
        };
        self.tags
            .write()
            .expect("not poisoned")
            .insert(tag.to_string(), tagged);
        let mut selections = self.selections.lock().expect("not poisoned");
        if selections
            .insert(digest.to_string(), tag.to_string())
            .is_none()
        {
            let bytes = serde_json::to_vec_pretty(&*selections).expect("serializes");
            if let Err(err) =
                crate::transport::oci_layout::write_atomically(&self.dir.join(SELECTIONS), &bytes)
            {
                tracing::warn!("cannot record {digest} for {tag}: {err}");
            }
        }
    }

    /// The tag that composed the manifest `digest` here, evicted or not.
    pub(crate) fn selection_of(&self, digest: &Digest) -> Option<String> {
        let selections = self.selections.lock().expect("not poisoned");
        selections.get(digest.as_str()).cloned()
    }

    /// Marks the tags that reach `blob` as served at `tick`.
    pub(crate) fn touch(&self, blob: &Digest, tick: u64) {
        for tagged in self.tags.read().expect("not poisoned").values() {
            if tagged.blobs.contains(blob) {
                tagged.used.store(tick, Ordering::Relaxed);
            }
        }
    }

    /// Removes `tag` from `index.json` with its referrers, then every blob
    /// no remaining entry reaches. The caller holds [`Layout::writing`].
    fn evict(&self, tag: &str) -> Result<()> {
        let Some(tagged) = self.tags.write().expect("not poisoned").remove(tag) else {
            return Ok(());
        };
        let index_path = self.dir.join("index.json");
        let bytes =
            std::fs::read(&index_path).ctx(|| format!("reading {}", index_path.display()))?;
        let mut index: serde_json::Value = serde_json::from_slice(&bytes)
            .ctx(|| format!("{} is not JSON", index_path.display()))?;
        let entries = index["manifests"].as_array().cloned().unwrap_or_default();
        let kept: Vec<serde_json::Value> = entries
            .into_iter()
            .filter(|entry| {
                let named = entry["annotations"][REF_NAME_ANNOTATION].as_str();
                let subject = entry_digest(entry).and_then(|d| subject_of(&self.dir, &d));
                named != Some(tag) && subject.as_ref() != Some(&tagged.digest)
            })
            .collect();
        let roots: Vec<Digest> = kept.iter().filter_map(entry_digest).collect();
        index["manifests"] = serde_json::Value::Array(kept);
        let bytes = serde_json::to_vec(&index).expect("serializes");
        crate::transport::oci_layout::write_atomically(&index_path, &bytes)?;
        let live = reachable(&self.dir, &roots);
        for (path, digest) in blob_files(&self.dir) {
            if !live.contains(&digest) {
                std::fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?;
            }
        }
        Ok(())
    }
}

/// Keeps the layouts' blobs under `--state-max-size`.
pub(crate) struct Bound {
    max: u64,
    /// Advances on every use: the order of least recently served.
    tick: AtomicU64,
    /// The layouts' blobs, in bytes, as last measured.
    size: AtomicU64,
    evictions: AtomicU64,
    /// Blobs with a download in flight, and how many.
    in_flight: Mutex<HashMap<Digest, usize>>,
}

impl Bound {
    pub(crate) fn new(max: u64) -> Bound {
        Bound {
            max,
            tick: AtomicU64::new(1),
            size: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// A new point in time, later than every one before.
    pub(crate) fn tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Marks `blob` as being downloaded until the guard is dropped.
    pub(crate) fn serving(self: &Arc<Self>, blob: &Digest) -> InFlight {
        *self
            .in_flight
            .lock()
            .expect("not poisoned")
            .entry(blob.clone())
            .or_default() += 1;
        InFlight {
            bound: self.clone(),
            blob: blob.clone(),
        }
    }

    /// Evicts least recently served tags of `layouts` until their blobs fit
    /// the bound. `held` is the layout whose [`Layout::writing`] the caller
    /// holds, and `keep` a tag of it just composed; other layouts are
    /// skipped while something writes to them.
    pub(crate) fn enforce(&self, layouts: &[Arc<Layout>], held: &Layout, keep: Option<&str>) {
        loop {
            let size: u64 = layouts.iter().map(|l| layout_size(&l.dir)).sum();
            self.size.store(size, Ordering::Relaxed);
            if size <= self.max {
                return;
            }
            let Some((layout, tag)) = self.oldest(layouts, held, keep) else {
                tracing::warn!(
                    "the composed images take {}, over --state-max-size {}: \
                     what is left was just composed or is being downloaded",
                    crate::progress::human_size(size),
                    crate::progress::human_size(self.max)
                );
                return;
            };
            let _writing = if std::ptr::eq(&*layout, held) {
                None
            } else {
                match layout.writing.try_lock() {
                    Ok(guard) => Some(guard),
                    // Something composes into it meanwhile: next time.
                    Err(_) => return,
                }
            };
            match layout.evict(&tag) {
                Ok(()) => {
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        "evicted {tag} from {} (least recently served; composed again if asked for)",
                        layout.dir.display()
                    );
                }
                Err(err) => {
                    tracing::warn!("cannot evict {tag}: {err}");
                    return;
                }
            }
        }
    }

    /// The least recently served tag that may go.
    fn oldest(
        &self,
        layouts: &[Arc<Layout>],
        held: &Layout,
        keep: Option<&str>,
    ) -> Option<(Arc<Layout>, String)> {
        let in_flight = self.in_flight.lock().expect("not poisoned");
        let mut best: Option<((u64, usize), Arc<Layout>, String)> = None;
        for layout in layouts {
            let is_held = std::ptr::eq(&**layout, held);
            for (tag, tagged) in layout.tags.read().expect("not poisoned").iter() {
                if (is_held && Some(tag.as_str()) == keep)
                    || tagged.blobs.iter().any(|b| in_flight.contains_key(b))
                {
                    continue;
                }
                let used = (tagged.used.load(Ordering::Relaxed), tagged.position);
                let older = best.as_ref().is_none_or(|(u, _, _)| used < *u);
                if older {
                    best = Some((used, layout.clone(), tag.clone()));
                }
            }
        }
        best.map(|(_, layout, tag)| (layout, tag))
    }
}

/// A blob download in flight: its tags are not evicted meanwhile.
pub(crate) struct InFlight {
    bound: Arc<Bound>,
    blob: Digest,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        release(&self.bound.in_flight, &self.blob);
    }
}

/// Counts one holder of `key` out of `counts`, forgetting keys no one holds
/// (a download in flight here, a request waiting for a selection in serve).
pub(crate) fn release<K: std::hash::Hash + Eq>(counts: &Mutex<HashMap<K, usize>>, key: &K) {
    let mut counts = counts.lock().expect("not poisoned");
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

/// The tags of the layout's index.json and their manifests, in order.
fn read_tags(layout: &Path) -> Vec<(String, Digest)> {
    let Ok(bytes) = std::fs::read(layout.join("index.json")) else {
        return Vec::new();
    };
    let index: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let tag = m["annotations"][REF_NAME_ANNOTATION].as_str()?;
            Some((tag.to_string(), entry_digest(m)?))
        })
        .collect()
}

fn entry_digest(entry: &serde_json::Value) -> Option<Digest> {
    entry["digest"].as_str()?.parse().ok()
}

pub(crate) fn blob_path(layout: &Path, digest: &Digest) -> PathBuf {
    layout
        .join("blobs")
        .join(digest.algorithm())
        .join(digest.hex())
}

/// A manifest or index of the layout, parsed (`None` for other blobs).
fn document(layout: &Path, digest: &Digest) -> Option<serde_json::Value> {
    let path = blob_path(layout, digest);
    let meta = std::fs::metadata(&path).ok()?;
    if meta.len() > MAX_MANIFEST {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    let kind = value["mediaType"].as_str()?;
    (kind == media_type::OCI_MANIFEST || kind == media_type::OCI_INDEX).then_some(value)
}

/// The subject of the artifact manifest `digest`, if it has one.
fn subject_of(layout: &Path, digest: &Digest) -> Option<Digest> {
    document(layout, digest)?["subject"]["digest"]
        .as_str()?
        .parse()
        .ok()
}

/// Every blob `roots` reach: themselves, and for manifests and indexes
/// their config, layers and manifests.
fn reachable(layout: &Path, roots: &[Digest]) -> HashSet<Digest> {
    let mut seen = HashSet::new();
    let mut todo: Vec<Digest> = roots.to_vec();
    while let Some(digest) = todo.pop() {
        if !seen.insert(digest.clone()) {
            continue;
        }
        let Some(doc) = document(layout, &digest) else {
            continue;
        };
        let children = [&doc["config"]]
            .into_iter()
            .chain(doc["layers"].as_array().into_iter().flatten())
            .chain(doc["manifests"].as_array().into_iter().flatten());
        todo.extend(children.filter_map(entry_digest));
    }
    seen
}

/// The layout's blob files and their digests (not files being written).
fn blob_files(layout: &Path) -> Vec<(PathBuf, Digest)> {
    let dir = layout.join("blobs/sha256");
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let digest = format!("sha256:{name}").parse().ok()?;
            Some((entry.path(), digest))
        })
        .collect()
}

/// The bytes of a layout's blobs.
fn layout_size(layout: &Path) -> u64 {
    blob_files(layout)
        .iter()
        .filter_map(|(path, _)| std::fs::metadata(path).ok())
        .map(|m| m.len())
        .sum()
}

/// The layouts under `state_dir/layouts` other than `current`.
pub(crate) fn other_layouts(state_dir: &Path, current: &Path) -> Vec<Arc<Layout>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(state_dir.join("layouts"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != current && p.join("index.json").is_file())
        .collect();
    dirs.sort();
    dirs.iter().map(|d| Arc::new(Layout::open(d))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layout with `tags`, each a manifest of one shared and one own layer.
    fn layout(dir: &Path, tags: &[&str]) -> Vec<Digest> {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        let put = |bytes: &[u8]| {
            let digest = Digest::of(bytes);
            std::fs::write(blob_path(dir, &digest), bytes).unwrap();
            digest
        };
        let shared = put(&[0u8; 1000]);
        let mut entries = Vec::new();
        let mut digests = Vec::new();
        for tag in tags {
            let own = put(&vec![tag.as_bytes()[0]; 1000]);
            let config = put(format!("{{\"tag\":\"{tag}\"}}").as_bytes());
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": media_type::OCI_MANIFEST,
                "config": {"digest": config.as_str(), "size": 1},
                "layers": [{"digest": shared.as_str()}, {"digest": own.as_str()}],
            });
            let digest = put(&serde_json::to_vec(&manifest).unwrap());
            entries.push(serde_json::json!({
                "mediaType": media_type::OCI_MANIFEST,
                "digest": digest.as_str(),
                "annotations": {REF_NAME_ANNOTATION: tag},
            }));
            digests.push(digest);
        }
        let index = serde_json::json!({"schemaVersion": 2, "manifests": entries});
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        digests
    }

    #[test]
    fn least_recently_served_tags_go_first_and_shared_blobs_stay() {
        let dir = tempfile::tempdir().unwrap();
        let digests = layout(dir.path(), &["a", "b", "c"]);
        let layout = Arc::new(Layout::open(dir.path()));
        let full = layout_size(dir.path());
        // Room for the shared layer and two tags.
        let bound = Arc::new(Bound::new(full - 1000));
        layout.get("a", bound.tick());
        layout.get("b", bound.tick());
        bound.enforce(std::slice::from_ref(&layout), &layout, None);
        assert_eq!(bound.evictions(), 1);
        assert!(layout.get("c", 0).is_none(), "c was served least recently");
        assert!(layout.get("a", 0).is_some() && layout.get("b", 0).is_some());
        assert!(bound.size() <= bound.max());
        let left: HashSet<Digest> = blob_files(dir.path()).into_iter().map(|b| b.1).collect();
        assert_eq!(left, reachable(dir.path(), &digests[..2]));
        // Its digest still names its selection.
        layout.insert("c", &digests[2], 0);
        assert_eq!(layout.selection_of(&digests[2]).as_deref(), Some("c"));
    }

    #[test]
    fn a_tag_just_composed_or_being_downloaded_stays() {
        let dir = tempfile::tempdir().unwrap();
        let digests = layout(dir.path(), &["a", "b", "c"]);
        let layout = Arc::new(Layout::open(dir.path()));
        let bound = Arc::new(Bound::new(0));
        let _downloading = bound.serving(&digests[1]);
        bound.enforce(std::slice::from_ref(&layout), &layout, Some("a"));
        assert_eq!(layout.len(), 2, "only c may go");
        assert!(layout.get("c", 0).is_none());
        assert!(bound.size() > bound.max());
    }
}
