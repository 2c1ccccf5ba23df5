//! The merged filesystem of an image: what a container would see after all
//! layers are applied in order, whiteouts and opaque directories included.
//!
//! Only metadata is kept. Each path records the layer it came from and the
//! *inode* it names: the (layer, ordinal) of the tar entry that holds its
//! content. Hard links are resolved to their target's inode when read, so
//! two paths with the same inode are hard links of each other.
//!
//! The tree lives on disk, in a scratch [redb](https://docs.rs/redb)
//! database sorted in [`ImagePath`]'s depth-first order, so its memory does
//! not grow with the image's file count. A node is decoded when it is
//! looked up, and kept in memory from then on ([`MergedTree::get`] hands
//! out references): what stays in memory is what the plan asked for.
//! Walks ([`MergedTree::subtree`], [`MergedTree::iter`]) decode as they go
//! and keep nothing.

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layer::{EntryKind, EntryMeta, ImagePath};

/// Identifies the tar entry that holds an inode's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct InodeRef {
    pub layer: u32,
    pub ordinal: u32,
}

impl InodeRef {
    fn key(self) -> u64 {
        (u64::from(self.layer) << 32) | u64::from(self.ordinal)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Node {
    /// For a resolved hard link, the target's metadata (a hard link shares
    /// its inode). `kind` is `HardLink` only if the target was never found.
    pub meta: EntryMeta,
    pub inode: InodeRef,
}

impl Node {
    pub(crate) fn is_dir(&self) -> bool {
        self.meta.is_dir()
    }
}

/// Path → [`Node`], keyed by [`key`].
const NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("nodes");
/// Path → the lower layers that hold a file this one replaced.
const BENEATH: TableDefinition<&[u8], &[u8]> = TableDefinition::new("beneath");
/// Inode ([`InodeRef::key`]) → where a file's content starts in its
/// uncompressed layer.
const OFFSETS: TableDefinition<u64, u64> = TableDefinition::new("offsets");
/// The database's page cache: what the tree may hold in memory beyond the
/// nodes looked up.
const CACHE_BYTES: usize = 16 << 20;
/// At most this many directories are remembered while a layer is applied
/// (to skip looking up the parents of every entry); then they are forgotten.
const MAX_KNOWN_DIRS: usize = 1 << 16;

/// The database key of a path: its bytes with `/` as 0, so that byte order
/// is [`ImagePath`]'s depth-first order (a path holds no NUL byte).
fn key(path: &ImagePath) -> Vec<u8> {
    path.as_bytes()
        .iter()
        .map(|&b| if b == b'/' { 0 } else { b })
        .collect()
}

fn path_of(key: &[u8]) -> Option<ImagePath> {
    let raw: Vec<u8> = key.iter().map(|&b| if b == 0 { b'/' } else { b }).collect();
    ImagePath::parse(&raw).ok().filter(|p| p.as_bytes() == raw)
}

/// Keys of `path`'s descendants (not `path` itself): `key\0…` (every key
/// for the root, the empty key).
fn below(key: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    if key.is_empty() {
        return (Bound::Excluded(Vec::new()), Bound::Unbounded);
    }
    let mut lo = key.to_vec();
    lo.push(0);
    let mut hi = key.to_vec();
    hi.push(1);
    (Bound::Included(lo), Bound::Excluded(hi))
}

/// The first key after every key that starts with `prefix`.
fn after_prefix(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut hi = prefix.to_vec();
    while let Some(last) = hi.pop() {
        if last < u8::MAX {
            hi.push(last + 1);
            return Bound::Excluded(hi);
        }
    }
    Bound::Unbounded
}

fn db_error(err: impl std::fmt::Display) -> Error {
    Error::new(format!("the scratch index of an image failed: {err}"))
        .hint("check that the temporary directory (TMPDIR) is writable and has space")
}

fn encode(node: &Node) -> Result<Vec<u8>> {
    postcard::to_stdvec(node).map_err(|e| Error::new("cannot encode a tree node").with_source(e))
}

fn decode(bytes: &[u8]) -> Option<Node> {
    postcard::from_bytes(bytes).ok()
}

fn scratch_db() -> Result<redb::Database> {
    let file = tempfile::tempfile().map_err(db_error)?;
    redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create_file(file)
        .map_err(db_error)
}

type Table<K, V> = redb::ReadOnlyTable<K, V>;

/// An image's merged tree, on disk; built by [`TreeBuilder`].
pub(crate) struct MergedTree {
    nodes: Table<&'static [u8], &'static [u8]>,
    beneath: Table<&'static [u8], &'static [u8]>,
    offsets: Table<u64, u64>,
    /// The nodes looked up so far.
    looked_up: elsa::sync::FrozenMap<ImagePath, Box<Node>>,
    /// Set when reading the database failed (a lookup then says "absent"):
    /// [`MergedTree::health`] turns it into an error.
    failed: AtomicBool,
    _db: redb::Database,
}

impl std::fmt::Debug for MergedTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MergedTree").finish_non_exhaustive()
    }
}

impl MergedTree {
    fn fail(&self, err: impl std::fmt::Display) {
        if !self.failed.swap(true, Ordering::Relaxed) {
            tracing::error!("reading an image's scratch index failed: {err}");
        }
    }

    /// An error if a lookup could not read the database: what was planned
    /// from it cannot be trusted.
    pub(crate) fn health(&self) -> Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(db_error("a lookup could not read it"));
        }
        Ok(())
    }

    fn read(&self, path: &ImagePath) -> Option<Node> {
        match self.nodes.get(key(path).as_slice()) {
            Ok(found) => found.and_then(|v| {
                let node = decode(v.value());
                if node.is_none() {
                    self.fail("a node does not decode");
                }
                node
            }),
            Err(err) => {
                self.fail(err);
                None
            }
        }
    }

    pub(crate) fn get(&self, path: &ImagePath) -> Option<&Node> {
        if let Some(node) = self.looked_up.get(path) {
            return Some(node);
        }
        let node = self.read(path)?;
        Some(self.looked_up.insert(path.clone(), Box::new(node)))
    }

    pub(crate) fn contains(&self, path: &ImagePath) -> bool {
        self.looked_up.get(path).is_some() || self.read(path).is_some()
    }

    /// Where the content of a file inode starts in its uncompressed layer.
    pub(crate) fn offset(&self, inode: InodeRef) -> Option<u64> {
        match self.offsets.get(inode.key()) {
            Ok(found) => found.map(|v| v.value()),
            Err(err) => {
                self.fail(err);
                None
            }
        }
    }

    /// Entries with keys in `range`, decoded as they are read.
    fn walk(
        &self,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
    ) -> impl Iterator<Item = (ImagePath, Node)> + '_ {
        let range = (
            range.0.as_ref().map(|k| k.as_slice()),
            range.1.as_ref().map(|k| k.as_slice()),
        );
        let items = match self.nodes.range::<&[u8]>(range) {
            Ok(items) => Some(items),
            Err(err) => {
                self.fail(err);
                None
            }
        };
        items.into_iter().flatten().map_while(move |item| {
            let decoded = item
                .ok()
                .and_then(|(k, v)| Some((path_of(k.value())?, decode(v.value())?)));
            if decoded.is_none() {
                self.fail("an entry does not read back");
            }
            decoded
        })
    }

    /// `path` itself (if present) and everything below it, in tree order.
    pub(crate) fn subtree(&self, path: &ImagePath) -> impl Iterator<Item = (ImagePath, Node)> + '_ {
        let k = key(path);
        let end = if k.is_empty() {
            Bound::Unbounded
        } else {
            let mut hi = k.clone();
            hi.push(1);
            Bound::Excluded(hi)
        };
        self.walk((Bound::Included(k), end))
    }

    /// Paths whose bytes start with `prefix`'s (`dir/name.` finds
    /// `dir/name.x` and `dir/name.y/z`), in tree order.
    pub(crate) fn with_prefix(
        &self,
        prefix: &ImagePath,
    ) -> impl Iterator<Item = (ImagePath, Node)> + '_ {
        let k = key(prefix);
        let end = after_prefix(&k);
        self.walk((Bound::Included(k), end))
    }

    /// Names of the direct children of a directory, sorted. Each child is
    /// one lookup: what lies below a child is skipped, not read.
    pub(crate) fn child_names(&self, dir: &ImagePath) -> Vec<String> {
        let base = key(dir);
        let prefix_len = if base.is_empty() { 0 } else { base.len() + 1 };
        let (mut from, end) = below(&base);
        let mut names = Vec::new();
        loop {
            let Some((path, _)) = self.walk((from, end.clone())).next() else {
                break;
            };
            let k = key(&path);
            let name_end = k[prefix_len..]
                .iter()
                .position(|&b| b == 0)
                .map_or(k.len(), |i| prefix_len + i);
            let name = &k[prefix_len..name_end];
            names.push(String::from_utf8_lossy(name).into_owned());
            let mut next = k[..name_end].to_vec();
            next.push(1);
            from = Bound::Included(next);
        }
        names
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (ImagePath, Node)> + '_ {
        self.walk((Bound::Unbounded, Bound::Unbounded))
    }

    /// Every layer that holds an entry for `path` (a non-directory): the
    /// one seen, and those it hides.
    pub(crate) fn layers_holding(&self, path: &ImagePath) -> Vec<u32> {
        let mut layers: Vec<u32> = match self.beneath.get(key(path).as_slice()) {
            Ok(found) => found
                .and_then(|v| postcard::from_bytes(v.value()).ok())
                .unwrap_or_default(),
            Err(err) => {
                self.fail(err);
                Vec::new()
            }
        };
        layers.extend(self.get(path).map(|n| n.inode.layer));
        layers.sort_unstable();
        layers.dedup();
        layers
    }
}

/// Builds a [`MergedTree`] layer by layer, in one write transaction of its
/// scratch database.
pub(crate) struct TreeBuilder {
    txn: redb::WriteTransaction,
    db: redb::Database,
}

impl TreeBuilder {
    pub(crate) fn new() -> Result<TreeBuilder> {
        let db = scratch_db()?;
        let mut txn = db.begin_write().map_err(db_error)?;
        // A scratch file: nothing to keep if the process dies.
        txn.set_durability(redb::Durability::None)
            .map_err(db_error)?;
        txn.open_table(NODES).map_err(db_error)?;
        txn.open_table(BENEATH).map_err(db_error)?;
        txn.open_table(OFFSETS).map_err(db_error)?;
        Ok(TreeBuilder { txn, db })
    }

    /// The changes of layer `layer`, applied on top of the layers before:
    /// its whiteouts and opaque directories first, then its entries in
    /// archive order.
    pub(crate) fn layer(&mut self, layer: u32) -> Result<LayerChanges<'_>> {
        Ok(LayerChanges {
            layer,
            nodes: self.txn.open_table(NODES).map_err(db_error)?,
            beneath: self.txn.open_table(BENEATH).map_err(db_error)?,
            offsets: self.txn.open_table(OFFSETS).map_err(db_error)?,
            known_dirs: HashSet::new(),
            entries_begun: false,
        })
    }

    pub(crate) fn finish(self) -> Result<MergedTree> {
        self.txn.commit().map_err(db_error)?;
        let read = self.db.begin_read().map_err(db_error)?;
        Ok(MergedTree {
            nodes: read.open_table(NODES).map_err(db_error)?,
            beneath: read.open_table(BENEATH).map_err(db_error)?,
            offsets: read.open_table(OFFSETS).map_err(db_error)?,
            looked_up: elsa::sync::FrozenMap::new(),
            failed: AtomicBool::new(false),
            _db: self.db,
        })
    }
}

/// One layer's changes, applied as they come ([`TreeBuilder::layer`]).
pub(crate) struct LayerChanges<'t> {
    layer: u32,
    nodes: redb::Table<'t, &'static [u8], &'static [u8]>,
    beneath: redb::Table<'t, &'static [u8], &'static [u8]>,
    offsets: redb::Table<'t, u64, u64>,
    /// Keys known to be directories, or absent, at this point of the layer
    /// (neither a symlink nor a file), so their lookups can be skipped.
    known_dirs: HashSet<Vec<u8>>,
    entries_begun: bool,
}

impl LayerChanges<'_> {
    fn deletion_first(&self) -> Result<()> {
        if self.entries_begun {
            return Err(Error::new(
                "internal: a layer's whiteouts must be applied before its entries",
            ));
        }
        Ok(())
    }

    /// Deletes `path` and what lies below it from the layers beneath.
    pub(crate) fn whiteout(&mut self, path: &ImagePath) -> Result<()> {
        self.deletion_first()?;
        self.remove_below(&key(path), true)
    }

    /// Deletes what lies below `dir` in the layers beneath.
    pub(crate) fn opaque(&mut self, dir: &ImagePath) -> Result<()> {
        self.deletion_first()?;
        self.remove_below(&key(dir), false)
    }

    fn remove_below(&mut self, k: &[u8], including_self: bool) -> Result<()> {
        let (lo, hi) = below(k);
        let range = (
            lo.as_ref().map(|k| k.as_slice()),
            hi.as_ref().map(|k| k.as_slice()),
        );
        self.nodes
            .retain_in::<&[u8], _>(range, |_, _| false)
            .map_err(db_error)?;
        self.beneath
            .retain_in::<&[u8], _>(range, |_, _| false)
            .map_err(db_error)?;
        if including_self {
            self.nodes.remove(k).map_err(db_error)?;
            self.beneath.remove(k).map_err(db_error)?;
        }
        Ok(())
    }

    fn current(&self, k: &[u8]) -> Result<Option<Node>> {
        Ok(self
            .nodes
            .get(k)
            .map_err(db_error)?
            .and_then(|v| decode(v.value())))
    }

    /// Refuses a path with a symlink among its parents: writing through it
    /// is what Docker's applier would do, and a composed tree must never
    /// disagree with it (nor reach outside a directory that way). A file
    /// among them is removed: an (implicit) directory replaces it.
    fn parents(&mut self, path: &ImagePath, what: &str, replace: bool) -> Result<()> {
        for parent in path.ancestors() {
            let k = key(&parent);
            if self.known_dirs.contains(&k) {
                continue;
            }
            match self.current(&k)? {
                Some(node) if node.meta.kind == EntryKind::Symlink => {
                    return Err(Error::new(format!(
                        "{what} {} lies beneath {}, which is a symlink (to {:?})",
                        path.display_abs(),
                        parent.display_abs(),
                        String::from_utf8_lossy(node.meta.link_target.as_deref().unwrap_or_default())
                    ))
                    .hint("the layer is malformed or hostile (entries must not be written through a symlink); it was not used"));
                }
                Some(node) if !node.is_dir() => {
                    if replace {
                        self.nodes.remove(k.as_slice()).map_err(db_error)?;
                        self.beneath.remove(k.as_slice()).map_err(db_error)?;
                    } else {
                        continue;
                    }
                }
                _ => {}
            }
            self.remember_dir(k);
        }
        Ok(())
    }

    fn remember_dir(&mut self, k: Vec<u8>) {
        if self.known_dirs.len() >= MAX_KNOWN_DIRS {
            self.known_dirs.clear();
        }
        self.known_dirs.insert(k);
    }

    /// Records an entry; a hard link is resolved against what the layers so
    /// far (this one's earlier entries included) hold. An entry (or a hard
    /// link's target) beneath a symlink is refused. `offset` is where a
    /// file's content starts in the uncompressed layer.
    pub(crate) fn entry(
        &mut self,
        ordinal: u32,
        path: ImagePath,
        meta: EntryMeta,
        offset: u64,
    ) -> Result<()> {
        self.entries_begun = true;
        let own = InodeRef {
            layer: self.layer,
            ordinal,
        };
        let node = if meta.kind == EntryKind::HardLink {
            self.parents(&path, "entry", false)?;
            let target = meta
                .link_target
                .as_deref()
                .and_then(|t| ImagePath::parse(t).ok());
            let mut resolved = None;
            if let Some(target) = &target {
                self.parents(
                    target,
                    &format!("hard link {} names", path.display_abs()),
                    false,
                )?;
                resolved = self
                    .current(&key(target))?
                    .filter(|n| !n.is_dir() && n.meta.kind != EntryKind::HardLink);
            }
            resolved.unwrap_or(Node { meta, inode: own })
        } else {
            Node { meta, inode: own }
        };
        self.parents(&path, "entry", true)?;
        if node.meta.kind == EntryKind::File && node.inode == own {
            self.offsets.insert(own.key(), offset).map_err(db_error)?;
        }
        self.place(key(&path), node)
    }

    fn place(&mut self, k: Vec<u8>, node: Node) -> Result<()> {
        let old = self.current(&k)?;
        if !node.is_dir() {
            if old.as_ref().is_some_and(Node::is_dir) {
                // A directory replaced by a non-directory loses its contents.
                self.remove_below(&k, false)?;
            }
            self.known_dirs.remove(&k);
        }
        let layer = node.inode.layer;
        let is_dir = node.is_dir();
        self.nodes
            .insert(k.as_slice(), encode(&node)?.as_slice())
            .map_err(db_error)?;
        if let Some(old) = old {
            if !old.is_dir() && old.inode.layer != layer {
                let mut layers: Vec<u32> = self
                    .beneath
                    .get(k.as_slice())
                    .map_err(db_error)?
                    .and_then(|v| postcard::from_bytes(v.value()).ok())
                    .unwrap_or_default();
                layers.push(old.inode.layer);
                let bytes = postcard::to_stdvec(&layers)
                    .map_err(|e| Error::new("cannot encode a tree node").with_source(e))?;
                self.beneath
                    .insert(k.as_slice(), bytes.as_slice())
                    .map_err(db_error)?;
            }
        }
        if is_dir {
            self.remember_dir(k);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64) -> EntryMeta {
        EntryMeta {
            kind: EntryKind::File,
            size,
            ..EntryMeta::plain_dir(0o644, 0)
        }
    }

    fn p(s: &str) -> ImagePath {
        ImagePath::from_static(s)
    }

    #[test]
    fn whiteouts_opaques_and_replacements() {
        let mut b = TreeBuilder::new().unwrap();
        let mut l0 = b.layer(0).unwrap();
        for (i, path) in ["a", "a/x", "a/y", "b", "b/z", "c"].iter().enumerate() {
            let meta = if path.contains('/') || *path == "c" {
                file(1)
            } else {
                EntryMeta::plain_dir(0o755, 0)
            };
            l0.entry(i as u32, p(path), meta, 0).unwrap();
        }
        drop(l0);
        let mut l1 = b.layer(1).unwrap();
        l1.opaque(&p("a")).unwrap();
        l1.whiteout(&p("b")).unwrap();
        l1.entry(0, p("a/new"), file(2), 0).unwrap();
        l1.entry(1, p("c/inside"), file(3), 0).unwrap(); // c was a file
        assert!(l1.whiteout(&p("a")).is_err(), "deletions come first");
        drop(l1);
        let tree = b.finish().unwrap();

        let paths: Vec<String> = tree.iter().map(|(p, _)| p.display_abs()).collect();
        assert_eq!(paths, ["/a", "/a/new", "/c/inside"]);
        assert_eq!(tree.child_names(&ImagePath::default()), ["a", "c"]);
        assert_eq!(tree.child_names(&p("a")), ["new"]);
        tree.health().unwrap();
    }

    #[test]
    fn walks_follow_depth_first_order_and_skip_below_children() {
        let mut b = TreeBuilder::new().unwrap();
        let mut l0 = b.layer(0).unwrap();
        let names = ["d", "d/a", "d/a/deep", "d/a-b", "d/a.txt", "d/b", "d2"];
        for (i, path) in names.iter().enumerate() {
            let meta = if ["d", "d/a"].contains(path) {
                EntryMeta::plain_dir(0o755, 0)
            } else {
                file(1)
            };
            l0.entry(i as u32, p(path), meta, 10 * i as u64).unwrap();
        }
        drop(l0);
        let tree = b.finish().unwrap();
        let shown = |items: Vec<(ImagePath, Node)>| -> Vec<String> {
            items.into_iter().map(|(p, _)| p.display_abs()).collect()
        };
        assert_eq!(
            shown(tree.subtree(&p("d/a")).collect()),
            ["/d/a", "/d/a/deep"]
        );
        assert_eq!(shown(tree.with_prefix(&p("d/a.")).collect()), ["/d/a.txt"]);
        assert_eq!(tree.child_names(&p("d")), ["a", "a-b", "a.txt", "b"]);
        assert_eq!(tree.subtree(&p("d")).count(), 6);
        assert_eq!(tree.iter().count(), names.len());
        let node = tree.get(&p("d/b")).unwrap();
        assert_eq!(tree.offset(node.inode), Some(50));
        assert!(tree.contains(&p("d2")) && !tree.contains(&p("d3")));
    }

    fn symlink(target: &str) -> EntryMeta {
        EntryMeta {
            kind: EntryKind::Symlink,
            link_target: Some(target.as_bytes().to_vec()),
            ..file(0)
        }
    }

    #[test]
    fn entries_beneath_a_symlink_are_refused_in_any_layer() {
        let mut b = TreeBuilder::new().unwrap();
        let mut l0 = b.layer(0).unwrap();
        l0.entry(0, p("evil"), symlink("/tmp"), 0).unwrap();
        let err = l0.entry(1, p("evil/x"), file(1), 0).unwrap_err();
        assert!(
            err.message()
                .contains("entry /evil/x lies beneath /evil, which is a symlink (to \"/tmp\")"),
            "{}",
            err.message()
        );
        drop(l0);

        // In a later layer, also deep below, and for a hard link's target.
        let mut l1 = b.layer(1).unwrap();
        assert!(l1.entry(0, p("evil/a/b"), file(1), 0).is_err());
        let link = EntryMeta {
            kind: EntryKind::HardLink,
            link_target: Some(b"evil/passwd".to_vec()),
            ..file(0)
        };
        let err = l1.entry(1, p("ok"), link, 0).unwrap_err();
        assert!(
            err.message().contains("hard link /ok names /evil/passwd"),
            "{}",
            err.message()
        );
        // A directory seen once is not trusted after a symlink replaced it.
        l1.entry(2, p("dir"), EntryMeta::plain_dir(0o755, 0), 0)
            .unwrap();
        l1.entry(3, p("dir/x"), file(1), 0).unwrap();
        l1.entry(4, p("dir"), symlink("/etc"), 0).unwrap();
        assert!(l1.entry(5, p("dir/y"), file(1), 0).is_err());
        drop(l1);

        // A layer that removes or replaces the symlink first may write there.
        let mut l2 = b.layer(2).unwrap();
        l2.whiteout(&p("evil")).unwrap();
        l2.entry(0, p("evil/x"), file(1), 0).unwrap();
        drop(l2);
        let mut l3 = b.layer(3).unwrap();
        l3.entry(0, p("evil"), EntryMeta::plain_dir(0o755, 0), 0)
            .unwrap();
        l3.entry(1, p("evil/x"), file(1), 0).unwrap();
        drop(l3);
        let tree = b.finish().unwrap();
        assert!(
            !tree.contains(&p("dir/x")),
            "a symlink replaced its directory"
        );
    }

    #[test]
    fn hard_links_share_the_inode_even_after_target_deletion() {
        let mut b = TreeBuilder::new().unwrap();
        let mut l0 = b.layer(0).unwrap();
        l0.entry(0, p("t"), file(5), 0).unwrap();
        let link = EntryMeta {
            kind: EntryKind::HardLink,
            link_target: Some(b"t".to_vec()),
            ..file(0)
        };
        l0.entry(1, p("l"), link.clone(), 0).unwrap();
        drop(l0);
        let mut l1 = b.layer(1).unwrap();
        l1.whiteout(&p("t")).unwrap();
        let dangling = EntryMeta {
            link_target: Some(b"missing".to_vec()),
            ..link
        };
        l1.entry(0, p("l2"), dangling, 0).unwrap();
        drop(l1);
        let tree = b.finish().unwrap();

        let l = tree.get(&p("l")).unwrap();
        assert_eq!(
            l.inode,
            InodeRef {
                layer: 0,
                ordinal: 0
            }
        );
        assert_eq!(l.meta.kind, EntryKind::File);
        assert_eq!(l.meta.size, 5);
        // A link to nothing stays unresolved, for the planner to refuse if selected.
        assert_eq!(tree.get(&p("l2")).unwrap().meta.kind, EntryKind::HardLink);
    }

    #[test]
    fn replaced_files_remember_the_layers_beneath() {
        let mut b = TreeBuilder::new().unwrap();
        for layer in 0..3 {
            let mut l = b.layer(layer).unwrap();
            l.entry(0, p("etc/f"), file(u64::from(layer)), 0).unwrap();
            drop(l);
        }
        let tree = b.finish().unwrap();
        assert_eq!(tree.layers_holding(&p("etc/f")), [0, 1, 2]);
        assert_eq!(tree.get(&p("etc/f")).unwrap().meta.size, 2);
    }
}
