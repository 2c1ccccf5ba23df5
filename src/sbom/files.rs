//! ELF files no package record owns, for the SBOM.
//!
//! A scanner reads the SBOM's packages; what no dpkg list and no pip RECORD
//! names (CUDA under `/usr/local/cuda-*`, `/opt/hpcx`, Triton itself) is
//! invisible to it unless the SBOM lists the files. Each such ELF file is
//! listed with its SHA-1 and SHA-256 (SPDX 2.3 wants the SHA-1), its size,
//! its soname, and a version: its package note's (`.note.package`) when it
//! has one, else the one its name carries (`libcudart.so.12.9.37`).
//!
//! Files are grouped in one package per directory root: the Triton part
//! whose directory holds them, else `/opt/NAME` or `/usr/local/NAME`, else
//! the file's own directory.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::deps::dpkg::Owners;
use crate::deps::python::Dists;
use crate::digest::FileDigests;
use crate::elf::PackageNote;
use crate::layer::ImagePath;
use crate::listed::Listed;

use super::{Contents, Role};

/// An ELF file of the image, with what the SBOM says of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ElfFile {
    pub path: ImagePath,
    pub size: u64,
    pub digests: FileDigests,
    pub soname: Option<String>,
    pub package: Option<PackageNote>,
    pub origin: Role,
}

impl ElfFile {
    /// The file's version and where it was read: its package note, else
    /// the digits after `.so.` in its name (or its soname's).
    pub(crate) fn version(&self) -> Option<(String, &'static str)> {
        if let Some(version) = self.package.as_ref().and_then(|p| p.version.clone()) {
            return Some((version, "its package note"));
        }
        let name = String::from_utf8_lossy(self.path.file_name()).into_owned();
        [Some(name), self.soname.clone()]
            .into_iter()
            .flatten()
            .find_map(|n| version_in_name(&n))
            .map(|v| (v, "its name"))
    }
}

/// `12.9.37` of `libcudart.so.12.9.37`: the dot-separated numbers after
/// `.so.`.
fn version_in_name(name: &str) -> Option<String> {
    let (_, tail) = name.split_once(".so.")?;
    let numeric = tail
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    numeric.then(|| tail.to_string())
}

/// The records that own an image's files: the dpkg lists of the packages
/// it has installed and the RECORDs of the python distributions it holds.
pub(crate) struct Records<'a> {
    dpkg: Vec<Owners>,
    pip: Vec<Dists<'a>>,
    installed: HashSet<String>,
    dists: HashSet<String>,
}

/// One source's kept files (where the dpkg lists are) and its listed ones
/// (where the RECORDs are).
pub(crate) type RecordFiles<'a> = (&'a HashMap<ImagePath, Vec<u8>>, &'a Listed);

impl<'a> Records<'a> {
    /// The records of `sources` that count: those of the packages and
    /// distributions `contents` lists (what the image has installed).
    pub(crate) fn new(sources: &[RecordFiles<'a>], contents: &Contents) -> Self {
        Records {
            dpkg: sources.iter().map(|(kept, _)| Owners::new(kept)).collect(),
            pip: sources
                .iter()
                .map(|(kept, listed)| Dists::new(kept, listed))
                .collect(),
            installed: contents.packages.iter().map(|p| p.name.clone()).collect(),
            dists: contents.dists.iter().map(|d| d.path.clone()).collect(),
        }
    }

    /// True when an installed package or a listed distribution names it.
    fn own(&self, path: &ImagePath) -> bool {
        self.dpkg
            .iter()
            .any(|o| o.owner(path).is_some_and(|p| self.installed.contains(p)))
            || self.pip.iter().any(|d| {
                d.owner(path)
                    .is_some_and(|dir| self.dists.contains(&dir.display_abs()))
            })
    }

    /// The files no record owns, by path, each once.
    pub(crate) fn unowned(&self, files: impl IntoIterator<Item = ElfFile>) -> Vec<ElfFile> {
        let mut by_path: BTreeMap<ImagePath, ElfFile> = BTreeMap::new();
        for file in files {
            if !self.own(&file.path) {
                by_path.entry(file.path.clone()).or_insert(file);
            }
        }
        by_path.into_values().collect()
    }
}

/// Where a file is filed: the innermost of `dirs` (the Triton parts'
/// directories) that holds it, by index; else its directory root.
pub(crate) enum Filed {
    Part(usize),
    Root(ImagePath),
}

pub(crate) fn filed(path: &ImagePath, dirs: &[ImagePath]) -> Filed {
    let part = dirs
        .iter()
        .enumerate()
        .filter(|(_, d)| path.is_within(d))
        .max_by_key(|(_, d)| d.as_bytes().len());
    match part {
        Some((index, _)) => Filed::Part(index),
        None => Filed::Root(root(path)),
    }
}

/// `/opt/NAME` or `/usr/local/NAME` for files below one, else the file's
/// directory.
fn root(path: &ImagePath) -> ImagePath {
    let parts: Vec<&[u8]> = path.as_bytes().split(|&b| b == b'/').collect();
    let depth = match parts.as_slice() {
        [b"opt", _, _, ..] => 2,
        [b"usr", b"local", _, _, ..] => 3,
        _ => parts.len().saturating_sub(1),
    };
    ImagePath::parse(&parts[..depth].join(&b'/')).unwrap_or_default()
}

/// SPDX's package verification code: the SHA-1 of the files' SHA-1s,
/// sorted and concatenated.
pub(crate) fn verification_code(files: &[&ElfFile]) -> String {
    let mut sums: Vec<&str> = files.iter().map(|f| f.digests.sha1.as_str()).collect();
    sums.sort_unstable();
    crate::digest::FileHasher::of(sums.concat().as_bytes()).sha1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> ImagePath {
        ImagePath::parse(p.as_bytes()).unwrap()
    }

    #[test]
    fn roots_are_the_tree_under_opt_or_usr_local_else_the_directory() {
        let cases = [
            (
                "usr/local/cuda-12.9/lib64/libcudart.so.12",
                "usr/local/cuda-12.9",
            ),
            ("opt/hpcx/ucx/lib/libucp.so.0", "opt/hpcx"),
            ("usr/local/lib/libfoo.so", "usr/local/lib"),
            ("usr/local/bin/tool", "usr/local/bin"),
            (
                "usr/lib/x86_64-linux-gnu/libx.so.1",
                "usr/lib/x86_64-linux-gnu",
            ),
            ("opt/tool", "opt"),
        ];
        for (file, want) in cases {
            match filed(&path(file), &[]) {
                Filed::Root(root) => assert_eq!(root, path(want), "{file}"),
                Filed::Part(_) => panic!("{file} filed under a part"),
            }
        }
        let dirs = [
            path("opt/tritonserver"),
            path("opt/tritonserver/backends/python"),
        ];
        assert!(matches!(
            filed(
                &path("opt/tritonserver/backends/python/libtriton_python.so"),
                &dirs
            ),
            Filed::Part(1)
        ));
        assert!(matches!(
            filed(&path("opt/tritonserver/lib/libtritonserver.so"), &dirs),
            Filed::Part(0)
        ));
    }

    #[test]
    fn versions_come_from_the_note_else_the_name() {
        let mut file = ElfFile {
            path: path("usr/local/cuda/lib64/libcudart.so.12.9.37"),
            size: 1,
            digests: FileDigests::default(),
            soname: Some("libcudart.so.12".into()),
            package: None,
            origin: Role::Full,
        };
        assert_eq!(file.version(), Some(("12.9.37".into(), "its name")));
        file.path = path("usr/local/cuda/lib64/libcudart.so");
        assert_eq!(file.version(), Some(("12".into(), "its name")));
        file.soname = None;
        assert_eq!(file.version(), None);
        file.package = Some(PackageNote {
            version: Some("1.2-3".into()),
            ..PackageNote::default()
        });
        assert_eq!(file.version(), Some(("1.2-3".into(), "its package note")));
        assert_eq!(version_in_name("libpython3.so.rc1"), None);
    }

    #[test]
    fn the_verification_code_is_the_sha1_of_the_sorted_sha1s() {
        let file = |sha1: &str| ElfFile {
            path: path("a"),
            size: 0,
            digests: FileDigests {
                sha1: sha1.into(),
                sha256: String::new(),
            },
            soname: None,
            package: None,
            origin: Role::Full,
        };
        let (a, b) = (file("bb"), file("aa"));
        // sha1("aabb"), as Python's hashlib computes it.
        assert_eq!(
            verification_code(&[&a, &b]),
            "28cc5fd736aee0939ede3330c2867b31e82d9656"
        );
    }
}
