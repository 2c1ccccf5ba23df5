//! Python packages installed with pip: which distribution owns a path (the
//! RECORD file of `NAME-VERSION.dist-info`), which distributions provide a
//! top-level module (`top_level.txt`), what each requires (`Requires-Dist`
//! in METADATA, with PEP 508 markers evaluated for the image's python), and
//! where the interpreter looks for a module.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use pep508_rs::{ExtraName, MarkerEnvironment, MarkerEnvironmentBuilder, PackageName, Requirement};

use crate::layer::ImagePath;
use crate::listed::Listed;
use crate::tree::MergedTree;

use super::fsview::normalize;

/// The files of a `.dist-info` directory the scans keep.
const DIST_FILES: [&[u8]; 3] = [b"RECORD", b"METADATA", b"top_level.txt"];

/// True for the files the scans keep to know python distributions.
pub(crate) fn is_dist_file(path: &ImagePath) -> bool {
    DIST_FILES.contains(&path.file_name())
        && path
            .parent()
            .is_some_and(|d| d.file_name().ends_with(b".dist-info"))
}

pub(crate) fn is_record(path: &ImagePath) -> bool {
    path.file_name() == b"RECORD" && is_dist_file(path)
}

/// A distribution's name as PEP 503 compares them: lowercase, with runs of
/// `-`, `_` and `.` as one `-`.
pub(crate) fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The python an image runs, for evaluating environment markers.
pub(crate) struct PythonEnv {
    /// `3.11`
    pub version: String,
    markers: MarkerEnvironment,
}

impl PythonEnv {
    /// `version` is `X.Y`; `full_version` `X.Y.Z` when known; `architecture`
    /// the OCI name (`amd64`, `arm64`).
    pub(crate) fn new(
        version: &str,
        full_version: Option<&str>,
        architecture: &str,
    ) -> Option<PythonEnv> {
        let full = full_version.map_or_else(|| format!("{version}.0"), str::to_string);
        let machine = match architecture {
            "amd64" => "x86_64",
            "arm64" => "aarch64",
            "386" => "i686",
            other => other,
        };
        let markers = MarkerEnvironment::try_from(MarkerEnvironmentBuilder {
            implementation_name: "cpython",
            implementation_version: &full,
            os_name: "posix",
            platform_machine: machine,
            platform_python_implementation: "CPython",
            platform_release: "",
            platform_system: "Linux",
            platform_version: "",
            python_full_version: &full,
            python_version: version,
            sys_platform: "linux",
        })
        .ok()?;
        Some(PythonEnv {
            version: version.to_string(),
            markers,
        })
    }

    /// The python of a composed image: the `python3.X` that
    /// /usr/bin/python3 names (else the newest under /usr/lib), with its
    /// patch level from dpkg's `python3.X-minimal` when known.
    pub(crate) fn of_image(
        trees: &[&MergedTree],
        dpkg_version: impl Fn(&str) -> Option<String>,
        architecture: &str,
    ) -> Option<PythonEnv> {
        let link = ImagePath::from_static("usr/bin/python3");
        let named = trees.iter().find_map(|t| {
            let target = t.get(&link)?.meta.link_target.clone()?;
            let target = String::from_utf8_lossy(&target).into_owned();
            let name = target.rsplit('/').next()?.to_string();
            name.strip_prefix("python")
                .filter(|v| v.starts_with("3."))
                .map(str::to_string)
        });
        let newest = || {
            let lib = ImagePath::from_static("usr/lib");
            trees
                .iter()
                .flat_map(|t| t.child_names(&lib))
                .filter_map(|n| n.strip_prefix("python").map(str::to_string))
                .filter(|v| v.starts_with("3.") && v[2..].chars().all(|c| c.is_ascii_digit()))
                .max_by_key(|v| v[2..].parse::<u32>().unwrap_or(0))
        };
        let version = named.or_else(newest)?;
        let full = dpkg_version(&format!("python{version}-minimal")).and_then(|v| {
            let upstream = v
                .split(':')
                .next_back()?
                .split(['-', '+', '~'])
                .next()?
                .to_string();
            upstream
                .starts_with(&format!("{version}."))
                .then_some(upstream)
        });
        PythonEnv::new(&version, full.as_deref(), architecture)
    }
}

/// A requirement of a distribution, as it applies to the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Required {
    /// Normalized name.
    pub name: String,
    pub extras: BTreeSet<String>,
    /// The line as METADATA wrote it.
    pub spec: String,
}

/// Distributions (by dist-info directory) and the files they installed.
///
/// Their RECORD files stay on disk ([`Listed`]): what is held in memory is,
/// for each top-level entry of a site directory (and each file listed
/// outside one), the distributions whose RECORD names something there. A
/// RECORD is read when a path there is asked about, and the last few read
/// are kept.
#[derive(Default)]
pub(crate) struct Dists<'a> {
    records: Option<&'a Listed>,
    by_prefix: HashMap<ImagePath, Vec<ImagePath>>,
    recent: Mutex<VecDeque<(ImagePath, Arc<HashSet<ImagePath>>)>>,
    /// Normalized name to dist-info directories (one per site directory).
    by_name: HashMap<String, Vec<ImagePath>>,
    /// Top-level module to the dist-info directories providing it.
    top_level: HashMap<String, Vec<ImagePath>>,
    /// `Requires-Dist` lines, by dist-info directory.
    requires: HashMap<ImagePath, Vec<String>>,
}

/// How many distributions' file sets [`Dists::owner`] keeps at a time.
const RECENT_RECORDS: usize = 16;

/// What a RECORD line's path is filed under: its site directory's entry
/// it lies in (`site/numpy` for `site/numpy/core/x.py`), or itself when it
/// lies outside the site directory.
fn prefix_of(path: &ImagePath, site: &ImagePath) -> ImagePath {
    if site.is_root() || !path.is_within(site) || path == site {
        return path.clone();
    }
    let rest = &path.as_bytes()[site.as_bytes().len() + 1..];
    let top = rest.split(|&b| b == b'/').next().unwrap_or(rest);
    site.join(top)
}

/// The files a RECORD names, as paths of the image.
fn record_files(dist: &ImagePath, text: &[u8]) -> Vec<ImagePath> {
    let site = dist.parent().unwrap_or_default().display_abs();
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(first_csv_field)
        .map(|name| {
            if name.starts_with('/') {
                normalize(&name)
            } else {
                normalize(&format!("{site}/{name}"))
            }
        })
        .collect()
}

impl<'a> Dists<'a> {
    pub(crate) fn new(kept: &HashMap<ImagePath, Vec<u8>>, records: &'a Listed) -> Self {
        let mut out = Dists {
            records: Some(records),
            ..Dists::default()
        };
        let mut dists: Vec<&ImagePath> = kept.keys().filter(|p| is_dist_file(p)).collect();
        dists.sort();
        for file in dists {
            let dist = file.parent().expect("a dist-info file has a parent");
            let text = String::from_utf8_lossy(&kept[file]);
            match file.file_name() {
                b"METADATA" => out.read_metadata(&dist, &text),
                b"top_level.txt" => {
                    for module in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                        let module = module.split('/').next().unwrap_or(module).to_string();
                        out.top_level.entry(module).or_default().push(dist.clone());
                    }
                }
                _ => {}
            }
        }
        let mut record_paths: Vec<&ImagePath> = records.paths().filter(|p| is_record(p)).collect();
        record_paths.sort();
        for record in record_paths {
            let dist = record.parent().expect("RECORD has a parent");
            let site = dist.parent().unwrap_or_default();
            let text = records.get(record).unwrap_or_default();
            let mut prefixes: Vec<ImagePath> = record_files(&dist, &text)
                .iter()
                .map(|p| prefix_of(p, &site))
                .collect();
            prefixes.sort();
            prefixes.dedup();
            for prefix in prefixes {
                out.by_prefix.entry(prefix).or_default().push(dist.clone());
            }
        }
        out
    }

    /// The files a distribution's RECORD names, read from disk (the last
    /// few are remembered).
    fn file_set(&self, dist: &ImagePath) -> Arc<HashSet<ImagePath>> {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, set)) = recent.iter().find(|(d, _)| d == dist) {
            return set.clone();
        }
        let set: Arc<HashSet<ImagePath>> = Arc::new(self.files(dist).into_iter().collect());
        if recent.len() >= RECENT_RECORDS {
            recent.pop_front();
        }
        recent.push_back((dist.clone(), set.clone()));
        set
    }

    /// The dist-info directory of the distribution that installed `path`.
    pub(crate) fn owner(&self, path: &ImagePath) -> Option<ImagePath> {
        let candidates = std::iter::once(path.clone())
            .chain(path.ancestors().into_iter().rev())
            .filter_map(|p| self.by_prefix.get(&p))
            .flatten();
        for dist in candidates {
            if self.file_set(dist).contains(path) {
                return Some(dist.clone());
            }
        }
        None
    }

    /// The files a distribution's RECORD names, in its order.
    pub(crate) fn files(&self, dist: &ImagePath) -> Vec<ImagePath> {
        self.records
            .and_then(|r| r.get(&dist.join(b"RECORD")))
            .map(|text| record_files(dist, &text))
            .unwrap_or_default()
    }

    fn read_metadata(&mut self, dist: &ImagePath, text: &str) {
        let mut name = None;
        let mut requires = Vec::new();
        // Headers end at the first blank line; the body is the description.
        for line in text.lines().take_while(|l| !l.trim().is_empty()) {
            if let Some(value) = line.strip_prefix("Name:") {
                name = Some(normalize_name(value.trim()));
            } else if let Some(value) = line.strip_prefix("Requires-Dist:") {
                requires.push(value.trim().to_string());
            }
        }
        let name = name.or_else(|| {
            let dir = String::from_utf8_lossy(dist.file_name()).into_owned();
            let stem = dir.strip_suffix(".dist-info")?;
            Some(normalize_name(
                stem.rsplit_once('-').map_or(stem, |(n, _)| n),
            ))
        });
        if let Some(name) = name {
            self.by_name.entry(name).or_default().push(dist.clone());
        }
        self.requires.insert(dist.clone(), requires);
    }

    /// The distribution of that name in one of `sites` (searched in order),
    /// when full holds it.
    pub(crate) fn named(&self, name: &str, sites: &[ImagePath]) -> Option<&ImagePath> {
        let found = self.by_name.get(&normalize_name(name))?;
        sites
            .iter()
            .find_map(|site| found.iter().find(|d| d.parent().as_ref() == Some(site)))
            .or_else(|| found.first())
    }

    /// The distributions whose top_level.txt lists `module`.
    pub(crate) fn providing(&self, module: &str) -> &[ImagePath] {
        self.top_level.get(module).map_or(&[], Vec::as_slice)
    }

    /// What a distribution requires in this environment, with `extras`
    /// asked of it. Lines that do not parse are logged and left out.
    pub(crate) fn requirements(
        &self,
        dist: &ImagePath,
        env: &PythonEnv,
        extras: &BTreeSet<String>,
    ) -> Vec<Required> {
        let extras: Vec<ExtraName> = extras
            .iter()
            .filter_map(|e| ExtraName::from_str(e).ok())
            .collect();
        let lines = self.requires.get(dist).map_or(&[][..], Vec::as_slice);
        lines
            .iter()
            .filter_map(
                |line| match Requirement::<pep508_rs::VerbatimUrl>::from_str(line) {
                    Ok(req) => Some((line, req)),
                    Err(err) => {
                        tracing::warn!(
                            "{}: cannot read Requires-Dist `{line}`: {err}",
                            dist.display_abs()
                        );
                        None
                    }
                },
            )
            .filter(|(_, req)| req.evaluate_markers(&env.markers, &extras))
            .map(|(line, req)| Required {
                name: normalize_name(PackageName::as_ref(&req.name)),
                extras: req.extras.iter().map(|e| e.to_string()).collect(),
                spec: line.clone(),
            })
            .collect()
    }
}

fn first_csv_field(line: &str) -> Option<String> {
    let field = if let Some(rest) = line.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    out.push('"');
                } else {
                    break;
                }
            } else {
                out.push(c);
            }
        }
        out
    } else {
        line.split(',').next()?.to_string()
    };
    (!field.is_empty()).then_some(field)
}

/// The directories a Debian or Ubuntu python3 imports from, in sys.path's
/// order, as far as the trees show them: for every python3.X under
/// /usr/lib (only `version` when given), its stdlib and lib-dynload, then
/// /usr/local's dist-packages and site-packages, /usr/lib/python3's
/// dist-packages, and /usr/lib/python3.X's own.
pub(crate) fn site_dirs(trees: &[&MergedTree], version: Option<&str>) -> Vec<ImagePath> {
    let mut versions: Vec<String> = ["usr/local/lib", "usr/lib"]
        .iter()
        .flat_map(|base| {
            let base = ImagePath::from_static(base);
            trees.iter().flat_map(move |t| t.child_names(&base))
        })
        .filter_map(|n| n.strip_prefix("python").map(str::to_string))
        .filter(|v| v.starts_with("3.") && version.is_none_or(|want| want == v))
        .collect();
    versions.sort();
    versions.dedup();
    let mut dirs = Vec::new();
    for v in &versions {
        let lib = ImagePath::from_static(&format!("usr/lib/python{v}"));
        dirs.push(lib.clone());
        dirs.push(lib.join(b"lib-dynload"));
        let local = ImagePath::from_static(&format!("usr/local/lib/python{v}"));
        dirs.push(local.join(b"dist-packages"));
        dirs.push(local.join(b"site-packages"));
    }
    dirs.push(ImagePath::from_static("usr/lib/python3/dist-packages"));
    for v in &versions {
        let lib = ImagePath::from_static(&format!("usr/lib/python{v}"));
        dirs.push(lib.join(b"dist-packages"));
        dirs.push(lib.join(b"site-packages"));
    }
    dirs
}

/// What every python3 imports as it starts, from files (most of what it
/// imports at start is frozen into the interpreter since 3.11): the codec
/// registry's `encodings` (CPython's `Python/pylifecycle.c`,
/// `init_stdio`), and `sitecustomize`, which `site` imports and Debian
/// ships in `/etc/python3.X`.
pub(crate) const STARTUP_MODULES: &[&str] = &["encodings", "sitecustomize"];

/// Modules compiled into CPython itself (no file to find):
/// `sys.builtin_module_names` of Debian's and Ubuntu's python3.8 to 3.13.
pub(crate) const BUILTIN_MODULES: &[&str] = &[
    "_abc",
    "_ast",
    "_bisect",
    "_blake2",
    "_codecs",
    "_collections",
    "_contextvars",
    "_csv",
    "_datetime",
    "_elementtree",
    "_functools",
    "_heapq",
    "_imp",
    "_io",
    "_locale",
    "_md5",
    "_opcode",
    "_operator",
    "_pickle",
    "_posixsubprocess",
    "_random",
    "_sha1",
    "_sha2",
    "_sha256",
    "_sha3",
    "_sha512",
    "_signal",
    "_socket",
    "_sre",
    "_stat",
    "_statistics",
    "_string",
    "_struct",
    "_symtable",
    "_sysconfig",
    "_thread",
    "_tokenize",
    "_tracemalloc",
    "_typing",
    "_warnings",
    "_weakref",
    "array",
    "atexit",
    "binascii",
    "builtins",
    "cmath",
    "errno",
    "faulthandler",
    "fcntl",
    "gc",
    "grp",
    "itertools",
    "marshal",
    "math",
    "posix",
    "pwd",
    "pyexpat",
    "select",
    "spwd",
    "sys",
    "syslog",
    "time",
    "unicodedata",
    "xxsubtype",
    "zlib",
];

/// A path where a module may be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub path: ImagePath,
    /// A namespace package's directory. A directory alone may be min's when
    /// min was not read, so it never proves the module is there.
    pub namespace: bool,
}

/// Where a module may be in the site directories, in their order and most
/// specific first: for `a.b`, `a/b/__init__.py`, `a/b.py`, extension
/// modules `a/b.*.so`, the namespace directory `a/b`, then the same for
/// `a`. Extension modules are found by listing the trees.
pub(crate) fn module_candidates(
    sites: &[ImagePath],
    module: &str,
    trees: &[&MergedTree],
) -> Vec<Candidate> {
    let parts: Vec<&str> = module.split('.').collect();
    let mut out = Vec::new();
    for site in sites {
        for n in (1..=parts.len()).rev() {
            let base = parts[..n].join("/");
            let file = |path: ImagePath| Candidate {
                path,
                namespace: false,
            };
            out.push(file(site.join(format!("{base}/__init__.py").as_bytes())));
            out.push(file(site.join(format!("{base}.py").as_bytes())));
            let prefix = site.join(format!("{base}.").as_bytes());
            let mut extensions: Vec<ImagePath> = trees
                .iter()
                .flat_map(|t| t.with_prefix(&prefix))
                .map(|(p, _)| p)
                .filter(|p| {
                    let rest = &p.as_bytes()[prefix.as_bytes().len()..];
                    p.file_name().ends_with(b".so") && !rest.contains(&b'/')
                })
                .collect();
            extensions.sort();
            extensions.dedup();
            out.extend(extensions.into_iter().map(file));
            out.push(Candidate {
                path: site.join(base.as_bytes()),
                namespace: true,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_as_pep_503_says() {
        assert_eq!(normalize_name("Foo.Bar__baz-Qux"), "foo-bar-baz-qux");
        assert_eq!(normalize_name("tcx_outer"), normalize_name("tcx.outer"));
    }

    fn kept_dist(dir: &str, metadata: &str, top_level: &str) -> Vec<(ImagePath, Vec<u8>)> {
        let site = "usr/local/lib/python3.11/dist-packages";
        vec![
            (
                ImagePath::from_static(&format!("{site}/{dir}/METADATA")),
                metadata.as_bytes().to_vec(),
            ),
            (
                ImagePath::from_static(&format!("{site}/{dir}/top_level.txt")),
                top_level.as_bytes().to_vec(),
            ),
        ]
    }

    #[test]
    fn requirements_follow_markers_extras_and_the_architecture() {
        let metadata = "Metadata-Version: 2.1\nName: Outer.Pkg\nVersion: 1\n\
Requires-Dist: inner>=1\n\
Requires-Dist: py2only ; python_version < \"3\"\n\
Requires-Dist: arm ; platform_machine == \"aarch64\"\n\
Requires-Dist: new-python ; python_full_version >= \"3.11.2\"\n\
Requires-Dist: fast-thing[gpu] ; extra == \"fast\"\n\
Requires-Dist: this is not a requirement\n\
\nRequires-Dist: in-the-description\n";
        let kept: HashMap<ImagePath, Vec<u8>> =
            kept_dist("Outer_Pkg-1.dist-info", metadata, "outer\n")
                .into_iter()
                .chain(kept_dist("inner-2.dist-info", "Name: inner\n", "inner\n"))
                .collect();
        let records = Listed::default();
        let dists = Dists::new(&kept, &records);
        let sites = [ImagePath::from_static(
            "usr/local/lib/python3.11/dist-packages",
        )];
        let outer = dists.named("outer-pkg", &sites).unwrap().clone();
        assert_eq!(dists.providing("outer"), std::slice::from_ref(&outer));
        assert!(dists.named("INNER", &sites).is_some());
        let names = |arch: &str, full: Option<&str>, extras: &[&str]| {
            let env = PythonEnv::new("3.11", full, arch).unwrap();
            let extras = extras.iter().map(|e| e.to_string()).collect();
            dists
                .requirements(&outer, &env, &extras)
                .into_iter()
                .map(|r| r.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("amd64", Some("3.11.2"), &[]), ["inner", "new-python"]);
        assert_eq!(names("arm64", Some("3.11.1"), &[]), ["inner", "arm"]);
        assert_eq!(names("amd64", None, &["fast"]), ["inner", "fast-thing"]);
        let env = PythonEnv::new("3.11", None, "amd64").unwrap();
        let fast = dists.requirements(&outer, &env, &["fast".to_string()].into());
        assert_eq!(fast[1].extras, BTreeSet::from(["gpu".to_string()]));
    }

    #[test]
    fn the_image_python_is_the_one_usr_bin_python3_names() {
        use crate::layer::{EntryKind, EntryMeta};
        use crate::tree::TreeBuilder;
        let tree_of = |entries: &[(&str, EntryKind, Option<&str>)]| {
            let mut builder = TreeBuilder::new().unwrap();
            let mut layer = builder.layer(0).unwrap();
            for (ordinal, (path, kind, target)) in entries.iter().enumerate() {
                let mut meta = EntryMeta::plain_dir(0o755, 0);
                meta.kind = *kind;
                meta.link_target = target.map(|t| t.as_bytes().to_vec());
                layer
                    .entry(ordinal as u32, ImagePath::from_static(path), meta, 0)
                    .unwrap();
            }
            drop(layer);
            builder.finish().unwrap()
        };
        let mut entries = vec![
            ("usr", EntryKind::Dir, None),
            ("usr/lib", EntryKind::Dir, None),
            ("usr/lib/python3.9", EntryKind::Dir, None),
            ("usr/lib/python3.12", EntryKind::Dir, None),
            ("usr/lib/python3.10", EntryKind::Dir, None),
        ];
        let tree = tree_of(&entries);
        let newest = PythonEnv::of_image(&[&tree], |_| None, "amd64").unwrap();
        assert_eq!(newest.version, "3.12");
        entries.push(("usr/bin", EntryKind::Dir, None));
        entries.push(("usr/bin/python3", EntryKind::Symlink, Some("python3.10")));
        let tree = tree_of(&entries);
        let dpkg = |p: &str| (p == "python3.10-minimal").then(|| "3.10.12-1~22.04.3".to_string());
        let named = PythonEnv::of_image(&[&tree], dpkg, "amd64").unwrap();
        assert_eq!(named.version, "3.10");
        let sites = site_dirs(&[&tree], Some(&named.version));
        assert_eq!(sites[0].display_abs(), "/usr/lib/python3.10");
        assert!(sites.iter().all(|s| !s.display_abs().contains("3.12")));
    }

    #[test]
    fn reads_record_files() {
        let site = "usr/local/lib/python3.12/dist-packages";
        let mut records = HashMap::from([(
            ImagePath::from_static(&format!("{site}/numpy-1.26.4.dist-info/RECORD")),
            b"numpy/__init__.py,sha256=x,100\n\"numpy/a,b.py\",,\n../../../bin/f2py,sha256=y,5\n"
                .to_vec(),
        )]);
        // More distributions than are remembered at a time, one of them
        // sharing numpy's directory.
        for i in 0..2 * RECENT_RECORDS {
            records.insert(
                ImagePath::from_static(&format!("{site}/extra{i}-1.dist-info/RECORD")),
                format!("extra{i}/x.py,,\nnumpy/plugin{i}.py,,\n").into_bytes(),
            );
        }
        let records = Listed::from_map(&records);
        let dists = Dists::new(&HashMap::new(), &records);
        let dist = dists
            .owner(&ImagePath::from_static(&format!(
                "{site}/numpy/__init__.py"
            )))
            .unwrap();
        assert!(dist.display_abs().ends_with("numpy-1.26.4.dist-info"));
        assert_eq!(dists.files(&dist).len(), 3);
        assert!(dists
            .owner(&ImagePath::from_static("usr/local/bin/f2py"))
            .is_some_and(|d| d == dist));
        assert!(dists
            .owner(&ImagePath::from_static(&format!("{site}/numpy/a,b.py")))
            .is_some());
        for round in 0..2 {
            for i in 0..2 * RECENT_RECORDS {
                let owner = |p: &str| dists.owner(&ImagePath::from_static(&format!("{site}/{p}")));
                let extra = owner(&format!("extra{i}/x.py")).unwrap();
                assert!(extra
                    .display_abs()
                    .ends_with(&format!("extra{i}-1.dist-info")));
                assert_eq!(
                    owner(&format!("numpy/plugin{i}.py")),
                    Some(extra),
                    "round {round}"
                );
            }
        }
        assert!(dists
            .owner(&ImagePath::from_static(&format!("{site}/numpy/missing.py")))
            .is_none());
        assert!(dists
            .owner(&ImagePath::from_static(&format!("{site}/elsewhere.py")))
            .is_none());
    }
}
