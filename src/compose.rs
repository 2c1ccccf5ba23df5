//! The compose pipeline, start to end: open the images and the destination,
//! scan both images (in parallel), plan, write Dockerfile.compose, and unless
//! this is a dry run, execute the plan into the destination.

use std::path::{Path, PathBuf};

use crate::deps::{self, Deps};
use crate::error::{Error, IoContext, Result};
use crate::execute::{Execution, Spools};
use crate::image::{ImageSink, ImageSource};
use crate::layer::ImagePath;
use crate::image::Platform;
use crate::plan::{self, MinInput, MinView, Origin, Plan, PlanInput, PlanOptions};
use crate::provenance;
use crate::render::{self, FromNames};
use crate::request::{ComposeRequest, Platforms};
use crate::scan::{self, PathFilter, ScanOptions};
use crate::spool::Spool;
use crate::store::Store;
use crate::transport::{self, ImageRef};
use crate::triton;

pub const DOCKERFILE_NAME: &str = "Dockerfile.compose";

/// What a compose produced.
#[derive(Debug)]
pub struct Outcome {
    pub dockerfile: PathBuf,
    /// The sink's description of the written image; `None` for a dry run.
    pub written: Option<String>,
    /// What was written; `None` for a dry run.
    pub summary: Option<Summary>,
}

/// What a compose wrote, for people (a table) and scripts (`--json`).
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub output: String,
    pub written: String,
    pub layers: Vec<crate::execute::LayerReport>,
    /// Compressed sizes: the new layers, min's (kept), the image, and full.
    pub new_size: u64,
    pub min_size: u64,
    pub image_size: u64,
    pub full_size: u64,
    /// Paths and packages carried over from full as runtime dependencies.
    pub dependency_paths: usize,
    pub dependency_packages: Vec<String>,
    pub seconds: f64,
    /// The SPDX SBOM written into the work directory.
    pub sbom: Option<PathBuf>,
}

impl Summary {
    /// A short table: each layer, then the totals against min and full.
    pub fn table(&self) -> String {
        let size = crate::progress::human_size;
        let mut out = format!("{:<44} {:>8} {:>11}\n", "layer", "entries", "size");
        for layer in &self.layers {
            out.push_str(&format!(
                "{:<44} {:>8} {:>11}{}\n",
                layer.purpose,
                layer.entries,
                size(layer.size),
                if layer.from_store {
                    "  (from the store)"
                } else {
                    ""
                }
            ));
        }
        out.push_str(&format!(
            "{:<44} {:>8} {:>11}\n",
            "new layers",
            "",
            size(self.new_size)
        ));
        out.push_str(&format!(
            "{:<44} {:>8} {:>11}\n",
            "min's layers, unchanged",
            "",
            size(self.min_size)
        ));
        let saved = if self.full_size > 0 {
            format!(
                "  ({:.0}% of full's {})",
                100.0 * self.image_size as f64 / self.full_size as f64,
                size(self.full_size)
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{:<44} {:>8} {:>11}{saved}\n",
            "image",
            "",
            size(self.image_size)
        ));
        if let Some(sbom) = &self.sbom {
            out.push_str(&format!("SBOM (SPDX 2.3): {}\n", sbom.display()));
        }
        out
    }
}

/// Composes the image a request asks for.
pub fn compose(request: &ComposeRequest) -> Result<Outcome> {
    let mut outcomes = compose_all(request)?;
    Ok(outcomes.remove(0).1)
}

/// Composes each variant of a `--variants` request (or the one image of
/// another): the sources are opened and scanned once, and layers the
/// variants share are built once (through the store, a temporary one when
/// there is none).
pub fn compose_variants(request: &ComposeRequest) -> Result<Vec<(Option<String>, Outcome)>> {
    compose_all(request)
}

/// One image a run writes: the request's own, or one of its variants.
struct Target {
    name: Option<String>,
    request: ComposeRequest,
}

fn targets(request: &ComposeRequest) -> Vec<Target> {
    if request.variants.is_empty() {
        return vec![Target {
            name: None,
            request: request.clone(),
        }];
    }
    request
        .variants
        .iter()
        .map(|variant| {
            let mut own = request.clone();
            own.components = variant.components.clone();
            own.local = variant.local.clone();
            own.output = variant.output.clone();
            own.work_dir = request.work_dir.join(&variant.name);
            own.variants = Vec::new();
            Target {
                name: Some(variant.name.clone()),
                request: own,
            }
        })
        .collect()
}

/// The sources of a run, opened and scanned once, and what targets share.
struct Prepared {
    store: Option<Store>,
    min: Box<dyn ImageSource>,
    full: Box<dyn ImageSource>,
    gpu_min: Option<Box<dyn ImageSource>>,
    scans: Scans,
    spools: Spools,
    /// min's small files for the SBOM, when the plan did not read min.
    sbom_min: Option<scan::ScannedImage>,
    // Last: removed after everything that may hold files in it.
    scratch: tempfile::TempDir,
}

impl Prepared {
    /// Opens and scans the sources `request` names (its platform's), with
    /// a store (a temporary one when `shared` targets need one). Without
    /// `spool`, nothing is spooled: layers read what they need when built.
    fn new(request: &ComposeRequest, shared: bool, spool: bool) -> Result<Prepared> {
        let store = request
            .store
            .as_ref()
            .map(|s| Store::open(&s.dir, s.max_size))
            .transpose()?;
        let (min, full, gpu_min) = open_images(request)?;
        // Before any layer is read.
        if request.platform_given {
            let sources = [
                ("min", Some(min.as_ref())),
                ("full", Some(full.as_ref())),
                ("gpu-min", gpu_min.as_deref()),
            ];
            check_platform(&sources, &request.transport.platform)?;
        }
        let scratch = tempfile::Builder::new()
            .prefix(&crate::scratch::prefix("work"))
            .tempdir_in(&request.work_dir)
            .ctx(|| {
                format!(
                    "creating a scratch directory in {}",
                    request.work_dir.display()
                )
            })?;
        // Variants share layers through a store: a temporary one without one.
        let store = match store {
            None if shared => Some(Store::open(&scratch.path().join("store"), u64::MAX)?),
            other => other,
        };
        let full = with_local_components(request, full, scratch.path())?;
        let images = Images {
            min: min.as_ref(),
            full: full.as_ref(),
            gpu_min: gpu_min.as_deref(),
        };
        let mut scanning = request.clone();
        scanning.dry_run |= !spool;
        let (scans, spools) = scan_images(&scanning, &images, store.as_ref(), scratch.path())?;
        check_local_components(request, full.as_ref(), &scans.full)?;
        // The SBOM lists min's packages and distributions: when full was
        // built FROM min, min's small files are indexed for it (once: the
        // store keeps the index). The plan does not see this scan.
        let sbom_min = match &scans.min {
            None if request.sbom && !request.dry_run => Some(scan::scan(
                min.as_ref(),
                "min",
                ScanOptions {
                    keep: Some(&index_keep),
                    store: store.as_ref().map(|s| (s, MIN_INDEX_KIND)),
                    ..Default::default()
                },
            )?),
            _ => None,
        };
        Ok(Prepared {
            store,
            min,
            full,
            gpu_min,
            scans,
            spools,
            sbom_min,
            scratch,
        })
    }

    fn images(&self) -> Images<'_> {
        Images {
            min: self.min.as_ref(),
            full: self.full.as_ref(),
            gpu_min: self.gpu_min.as_deref(),
        }
    }

    /// Plans `target`, writes its Dockerfile.compose and, unless `sink` is
    /// `None` (a dry run), its layers into `sink`, and its SBOM; returns
    /// the image for the sink to commit.
    fn write_target(
        &self,
        target: &ComposeRequest,
        sink: Option<&mut dyn ImageSink>,
    ) -> Result<Written> {
        let images = self.images();
        let plan = plan_compose(target, &images, &self.scans)?;
        let dockerfile = write_dockerfile(target, &plan)?;
        let Some(sink) = sink else {
            return Ok(Written {
                dockerfile,
                built: None,
            });
        };
        let (mut image, reports) = Execution {
            plan: &plan,
            min: self.min.as_ref(),
            full: self.full.as_ref(),
            gpu_min: self.gpu_min.as_deref(),
            compression: target.compression,
            scratch: self.scratch.path(),
            store: self.store.as_ref(),
            scans: self.scans.by_origin(),
        }
        .run(&self.spools, sink)?;
        let sbom = if target.sbom {
            let min_scan = self.scans.min.as_ref().or(self.sbom_min.as_ref());
            let sbom = sbom_document(&images, &self.scans, min_scan, &plan, &image, &reports);
            let path = target.work_dir.join(crate::sbom::FILE_NAME);
            std::fs::write(&path, &sbom).ctx(|| format!("writing {}", path.display()))?;
            image.referrers.push(crate::image::Referrer {
                artifact_type: crate::sbom::MEDIA_TYPE.to_string(),
                title: crate::sbom::FILE_NAME.to_string(),
                data: sbom,
                annotations: [(
                    provenance::CREATED.to_string(),
                    provenance::rfc3339(plan.timestamp),
                )]
                .into(),
            });
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
        })
    }

    /// Evicts past the store's bound, when the store is the user's.
    fn prune(&self, request: &ComposeRequest) {
        if let Some(store) = request.store.as_ref().and(self.store.as_ref()) {
            let freed = store.prune(None);
            if freed > 0 {
                tracing::info!(
                    "store: evicted {} of least recently used entries",
                    crate::progress::human_size(freed)
                );
            }
        }
    }
}

/// One min/full pair, opened and scanned once, composing any selection on
/// demand into an OCI layout (`triton-compose serve`): the same pipeline as
/// a compose, with nothing spooled up front (each layer reads what it
/// needs, and the store keeps what was built).
pub struct Session {
    prepared: Prepared,
    base: ComposeRequest,
}

impl Session {
    /// `base` names the images, the store and the work directory; its
    /// components and output are ignored.
    pub fn open(base: &ComposeRequest) -> Result<Session> {
        prepare_work_dir(base)?;
        Ok(Session {
            prepared: Prepared::new(base, true, false)?,
            base: base.clone(),
        })
    }

    /// The components full offers, by kind and name.
    pub fn offered(&self) -> Vec<triton::Component> {
        triton::ComponentKind::ALL
            .into_iter()
            .flat_map(|kind| {
                triton::offered(&self.prepared.scans.full.tree, kind)
                    .into_iter()
                    .filter_map(move |name| triton::Component::new(kind, &name).ok())
            })
            .collect()
    }

    /// min's and full's digests (or image IDs).
    pub fn ids(&self) -> (Option<crate::digest::Digest>, Option<crate::digest::Digest>) {
        (
            self.prepared.min.image().id.clone(),
            self.prepared.full.image().id.clone(),
        )
    }

    /// Composes `components` into the OCI layout `dir` under `tag`;
    /// returns what was written and the new layers (taken from the store
    /// or built).
    pub fn compose(
        &self,
        components: &[triton::Component],
        dir: &Path,
        tag: &str,
    ) -> Result<(String, Vec<crate::execute::LayerReport>)> {
        let mut request = self.base.clone();
        request.components = components.to_vec();
        // Each selection's Dockerfile.compose and SBOM in a directory of its own.
        request.work_dir = self.base.work_dir.join("selections").join(tag);
        std::fs::create_dir_all(&request.work_dir)
            .ctx(|| format!("creating {}", request.work_dir.display()))?;
        request.output = ImageRef::Oci {
            dir: dir.to_path_buf(),
            tag: Some(tag.to_string()),
        };
        let mut sink = transport::open_sink(&request.output, tag, &request.transport)?;
        let written = self.prepared.write_target(&request, Some(sink.as_mut()))?;
        let built = written.built.expect("a sink was given");
        let description = sink.commit(&built.image)?;
        self.prepared.prune(&request);
        Ok((description, built.reports))
    }
}

/// What [`Prepared::write_target`] did.
struct Written {
    dockerfile: PathBuf,
    built: Option<Built>,
}

struct Built {
    plan: Plan,
    image: crate::image::OutputImage,
    reports: Vec<crate::execute::LayerReport>,
    sbom: Option<PathBuf>,
}

impl Built {
    fn outcome(
        self,
        request: &ComposeRequest,
        images: &Images<'_>,
        dockerfile: PathBuf,
        written: String,
        started: std::time::Instant,
    ) -> Outcome {
        let mut summary = summarize(
            request,
            images,
            &self.plan,
            &self.image,
            self.reports,
            written.clone(),
            started,
        );
        summary.sbom = self.sbom;
        Outcome {
            dockerfile,
            written: Some(written),
            summary: Some(summary),
        }
    }
}

/// Refuses sources of another platform than the one asked for (an image
/// that is no index offers no choice, and would be taken as it is).
fn check_platform(sources: &[(&str, Option<&dyn ImageSource>)], platform: &Platform) -> Result<()> {
    for (role, source) in sources {
        let Some(source) = source else { continue };
        let found = Platform::of_config(&source.image().config);
        if !found.serves(platform) {
            return Err(Error::new(format!(
                "--image {role}: {} has no {platform} image; it is {}/{}",
                source.name(),
                found.os,
                found.architecture
            ))
            .hint("name a multi-platform image (an index) that holds every --platform asked for"));
        }
    }
    Ok(())
}

fn prepare_work_dir(request: &ComposeRequest) -> Result<()> {
    let dir = &request.work_dir;
    std::fs::create_dir_all(dir).ctx(|| format!("creating --work-dir {}", dir.display()))?;
    sweep_leftovers(request);
    Ok(())
}

fn compose_all(request: &ComposeRequest) -> Result<Vec<(Option<String>, Outcome)>> {
    if request.platforms.is_index() {
        return compose_platforms(request);
    }
    let started = std::time::Instant::now();
    let targets = targets(request);
    for target in &targets {
        prepare_work_dir(&target.request)?;
    }
    // The destinations first: an unreachable engine or a taken path fails
    // before any image is read. Variants may share one (tags of one OCI
    // layout): each is opened again right before it is written.
    let open_sink = |target: &Target| {
        transport::open_sink(
            &target.request.output,
            &target.request.output_name,
            &request.transport,
        )
    };
    let mut first_sink = None;
    if !request.dry_run {
        for target in &targets {
            let sink = open_sink(target)?;
            if targets.len() == 1 {
                first_sink = Some(sink);
            }
        }
    }
    let prepared = Prepared::new(request, targets.len() > 1, true)?;
    let mut outcomes = Vec::new();
    for target in &targets {
        let mut sink = match first_sink.take() {
            Some(sink) => Some(sink),
            None if !request.dry_run => Some(open_sink(target)?),
            None => None,
        };
        let written = prepared.write_target(
            &target.request,
            sink.as_mut().map(|s| &mut **s as &mut dyn ImageSink),
        )?;
        let (Some(built), Some(sink)) = (written.built, sink) else {
            outcomes.push((
                target.name.clone(),
                Outcome {
                    dockerfile: written.dockerfile,
                    written: None,
                    summary: None,
                },
            ));
            continue;
        };
        let description = sink.commit(&built.image)?;
        let outcome = built.outcome(
            &target.request,
            &prepared.images(),
            written.dockerfile,
            description,
            started,
        );
        outcomes.push((target.name.clone(), outcome));
    }
    prepared.prune(request);
    Ok(outcomes)
}

/// `--platform a,b`: each platform composed from its own platform's
/// sources, into one sink, committed as an image index.
fn compose_platforms(request: &ComposeRequest) -> Result<Vec<(Option<String>, Outcome)>> {
    let started = std::time::Instant::now();
    if !request.variants.is_empty() {
        return Err(Error::new("--variants composes one platform at a time")
            .hint("run it once per --platform, or compose the platforms without --variants"));
    }
    if !matches!(request.output, ImageRef::Oci { .. } | ImageRef::Registry(_)) {
        return Err(Error::new(format!(
            "{} holds one image, not a multi-platform index",
            request.output
        ))
        .hint("write several platforms to oci:DIR[:TAG] or a registry, or pass one --platform"));
    }
    let mut sink = if request.dry_run {
        None
    } else {
        Some(transport::open_sink(
            &request.output,
            &request.output_name,
            &request.transport,
        )?)
    };
    let platforms = match &request.platforms {
        Platforms::List(list) => list.clone(),
        Platforms::All => transport::platforms(&request.full, &request.transport)?,
    };
    let mut built = Vec::new();
    let mut outcomes = Vec::new();
    for platform in &platforms {
        let mut own = request.clone();
        own.transport.platform = platform.clone();
        own.platforms = Platforms::List(vec![platform.clone()]);
        own.work_dir = request
            .work_dir
            .join(platform.to_string().replace('/', "-"));
        prepare_work_dir(&own)?;
        let prepared = Prepared::new(&own, true, true)?;
        let written =
            prepared.write_target(&own, sink.as_mut().map(|s| &mut **s as &mut dyn ImageSink))?;
        match written.built {
            Some(b) => built.push((platform.clone(), own, prepared, written.dockerfile, b)),
            None => outcomes.push((
                Some(platform.to_string()),
                Outcome {
                    dockerfile: written.dockerfile,
                    written: None,
                    summary: None,
                },
            )),
        }
    }
    let Some(sink) = sink else {
        return Ok(outcomes);
    };
    let images: Vec<(Platform, crate::image::OutputImage)> = built
        .iter()
        .map(|(p, _, _, _, b)| (p.clone(), b.image.clone()))
        .collect();
    let description = sink.commit_index(&images)?;
    for (platform, own, prepared, dockerfile, b) in built {
        let outcome = b.outcome(
            &own,
            &prepared.images(),
            dockerfile,
            description.clone(),
            started,
        );
        prepared.prune(request);
        outcomes.push((Some(platform.to_string()), outcome));
    }
    Ok(outcomes)
}

fn summarize(
    request: &ComposeRequest,
    images: &Images<'_>,
    plan: &Plan,
    image: &crate::image::OutputImage,
    reports: Vec<crate::execute::LayerReport>,
    written: String,
    started: std::time::Instant,
) -> Summary {
    let blob_total = |source: &dyn ImageSource| -> u64 {
        source
            .image()
            .layers
            .iter()
            .filter_map(|l| l.blob.as_ref().map(|b| b.1))
            .sum()
    };
    let new_size: u64 = reports.iter().map(|r| r.size).sum();
    let min_size = blob_total(images.min);
    Summary {
        output: request.output.to_string(),
        written,
        layers: reports,
        new_size,
        min_size,
        image_size: image
            .layers
            .iter()
            .map(|l| l.size)
            .sum::<u64>()
            .max(new_size + min_size),
        full_size: blob_total(images.full),
        dependency_paths: plan.deps.as_ref().map_or(0, |d| d.paths.len()),
        dependency_packages: plan
            .deps
            .as_ref()
            .map(|d| d.packages.clone())
            .unwrap_or_default(),
        seconds: started.elapsed().as_secs_f64(),
        sbom: None,
    }
}

/// The SPDX SBOM of a composed image ([`crate::sbom`]): min's files where
/// the new layers do not cover them, full's (and gpu-min's) where they do.
fn sbom_document(
    images: &Images<'_>,
    scans: &Scans,
    min_scan: Option<&scan::ScannedImage>,
    plan: &Plan,
    image: &crate::image::OutputImage,
    reports: &[crate::execute::LayerReport],
) -> Vec<u8> {
    use crate::sbom::{self, Kept, Layered, Role};
    let planned: std::collections::HashSet<&ImagePath> = plan
        .layers
        .iter()
        .flat_map(|l| l.entries.iter().map(|e| &e.path))
        .collect();
    let in_plan = |p: &ImagePath| planned.contains(p);
    let from_min =
        |p: &ImagePath| !planned.contains(p) && min_scan.is_some_and(|m| m.tree.contains(p));
    let empty = std::collections::HashMap::new();
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
    let status = plan
        .deps
        .as_ref()
        .and_then(|d| d.dpkg_status.clone())
        .or_else(|| {
            min_scan.and_then(|m| {
                m.kept
                    .get(&ImagePath::from_static(deps::dpkg::STATUS))
                    .cloned()
            })
        })
        .unwrap_or_default();
    let added: std::collections::HashSet<&str> = plan
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
    let parts = sbom_parts(plan, reports);
    let contents = sbom::Contents::gather(
        &files,
        &String::from_utf8_lossy(&status),
        &origin,
        parts,
        Some(plan.info.version.clone()),
    );
    let sources = sbom_sources(images, plan);
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

/// The Triton parts of a plan, with the layers written for each.
fn sbom_parts(plan: &Plan, reports: &[crate::execute::LayerReport]) -> Vec<crate::sbom::Part> {
    use crate::sbom::{self, Role};
    let mut purposes: Vec<(String, String)> = vec![("Triton core".into(), "core".into())];
    purposes.extend(plan.components.iter().map(|c| {
        let what = format!("{} {}", c.kind.noun(), c.name);
        (what.clone(), what)
    }));
    purposes
        .into_iter()
        .map(|(purpose, name)| sbom::Part {
            name,
            layers: reports
                .iter()
                .filter(|r| {
                    r.purpose == purpose || r.purpose.starts_with(&format!("{purpose} (part "))
                })
                .map(|r| (r.digest.clone(), r.diff_id.clone()))
                .collect(),
            origin: Role::Full,
        })
        .collect()
}

/// min, full and (when the plan copies from it) gpu-min, by digest.
fn sbom_sources(images: &Images<'_>, plan: &Plan) -> Vec<crate::sbom::Source> {
    use crate::sbom::{self, Role};
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

/// Removes what runs that are gone (killed with SIGKILL) left where this
/// one writes: the work directory, beside the destination, and the store's
/// staging directory.
fn sweep_leftovers(request: &ComposeRequest) {
    let mut dirs = vec![request.work_dir.clone()];
    match &request.output {
        ImageRef::Oci { dir, .. } => {
            dirs.push(dir.parent().map(Path::to_path_buf).unwrap_or_default());
            dirs.push(dir.join("blobs/sha256"));
            dirs.push(dir.clone());
        }
        ImageRef::DockerArchive { file, .. } => {
            dirs.push(file.parent().map(Path::to_path_buf).unwrap_or_default());
        }
        ImageRef::Registry(_) | ImageRef::DockerDaemon(_) => {}
    }
    if let Some(store) = &request.store {
        dirs.push(store.dir.join("tmp"));
    }
    for dir in dirs {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        crate::scratch::sweep(&dir);
    }
}

/// The name a component from a directory has in the build context.
fn context_name(component: &triton::Component) -> String {
    format!("triton-compose-{}-{}", component.kind.dir(), component.name)
}

/// Lays the components from directories on this machine (`NAME=DIR`) on
/// top of full, each a layer of its own written into `scratch`.
fn with_local_components(
    request: &ComposeRequest,
    full: Box<dyn ImageSource>,
    scratch: &Path,
) -> Result<Box<dyn ImageSource>> {
    if request.local.is_empty() {
        return Ok(full);
    }
    let mtime = request.timestamp.unwrap_or_else(|| {
        full.image()
            .config
            .get("created")
            .and_then(|c| c.as_str())
            .and_then(|c| crate::config::parse_timestamp(c).ok())
            .unwrap_or(0)
    });
    let mut layers = Vec::new();
    for (i, (component, dir)) in request.local.iter().enumerate() {
        let out = scratch.join(format!("local-{i}.tar"));
        let diff_id =
            crate::local::layer_from_dir(dir, &component.path(), mtime, &out).map_err(|e| {
                e.context(format!(
                    "{} {}={}",
                    component.kind.flag(),
                    component.name,
                    dir.display()
                ))
            })?;
        layers.push((out, diff_id));
    }
    Ok(Box::new(crate::local::WithLocalLayers::new(full, layers)?))
}

/// Refuses a local component whose name full already uses.
fn check_local_components(
    request: &ComposeRequest,
    full: &dyn ImageSource,
    scan: &scan::ScannedImage,
) -> Result<()> {
    let own_layers = (full.image().layers.len() - request.local.len()) as u32;
    for (component, dir) in &request.local {
        let path = component.path();
        if scan
            .tree
            .subtree(&path)
            .any(|(_, node)| node.inode.layer < own_layers)
        {
            return Err(Error::new(format!(
                "{} already has a {} {}; {}={} would be mixed with it",
                full.name(),
                component.kind.noun(),
                component.name,
                component.name,
                dir.display()
            ))
            .hint(format!(
                "give yours another name: {} NEWNAME={}",
                component.kind.flag(),
                dir.display()
            )));
        }
    }
    Ok(())
}

/// The images of one compose.
pub(crate) struct Images<'a> {
    pub min: &'a dyn ImageSource,
    pub full: &'a dyn ImageSource,
    pub gpu_min: Option<&'a dyn ImageSource>,
}

/// The scans of one compose: min (`None` when full was built FROM it and
/// its accounts are in full's own layers), full, and gpu-min.
pub(crate) struct Scans {
    pub min: Option<scan::ScannedImage>,
    pub full: scan::ScannedImage,
    pub gpu_min: Option<scan::ScannedImage>,
}

impl Scans {
    /// The scans of the images a plan copies from, for [`Execution`].
    pub fn by_origin(&self) -> std::collections::HashMap<Origin, &scan::ScannedImage> {
        [
            (Origin::Full, Some(&self.full)),
            (Origin::GpuMin, self.gpu_min.as_ref()),
        ]
        .into_iter()
        .filter_map(|(origin, scan)| scan.map(|s| (origin, s)))
        .collect()
    }
}

/// The name under which the store keeps indexes made with [`index_keep`]
/// and [`index_elf`]; for min, with `index_keep` only.
const INDEX_KIND: &str = "compose-5";
const MIN_INDEX_KIND: &str = "keep-5";

/// Small files every compose may read: the account files and what the
/// dependency closure reads. The same for every selection, so that a
/// layer's index serves them all.
fn index_keep(path: &ImagePath) -> bool {
    triton::ACCOUNT_FILES
        .iter()
        .any(|a| path.as_bytes() == a.as_bytes())
        || deps::keeps(path)
        || crate::sbom::keeps(path)
}

/// Files whose ELF facts every compose may need: the installation, the
/// NVIDIA directory, and anything named like a shared library.
fn index_elf(path: &ImagePath) -> bool {
    path.is_within(&triton::install_dir())
        || path.is_within(&ImagePath::from_static(triton::NVIDIA_DIR))
        || deps::may_be_library(path)
}

/// Scans min, full and gpu-min (in parallel), spooling the content the
/// plan may copy: full's candidate subtrees and gpu-min's CUDA libraries.
pub(crate) fn scan_images(
    request: &ComposeRequest,
    images: &Images<'_>,
    store: Option<&Store>,
    scratch: &Path,
) -> Result<(Scans, Spools)> {
    let mut full_spool = Spool::create(scratch)?;
    let roots = plan::candidate_roots(&request.components);
    let in_roots = |p: &ImagePath| roots.iter().any(|r| p.is_within(r));
    let filters = Filters {
        spool: (!request.dry_run).then_some(&in_roots as PathFilter<'_>),
        store: store.map(|s| (s, INDEX_KIND)),
        min_store: store.map(|s| (s, MIN_INDEX_KIND)),
    };
    // gpu-min's files are found by name: the copies' sources, and the
    // versioned files their symlinks lead to (libcudart.so.12.4.127).
    let architecture = images
        .full
        .image()
        .config
        .get("architecture")
        .and_then(|a| a.as_str());
    let cuda_names: Vec<Vec<u8>> = triton::gpu_min_copies(
        &request.components,
        request.enable_gpu,
        architecture.unwrap_or("amd64"),
    )
    .iter()
    .map(|c| c.from.file_name().to_vec())
    .collect();
    let cuda_file = |p: &ImagePath| cuda_names.iter().any(|n| p.file_name().starts_with(n));
    let mut gpu_min_spool = images.gpu_min.map(|_| Spool::create(scratch)).transpose()?;

    let (scans, gpu_min_scan) = std::thread::scope(|scope| {
        let gpu_min_job = images
            .gpu_min
            .zip(gpu_min_spool.as_mut())
            .map(|(source, spool)| {
                let spool = (!request.dry_run).then_some((&cuda_file as PathFilter<'_>, spool));
                let store = filters.store;
                scope.spawn(move || {
                    scan::scan(
                        source,
                        "gpu-min",
                        ScanOptions {
                            spool,
                            keep: Some(&index_keep),
                            elf: Some(&index_elf),
                            store,
                            ..Default::default()
                        },
                    )
                })
            });
        let scans = scan_min_and_full(images.min, images.full, &filters, &mut full_spool);
        let gpu_min_scan = gpu_min_job.map(|job| {
            job.join()
                .unwrap_or_else(|_| Err(Error::new("the gpu-min scan panicked")))
        });
        (scans, gpu_min_scan.transpose())
    });
    let (min_scan, full_scan) = scans?;
    let mut spools = Spools::from([(Origin::Full, full_spool)]);
    spools.extend(gpu_min_spool.map(|spool| (Origin::GpuMin, spool)));
    Ok((
        Scans {
            min: min_scan,
            full: full_scan,
            gpu_min: gpu_min_scan?,
        },
        spools,
    ))
}

pub(crate) fn plan_compose(
    request: &ComposeRequest,
    images: &Images<'_>,
    scans: &Scans,
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
            components: &request.components,
            enable_gpu: request.enable_gpu,
            timestamp: request.timestamp,
            deps: request.deps,
            max_layer_size: request.max_layer_size,
            local: &request
                .local
                .iter()
                .map(|(c, _)| (c.path(), context_name(c)))
                .collect::<Vec<_>>(),
        },
    )?;
    if let Some(deps) = &plan.deps {
        report_deps(deps);
    }
    Ok(plan)
}

/// Writes Dockerfile.compose (and the files it copies from its context)
/// into the work directory; returns its path.
fn write_dockerfile(request: &ComposeRequest, plan: &Plan) -> Result<PathBuf> {
    let dockerfile_path = request.work_dir.join(DOCKERFILE_NAME);
    let gpu_min_from = request
        .gpu_min
        .as_ref()
        .map(|r| buildable_name(r, "triton-compose-gpu-min"))
        .unwrap_or_default();
    let dockerfile = render::dockerfile(
        plan,
        &FromNames {
            full: &buildable_name(&request.full, "triton-compose-full"),
            min: &buildable_name(&request.min, "triton-compose-min"),
            gpu_min: &gpu_min_from,
        },
    )?;
    std::fs::write(&dockerfile_path, dockerfile)
        .ctx(|| format!("writing {}", dockerfile_path.display()))?;
    for (name, bytes) in render::context_files(plan) {
        let path = request.work_dir.join(name);
        std::fs::write(&path, bytes).ctx(|| format!("writing {}", path.display()))?;
    }
    for (component, dir) in &request.local {
        crate::local::copy_tree(dir, &request.work_dir.join(context_name(component)))?;
    }
    tracing::info!("wrote {}", dockerfile_path.display());
    Ok(dockerfile_path)
}

/// Opens min, full and gpu-min (when needed). Images in the local engine
/// are exported together, so layers they share are read once.
#[allow(clippy::type_complexity)]
pub(crate) fn open_images(
    request: &ComposeRequest,
) -> Result<(
    Box<dyn ImageSource>,
    Box<dyn ImageSource>,
    Option<Box<dyn ImageSource>>,
)> {
    let labelled: Vec<(&str, &ImageRef)> = [
        ("--image min", Some(&request.min)),
        ("--image full", Some(&request.full)),
        ("--image gpu-min", request.gpu_min.as_ref()),
    ]
    .into_iter()
    .filter_map(|(label, r)| r.map(|r| (label, r)))
    .collect();
    let opened = transport::open_sources(&labelled, &request.transport)?;
    let mut opened = opened.into_iter();
    let (Some(min), Some(full)) = (opened.next(), opened.next()) else {
        unreachable!("min and full are always opened");
    };
    Ok((min, full, opened.next()))
}

/// How the scans of min and full spool and use the store.
struct Filters<'a> {
    /// full's files to spool; `None` for a dry run.
    spool: Option<PathFilter<'a>>,
    store: Option<(&'a Store, &'a str)>,
    min_store: Option<(&'a Store, &'a str)>,
}

/// Scans min and full, in parallel; when full was built FROM min, only
/// full's own layers, and min not at all unless its account files are
/// needed (`None` then).
fn scan_min_and_full(
    min: &dyn ImageSource,
    full: &dyn ImageSource,
    filters: &Filters<'_>,
    spool: &mut Spool,
) -> Result<(Option<scan::ScannedImage>, scan::ScannedImage)> {
    let shared = min
        .image()
        .layers
        .iter()
        .map(|l| l.diff_id.clone())
        .collect();
    let full_options = ScanOptions {
        skip: shared,
        spool: filters.spool.map(|wanted| (wanted, spool)),
        keep: Some(&index_keep),
        elf: Some(&index_elf),
        store: filters.store,
    };
    if is_base_of(min, full) {
        tracing::info!(
            "{} is the base of {}: only full's own layers are read",
            min.name(),
            full.name()
        );
        let full_scan = scan::scan(full, "full", full_options)?;
        let min_scan = if plan::needs_min_accounts(&full_scan) {
            tracing::info!(
                "full's own layers lack /etc/passwd or /etc/group: reading min for them"
            );
            Some(scan_min(min, filters)?)
        } else {
            None
        };
        return Ok((min_scan, full_scan));
    }
    let (min_scan, full_scan) = std::thread::scope(|scope| {
        let min_job = scope.spawn(|| scan_min(min, filters));
        let full_scan = scan::scan(full, "full", full_options);
        let min_scan = min_job
            .join()
            .unwrap_or_else(|_| Err(Error::new("the min scan panicked")));
        (min_scan, full_scan)
    });
    Ok((Some(min_scan?), full_scan?))
}

fn scan_min(min: &dyn ImageSource, filters: &Filters<'_>) -> Result<scan::ScannedImage> {
    scan::scan(
        min,
        "min",
        ScanOptions {
            keep: Some(&index_keep),
            store: filters.min_store,
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
