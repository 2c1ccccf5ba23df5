//! One min/full pair, opened and scanned once, composing any selection on
//! demand into an OCI layout (`triton-compose serve`).

use std::path::Path;

use crate::digest::Digest;
use crate::error::{IoContext, Result};
use crate::execute::LayerReport;
use crate::image::Committed;
use crate::request::ComposeRequest;
use crate::transport::{self, ImageRef};
use crate::triton;

use super::sources::{Preparation, Prepared};
use super::target::Target;
use super::workdir;

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
        let prepared = Prepared::new(
            base,
            &Preparation {
                transport: &base.transport,
                work_dir: &base.work_dir,
                shared: true,
                spool: false,
                sbom: base.sbom && !base.dry_run,
            },
        )?;
        Ok(Session {
            prepared,
            base: base.clone(),
        })
    }

    /// The components full offers, by kind and name.
    pub(crate) fn offered(&self) -> Vec<triton::Component> {
        self.prepared.offered()
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
