//! `triton-compose verify IMAGE`: reads an image (any transport) once and
//! judges every library the way the loader reaches it ([`chain`]). Each
//! root (the programs in /opt/tritonserver/bin, the backends' stubs, the
//! entrypoint, and the components libtritonserver dlopens into the server's
//! process) is loaded as ld.so would load it, DT_RPATH inherited along the
//! chain; a need that such a load cannot meet is missing. ELF files under
//! /opt/tritonserver that no root reaches are judged alone, and what they
//! lack is a warning ("unreachable"), not a failure. It also checks the
//! python modules the image's backends import. Libraries the NVIDIA
//! container runtime mounts from the host driver are listed apart.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::config;
use crate::deps::chain::{self, Finding, Objects, Roots};
use crate::deps::fsview::{resolve, Resolution};
use crate::deps::ldso::SearchPath;
use crate::deps::python::{self, Dists, PythonEnv};
use crate::deps::{self, dpkg};
use crate::elf::ElfInfo;
use crate::error::Result;
use crate::layer::{EntryKind, ImagePath};
use crate::scan::{self, ScanOptions, ScannedImage};
use crate::transport::{self, ImageRef};
use crate::triton;

#[derive(Debug, Serialize)]
pub struct MissingLibrary {
    /// The ELF file whose need does not resolve.
    pub object: String,
    pub needs: String,
    /// The program or dlopened component whose load fails.
    pub root: String,
    /// From the program that was started to `object`.
    pub chain: Vec<String>,
}

impl MissingLibrary {
    fn from_finding(finding: &Finding) -> Self {
        MissingLibrary {
            object: finding.object.display_abs(),
            needs: finding.need.clone(),
            root: finding.root.display_abs(),
            chain: finding.chain.iter().map(ImagePath::display_abs).collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PythonImport {
    pub backend: String,
    pub module: String,
    /// Where the interpreter finds it (`<built-in>` for CPython's own).
    pub found: Option<String>,
    /// Imported under `try:` (or for type checking only): a warning when
    /// missing, not a failure.
    pub optional: bool,
}

/// A `Requires-Dist` of an imported distribution that the image lacks.
#[derive(Debug, Serialize)]
pub struct MissingRequirement {
    /// The dist-info directory that requires it.
    pub dist: String,
    pub requires: String,
}

/// Where a load starts.
#[derive(Debug, Serialize)]
pub struct LoadRoot {
    pub path: String,
    /// `program` (started as a process) or `dlopened` (by libtritonserver,
    /// into the server's process).
    pub kind: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub image: String,
    /// The loads that were replayed.
    pub roots: Vec<LoadRoot>,
    /// ELF files whose needs were checked, the libraries they pulled in included.
    pub elf_checked: usize,
    /// Needs a real load of a root fails on.
    pub missing_libraries: Vec<MissingLibrary>,
    /// ELF files no root loads, and what they lack when loaded alone
    /// (warnings: whatever loads them may provide it).
    pub unreachable: Vec<MissingLibrary>,
    /// Needs left to the host driver (libcuda.so.1 and the like).
    pub driver_libraries: BTreeSet<String>,
    pub python_imports: Vec<PythonImport>,
    /// Distributions the imported ones require, transitively, and lack.
    pub python_requirements: Vec<MissingRequirement>,
    pub ok: bool,
}

/// The scanned image as the loader sees it.
struct ImageObjects<'a> {
    scanned: &'a ScannedImage,
}

impl Objects for ImageObjects<'_> {
    fn elf(&self, path: &ImagePath) -> Option<&ElfInfo> {
        self.scanned
            .tree
            .get(path)
            .filter(|n| n.meta.kind == EntryKind::File)
            .and_then(|n| self.scanned.elf.get(&n.inode))
    }

    fn find(&self, candidates: &[ImagePath], object: &ElfInfo) -> Option<ImagePath> {
        candidates
            .iter()
            .find_map(|c| match resolve(&self.scanned.tree, c) {
                Resolution::Found(r)
                    if self
                        .scanned
                        .tree
                        .get(&r.path)
                        .is_some_and(|n| n.meta.kind == EntryKind::File)
                        && self.elf(&r.path).is_none_or(|lib| object.compatible(lib)) =>
                {
                    Some(r.path)
                }
                _ => None,
            })
    }
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
            listed: Some(&deps::lists),
            elf: Some(&elf_filter),
            ..Default::default()
        },
    )?;
    let view = &scanned.tree;
    let search = SearchPath::new(
        config::env_var(config, "LD_LIBRARY_PATH").as_deref(),
        &[&scanned.kept],
    );
    let objects = ImageObjects { scanned: &scanned };
    let entrypoint = entrypoint.and_then(|e| match resolve(view, &e) {
        Resolution::Found(r) => Some(r.path),
        _ => None,
    });
    let installed: Vec<ImagePath> = view.subtree(&install).map(|(p, _)| p).collect();
    let roots = Roots::find(installed.iter(), entrypoint.as_ref(), |p| objects.elf(p));
    let loads = chain::load_roots(&objects, &search, &roots);
    let mut report = Report {
        image: source.name().to_string(),
        roots: roots
            .executables
            .iter()
            .map(|p| (p, "program"))
            .chain(roots.dlopened.iter().map(|p| (p, "dlopened")))
            .map(|(p, kind)| LoadRoot {
                path: p.display_abs(),
                kind,
            })
            .collect(),
        elf_checked: loads.reached.len(),
        missing_libraries: loads
            .findings
            .iter()
            .map(MissingLibrary::from_finding)
            .collect(),
        unreachable: Vec::new(),
        driver_libraries: loads.driver,
        python_imports: Vec::new(),
        python_requirements: Vec::new(),
        ok: true,
    };
    let installed: Vec<&ImagePath> = installed.iter().collect();
    report.check_unreachable(&objects, &search, &installed, &loads.reached);
    let architecture = config
        .get("architecture")
        .and_then(|a| a.as_str())
        .unwrap_or("amd64");
    (report.python_imports, report.python_requirements) = check_python(&scanned, architecture);
    // A lookup that could not read the tree on disk answered "absent".
    scanned.tree.health()?;
    report.ok = report.missing_libraries.is_empty()
        && report.python_requirements.is_empty()
        && report
            .python_imports
            .iter()
            .all(|i| i.optional || i.found.is_some());
    Ok(report)
}

impl Report {
    /// Judges the installation's ELF objects no root reaches, each alone.
    fn check_unreachable(
        &mut self,
        objects: &ImageObjects<'_>,
        search: &SearchPath,
        installed: &[&ImagePath],
        reached: &std::collections::HashSet<ImagePath>,
    ) {
        for &path in installed {
            if objects.elf(path).is_none() || reached.contains(path) {
                continue;
            }
            self.elf_checked += 1;
            for finding in chain::alone(objects, search, path) {
                let known = self
                    .unreachable
                    .iter()
                    .any(|u| u.object == finding.object.display_abs() && u.needs == finding.need);
                if !known {
                    self.unreachable
                        .push(MissingLibrary::from_finding(&finding));
                }
            }
        }
    }
}

/// The python modules the image's backends import (the python backend's
/// numpy, and whatever the code of python-based backends imports), where
/// each is found, and what the distributions found require and lack.
fn check_python(
    scanned: &ScannedImage,
    architecture: &str,
) -> (Vec<PythonImport>, Vec<MissingRequirement>) {
    let tree = &scanned.tree;
    let trees = [tree];
    let status = scanned
        .kept
        .get(&ImagePath::from_static(dpkg::STATUS))
        .map(|b| dpkg::parse_status(&String::from_utf8_lossy(b)))
        .unwrap_or_default();
    let version = |package: &str| dpkg::version_of(&status, package);
    let env = PythonEnv::of_image(&trees, version, architecture);
    let sites = python::site_dirs(&trees, env.as_ref().map(|e| e.version.as_str()));
    let dists = Dists::new(&scanned.kept, &scanned.listed);
    let mut imports = Vec::new();
    let mut walk: Vec<(ImagePath, BTreeSet<String>)> = Vec::new();
    for backend in triton::offered(tree, triton::ComponentKind::Backend) {
        let modules: Vec<(String, bool)> = if triton::is_python_based(tree, &backend) {
            triton::backend_imports(tree, &scanned.kept, &backend)
                .into_iter()
                .map(|(i, _)| (i.module, i.optional))
                .collect()
        } else {
            triton::python_imports(&backend)
                .iter()
                .map(|m| (m.to_string(), false))
                .collect()
        };
        for (module, optional) in modules {
            let top = module.split('.').next().unwrap_or(&module);
            let found = if python::BUILTIN_MODULES.contains(&top) {
                Some("<built-in>".to_string())
            } else {
                let path = python::module_candidates(&sites, &module, &trees)
                    .into_iter()
                    .find_map(|c| match resolve(tree, &c.path) {
                        Resolution::Found(r) => Some(r.path),
                        _ => None,
                    });
                if let Some(dist) = path.as_ref().and_then(|p| dists.owner(p)) {
                    walk.push((dist.clone(), BTreeSet::new()));
                }
                path.map(|p| p.display_abs())
            };
            imports.push(PythonImport {
                backend: backend.clone(),
                module,
                found,
                optional,
            });
        }
    }
    let mut missing = Vec::new();
    if let Some(env) = &env {
        let mut seen: BTreeSet<(ImagePath, BTreeSet<String>)> = BTreeSet::new();
        while let Some(item) = walk.pop() {
            if !seen.insert(item.clone()) {
                continue;
            }
            let (dist, extras) = item;
            for req in dists.requirements(&dist, env, &extras) {
                match dists.named(&req.name, &sites) {
                    Some(found) => walk.push((found.clone(), req.extras)),
                    None => missing.push(MissingRequirement {
                        dist: dist.display_abs(),
                        requires: req.spec,
                    }),
                }
            }
        }
    }
    (imports, missing)
}

impl Report {
    /// The report for people: one line per problem, then a verdict.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{}: {} ELF files checked, loaded from {} roots\n",
            self.image,
            self.elf_checked,
            self.roots.len()
        );
        for m in &self.missing_libraries {
            let by = if m.object == m.root {
                String::new()
            } else {
                format!(" by {}", m.root)
            };
            out.push_str(&format!(
                "missing: {} cannot be loaded{by} because {} is missing (load chain: {})\n",
                m.object,
                m.needs,
                m.chain.join(" -> ")
            ));
        }
        for u in &self.unreachable {
            out.push_str(&format!(
                "unreachable (warning): no root loads {}; alone it would not find {}\n",
                u.object, u.needs
            ));
        }
        for import in &self.python_imports {
            match &import.found {
                Some(path) => out.push_str(&format!(
                    "python: {} (for the {} backend) at {path}\n",
                    import.module, import.backend
                )),
                None if import.optional => out.push_str(&format!(
                    "python (warning): {} is not in the image; the {} backend imports it under try:\n",
                    import.module, import.backend
                )),
                None => out.push_str(&format!(
                    "missing: python module {} (the {} backend imports it)\n",
                    import.module, import.backend
                )),
            }
        }
        for req in &self.python_requirements {
            out.push_str(&format!(
                "missing: python distribution `{}`, which {} requires\n",
                req.requires, req.dist
            ));
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
