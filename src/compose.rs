//! The compose pipeline, start to end: open the images and the destination,
//! scan both images (in parallel), plan, write Dockerfile.compose, and unless
//! this is a dry run, execute the plan into the destination.

use std::path::PathBuf;

use crate::deps::{self, Deps};
use crate::error::{Error, IoContext, Result};
use crate::execute::Execution;
use crate::image::ImageSource;
use crate::layer::ImagePath;
use crate::plan::{self, MinInput, MinView, PlanInput, PlanOptions};
use crate::render;
use crate::request::ComposeRequest;
use crate::scan::{self, PathFilter, ScanOptions};
use crate::spool::Spool;
use crate::transport::{self, ImageRef};
use crate::triton;

pub const DOCKERFILE_NAME: &str = "Dockerfile.compose";

/// What a compose produced.
#[derive(Debug)]
pub struct Outcome {
    pub dockerfile: PathBuf,
    /// The sink's description of the written image; `None` for a dry run.
    pub written: Option<String>,
}

pub fn compose(request: &ComposeRequest) -> Result<Outcome> {
    std::fs::create_dir_all(&request.work_dir)
        .ctx(|| format!("creating --work-dir {}", request.work_dir.display()))?;
    if request.skip_pull {
        tracing::debug!("--skip-pull: images are read from where their references point");
    }
    let options = &request.transport;
    let min =
        transport::open_source(&request.min, options).map_err(|e| e.context("--image min"))?;
    let full =
        transport::open_source(&request.full, options).map_err(|e| e.context("--image full"))?;
    let sink = if request.dry_run {
        None
    } else {
        let output = request.output.as_ref().ok_or_else(|| {
            Error::new(
                "no --output given, and loading into the local Docker engine is not supported yet",
            )
            .hint("pass --output oci:DIR[:TAG] or --output docker-archive:FILE[:NAME:TAG]")
        })?;
        Some(transport::open_sink(output, &request.output_name, options)?)
    };

    let scratch = tempfile::Builder::new()
        .prefix(".triton-compose-")
        .tempdir_in(&request.work_dir)
        .ctx(|| {
            format!(
                "creating a scratch directory in {}",
                request.work_dir.display()
            )
        })?;
    let mut spool = Spool::create(scratch.path())?;
    let roots = plan::candidate_roots(&request.components);
    let accounts: Vec<ImagePath> = triton::ACCOUNT_FILES
        .iter()
        .map(|p| ImagePath::from_static(p))
        .collect();
    let with_deps = request.deps;
    let keep = |p: &ImagePath| accounts.contains(p) || (with_deps && deps::keeps(p));
    let keep: PathFilter<'_> = &keep;
    let elf = |p: &ImagePath| {
        with_deps && (roots.iter().any(|r| p.is_within(r)) || deps::may_be_library(p))
    };
    let elf: PathFilter<'_> = &elf;
    let shared = min
        .image()
        .layers
        .iter()
        .map(|l| l.diff_id.clone())
        .collect();

    let spool_roots = (!request.dry_run).then_some(&roots[..]);
    let (min_scan, full_scan) = if is_base_of(min.as_ref(), full.as_ref()) {
        // full was built FROM min: read only full's own layers, and min not
        // at all unless full's layers lack the account files.
        tracing::info!(
            "{} is the base of {}: only full's own layers are read",
            min.name(),
            full.name()
        );
        let full_scan = scan::scan(
            full.as_ref(),
            "full",
            ScanOptions {
                skip: shared,
                spool: spool_roots.map(|r| (r, &mut spool)),
                keep: Some(keep),
                elf: Some(elf),
            },
        )?;
        let min_scan = if plan::needs_min_accounts(&full_scan) {
            tracing::info!(
                "full's own layers lack /etc/passwd or /etc/group: reading min for them"
            );
            Some(scan_min(min.as_ref(), keep)?)
        } else {
            None
        };
        (min_scan, full_scan)
    } else {
        let (min_scan, full_scan) = std::thread::scope(|scope| {
            let min_ref: &dyn ImageSource = min.as_ref();
            let min_job = scope.spawn(|| scan_min(min_ref, keep));
            let full_scan = scan::scan(
                full.as_ref(),
                "full",
                ScanOptions {
                    skip: shared,
                    spool: spool_roots.map(|r| (r, &mut spool)),
                    keep: Some(keep),
                    elf: Some(elf),
                },
            );
            let min_scan = min_job
                .join()
                .unwrap_or_else(|_| Err(Error::new("the min scan panicked")));
            (min_scan, full_scan)
        });
        (Some(min_scan?), full_scan?)
    };

    let plan = plan::build(
        &MinInput {
            name: min.name(),
            config: &min.image().config,
            view: match &min_scan {
                Some(scan) => MinView::Scanned(scan),
                None => MinView::BaseOfFull,
            },
        },
        &PlanInput {
            name: full.name(),
            config: &full.image().config,
            scan: &full_scan,
        },
        &PlanOptions {
            components: &request.components,
            enable_gpu: request.enable_gpu,
            timestamp: request.timestamp,
            deps: request.deps,
        },
    )?;
    if let Some(deps) = &plan.deps {
        report_deps(deps);
    }

    let dockerfile_path = request.work_dir.join(DOCKERFILE_NAME);
    let dockerfile = render::dockerfile(
        &plan,
        &buildable_name(&request.full, "triton-compose-full"),
        &buildable_name(&request.min, "triton-compose-min"),
    );
    std::fs::write(&dockerfile_path, dockerfile)
        .ctx(|| format!("writing {}", dockerfile_path.display()))?;
    for (name, bytes) in render::context_files(&plan) {
        let path = request.work_dir.join(name);
        std::fs::write(&path, bytes).ctx(|| format!("writing {}", path.display()))?;
    }
    tracing::info!("wrote {}", dockerfile_path.display());

    let Some(mut sink) = sink else {
        return Ok(Outcome {
            dockerfile: dockerfile_path,
            written: None,
        });
    };
    let image = Execution {
        plan: &plan,
        min: min.as_ref(),
        full: full.as_ref(),
        compression: request.compression,
        scratch: scratch.path(),
    }
    .run(&mut spool, sink.as_mut())?;
    let written = sink.commit(&image)?;
    Ok(Outcome {
        dockerfile: dockerfile_path,
        written: Some(written),
    })
}

fn scan_min(min: &dyn ImageSource, keep: PathFilter<'_>) -> Result<scan::ScannedImage> {
    scan::scan(
        min,
        "min",
        ScanOptions {
            keep: Some(keep),
            ..Default::default()
        },
    )
}

/// Says what was added and why, and what no image has.
fn report_deps(deps: &Deps) {
    if deps.paths.is_empty() && deps.missing.is_empty() {
        tracing::info!("runtime dependencies: min has everything the selection needs");
    } else {
        tracing::info!(
            "runtime dependencies: {} paths from full{}",
            deps.paths.len(),
            if deps.packages.is_empty() {
                String::new()
            } else {
                format!(" (packages {})", deps.packages.join(", "))
            }
        );
    }
    for reason in &deps.reasons {
        tracing::info!("  {}: {}", reason.added, reason.because);
    }
    for missing in &deps.missing {
        tracing::warn!(
            "{} is in neither image ({}); the composed image lacks it too",
            missing.need,
            missing.of
        );
    }
}

/// True when min's layers are full's first layers (full was built FROM min).
fn is_base_of(min: &dyn ImageSource, full: &dyn ImageSource) -> bool {
    let (min, full) = (&min.image().layers, &full.image().layers);
    min.len() <= full.len() && min.iter().zip(full).all(|(m, f)| m.diff_id == f.diff_id)
}

/// A name `docker build` can resolve for a reference, for FROM lines.
fn buildable_name(reference: &ImageRef, fallback: &str) -> String {
    match reference {
        ImageRef::Registry(name) | ImageRef::DockerDaemon(name) => name.clone(),
        ImageRef::DockerArchive {
            reference: Some(name),
            ..
        } => name.clone(),
        _ => fallback.to_string(),
    }
}
