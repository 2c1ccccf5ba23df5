//! The sources of a run: min, full and gpu-min opened (with the components
//! from directories laid on full), checked for their platform, and scanned
//! once, in parallel, into what every target of the run plans from.

use std::path::Path;

use crate::deps;
use crate::error::{Error, IoContext, Result};
use crate::execute::Spools;
use crate::image::{ImageSource, Platform};
use crate::layer::ImagePath;
use crate::plan::{self, Origin};
use crate::progress::human_size;
use crate::request::ComposeRequest;
use crate::scan::{self, PathFilter, ScanOptions};
use crate::spool::Spool;
use crate::store::Store;
use crate::transport::{self, ImageRef};
use crate::triton::{self, Component};

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
    /// For `--slim` when full was built FROM min: min read whole, for the
    /// cut only (the plan's new layers stay those of a plain compose).
    pub slim_min: Option<scan::ScannedImage>,
    /// For the SBOM when full was built FROM min: min's small files (its
    /// packages and distributions), read while full's own layers are. The
    /// plan does not see this scan.
    pub sbom_min: Option<scan::ScannedImage>,
}

impl Scans {
    /// The scans of the images a plan copies from, for [`crate::execute::Execution`].
    pub(crate) fn by_origin(&self) -> std::collections::HashMap<Origin, &scan::ScannedImage> {
        [
            (Origin::Full, Some(&self.full)),
            (Origin::GpuMin, self.gpu_min.as_ref()),
        ]
        .into_iter()
        .filter_map(|(origin, scan)| scan.map(|s| (origin, s)))
        .collect()
    }
}

/// min, full and gpu-min (when the request needs it), opened.
pub(crate) struct Opened {
    pub min: Box<dyn ImageSource>,
    pub full: Box<dyn ImageSource>,
    pub gpu_min: Option<Box<dyn ImageSource>>,
}

/// Opens min, full and gpu-min (when needed), of `transport`'s platform.
/// Images in the local engine are exported together, so layers they share
/// are read once.
pub(crate) fn open_images(
    request: &ComposeRequest,
    transport: &transport::Options,
) -> Result<Opened> {
    let labelled: Vec<(&str, &ImageRef)> = [
        ("--image min", Some(&request.min)),
        ("--image full", Some(&request.full)),
        ("--image gpu-min", request.gpu_min.as_ref()),
    ]
    .into_iter()
    .filter_map(|(label, r)| r.map(|r| (label, r)))
    .collect();
    let opened = transport::open_sources(&labelled, transport)?;
    let mut opened = opened.into_iter();
    let (Some(min), Some(full)) = (opened.next(), opened.next()) else {
        unreachable!("min and full are always opened");
    };
    Ok(Opened {
        min,
        full,
        gpu_min: opened.next(),
    })
}

/// How a run prepares its sources.
pub(crate) struct Preparation<'a> {
    /// Where images are read from, and of which platform.
    pub transport: &'a transport::Options,
    /// Where the scratch directory goes.
    pub work_dir: &'a Path,
    /// Targets share layers: through a store, a temporary one without one.
    pub shared: bool,
    /// Spool what the plan may copy; without, each layer reads what it
    /// needs when it is built.
    pub spool: bool,
    /// Index min's small files for the SBOM when the plan does not read min.
    pub sbom: bool,
}

/// The sources of a run, opened and scanned once, and what targets share.
pub(crate) struct Prepared {
    pub store: Option<Store>,
    pub min: Box<dyn ImageSource>,
    pub full: Box<dyn ImageSource>,
    pub gpu_min: Option<Box<dyn ImageSource>>,
    pub scans: Scans,
    pub spools: Spools,
    /// Runtime-dependency content kept across composes (serve's).
    pub kept: Option<crate::execute::Kept>,
    // Last: removed after everything that may hold files in it.
    pub scratch: tempfile::TempDir,
}

impl Prepared {
    /// Opens and scans the sources `request` names.
    pub(crate) fn new(request: &ComposeRequest, how: &Preparation<'_>) -> Result<Prepared> {
        let store = open_store(request)?;
        let opened = open_images(request, how.transport)?;
        // Before any layer is read.
        if request.platform_given {
            let sources = [
                ("min", Some(opened.min.as_ref())),
                ("full", Some(opened.full.as_ref())),
                ("gpu-min", opened.gpu_min.as_deref()),
            ];
            check_platform(&sources, &how.transport.platform)?;
        }
        Prepared::scan(request, store, opened, how)
    }

    /// Scans sources already opened, with the request's store (if any).
    pub(crate) fn scan(
        request: &ComposeRequest,
        store: Option<Store>,
        opened: Opened,
        how: &Preparation<'_>,
    ) -> Result<Prepared> {
        let scratch = tempfile::Builder::new()
            .prefix(&crate::scratch::prefix("work"))
            .tempdir_in(how.work_dir)
            .ctx(|| format!("creating a scratch directory in {}", how.work_dir.display()))?;
        // Variants share layers through a store: a temporary one without one.
        let store = match store {
            None if how.shared => Some(Store::open(&scratch.path().join("store"), u64::MAX)?),
            other => other,
        };
        let Opened { min, full, gpu_min } = opened;
        let full = with_local_components(request, full, scratch.path())?;
        let images = Images {
            min: min.as_ref(),
            full: full.as_ref(),
            gpu_min: gpu_min.as_deref(),
        };
        let wanted = Wanted {
            components: &request.components,
            enable_gpu: request.enable_gpu,
            spool: how.spool,
            slim: request.slim.is_some() || request.estargz(),
            sbom: how.sbom,
        };
        let scanning = crate::progress::phase("scan");
        let (scans, spools) = scan_images(&wanted, &images, store.as_ref(), scratch.path())?;
        drop(scanning);
        check_local_components(request, full.as_ref(), &scans.full)?;
        Ok(Prepared {
            store,
            min,
            full,
            gpu_min,
            scans,
            spools,
            kept: None,
            scratch,
        })
    }

    pub(crate) fn images(&self) -> Images<'_> {
        Images {
            min: self.min.as_ref(),
            full: self.full.as_ref(),
            gpu_min: self.gpu_min.as_deref(),
        }
    }

    /// The components full offers, by kind and name.
    pub(crate) fn offered(&self) -> Vec<Component> {
        triton::ComponentKind::ALL
            .into_iter()
            .flat_map(|kind| {
                triton::offered(&self.scans.full.tree, kind)
                    .into_iter()
                    .filter_map(move |name| Component::new(kind, &name).ok())
            })
            .collect()
    }

    /// Evicts past the store's bound, when the store is the user's.
    /// Returns the bytes evicted.
    pub(crate) fn prune(&self, request: &ComposeRequest) -> u64 {
        let Some(store) = request.store.as_ref().and(self.store.as_ref()) else {
            return 0;
        };
        let freed = store.prune(None);
        if freed > 0 {
            tracing::info!(
                "store: evicted {} of least recently used entries",
                human_size(freed)
            );
        }
        freed
    }
}

/// The request's store, unless `--no-store`.
pub(crate) fn open_store(request: &ComposeRequest) -> Result<Option<Store>> {
    request
        .store
        .as_ref()
        .map(|s| Store::open(&s.dir, s.max_size))
        .transpose()
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

/// The name under which the store keeps indexes made with [`index_keep`]
/// and [`index_elf`]; for min, with `index_keep` only. Bumped when what
/// they keep changes (-9: dpkg's md5sums, for `--distroless`).
const INDEX_KIND: &str = "compose-9";
const MIN_INDEX_KIND: &str = "keep-9";
/// min's index for `--slim` and for the SBOM: the same small files, and
/// every ELF file's facts and digests.
const ELF_INDEX_KIND: &str = "elf-9";

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

/// What the scans are for: the components whose content may be copied
/// (their subtrees and the CUDA libraries they need from gpu-min), and
/// whether to spool that content now.
pub(crate) struct Wanted<'a> {
    pub components: &'a [Component],
    pub enable_gpu: bool,
    pub spool: bool,
    /// `--slim`: min is read whole, with every ELF file's facts.
    pub slim: bool,
    /// An SBOM is written: min's packages are read even when full was built
    /// FROM min.
    pub sbom: bool,
}

/// Scans min, full and gpu-min (in parallel), spooling the content the
/// plan may copy: full's candidate subtrees and gpu-min's CUDA libraries.
pub(crate) fn scan_images(
    wanted: &Wanted<'_>,
    images: &Images<'_>,
    store: Option<&Store>,
    scratch: &Path,
) -> Result<(Scans, Spools)> {
    let mut full_spool = Spool::create(scratch)?;
    let roots = plan::candidate_roots(wanted.components);
    let in_roots = |p: &ImagePath| roots.iter().any(|r| p.is_within(r));
    let filters = Filters {
        spool: wanted.spool.then_some(&in_roots as PathFilter<'_>),
        store,
        slim: wanted.slim,
        sbom: wanted.sbom,
    };
    let cuda_names = cuda_names(wanted, images.full);
    let cuda_file = |p: &ImagePath| cuda_names.iter().any(|n| p.file_name().starts_with(n));
    let mut gpu_min_spool = images.gpu_min.map(|_| Spool::create(scratch)).transpose()?;

    let (scans, gpu_min_scan) = std::thread::scope(|scope| {
        let gpu_min_job = images
            .gpu_min
            .zip(gpu_min_spool.as_mut())
            .map(|(source, spool)| {
                let spool = wanted
                    .spool
                    .then_some((&cuda_file as PathFilter<'_>, spool));
                scope.spawn(move || {
                    scan::scan(
                        source,
                        "gpu-min",
                        ScanOptions {
                            spool,
                            keep: Some(&index_keep),
                            listed: Some(&deps::lists),
                            elf: Some(&index_elf),
                            store: store.map(|s| (s, INDEX_KIND)),
                            access: true,
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
    let (min_scan, full_scan, aside) = scans?;
    let (slim_min, sbom_min) = if wanted.slim {
        (aside, None)
    } else {
        (None, aside)
    };
    let mut spools = Spools::from([(Origin::Full, full_spool)]);
    spools.extend(gpu_min_spool.map(|spool| (Origin::GpuMin, spool)));
    Ok((
        Scans {
            min: min_scan,
            full: full_scan,
            gpu_min: gpu_min_scan?,
            slim_min,
            sbom_min,
        },
        spools,
    ))
}

/// gpu-min's files are found by name: the copies' sources, and the
/// versioned files their symlinks lead to (libcudart.so.12.4.127).
fn cuda_names(wanted: &Wanted<'_>, full: &dyn ImageSource) -> Vec<Vec<u8>> {
    let architecture = full
        .image()
        .config
        .get("architecture")
        .and_then(|a| a.as_str());
    triton::gpu_min_copies(
        wanted.components,
        wanted.enable_gpu,
        architecture.unwrap_or("amd64"),
    )
    .iter()
    .map(|c| c.from.file_name().to_vec())
    .collect()
}

/// How the scans of min and full spool and use the store.
struct Filters<'a> {
    /// full's files to spool; `None` when nothing is spooled.
    spool: Option<PathFilter<'a>>,
    store: Option<&'a Store>,
    /// Read min whole, for `--slim`.
    slim: bool,
    /// Read min's small files for the SBOM.
    sbom: bool,
}

/// Scans min and full, in parallel; when full was built FROM min, only
/// full's own layers, and min not at all unless its account files are
/// needed (`None` then), or `--slim` or the SBOM reads it (the third scan,
/// which the plan does not see). min is read while full is, not after.
fn scan_min_and_full(
    min: &dyn ImageSource,
    full: &dyn ImageSource,
    filters: &Filters<'_>,
    spool: &mut Spool,
) -> Result<MinAndFull> {
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
        listed: Some(&deps::lists),
        elf: Some(&index_elf),
        // What full's layers lend is hashed as the new layers are written.
        digests: false,
        store: filters.store.map(|s| (s, INDEX_KIND)),
        access: true,
    };
    let base = is_base_of(min, full);
    if base {
        tracing::info!(
            "{} is the base of {}: only full's own layers are read",
            min.name(),
            full.name()
        );
    }
    let read_min = !base || filters.slim || filters.sbom;
    let (min_scan, full_scan) = std::thread::scope(|scope| {
        let min_job = read_min
            .then(|| scope.spawn(|| scan_min(min, filters.store, filters.slim || filters.sbom)));
        let full_scan = scan::scan(full, "full", full_options);
        let min_scan = min_job.map(|job| {
            job.join()
                .unwrap_or_else(|_| Err(Error::new("the min scan panicked")))
        });
        (min_scan.transpose(), full_scan)
    });
    let (min_scan, full_scan) = (min_scan?, full_scan?);
    if !base {
        return Ok((min_scan, full_scan, None));
    }
    // full FROM min: the plan reads min only for its account files.
    if plan::needs_min_accounts(&full_scan) {
        tracing::info!("full's own layers lack /etc/passwd or /etc/group: reading min for them");
        let min_scan = match min_scan {
            Some(scan) => scan,
            None => scan_min(min, filters.store, false)?,
        };
        return Ok((Some(min_scan), full_scan, None));
    }
    Ok((None, full_scan, min_scan))
}

/// min's scan for the plan (if it reads min), full's, and min's for
/// `--slim` or the SBOM alone.
type MinAndFull = (
    Option<scan::ScannedImage>,
    scan::ScannedImage,
    Option<scan::ScannedImage>,
);

/// min's small files (its account files, packages and distributions);
/// for `--slim`, every ELF file's facts too.
fn scan_min(
    min: &dyn ImageSource,
    store: Option<&Store>,
    every_elf: bool,
) -> Result<scan::ScannedImage> {
    let every = |_: &ImagePath| true;
    let (elf, kind) = if every_elf {
        (Some(&every as PathFilter<'_>), ELF_INDEX_KIND)
    } else {
        (None, MIN_INDEX_KIND)
    };
    scan::scan(
        min,
        "min",
        ScanOptions {
            keep: Some(&index_keep),
            listed: Some(&deps::lists),
            elf,
            digests: every_elf,
            store: store.map(|s| (s, kind)),
            ..Default::default()
        },
    )
}

/// True when min's layers are full's first layers (full was built FROM min).
fn is_base_of(min: &dyn ImageSource, full: &dyn ImageSource) -> bool {
    let (min, full) = (&min.image().layers, &full.image().layers);
    min.len() <= full.len() && min.iter().zip(full).all(|(m, f)| m.diff_id == f.diff_id)
}
