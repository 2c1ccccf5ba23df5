//! One min/full pair, opened and scanned once, composing any selection on
//! demand into an OCI layout (`triton-compose serve`).

use std::path::Path;

use crate::digest::Digest;
use crate::error::{IoContext, Result};
use crate::execute::{GiveWay, LayerReport};
use crate::image::Committed;
use crate::request::ComposeRequest;
use crate::transport::{self, ImageRef};
use crate::triton;

use super::parts::Parts;
use super::sources::{Preparation, Prepared};
use super::target::Target;
use super::workdir;

/// The most bytes of runtime-dependency content a session keeps on disk
/// for the combinations it composes (a quarter of the store's bound when
/// that is less).
const KEPT_MAX: u64 = 2 << 30;

/// What a session serves from, for people.
pub(crate) struct About {
    pub min: String,
    pub full: String,
    /// Triton's version as full's config says (empty when it does not).
    pub triton_version: String,
    /// full's layers as stored (compressed).
    pub full_size: u64,
    /// min's layers as stored (compressed), in order.
    pub min_layers: Vec<u64>,
}

/// The same pipeline as a compose, with nothing spooled up front (each
/// layer reads what it needs, and the store keeps what was built).
pub(crate) struct Session {
    prepared: Prepared,
    base: ComposeRequest,
}

impl Session {
    /// `base` names the images, the store and the work directory; its
    /// components and output are ignored.
    pub(crate) fn open(base: &ComposeRequest) -> Result<Session> {
        workdir::prepare(&base.work_dir, &base.output, base.store.as_ref())?;
        let mut prepared = Prepared::new(
            base,
            &Preparation {
                transport: &base.transport,
                work_dir: &base.work_dir,
                shared: true,
                spool: false,
                sbom: base.sbom && !base.dry_run,
            },
        )?;
        // Each combination's dependency layer then only compresses.
        let bound = (prepared.store.as_ref()).map_or(u64::MAX, |s| s.max_size() / 4);
        prepared.kept = Some(crate::execute::Kept::new(
            prepared.scratch.path(),
            bound.min(KEPT_MAX),
        ));
        Ok(Session {
            prepared,
            base: base.clone(),
        })
    }

    /// The components full offers, by kind and name.
    pub(crate) fn offered(&self) -> Vec<triton::Component> {
        self.prepared.offered()
    }

    pub(crate) fn about(&self) -> About {
        let full = self.prepared.full.as_ref();
        let min = self.prepared.min.as_ref();
        About {
            min: self.base.min.to_string(),
            full: self.base.full.to_string(),
            triton_version: triton::BuildInfo::from_full_config(&full.image().config, full.name())
                .map(|info| info.version)
                .unwrap_or_default(),
            full_size: super::stored_size(full),
            min_layers: (min.image().layers.iter())
                .map(|l| l.blob.as_ref().map_or(0, |b| b.1))
                .collect(),
        }
    }

    /// The bytes of content a component holds in full.
    pub(crate) fn content_size(&self, component: &triton::Component) -> u64 {
        self.prepared.content_size(component)
    }

    /// True when composing `component` needs a gpu-min image serve was
    /// not given.
    pub(crate) fn lacks_gpu_min(&self, component: &triton::Component) -> bool {
        self.prepared.gpu_min.is_none()
            && triton::needs_gpu_min(std::slice::from_ref(component), self.base.enable_gpu)
    }

    /// The store's bytes and bound.
    pub(crate) fn store_usage(&self) -> Option<(u64, u64)> {
        let store = self.prepared.store.as_ref()?;
        Some((store.usage().total, store.max_size()))
    }

    /// Builds the new layers of `components` (the core's alone when
    /// empty), their runtime dependencies' included, into the store, as a
    /// compose of them would; stops when `give_way` says so. Returns them,
    /// and the bytes the store evicted afterwards to stay under its bound.
    pub(crate) fn prebuild(
        &self,
        components: &[triton::Component],
        give_way: GiveWay<'_>,
    ) -> Result<(Parts, u64)> {
        let parts = self
            .prepared
            .build_parts(&self.base, components, Some(give_way))?;
        Ok((parts, self.prepared.prune(&self.base)))
    }

    /// min's and full's digests (or image IDs).
    pub(crate) fn ids(&self) -> (Option<Digest>, Option<Digest>) {
        (
            self.prepared.min.image().id.clone(),
            self.prepared.full.image().id.clone(),
        )
    }

    /// Composes `components` into the OCI layout `dir` under `tag`;
    /// returns what was committed and the new layers (taken from the store
    /// or built).
    pub(crate) fn compose(
        &self,
        components: &[triton::Component],
        dir: &Path,
        tag: &str,
    ) -> Result<(Committed, Vec<LayerReport>)> {
        let target = Target {
            name: Some(tag.to_string()),
            components: components.to_vec(),
            local: self.base.local.clone(),
            output: ImageRef::Oci {
                dir: dir.to_path_buf(),
                tag: Some(tag.to_string()),
            },
            output_name: tag.to_string(),
            // Each selection's Dockerfile.compose and SBOM in a directory of its own.
            work_dir: self.base.work_dir.join("selections").join(tag),
        };
        std::fs::create_dir_all(&target.work_dir)
            .ctx(|| format!("creating {}", target.work_dir.display()))?;
        let mut sink = transport::open_sink(&target.output, tag, &self.base.transport)?;
        let written = self
            .prepared
            .write_target(&self.base, &target, Some(sink.as_mut()))?;
        let built = written.built.expect("a sink was given");
        let committed = sink.commit(&built.image)?;
        self.prepared.prune(&self.base);
        Ok((committed, built.reports))
    }
}
