//! A selection's new layers built into the store without writing an image:
//! what `catalog` costs each part with, and what `serve` prebuilds.

use crate::error::Result;
use crate::execute::{GiveWay, LayerReport};
use crate::plan::{LayerRole, Plan};
use crate::request::ComposeRequest;
use crate::triton::Component;

use super::sources::Prepared;
use super::target::{plan_compose, Target};

/// The new layers of a selection, built (or found in the store).
pub(crate) struct Parts {
    pub plan: Plan,
    /// One for each of the plan's layers, in its order.
    pub reports: Vec<LayerReport>,
}

impl Parts {
    /// (content bytes, compressed bytes) of every layer with `role` (a
    /// part split by `--max-layer-size` counts whole).
    pub(crate) fn sizes(&self, role: &LayerRole) -> (u64, u64) {
        self.plan
            .layers
            .iter()
            .zip(&self.reports)
            .filter(|(layer, _)| layer.role == *role)
            .fold((0, 0), |(content, written), (layer, report)| {
                (
                    content + layer.entries.iter().map(|e| e.meta.size).sum::<u64>(),
                    written + report.size,
                )
            })
    }

    /// How many of the layers were written now (not found in the store).
    pub(crate) fn built(&self) -> usize {
        self.reports.iter().filter(|r| !r.from_store).count()
    }
}

impl Prepared {
    /// Plans `components` as `request` would compose them and builds their
    /// new layers into the store (the core's alone when `components` is
    /// empty). With `give_way`, stops when it says so.
    pub(crate) fn build_parts(
        &self,
        request: &ComposeRequest,
        components: &[Component],
        give_way: Option<GiveWay<'_>>,
    ) -> Result<Parts> {
        let target = Target {
            components: components.to_vec(),
            local: Vec::new(),
            ..Target::of(request)
        };
        let plan = plan_compose(request, &target, &self.images(), &self.scans, None)?;
        super::target::report(&plan);
        let mut execution = self.execution(request, &plan);
        execution.give_way = give_way;
        let reports = execution.build_only(&self.spools)?;
        Ok(Parts { plan, reports })
    }

    /// The bytes of content under a component's directory in full.
    pub(crate) fn content_size(&self, component: &Component) -> u64 {
        self.scans
            .full
            .tree
            .subtree(&component.path())
            .filter(|(_, node)| node.meta.kind == crate::layer::EntryKind::File)
            .map(|(_, node)| node.meta.size)
            .sum()
    }
}
