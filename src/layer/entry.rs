//! A layer entry's path and metadata, independent of the tar format.

use std::cmp::Ordering;
use std::fmt;

use crate::error::{Error, Result};

/// A normalized path inside an image's root filesystem: relative, `/`
/// separated, without empty, `.` or `..` components. The empty path is the
/// root itself.
///
/// Paths order as a depth-first walk of the tree (`a`, `a/b`, `a.txt`), so a
/// directory sorts right before its descendants and they form one contiguous
/// range of a sorted map.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct ImagePath(Vec<u8>);

impl serde::Serialize for ImagePath {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

/// Read back (from the store) through [`ImagePath::parse`], so a damaged
/// file cannot bring in a path that climbs out of the root.
impl<'de> serde::Deserialize<'de> for ImagePath {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let raw: Vec<u8> = serde::Deserialize::deserialize(deserializer)?;
        let path = ImagePath::parse(&raw).map_err(serde::de::Error::custom)?;
        if path.0 != raw {
            return Err(serde::de::Error::custom("a stored path is not normalized"));
        }
        Ok(path)
    }
}

impl ImagePath {
    /// Normalizes a name found in a tar header or written by a user.
    /// Leading `/` and `./` are dropped, as container runtimes do; a `..`
    /// component is refused rather than resolved, since no well-formed layer
    /// needs one.
    pub fn parse(raw: &[u8]) -> Result<ImagePath> {
        let mut out: Vec<u8> = Vec::with_capacity(raw.len());
        for component in raw.split(|&b| b == b'/') {
            match component {
                b"" | b"." => continue,
                b".." => {
                    return Err(Error::new(format!(
                        "path {:?} climbs out of the image root with `..`",
                        String::from_utf8_lossy(raw)
                    )))
                }
                _ => {
                    if component.contains(&0) {
                        return Err(Error::new("a path contains a NUL byte"));
                    }
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(component);
                }
            }
        }
        Ok(ImagePath(out))
    }

    /// For paths written in the program itself; panics on malformed input.
    pub fn from_static(path: &str) -> ImagePath {
        ImagePath::parse(path.as_bytes()).expect("static paths are well formed")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn join(&self, name: &[u8]) -> ImagePath {
        let mut out = self.0.clone();
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(name);
        ImagePath(out)
    }

    pub fn parent(&self) -> Option<ImagePath> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => ImagePath(self.0[..i].to_vec()),
            None => ImagePath::default(),
        })
    }

    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// Every proper ancestor, outermost first, excluding the root.
    pub fn ancestors(&self) -> Vec<ImagePath> {
        let mut out = Vec::new();
        for (i, &b) in self.0.iter().enumerate() {
            if b == b'/' {
                out.push(ImagePath(self.0[..i].to_vec()));
            }
        }
        out
    }

    /// True if `self` is `other` or lies below it.
    pub fn is_within(&self, other: &ImagePath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.get(other.0.len()) == Some(&b'/'))
    }

    /// The absolute form, `/opt/tritonserver`, for messages and Dockerfiles.
    pub fn display_abs(&self) -> String {
        format!("/{}", String::from_utf8_lossy(&self.0))
    }
}

impl Ord for ImagePath {
    fn cmp(&self, other: &Self) -> Ordering {
        // Compare as if '/' were the smallest byte: depth-first order.
        let key = |b: &u8| if *b == b'/' { 0 } else { *b };
        self.0.iter().map(key).cmp(other.0.iter().map(key))
    }
}

impl PartialOrd for ImagePath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for ImagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Display for ImagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display_abs())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A hard link as found in a tar; [`crate::tree`] resolves it to the
    /// inode it names.
    HardLink,
    CharDevice,
    BlockDevice,
    Fifo,
}

/// Everything about an entry except its path and content.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntryMeta {
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub uname: Option<String>,
    pub gname: Option<String>,
    pub mtime: u64,
    /// Content length for files; 0 otherwise.
    pub size: u64,
    /// Symlink target (as written), or the path a hard link names.
    pub link_target: Option<Vec<u8>>,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub device: (u32, u32),
}

impl EntryMeta {
    /// A root-owned directory as `docker build` creates for missing parents.
    pub fn plain_dir(mode: u32, mtime: u64) -> EntryMeta {
        EntryMeta {
            kind: EntryKind::Dir,
            mode,
            uid: 0,
            gid: 0,
            uname: None,
            gname: None,
            mtime,
            size: 0,
            link_target: None,
            xattrs: Vec::new(),
            device: (0, 0),
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_refuses_escapes() {
        assert_eq!(
            ImagePath::parse(b"./opt//tritonserver/").unwrap(),
            ImagePath::from_static("opt/tritonserver")
        );
        assert_eq!(
            ImagePath::parse(b"/etc/passwd").unwrap(),
            ImagePath::from_static("etc/passwd")
        );
        assert!(ImagePath::parse(b"opt/../../etc").is_err());
        assert!(ImagePath::parse(b".").unwrap().is_root());
    }

    #[test]
    fn orders_depth_first() {
        let mut paths: Vec<ImagePath> = ["a.txt", "a/b", "a", "a/b/c", "a-b", "b"]
            .iter()
            .map(|p| ImagePath::from_static(p))
            .collect();
        paths.sort();
        let names: Vec<String> = paths.iter().map(|p| p.display_abs()).collect();
        assert_eq!(names, ["/a", "/a/b", "/a/b/c", "/a-b", "/a.txt", "/b"]);
    }

    #[test]
    fn relations() {
        let p = ImagePath::from_static("opt/tritonserver/lib");
        assert!(p.is_within(&ImagePath::from_static("opt")));
        assert!(!ImagePath::from_static("optx").is_within(&ImagePath::from_static("opt")));
        assert_eq!(
            p.parent().unwrap(),
            ImagePath::from_static("opt/tritonserver")
        );
        assert_eq!(p.file_name(), b"lib");
        assert_eq!(
            p.ancestors(),
            vec![
                ImagePath::from_static("opt"),
                ImagePath::from_static("opt/tritonserver")
            ]
        );
    }
}
