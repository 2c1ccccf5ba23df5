//! `docker://REF` and bare references: images in an OCI/Docker registry.
//!
//! Reading resolves tags to manifests (choosing a platform from an index),
//! checks every manifest, config and layer against its digest and size, and
//! streams layers with resumable downloads. Writing skips blobs the
//! destination has, mounts blobs across repositories of the same registry
//! (cancelling the upload session when the registry declines with 202), and
//! uploads the rest as sized streams before putting the manifest.

mod auth;
mod client;
mod reference;
pub(crate) mod referrers;

use std::collections::VecDeque;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};

pub use reference::Reference;

use self::client::{Payload, RegistryClient, Request};
use crate::digest::{CheckpointSlot, Digest, HashingWriter, VerifyingReader};
use crate::error::{Error, IoContext, Result};
use crate::image::Platform;
use crate::image::{
    media_type, BlobDescriptor, BlobOrigin, Committed, ImageSink, ImageSource, OutputImage,
    SourceImage,
};
use crate::manifest::{self, Document, MAX_DOCUMENT_SIZE};

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// How to reach registries.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// `HOST[:PORT]` of registries that may be spoken to over plain HTTP.
    pub insecure: Vec<String>,
    pub authfile: Option<std::path::PathBuf>,
    /// CA certificates (`*.crt`) to trust besides the system's.
    pub cert_dir: Option<std::path::PathBuf>,
}

fn connect(reference: &Reference, options: &RegistryOptions) -> Result<RegistryClient> {
    let named_insecure = options.insecure.iter().any(|h| h == &reference.registry);
    RegistryClient::connect(
        &reference.registry,
        reference.api_host(),
        reference.is_local(),
        named_insecure,
        options.authfile.as_deref(),
        options.cert_dir.as_deref(),
    )
}

pub(crate) struct RegistrySource {
    name: String,
    reference: Reference,
    client: RegistryClient,
    image: SourceImage,
}

impl RegistrySource {
    pub(crate) fn open(
        reference: &Reference,
        platform: &Platform,
        options: &RegistryOptions,
    ) -> Result<Self> {
        let name = reference.to_string();
        let client = connect(reference, options)?;
        let repo = &reference.repository;
        let (mut bytes, mut digest) =
            fetch_manifest(&client, repo, &reference.manifest_reference(), None)
                .map_err(|e| e.context(&name))?;
        if let Some(wanted) = &reference.digest {
            if &digest != wanted {
                return Err(Error::new(format!(
                    "{name}: the registry sent a manifest with digest {digest}"
                ))
                .hint("the registry or a proxy altered the manifest; nothing was used"));
            }
        }
        let mut expected = String::new();
        for _ in 0..4 {
            let what = format!("manifest {digest}");
            match manifest::parse_document_as(&bytes, &what, &expected)? {
                Document::Index { manifests } => {
                    let chosen = manifest::select_platform(&manifests, platform, &name)?.clone();
                    (bytes, digest) =
                        fetch_manifest(&client, repo, chosen.digest.as_str(), Some(&chosen))?;
                    expected = chosen.media_type;
                }
                Document::Manifest { config, layers } => {
                    let config_bytes = read_document_blob(&client, repo, &config)?;
                    let config: serde_json::Value = serde_json::from_slice(&config_bytes)
                        .ctx(|| format!("{name}: the image config is not valid JSON"))?;
                    let layers = layers
                        .into_iter()
                        .map(|l| (l.media_type, Some((l.digest, l.size))))
                        .collect();
                    let mut image =
                        SourceImage::new(config, layers).map_err(|e| e.context(&name))?;
                    image.id = Some(digest.clone());
                    tracing::debug!("{name}: manifest {digest}");
                    return Ok(RegistrySource {
                        name,
                        reference: reference.clone(),
                        client,
                        image,
                    });
                }
            }
        }
        Err(Error::new(format!("{name}: indexes nested too deeply")))
    }
}

/// The platforms of the index a reference names (`None`: one image).
pub(crate) fn platforms(
    reference: &Reference,
    options: &RegistryOptions,
) -> Result<Option<Vec<Platform>>> {
    let client = connect(reference, options)?;
    let (bytes, digest) = fetch_manifest(
        &client,
        &reference.repository,
        &reference.manifest_reference(),
        None,
    )?;
    match manifest::parse_document_as(&bytes, &format!("manifest {digest}"), "")? {
        Document::Index { manifests } => Ok(Some(
            manifests
                .iter()
                .filter(|d| d.artifact_type.is_none())
                .filter_map(|d| d.platform.clone())
                .collect(),
        )),
        Document::Manifest { .. } => Ok(None),
    }
}

/// Fetches a manifest or index; checks it against `expected` when known.
fn fetch_manifest(
    client: &RegistryClient,
    repo: &str,
    reference: &str,
    expected: Option<&manifest::Descriptor>,
) -> Result<(Vec<u8>, Digest)> {
    if let Some(d) = expected {
        if d.size > MAX_DOCUMENT_SIZE {
            return Err(Error::new(format!(
                "manifest {} claims {} bytes; refusing",
                d.digest, d.size
            )));
        }
    }
    let request = Request::new(
        Method::GET,
        repo,
        format!("/v2/{repo}/manifests/{reference}"),
        "pull",
    )
    .header(ACCEPT.as_str(), MANIFEST_ACCEPT);
    let response = client.send(&request).map_err(|e| {
        if e.kind() == crate::error::Kind::NotFound {
            e.hint("check the repository and tag; `skopeo list-tags docker://REPO` lists the tags")
        } else {
            e
        }
    })?;
    let header_digest = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    let mut bytes = Vec::new();
    response
        .take(MAX_DOCUMENT_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::new("cannot read a manifest").with_source(e))?;
    if bytes.len() as u64 > MAX_DOCUMENT_SIZE {
        return Err(Error::new(format!(
            "manifest {reference} is larger than {MAX_DOCUMENT_SIZE} bytes"
        )));
    }
    let digest = Digest::of(&bytes);
    if let Some(d) = expected {
        if d.size != bytes.len() as u64 || d.digest != digest {
            return Err(Error::new(format!(
                "manifest {} does not match its descriptor (got {} bytes, digest {digest})",
                d.digest,
                bytes.len()
            ))
            .hint("the registry or a proxy altered it; nothing was used"));
        }
    }
    if let Some(claimed) = header_digest {
        if claimed != digest {
            return Err(Error::new(format!(
                "manifest {reference}: the registry says digest {claimed}, the bytes hash to {digest}"
            ))
            .hint("the registry or a proxy altered it; nothing was used"));
        }
    }
    Ok((bytes, digest))
}

fn read_document_blob(
    client: &RegistryClient,
    repo: &str,
    desc: &manifest::Descriptor,
) -> Result<Vec<u8>> {
    if desc.size > MAX_DOCUMENT_SIZE {
        return Err(Error::new(format!(
            "config {} claims {} bytes; refusing",
            desc.digest, desc.size
        )));
    }
    let reader = client.blob_reader(repo, desc.digest.as_str(), desc.size)?;
    let mut verified = VerifyingReader::new(
        reader,
        desc.digest.clone(),
        Some(desc.size),
        format!("config {}", desc.digest),
    );
    let mut bytes = Vec::with_capacity(desc.size as usize);
    verified.read_to_end(&mut bytes)?;
    Ok(bytes)
}

impl ImageSource for RegistrySource {
    fn referrer(&self, artifact_type: &str) -> Result<Option<Vec<u8>>> {
        let Some(subject) = &self.image.id else {
            return Ok(None);
        };
        referrers::find(
            &self.client,
            &self.reference.repository,
            subject,
            artifact_type,
        )
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn image(&self) -> &SourceImage {
        &self.image
    }

    fn open_layer_checked(
        &self,
        index: usize,
        checkpoints: Option<CheckpointSlot>,
    ) -> Result<Box<dyn Read + Send + '_>> {
        let (digest, size) = self.image.layers[index]
            .blob
            .clone()
            .expect("registry manifests always describe their blobs");
        let reader = self
            .client
            .blob_reader(&self.reference.repository, digest.as_str(), size)?;
        let reader = crate::progress::track(
            reader,
            size,
            format!("{}: pulling layer {}", self.name, index + 1),
        );
        Ok(Box::new(super::verified_layer(
            reader,
            &self.name,
            index,
            (&digest, size),
            checkpoints,
        )))
    }

    fn open_layer_range(
        &self,
        index: usize,
        start: u64,
        len: u64,
    ) -> Result<Option<Box<dyn Read + Send + '_>>> {
        let Some((digest, _)) = self.image.blob_holding(index, start, len) else {
            return Ok(None);
        };
        self.client
            .blob_range(&self.reference.repository, digest.as_str(), start, len)
            .map(Some)
    }

    fn origin(&self) -> Option<BlobOrigin> {
        Some(BlobOrigin {
            registry: self.reference.registry.clone(),
            repository: self.reference.repository.clone(),
        })
    }
}

/// At most this many blob uploads run at once.
const PARALLEL_UPLOADS: usize = 3;

/// Pushes an image: blobs go up as they come, a few at a time, and the
/// manifest last, only once every blob is there.
pub(crate) struct RegistrySink {
    name: String,
    reference: Reference,
    client: Arc<RegistryClient>,
    /// Where blobs wait for their upload; made beside the first staged layer
    /// (so taking it over is a rename) or in the temporary directory.
    scratch: Option<tempfile::TempDir>,
    uploads: VecDeque<JoinHandle<Result<()>>>,
}

impl RegistrySink {
    pub(crate) fn create(reference: &Reference, options: &RegistryOptions) -> Result<Self> {
        if reference.tag.is_none() {
            return Err(
                Error::new(format!("cannot push to {reference}: a tag is needed"))
                    .hint("write the destination as REGISTRY/REPOSITORY:TAG"),
            );
        }
        let client = connect(reference, options)?;
        Ok(RegistrySink {
            name: reference.to_string(),
            reference: reference.clone(),
            client: Arc::new(client),
            scratch: None,
            uploads: VecDeque::new(),
        })
    }

    fn repo(&self) -> &str {
        &self.reference.repository
    }

    fn scratch(&mut self, near: Option<&Path>) -> Result<&Path> {
        if self.scratch.is_none() {
            let mut builder = tempfile::Builder::new();
            let prefix = crate::scratch::prefix("push");
            builder.prefix(&prefix);
            let dir = match near {
                Some(dir) => builder.tempdir_in(dir),
                None => builder.tempdir(),
            }
            .map_err(|e| Error::new("cannot create a staging directory").with_source(e))?;
            self.scratch = Some(dir);
        }
        Ok(self.scratch.as_ref().expect("just made").path())
    }

    /// Starts an upload in the background, waiting first if too many run.
    fn spawn_upload(&mut self, digest: Digest, path: PathBuf, size: u64) -> Result<()> {
        while self.uploads.len() >= PARALLEL_UPLOADS {
            join(self.uploads.pop_front().expect("non-empty"))?;
        }
        let (client, repo, name) = (
            self.client.clone(),
            self.repo().to_string(),
            self.name.clone(),
        );
        self.uploads.push_back(std::thread::spawn(move || {
            upload(&client, &repo, &name, &digest, Payload::File(path, size))
        }));
        Ok(())
    }

    fn finish_uploads(&mut self) -> Result<()> {
        let mut first_error = None;
        while let Some(handle) = self.uploads.pop_front() {
            if let Err(err) = join(handle) {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn join(handle: JoinHandle<Result<()>>) -> Result<()> {
    handle
        .join()
        .unwrap_or_else(|_| Err(Error::new("an upload thread panicked")))
}

fn blob_exists(client: &RegistryClient, repo: &str, digest: &Digest) -> Result<bool> {
    let request = Request::new(
        Method::HEAD,
        repo,
        format!("/v2/{repo}/blobs/{digest}"),
        "pull,push",
    );
    match client.send(&request) {
        Ok(response) => Ok(response.status() == StatusCode::OK),
        Err(e) if e.kind() == crate::error::Kind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Uploads a blob (a monolithic PUT of a sized stream) unless the registry
/// has it; a failed upload starts over, at most three times.
fn upload(
    client: &RegistryClient,
    repo: &str,
    name: &str,
    digest: &Digest,
    payload: Payload,
) -> Result<()> {
    if blob_exists(client, repo, digest)? {
        tracing::info!("{name}: blob {digest} already present");
        return Ok(());
    }
    let mut last = None;
    for attempt in 1..=3 {
        match upload_once(client, repo, name, digest, payload.clone()) {
            Ok(()) => return Ok(()),
            Err(err) => {
                tracing::warn!("{name}: uploading {digest} failed ({err}); try {attempt}/3");
                last = Some(err);
            }
        }
    }
    Err(last.expect("at least one try"))
}

fn upload_once(
    client: &RegistryClient,
    repo: &str,
    name: &str,
    digest: &Digest,
    payload: Payload,
) -> Result<()> {
    let start = Request::new(
        Method::POST,
        repo,
        format!("/v2/{repo}/blobs/uploads/"),
        "pull,push",
    )
    .header("content-length", "0");
    let response = client.send(&start)?;
    let location = upload_location(&response, name)?;
    let separator = if location.contains('?') { '&' } else { '?' };
    let payload = match payload {
        Payload::File(path, size) => {
            Payload::Tracked(path, size, format!("{name}: pushing {digest}"))
        }
        other => other,
    };
    let put = Request::new(
        Method::PUT,
        repo,
        format!("{location}{separator}digest={digest}"),
        "pull,push",
    )
    .header(CONTENT_TYPE.as_str(), "application/octet-stream")
    .payload(payload);
    let response = client.send(&put)?;
    if response.status() != StatusCode::CREATED {
        return Err(Error::new(format!(
            "{name}: uploading {digest} ended with HTTP {}",
            response.status().as_u16()
        )));
    }
    Ok(())
}

fn upload_location(response: &reqwest::blocking::Response, name: &str) -> Result<String> {
    response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .ok_or_else(|| {
            Error::new(format!(
                "{name}: the registry started an upload without a Location"
            ))
        })
}

impl ImageSink for RegistrySink {
    fn name(&self) -> &str {
        &self.name
    }

    fn put_blob(
        &mut self,
        media_type: &str,
        expected: Option<&Digest>,
        content: &mut dyn Read,
    ) -> Result<BlobDescriptor> {
        // Staged first: an upload that fails part-way must be able to start over.
        let staged = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(self.scratch(None)?)
            .map_err(|e| Error::new("cannot stage a blob").with_source(e))?;
        let mut writer = HashingWriter::new(io::BufWriter::new(staged.reopen()?));
        io::copy(content, &mut writer)?;
        let (buffered, digest, size) = writer.finish();
        buffered
            .into_inner()
            .map_err(|e| Error::new("cannot stage a blob").with_source(e.into_error()))?;
        if let Some(expected) = expected {
            if &digest != expected {
                return Err(Error::new(format!(
                    "blob has digest {digest}, expected {expected}"
                )));
            }
        }
        let (_, path) = staged
            .keep()
            .map_err(|e| Error::new("cannot stage a blob").with_source(e.error))?;
        self.spawn_upload(digest.clone(), path, size)?;
        Ok(BlobDescriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            annotations: Default::default(),
        })
    }

    fn put_blob_file(&mut self, desc: &BlobDescriptor, path: &Path) -> Result<()> {
        // Take the staged layer over, so it outlives the caller's handle.
        let target = self.scratch(path.parent())?.join(desc.digest.hex());
        if std::fs::rename(path, &target).is_err() {
            std::fs::copy(path, &target)
                .ctx(|| format!("staging {} for upload", path.display()))?;
        }
        self.spawn_upload(desc.digest.clone(), target, desc.size)
    }

    fn reuse_blob(&mut self, desc: &BlobDescriptor, origin: Option<&BlobOrigin>) -> Result<bool> {
        if blob_exists(&self.client, self.repo(), &desc.digest)? {
            tracing::info!("{}: blob {} already present", self.name, desc.digest);
            return Ok(true);
        }
        let Some(origin) = origin.filter(|o| o.registry == self.reference.registry) else {
            return Ok(false);
        };
        let mount = Request::new(
            Method::POST,
            self.repo(),
            format!(
                "/v2/{}/blobs/uploads/?mount={}&from={}",
                self.repo(),
                desc.digest,
                origin.repository
            ),
            "pull,push",
        )
        .header("content-length", "0");
        let response = self.client.send(&mount)?;
        match response.status() {
            StatusCode::CREATED => {
                tracing::info!(
                    "{}: mounted {} from {}",
                    self.name,
                    desc.digest,
                    origin.repository
                );
                Ok(true)
            }
            StatusCode::ACCEPTED => {
                // The registry opened an upload instead of mounting: close it.
                let location = upload_location(&response, &self.name)?;
                let cancel = Request::new(Method::DELETE, self.repo(), location, "pull,push");
                if let Err(err) = self.client.send(&cancel) {
                    tracing::debug!("{}: cancelling the upload session failed: {err}", self.name);
                }
                Ok(false)
            }
            other => Err(Error::new(format!(
                "{}: mounting {} gave HTTP {}",
                self.name,
                desc.digest,
                other.as_u16()
            ))),
        }
    }

    fn commit(mut self: Box<Self>, image: &OutputImage) -> Result<Committed> {
        self.finish_uploads()?;
        let tag = self.reference.tag.clone().expect("checked at create");
        let manifest = self.push_image(image, Some(&tag))?;
        Ok(Committed {
            description: format!("pushed {} (manifest {})", self.name, manifest.digest),
            digest: manifest.digest,
        })
    }

    fn commit_index(mut self: Box<Self>, images: &[(Platform, OutputImage)]) -> Result<Committed> {
        self.finish_uploads()?;
        let mut manifests = Vec::new();
        for (platform, image) in images {
            manifests.push((platform.clone(), self.push_image(image, None)?));
        }
        let index = manifest::write_platform_index(&manifests);
        let digest = Digest::of(&index);
        let tag = self.reference.tag.clone().expect("checked at create");
        self.put_manifest(&tag, media_type::OCI_INDEX, index, &digest)?;
        Ok(Committed {
            description: format!("pushed {} (index {digest})", self.name),
            digest,
        })
    }
}

impl RegistrySink {
    /// Puts an image's config, its manifest (under `tag`, else by digest)
    /// and its referrers; returns the manifest's descriptor.
    fn push_image(&mut self, image: &OutputImage, tag: Option<&str>) -> Result<BlobDescriptor> {
        let config = BlobDescriptor {
            media_type: media_type::OCI_CONFIG.to_string(),
            digest: Digest::of(&image.config),
            size: image.config.len() as u64,
            annotations: Default::default(),
        };
        upload(
            &self.client,
            self.repo(),
            &self.name,
            &config.digest,
            Payload::Bytes(image.config.clone()),
        )?;
        let manifest = manifest::write_oci_manifest(&config, &image.layers, &image.annotations)?;
        let subject = BlobDescriptor {
            media_type: media_type::OCI_MANIFEST.to_string(),
            digest: Digest::of(&manifest),
            size: manifest.len() as u64,
            annotations: Default::default(),
        };
        let reference = tag.map_or_else(|| subject.digest.to_string(), str::to_string);
        self.put_manifest(
            &reference,
            media_type::OCI_MANIFEST,
            manifest,
            &subject.digest,
        )?;
        for referrer in &image.referrers {
            referrers::push(&self.client, self.repo(), &self.name, &subject, referrer)?;
        }
        Ok(subject)
    }

    /// PUTs a manifest or index, checking the digest the registry says it
    /// stored it under.
    fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: Vec<u8>,
        digest: &Digest,
    ) -> Result<()> {
        let response =
            referrers::put_manifest(&self.client, self.repo(), reference, media_type, bytes)?;
        if let Some(claimed) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            if claimed != digest.as_str() {
                return Err(Error::new(format!(
                    "{}: the registry stored the manifest as {claimed}, not {digest}",
                    self.name
                )));
            }
        }
        Ok(())
    }
}
