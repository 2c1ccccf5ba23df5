//! Path lookup inside an image root, following symlinks the way the kernel
//! does but never leaving the root: `..` stops at `/`, absolute targets
//! start over from the image's own root, and loops end after 40 hops.

use crate::layer::{EntryKind, EntryMeta, ImagePath};
use crate::tree::MergedTree;

/// What a view knows about one path.
pub(crate) enum Lookup<'a> {
    Found(&'a EntryMeta),
    Absent,
    /// The view cannot tell (min was not read).
    Unknown,
}

/// A filesystem to resolve paths in.
pub(crate) trait FsView {
    fn lookup(&self, path: &ImagePath) -> Lookup<'_>;
}

/// One image's merged filesystem, as its scan saw it.
impl FsView for MergedTree {
    fn lookup(&self, path: &ImagePath) -> Lookup<'_> {
        self.get(path)
            .map_or(Lookup::Absent, |n| Lookup::Found(&n.meta))
    }
}

/// A path resolved to what it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The path with every symlink replaced by its target.
    pub path: ImagePath,
    /// The symlinks passed through, in order.
    pub links: Vec<ImagePath>,
}

pub(crate) enum Resolution {
    Found(Resolved),
    Absent,
    Unknown,
}

const MAX_HOPS: usize = 40;

pub(crate) fn resolve(view: &dyn FsView, path: &ImagePath) -> Resolution {
    let mut pending: Vec<Vec<u8>> = components(path.as_bytes());
    pending.reverse(); // a stack: the next component is last
    let mut current = ImagePath::default();
    let mut links = Vec::new();
    while let Some(component) = pending.pop() {
        match &component[..] {
            b"" | b"." => continue,
            b".." => {
                current = current.parent().unwrap_or_default();
                continue;
            }
            _ => {}
        }
        let next = current.join(&component);
        let meta = match view.lookup(&next) {
            Lookup::Found(meta) => meta,
            Lookup::Absent => return Resolution::Absent,
            Lookup::Unknown => return Resolution::Unknown,
        };
        if meta.kind == EntryKind::Symlink {
            if links.len() >= MAX_HOPS {
                return Resolution::Absent;
            }
            links.push(next);
            let target = meta.link_target.as_deref().unwrap_or_default();
            if target.starts_with(b"/") {
                current = ImagePath::default();
            }
            pending.extend(components(target).into_iter().rev());
        } else if !pending.is_empty() && !meta.is_dir() {
            return Resolution::Absent;
        } else {
            current = next;
        }
    }
    Resolution::Found(Resolved {
        path: current,
        links,
    })
}

fn components(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes.split(|&b| b == b'/').map(<[u8]>::to_vec).collect()
}

/// Normalizes an absolute path that may hold `.` and `..` (clamped at the
/// root), as search paths after `$ORIGIN` expansion do.
pub(crate) fn normalize(path: &str) -> ImagePath {
    let mut out = ImagePath::default();
    for component in path.as_bytes().split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => out = out.parent().unwrap_or_default(),
            name => out = out.join(name),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Map(HashMap<ImagePath, EntryMeta>);

    impl FsView for Map {
        fn lookup(&self, path: &ImagePath) -> Lookup<'_> {
            self.0.get(path).map_or(Lookup::Absent, Lookup::Found)
        }
    }

    fn view(entries: &[(&str, Option<&str>)]) -> Map {
        let dir = EntryMeta::plain_dir(0o755, 0);
        Map(entries
            .iter()
            .map(|(path, target)| {
                let meta = match target {
                    Some("") => EntryMeta {
                        kind: EntryKind::File,
                        ..dir.clone()
                    },
                    Some(t) => EntryMeta {
                        kind: EntryKind::Symlink,
                        link_target: Some(t.as_bytes().to_vec()),
                        ..dir.clone()
                    },
                    None => dir.clone(),
                };
                (ImagePath::from_static(path), meta)
            })
            .collect())
    }

    #[test]
    fn follows_links_without_leaving_the_root() {
        let v = view(&[
            ("lib", Some("usr/lib")),
            ("usr", None),
            ("usr/lib", None),
            ("usr/lib/libz.so.1", Some("libz.so.1.2.13")),
            ("usr/lib/libz.so.1.2.13", Some("")),
            ("usr/lib/escape", Some("../../../../etc/passwd")),
            ("etc", None),
            ("etc/passwd", Some("")),
            ("loop", Some("loop")),
        ]);
        let Resolution::Found(r) = resolve(&v, &ImagePath::from_static("lib/libz.so.1")) else {
            panic!("not found")
        };
        assert_eq!(r.path, ImagePath::from_static("usr/lib/libz.so.1.2.13"));
        assert_eq!(
            r.links,
            [
                ImagePath::from_static("lib"),
                ImagePath::from_static("usr/lib/libz.so.1")
            ]
        );
        // `..` stops at the image root.
        let Resolution::Found(r) = resolve(&v, &ImagePath::from_static("usr/lib/escape")) else {
            panic!("not found")
        };
        assert_eq!(r.path, ImagePath::from_static("etc/passwd"));
        assert!(matches!(
            resolve(&v, &ImagePath::from_static("loop")),
            Resolution::Absent
        ));
        assert!(matches!(
            resolve(&v, &ImagePath::from_static("etc/passwd/x")),
            Resolution::Absent
        ));
        assert_eq!(
            normalize("/a/b/../../../c/./d"),
            ImagePath::from_static("c/d")
        );
    }
}
