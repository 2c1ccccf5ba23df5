//! min's layers written again: what `--slim` cuts out of each.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// What `--slim` plans from.
pub(super) struct SlimSources<'a> {
    pub(super) min: &'a MinInput<'a>,
    pub(super) full: &'a PlanInput<'a>,
    pub(super) gpu_min: Option<&'a PlanInput<'a>>,
    pub(super) components: &'a [Component],
    pub(super) enable_gpu: bool,
    pub(super) architecture: &'a str,
}

impl SlimSources<'_> {
    /// Analyses the composed image ([`crate::slim::analyse`]), takes the
    /// removed packages out of the status file the new layers write, and
    /// says which of min's layers lose what.
    pub(super) fn slim(
        &self,
        options: Option<&SlimOptions>,
        layers: &mut [LayerPlan],
        config: &Value,
        deps: &mut Option<Deps>,
    ) -> Result<(Option<Slim>, Vec<MinFilter>)> {
        let Some(options) = options else {
            return Ok((None, Vec::new()));
        };
        let min: &ScannedImage = match (&self.min.view, self.min.slim_scan) {
            (_, Some(scan)) => scan,
            (MinView::Scanned(scan), None) => scan,
            (MinView::BaseOfFull, None) => {
                return Err(Error::new("internal error: --slim needs min's scan"))
            }
        };
        let elf_of = |content: &Content| -> Option<crate::elf::ElfInfo> {
            match content {
                Content::Full(inode) => self.full.scan.elf.get(inode).cloned(),
                Content::GpuMin(inode) => self.gpu_min?.scan.elf.get(inode).cloned(),
                _ => None,
            }
        };
        let added = layers
            .iter()
            .flat_map(|l| &l.entries)
            .map(|e| (e.path.clone(), (e.meta.clone(), elf_of(&e.content))))
            .collect();
        let entrypoint = config::entrypoint(config)
            .and_then(|e| e.into_iter().next())
            .filter(|e| e.starts_with('/'))
            .map(|e| fsview::normalize(&e));
        let ld_library_path = config::env_var(config, "LD_LIBRARY_PATH");
        let input = SlimInput {
            min,
            full: self.full.scan,
            added,
            ld_library_path: ld_library_path.as_deref(),
            entrypoint,
            components: self.components,
            enable_gpu: self.enable_gpu,
            architecture: self.architecture,
            options,
        };
        let slim = crate::slim::analyse(&input)?;
        if let Some(status) = deps.as_mut().and_then(|d| d.dpkg_status.as_mut()) {
            *status = slim.filter_status(status);
        }
        let status = ImagePath::from_static(deps::dpkg::STATUS);
        for entry in layers.iter_mut().flat_map(|l| &mut l.entries) {
            if let (true, Content::Inline(bytes)) = (entry.path == status, &mut entry.content) {
                *bytes = slim.filter_status(bytes);
                entry.meta.size = bytes.len() as u64;
            }
        }
        let mut filters: BTreeMap<u32, MinFilter> = crate::slim::by_layer(&slim, min)
            .into_iter()
            .map(|(layer, remove)| {
                let filter = MinFilter {
                    layer: layer as usize,
                    remove,
                    replace: BTreeMap::new(),
                };
                (layer, filter)
            })
            .collect();
        if let (Some(text), Some(node)) = (&slim.status, min.tree.get(&status)) {
            let layer = node.inode.layer;
            let filter = filters.entry(layer).or_insert_with(|| MinFilter {
                layer: layer as usize,
                remove: BTreeSet::new(),
                replace: BTreeMap::new(),
            });
            filter.replace.insert(status, text.clone());
        }
        Ok((Some(slim), filters.into_values().collect()))
    }
}
