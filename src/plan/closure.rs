//! The runtime dependencies' layer: what the closure finds in full.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// What the dependency closure reads of the sources and the plan so far.
pub(super) struct DepsSources<'a> {
    pub(super) min: &'a MinInput<'a>,
    pub(super) full: &'a PlanInput<'a>,
    pub(super) architecture: &'a str,
    pub(super) components: &'a [Component],
    pub(super) config_changes: &'a [ConfigChange],
}

impl DepsSources<'_> {
    /// Appends gpu-min's layer and, unless `--no-deps` (`resolve` false),
    /// the runtime dependencies' layer; returns the dependencies.
    pub(super) fn add(
        &self,
        builder: &LayerBuilder<'_>,
        resolve: bool,
        layers: &mut Vec<LayerPlan>,
        gpu_min_layer: Option<LayerPlan>,
    ) -> Result<Option<Deps>> {
        if !resolve {
            layers.extend(gpu_min_layer);
            return Ok(None);
        }
        let deps = self.resolve(layers, gpu_min_layer.as_ref());
        layers.extend(gpu_min_layer);
        layers.extend(builder.deps_layer(&deps)?);
        Ok(Some(deps))
    }

    /// The runtime dependencies of what `layers` select, with gpu-min's
    /// copies there already.
    pub(super) fn resolve(&self, layers: &[LayerPlan], gpu_min_layer: Option<&LayerPlan>) -> Deps {
        let mut env = self.min.config.clone();
        for change in self.config_changes {
            config::apply(&mut env, change);
        }
        let selected: BTreeSet<ImagePath> = layers
            .iter()
            .flat_map(|l| &l.entries)
            .map(|e| e.path.clone())
            .collect();
        // What gpu-min brings is there, but is not full's to follow.
        let provided: BTreeMap<ImagePath, EntryMeta> = gpu_min_layer
            .iter()
            .flat_map(|l| &l.entries)
            .map(|e| (e.path.clone(), e.meta.clone()))
            .collect();
        let full = self.full.scan;
        deps::resolve_deps(&DepsInput {
            full,
            min: &self.min.view,
            selected: &selected,
            provided: &provided,
            ld_library_path: config::env_var(&env, "LD_LIBRARY_PATH").as_deref(),
            architecture: self.architecture,
            needs: &triton::runtime_needs(self.components, &full.tree, &full.kept),
        })
    }
}
