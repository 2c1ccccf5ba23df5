//! The merged filesystem of an image: what a container would see after all
//! layers are applied in order, whiteouts and opaque directories included.
//!
//! Only metadata is kept. Each path records the layer it came from and the
//! *inode* it names: the (layer, ordinal) of the tar entry that holds its
//! content. Hard links are resolved to their target's inode when read, so
//! two paths with the same inode are hard links of each other.

use std::collections::{btree_map, BTreeMap, HashMap, HashSet};
use std::ops::Bound;

use crate::error::{Error, Result};
use crate::layer::{EntryKind, EntryMeta, ImagePath};

/// Identifies the tar entry that holds an inode's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct InodeRef {
    pub layer: u32,
    pub ordinal: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
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

#[derive(Default, Debug)]
pub(crate) struct MergedTree {
    nodes: BTreeMap<ImagePath, Node>,
    /// For a file, symlink or device that replaced one of a lower layer,
    /// the lower layers that hold it too (hidden, but still in them).
    beneath: HashMap<ImagePath, Vec<u32>>,
}

impl MergedTree {
    pub(crate) fn get(&self, path: &ImagePath) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub(crate) fn contains(&self, path: &ImagePath) -> bool {
        self.nodes.contains_key(path)
    }

    /// `path` itself (if present) and everything below it, in tree order.
    pub(crate) fn subtree<'a>(
        &'a self,
        path: &'a ImagePath,
    ) -> impl Iterator<Item = (&'a ImagePath, &'a Node)> + 'a {
        self.nodes
            .range((Bound::Included(path), Bound::Unbounded))
            .take_while(move |(p, _)| p.is_within(path))
    }

    /// Paths whose bytes start with `prefix`'s (`dir/name.` finds
    /// `dir/name.x` and `dir/name.y/z`), in tree order.
    pub(crate) fn with_prefix<'a>(
        &'a self,
        prefix: &'a ImagePath,
    ) -> impl Iterator<Item = (&'a ImagePath, &'a Node)> + 'a {
        self.nodes
            .range((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(p, _)| p.as_bytes().starts_with(prefix.as_bytes()))
    }

    /// Names of the direct children of a directory, sorted.
    pub(crate) fn child_names(&self, dir: &ImagePath) -> Vec<String> {
        self.subtree(dir)
            .filter(|(p, _)| p.parent().as_ref() == Some(dir))
            .map(|(p, _)| String::from_utf8_lossy(p.file_name()).into_owned())
            .collect()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ImagePath, &Node)> {
        self.nodes.iter()
    }

    /// Every layer that holds an entry for `path` (a non-directory): the
    /// one seen, and those it hides.
    pub(crate) fn layers_holding(&self, path: &ImagePath) -> Vec<u32> {
        let mut layers = self.beneath.get(path).cloned().unwrap_or_default();
        layers.extend(self.nodes.get(path).map(|n| n.inode.layer));
        layers.sort_unstable();
        layers.dedup();
        layers
    }

    fn remove_below(&mut self, path: &ImagePath, including_self: bool) {
        let doomed: Vec<ImagePath> = self
            .subtree(path)
            .filter(|(p, _)| including_self || *p != path)
            .map(|(p, _)| p.clone())
            .collect();
        for p in doomed {
            self.nodes.remove(&p);
            self.beneath.remove(&p);
        }
    }

    /// Applies one layer's changes on top of the tree.
    pub(crate) fn apply(&mut self, changes: LayerChanges) {
        // Whiteouts and opaque markers delete from the layers beneath only,
        // so they go first.
        for dir in &changes.opaques {
            self.remove_below(dir, false);
        }
        for path in &changes.whiteouts {
            self.remove_below(path, true);
        }
        for (path, node) in changes.entries {
            for ancestor in path.ancestors() {
                if self.nodes.get(&ancestor).is_some_and(|n| !n.is_dir()) {
                    // A lower file replaced by an (implicit) directory.
                    self.nodes.remove(&ancestor);
                }
            }
            if !node.is_dir() {
                // A directory replaced by a non-directory loses its contents.
                self.remove_below(&path, false);
            }
            let layer = node.inode.layer;
            match self.nodes.entry(path) {
                btree_map::Entry::Vacant(slot) => {
                    slot.insert(node);
                }
                btree_map::Entry::Occupied(mut slot) => {
                    let old = slot.insert(node);
                    if !old.is_dir() && old.inode.layer != layer {
                        let beneath = self.beneath.entry(slot.key().clone()).or_default();
                        beneath.push(old.inode.layer);
                    }
                }
            }
        }
    }
}

/// The changes one layer makes, collected while it streams by.
#[derive(Default)]
pub(crate) struct LayerChanges {
    layer: u32,
    whiteouts: HashSet<ImagePath>,
    opaques: HashSet<ImagePath>,
    entries: Vec<(ImagePath, Node)>,
    latest: HashMap<ImagePath, usize>,
}

impl LayerChanges {
    pub(crate) fn new(layer: u32) -> Self {
        LayerChanges {
            layer,
            ..Default::default()
        }
    }

    pub(crate) fn whiteout(&mut self, path: ImagePath) {
        self.whiteouts.insert(path);
    }

    pub(crate) fn opaque(&mut self, dir: ImagePath) {
        self.opaques.insert(dir);
    }

    /// What `path` is at this point of the layer: this layer's latest entry
    /// for it, else the tree beneath unless this layer deleted it.
    fn current<'t>(&'t self, tree: &'t MergedTree, path: &ImagePath) -> Option<&'t Node> {
        if let Some(&i) = self.latest.get(path) {
            return Some(&self.entries[i].1);
        }
        let whited_out = path
            .ancestors()
            .iter()
            .chain(std::iter::once(path))
            .any(|p| self.whiteouts.contains(p));
        let hidden = path.ancestors().iter().any(|p| self.opaques.contains(p));
        if whited_out || hidden {
            return None;
        }
        tree.get(path)
    }

    /// Refuses a path with a symlink among its parents: writing through it
    /// is what Docker's applier would do, and a composed tree must never
    /// disagree with it (nor reach outside a directory that way).
    fn check_parents(&self, tree: &MergedTree, path: &ImagePath, what: &str) -> Result<()> {
        for parent in path.ancestors() {
            if let Some(node) = self.current(tree, &parent) {
                if node.meta.kind == EntryKind::Symlink {
                    return Err(Error::new(format!(
                        "{what} {} lies beneath {}, which is a symlink (to {:?})",
                        path.display_abs(),
                        parent.display_abs(),
                        String::from_utf8_lossy(node.meta.link_target.as_deref().unwrap_or_default())
                    ))
                    .hint("the layer is malformed or hostile (entries must not be written through a symlink); it was not used"));
                }
            }
        }
        Ok(())
    }

    /// Records an entry; hard links are resolved against this layer's earlier
    /// entries, then the tree beneath. An entry (or a hard link's target)
    /// beneath a symlink is refused.
    pub(crate) fn entry(
        &mut self,
        tree: &MergedTree,
        ordinal: u32,
        path: ImagePath,
        meta: EntryMeta,
    ) -> Result<()> {
        self.check_parents(tree, &path, "entry")?;
        let own = InodeRef {
            layer: self.layer,
            ordinal,
        };
        let node = if meta.kind == EntryKind::HardLink {
            let target = meta
                .link_target
                .as_deref()
                .and_then(|t| ImagePath::parse(t).ok());
            if let Some(target) = &target {
                self.check_parents(
                    tree,
                    target,
                    &format!("hard link {} names", path.display_abs()),
                )?;
            }
            let resolved = target.and_then(|t| {
                self.latest
                    .get(&t)
                    .map(|&i| &self.entries[i].1)
                    .or_else(|| tree.get(&t))
                    .filter(|n| !n.is_dir() && n.meta.kind != EntryKind::HardLink)
                    .cloned()
            });
            resolved.unwrap_or(Node { meta, inode: own })
        } else {
            Node { meta, inode: own }
        };
        self.latest.insert(path.clone(), self.entries.len());
        self.entries.push((path, node));
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
        let mut tree = MergedTree::default();
        let mut l0 = LayerChanges::new(0);
        for (i, path) in ["a", "a/x", "a/y", "b", "b/z", "c"].iter().enumerate() {
            let meta = if path.contains('/') || *path == "c" {
                file(1)
            } else {
                EntryMeta::plain_dir(0o755, 0)
            };
            l0.entry(&tree, i as u32, p(path), meta).unwrap();
        }
        tree.apply(l0);

        let mut l1 = LayerChanges::new(1);
        l1.opaque(p("a"));
        l1.entry(&tree, 0, p("a/new"), file(2)).unwrap();
        l1.whiteout(p("b"));
        l1.entry(&tree, 1, p("c/inside"), file(3)).unwrap(); // c was a file
        tree.apply(l1);

        let paths: Vec<String> = tree.iter().map(|(p, _)| p.display_abs()).collect();
        assert_eq!(paths, ["/a", "/a/new", "/c/inside"]);
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
        let mut tree = MergedTree::default();
        let mut l0 = LayerChanges::new(0);
        l0.entry(&tree, 0, p("evil"), symlink("/tmp")).unwrap();
        let err = l0.entry(&tree, 1, p("evil/x"), file(1)).unwrap_err();
        assert!(
            err.message()
                .contains("entry /evil/x lies beneath /evil, which is a symlink (to \"/tmp\")"),
            "{}",
            err.message()
        );
        tree.apply(l0);

        // In a later layer, also deep below, and for a hard link's target.
        let mut l1 = LayerChanges::new(1);
        assert!(l1.entry(&tree, 0, p("evil/a/b"), file(1)).is_err());
        let link = EntryMeta {
            kind: EntryKind::HardLink,
            link_target: Some(b"evil/passwd".to_vec()),
            ..file(0)
        };
        let err = l1.entry(&tree, 1, p("ok"), link).unwrap_err();
        assert!(
            err.message().contains("hard link /ok names /evil/passwd"),
            "{}",
            err.message()
        );

        // A layer that removes or replaces the symlink first may write there.
        let mut l2 = LayerChanges::new(2);
        l2.whiteout(p("evil"));
        l2.entry(&tree, 0, p("evil/x"), file(1)).unwrap();
        let mut l3 = LayerChanges::new(3);
        l3.entry(&tree, 0, p("evil"), EntryMeta::plain_dir(0o755, 0))
            .unwrap();
        l3.entry(&tree, 1, p("evil/x"), file(1)).unwrap();
    }

    #[test]
    fn hard_links_share_the_inode_even_after_target_deletion() {
        let mut tree = MergedTree::default();
        let mut l0 = LayerChanges::new(0);
        l0.entry(&tree, 0, p("t"), file(5)).unwrap();
        let link = EntryMeta {
            kind: EntryKind::HardLink,
            link_target: Some(b"t".to_vec()),
            ..file(0)
        };
        l0.entry(&tree, 1, p("l"), link.clone()).unwrap();
        tree.apply(l0);
        let mut l1 = LayerChanges::new(1);
        l1.whiteout(p("t"));
        let dangling = EntryMeta {
            link_target: Some(b"missing".to_vec()),
            ..link
        };
        l1.entry(&tree, 0, p("l2"), dangling).unwrap();
        tree.apply(l1);

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
}
