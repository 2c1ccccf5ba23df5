//! The compose pipeline, start to end: open the destination, open and scan
//! the sources once ([`sources`]), then for each image the run writes (a
//! [`target`]: the request's own, each variant, each platform), plan,
//! write Dockerfile.compose ([`workdir`]), and unless this is a dry run,
//! execute the plan into the destination with its SBOM ([`sbom`]) and
//! summarize what was written ([`summary`]). `serve` composes through a
//! [`Session`] over the same pieces.

mod parts;
mod sbom;
mod session;
mod sources;
mod summary;
mod target;
mod workdir;

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::image::{ImageSink, OutputImage, Platform};
use crate::request::{ComposeRequest, Platforms};
use crate::transport::{self, ImageRef};

pub(crate) use parts::Parts;
pub(crate) use session::{About, Session};
pub(crate) use sources::{open_images, open_store, Preparation, Prepared};
pub(crate) use summary::stored_size;
pub use summary::{SlimSummary, Summary};
pub(crate) use target::Target;
pub(crate) use workdir::buildable_name;

use target::targets;

/// What a compose produced.
#[derive(Debug)]
pub struct Outcome {
    pub dockerfile: PathBuf,
    /// The sink's description of the written image; `None` for a dry run.
    pub written: Option<String>,
    /// What was written; `None` for a dry run.
    pub summary: Option<Summary>,
    /// What `--slim` removes (also on a dry run).
    pub slim: Option<SlimSummary>,
}

impl Outcome {
    fn dry_run(dockerfile: PathBuf, slim: Option<SlimSummary>) -> Outcome {
        Outcome {
            dockerfile,
            written: None,
            summary: None,
            slim,
        }
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

fn open_sink(request: &ComposeRequest, target: &Target) -> Result<Box<dyn ImageSink>> {
    transport::open_sink(&target.output, &target.output_name, &request.transport)
}

fn compose_all(request: &ComposeRequest) -> Result<Vec<(Option<String>, Outcome)>> {
    if request.platforms.is_index() {
        return compose_platforms(request);
    }
    let started = std::time::Instant::now();
    let targets = targets(request);
    for target in &targets {
        workdir::prepare(&target.work_dir, &target.output, request.store.as_ref())?;
    }
    // The destinations first: an unreachable engine or a taken path fails
    // before any image is read. Variants may share one (tags of one OCI
    // layout): each is opened again right before it is written.
    let mut first_sink = None;
    if !request.dry_run {
        for target in &targets {
            let sink = open_sink(request, target)?;
            if targets.len() == 1 {
                first_sink = Some(sink);
            }
        }
    }
    let prepared = Prepared::new(
        request,
        &Preparation {
            transport: &request.transport,
            work_dir: &request.work_dir,
            shared: targets.len() > 1,
            spool: true,
            sbom: request.sbom && !request.dry_run,
        },
    )?;
    let mut outcomes = Vec::new();
    for target in &targets {
        let mut sink = match first_sink.take() {
            Some(sink) => Some(sink),
            None if !request.dry_run => Some(open_sink(request, target)?),
            None => None,
        };
        let written = prepared.write_target(
            request,
            target,
            sink.as_mut().map(|s| &mut **s as &mut dyn ImageSink),
        )?;
        let (Some(built), Some(sink)) = (written.built, sink) else {
            outcomes.push((
                target.name.clone(),
                Outcome::dry_run(written.dockerfile, written.slim),
            ));
            continue;
        };
        let committing = crate::progress::phase("commit");
        let committed = sink.commit(&built.image)?;
        drop(committing);
        let outcome = built.outcome(
            target,
            &prepared.images(),
            written.dockerfile,
            committed.description,
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
    check_index_request(request)?;
    let mut sink = if request.dry_run {
        None
    } else {
        Some(open_sink(request, &Target::of(request))?)
    };
    let platforms = match &request.platforms {
        Platforms::List(list) => list.clone(),
        Platforms::All => transport::platforms(&request.full, &request.transport)?,
    };
    let mut built = Vec::new();
    let mut outcomes = Vec::new();
    for platform in &platforms {
        let mut target = Target::of(request);
        target.name = Some(platform.to_string());
        target.work_dir = request
            .work_dir
            .join(platform.to_string().replace('/', "-"));
        workdir::prepare(&target.work_dir, &target.output, request.store.as_ref())?;
        let mut transport = request.transport.clone();
        transport.platform = platform.clone();
        let prepared = Prepared::new(
            request,
            &Preparation {
                transport: &transport,
                work_dir: &target.work_dir,
                shared: true,
                spool: true,
                sbom: request.sbom && !request.dry_run,
            },
        )?;
        let written = prepared.write_target(
            request,
            &target,
            sink.as_mut().map(|s| &mut **s as &mut dyn ImageSink),
        )?;
        match written.built {
            Some(b) => built.push((platform.clone(), target, prepared, written.dockerfile, b)),
            None => outcomes.push((
                target.name,
                Outcome::dry_run(written.dockerfile, written.slim),
            )),
        }
    }
    let Some(sink) = sink else {
        return Ok(outcomes);
    };
    let images: Vec<(Platform, OutputImage)> = built
        .iter()
        .map(|(p, _, _, _, b)| (p.clone(), b.image.clone()))
        .collect();
    let committed = sink.commit_index(&images)?;
    for (platform, target, prepared, dockerfile, b) in built {
        let outcome = b.outcome(
            &target,
            &prepared.images(),
            dockerfile,
            committed.description.clone(),
            started,
        );
        prepared.prune(request);
        outcomes.push((Some(platform.to_string()), outcome));
    }
    Ok(outcomes)
}

/// Refuses what an image index cannot be: several variants, or a
/// destination that holds one image.
fn check_index_request(request: &ComposeRequest) -> Result<()> {
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
    Ok(())
}
