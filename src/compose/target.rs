//! One image a run writes (a target): planned from the prepared sources,
//! its Dockerfile.compose written, and unless this is a dry run, its layers
//! and its SBOM put into the destination.

use std::path::PathBuf;

use crate::error::{IoContext, Result};
use std::collections::HashMap;

use crate::digest::Digest;
use crate::error::Error;
use crate::execute::{Execution, LayerKeys, LayerReport};
use crate::image::{ImageSink, OutputImage};
use crate::plan::{
    self, LayerPlan, Measure, Measured, MinInput, MinView, Plan, PlanInput, PlanOptions,
};
use crate::request::ComposeRequest;
use crate::store::Store;
use crate::transport::ImageRef;
use crate::triton::Component;

use super::sources::{Images, Prepared, Scans};
use super::summary::{self, Summary};
use super::workdir;
use super::Outcome;

/// How many times a plan is made again from layers measured for
/// `--max-layer-size` before giving up (two suffice but for parts whose
/// cut must be made tighter).
const MEASURING_ROUNDS: usize = 12;

/// One image a run writes: the request's own, one of its variants, one
/// platform of an index, or a selection `serve` was asked for. What every
/// target of a run shares stays in the request.
pub(crate) struct Target {
    /// The variant's or platform's name; `None` for the request's own image.
    pub name: Option<String>,
    pub components: Vec<Component>,
    /// Components from directories on this machine.
    pub local: Vec<(Component, PathBuf)>,
    pub output: ImageRef,
    pub output_name: String,
    /// Where its Dockerfile.compose and SBOM go.
    pub work_dir: PathBuf,
}

impl Target {
    /// The request's own image.
    pub(crate) fn of(request: &ComposeRequest) -> Target {
        Target {
            name: None,
            components: request.components.clone(),
            local: request.local.clone(),
            output: request.output.clone(),
            output_name: request.output_name.clone(),
            work_dir: request.work_dir.clone(),
        }
    }
}

/// The images a request asks for: its own, or each of its variants.
pub(super) fn targets(request: &ComposeRequest) -> Vec<Target> {
    if request.variants.is_empty() {
        return vec![Target::of(request)];
    }
    request
        .variants
        .iter()
        .map(|variant| Target {
            name: Some(variant.name.clone()),
            components: variant.components.clone(),
            local: variant.local.clone(),
            output: variant.output.clone(),
            output_name: request.output_name.clone(),
            work_dir: request.work_dir.join(&variant.name),
        })
        .collect()
}

/// What [`Prepared::write_target`] did.
pub(super) struct Written {
    pub dockerfile: PathBuf,
    pub built: Option<Built>,
    /// What `--slim` removes.
    pub slim: Option<summary::SlimSummary>,
}

/// A target written into its sink, ready to be committed.
pub(super) struct Built {
    pub plan: Plan,
    pub image: OutputImage,
    pub reports: Vec<LayerReport>,
    pub sbom: Option<PathBuf>,
}

impl Built {
    /// The outcome once the sink committed the image as `written`.
    pub(crate) fn outcome(
        self,
        target: &Target,
        images: &Images<'_>,
        dockerfile: PathBuf,
        written: String,
        started: std::time::Instant,
    ) -> Outcome {
        let summary: Summary = summary::summarize(
            images,
            summary::Written {
                output: target.output.to_string(),
                written: written.clone(),
                plan: &self.plan,
                image: &self.image,
                started,
            },
            self.reports,
            self.sbom,
        );
        Outcome {
            dockerfile,
            written: Some(written),
            slim: summary.slim.clone(),
            summary: Some(summary),
        }
    }
}

impl Prepared {
    /// Plans `target`, writes its Dockerfile.compose and, unless `sink` is
    /// `None` (a dry run), its layers into `sink`, and its SBOM; returns
    /// the image for the sink to commit.
    pub(super) fn write_target(
        &self,
        request: &ComposeRequest,
        target: &Target,
        sink: Option<&mut dyn ImageSink>,
    ) -> Result<Written> {
        let images = self.images();
        // `--max-layer-size` measures layers; without a store, in one for
        // this run.
        let scratch_store = match (&self.store, request.max_layer_size, &sink) {
            (None, Some(_), Some(_)) => Some(Store::open(
                &self.scratch.path().join("measured"),
                u64::MAX,
            )?),
            _ => None,
        };
        let store = self.store.as_ref().or(scratch_store.as_ref());
        let planning = crate::progress::phase("plan");
        let plan = match (sink.is_some(), store) {
            (true, Some(store)) if request.max_layer_size.is_some() => {
                self.plan_measured(request, target, store)?
            }
            _ => plan_compose(request, target, &images, &self.scans, None)?,
        };
        report(&plan);
        drop(planning);
        let dockerfile =
            workdir::write_dockerfile(request, &target.work_dir, &target.local, &plan)?;
        let slim = plan.slim.as_ref().map(summary::SlimSummary::of);
        let Some(sink) = sink else {
            return Ok(Written {
                dockerfile,
                built: None,
                slim,
            });
        };
        let mut execution = self.execution(request, &plan);
        execution.store = store;
        let (mut image, reports) = execution.run(&self.spools, sink)?;
        let sbom = if request.sbom {
            let min_scan = (self.scans.min.as_ref())
                .or(self.scans.slim_min.as_ref())
                .or(self.scans.sbom_min.as_ref());
            let document =
                super::sbom::document(&images, &self.scans, min_scan, &plan, &image, &reports);
            let path = target.work_dir.join(crate::sbom::FILE_NAME);
            std::fs::write(&path, &document).ctx(|| format!("writing {}", path.display()))?;
            image.referrers.push(super::sbom::referrer(document, &plan));
            Some(path)
        } else {
            None
        };
        // Nothing becomes visible once the run was interrupted.
        crate::scratch::check()?;
        Ok(Written {
            dockerfile,
            built: Some(Built {
                plan,
                image,
                reports,
                sbom,
            }),
            slim,
        })
    }

    /// The plan of `target` with every layer that may pass
    /// `--max-layer-size` measured: written into `store` (where the run
    /// takes them), and the plan made again from what they measured, until
    /// each layer is known to fit.
    fn plan_measured(
        &self,
        request: &ComposeRequest,
        target: &Target,
        store: &Store,
    ) -> Result<Plan> {
        let images = self.images();
        let keys = LayerKeys::new(
            self.full.as_ref(),
            self.gpu_min.as_deref(),
            request.compression,
        );
        let mut known: HashMap<Digest, Measured> = HashMap::new();
        for _ in 0..MEASURING_ROUNDS {
            let plan = {
                let lookup = |layer: &LayerPlan| known.get(&keys.key(layer)).cloned();
                plan_compose(request, target, &images, &self.scans, Some(&lookup))?
            };
            if plan.unmeasured.is_empty() {
                return Ok(plan);
            }
            let _phase = crate::progress::phase("measure layers for --max-layer-size");
            let mut execution = self.execution(request, &plan);
            execution.store = Some(store);
            for (index, measured) in execution.measure(&self.spools, &plan.unmeasured)? {
                let (layer, measured) = as_split(&plan.layers[index], measured);
                known.insert(keys.key(&layer), measured);
            }
        }
        Err(
            Error::new("the layers could not be cut into parts that fit --max-layer-size")
                .hint("raise --max-layer-size"),
        )
    }

    /// How `plan` is executed from these sources.
    pub(crate) fn execution<'a>(
        &'a self,
        request: &ComposeRequest,
        plan: &'a Plan,
    ) -> Execution<'a> {
        Execution {
            plan,
            min: self.min.as_ref(),
            full: self.full.as_ref(),
            gpu_min: self.gpu_min.as_deref(),
            compression: request.compression,
            scratch: self.scratch.path(),
            store: self.store.as_ref(),
            scans: self.scans.by_origin(),
            give_way: None,
            kept: self.kept.as_ref(),
        }
    }
}

/// A layer measured as written, as the cut sees it: eStargz puts what is
/// read first ahead of the rest after the cut is made, so the cut's layer
/// is in path order, with no prefetch, and its entries' costs follow.
fn as_split(layer: &LayerPlan, measured: Measured) -> (LayerPlan, Measured) {
    let mut order: Vec<usize> = (0..layer.entries.len()).collect();
    order.sort_by(|&a, &b| layer.entries[a].path.cmp(&layer.entries[b].path));
    let costs = (measured.costs)
        .filter(|costs| costs.len() == order.len())
        .map(|costs| order.iter().map(|&i| costs[i]).collect());
    let split = LayerPlan {
        entries: order.iter().map(|&i| layer.entries[i].clone()).collect(),
        prefetch: None,
        ..layer.clone()
    };
    (
        split,
        Measured {
            size: measured.size,
            costs,
        },
    )
}

/// The plan of one target, from the scans of the run.
pub(crate) fn plan_compose(
    request: &ComposeRequest,
    target: &Target,
    images: &Images<'_>,
    scans: &Scans,
    measured: Option<Measure<'_>>,
) -> Result<Plan> {
    let plan = plan::build(
        &MinInput {
            name: images.min.name(),
            id: images.min.image().id.as_ref(),
            config: &images.min.image().config,
            view: match &scans.min {
                Some(scan) => MinView::Scanned(scan),
                None => MinView::BaseOfFull,
            },
            slim_scan: scans.slim_min.as_ref(),
        },
        &PlanInput {
            name: images.full.name(),
            id: images.full.image().id.as_ref(),
            config: &images.full.image().config,
            scan: &scans.full,
        },
        images
            .gpu_min
            .zip(scans.gpu_min.as_ref())
            .map(|(source, scan)| PlanInput {
                name: source.name(),
                id: source.image().id.as_ref(),
                config: &source.image().config,
                scan,
            })
            .as_ref(),
        &PlanOptions {
            components: &target.components,
            enable_gpu: request.enable_gpu,
            timestamp: request.timestamp,
            deps: request.deps,
            max_layer_size: request.max_layer_size,
            measured,
            local: &target
                .local
                .iter()
                .map(|(c, _)| (c.path(), workdir::context_name(c)))
                .collect::<Vec<_>>(),
            slim: request.slim.as_ref(),
            estargz: request.estargz(),
            user: request.user,
        },
    )?;
    // The trees live on disk: a lookup that could not read them answered
    // "absent", and a plan made from that is not to be trusted.
    for scan in [
        scans.min.as_ref(),
        Some(&scans.full),
        scans.gpu_min.as_ref(),
        scans.slim_min.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        scan.tree.health()?;
    }
    Ok(plan)
}

/// Logs what the plan found: its dependencies and what `--slim` removes.
pub(crate) fn report(plan: &Plan) {
    if let Some(deps) = &plan.deps {
        summary::report_deps(deps);
    }
    if let Some(slim) = &plan.slim {
        summary::report_slim(slim);
    }
}
