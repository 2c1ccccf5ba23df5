//! min's layers written again: what `--slim` cuts out of each, and with
//! eStargz every layer, its prefetch first ([`super::prefetch`]).

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// What `--slim` and eStargz's prefetch plan from.
pub(super) struct MinSources<'a> {
    pub(super) min: &'a MinInput<'a>,
    pub(super) full: &'a PlanInput<'a>,
    pub(super) gpu_min: Option<&'a PlanInput<'a>>,
    pub(super) components: &'a [Component],
    pub(super) enable_gpu: bool,
    pub(super) architecture: &'a str,
}

impl MinSources<'_> {
    /// Analyses the composed image: `--slim`'s cut ([`crate::slim::analyse`],
    /// with the removed packages taken out of the status file the new
    /// layers write) and, for eStargz, what the server reads first, put
    /// first in every layer. Says which of min's layers are written again,
    /// and how.
    pub(super) fn rewrite(
        &self,
        options: &PlanOptions<'_>,
        layers: &mut [LayerPlan],
        config: &Value,
        deps: &mut Option<Deps>,
    ) -> Result<(Option<Slim>, Vec<MinRewrite>)> {
        if options.slim.is_none() && !options.estargz {
            return Ok((None, Vec::new()));
        }
        let min: &ScannedImage = match (&self.min.view, self.min.slim_scan) {
            (_, Some(scan)) => scan,
            (MinView::Scanned(scan), None) => scan,
            (MinView::BaseOfFull, None) => {
                return Err(Error::new(
                    "internal error: --slim and eStargz need min's scan",
                ))
            }
        };
        let plain = SlimOptions::default();
        let input = self.input(min, layers, config, options.slim.unwrap_or(&plain));
        let slim = options
            .slim
            .map(|_| crate::slim::analyse(&input))
            .transpose()?;
        let mut rewrites = match &slim {
            Some(slim) => cut(slim, min, layers, deps),
            None => BTreeMap::new(),
        };
        if options.estargz {
            let none = BTreeSet::new();
            let removed = slim.as_ref().map_or(&none, |s| &s.paths);
            let first = crate::slim::first_loads(&input, removed);
            drop(input);
            for layer in layers.iter_mut() {
                prefetch::put_first(layer, &first);
            }
            let count = config::diff_id_count(self.min.config);
            for (index, paths) in prefetch::min_layers(min, layers, &first, count) {
                rewrites
                    .entry(index as u32)
                    .or_insert_with(|| MinRewrite::keeping(index))
                    .prefetch = Some(paths);
            }
        }
        Ok((slim, rewrites.into_values().collect()))
    }

    /// The composed image as the analyses see it: min with the new layers.
    fn input<'a>(
        &'a self,
        min: &'a ScannedImage,
        layers: &[LayerPlan],
        config: &Value,
        options: &'a SlimOptions,
    ) -> SlimInput<'a> {
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
        SlimInput {
            min,
            full: self.full.scan,
            added,
            ld_library_path: config::env_var(config, "LD_LIBRARY_PATH"),
            path: config::env_var(config, "PATH"),
            entrypoint,
            components: self.components,
            enable_gpu: self.enable_gpu,
            architecture: self.architecture,
            options,
        }
    }
}

/// What `--slim` does to the status file the new layers write and to
/// min's layers: which lose what, by layer.
fn cut(
    slim: &Slim,
    min: &ScannedImage,
    layers: &mut [LayerPlan],
    deps: &mut Option<Deps>,
) -> BTreeMap<u32, MinRewrite> {
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
    let mut rewrites: BTreeMap<u32, MinRewrite> = crate::slim::by_layer(slim, min)
        .into_iter()
        .map(|(layer, remove)| {
            let rewrite = MinRewrite {
                remove,
                ..MinRewrite::keeping(layer as usize)
            };
            (layer, rewrite)
        })
        .collect();
    let replaced = (slim.status.iter().map(|text| (&status, text))).chain(&slim.replace);
    for (path, text) in replaced {
        let Some(node) = min.tree.get(path) else {
            continue;
        };
        let layer = node.inode.layer;
        rewrites
            .entry(layer)
            .or_insert_with(|| MinRewrite::keeping(layer as usize))
            .replace
            .insert(path.clone(), text.clone());
    }
    rewrites
}
