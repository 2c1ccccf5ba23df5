//! Runtime dependencies, carried over from the full image instead of being
//! installed from the network as compose.py does.
//!
//! Starting from the ELF files of the selection, every DT_NEEDED is looked
//! up as ld.so would ([`ldso`]) in the *composed* filesystem: min plus what
//! is being added, symlinks followed inside the root ([`fsview`]). A library
//! that is not there but is in full is added with its symlink chain, and its
//! own needs are resolved in turn. A file added that way pulls in its dpkg
//! package ([`dpkg`]) or pip distribution ([`python`]) whole, when min lacks
//! it, and a package pulls in the Depends min lacks. Components can ask for
//! packages and python modules ELF cannot see ([`crate::triton::runtime_needs`]).
//!
//! The result is pure data, [`Deps`]: the paths to copy, the dpkg status
//! file to write, and for each addition the reason it was made.
//!
//! When min was not read (full was built FROM it), a path outside full's
//! own layers may or may not be in min: such needs count as met by min,
//! and packages count as min's unless full's own layers wrote their
//! `info/PKG.list`.

pub(crate) mod chain;
pub(crate) mod dpkg;
pub(crate) mod fsview;
pub(crate) mod ldso;
pub(crate) mod python;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;

use crate::elf::ElfInfo;
use crate::layer::{EntryKind, EntryMeta, ImagePath};
use crate::scan::{MinView, ScannedImage};
use crate::tree::MergedTree;
use crate::triton::{self, RuntimeNeed};

use dpkg::{Installed, Owners, Stanza};
use fsview::{resolve, FsView, Lookup, Resolution};
use ldso::SearchPath;
use python::{Dists, PythonEnv};

/// Files the scans keep in memory for this module.
pub(crate) fn keeps(path: &ImagePath) -> bool {
    let bytes = path.as_bytes();
    bytes == dpkg::STATUS.as_bytes()
        || bytes == b"etc/ld.so.conf"
        || (path
            .parent()
            .is_some_and(|p| p.as_bytes() == b"etc/ld.so.conf.d")
            && bytes.ends_with(b".conf"))
        || (path
            .parent()
            .is_some_and(|p| p.as_bytes() == dpkg::INFO_DIR.as_bytes())
            && (bytes.ends_with(b".list") || bytes.ends_with(b".md5sums")))
        || (python::is_dist_file(path) && !python::is_record(path))
        || triton::is_backend_source(path)
}

/// Small files the dependency closure reads that are kept on disk
/// ([`crate::listed`]): pip's RECORD files, which name every file a
/// distribution installed.
pub(crate) fn lists(path: &ImagePath) -> bool {
    python::is_record(path)
}

/// Files whose ELF facts the scans read, besides the selection: anything
/// named like a shared library.
pub(crate) fn may_be_library(path: &ImagePath) -> bool {
    let name = path.file_name();
    name.ends_with(b".so") || name.windows(4).any(|w| w == b".so.")
}

/// Why something was added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reason {
    /// What was added: a library path, `package NAME`, `python NAME`.
    pub added: String,
    pub because: String,
}

/// A need nothing in min or full meets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Missing {
    pub need: String,
    pub of: String,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Deps {
    /// Paths of the full image to add, sorted.
    pub paths: BTreeSet<ImagePath>,
    /// The merged /var/lib/dpkg/status, when packages were added.
    pub dpkg_status: Option<Vec<u8>>,
    pub packages: Vec<String>,
    pub reasons: Vec<Reason>,
    pub missing: Vec<Missing>,
}

pub(crate) struct DepsInput<'a> {
    pub full: &'a ScannedImage,
    pub min: &'a MinView<'a>,
    /// Paths of full the plan copies already.
    pub selected: &'a BTreeSet<ImagePath>,
    /// Paths other images put in the composed image (gpu-min's CUDA
    /// libraries): present, but not followed.
    pub provided: &'a BTreeMap<ImagePath, EntryMeta>,
    /// LD_LIBRARY_PATH of the composed config.
    pub ld_library_path: Option<&'a str>,
    /// The image's architecture (OCI name), for python's environment markers.
    pub architecture: &'a str,
    pub needs: &'a [(RuntimeNeed, String)],
}

pub(crate) fn resolve_deps(input: &DepsInput<'_>) -> Deps {
    let mut closure = Closure::new(input);
    // Along load chains first, as ld.so resolves them: the programs, then
    // the components libtritonserver dlopens with its DT_RPATH chain. What
    // no root reaches is resolved alone, afterwards.
    let roots = chain::Roots::find(input.selected, None, |p| closure.elf_info(p));
    for program in &roots.executables {
        closure.enqueue(program.clone(), Vec::new(), true);
    }
    closure.elf_closure();
    let inherited = closure.dlopen_chain(&roots);
    for root in &roots.dlopened {
        closure.enqueue(root.clone(), inherited.clone(), true);
    }
    closure.elf_closure();
    // Unreached objects may be loaded by something no image shows (python
    // extension modules, plugins): their needs are carried when full has them.
    let selected: Vec<ImagePath> = input.selected.iter().cloned().collect();
    for path in selected {
        closure.enqueue(path, Vec::new(), true);
    }
    closure.elf_closure();
    for (need, why) in input.needs {
        match need {
            RuntimeNeed::Package(name) => closure.add_package(name, why),
            RuntimeNeed::PythonModule { module, optional } => {
                closure.add_module(module, why, *optional)
            }
        }
    }
    // What packages brought may need more (alternatives symlinks, say).
    while !closure.queue.is_empty() {
        closure.elf_closure();
    }
    closure.finish()
}

/// The full image's files, as far as its scan saw them. The layers it
/// shares with min were not read: min's files stand in for them.
struct FullView<'a> {
    tree: &'a MergedTree,
    min: &'a MinView<'a>,
}

impl FsView for FullView<'_> {
    fn lookup(&self, path: &ImagePath) -> Lookup<'_> {
        match (self.tree.get(path), self.min) {
            (Some(node), _) => Lookup::Found(&node.meta),
            (None, MinView::Scanned(min)) => min
                .tree
                .get(path)
                .map_or(Lookup::Absent, |n| Lookup::Found(&n.meta)),
            (None, MinView::BaseOfFull) => Lookup::Unknown,
        }
    }
}

/// min with the selection and the dependencies found so far on top.
struct ComposedView<'a, 'b> {
    full: &'a MergedTree,
    provided: &'a BTreeMap<ImagePath, EntryMeta>,
    min: &'a MinView<'a>,
    added: &'b BTreeSet<ImagePath>,
}

impl FsView for ComposedView<'_, '_> {
    fn lookup(&self, path: &ImagePath) -> Lookup<'_> {
        if let Some(meta) = self.provided.get(path) {
            return Lookup::Found(meta);
        }
        // A path added, or a directory holding one.
        let added = self
            .added
            .range((Bound::Included(path), Bound::Unbounded))
            .next()
            .is_some_and(|p| p.is_within(path));
        if added {
            if let Some(node) = self.full.get(path) {
                return Lookup::Found(&node.meta);
            }
        }
        match self.min {
            MinView::Scanned(min) => min
                .tree
                .get(path)
                .map_or(Lookup::Absent, |n| Lookup::Found(&n.meta)),
            MinView::BaseOfFull => match self.full.get(path) {
                Some(node) if node.is_dir() => Lookup::Found(&node.meta),
                Some(_) => Lookup::Absent, // full's own file, not min's
                None => Lookup::Unknown,
            },
        }
    }
}

struct Closure<'a> {
    input: &'a DepsInput<'a>,
    full: &'a MergedTree,
    search: SearchPath,
    /// The selection and everything added so far.
    present: BTreeSet<ImagePath>,
    deps: Deps,
    /// ELF files added for their own sake, for the package pass.
    libraries: Vec<(ImagePath, String)>,
    owners: Owners,
    dists: Dists<'a>,
    /// Distributions min already has (empty when min was not read).
    min_dists: Dists<'a>,
    /// The composed image's python, for Requires-Dist markers.
    python: Option<PythonEnv>,
    /// The extras each added distribution was asked for.
    dist_extras: HashMap<ImagePath, BTreeSet<String>>,
    full_status: Vec<Stanza>,
    full_installed: Installed,
    min_status: Vec<Stanza>,
    min_installed: Installed,
    added_packages: Installed,
    /// ELF objects whose needs are still to be resolved: path, inherited
    /// DT_RPATH dirs, and whether the selection reaches it by DT_NEEDED.
    queue: VecDeque<(ImagePath, Vec<ImagePath>, bool)>,
    queued: HashSet<ImagePath>,
    /// The DT_RPATH directories each resolved object passes on.
    passed_on: HashMap<ImagePath, Vec<ImagePath>>,
}

impl<'a> Closure<'a> {
    fn new(input: &'a DepsInput<'a>) -> Self {
        let full = input.full;
        let text = |scan: &ScannedImage| {
            scan.kept
                .get(&ImagePath::from_static(dpkg::STATUS))
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        let full_status = dpkg::parse_status(&text(full));
        let owners = Owners::new(&full.kept);
        let (min_status, kept): (Vec<Stanza>, Vec<&HashMap<ImagePath, Vec<u8>>>) = match input.min {
            MinView::Scanned(min) => (dpkg::parse_status(&text(min)), vec![&min.kept, &full.kept]),
            MinView::BaseOfFull => {
                // Packages whose list full's own layers did not write are min's.
                let own: HashSet<&str> = owners.listed().collect();
                let min_status = full_status
                    .iter()
                    .filter(|s| !own.contains(s.package.as_str()))
                    .cloned()
                    .collect();
                (min_status, vec![&full.kept])
            }
        };
        let (trees, min_dists) = match input.min {
            MinView::Scanned(min) => (
                vec![&min.tree, &full.tree],
                Dists::new(&min.kept, &min.listed),
            ),
            MinView::BaseOfFull => (vec![&full.tree], Dists::default()),
        };
        let version =
            |package: &str| dpkg::version_of(full_status.iter().chain(&min_status), package);
        let python = PythonEnv::of_image(&trees, version, input.architecture);
        Closure {
            input,
            full: &full.tree,
            min_dists,
            python,
            dist_extras: HashMap::new(),
            search: SearchPath::new(input.ld_library_path, &kept),
            present: input.selected.clone(),
            deps: Deps::default(),
            libraries: Vec::new(),
            dists: Dists::new(&full.kept, &full.listed),
            full_installed: Installed::new(&full_status),
            full_status,
            min_installed: Installed::new(&min_status),
            min_status,
            owners,
            added_packages: Installed::default(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            passed_on: HashMap::new(),
        }
    }

    /// The DT_RPATH chain a component dlopened by libtritonserver inherits:
    /// what libtritonserver passes on in the server's process (the server
    /// program's when the library was not reached).
    fn dlopen_chain(&self, roots: &chain::Roots) -> Vec<ImagePath> {
        let server = ImagePath::from_static(triton::SERVER_PROGRAM);
        if !roots.executables.contains(&server) {
            return Vec::new();
        }
        let library = self.passed_on.iter().find(|(path, _)| {
            path.file_name() == triton::SERVER_LIBRARY.as_bytes()
                || self
                    .elf_info(path)
                    .and_then(|i| i.soname.as_deref())
                    .is_some_and(|s| s == triton::SERVER_LIBRARY)
        });
        library
            .or_else(|| self.passed_on.get_key_value(&server))
            .map(|(_, dirs)| dirs.clone())
            .unwrap_or_default()
    }

    fn enqueue(&mut self, path: ImagePath, inherited: Vec<ImagePath>, from_selection: bool) {
        if self.elf_info(&path).is_some() && self.queued.insert(path.clone()) {
            self.queue.push_back((path, inherited, from_selection));
        }
    }

    fn full_view(&self) -> FullView<'a> {
        FullView {
            tree: self.full,
            min: self.input.min,
        }
    }

    fn elf_info(&self, path: &ImagePath) -> Option<&'a ElfInfo> {
        let node = self.full.get(path)?;
        self.input.full.elf.get(&node.inode)
    }

    fn add_path(&mut self, path: ImagePath) -> bool {
        let Some(node) = self.full.get(&path) else {
            return false; // min's, seen through a shared layer
        };
        if self.present.contains(&path) || self.min_has_same(&path, &node.meta) {
            return false;
        }
        self.present.insert(path.clone());
        self.deps.paths.insert(path.clone());
        // update-alternatives keeps its state beside the link.
        if let Some(name) = path
            .as_bytes()
            .strip_prefix(b"etc/alternatives/".as_slice())
        {
            let state = ImagePath::from_static("var/lib/dpkg/alternatives").join(name);
            if self.full.contains(&state) {
                self.add_path(state);
            }
        }
        self.enqueue(path, Vec::new(), false);
        true
    }

    /// Adds every library the queued objects need, transitively, and the
    /// packages those libraries belong to.
    fn elf_closure(&mut self) {
        while let Some((object, inherited, from_selection)) = self.queue.pop_front() {
            let Some(info) = self.elf_info(&object) else {
                continue;
            };
            let dirs = self.search.dirs(&object, info, &inherited);
            let passed_on = self.search.passed_on(&object, info, &inherited);
            self.passed_on.insert(object.clone(), passed_on.clone());
            for need in &info.needed {
                if triton::is_driver_library(need) {
                    continue;
                }
                match self.find_composed(need, &dirs, info) {
                    // Libraries of the selection or added are followed; min's are min's.
                    Found::Here(real) => {
                        if self.present.contains(&real) && self.queued.insert(real.clone()) {
                            self.queue
                                .push_back((real, passed_on.clone(), from_selection));
                        }
                    }
                    Found::Unknown => {}
                    Found::InFull(resolved) => {
                        for link in &resolved.links {
                            self.add_path(link.clone());
                        }
                        let real = resolved.path;
                        self.queued.insert(real.clone());
                        self.add_path(real.clone());
                        self.deps.reasons.push(Reason {
                            added: real.display_abs(),
                            because: format!("{need}, needed by {}", object.display_abs()),
                        });
                        self.libraries.push((real.clone(), need.clone()));
                        self.queue
                            .push_back((real, passed_on.clone(), from_selection));
                    }
                    Found::Nowhere if from_selection => self.deps.missing.push(Missing {
                        need: need.clone(),
                        of: object.display_abs(),
                    }),
                    // Packaged plugins often need what nobody installed.
                    Found::Nowhere => {
                        tracing::debug!("{need}, needed by {object}, is in neither image")
                    }
                }
            }
        }
        let libraries = std::mem::take(&mut self.libraries);
        for (path, need) in &libraries {
            self.add_owner(path, &format!("owns {} ({need})", path.display_abs()));
        }
    }

    fn find_composed(&self, need: &str, dirs: &[ImagePath], object: &ElfInfo) -> Found {
        let view = ComposedView {
            full: self.full,
            provided: self.input.provided,
            min: self.input.min,
            added: &self.present,
        };
        let mut unknown = false;
        for candidate in candidates(need, dirs) {
            match resolve(&view, &candidate) {
                Resolution::Found(r) => {
                    let compatible = self
                        .present
                        .contains(&r.path)
                        .then(|| self.elf_info(&r.path))
                        .flatten()
                        .is_none_or(|lib| object.compatible(lib));
                    if compatible && !is_dir(&view, &r.path) {
                        return Found::Here(r.path);
                    }
                }
                Resolution::Unknown => unknown = true,
                Resolution::Absent => {}
            }
        }
        match self.find_in_full(need, dirs, object) {
            Some(resolved) => Found::InFull(resolved),
            // Not in full's own layers: min has it, or nobody does.
            None if unknown => Found::Unknown,
            None => Found::Nowhere,
        }
    }

    fn find_in_full(
        &self,
        need: &str,
        dirs: &[ImagePath],
        object: &ElfInfo,
    ) -> Option<fsview::Resolved> {
        let view = self.full_view();
        candidates(need, dirs)
            .into_iter()
            .find_map(|candidate| match resolve(&view, &candidate) {
                Resolution::Found(r)
                    if self
                        .full
                        .get(&r.path)
                        .is_some_and(|n| n.meta.kind == EntryKind::File)
                        && self
                            .elf_info(&r.path)
                            .is_some_and(|lib| object.compatible(lib)) =>
                {
                    Some(r)
                }
                _ => None,
            })
    }

    /// Adds the package or distribution that owns a path, if min lacks it.
    fn add_owner(&mut self, path: &ImagePath, because: &str) {
        if let Some(package) = self.owners.owner(path).map(str::to_string) {
            self.add_package(&package, because);
        } else if let Some(dist) = self.dists.owner(path) {
            self.add_dist(&dist, &BTreeSet::new(), because);
        }
    }

    fn add_package(&mut self, name: &str, because: &str) {
        if self.min_installed.satisfies(name) || self.added_packages.satisfies(name) {
            return;
        }
        let Some(stanza) = self.full_installed.provider(name).cloned() else {
            self.deps.missing.push(Missing {
                need: format!("package {name}"),
                of: because.to_string(),
            });
            return;
        };
        let package = stanza.package.clone();
        tracing::debug!("adding package {package}: {because}");
        self.deps.reasons.push(Reason {
            added: format!("package {package}"),
            because: because.to_string(),
        });
        self.deps.packages.push(package.clone());
        self.added_packages.insert(&stanza);
        // By their real paths: dpkg names files through the image's symlinks.
        let files: Vec<ImagePath> = self
            .owners
            .files(&package)
            .iter()
            .filter_map(|listed| self.real_path(listed))
            .collect();
        for file in &files {
            let is_dir = self.full.get(file).is_some_and(|n| n.is_dir());
            if is_dir && self.dir_is_there(file, &files) {
                continue;
            }
            self.add_path(file.clone());
        }
        for info in dpkg::info_files(self.full, &package) {
            self.add_path(info);
        }
        for group in &stanza.depends {
            let met = group
                .iter()
                .any(|alt| self.min_installed.satisfies(alt) || self.added_packages.satisfies(alt));
            if met {
                continue;
            }
            match group.iter().find(|alt| self.full_installed.satisfies(alt)) {
                Some(alt) => self.add_package(&alt.clone(), &format!("Depends of {package}")),
                None => self.deps.missing.push(Missing {
                    need: format!("package {}", group.join(" | ")),
                    of: format!("Depends of {package}"),
                }),
            }
        }
    }

    /// True when min has the same symlink or directory at that path.
    fn min_has_same(&self, path: &ImagePath, meta: &EntryMeta) -> bool {
        let MinView::Scanned(min) = self.input.min else {
            return false;
        };
        match (min.tree.get(path), meta.kind) {
            (Some(n), EntryKind::Symlink) => n.meta.link_target == meta.link_target,
            (Some(n), EntryKind::Dir) => n.is_dir(),
            _ => false,
        }
    }

    /// True when a directory a package lists needs no entry of its own:
    /// min has it, or (when min was not read) another path the package
    /// lists (`listed`, real paths) lies in it, so that it comes as that
    /// path's parent.
    fn dir_is_there(&self, dir: &ImagePath, listed: &[ImagePath]) -> bool {
        match self.input.min {
            MinView::Scanned(min) => min.tree.contains(dir),
            MinView::BaseOfFull => listed.iter().any(|p| p != dir && p.is_within(dir)),
        }
    }

    /// Where a path a package or distribution lists is in full: its parent
    /// resolved through the image's symlinks as the kernel would (the last
    /// component is not followed, as dpkg does not). When the parent is in
    /// layers min shares and were not read, a merged-/usr name
    /// (`/lib/...`) is looked for under /usr. `None` when full lacks it.
    fn real_path(&self, listed: &ImagePath) -> Option<ImagePath> {
        if self.full.contains(listed) {
            return Some(listed.clone());
        }
        let parent = listed.parent().unwrap_or_default();
        let in_parent = |resolved: &ImagePath| resolved.join(listed.file_name());
        let found = match resolve(&self.full_view(), &parent) {
            Resolution::Found(resolved) => in_parent(&resolved.path),
            Resolution::Absent => return None,
            Resolution::Unknown => {
                let top = listed.as_bytes().split(|&b| b == b'/').next()?;
                if !dpkg::MERGED_USR_LINKS.iter().any(|l| l.as_bytes() == top) {
                    return None;
                }
                let under_usr = ImagePath::from_static("usr").join(parent.as_bytes());
                match resolve(&self.full_view(), &under_usr) {
                    Resolution::Found(resolved) => in_parent(&resolved.path),
                    _ => return None,
                }
            }
        };
        self.full.contains(&found).then_some(found)
    }

    /// Adds a distribution whole, with what it requires (for `extras`) in
    /// the image's python, transitively; min's distributions stay min's.
    fn add_dist(&mut self, dist: &ImagePath, extras: &BTreeSet<String>, because: &str) {
        let asked = self.dist_extras.get(dist);
        let first = asked.is_none();
        let new_extras: BTreeSet<String> = extras
            .difference(asked.unwrap_or(&BTreeSet::new()))
            .cloned()
            .collect();
        if !first && new_extras.is_empty() {
            return;
        }
        self.dist_extras
            .entry(dist.clone())
            .or_default()
            .extend(new_extras);
        if let MinView::Scanned(min) = self.input.min {
            if min.tree.contains(dist) {
                return;
            }
        }
        let name = String::from_utf8_lossy(dist.file_name()).into_owned();
        let name = name.trim_end_matches(".dist-info").to_string();
        if first {
            self.deps.reasons.push(Reason {
                added: format!("python {name}"),
                because: because.to_string(),
            });
            let files = self.dists.files(dist).to_vec();
            let real: Vec<ImagePath> = files.iter().filter_map(|f| self.real_path(f)).collect();
            for file in real {
                self.add_path(file);
            }
        }
        let Some(python) = &self.python else {
            tracing::debug!("no python in the image: the requirements of {name} are not followed");
            return;
        };
        let all_extras = self.dist_extras[dist].clone();
        let required = self.dists.requirements(dist, python, &all_extras);
        let sites = python::site_dirs(&self.trees(), Some(&python.version));
        for req in required {
            let because = format!("Requires-Dist of {name}: {}", req.spec);
            if self.min_dists.named(&req.name, &sites).is_some() {
                continue;
            }
            match self.dists.named(&req.name, &sites).cloned() {
                Some(found) => self.add_dist(&found, &req.extras, &because),
                // In min's layers, which full shares and were not read.
                None if matches!(self.input.min, MinView::BaseOfFull) => {}
                None => self.deps.missing.push(Missing {
                    need: format!("python distribution {}", req.name),
                    of: because,
                }),
            }
        }
    }

    fn trees(&self) -> Vec<&'a MergedTree> {
        match self.input.min {
            MinView::Scanned(min) => vec![&min.tree, self.full],
            MinView::BaseOfFull => vec![self.full],
        }
    }

    /// Makes a python module importable, from its owner in full. An
    /// optional one (imported under `try:`) is never missing.
    fn add_module(&mut self, module: &str, because: &str, optional: bool) {
        let top = module.split('.').next().unwrap_or(module);
        if python::BUILTIN_MODULES.contains(&top) {
            return;
        }
        let trees = self.trees();
        let version = self.python.as_ref().map(|p| p.version.as_str());
        let sites = python::site_dirs(&trees, version);
        let candidates = python::module_candidates(&sites, module, &trees);
        let view = ComposedView {
            full: self.full,
            provided: self.input.provided,
            min: self.input.min,
            added: &self.present,
        };
        let here = candidates
            .iter()
            .filter(|c| !c.namespace)
            .any(|c| matches!(resolve(&view, &c.path), Resolution::Found(_)));
        if here {
            return;
        }
        let full_view = self.full_view();
        let found = candidates
            .iter()
            .find_map(|c| match resolve(&full_view, &c.path) {
                Resolution::Found(r) if self.full.contains(&r.path) => Some(r.path),
                _ => None,
            });
        let Some(file) = found else {
            if !optional && !matches!(self.input.min, MinView::BaseOfFull) {
                self.deps.missing.push(Missing {
                    need: format!("python module {module}"),
                    of: because.to_string(),
                });
            }
            return;
        };
        let because = format!("python module {module}, {because}");
        let providers: Vec<ImagePath> = self.dists.providing(top).to_vec();
        if self.owners.owner(&file).is_some() || self.dists.owner(&file).is_some() {
            self.add_owner(&file, &because);
        } else if self.full.get(&file).is_some_and(|n| n.is_dir()) && !providers.is_empty() {
            // A namespace package: every distribution that says it provides it.
            for dist in providers {
                self.add_dist(&dist, &BTreeSet::new(), &because);
            }
        } else {
            // Neither dpkg nor pip knows it: copy the module's directory.
            let root = if file.file_name() == b"__init__.py" {
                file.parent().unwrap_or_default()
            } else {
                file
            };
            self.deps.reasons.push(Reason {
                added: root.display_abs(),
                because,
            });
            let paths: Vec<ImagePath> = self.full.subtree(&root).map(|(p, _)| p).collect();
            for path in paths {
                self.add_path(path);
            }
        }
    }

    fn finish(mut self) -> Deps {
        let status = ImagePath::from_static(dpkg::STATUS);
        if !self.deps.packages.is_empty() {
            let added: Vec<&Stanza> = self
                .deps
                .packages
                .iter()
                .filter_map(|p| self.full_status.iter().find(|s| &s.package == p))
                .collect();
            self.deps.dpkg_status = Some(dpkg::merge_status(&self.min_status, &added).into_bytes());
        }
        // The status file is generated, never copied.
        self.deps.paths.remove(&status);
        self.deps
            .missing
            .sort_by(|a, b| (&a.need, &a.of).cmp(&(&b.need, &b.of)));
        self.deps.missing.dedup();
        self.deps
    }
}

enum Found {
    /// In the composed filesystem, at this real path.
    Here(ImagePath),
    /// Not in the composed filesystem, but in full.
    InFull(fsview::Resolved),
    /// Maybe in min, which was not read.
    Unknown,
    Nowhere,
}

/// The paths ld.so tries for a DT_NEEDED name, given its search dirs.
pub(crate) fn candidates(need: &str, dirs: &[ImagePath]) -> Vec<ImagePath> {
    if need.contains('/') {
        return if need.starts_with('/') {
            vec![fsview::normalize(need)]
        } else {
            Vec::new()
        };
    }
    dirs.iter().map(|d| d.join(need.as_bytes())).collect()
}

fn is_dir(view: &dyn FsView, path: &ImagePath) -> bool {
    matches!(
        view.lookup(path),
        Lookup::Found(EntryMeta {
            kind: EntryKind::Dir,
            ..
        })
    )
}
