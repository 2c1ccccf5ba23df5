//! OCI 1.1 referrers: artifacts (an SBOM) whose manifest names an image as
//! its `subject`.
//!
//! Pushing puts the artifact's blob, the empty config and its manifest (by
//! digest). A registry with the referrers API says so with an `OCI-Subject`
//! header on that PUT and indexes it itself. Otherwise (distribution 2.8) the
//! distribution spec's fallback applies: the tag `sha256-<hex of the
//! subject>` holds an index of the subject's referrers, which is read,
//! extended and put back. Finding reads the referrers API, then the
//! fallback tag.

use std::io::Read;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::client::{Payload, RegistryClient, Request};
use super::{fetch_manifest, upload};
use crate::digest::{Digest, VerifyingReader};
use crate::error::{Error, Kind, Result};
use crate::image::{media_type, BlobDescriptor, Referrer};
use crate::manifest::{self, MAX_DOCUMENT_SIZE};

/// The fallback tag for a subject's referrers.
pub(crate) fn fallback_tag(subject: &Digest) -> String {
    format!("{}-{}", subject.algorithm(), subject.hex())
}

/// PUTs a manifest or index under a tag or digest.
pub(super) fn put_manifest(
    client: &RegistryClient,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: Vec<u8>,
) -> Result<reqwest::blocking::Response> {
    let put = Request::new(
        Method::PUT,
        repo,
        format!("/v2/{repo}/manifests/{reference}"),
        "pull,push",
    )
    .header(CONTENT_TYPE.as_str(), media_type)
    .payload(Payload::Bytes(bytes));
    client.send(&put)
}

/// Pushes `referrer` as an artifact about `subject` (a manifest in `repo`).
pub(crate) fn push(
    client: &RegistryClient,
    repo: &str,
    name: &str,
    subject: &BlobDescriptor,
    referrer: &Referrer,
) -> Result<Digest> {
    let blob = BlobDescriptor {
        media_type: referrer.artifact_type.clone(),
        digest: Digest::of(&referrer.data),
        size: referrer.data.len() as u64,
        annotations: Default::default(),
    };
    upload(
        client,
        repo,
        name,
        &blob.digest,
        Payload::Bytes(referrer.data.clone()),
    )?;
    let empty = manifest::empty_config();
    upload(
        client,
        repo,
        name,
        &empty.digest,
        Payload::Bytes(manifest::EMPTY_CONFIG.to_vec()),
    )?;
    let bytes = manifest::write_artifact_manifest(referrer, &blob, subject);
    let artifact = BlobDescriptor {
        media_type: media_type::OCI_MANIFEST.to_string(),
        digest: Digest::of(&bytes),
        size: bytes.len() as u64,
        annotations: Default::default(),
    };
    let response = put_manifest(
        client,
        repo,
        artifact.digest.as_str(),
        media_type::OCI_MANIFEST,
        bytes,
    )?;
    if response.headers().contains_key("oci-subject") {
        tracing::info!("{name}: {} attached as a referrer", referrer.artifact_type);
        return Ok(artifact.digest);
    }
    // No referrers API: the fallback tag's index, extended.
    let tag = fallback_tag(&subject.digest);
    let mut entries = match fetch_manifest(client, repo, &tag, None) {
        Ok((bytes, _)) => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["manifests"].as_array().cloned())
            .unwrap_or_default(),
        Err(e) if e.kind() == Kind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    entries.retain(|e| e["digest"].as_str() != Some(artifact.digest.as_str()));
    entries.push(manifest::referrer_descriptor(
        &artifact,
        &referrer.artifact_type,
        &referrer.annotations,
    ));
    put_manifest(
        client,
        repo,
        &tag,
        media_type::OCI_INDEX,
        manifest::write_oci_index(&entries),
    )?;
    tracing::info!(
        "{name}: {} attached as a referrer (fallback tag {tag})",
        referrer.artifact_type
    );
    Ok(artifact.digest)
}

/// The descriptors of `subject`'s referrers of that type: from the
/// referrers API, else from the fallback tag.
fn list(
    client: &RegistryClient,
    repo: &str,
    subject: &Digest,
    artifact_type: &str,
) -> Result<Vec<Value>> {
    let request = Request::new(
        Method::GET,
        repo,
        format!("/v2/{repo}/referrers/{subject}"),
        "pull",
    )
    .header(ACCEPT.as_str(), media_type::OCI_INDEX);
    let index = match client.send(&request) {
        Ok(response) if response.status() == StatusCode::OK => read_json(response)?,
        Ok(_) => Value::Null,
        Err(e) if e.kind() == Kind::NotFound => {
            match fetch_manifest(client, repo, &fallback_tag(subject), None) {
                Ok((bytes, _)) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                Err(e) if e.kind() == Kind::NotFound => Value::Null,
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    Ok(index["manifests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d["artifactType"].as_str() == Some(artifact_type))
        .collect())
}

fn read_json(response: reqwest::blocking::Response) -> Result<Value> {
    let mut bytes = Vec::new();
    response
        .take(MAX_DOCUMENT_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::new("cannot read a referrers index").with_source(e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::new("the referrers index is not JSON").with_source(e))
}

/// The blob of the newest referrer of `subject` with that artifact type
/// (by its `org.opencontainers.image.created`, then digest), checked
/// against its digests; `None` when there is none.
pub(crate) fn find(
    client: &RegistryClient,
    repo: &str,
    subject: &Digest,
    artifact_type: &str,
) -> Result<Option<Vec<u8>>> {
    let mut found = list(client, repo, subject, artifact_type)?;
    let key = |d: &Value| {
        (
            d["annotations"][crate::manifest::CREATED_ANNOTATION]
                .as_str()
                .unwrap_or("")
                .to_string(),
            d["digest"].as_str().unwrap_or("").to_string(),
        )
    };
    found.sort_by_key(key);
    let Some(chosen) = found.last() else {
        return Ok(None);
    };
    let descriptor = manifest::parse_descriptor(chosen)?;
    let (bytes, _) = fetch_manifest(client, repo, descriptor.digest.as_str(), Some(&descriptor))?;
    let artifact: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::new("the referrer's manifest is not JSON").with_source(e))?;
    if artifact["subject"]["digest"].as_str() != Some(subject.as_str()) {
        return Err(Error::new(format!(
            "referrer {} does not name {subject} as its subject",
            descriptor.digest
        ))
        .hint("the registry's referrers index is inconsistent; push the SBOM again"));
    }
    let layer = manifest::parse_descriptor(&artifact["layers"][0])?;
    if layer.size > MAX_DOCUMENT_SIZE {
        return Err(Error::new(format!(
            "the referrer's blob claims {} bytes; refusing",
            layer.size
        )));
    }
    let reader = client.blob_reader(repo, layer.digest.as_str(), layer.size)?;
    let mut verified = VerifyingReader::new(
        reader,
        layer.digest.clone(),
        Some(layer.size),
        format!("blob {}", layer.digest),
    );
    let mut data = Vec::new();
    verified.read_to_end(&mut data)?;
    Ok(Some(data))
}
