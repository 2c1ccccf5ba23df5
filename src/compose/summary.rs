//! What a compose tells when it is done: the summary table (and `--json`),
//! and what the dependency closure added and why.

use std::path::PathBuf;

use crate::deps::Deps;
use crate::execute::LayerReport;
use crate::image::{ImageSource, OutputImage};
use crate::plan::Plan;
use crate::progress::human_size;

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
            out.push_str(&row(
                &layer.purpose,
                &layer.entries.to_string(),
                layer.size,
                from_store,
            ));
        }
        out.push_str(&row("new layers", "", self.new_size, ""));
        out.push_str(&row("min's layers, unchanged", "", self.min_size, ""));
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
    let new_size: u64 = reports.iter().map(|r| r.size).sum();
    let min_size = stored_size(images.min);
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
