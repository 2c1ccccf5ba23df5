//! What a compose tells when it is done: the summary table (and `--json`),
//! and what the dependency closure added and why.

use std::path::PathBuf;

use crate::deps::Deps;
use crate::execute::LayerReport;
use crate::image::{ImageSource, OutputImage};
use crate::plan::{LayerRole, Plan};
use crate::progress::human_size;
use crate::slim::{Removed, RemovedKind, Slim};

use super::sources::Images;

/// What a compose wrote, for people (a table) and scripts (`--json`).
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub output: String,
    pub written: String,
    pub layers: Vec<LayerReport>,
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
    /// What `--slim` removed from min, and why.
    pub slim: Option<SlimSummary>,
}

/// What `--slim` removed from min: each package, distribution and unowned
/// file, with its size (uncompressed), largest first.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SlimSummary {
    pub removed: Vec<Removed>,
    /// Bytes of the files removed (uncompressed).
    pub removed_bytes: u64,
    pub removed_files: usize,
    /// Objects whose load chains were checked after slimming.
    pub objects_checked: usize,
    /// Programs `--distroless` kept, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept_programs: Vec<crate::slim::KeptProgram>,
}

impl SlimSummary {
    pub(crate) fn of(slim: &Slim) -> SlimSummary {
        let mut removed = slim.removed.clone();
        removed.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.name.cmp(&b.name)));
        SlimSummary {
            removed_bytes: slim.size(),
            removed_files: slim.paths.len(),
            objects_checked: slim.checked,
            removed,
            kept_programs: slim.kept_programs.clone(),
        }
    }

    /// The largest removals, one line each, then the totals.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for item in self.removed.iter().take(12) {
            let kind = match item.kind {
                RemovedKind::Package => "package",
                RemovedKind::PythonDist => "python",
                RemovedKind::Library => "library",
                RemovedKind::DanglingLink => "symlink",
                RemovedKind::Dropped => "dropped",
                RemovedKind::Program => "program",
            };
            out.push_str(&format!(
                "  - {kind:<8} {:<50} {:>6} files {:>11}\n",
                item.name,
                item.files,
                human_size(item.size)
            ));
        }
        if self.removed.len() > 12 {
            out.push_str(&format!(
                "  ... and {} more (--json lists them all)\n",
                self.removed.len() - 12
            ));
        }
        out.push_str(&format!(
            "--slim removed {} files, {} uncompressed ({} packages and others); {} objects' loads checked after\n",
            self.removed_files,
            human_size(self.removed_bytes),
            self.removed.iter().filter(|r| r.kind == RemovedKind::Package).count(),
            self.objects_checked
        ));
        for kept in &self.kept_programs {
            out.push_str(&format!(
                "--distroless kept {}: {}
",
                kept.path, kept.why
            ));
        }
        out
    }
}

impl Summary {
    /// A short table: each layer, then the totals against min and full.
    pub fn table(&self) -> String {
        let row = |what: &str, entries: &str, size: u64, after: &str| {
            format!("{what:<44} {entries:>8} {:>11}{after}\n", human_size(size))
        };
        let mut out = format!("{:<44} {:>8} {:>11}\n", "layer", "entries", "size");
        for layer in &self.layers {
            let from_store = if layer.from_store {
                "  (from the store)"
            } else {
                ""
            };
            // A min layer written again counts the paths it lost.
            let entries = match layer.role {
                LayerRole::MinLayer { slimmed: true, .. } => format!("-{}", layer.entries),
                LayerRole::MinLayer { .. } => String::new(),
                _ => layer.entries.to_string(),
            };
            out.push_str(&row(&layer.purpose, &entries, layer.size, from_store));
        }
        out.push_str(&row("new layers", "", self.new_size, ""));
        let min = if self.slim.is_some() {
            "min's layers, slimmed or unchanged"
        } else {
            "min's layers, unchanged"
        };
        out.push_str(&row(min, "", self.min_size, ""));
        let saved = if self.full_size > 0 {
            format!(
                "  ({:.0}% of full's {})",
                100.0 * self.image_size as f64 / self.full_size as f64,
                human_size(self.full_size)
            )
        } else {
            String::new()
        };
        out.push_str(&row("image", "", self.image_size, &saved));
        if let Some(slim) = &self.slim {
            out.push_str(&slim.table());
        }
        if let Some(sbom) = &self.sbom {
            out.push_str(&format!("SBOM (SPDX 2.3): {}\n", sbom.display()));
        }
        out
    }
}

/// The compressed size of an image's layers as its source stores them.
pub(crate) fn stored_size(source: &dyn ImageSource) -> u64 {
    source
        .image()
        .layers
        .iter()
        .filter_map(|l| l.blob.as_ref().map(|b| b.1))
        .sum()
}

/// What one written image is, against its sources.
pub(super) struct Written<'a> {
    pub output: String,
    pub written: String,
    pub plan: &'a Plan,
    pub image: &'a OutputImage,
    pub started: std::time::Instant,
}

pub(super) fn summarize(
    images: &Images<'_>,
    written: Written<'_>,
    reports: Vec<LayerReport>,
    sbom: Option<PathBuf>,
) -> Summary {
    let slimmed = |r: &&LayerReport| matches!(r.role, LayerRole::MinLayer { .. });
    let new_size: u64 = reports.iter().filter(|r| !slimmed(r)).map(|r| r.size).sum();
    // min's stored size, with each slimmed layer counted as written.
    let min_layers = &images.min.image().layers;
    let cut: u64 = reports
        .iter()
        .filter_map(|r| match r.role {
            LayerRole::MinLayer { index, .. } => min_layers.get(index)?.blob.as_ref().map(|b| b.1),
            _ => None,
        })
        .sum();
    let min_size = stored_size(images.min) - cut.min(stored_size(images.min))
        + reports.iter().filter(slimmed).map(|r| r.size).sum::<u64>();
    let plan = written.plan;
    Summary {
        output: written.output,
        written: written.written,
        layers: reports,
        new_size,
        min_size,
        image_size: written
            .image
            .layers
            .iter()
            .map(|l| l.size)
            .sum::<u64>()
            .max(new_size + min_size),
        full_size: stored_size(images.full),
        dependency_paths: plan.deps.as_ref().map_or(0, |d| d.paths.len()),
        dependency_packages: plan
            .deps
            .as_ref()
            .map(|d| d.packages.clone())
            .unwrap_or_default(),
        seconds: written.started.elapsed().as_secs_f64(),
        sbom,
        slim: plan.slim.as_ref().map(SlimSummary::of),
    }
}

/// Says what `--slim` removes (also on a dry run).
pub(super) fn report_slim(slim: &Slim) {
    let summary = SlimSummary::of(slim);
    for line in summary.table().lines() {
        tracing::info!("{}", line.trim_start());
    }
}

/// Says what was added and why, and what no image has.
pub(super) fn report_deps(deps: &Deps) {
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
