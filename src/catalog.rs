//! `triton-compose catalog REF`: what a full image offers and what each
//! part costs. The core and every backend, repository agent and cache are
//! planned and built as a compose would build them (through the store, so
//! a later compose reuses them and a later catalog is instant), which gives
//! their size as written; the dependency closure of each says what it would
//! bring. With `--min`, dependencies are those min lacks; without, the
//! image is its own base and none are counted.

use serde::Serialize;

use crate::compose::{self, Images, Scans};
use crate::error::{Error, Result};
use crate::execute::{Execution, Spools};
use crate::image::ImageSource;
use crate::request::ComposeRequest;
use crate::store::Store;
use crate::triton::{self, Component, ComponentKind};

#[derive(Debug, Serialize)]
pub struct CatalogEntry {
    /// `core`, `backend`, `repoagent` or `cache`.
    pub kind: &'static str,
    pub name: String,
    /// Bytes of content (files) it holds.
    pub size: u64,
    /// Its layer as a compose writes it (compressed).
    pub compressed_size: u64,
    /// Paths (and `package NAME`s) the dependency closure would bring for it.
    pub deps: Vec<String>,
    /// The dependency layer it alone would get (compressed).
    pub deps_size: u64,
}

#[derive(Debug, Serialize)]
pub struct Catalog {
    pub image: String,
    pub triton_version: String,
    pub gpu: bool,
    pub platforms: Vec<String>,
    pub components: Vec<CatalogEntry>,
    /// full's layers as stored (compressed).
    pub full_size: u64,
    /// With a selection: the composed image (min's layers when min is known,
    /// the core, the selected components and their dependencies) against full.
    pub selection: Option<Selection>,
}

#[derive(Debug, Serialize)]
pub struct Selection {
    pub components: Vec<String>,
    pub compressed_size: u64,
    pub saved: u64,
}

fn kind_name(kind: ComponentKind) -> &'static str {
    match kind {
        ComponentKind::Backend => "backend",
        ComponentKind::RepoAgent => "repoagent",
        ComponentKind::Cache => "cache",
    }
}

/// A min that is nothing: full's config, no layers. Without a min, full is
/// read whole and no dependency is counted.
struct NoMin {
    image: crate::image::SourceImage,
}

impl ImageSource for NoMin {
    fn name(&self) -> &str {
        "(no min image)"
    }

    fn image(&self) -> &crate::image::SourceImage {
        &self.image
    }

    fn open_layer(&self, _index: usize) -> Result<Box<dyn std::io::Read + Send + '_>> {
        Err(Error::new("internal error: the empty min has no layers"))
    }
}

/// Reads `request.full` (and min, unless `no_min`) once and catalogues it;
/// `request`'s components, if any, are the selection whose savings are shown.
pub fn catalog(request: &ComposeRequest, no_min: bool) -> Result<Catalog> {
    std::fs::create_dir_all(&request.work_dir).map_err(|e| {
        Error::new(format!("creating {}", request.work_dir.display())).with_source(e)
    })?;
    let (min, full, gpu_min) = compose::open_images(request)?;
    let mut request = request.clone();
    let min: Box<dyn ImageSource> = if no_min {
        request.deps = false;
        let mut config = full.image().config.clone();
        config["rootfs"]["diff_ids"] = serde_json::json!([]);
        Box::new(NoMin {
            image: crate::image::SourceImage {
                config,
                layers: Vec::new(),
                id: None,
            },
        })
    } else {
        min
    };
    let request = &request;
    let scratch = tempfile::Builder::new()
        .prefix(&crate::scratch::prefix("catalog"))
        .tempdir_in(&request.work_dir)
        .map_err(|e| Error::new("cannot create a scratch directory").with_source(e))?;
    let store = match &request.store {
        Some(s) => Store::open(&s.dir, s.max_size)?,
        None => Store::open(&scratch.path().join("store"), u64::MAX)?,
    };
    let images = Images {
        min: min.as_ref(),
        full: full.as_ref(),
        gpu_min: gpu_min.as_deref(),
    };
    // Nothing is spooled: what each layer needs is read when it is built.
    let mut scanning = request.clone();
    scanning.dry_run = true;
    let (scans, spools) = compose::scan_images(&scanning, &images, Some(&store), scratch.path())?;
    let info = triton::BuildInfo::from_full_config(&full.image().config, full.name())?;
    let cost = |components: &[Component]| {
        costs(
            request,
            &images,
            &scans,
            &spools,
            &store,
            scratch.path(),
            components,
        )
    };
    let mut entries = Vec::new();
    let mut core = None;
    for kind in ComponentKind::ALL {
        for name in triton::offered(&scans.full.tree, kind) {
            let component = Component::new(kind, &name)?;
            let costs = match cost(std::slice::from_ref(&component)) {
                Ok(costs) => costs,
                Err(err) => {
                    tracing::warn!("{} {name}: {err}", kind.noun());
                    continue;
                }
            };
            core.get_or_insert(costs.core);
            entries.push(CatalogEntry {
                kind: kind_name(kind),
                name,
                size: costs.component.0,
                compressed_size: costs.component.1,
                deps: costs.deps,
                deps_size: costs.deps_size,
            });
        }
    }
    let core = match core {
        Some(core) => core,
        None => cost(&[])?.core,
    };
    entries.insert(
        0,
        CatalogEntry {
            kind: "core",
            name: "core".into(),
            size: core.0,
            compressed_size: core.1,
            deps: Vec::new(),
            deps_size: 0,
        },
    );
    let full_size: u64 = full
        .image()
        .layers
        .iter()
        .filter_map(|l| l.blob.as_ref().map(|b| b.1))
        .sum();
    let selection = if request.components.is_empty() {
        None
    } else {
        let costs = cost(&request.components)?;
        // The composed image: min's layers and the new ones.
        let min_size: u64 = if no_min {
            0
        } else {
            images
                .min
                .image()
                .layers
                .iter()
                .filter_map(|l| l.blob.as_ref().map(|b| b.1))
                .sum()
        };
        let size = costs.total + min_size;
        Some(Selection {
            components: request
                .components
                .iter()
                .map(|c| format!("{} {}", kind_name(c.kind), c.name))
                .collect(),
            compressed_size: size,
            saved: full_size.saturating_sub(size),
        })
    };
    let config = &full.image().config;
    let platform = |key: &str| {
        config
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string()
    };
    Ok(Catalog {
        image: full.name().to_string(),
        triton_version: info.version.clone(),
        gpu: info.gpu_enabled,
        platforms: vec![format!("{}/{}", platform("os"), platform("architecture"))],
        components: entries,
        full_size,
        selection,
    })
}

/// What composing `components` would write.
struct Costs {
    /// (content size, compressed size) of the core layer.
    core: (u64, u64),
    /// The same for the one component asked about.
    component: (u64, u64),
    deps: Vec<String>,
    deps_size: u64,
    /// Every new layer.
    total: u64,
}

fn costs(
    request: &ComposeRequest,
    images: &Images<'_>,
    scans: &Scans,
    spools: &Spools,
    store: &Store,
    scratch: &std::path::Path,
    components: &[Component],
) -> Result<Costs> {
    let mut one = request.clone();
    one.components = components.to_vec();
    let plan = compose::plan_compose(&one, images, scans)?;
    let reports = Execution {
        plan: &plan,
        min: images.min,
        full: images.full,
        gpu_min: images.gpu_min,
        compression: request.compression,
        scratch,
        store: Some(store),
        scans: scans.by_origin(),
    }
    .build_only(spools)?;
    let layer = |purpose: &str| -> (u64, u64) {
        plan.layers
            .iter()
            .zip(&reports)
            .find(|(l, _)| l.purpose == purpose)
            .map(|(l, r)| (l.entries.iter().map(|e| e.meta.size).sum(), r.size))
            .unwrap_or((0, 0))
    };
    let component = components
        .first()
        .map(|c| layer(&format!("{} {}", c.kind.noun(), c.name)))
        .unwrap_or((0, 0));
    let mut deps: Vec<String> = plan
        .deps
        .as_ref()
        .map(|d| d.paths.iter().map(|p| p.display_abs()).collect())
        .unwrap_or_default();
    if let Some(d) = &plan.deps {
        deps.extend(d.packages.iter().map(|p| format!("package {p}")));
    }
    Ok(Costs {
        core: layer("Triton core"),
        component,
        deps,
        deps_size: layer("runtime dependencies").1,
        total: reports.iter().map(|r| r.size).sum(),
    })
}

impl Catalog {
    /// A table with a bar of each part's size as written.
    pub fn table(&self) -> String {
        let size = crate::progress::human_size;
        let widest = self
            .components
            .iter()
            .map(|c| c.compressed_size + c.deps_size)
            .max()
            .unwrap_or(1)
            .max(1);
        let mut out = format!(
            "{}: Triton {}, {}, {}\n{:<10} {:<22} {:>11} {:>11} {:>11}\n",
            self.image,
            self.triton_version,
            if self.gpu { "GPU" } else { "CPU only" },
            self.platforms.join(", "),
            "kind",
            "name",
            "size",
            "written",
            "+deps"
        );
        for c in &self.components {
            let bar = "#".repeat(((c.compressed_size + c.deps_size) * 30 / widest) as usize);
            out.push_str(&format!(
                "{:<10} {:<22} {:>11} {:>11} {:>11}  {bar}\n",
                c.kind,
                c.name,
                size(c.size),
                size(c.compressed_size),
                size(c.deps_size)
            ));
        }
        out.push_str(&format!("full image: {}\n", size(self.full_size)));
        if let Some(s) = &self.selection {
            out.push_str(&format!(
                "selection ({}): an image of {}, {} less than full\n",
                s.components.join(", "),
                size(s.compressed_size),
                size(s.saved)
            ));
        }
        out
    }
}
