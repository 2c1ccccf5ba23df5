//! `--distroless` (with `--slim`): no shell, no package manager, and no
//! program that nothing in the selection runs.
//!
//! On top of `--slim`'s analysis:
//!
//! - packages of priority required or important, and Essential ones, are no
//!   longer kept for their own sake: only when something the composed image
//!   loads or runs needs them, or a kept package depends on them;
//! - every program of min (a file or link in one of
//!   [`triton::PROGRAM_DIRS`], or an ELF executable elsewhere) goes, kept
//!   packages' too, unless the selection runs it: the server is Triton's
//!   own binary (the entrypoint), python's interpreter stays when a backend
//!   imports python, and what a backend runs from the image is
//!   [`triton::PROGRAMS_RUN`] (the python backend runs `bash` and
//!   `/bin/sh`), each kept with what it loads, and said in the summary;
//! - a kept package that lost programs keeps its status stanza, and its
//!   dpkg file list and md5sums are written again without them, so that
//!   dpkg's database names exactly the files that are there.

use std::collections::{BTreeMap, BTreeSet};

use crate::deps::chain::Objects;
use crate::deps::dpkg;
use crate::deps::fsview::{normalize, resolve, Resolution};
use crate::layer::ImagePath;
use crate::triton;

use super::{Packaging, Patterns, PythonKeeps, Reach, Record, RemovedKind, Slim, View};

/// Packages a distroless image keeps whatever the selection: base-files
/// holds `/etc/os-release`, which scanners read to know the distribution
/// whose advisories apply to the packages dpkg lists (syft's and trivy's OS
/// detection; Google's distroless images keep it too).
pub(super) const KEPT_PACKAGES: &[&str] = &["base-files"];

/// A program the selection runs, kept: where it is, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeptProgram {
    pub path: String,
    pub why: String,
}

/// The programs the selection runs from min: their files (the symlinks on
/// the way included), and why each is kept.
pub(super) struct Runs {
    pub files: BTreeSet<ImagePath>,
    /// The programs themselves (symlinks followed): where loads start.
    pub programs: Vec<ImagePath>,
    pub kept: Vec<KeptProgram>,
}

/// Finds what the selection's backends run ([`triton::programs_run`]): a
/// name on PATH, or a path.
pub(super) fn runs(view: &View<'_>) -> Runs {
    let mut out = Runs {
        files: BTreeSet::new(),
        programs: Vec::new(),
        kept: Vec::new(),
    };
    for run in triton::programs_run(view.input.components) {
        let candidates: Vec<ImagePath> = if run.program.contains('/') {
            vec![normalize(run.program)]
        } else {
            search_path(view)
                .iter()
                .map(|dir| dir.join(run.program.as_bytes()))
                .collect()
        };
        let found = candidates.iter().find_map(|c| match resolve(view, c) {
            Resolution::Found(r) => Some((c.clone(), r)),
            _ => None,
        });
        let Some((named, found)) = found else {
            tracing::warn!(
                "--distroless: backend {} runs {}, which min does not have ({})",
                run.backend,
                run.program,
                run.source
            );
            continue;
        };
        out.files.insert(named.clone());
        out.files.insert(found.path.clone());
        out.files.extend(found.links);
        out.programs.push(found.path.clone());
        out.kept.push(KeptProgram {
            path: named.display_abs(),
            why: format!("backend {} runs it ({})", run.backend, run.source),
        });
    }
    out
}

/// The directories of the composed image's PATH, in order (Debian's
/// default when the config sets none).
fn search_path(view: &View<'_>) -> Vec<ImagePath> {
    let path = view
        .input
        .path
        .as_deref()
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .map(normalize)
        .collect()
}

/// True when `path` (a real path of min) is a program: in a program
/// directory, or an ELF executable that is not a shared library.
pub(super) fn is_program(view: &View<'_>, path: &ImagePath) -> bool {
    let in_dir = triton::PROGRAM_DIRS.iter().any(|dir| {
        let dir = ImagePath::from_static(dir);
        path.is_within(&dir) && *path != dir
    });
    let executable = || {
        view.elf(path).is_some_and(|elf| elf.interpreter.is_some())
            && !crate::deps::may_be_library(path)
    };
    in_dir || executable()
}

/// Removes every program of min nothing runs, and writes again the dpkg
/// lists of kept packages that lose some.
#[allow(clippy::too_many_arguments)]
pub(super) fn remove_programs(
    slim: &mut Slim,
    view: &View<'_>,
    packaging: &Packaging<'_>,
    patterns: &Patterns,
    reach: &Reach,
    python: &PythonKeeps,
    runs: &Runs,
    record: &mut Record<'_>,
) {
    let install = triton::install_dir();
    let mut by_package: BTreeMap<String, Vec<ImagePath>> = BTreeMap::new();
    let mut unowned = Vec::new();
    for (path, node) in view.input.min.tree.iter() {
        if node.is_dir()
            || slim.paths.contains(&path)
            || view.input.added.contains_key(&path)
            || path.is_within(&install)
            || runs.files.contains(&path)
            || python.files.contains(&path)
            || reach.reached.contains(&path)
            || patterns.keeps(&path)
            || !is_program(view, &path)
        {
            continue;
        }
        match packaging.owner(&path) {
            Some(package) => by_package
                .entry(package.to_string())
                .or_default()
                .push(path.clone()),
            None => unowned.push(path.clone()),
        }
    }
    for (package, files) in by_package {
        record(
            slim,
            RemovedKind::Program,
            format!("programs of {package}"),
            files,
        );
    }
    for path in unowned {
        record(slim, RemovedKind::Program, path.display_abs(), vec![path]);
    }
}

/// The dpkg file lists and md5sums of the packages that stay but lost
/// files, written again without them.
pub(super) fn rewrite_lists(slim: &mut Slim, view: &View<'_>, packaging: &Packaging<'_>) {
    let min = view.input.min;
    for package in packaging.installed.packages.keys() {
        if slim.packages.contains(package)
            || !packaging
                .files(package)
                .iter()
                .any(|f| slim.paths.contains(f))
        {
            continue;
        }
        for info in dpkg::info_files(&min.tree, package) {
            let name = String::from_utf8_lossy(info.file_name()).into_owned();
            let Some(text) = min.kept.get(&info) else {
                continue;
            };
            let text = String::from_utf8_lossy(text);
            let kept_line = |path: &str| {
                let path = normalize(&format!("/{}", path.trim_start_matches('/')));
                !slim.paths.contains(&view.real(&path))
            };
            let lines: Vec<&str> = if name.ends_with(".list") {
                text.lines().filter(|l| kept_line(l)).collect()
            } else if name.ends_with(".md5sums") {
                (text.lines())
                    .filter(|l| l.split_once("  ").is_none_or(|(_, p)| kept_line(p)))
                    .collect()
            } else {
                continue;
            };
            let mut out = lines.join("\n");
            if !lines.is_empty() {
                out.push('\n');
            }
            slim.replace.insert(info, out.into_bytes());
        }
    }
}
