//! `triton-compose catalog REF`: what a full image offers and what each
//! part costs. The core and every backend, repository agent and cache are
//! planned and built as a compose would build them (through the store, so
//! a later compose reuses them and a later catalog is instant), which gives
//! their size as written; the dependency closure of each says what it would
//! bring. With `--min`, dependencies are those min lacks; without, the
//! image is its own base and none are counted.

use serde::Serialize;

use crate::compose::{self, Preparation, Prepared};
use crate::error::{Error, Result};
use crate::image::ImageSource;
use crate::plan::LayerRole;
use crate::request::ComposeRequest;
use crate::transport::ImageRef;
use crate::triton::{self, Component};

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
    /// An image it needs that the catalog was not given (`gpu-min`: CPU-only
    /// pytorch and tensorflow take CUDA libraries from it); its written
    /// sizes are then unknown (0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<&'static str>,
    /// Why it could not be costed (its written sizes are then 0): a compose
    /// of it would fail the same way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    /// As composed (with `--slim`, slimmed).
    pub compressed_size: u64,
    pub saved: u64,
    /// With `--slim`: what it removes from min (uncompressed bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slim_removed: Option<u64>,
}

/// A min that is nothing: full's config, no layers. Without a min, full is
/// read whole and no dependency is counted.
struct NoMin {
    image: crate::image::SourceImage,
}

impl NoMin {
    fn of(full: &dyn ImageSource) -> NoMin {
        let mut config = full.image().config.clone();
        config["rootfs"]["diff_ids"] = serde_json::json!([]);
        NoMin {
            image: crate::image::SourceImage {
                config,
                layers: Vec::new(),
                id: None,
            },
        }
    }
}

impl ImageSource for NoMin {
    fn name(&self) -> &str {
        "(no min image)"
    }

    fn image(&self) -> &crate::image::SourceImage {
        &self.image
    }

    fn open_layer_checked(
        &self,
        _index: usize,
        _checkpoints: Option<crate::digest::CheckpointSlot>,
    ) -> Result<Box<dyn std::io::Read + Send + '_>> {
        Err(Error::new("internal error: the empty min has no layers"))
    }
}

/// What a catalog reads besides full.
#[derive(Default)]
pub struct CatalogOptions {
    /// No min image: full is its own base and no dependency is counted.
    pub no_min: bool,
    /// The GPU min image, for CPU-only pytorch and tensorflow.
    pub gpu_min: Option<ImageRef>,
}

/// Reads `request.full` (and min, unless `no_min`) once and catalogues it;
/// `request`'s components, if any, are the selection whose savings are shown.
pub fn catalog(request: &ComposeRequest, options: &CatalogOptions) -> Result<Catalog> {
    std::fs::create_dir_all(&request.work_dir).map_err(|e| {
        Error::new(format!("creating {}", request.work_dir.display())).with_source(e)
    })?;
    if request.slim.is_some() && (options.no_min || request.components.is_empty()) {
        return Err(Error::new("catalog --slim sizes a selection cut from min")
            .hint("give --min REF and a selection (--backend, --repoagent, --cache)"));
    }
    let slim_request = &ComposeRequest {
        deps: request.deps && !options.no_min,
        gpu_min: options.gpu_min.clone().or_else(|| request.gpu_min.clone()),
        ..request.clone()
    };
    // Each part is costed as a plain compose writes it; only the
    // selection is slimmed.
    let request = &ComposeRequest {
        slim: None,
        ..slim_request.clone()
    };
    let store = compose::open_store(request)?;
    let mut opened = compose::open_images(request, &request.transport)?;
    if options.no_min {
        opened.min = Box::new(NoMin::of(opened.full.as_ref()));
    }
    // Nothing is spooled: what each layer needs is read when it is built.
    let prepared = Prepared::scan(
        slim_request,
        store,
        opened,
        &Preparation {
            transport: &request.transport,
            work_dir: &request.work_dir,
            shared: true,
            spool: false,
            sbom: false,
        },
    )?;
    let full = prepared.full.as_ref();
    let info = triton::BuildInfo::from_full_config(&full.image().config, full.name())?;
    let mut entries = component_entries(request, &prepared)?;
    let core = match entries.iter().find_map(|(_, core)| *core) {
        Some(core) => core,
        None => costs(request, &prepared, &[])?.core,
    };
    let mut components = vec![CatalogEntry {
        kind: "core",
        name: "core".into(),
        size: core.0,
        compressed_size: core.1,
        deps: Vec::new(),
        deps_size: 0,
        needs: None,
        error: None,
    }];
    components.extend(entries.drain(..).map(|(entry, _)| entry));
    let full_size = compose::stored_size(full);
    let selection = selection(slim_request, &prepared, options.no_min, full_size)?;
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
        components,
        full_size,
        selection,
    })
}

/// A row for every component full offers, each with the core's costs
/// where they were computed.
#[allow(clippy::type_complexity)]
fn component_entries(
    request: &ComposeRequest,
    prepared: &Prepared,
) -> Result<Vec<(CatalogEntry, Option<(u64, u64)>)>> {
    let mut entries = Vec::new();
    for component in prepared.offered() {
        let (kind, name) = (component.kind, component.name.clone());
        let needs_gpu_min =
            triton::needs_gpu_min(std::slice::from_ref(&component), request.enable_gpu)
                && prepared.gpu_min.is_none();
        if needs_gpu_min {
            let entry = CatalogEntry {
                needs: Some("gpu-min"),
                ..uncosted(prepared, &component)
            };
            entries.push((entry, None));
            continue;
        }
        let costs = match costs(request, prepared, std::slice::from_ref(&component)) {
            Ok(costs) => costs,
            Err(err) => {
                tracing::warn!("{} {name}: {err}", kind.noun());
                let entry = CatalogEntry {
                    error: Some(err.to_string()),
                    ..uncosted(prepared, &component)
                };
                entries.push((entry, None));
                continue;
            }
        };
        entries.push((
            CatalogEntry {
                kind: kind.name(),
                name,
                size: costs.component.0,
                compressed_size: costs.component.1,
                deps: costs.deps,
                deps_size: costs.deps_size,
                needs: None,
                error: None,
            },
            Some(costs.core),
        ));
    }
    Ok(entries)
}

/// A component's row before (or without) its costs: what its files take.
fn uncosted(prepared: &Prepared, component: &Component) -> CatalogEntry {
    CatalogEntry {
        kind: component.kind.name(),
        name: component.name.clone(),
        size: prepared.content_size(component),
        compressed_size: 0,
        deps: Vec::new(),
        deps_size: 0,
        needs: None,
        error: None,
    }
}

/// The composed image of the request's selection against full.
fn selection(
    request: &ComposeRequest,
    prepared: &Prepared,
    no_min: bool,
    full_size: u64,
) -> Result<Option<Selection>> {
    if request.components.is_empty() {
        return Ok(None);
    }
    let costs = costs(request, prepared, &request.components)?;
    // The composed image: min's layers and the new ones.
    let min_size = if no_min {
        0
    } else {
        compose::stored_size(prepared.min.as_ref())
    };
    // min's layers that --slim cuts count as written.
    let min_layers = &prepared.min.image().layers;
    let cut: u64 = costs
        .slimmed
        .iter()
        .filter_map(|(i, _)| min_layers.get(*i)?.blob.as_ref().map(|b| b.1))
        .sum();
    let slimmed: u64 = costs.slimmed.iter().map(|(_, size)| size).sum();
    let size = costs.total + min_size.saturating_sub(cut) + slimmed;
    Ok(Some(Selection {
        slim_removed: costs.slim_removed,
        components: request
            .components
            .iter()
            .map(|c| format!("{} {}", c.kind.name(), c.name))
            .collect(),
        compressed_size: size,
        saved: full_size.saturating_sub(size),
    }))
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
    /// min's layers `--slim` cuts: index and size as written.
    slimmed: Vec<(usize, u64)>,
    /// What `--slim` removes (uncompressed), when asked.
    slim_removed: Option<u64>,
}

fn costs(request: &ComposeRequest, prepared: &Prepared, components: &[Component]) -> Result<Costs> {
    let parts = prepared.build_parts(request, components, None)?;
    let slimmed = prepared.execution(request, &parts.plan).rewritten_sizes()?;
    let component = components
        .first()
        .map(|c| parts.sizes(&LayerRole::Component(c.clone())))
        .unwrap_or((0, 0));
    let plan = &parts.plan;
    let mut deps: Vec<String> = plan
        .deps
        .as_ref()
        .map(|d| d.paths.iter().map(|p| p.display_abs()).collect())
        .unwrap_or_default();
    if let Some(d) = &plan.deps {
        deps.extend(d.packages.iter().map(|p| format!("package {p}")));
    }
    Ok(Costs {
        core: parts.sizes(&LayerRole::Core),
        component,
        deps,
        deps_size: parts.sizes(&LayerRole::RuntimeDependencies).1,
        total: parts.reports.iter().map(|r| r.size).sum(),
        slimmed,
        slim_removed: plan.slim.as_ref().map(|s| s.size()),
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
            let note = match (&c.error, c.needs) {
                (Some(error), _) => Some(format!("cannot be composed: {error}")),
                (None, Some(needs)) => {
                    Some(format!("needs {needs}: catalog it with --{needs} REF"))
                }
                (None, None) => None,
            };
            if let Some(note) = note {
                out.push_str(&format!(
                    "{:<10} {:<22} {:>11} {:>11} {:>11}  {note}\n",
                    c.kind,
                    c.name,
                    size(c.size),
                    "?",
                    "?"
                ));
                continue;
            }
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
            if let Some(removed) = s.slim_removed {
                out.push_str(&format!(
                    "  with --slim: {} of min removed (uncompressed)\n",
                    size(removed)
                ));
            }
        }
        out
    }
}
