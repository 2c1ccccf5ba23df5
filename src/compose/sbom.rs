//! The SBOM of a composed image, assembled from what the compose already
//! read: min's files where the new layers do not cover them, full's (and
//! gpu-min's) where they do ([`crate::sbom`] writes the document).

use std::collections::{HashMap, HashSet};

use crate::deps;
use crate::execute::LayerReport;
use crate::image::{OutputImage, Referrer};
use crate::layer::ImagePath;
use crate::plan::{LayerRole, Plan};
use crate::provenance;
use crate::sbom::{self, Kept, Layered, Role};
use crate::scan::ScannedImage;
use crate::triton;

use super::sources::{Images, Scans};

/// The SBOM as a referrer of the image, to be attached where the
/// destination can hold it.
pub(super) fn referrer(document: Vec<u8>, plan: &Plan) -> Referrer {
    Referrer {
        artifact_type: sbom::MEDIA_TYPE.to_string(),
        title: sbom::FILE_NAME.to_string(),
        data: document,
        annotations: [(
            provenance::CREATED.to_string(),
            provenance::rfc3339(plan.timestamp),
        )]
        .into(),
    }
}

/// The SPDX SBOM of a composed image.
pub(super) fn document(
    images: &Images<'_>,
    scans: &Scans,
    min_scan: Option<&ScannedImage>,
    plan: &Plan,
    image: &OutputImage,
    reports: &[LayerReport],
) -> Vec<u8> {
    let planned: HashSet<&ImagePath> = plan
        .layers
        .iter()
        .flat_map(|l| l.entries.iter().map(|e| &e.path))
        .collect();
    let in_plan = |p: &ImagePath| planned.contains(p);
    let from_min =
        |p: &ImagePath| !planned.contains(p) && min_scan.is_some_and(|m| m.tree.contains(p));
    let empty = HashMap::new();
    let mut kept = vec![Kept {
        files: &scans.full.kept,
        role: Role::Full,
        holds: &in_plan,
    }];
    if let Some(gpu_min) = &scans.gpu_min {
        kept.push(Kept {
            files: &gpu_min.kept,
            role: Role::GpuMin,
            holds: &in_plan,
        });
    }
    kept.push(Kept {
        files: min_scan.map_or(&empty, |m| &m.kept),
        role: Role::Min,
        holds: &from_min,
    });
    let mut trees: Vec<&crate::tree::MergedTree> = min_scan.map(|m| &m.tree).into_iter().collect();
    trees.push(&scans.full.tree);
    let files = Layered {
        kept,
        trees,
        architecture: &plan.info.architecture,
    };
    let mut contents = contents(&files, min_scan, plan, reports);
    contents.files = unowned_files(scans, min_scan, plan, reports, &contents, &from_min);
    let sources = sources(images, plan);
    let mut identity = image.config.clone();
    for layer in &image.layers {
        identity.extend_from_slice(layer.digest.as_str().as_bytes());
    }
    // Named by its config's digest (the image ID), not by the output: one
    // image has one SBOM whatever its tags, so a registry stores it once.
    sbom::document(
        &sbom::Meta {
            name: &format!("image {}", crate::digest::Digest::of(&image.config)),
            created: plan.timestamp,
            sources: &sources,
            identity: &identity,
        },
        &contents,
    )
}

/// The packages (min's, and those the closure added from full) and the
/// Triton parts of the image.
fn contents(
    files: &Layered<'_>,
    min_scan: Option<&ScannedImage>,
    plan: &Plan,
    reports: &[LayerReport],
) -> sbom::Contents {
    let status = plan
        .deps
        .as_ref()
        .and_then(|d| d.dpkg_status.clone())
        .or_else(|| {
            min_scan.and_then(|m| {
                m.kept
                    .get(&ImagePath::from_static(deps::dpkg::STATUS))
                    .map(|text| match &plan.slim {
                        Some(slim) => slim.filter_status(text),
                        None => text.clone(),
                    })
            })
        })
        .unwrap_or_default();
    let added: HashSet<&str> = plan
        .deps
        .iter()
        .flat_map(|d| d.packages.iter().map(String::as_str))
        .collect();
    let origin = |package: &str| {
        if added.contains(package) {
            Role::Full
        } else {
            Role::Min
        }
    };
    sbom::Contents::gather(
        files,
        &String::from_utf8_lossy(&status),
        &origin,
        parts(plan, reports),
        Some(plan.info.version.clone()),
    )
}

/// The ELF files of the image that no record of it owns: those the new
/// layers copy (with the digests their writer took), and min's that it
/// keeps (with the digests min's scan took); not those `--slim` removed.
fn unowned_files(
    scans: &Scans,
    min_scan: Option<&ScannedImage>,
    plan: &Plan,
    reports: &[LayerReport],
    contents: &sbom::Contents,
    from_min: &dyn Fn(&ImagePath) -> bool,
) -> Vec<sbom::ElfFile> {
    let written: HashMap<&ImagePath, &crate::digest::FileDigests> = reports
        .iter()
        .flat_map(|r| r.elf_files.iter().map(|(p, d)| (p, d)))
        .collect();
    let entries: HashMap<&ImagePath, &crate::plan::PlannedEntry> = plan
        .layers
        .iter()
        .flat_map(|l| &l.entries)
        .map(|e| (&e.path, e))
        .collect();
    let mut candidates = Vec::new();
    for entry in entries.values() {
        // A hard link is the file it links to, under another name.
        let source = match entry.meta.kind {
            crate::layer::EntryKind::HardLink => (entry.meta.link_target.as_deref())
                .and_then(|t| ImagePath::parse(t).ok())
                .and_then(|t| entries.get(&t).copied()),
            _ => Some(*entry),
        };
        let Some((source, digests)) = source.and_then(|s| Some((s, written.get(&s.path)?))) else {
            continue;
        };
        let (info, role) = match source.content.copied() {
            Some((crate::plan::Origin::Full, inode)) => (scans.full.elf.get(&inode), Role::Full),
            Some((crate::plan::Origin::GpuMin, inode)) => (
                scans.gpu_min.as_ref().and_then(|s| s.elf.get(&inode)),
                Role::GpuMin,
            ),
            None => (None, Role::Full),
        };
        candidates.push(sbom::ElfFile {
            path: entry.path.clone(),
            size: source.meta.size,
            digests: (*digests).clone(),
            soname: info.and_then(|i| i.soname.clone()),
            package: info.and_then(|i| i.package.clone()),
            origin: role,
        });
    }
    let removed = plan.slim.as_ref().map(|s| &s.paths);
    let kept_from_min = |p: &ImagePath| from_min(p) && !removed.is_some_and(|r| r.contains(p));
    if let Some(min) = min_scan {
        candidates.extend(sbom::elf_files(
            &min.tree,
            &min.elf,
            Role::Min,
            kept_from_min,
        ));
    }
    let mut sources: Vec<sbom::RecordFiles<'_>> = vec![(&scans.full.kept, &scans.full.listed)];
    if let Some(min) = min_scan {
        sources.push((&min.kept, &min.listed));
    }
    sbom::Records::new(&sources, contents).unowned(candidates)
}

/// The Triton parts of a plan (the core and each component), with the
/// layers written for each, found by their role.
fn parts(plan: &Plan, reports: &[LayerReport]) -> Vec<sbom::Part> {
    let mut roles = vec![(LayerRole::Core, "core".to_string(), triton::install_dir())];
    roles.extend(plan.components.iter().map(|c| {
        let role = LayerRole::Component(c.clone());
        let name = role.to_string();
        (role, name, c.path())
    }));
    roles
        .into_iter()
        .map(|(role, name, dir)| sbom::Part {
            name,
            layers: reports
                .iter()
                .filter(|r| r.role == role)
                .map(|r| (r.digest.clone(), r.diff_id.clone()))
                .collect(),
            origin: Role::Full,
            dir,
        })
        .collect()
}

/// min, full and (when the plan copies from it) gpu-min, by digest.
fn sources(images: &Images<'_>, plan: &Plan) -> Vec<sbom::Source> {
    let mut sources = vec![
        sbom::Source {
            role: Role::Min,
            name: images.min.name().to_string(),
            id: images.min.image().id.clone(),
        },
        sbom::Source {
            role: Role::Full,
            name: images.full.name().to_string(),
            id: images.full.image().id.clone(),
        },
    ];
    if let (Some(gpu_min), Some(_)) = (images.gpu_min, &plan.gpu_min_name) {
        sources.push(sbom::Source {
            role: Role::GpuMin,
            name: gpu_min.name().to_string(),
            id: gpu_min.image().id.clone(),
        });
    }
    sources
}
