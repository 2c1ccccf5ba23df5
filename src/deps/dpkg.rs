//! dpkg's database as found in an image: /var/lib/dpkg/status stanzas, and
//! which package owns a path (/var/lib/dpkg/info/PKG.list). Enough to carry
//! a package over whole, with the Depends it needs, and to keep `dpkg -l`
//! truthful by merging status stanzas.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::layer::ImagePath;
use crate::tree::MergedTree;

pub(crate) const STATUS: &str = "var/lib/dpkg/status";
pub(crate) const INFO_DIR: &str = "var/lib/dpkg/info";

/// The top-level directories that are symlinks into /usr on a merged-/usr
/// system (`/lib -> usr/lib`, ...): Debian 12 and later, Ubuntu 23.04 and
/// later (NGC's images are Ubuntu 24.04). Source: the usrmerge package's
/// list (`convert-usrmerge`) and base-files. dpkg still lists a package's
/// files by the names its .deb has (`/lib/x86_64-linux-gnu/libhistory.so.8`),
/// which only exist through those links.
pub(crate) const MERGED_USR_LINKS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// One package's stanza of the status file.
#[derive(Clone, Debug)]
pub(crate) struct Stanza {
    pub package: String,
    pub arch: String,
    pub installed: bool,
    pub provides: Vec<String>,
    /// Depends and Pre-Depends: groups of alternatives, names only.
    pub depends: Vec<Vec<String>>,
    /// The stanza as written, without the trailing blank line.
    pub text: String,
}

impl Stanza {
    /// A single-line field's value (`Version`).
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.text.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key == name).then(|| value.trim())
        })
    }
}

/// The version of `package` in the first of these stanzas that names it.
pub(crate) fn version_of<'a>(
    stanzas: impl IntoIterator<Item = &'a Stanza>,
    package: &str,
) -> Option<String> {
    stanzas
        .into_iter()
        .find(|s| s.package == package)
        .and_then(|s| s.field("Version"))
        .map(str::to_string)
}

pub(crate) fn parse_status(text: &str) -> Vec<Stanza> {
    text.split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .filter_map(|raw| {
            let raw = raw.trim_matches('\n');
            let mut fields: HashMap<String, String> = HashMap::new();
            let mut last: Option<String> = None;
            for line in raw.lines() {
                if line.starts_with([' ', '\t']) {
                    if let Some(key) = &last {
                        let value = fields.entry(key.clone()).or_default();
                        value.push('\n');
                        value.push_str(line);
                    }
                } else if let Some((key, value)) = line.split_once(':') {
                    let key = key.to_ascii_lowercase();
                    fields.insert(key.clone(), value.trim().to_string());
                    last = Some(key);
                }
            }
            let package = fields.get("package")?.clone();
            let mut depends = Vec::new();
            for key in ["pre-depends", "depends"] {
                if let Some(value) = fields.get(key) {
                    depends.extend(relations(value));
                }
            }
            Some(Stanza {
                package,
                arch: fields.get("architecture").cloned().unwrap_or_default(),
                installed: fields
                    .get("status")
                    .is_some_and(|s| s.ends_with(" installed")),
                provides: fields
                    .get("provides")
                    .map(|v| relations(v).into_iter().flatten().collect())
                    .unwrap_or_default(),
                depends,
                text: raw.to_string(),
            })
        })
        .collect()
}

/// `a (>= 1) | b:any, c` → [[a, b], [c]].
fn relations(value: &str) -> Vec<Vec<String>> {
    value
        .split(',')
        .map(|group| {
            group
                .split('|')
                .filter_map(|alt| {
                    let name = alt.trim().split([' ', '(', '[']).next()?;
                    let name = name.split(':').next()?;
                    (!name.is_empty()).then(|| name.to_string())
                })
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

/// Installed packages, and what each name is provided by.
#[derive(Default)]
pub(crate) struct Installed {
    pub packages: BTreeMap<String, Stanza>,
    provided: HashMap<String, Vec<String>>,
}

impl Installed {
    pub(crate) fn new<'a>(stanzas: impl IntoIterator<Item = &'a Stanza>) -> Self {
        let mut out = Installed::default();
        for stanza in stanzas {
            out.insert(stanza);
        }
        out
    }

    /// Records a package, if its stanza says it is installed.
    pub(crate) fn insert(&mut self, stanza: &Stanza) {
        if !stanza.installed {
            return;
        }
        for name in &stanza.provides {
            self.provided
                .entry(name.clone())
                .or_default()
                .push(stanza.package.clone());
        }
        self.packages.insert(stanza.package.clone(), stanza.clone());
    }

    /// True when a package of that name is installed or one provides it.
    pub(crate) fn satisfies(&self, name: &str) -> bool {
        self.packages.contains_key(name) || self.provided.contains_key(name)
    }

    /// The installed package that answers for a name, itself first.
    pub(crate) fn provider(&self, name: &str) -> Option<&Stanza> {
        self.packages.get(name).or_else(|| {
            self.provided
                .get(name)
                .and_then(|p| p.first())
                .and_then(|p| self.packages.get(p))
        })
    }
}

/// Which package owns which path, from the kept `info/*.list` files.
#[derive(Default)]
pub(crate) struct Owners {
    owner: HashMap<ImagePath, String>,
    files: HashMap<String, Vec<ImagePath>>,
}

impl Owners {
    pub(crate) fn new(kept: &HashMap<ImagePath, Vec<u8>>) -> Self {
        let info = ImagePath::from_static(INFO_DIR);
        let mut out = Owners::default();
        let mut lists: Vec<_> = kept
            .iter()
            .filter(|(p, _)| {
                p.parent().as_ref() == Some(&info) && p.file_name().ends_with(b".list")
            })
            .collect();
        lists.sort_by(|a, b| a.0.cmp(b.0));
        for (path, text) in lists {
            let name = String::from_utf8_lossy(path.file_name());
            let key = name.trim_end_matches(".list").to_string();
            let package = key.split(':').next().unwrap_or(&key).to_string();
            let mut files = Vec::new();
            for line in String::from_utf8_lossy(text).lines() {
                let Ok(p) = ImagePath::parse(line.as_bytes()) else {
                    continue;
                };
                if p.is_root() {
                    continue;
                }
                // Merged /usr: lists may name /lib/... for /usr/lib/...
                if let Some(alias) = usr_alias(&p) {
                    out.owner.entry(alias).or_insert_with(|| package.clone());
                }
                out.owner
                    .entry(p.clone())
                    .or_insert_with(|| package.clone());
                files.push(p);
            }
            out.files.insert(package, files);
        }
        out
    }

    pub(crate) fn owner(&self, path: &ImagePath) -> Option<&str> {
        self.owner.get(path).map(String::as_str)
    }

    /// Packages whose list the scan kept (for a delta scan: those full's
    /// own layers installed or changed).
    pub(crate) fn listed(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    pub(crate) fn files(&self, package: &str) -> &[ImagePath] {
        self.files.get(package).map_or(&[], Vec::as_slice)
    }
}

fn usr_alias(path: &ImagePath) -> Option<ImagePath> {
    let bytes = path.as_bytes();
    ["lib/", "lib64/", "bin/", "sbin/"]
        .iter()
        .any(|p| bytes.starts_with(p.as_bytes()))
        .then(|| ImagePath::from_static("usr").join(bytes))
}

/// The info files of a package (`PKG.list`, `PKG:amd64.md5sums`, ...).
pub(crate) fn info_files(tree: &MergedTree, package: &str) -> Vec<ImagePath> {
    let info = ImagePath::from_static(INFO_DIR);
    tree.child_names(&info)
        .into_iter()
        .filter(|name| {
            name.strip_prefix(package)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with(':'))
        })
        .map(|name| info.join(name.as_bytes()))
        .collect()
}

/// A status file: `base`'s stanzas plus `added`, sorted by name as dpkg
/// writes them.
pub(crate) fn merge_status<'a>(base: &'a [Stanza], added: &'a [&'a Stanza]) -> String {
    let mut all: Vec<&Stanza> = base.iter().chain(added.iter().copied()).collect();
    let mut seen = HashSet::new();
    all.retain(|s| seen.insert((s.package.clone(), s.arch.clone())));
    all.sort_by(|a, b| (&a.package, &a.arch).cmp(&(&b.package, &b.arch)));
    let mut out = String::new();
    for stanza in all {
        out.push_str(&stanza.text);
        out.push_str("\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS_TEXT: &str = "Package: python3\nStatus: install ok installed\nArchitecture: amd64\n\
Depends: python3.11 (>= 3.11.2-1~), libpython3-stdlib (= 3.11.2-1+b1)\nProvides: python3-profiler\n\
Description: x\n long text\n\nPackage: libblas3\nStatus: install ok installed\nArchitecture: amd64\n\
Provides: libblas.so.3\n\nPackage: gone\nStatus: deinstall ok config-files\n";

    #[test]
    fn parses_relations_provides_and_state() {
        let stanzas = parse_status(STATUS_TEXT);
        assert_eq!(stanzas.len(), 3);
        assert_eq!(
            stanzas[0].depends,
            [vec!["python3.11"], vec!["libpython3-stdlib"]]
        );
        assert!(stanzas[0].text.ends_with(" long text"));
        let installed = Installed::new(&stanzas);
        assert!(installed.satisfies("libblas.so.3"));
        assert_eq!(
            installed.provider("libblas.so.3").unwrap().package,
            "libblas3"
        );
        assert!(!installed.satisfies("gone"));
        assert_eq!(
            relations("libc6 (>= 2.34), libblas3 | libblas.so.3, python3:any"),
            [
                vec!["libc6"],
                vec!["libblas3", "libblas.so.3"],
                vec!["python3"]
            ]
        );
        let merged = merge_status(&stanzas[1..2], &[&stanzas[0]]);
        assert!(merged.starts_with("Package: libblas3"));
        assert!(merged.contains("\n\nPackage: python3\n"));
        assert!(merged.ends_with("long text\n\n"));
    }
}
