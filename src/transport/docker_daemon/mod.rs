//! `docker-daemon:NAME[:TAG]`: images in the local Docker engine, reached
//! through its API on a unix socket ([`engine`]), with no `docker` CLI.
//!
//! Reading: the engine gives images out only as a `docker save` stream,
//! whose members come in the order of their names (layers by digest, the
//! manifest last), so no layer can be used while it streams by. The stream
//! is written once to a scratch file and read from there as a
//! docker-archive. The images one compose reads from the engine are
//! exported together, so the layers they share are stored and read once;
//! the layers come uncompressed, so nothing is decompressed.
//!
//! Writing: the image is written as a docker-archive into a scratch file and
//! loaded (`POST /images/load`). Layers of the base image that the engine
//! holds already are left out of that archive, since the engine's load
//! skips a layer whose chain it has without opening its file. An engine that
//! keeps images in containerd's store needs every blob, and gets them all.

pub(crate) mod engine;

use std::collections::HashSet;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tempfile::{TempDir, TempPath};

use super::docker_archive::{DockerArchiveSink, DockerArchiveSource, Pick};
use crate::digest::{CheckpointSlot, Digest};
use crate::error::{Error, IoContext, Result};
use crate::image::{BlobDescriptor, Committed, ImageSink, ImageSource, OutputImage, SourceImage};
use engine::Engine;

const SOURCE_HINT: &str = "start the Docker engine (or point DOCKER_HOST at it), or read the image from elsewhere: a registry reference (without --skip-pull), oci:DIR or docker-archive:FILE";
const SINK_HINT: &str = "start the Docker engine (or point DOCKER_HOST at it), or write the image elsewhere: --output oci:DIR, --output docker-archive:FILE or --output REGISTRY/NAME:TAG";

/// An image of the engine, read from its export.
pub(crate) struct DaemonSource {
    inner: DockerArchiveSource,
    /// The export, removed when the last image read from it is dropped.
    _export: Arc<TempPath>,
}

impl ImageSource for DaemonSource {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn image(&self) -> &SourceImage {
        self.inner.image()
    }

    fn open_layer_checked(
        &self,
        index: usize,
        checkpoints: Option<CheckpointSlot>,
    ) -> Result<Box<dyn Read + Send + '_>> {
        self.inner.open_layer_checked(index, checkpoints)
    }

    fn open_layer_range(
        &self,
        index: usize,
        start: u64,
        len: u64,
    ) -> Result<Option<Box<dyn Read + Send + '_>>> {
        self.inner.open_layer_range(index, start, len)
    }
}

/// Opens images of the local engine, exporting them together into one
/// scratch file in `scratch`. Returns them in the order of `names`.
pub(crate) fn open_sources(names: &[&str], scratch: &Path) -> Result<Vec<DaemonSource>> {
    let engine = Engine::connect().map_err(|e| e.hint(SOURCE_HINT))?;
    let mut ids = Vec::with_capacity(names.len());
    let mut estimate = 0;
    for name in names {
        let inspect = engine.inspect(name)?.ok_or_else(|| {
            Error::new(format!(
                "the local Docker engine ({}) has no image {name}",
                engine.address()
            ))
            .hint(format!(
                "pull or load it first (docker pull {name}), or read it from its registry: drop --skip-pull, or name it without docker-daemon:"
            ))
        })?;
        let id: Digest = inspect
            .get("Id")
            .and_then(Value::as_str)
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| Error::new(format!("the engine's inspect of {name} has no image ID")))?;
        if !ids.contains(&id) {
            estimate += inspect.get("Size").and_then(Value::as_u64).unwrap_or(0);
        }
        ids.push(id);
    }
    let mut unique: Vec<&str> = Vec::new();
    for name in names {
        if !unique.contains(name) {
            unique.push(name);
        }
    }
    tracing::info!(
        "exporting {} from the local Docker engine ({})",
        unique.join(", "),
        engine.address()
    );
    let export = tempfile::Builder::new()
        .prefix(&crate::scratch::prefix("export"))
        .tempfile_in(scratch)
        .ctx(|| format!("creating a scratch file in {}", scratch.display()))?;
    let mut writer = BufWriter::with_capacity(1 << 20, export.as_file());
    let size = engine.export(&unique, estimate, &mut writer)?;
    writer
        .flush()
        .ctx(|| format!("writing the export into {}", scratch.display()))?;
    drop(writer);
    tracing::info!("exported {}", crate::progress::human_size(size));
    let export = Arc::new(export.into_temp_path());
    names
        .iter()
        .zip(&ids)
        .map(|(name, id)| {
            let inner = DockerArchiveSource::open_picked(
                &export,
                Pick::Config(id),
                format!("docker-daemon:{name}"),
            )?;
            Ok(DaemonSource {
                inner,
                _export: Arc::clone(&export),
            })
        })
        .collect()
}

/// Loads the written image into the engine as `reference` (NAME:TAG).
pub(crate) struct DaemonSink {
    engine: Engine,
    reference: String,
    archive: Box<DockerArchiveSink>,
    archive_path: PathBuf,
    _dir: TempDir,
    /// Chains of layers the engine holds; `None` until first asked, and
    /// empty when its load needs every blob.
    held: Option<HashSet<Digest>>,
    left_out: usize,
}

impl DaemonSink {
    pub(crate) fn create(reference: &str, scratch: &Path) -> Result<DaemonSink> {
        let engine = Engine::connect().map_err(|e| e.hint(SINK_HINT))?;
        let dir = tempfile::Builder::new()
            .prefix(&crate::scratch::prefix("load"))
            .tempdir_in(scratch)
            .ctx(|| format!("creating a scratch directory in {}", scratch.display()))?;
        let archive_path = dir.path().join("image.tar");
        let archive = DockerArchiveSink::create(
            &archive_path,
            reference,
            format!("docker-daemon:{reference}"),
        )?;
        Ok(DaemonSink {
            engine,
            reference: reference.to_string(),
            archive: Box::new(archive),
            archive_path,
            _dir: dir,
            held: None,
            left_out: 0,
        })
    }

    fn held_chains(&mut self) -> Result<&HashSet<Digest>> {
        if self.held.is_none() {
            let held = if self.engine.uses_containerd_store()? {
                tracing::debug!("the engine uses containerd's image store: every layer is sent");
                HashSet::new()
            } else {
                self.engine.chain_ids()?
            };
            self.held = Some(held);
        }
        Ok(self.held.as_ref().expect("just set"))
    }
}

impl ImageSink for DaemonSink {
    fn name(&self) -> &str {
        self.archive.name()
    }

    fn put_blob(
        &mut self,
        media_type: &str,
        expected: Option<&Digest>,
        content: &mut dyn Read,
    ) -> Result<BlobDescriptor> {
        self.archive.put_blob(media_type, expected, content)
    }

    fn put_blob_file(&mut self, desc: &BlobDescriptor, path: &Path) -> Result<()> {
        self.archive.put_blob_file(desc, path)
    }

    fn holds_layers(&mut self, diff_ids: &[Digest]) -> Result<bool> {
        let Some(chain) = engine::chain_ids(diff_ids).pop() else {
            return Ok(false);
        };
        let held = self.held_chains()?.contains(&chain);
        self.left_out += usize::from(held);
        Ok(held)
    }

    fn commit(self: Box<Self>, image: &OutputImage) -> Result<Committed> {
        let DaemonSink {
            engine,
            reference,
            archive,
            archive_path,
            _dir,
            left_out,
            ..
        } = *self;
        let archived = archive.commit(image)?;
        tracing::info!("loading {reference} into the local Docker engine");
        let messages = engine
            .load(&archive_path)
            .map_err(|e| e.context(format!("loading {reference}")))?;
        for message in &messages {
            tracing::debug!("engine: {message}");
        }
        let loaded = engine.inspect(&reference)?.ok_or_else(|| {
            Error::new(format!(
                "the Docker engine took the image but has no {reference} afterwards"
            ))
        })?;
        let id = loaded.get("Id").and_then(Value::as_str).unwrap_or("?");
        let tags: Vec<&str> = loaded
            .get("RepoTags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let description = format!(
            "loaded into the local Docker engine ({}) as {}, image ID {id}{}",
            engine.address(),
            tags.join(", "),
            if left_out > 0 {
                format!(" ({left_out} base layers it held were not sent)")
            } else {
                String::new()
            }
        );
        Ok(Committed {
            digest: archived.digest,
            description,
        })
    }
}
