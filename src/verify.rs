//! `triton-compose verify IMAGE`: reads an image (any transport) once and
//! reports every ELF file under /opt/tritonserver, and the entrypoint, whose
//! DT_NEEDED libraries do not resolve inside the image (followed
//! transitively, as ld.so would), and the python modules the image's
//! backends import that python cannot find. Libraries the NVIDIA container
//! runtime mounts from the host driver are listed apart, not as missing.

use std::collections::{BTreeSet, HashSet, VecDeque};

use serde::Serialize;

use crate::config;
use crate::deps::fsview::{resolve, Resolution};
use crate::deps::ldso::SearchPath;
use crate::deps::{self, python};
use crate::error::Result;
use crate::layer::{EntryKind, ImagePath};
use crate::scan::{self, ScanOptions};
use crate::transport::{self, ImageRef};
use crate::triton;

#[derive(Debug, Serialize)]
pub struct MissingLibrary {
    /// The ELF file whose need does not resolve.
    pub object: String,
    pub needs: String,
}

#[derive(Debug, Serialize)]
pub struct PythonImport {
    pub backend: String,
    pub module: String,
    pub found: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub image: String,
    /// ELF files whose needs were checked, the libraries they pulled in included.
    pub elf_checked: usize,
    pub missing_libraries: Vec<MissingLibrary>,
    /// Needs left to the host driver (libcuda.so.1 and the like).
    pub driver_libraries: BTreeSet<String>,
    pub python_imports: Vec<PythonImport>,
    pub ok: bool,
}

pub fn verify(reference: &ImageRef, options: &transport::Options) -> Result<Report> {
    let source = transport::open_source(reference, options)?;
    let config = &source.image().config;
    let entrypoint = config::entrypoint(config)
        .and_then(|e| e.into_iter().next())
        .filter(|e| e.starts_with('/'))
        .map(|e| deps::fsview::normalize(&e));
    let install = triton::install_dir();
    let elf_filter = |p: &ImagePath| {
        p.is_within(&install) || deps::may_be_library(p) || Some(p) == entrypoint.as_ref()
    };
    let keep_filter = |p: &ImagePath| deps::keeps(p);
    let scanned = scan::scan(
        source.as_ref(),
        "image",
        ScanOptions {
            keep: Some(&keep_filter),
            elf: Some(&elf_filter),
            ..Default::default()
        },
    )?;
    let view = &scanned.tree;
    let search = SearchPath::new(
        config::env_var(config, "LD_LIBRARY_PATH").as_deref(),
        &[&scanned.kept],
    );
    let elf_of = |path: &ImagePath| {
        scanned
            .tree
            .get(path)
            .filter(|n| n.meta.kind == EntryKind::File)
            .and_then(|n| scanned.elf.get(&n.inode))
    };

    let mut queue: VecDeque<(ImagePath, Vec<ImagePath>)> = VecDeque::new();
    let mut seen = HashSet::new();
    let roots = scanned
        .tree
        .subtree(&install)
        .map(|(p, _)| p.clone())
        .chain(entrypoint.iter().filter_map(|e| match resolve(view, e) {
            Resolution::Found(r) => Some(r.path),
            _ => None,
        }));
    for path in roots {
        if elf_of(&path).is_some() && seen.insert(path.clone()) {
            queue.push_back((path, Vec::new()));
        }
    }
    let mut report = Report {
        image: source.name().to_string(),
        elf_checked: 0,
        missing_libraries: Vec::new(),
        driver_libraries: BTreeSet::new(),
        python_imports: Vec::new(),
        ok: true,
    };
    while let Some((object, inherited)) = queue.pop_front() {
        let Some(info) = elf_of(&object) else {
            continue;
        };
        report.elf_checked += 1;
        let dirs = search.dirs(&object, info, &inherited);
        let passed_on = search.passed_on(&object, info, &inherited);
        for need in &info.needed {
            let found =
                deps::candidates(need, &dirs)
                    .into_iter()
                    .find_map(|c| match resolve(view, &c) {
                        Resolution::Found(r)
                            if scanned
                                .tree
                                .get(&r.path)
                                .is_some_and(|n| n.meta.kind == EntryKind::File)
                                && elf_of(&r.path).is_none_or(|lib| info.compatible(lib)) =>
                        {
                            Some(r.path)
                        }
                        _ => None,
                    });
            match found {
                Some(lib) => {
                    if seen.insert(lib.clone()) {
                        queue.push_back((lib, passed_on.clone()));
                    }
                }
                None if triton::is_driver_library(need) => {
                    report.driver_libraries.insert(need.clone());
                }
                None => report.missing_libraries.push(MissingLibrary {
                    object: object.display_abs(),
                    needs: need.clone(),
                }),
            }
        }
    }
    report
        .missing_libraries
        .sort_by(|a, b| (&a.object, &a.needs).cmp(&(&b.object, &b.needs)));

    let sites = python::site_dirs(&[&scanned.tree]);
    let backends = triton::offered(&scanned.tree, triton::ComponentKind::Backend);
    for backend in backends {
        for module in triton::python_imports(&backend) {
            let found = sites
                .iter()
                .flat_map(|s| python::module_candidates(s, module))
                .find(|c| matches!(resolve(view, c), Resolution::Found(_)));
            report.python_imports.push(PythonImport {
                backend: backend.clone(),
                module: module.to_string(),
                found: found.map(|p| p.display_abs()),
            });
        }
    }
    report.ok = report.missing_libraries.is_empty()
        && report.python_imports.iter().all(|i| i.found.is_some());
    Ok(report)
}

impl Report {
    /// The report for people: one line per problem, then a verdict.
    pub fn render(&self) -> String {
        let mut out = format!("{}: {} ELF files checked\n", self.image, self.elf_checked);
        for m in &self.missing_libraries {
            out.push_str(&format!("missing: {} needs {}\n", m.object, m.needs));
        }
        for import in &self.python_imports {
            match &import.found {
                Some(path) => out.push_str(&format!(
                    "python: {} (for the {} backend) at {path}\n",
                    import.module, import.backend
                )),
                None => out.push_str(&format!(
                    "missing: python module {} (the {} backend imports it)\n",
                    import.module, import.backend
                )),
            }
        }
        if !self.driver_libraries.is_empty() {
            out.push_str(&format!(
                "left to the host driver: {}\n",
                self.driver_libraries
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        out.push_str(if self.ok {
            "ok: every need resolves inside the image\n"
        } else {
            "FAILED: the image lacks what is listed above\n"
        });
        out
    }
}
