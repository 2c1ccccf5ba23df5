//! What an image is to the rest of the program, whatever transport it came
//! from or goes to: a config (kept as raw JSON so unknown fields survive), a
//! list of layers, and two traits: [`ImageSource`] to read one and
//! [`ImageSink`] to write one.
//!
//! Transports (`crate::transport::*`) implement these traits; nothing outside
//! a transport knows how its bytes are stored.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

use crate::digest::{CheckpointSlot, Digest};
use crate::error::{Error, IoContext, Result};

pub(crate) mod media_type {
    pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// The empty config of OCI 1.1 artifacts: the two bytes `{}`.
    pub(crate) const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    pub(crate) const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub(crate) const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub(crate) const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub(crate) const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub(crate) const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub(crate) const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub(crate) const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

    /// The OCI media type for a layer blob, whatever vocabulary it was
    /// described in. The blob's bytes (and so its digest) do not change.
    pub(crate) fn to_oci_layer(media_type: &str) -> &str {
        match media_type {
            DOCKER_LAYER_GZIP => OCI_LAYER_GZIP,
            DOCKER_LAYER => OCI_LAYER,
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            }
            other => other,
        }
    }

    /// The media type of a layer compressed with `compression`.
    pub(crate) fn of_layer(compression: crate::layer::Compression) -> &'static str {
        match compression {
            crate::layer::Compression::Gzip { .. } | crate::layer::Compression::Estargz { .. } => {
                OCI_LAYER_GZIP
            }
            crate::layer::Compression::Zstd { .. } => OCI_LAYER_ZSTD,
        }
    }
}

/// Where some bytes are and what they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BlobDescriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// The descriptor's annotations (an eStargz layer's TOC digest).
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// One layer of a source image.
#[derive(Clone, Debug)]
pub struct SourceLayer {
    /// Media type of the blob as stored (compressed or not).
    pub media_type: String,
    /// Digest and size of the blob as stored, when the transport knows them
    /// without reading it (legacy `docker save` archives do not).
    pub blob: Option<(Digest, u64)>,
    /// Digest of the uncompressed tar, from the config's `rootfs.diff_ids`.
    pub diff_id: Digest,
}

/// A resolved image: its config and its layers, bottom first.
#[derive(Clone, Debug)]
pub struct SourceImage {
    pub config: Value,
    pub layers: Vec<SourceLayer>,
    /// What names this image exactly: its manifest's digest (registries,
    /// OCI layouts), else its config's (the image ID of docker archives
    /// and the engine).
    pub id: Option<Digest>,
}

impl SourceImage {
    /// A layer's blob (digest and size), when `len` bytes from `start`
    /// lie within it; `None` when the blob is unknown or too short.
    pub fn blob_holding(&self, index: usize, start: u64, len: u64) -> Option<(Digest, u64)> {
        self.layers[index]
            .blob
            .clone()
            .filter(|(_, size)| range_within(start, len, *size))
    }

    /// Pairs manifest layers with the config's diff_ids, refusing images
    /// whose two lists disagree.
    pub fn new(config: Value, layers: Vec<(String, Option<(Digest, u64)>)>) -> Result<Self> {
        let diff_ids = diff_ids(&config)?;
        if diff_ids.len() != layers.len() {
            return Err(Error::new(format!(
                "malformed image: the manifest lists {} layers but the config's rootfs.diff_ids lists {}",
                layers.len(),
                diff_ids.len()
            )));
        }
        let layers = layers
            .into_iter()
            .zip(diff_ids)
            .map(|((media_type, blob), diff_id)| SourceLayer {
                media_type,
                blob,
                diff_id,
            })
            .collect();
        Ok(SourceImage {
            config,
            layers,
            id: None,
        })
    }
}

fn diff_ids(config: &Value) -> Result<Vec<Digest>> {
    let Some(list) = config.pointer("/rootfs/diff_ids").and_then(Value::as_array) else {
        return Err(Error::new("malformed image config: no rootfs.diff_ids"));
    };
    list.iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| Error::new("malformed image config: a diff_id is not a string"))?
                .parse()
        })
        .collect()
}

/// True when `len` bytes from `start` lie within a blob of `size` bytes.
pub(crate) fn range_within(start: u64, len: u64, size: u64) -> bool {
    start.checked_add(len).is_some_and(|end| end <= size)
}

/// Where a registry keeps a source's blobs, so that a destination in the
/// same registry can mount them instead of receiving their bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobOrigin {
    pub registry: String,
    pub repository: String,
}

/// Reads an image. Implemented once per transport.
pub trait ImageSource: Send + Sync {
    /// The reference as the user wrote it, for messages.
    fn name(&self) -> &str;

    fn image(&self) -> &SourceImage;

    /// The layer's bytes as stored (possibly compressed). The stream fails
    /// at its end if the bytes do not match the layer's known digest.
    fn open_layer(&self, index: usize) -> Result<Box<dyn Read + Send + '_>> {
        self.open_layer_checked(index, None)
    }

    /// Like [`ImageSource::open_layer`]; when the blob's digest is known and
    /// checked, its checkpoints go to `checkpoints` once the whole blob was
    /// read and found right (for checking parts of it read later).
    fn open_layer_checked(
        &self,
        index: usize,
        checkpoints: Option<CheckpointSlot>,
    ) -> Result<Box<dyn Read + Send + '_>>;

    /// `len` bytes of the layer's blob as stored, from byte `start`, for
    /// reading single files through access points. Unverified: the caller
    /// checks them against digests it holds. `None` when the transport
    /// cannot read part of a blob (the caller reads it whole).
    fn open_layer_range(
        &self,
        _index: usize,
        _start: u64,
        _len: u64,
    ) -> Result<Option<Box<dyn Read + Send + '_>>> {
        Ok(None)
    }

    /// The local file holding the layer's blob as stored, when there is
    /// one (an OCI layout), for sinks that can link it instead of copying.
    /// Unverified: [`ImageSink::link_blob`] checks it.
    fn layer_file(&self, _index: usize) -> Option<std::path::PathBuf> {
        None
    }

    /// The registry repository the blobs live in, for registry sources.
    fn origin(&self) -> Option<BlobOrigin> {
        None
    }

    /// The blob of the newest artifact of that type that refers to this
    /// image (OCI 1.1 `subject`), where the transport keeps referrers
    /// (registries, OCI layouts); checked against its digest.
    fn referrer(&self, _artifact_type: &str) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
}

/// The image a sink is asked to write.
#[derive(Clone, Debug, Default)]
pub(crate) struct OutputImage {
    /// Canonical JSON of the config.
    pub config: Vec<u8>,
    pub layers: Vec<BlobDescriptor>,
    /// The manifest's annotations.
    pub annotations: std::collections::BTreeMap<String, String>,
    /// Artifacts that refer to the image (its SBOM): sinks that can
    /// ([`ImageSink::commit`]) store each as an OCI 1.1 artifact manifest
    /// whose `subject` is the image.
    pub referrers: Vec<Referrer>,
}

/// An artifact about an image: one blob, typed.
#[derive(Clone, Debug)]
pub(crate) struct Referrer {
    /// The artifact manifest's `artifactType` (and its blob's media type).
    pub artifact_type: String,
    /// The blob's file name (`org.opencontainers.image.title`, which
    /// `oras pull` writes it as).
    pub title: String,
    pub data: Vec<u8>,
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// What a sink's commit wrote.
#[derive(Clone, Debug)]
pub(crate) struct Committed {
    /// The digest of the manifest written (of the index, for several
    /// platforms; for the local engine, of the manifest in the archive it
    /// loaded).
    pub digest: Digest,
    /// One line for people: where, and what.
    pub description: String,
}

/// Writes an image. Implemented once per transport. Nothing a sink writes is
/// visible at its destination until [`ImageSink::commit`] succeeds.
pub(crate) trait ImageSink {
    fn name(&self) -> &str;

    /// Stores a blob, hashing it on the way; fails if `expected` is given and
    /// does not match.
    fn put_blob(
        &mut self,
        media_type: &str,
        expected: Option<&Digest>,
        content: &mut dyn Read,
    ) -> Result<BlobDescriptor>;

    /// Stores a blob that already sits in a local file with a known digest.
    /// Sinks that can take the file over (by renaming it) override this.
    fn put_blob_file(&mut self, desc: &BlobDescriptor, path: &Path) -> Result<()> {
        let mut file =
            std::fs::File::open(path).ctx(|| format!("opening staged layer {}", path.display()))?;
        let stored = self.put_blob(&desc.media_type, Some(&desc.digest), &mut file)?;
        debug_assert_eq!(stored.size, desc.size);
        Ok(())
    }

    /// Gets a blob to the destination without its bytes passing through
    /// here, if it can: already present, or mounted from `origin`. `false`
    /// means it must be put.
    fn reuse_blob(&mut self, _desc: &BlobDescriptor, _origin: Option<&BlobOrigin>) -> Result<bool> {
        Ok(false)
    }

    /// Gets a blob to the destination as a hard link to `file`, which
    /// holds its bytes, if the destination is a local directory that can
    /// (the same filesystem). The bytes are checked against `desc` through
    /// the link before it is kept. `false` means it must be put.
    fn link_blob(&mut self, _desc: &BlobDescriptor, _file: &Path) -> Result<bool> {
        Ok(false)
    }

    /// Gets a blob to the destination from `file`, which the caller
    /// checked holds exactly `desc`'s bytes (a source's blob it hashed
    /// before, unchanged since): linked or copied without hashing it
    /// again, where the destination can. `false` means it must be put.
    fn put_checked_copy(&mut self, _desc: &BlobDescriptor, _file: &Path) -> Result<bool> {
        Ok(false)
    }

    /// True when the destination holds the bottom layers with these
    /// diff-ids already, as one stack, so that the last of them need not be
    /// written (it is still listed in the manifest). Only the local Docker
    /// engine, whose load skips layers it has, says yes.
    fn holds_layers(&mut self, _diff_ids: &[Digest]) -> Result<bool> {
        Ok(false)
    }

    /// Writes config and manifest and makes the image visible.
    fn commit(self: Box<Self>, image: &OutputImage) -> Result<Committed>;

    /// Like [`ImageSink::commit`], for one image per platform (whose
    /// layers were put already), under one image index.
    fn commit_index(self: Box<Self>, _images: &[(Platform, OutputImage)]) -> Result<Committed> {
        Err(Error::new(format!(
            "{} holds one image, not a multi-platform index",
            self.name()
        ))
        .hint("write several platforms to oci:DIR[:TAG] or a registry, or pass one --platform"))
    }
}

/// Serializes JSON canonically: sorted keys (serde_json's default map is a
/// BTreeMap), no insignificant whitespace.
pub(crate) fn canonical_json(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("a serde_json::Value always serializes")
}

/// An image's platform, in OCI's vocabulary (`linux/arm64/v8`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this machine, in OCI's vocabulary.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    pub(crate) fn matches(&self, wanted: &Platform) -> bool {
        self.os == wanted.os
            && self.architecture == wanted.architecture
            && (wanted.variant.is_none() || self.variant == wanted.variant)
    }

    /// The platform an image config says it is of.
    pub fn of_config(config: &Value) -> Platform {
        let field = |k: &str| config.get(k).and_then(Value::as_str).map(str::to_string);
        Platform {
            os: field("os").unwrap_or_else(|| "linux".into()),
            architecture: field("architecture").unwrap_or_default(),
            variant: field("variant"),
        }
    }

    /// True when an image of this platform (from its config, which often
    /// leaves the variant out) serves `wanted`.
    pub fn serves(&self, wanted: &Platform) -> bool {
        self.os == wanted.os
            && self.architecture == wanted.architecture
            && (wanted.variant.is_none()
                || self.variant.is_none()
                || self.variant == wanted.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}
