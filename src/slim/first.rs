//! What the composed server reads first, found by the same load chains
//! that `--slim` keeps and `verify` checks: an eStargz layer puts these
//! files before its prefetch landmark, so that a lazy pull fetches them at
//! once and the rest only when something reads it.
//!
//! - the programs of the installation and an ELF entrypoint, run, with the
//!   components' own libraries (`libtriton_NAME.so`) dlopened into the
//!   server as Triton loads them: what their DT_NEEDED reach, not what they
//!   load by name later (execution providers, cuDNN's parts) nor every ELF
//!   file of a component;
//! - NGC's entrypoint script with its interpreter and the scripts it runs
//!   ([`triton::entrypoint_reads`]);
//! - the loader's own files ([`ldso::LOADER_FILES`]);
//! - python: the interpreter, the modules every python3 imports as it
//!   starts ([`python::STARTUP_MODULES`]) and those the backends import
//!   (a package whole: its source, compiled and extension files), with
//!   what the extension modules load.

use std::collections::BTreeSet;

use crate::deps::chain::{self, Roots};
use crate::deps::fsview::{resolve, FsView as _, Lookup, Resolution};
use crate::deps::ldso::{self, SearchPath};
use crate::deps::python;

use crate::layer::{EntryKind, ImagePath};
use crate::triton;

use super::{Objects as _, Packaging, SlimInput, View};

/// The regular files the server reads first, by their real paths (links
/// resolved), in the composed image less `removed`.
pub(crate) fn first_loads(
    input: &SlimInput<'_>,
    removed: &BTreeSet<ImagePath>,
) -> BTreeSet<ImagePath> {
    let view = View { input, removed };
    let search = SearchPath::new(
        input.ld_library_path.as_deref(),
        &[&input.min.kept, &input.full.kept],
    );
    let mut files = BTreeSet::new();
    let mut programs = Vec::new();
    if let Some(entrypoint) = input.entrypoint.as_ref().and_then(|e| real(&view, e)) {
        if let Some((interpreter, dir)) = triton::entrypoint_reads(&entrypoint) {
            programs.extend(real(&view, &interpreter));
            files.extend(files_under(&view, &dir));
        }
        files.insert(entrypoint);
    }
    let installed = input.installed();
    let mut roots = Roots::find(installed.iter().copied(), input.entrypoint.as_ref(), |p| {
        view.elf(p)
    });
    roots.executables.extend(programs);
    let loads = chain::load_roots(&view, &search, &roots);
    files.extend(loads.reached);
    // The server runs whatever its ELF facts say (even none).
    files.extend(real(&view, &ImagePath::from_static(triton::SERVER_PROGRAM)));
    for name in ldso::LOADER_FILES {
        files.extend(real(&view, &ImagePath::from_static(name)));
    }
    let python = python_files(&view);
    let extensions: Vec<ImagePath> = python
        .iter()
        .filter(|p| view.elf(p).is_some())
        .cloned()
        .collect();
    files.extend(chain::load_each(&view, &search, &extensions).reached);
    files.extend(python);
    files.retain(|p| matches!(view.lookup(p), Lookup::Found(m) if m.kind == EntryKind::File));
    files
}

/// A path with its links resolved, when it names something.
fn real(view: &View<'_>, path: &ImagePath) -> Option<ImagePath> {
    match resolve(view, path) {
        Resolution::Found(r) => Some(r.path),
        _ => None,
    }
}

/// Every file under `dir` in the composed image.
fn files_under(view: &View<'_>, dir: &ImagePath) -> Vec<ImagePath> {
    let min = view.input.min.tree.subtree(dir).map(|(p, _)| p);
    let added = view
        .input
        .added
        .keys()
        .filter(|p| p.is_within(dir))
        .cloned();
    let mut out: Vec<ImagePath> = min
        .chain(added)
        .filter(|p| matches!(view.lookup(p), Lookup::Found(m) if m.kind == EntryKind::File))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// python's interpreter and the files of the modules it imports first.
fn python_files(view: &View<'_>) -> BTreeSet<ImagePath> {
    let packaging = Packaging::of(view.input.min);
    let keeps = super::python_keeps(view, &packaging);
    let mut out = BTreeSet::new();
    if keeps.found.is_empty() && keeps.files.is_empty() {
        return out;
    }
    let trees = [&view.input.min.tree, &view.input.full.tree];
    let sites = &keeps.sites;
    let startup = python::STARTUP_MODULES.iter().filter_map(|module| {
        python::module_candidates(sites, module, &trees)
            .into_iter()
            .filter(|c| !c.namespace)
            .find_map(|c| real(view, &c.path))
    });
    let modules: Vec<ImagePath> = startup
        .chain(keeps.found.iter().map(|(_, path)| path.clone()))
        .collect();
    for module in modules {
        out.extend(module_files(view, &module));
    }
    // The interpreter (and a pip distribution imported, whole).
    out.extend(
        keeps
            .files
            .iter()
            .filter(|p| !p.file_name().is_empty())
            .cloned(),
    );
    out
}

/// What importing the module at `path` reads: a package's source,
/// compiled and extension files (its `__init__.py` names it), or the
/// module's file and its compiled form.
fn module_files(view: &View<'_>, path: &ImagePath) -> Vec<ImagePath> {
    let loadable = |p: &ImagePath| {
        let name = p.file_name();
        name.ends_with(b".py") || name.ends_with(b".pyc") || name.ends_with(b".so")
    };
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    if path.file_name() == b"__init__.py" {
        return files_under(view, &dir)
            .into_iter()
            .filter(loadable)
            .collect();
    }
    let stem = path
        .file_name()
        .strip_suffix(b".py")
        .unwrap_or(path.file_name())
        .to_vec();
    let mut out = vec![path.clone()];
    let cache = dir.join(b"__pycache__");
    out.extend(files_under(view, &cache).into_iter().filter(|p| {
        p.file_name().starts_with(&stem) && p.file_name().get(stem.len()) == Some(&b'.')
    }));
    out
}
