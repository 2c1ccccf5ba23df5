//! `--slim`: min cut to what the composed image loads.
//!
//! The keep-set comes from the load-chain analysis [`crate::verify`] and the
//! dependency closure use ([`crate::deps::chain`]), run on the composed
//! image (min with the new layers on top):
//!
//! - **roots**: Triton's programs, every ELF file of the selected components
//!   (dlopened into the server's process), the entrypoint, python with what
//!   the backends import, and what [`crate::triton::runtime_loaded`] and the
//!   library [`crate::triton::FAMILIES`] say is loaded by name at run time;
//! - **packages**: a file kept keeps its dpkg package, and a package keeps its
//!   Depends; packages of priority required or important always stay; the
//!   ELF files of a kept package are roots too (something may load them);
//! - **pip distributions** (RECORD) that the backends import, with their
//!   requirements;
//! - `--keep PATH|GLOB|PACKAGE`.
//!
//! What goes: packages nothing keeps (files, status stanza, `info/` files),
//! distributions nothing imports, unowned shared libraries nothing loads,
//! symlinks left dangling by those, and unowned files `--slim-drop GLOB`
//! names. Directories stay. The result is checked as `verify` checks an
//! image: every load chain that resolved before resolves after, every
//! import is still found; a need that is no longer met is an error that
//! names the chain.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use globset::{GlobSet, GlobSetBuilder};
use serde::Serialize;

use crate::deps::chain::{self, Finding, Objects, Roots};
use crate::deps::dpkg::{self, Installed, Owners, Stanza};
use crate::deps::fsview::{resolve, FsView, Lookup, Resolution};
use crate::deps::ldso::SearchPath;
use crate::deps::python::{self, Dists, PythonEnv};
use crate::elf::ElfInfo;
use crate::error::{Error, Result};
use crate::layer::{EntryKind, EntryMeta, ImagePath};
pub(crate) use crate::request::SlimOptions;

mod distroless;
mod first;
use crate::scan::ScannedImage;
use crate::triton::{self, Component, RuntimeLoaded, RuntimeNeed};
pub(crate) use distroless::KeptProgram;
pub(crate) use first::first_loads;

/// Why something went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemovedKind {
    /// A dpkg package nothing kept.
    Package,
    /// A pip distribution nothing imports.
    PythonDist,
    /// A shared library no package owns and nothing loads.
    Library,
    /// A symlink whose target went.
    DanglingLink,
    /// An unowned file `--slim-drop` named.
    Dropped,
    /// A program nothing in the selection runs (`--distroless`).
    Program,
}

/// One thing `--slim` removed, for the summary and `--json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Removed {
    pub kind: RemovedKind,
    /// The package or distribution name, or the path.
    pub name: String,
    pub files: usize,
    /// Bytes of its files.
    pub size: u64,
}

/// The outcome of the analysis: pure data the plan carries.
#[derive(Clone, Debug, Default)]
pub(crate) struct Slim {
    /// min's paths to remove (never directories).
    pub paths: BTreeSet<ImagePath>,
    pub removed: Vec<Removed>,
    /// Packages removed, for the status file.
    pub packages: BTreeSet<String>,
    /// min's status without the removed packages, when any went.
    pub status: Option<Vec<u8>>,
    /// Other files of min written again: the dpkg lists and md5sums of
    /// packages that stay without some of their programs.
    pub replace: BTreeMap<ImagePath, Vec<u8>>,
    /// The programs `--distroless` kept because the selection runs them.
    pub kept_programs: Vec<KeptProgram>,
    /// `--distroless` was asked for.
    pub distroless: bool,
    /// What was checked after: roots loaded and objects reached.
    pub checked: usize,
}

impl Slim {
    /// Bytes removed.
    pub(crate) fn size(&self) -> u64 {
        self.removed.iter().map(|r| r.size).sum()
    }

    /// A status file (min's, or one merged from it) without the stanzas of
    /// the removed packages.
    pub(crate) fn filter_status(&self, text: &[u8]) -> Vec<u8> {
        let stanzas = dpkg::parse_status(&String::from_utf8_lossy(text));
        let mut out = String::new();
        for stanza in stanzas
            .iter()
            .filter(|s| !self.packages.contains(&s.package))
        {
            out.push_str(&stanza.text);
            out.push_str("\n\n");
        }
        out.into_bytes()
    }
}

/// What the analysis reads.
pub(crate) struct SlimInput<'a> {
    pub min: &'a ScannedImage,
    pub full: &'a ScannedImage,
    /// What the new layers add: path, metadata, and ELF facts.
    pub added: HashMap<ImagePath, (EntryMeta, Option<ElfInfo>)>,
    pub ld_library_path: Option<String>,
    /// The config's PATH.
    pub path: Option<String>,
    pub entrypoint: Option<ImagePath>,
    pub components: &'a [Component],
    pub enable_gpu: bool,
    pub architecture: &'a str,
    pub options: &'a SlimOptions,
}

impl SlimInput<'_> {
    /// The composed image's new files under Triton's installation.
    pub(crate) fn installed(&self) -> Vec<&ImagePath> {
        let install = triton::install_dir();
        (self.added.keys())
            .filter(|p| p.is_within(&install))
            .collect()
    }
}

/// The composed image as the loader sees it, without what is removed.
struct View<'a> {
    input: &'a SlimInput<'a>,
    removed: &'a BTreeSet<ImagePath>,
}

impl FsView for View<'_> {
    fn lookup(&self, path: &ImagePath) -> Lookup<'_> {
        if let Some((meta, _)) = self.input.added.get(path) {
            return Lookup::Found(meta);
        }
        if self.removed.contains(path) {
            return Lookup::Absent;
        }
        self.input
            .min
            .tree
            .get(path)
            .map_or(Lookup::Absent, |n| Lookup::Found(&n.meta))
    }
}

impl Objects for View<'_> {
    fn elf(&self, path: &ImagePath) -> Option<&ElfInfo> {
        if let Some((meta, elf)) = self.input.added.get(path) {
            return elf.as_ref().filter(|_| meta.kind == EntryKind::File);
        }
        if self.removed.contains(path) {
            return None;
        }
        let min = self.input.min;
        min.tree
            .get(path)
            .filter(|n| n.meta.kind == EntryKind::File)
            .and_then(|n| min.elf.get(&n.inode))
    }

    fn find(&self, candidates: &[ImagePath], object: &ElfInfo) -> Option<ImagePath> {
        candidates.iter().find_map(|c| match resolve(self, c) {
            Resolution::Found(r)
                if matches!(self.lookup(&r.path), Lookup::Found(m) if m.kind == EntryKind::File)
                    && self.elf(&r.path).is_none_or(|lib| object.compatible(lib)) =>
            {
                Some(r.path)
            }
            _ => None,
        })
    }
}

impl View<'_> {
    fn exists(&self, path: &ImagePath) -> bool {
        matches!(resolve(self, path), Resolution::Found(_))
    }

    /// Where a path dpkg lists really is: its parent resolved through the
    /// image's symlinks (`/lib/x` is `/usr/lib/x` on merged /usr), its last
    /// component not followed.
    fn real(&self, path: &ImagePath) -> ImagePath {
        let parent = path.parent().unwrap_or_default();
        match resolve(self, &parent) {
            Resolution::Found(r) if r.path != parent => r.path.join(path.file_name()),
            _ => path.clone(),
        }
    }

    /// The ELF file a path names, symlinks followed.
    fn elf_file(&self, path: &ImagePath) -> Option<ImagePath> {
        match resolve(self, path) {
            Resolution::Found(r) if self.elf(&r.path).is_some() => Some(r.path),
            _ => None,
        }
    }

    /// What `path` loads by name at run time ([`triton::FAMILIES`]): each
    /// member beside it, with the family that says so.
    fn family_members(&self, path: &ImagePath) -> Vec<(&'static triton::Family, ImagePath)> {
        let dir = path.parent().unwrap_or_default();
        triton::FAMILIES
            .iter()
            .filter(|f| path.file_name().starts_with(f.trigger.as_bytes()))
            .flat_map(|f| f.members.iter().map(move |m| (f, m)))
            .flat_map(|(f, m)| self.siblings(&dir, m).into_iter().map(move |p| (f, p)))
            .collect()
    }

    /// Files in `dir` (added or min's) whose names start with `prefix`.
    fn siblings(&self, dir: &ImagePath, prefix: &str) -> Vec<ImagePath> {
        let min = self.input.min.tree.child_names(dir).into_iter();
        let added = self
            .input
            .added
            .keys()
            .filter(|p| p.parent().as_ref() == Some(dir))
            .map(|p| String::from_utf8_lossy(p.file_name()).into_owned());
        let mut out: Vec<ImagePath> = min
            .chain(added)
            .filter(|name| name.starts_with(prefix))
            .map(|name| dir.join(name.as_bytes()))
            .filter(|p| matches!(self.lookup(p), Lookup::Found(m) if !m.is_dir()))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Where loads start.
#[derive(Default)]
struct Starts {
    /// Programs and what libtritonserver dlopens.
    roots: Roots,
    /// Objects loaded each on its own: family members, ELF files of kept
    /// packages and distributions, runtime-loaded libraries.
    each: BTreeSet<ImagePath>,
}

/// What the loads of [`Starts`] reach and miss.
struct Reach {
    reached: HashSet<ImagePath>,
    findings: Vec<Finding>,
}

fn reach(view: &View<'_>, search: &SearchPath, starts: &Starts) -> Reach {
    let server = chain::load_roots(view, search, &starts.roots);
    let each: Vec<ImagePath> = starts.each.iter().cloned().collect();
    let alone = chain::load_each(view, search, &each);
    let mut findings = server.findings;
    findings.extend(alone.findings);
    findings.sort();
    findings.dedup();
    let mut reached = server.reached;
    reached.extend(alone.reached);
    Reach { reached, findings }
}

/// min's packaging: dpkg's status and lists, and pip's distributions.
struct Packaging<'a> {
    status: Vec<Stanza>,
    installed: Installed,
    owners: Owners,
    dists: Dists<'a>,
    /// Each package's files where they really are ([`View::real`]).
    files: HashMap<String, Vec<ImagePath>>,
}

impl<'a> Packaging<'a> {
    fn of(min: &'a ScannedImage) -> Packaging<'a> {
        let text = min
            .kept
            .get(&ImagePath::from_static(dpkg::STATUS))
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let status = dpkg::parse_status(&text);
        Packaging {
            installed: Installed::new(&status),
            status,
            owners: Owners::new(&min.kept),
            dists: Dists::new(&min.kept, &min.listed),
            files: HashMap::new(),
        }
    }

    /// Resolves every installed package's listed files in `view`.
    fn locate(&mut self, view: &View<'_>) {
        for package in self.installed.packages.keys() {
            let files = self.owners.files(package).iter().map(|f| view.real(f));
            self.files.insert(package.clone(), files.collect());
        }
    }

    /// A package's files, where they really are.
    fn files(&self, package: &str) -> &[ImagePath] {
        self.files.get(package).map_or(&[], Vec::as_slice)
    }

    /// The package that owns `path`, if one does.
    fn owner(&self, path: &ImagePath) -> Option<&str> {
        self.owners.owner(path)
    }

    /// `seeds` and every package they depend on, transitively.
    fn closure(&self, seeds: &BTreeSet<String>) -> BTreeSet<String> {
        let mut kept = BTreeSet::new();
        let mut todo: Vec<String> = seeds.iter().cloned().collect();
        while let Some(name) = todo.pop() {
            let Some(stanza) = self.installed.provider(&name) else {
                continue;
            };
            if !kept.insert(stanza.package.clone()) {
                continue;
            }
            for group in &stanza.depends {
                let met = group.iter().any(|alt| {
                    kept.contains(alt)
                        || self
                            .installed
                            .provider(alt)
                            .is_some_and(|p| kept.contains(&p.package))
                });
                if met {
                    continue;
                }
                if let Some(first) = group.iter().find(|alt| self.installed.satisfies(alt)) {
                    todo.push(first.clone());
                }
            }
        }
        kept
    }

    /// Packages kept whatever the selection: priority required or
    /// important, and Essential.
    fn always_kept(&self) -> BTreeSet<String> {
        self.installed
            .packages
            .values()
            .filter(|s| {
                s.field("Priority")
                    .is_some_and(|p| triton::KEPT_PRIORITIES.contains(&p))
                    || s.field("Essential") == Some("yes")
            })
            .map(|s| s.package.clone())
            .collect()
    }
}

/// Globs of `--keep` or `--slim-drop`: one with a `/` matches a path
/// (`*` stays within a directory, `**` crosses them), one without matches
/// a file name. Which of them matched something is remembered, to warn of
/// those that named nothing.
struct PathGlobs {
    flag: &'static str,
    patterns: Vec<String>,
    /// By path, and by file name; each with its pattern's index.
    paths: (GlobSet, Vec<usize>),
    names: (GlobSet, Vec<usize>),
    hits: std::cell::RefCell<Vec<bool>>,
}

impl PathGlobs {
    fn new(flag: &'static str, patterns: &[&String]) -> Result<PathGlobs> {
        let mut paths = (GlobSetBuilder::new(), Vec::new());
        let mut names = (GlobSetBuilder::new(), Vec::new());
        for (index, pattern) in patterns.iter().enumerate() {
            let text = pattern.trim_start_matches('/');
            let glob = globset::GlobBuilder::new(text)
                .literal_separator(true)
                .build()
                .map_err(|e| {
                    Error::new(format!("{flag} {pattern:?} is not a glob: {e}")).hint(
                        "give a path, a file name, or a glob such as /usr/local/lib/libfoo*.so*",
                    )
                })?;
            let set = if pattern.contains('/') {
                &mut paths
            } else {
                &mut names
            };
            set.0.add(glob);
            set.1.push(index);
        }
        let build =
            |set: GlobSetBuilder| set.build().map_err(|e| Error::new(format!("{flag}: {e}")));
        Ok(PathGlobs {
            flag,
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
            paths: (build(paths.0)?, paths.1),
            names: (build(names.0)?, names.1),
            hits: std::cell::RefCell::new(vec![false; patterns.len()]),
        })
    }

    /// True when a pattern names `path` (or, with `ancestors`, a directory
    /// holding it).
    fn matches(&self, path: &ImagePath, ancestors: bool) -> bool {
        let mut candidates = vec![path.clone()];
        if ancestors {
            candidates.extend(path.ancestors());
        }
        let mut found = false;
        for candidate in &candidates {
            let text = String::from_utf8_lossy(candidate.as_bytes());
            let name = String::from_utf8_lossy(candidate.file_name());
            let hits = (self.paths.0.matches(text.as_ref()).into_iter())
                .map(|i| self.paths.1[i])
                .chain(
                    self.names
                        .0
                        .matches(name.as_ref())
                        .into_iter()
                        .map(|i| self.names.1[i]),
                );
            for index in hits {
                self.hits.borrow_mut()[index] = true;
                found = true;
            }
        }
        found
    }

    /// Warns of the patterns that named nothing.
    fn warn_unmatched(&self) {
        for (pattern, hit) in self.patterns.iter().zip(self.hits.borrow().iter()) {
            if !hit {
                tracing::warn!("{} {pattern:?} names no package or file of min", self.flag);
            }
        }
    }
}

/// `--keep` and `--slim-drop`, compiled.
struct Patterns {
    keep: PathGlobs,
    keep_packages: BTreeSet<String>,
    drop: PathGlobs,
}

impl Patterns {
    fn new(options: &SlimOptions, packaging: &Packaging<'_>) -> Result<Patterns> {
        let (packages, paths): (Vec<&String>, Vec<&String>) = options
            .keep
            .iter()
            .partition(|k| !k.contains('/') && packaging.installed.provider(k).is_some());
        Ok(Patterns {
            keep: PathGlobs::new("--keep", &paths)?,
            keep_packages: packages.into_iter().cloned().collect(),
            drop: PathGlobs::new("--slim-drop", &options.drop.iter().collect::<Vec<_>>())?,
        })
    }

    fn keeps(&self, path: &ImagePath) -> bool {
        self.keep.matches(path, true)
    }

    fn drops(&self, path: &ImagePath) -> bool {
        self.drop.matches(path, false)
    }
}

/// Computes what `--slim` removes from min, and checks the result.
pub(crate) fn analyse(input: &SlimInput<'_>) -> Result<Slim> {
    let mut packaging = Packaging::of(input.min);
    let patterns = Patterns::new(input.options, &packaging)?;
    let search = SearchPath::new(
        input.ld_library_path.as_deref(),
        &[&input.min.kept, &input.full.kept],
    );
    let none = BTreeSet::new();
    let view = View {
        input,
        removed: &none,
    };
    packaging.locate(&view);
    let mut starts = initial_starts(&view);
    let distroless = input.options.distroless;
    let runs = distroless.then(|| distroless::runs(&view));
    starts
        .each
        .extend(runs.iter().flat_map(|r| r.programs.iter().cloned()));
    let python = python_keeps(&view, &packaging);
    starts.each.extend(
        python
            .files
            .iter()
            .filter(|p| view.elf(p).is_some())
            .cloned(),
    );
    // Distroless: only what is loaded or run keeps a package.
    let mut seeds = if distroless {
        (distroless::KEPT_PACKAGES.iter())
            .filter(|p| packaging.installed.provider(p).is_some())
            .map(|p| p.to_string())
            .collect()
    } else {
        packaging.always_kept()
    };
    seeds.extend(patterns.keep_packages.iter().cloned());
    seeds.extend(python.packages.iter().cloned());
    let (kept_packages, reach, starts) = keep_fixpoint(
        &view, &search, &packaging, &patterns, starts, seeds, &python,
    );
    patterns.keep.warn_unmatched();

    let mut slim = removals(
        &view,
        &packaging,
        &patterns,
        &kept_packages,
        &reach,
        &python,
        runs.as_ref(),
    )?;
    if distroless {
        distroless::rewrite_lists(&mut slim, &view, &packaging);
    }
    check(input, &search, &slim, &reach, &starts, &python)?;
    slim.checked = reach.reached.len();
    Ok(slim)
}

/// The composed image's own roots: programs, components, entrypoint,
/// python, and what Triton loads by name at run time.
fn initial_starts(view: &View<'_>) -> Starts {
    let input = view.input;
    let installed = input.installed();
    let entrypoint = input
        .entrypoint
        .as_ref()
        .and_then(|e| match resolve(view, e) {
            Resolution::Found(r) => Some(r.path),
            _ => None,
        });
    let mut roots = Roots::find(installed.iter().copied(), entrypoint.as_ref(), |p| {
        view.elf(p)
    });
    // Every ELF file of a selected component may be dlopened (execution
    // providers, plugins).
    for component in input.components {
        let dir = component.path();
        for path in &installed {
            if path.is_within(&dir) && view.elf(path).is_some_and(|i| i.interpreter.is_none()) {
                roots.dlopened.push((*path).clone());
            }
        }
    }
    roots.dlopened.sort();
    roots.dlopened.dedup();
    let mut each = BTreeSet::new();
    for (loaded, _) in triton::runtime_loaded(input.components, input.enable_gpu) {
        each.extend(runtime_loaded_files(view, &loaded));
    }
    Starts { roots, each }
}

/// Files of the composed image a [`RuntimeLoaded`] names.
fn runtime_loaded_files(view: &View<'_>, loaded: &RuntimeLoaded) -> Vec<ImagePath> {
    let min = &view.input.min.tree;
    let added = view.input.added.keys();
    let all = min.iter().map(|(p, _)| p).chain(added.cloned());
    match loaded {
        RuntimeLoaded::Named(prefix) => all
            .filter(|p| p.file_name().starts_with(prefix.as_bytes()))
            .collect(),
        RuntimeLoaded::Under(dir) => {
            let dir = ImagePath::from_static(dir);
            all.filter(|p| p.is_within(&dir) || *p == dir).collect()
        }
    }
}

/// What python needs kept: the interpreter, the imported modules' files,
/// their packages and distributions.
#[derive(Default)]
struct PythonKeeps {
    files: BTreeSet<ImagePath>,
    packages: BTreeSet<String>,
    dists: BTreeSet<ImagePath>,
    /// Modules found before slimming, with where.
    found: Vec<(String, ImagePath)>,
    /// The directories python imports from.
    sites: Vec<ImagePath>,
}

fn python_keeps(view: &View<'_>, packaging: &Packaging<'_>) -> PythonKeeps {
    let input = view.input;
    let mut out = PythonKeeps::default();
    let needs = triton::runtime_needs(input.components, &input.full.tree, &input.full.kept);
    if needs.is_empty() {
        return out;
    }
    for (need, _) in &needs {
        if let RuntimeNeed::Package(name) = need {
            out.packages.insert(name.to_string());
        }
    }
    let trees = [&input.min.tree, &input.full.tree];
    let version = |package: &str| dpkg::version_of(&packaging.status, package);
    let env = PythonEnv::of_image(&trees, version, input.architecture);
    let sites = python::site_dirs(&trees, env.as_ref().map(|e| e.version.as_str()));
    out.sites = sites.clone();
    for interpreter in ["usr/bin/python3", "usr/local/bin/python3"] {
        if let Resolution::Found(r) = resolve(view, &ImagePath::from_static(interpreter)) {
            out.files.insert(r.path);
            out.files.extend(r.links);
        }
    }
    let mut walk = Vec::new();
    for (need, _) in &needs {
        let RuntimeNeed::PythonModule { module, .. } = need else {
            continue;
        };
        let found = python::module_candidates(&sites, module, &trees)
            .into_iter()
            .filter(|c| !c.namespace)
            .find_map(|c| match resolve(view, &c.path) {
                Resolution::Found(r) => Some(r.path),
                _ => None,
            });
        let Some(path) = found else { continue };
        out.found.push((module.clone(), path.clone()));
        if let Some(package) = packaging.owner(&path) {
            out.packages.insert(package.to_string());
        }
        if let Some(dist) = packaging.dists.owner(&path) {
            walk.push((dist.clone(), BTreeSet::new()));
        }
        out.files.insert(path);
    }
    keep_dists(&mut out, packaging, env.as_ref(), &sites, walk);
    out
}

/// The distributions imported, with what they require, kept whole.
fn keep_dists(
    out: &mut PythonKeeps,
    packaging: &Packaging<'_>,
    env: Option<&PythonEnv>,
    sites: &[ImagePath],
    mut walk: Vec<(ImagePath, BTreeSet<String>)>,
) {
    let mut seen = BTreeSet::new();
    while let Some(item) = walk.pop() {
        if !seen.insert(item.clone()) {
            continue;
        }
        let (dist, extras) = item;
        out.dists.insert(dist.clone());
        out.files
            .extend(packaging.dists.files(&dist).iter().cloned());
        let Some(env) = env else { continue };
        for req in packaging.dists.requirements(&dist, env, &extras) {
            if let Some(found) = packaging.dists.named(&req.name, sites) {
                walk.push((found.clone(), req.extras));
            }
        }
    }
}

/// Loads from the starts, keeps the packages of what is reached (and their
/// Depends), loads their ELF files too, and so on until nothing changes.
fn keep_fixpoint(
    view: &View<'_>,
    search: &SearchPath,
    packaging: &Packaging<'_>,
    patterns: &Patterns,
    mut starts: Starts,
    mut seeds: BTreeSet<String>,
    python: &PythonKeeps,
) -> (BTreeSet<String>, Reach, Starts) {
    let min = &view.input.min.tree;
    for (path, node) in min.iter() {
        let path = &path;
        if node.is_dir() {
            continue;
        }
        let kept = patterns.keeps(path);
        if kept {
            seeds.extend(packaging.owner(path).map(str::to_string));
        }
        // Programs no package or distribution owns stay, with what they
        // load (unless distroless: then only those the selection runs).
        let unowned_program = !view.input.options.distroless
            && packaging.owner(path).is_none()
            && packaging.dists.owner(path).is_none()
            && !patterns.drops(path)
            && view.elf(path).is_some_and(|i| i.interpreter.is_some());
        if (kept && view.elf(path).is_some()) || unowned_program {
            starts.each.insert(path.clone());
        }
    }
    for file in &python.files {
        seeds.extend(packaging.owner(file).map(str::to_string));
    }
    loop {
        let reach = reach(view, search, &starts);
        for path in &reach.reached {
            seeds.extend(packaging.owner(path).map(str::to_string));
        }
        let kept = packaging.closure(&seeds);
        let before = starts.each.len();
        // Every start is reached when it is an ELF file: its family too.
        for path in &reach.reached {
            let members = view.family_members(path);
            starts
                .each
                .extend(members.iter().filter_map(|(_, p)| view.elf_file(p)));
        }
        // Distroless: a kept package's programs are not loaded for it
        // (those the selection runs are starts already).
        let distroless = view.input.options.distroless;
        for package in &kept {
            for file in packaging.files(package) {
                if view.elf(file).is_some() && !(distroless && distroless::is_program(view, file)) {
                    starts.each.insert(file.clone());
                }
            }
        }
        if starts.each.len() == before {
            return (kept, reach, starts);
        }
    }
}

/// What goes, given what is kept.
fn removals(
    view: &View<'_>,
    packaging: &Packaging<'_>,
    patterns: &Patterns,
    kept: &BTreeSet<String>,
    reach: &Reach,
    python: &PythonKeeps,
    runs: Option<&distroless::Runs>,
) -> Result<Slim> {
    let min = view.input.min;
    let added = &view.input.added;
    let kept_files: HashSet<&ImagePath> = kept.iter().flat_map(|p| packaging.files(p)).collect();
    let present =
        |p: &ImagePath| !added.contains_key(p) && min.tree.get(p).is_some_and(|n| !n.is_dir());
    let mut slim = Slim::default();
    let mut record = |slim: &mut Slim, kind, name: String, files: Vec<ImagePath>| {
        let files: Vec<ImagePath> = files.into_iter().filter(|p| present(p)).collect();
        let size = files
            .iter()
            .filter_map(|p| min.tree.get(p))
            .filter(|n| n.meta.kind == EntryKind::File)
            .map(|n| n.meta.size)
            .sum();
        slim.removed.push(Removed {
            kind,
            name,
            files: files.len(),
            size,
        });
        slim.paths.extend(files);
    };
    for stanza in packaging.installed.packages.values() {
        let name = &stanza.package;
        if kept.contains(name) {
            continue;
        }
        let mut files: Vec<ImagePath> = packaging
            .files(name)
            .iter()
            .filter(|f| !kept_files.contains(f))
            .cloned()
            .collect();
        files.extend(dpkg::info_files(&min.tree, name));
        slim.packages.insert(name.clone());
        let version = stanza.field("Version").unwrap_or("?");
        record(
            &mut slim,
            RemovedKind::Package,
            format!("{name} {version}"),
            files,
        );
    }
    remove_dists(&mut slim, view, packaging, python, &mut record);
    remove_unowned(&mut slim, view, packaging, patterns, reach, &mut record);
    patterns.drop.warn_unmatched();
    if let Some(runs) = runs {
        distroless::remove_programs(
            &mut slim,
            view,
            packaging,
            patterns,
            reach,
            python,
            runs,
            &mut record,
        );
        slim.kept_programs = runs.kept.clone();
        slim.distroless = true;
    }
    keep_shared_inodes(&mut slim, min);
    remove_dangling(&mut slim, view, packaging, &mut record);
    slim.removed.retain(|r| r.files > 0);
    if !slim.packages.is_empty() {
        let status = ImagePath::from_static(dpkg::STATUS);
        slim.status = min.kept.get(&status).map(|text| slim.filter_status(text));
    }
    Ok(slim)
}

type Record<'r> = dyn FnMut(&mut Slim, RemovedKind, String, Vec<ImagePath>) + 'r;

/// pip distributions (not dpkg's) that nothing imports.
fn remove_dists(
    slim: &mut Slim,
    view: &View<'_>,
    packaging: &Packaging<'_>,
    python: &PythonKeeps,
    record: &mut Record<'_>,
) {
    let records: BTreeSet<ImagePath> = view
        .input
        .min
        .listed
        .paths()
        .filter(|p| python::is_record(p))
        .filter_map(|p| p.parent())
        .collect();
    for dist in records {
        if python.dists.contains(&dist) || packaging.owner(&dist.join(b"RECORD")).is_some() {
            continue;
        }
        let mut files: Vec<ImagePath> = packaging.dists.files(&dist).to_vec();
        files.retain(|f| packaging.owner(f).is_none());
        files.extend(view.input.min.tree.subtree(&dist).map(|(p, _)| p));
        let name = String::from_utf8_lossy(dist.file_name())
            .trim_end_matches(".dist-info")
            .to_string();
        record(slim, RemovedKind::PythonDist, name, files);
    }
}

/// Unowned shared libraries nothing loads, and unowned files `--slim-drop`
/// names.
fn remove_unowned(
    slim: &mut Slim,
    view: &View<'_>,
    packaging: &Packaging<'_>,
    patterns: &Patterns,
    reach: &Reach,
    record: &mut Record<'_>,
) {
    let install = triton::install_dir();
    let mut libraries = Vec::new();
    let mut dropped = Vec::new();
    for (path, node) in view.input.min.tree.iter() {
        let path = &path;
        if node.is_dir()
            || slim.paths.contains(path)
            || packaging.owner(path).is_some()
            || packaging.dists.owner(path).is_some()
            || patterns.keeps(path)
            || path.is_within(&install)
        {
            continue;
        }
        if patterns.drops(path) {
            dropped.push(path.clone());
            continue;
        }
        let library = node.meta.kind == EntryKind::File
            && crate::deps::may_be_library(path)
            && view.elf(path).is_some_and(|i| i.interpreter.is_none());
        if library && !reach.reached.contains(path) {
            libraries.push(path.clone());
        }
    }
    for path in libraries {
        record(slim, RemovedKind::Library, path.display_abs(), vec![path]);
    }
    for path in dropped {
        record(slim, RemovedKind::Dropped, path.display_abs(), vec![path]);
    }
}

/// A path that shares its inode (a hard link) with a path that stays, stays.
fn keep_shared_inodes(slim: &mut Slim, min: &ScannedImage) {
    let staying: HashSet<_> = min
        .tree
        .iter()
        .filter(|(p, n)| !n.is_dir() && !slim.paths.contains(p))
        .map(|(_, n)| n.inode)
        .collect();
    slim.paths
        .retain(|p| min.tree.get(p).is_none_or(|n| !staying.contains(&n.inode)));
}

/// Unowned symlinks that resolved before and would dangle after.
fn remove_dangling(
    slim: &mut Slim,
    view: &View<'_>,
    packaging: &Packaging<'_>,
    record: &mut Record<'_>,
) {
    let after = View {
        input: view.input,
        removed: &slim.paths,
    };
    let mut dangling = Vec::new();
    for (path, node) in view.input.min.tree.iter() {
        let path = &path;
        if node.meta.kind != EntryKind::Symlink
            || slim.paths.contains(path)
            || packaging.owner(path).is_some()
            || view.input.added.contains_key(path)
        {
            continue;
        }
        if view.exists(path) && !after.exists(path) {
            dangling.push(path.clone());
        }
    }
    for path in dangling {
        record(
            slim,
            RemovedKind::DanglingLink,
            path.display_abs(),
            vec![path],
        );
    }
}

/// The slimmed image, checked as `verify` checks an image: every load that
/// resolved before still resolves, every import is still found, every
/// family is whole.
fn check(
    input: &SlimInput<'_>,
    search: &SearchPath,
    slim: &Slim,
    before: &Reach,
    starts: &Starts,
    python: &PythonKeeps,
) -> Result<()> {
    let whole = BTreeSet::new();
    let view = View {
        input,
        removed: &whole,
    };
    let after = View {
        input,
        removed: &slim.paths,
    };
    let reach = reach(&after, search, starts);
    let known: BTreeSet<&Finding> = before.findings.iter().collect();
    if let Some(finding) = reach.findings.iter().find(|f| !known.contains(f)) {
        let chain: Vec<String> = finding.chain.iter().map(|p| p.display_abs()).collect();
        return Err(Error::new(format!(
            "--slim would break a load: {} needs {}, which it removes (chain: {})",
            finding.object.display_abs(),
            finding.need,
            chain.join(" → ")
        ))
        .hint("keep it with --keep PATH or --keep PACKAGE, and report the case: the analysis missed it"));
    }
    for (module, path) in &python.found {
        if !after.exists(path) {
            return Err(Error::new(format!(
                "--slim would remove {} (python module {module})",
                path.display_abs()
            ))
            .hint("keep it with --keep PATH, and report the case: the analysis missed it"));
        }
    }
    check_families(&view, &after, before)?;
    let roots = starts
        .roots
        .executables
        .iter()
        .chain(&starts.roots.dlopened);
    match roots.chain(&starts.each).find(|p| slim.paths.contains(*p)) {
        Some(gone) => Err(Error::new(format!(
            "--slim would remove {}, which the composed image loads",
            gone.display_abs()
        ))
        .hint("leave it out of --slim-drop, or report the case: the analysis missed it")),
        None => Ok(()),
    }
}

/// Every family member present before is present after.
fn check_families(before: &View<'_>, after: &View<'_>, reach: &Reach) -> Result<()> {
    for path in &reach.reached {
        for (family, member) in before.family_members(path) {
            if !after.exists(&member) {
                return Err(Error::new(format!(
                    "--slim would remove {}, which {} loads at run time ({})",
                    member.display_abs(),
                    path.display_abs(),
                    family.source
                )));
            }
        }
    }
    Ok(())
}

/// Which of min's layers hold each removed path: layer → paths.
pub(crate) fn by_layer(slim: &Slim, min: &ScannedImage) -> BTreeMap<u32, BTreeSet<ImagePath>> {
    let mut out: BTreeMap<u32, BTreeSet<ImagePath>> = BTreeMap::new();
    for path in &slim.paths {
        for layer in min.tree.layers_holding(path) {
            out.entry(layer).or_default().insert(path.clone());
        }
    }
    out
}
