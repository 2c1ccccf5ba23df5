//! Reading manifest and index documents (OCI and Docker v2 schema 2), shared
//! by the transports that store them: choosing a manifest from an index by
//! tag or platform, and refusing documents that are ambiguous or oversized.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::{media_type, Platform};

/// Largest manifest, index or config we accept. Real ones are kilobytes;
/// this only stops a hostile file from exhausting memory.
pub(crate) const MAX_DOCUMENT_SIZE: u64 = 16 << 20;

pub(crate) const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// When the image (or an artifact, such as an SBOM) was made.
pub(crate) const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";

/// A descriptor as found in a manifest or index.
#[derive(Clone, Debug)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub platform: Option<Platform>,
    pub ref_name: Option<String>,
    /// Set on the descriptors of OCI 1.1 artifacts (an SBOM), which are
    /// not images.
    pub artifact_type: Option<String>,
}

/// A parsed document: either an image manifest or an index of manifests.
#[derive(Debug)]
pub enum Document {
    Manifest {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    Index {
        manifests: Vec<Descriptor>,
    },
}

pub(crate) fn parse_descriptor(value: &Value) -> Result<Descriptor> {
    let field = |name: &str| value.get(name);
    let media_type = field("mediaType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let digest: Digest = field("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::new("malformed descriptor: no digest"))?
        .parse()?;
    let size = field("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::new(format!("malformed descriptor for {digest}: no size")))?;
    let platform = field("platform").map(|p| Platform {
        os: p.get("os").and_then(Value::as_str).unwrap_or("").into(),
        architecture: p
            .get("architecture")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
        variant: p.get("variant").and_then(Value::as_str).map(Into::into),
    });
    let ref_name = field("annotations")
        .and_then(|a| a.get(REF_NAME_ANNOTATION))
        .and_then(Value::as_str)
        .map(Into::into);
    let artifact_type = field("artifactType")
        .and_then(Value::as_str)
        .map(Into::into);
    Ok(Descriptor {
        media_type,
        digest,
        size,
        platform,
        ref_name,
        artifact_type,
    })
}

/// Most layers an image may have (Docker's overlay driver stops at 128).
pub(crate) const MAX_LAYERS: usize = 1024;
/// Most entries an index may have.
pub(crate) const MAX_INDEX_ENTRIES: usize = 4096;

const MANIFEST_TYPES: [&str; 2] = [media_type::OCI_MANIFEST, media_type::DOCKER_MANIFEST];
const INDEX_TYPES: [&str; 2] = [media_type::OCI_INDEX, media_type::DOCKER_MANIFEST_LIST];
const CONFIG_TYPES: [&str; 2] = [media_type::OCI_CONFIG, media_type::DOCKER_CONFIG];
const LAYER_TYPES: [&str; 9] = [
    media_type::OCI_LAYER,
    media_type::OCI_LAYER_GZIP,
    media_type::OCI_LAYER_ZSTD,
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    media_type::DOCKER_LAYER,
    media_type::DOCKER_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

fn malformed(what: &str, why: String) -> Error {
    Error::new(format!("malformed {what}: {why}"))
        .hint("the image is malformed or hostile; it was not used")
}

/// Parses a manifest or an index, strictly: schema version 2 only, media
/// types consistent with where they are used (image config and layer types
/// in a manifest, manifests in an index), bounded counts and config size. A
/// document with both `manifests` and `layers` is refused: which one a
/// reader honours would be a guess.
pub fn parse_document(bytes: &[u8], what: &str) -> Result<Document> {
    let value: Value = serde_json::from_slice(bytes).ctx(|| format!("{what} is not valid JSON"))?;
    match value.get("schemaVersion").and_then(Value::as_u64) {
        Some(2) => {}
        Some(other) => {
            return Err(malformed(
                what,
                format!("schemaVersion {other}; only schema 2 manifests and indexes are read"),
            ))
        }
        None => return Err(malformed(what, "it has no schemaVersion 2".into())),
    }
    let own_type = value.get("mediaType").and_then(Value::as_str);
    match (
        value.get("layers").is_some(),
        value.get("manifests").is_some(),
    ) {
        (true, true) => Err(Error::new(format!(
            "malformed {what}: it has both `layers` and `manifests`"
        ))
        .hint("this is ambiguous and refused; re-export the image with a standard tool")),
        (true, false) => {
            if let Some(own) = own_type.filter(|t| !MANIFEST_TYPES.contains(t)) {
                return Err(malformed(
                    what,
                    format!("it has layers but its mediaType is {own}"),
                ));
            }
            parse_manifest(&value, what)
        }
        (false, true) => {
            if let Some(own) = own_type.filter(|t| !INDEX_TYPES.contains(t)) {
                return Err(malformed(
                    what,
                    format!("it lists manifests but its mediaType is {own}"),
                ));
            }
            parse_index(&value, what)
        }
        (false, false) => Err(Error::new(format!(
            "malformed {what}: neither a manifest nor an index"
        ))),
    }
}

/// The descriptors of a document's list `name`.
fn descriptors(value: &Value, name: &str, what: &str) -> Result<Vec<Descriptor>> {
    value
        .get(name)
        .and_then(Value::as_array)
        .ok_or_else(|| Error::new(format!("malformed {what}: `{name}` is not a list")))?
        .iter()
        .map(parse_descriptor)
        .collect::<Result<_>>()
        .map_err(|e| e.context(format!("in {what}")))
}

/// An image manifest's config and layers, checked.
fn parse_manifest(value: &Value, what: &str) -> Result<Document> {
    let config = value
        .get("config")
        .ok_or_else(|| Error::new(format!("malformed {what}: no config")))
        .and_then(parse_descriptor)?;
    if !CONFIG_TYPES.contains(&config.media_type.as_str()) {
        return Err(Error::new(format!(
            "{what} is not a container image: its config's media type is {:?}",
            config.media_type
        ))
        .hint("--image must name a container image, not another OCI artifact"));
    }
    if config.size > MAX_DOCUMENT_SIZE {
        return Err(malformed(
            what,
            format!(
                "its config claims {} bytes (at most {MAX_DOCUMENT_SIZE} are read)",
                config.size
            ),
        ));
    }
    let layers = descriptors(value, "layers", what)?;
    if layers.len() > MAX_LAYERS {
        return Err(malformed(
            what,
            format!("{} layers (at most {MAX_LAYERS})", layers.len()),
        ));
    }
    if let Some(odd) = layers
        .iter()
        .find(|l| !LAYER_TYPES.contains(&l.media_type.as_str()))
    {
        return Err(malformed(
            what,
            format!(
                "layer {} has media type {:?}, which is not a layer's",
                odd.digest, odd.media_type
            ),
        ));
    }
    Ok(Document::Manifest { config, layers })
}

/// An index's manifests, checked.
fn parse_index(value: &Value, what: &str) -> Result<Document> {
    let manifests = descriptors(value, "manifests", what)?;
    if manifests.len() > MAX_INDEX_ENTRIES {
        return Err(malformed(
            what,
            format!("{} entries (at most {MAX_INDEX_ENTRIES})", manifests.len()),
        ));
    }
    if let Some(odd) = manifests.iter().find(|m| {
        !m.media_type.is_empty()
            && !MANIFEST_TYPES.contains(&m.media_type.as_str())
            && !INDEX_TYPES.contains(&m.media_type.as_str())
    }) {
        return Err(malformed(
            what,
            format!(
                "entry {} has media type {:?}, which is not a manifest's",
                odd.digest, odd.media_type
            ),
        ));
    }
    Ok(Document::Index { manifests })
}

/// [`parse_document`] for a document a descriptor of type `expected`
/// pointed at: its own media type, and its shape, must agree.
pub fn parse_document_as(bytes: &[u8], what: &str, expected: &str) -> Result<Document> {
    let document = parse_document(bytes, what)?;
    let own: Option<String> = serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v.get("mediaType").and_then(Value::as_str).map(String::from));
    let shape_ok = match &document {
        Document::Manifest { .. } => expected.is_empty() || MANIFEST_TYPES.contains(&expected),
        Document::Index { .. } => expected.is_empty() || INDEX_TYPES.contains(&expected),
    };
    let type_ok = expected.is_empty() || own.as_deref().is_none_or(|own| own == expected);
    if !shape_ok || !type_ok {
        return Err(malformed(
            what,
            format!(
                "it was described as {expected} but is {}",
                own.unwrap_or_else(|| match document {
                    Document::Manifest { .. } => "a manifest".into(),
                    Document::Index { .. } => "an index".into(),
                })
            ),
        ));
    }
    Ok(document)
}

pub(crate) fn is_index_media_type(media_type: &str) -> bool {
    media_type == media_type::OCI_INDEX || media_type == media_type::DOCKER_MANIFEST_LIST
}

/// Chooses the manifest for `platform` in an index, or says what exists.
pub(crate) fn select_platform<'a>(
    manifests: &'a [Descriptor],
    platform: &Platform,
    what: &str,
) -> Result<&'a Descriptor> {
    let candidates: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| d.platform.as_ref().is_some_and(|p| p.matches(platform)))
        .collect();
    match candidates.first() {
        Some(found) => Ok(found),
        None if manifests.len() == 1 && manifests[0].platform.is_none() => Ok(&manifests[0]),
        None => {
            let offered: Vec<String> = manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                .collect();
            Err(Error::new(format!(
                "{what} has no image for platform {platform}; it offers: {}",
                if offered.is_empty() {
                    "no platform information".to_string()
                } else {
                    offered.join(", ")
                }
            ))
            .hint("compose on a machine of a matching platform, or pick an image that has one"))
        }
    }
}

/// The empty config of artifact manifests, and its descriptor.
pub(crate) const EMPTY_CONFIG: &[u8] = b"{}";

pub(crate) fn empty_config() -> crate::image::BlobDescriptor {
    crate::image::BlobDescriptor {
        media_type: media_type::OCI_EMPTY.to_string(),
        digest: crate::digest::Digest::of(EMPTY_CONFIG),
        size: EMPTY_CONFIG.len() as u64,
        annotations: Default::default(),
    }
}

fn descriptor_json(d: &crate::image::BlobDescriptor) -> Value {
    serde_json::json!({
        "mediaType": d.media_type,
        "digest": d.digest.as_str(),
        "size": d.size,
    })
}

/// An OCI 1.1 artifact manifest: `artifactType`, the empty config, one
/// blob, and the image it refers to as `subject`.
pub(crate) fn write_artifact_manifest(
    referrer: &crate::image::Referrer,
    blob: &crate::image::BlobDescriptor,
    subject: &crate::image::BlobDescriptor,
) -> Vec<u8> {
    let mut layer = descriptor_json(blob);
    layer["annotations"] = serde_json::json!({ "org.opencontainers.image.title": referrer.title });
    let annotations = &referrer.annotations;
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "artifactType": referrer.artifact_type,
        "config": descriptor_json(&empty_config()),
        "layers": [layer],
        "subject": descriptor_json(subject),
    });
    if !annotations.is_empty() {
        manifest["annotations"] = serde_json::to_value(annotations).expect("strings serialize");
    }
    crate::image::canonical_json(&manifest)
}

/// An index of referrers, as the fallback tag `sha256-<hex>` holds it when
/// a registry has no referrers API: each entry an artifact manifest's
/// descriptor with its `artifactType` and annotations.
pub(crate) fn referrer_descriptor(
    manifest: &crate::image::BlobDescriptor,
    artifact_type: &str,
    annotations: &BTreeMap<String, String>,
) -> Value {
    let mut value = descriptor_json(manifest);
    value["artifactType"] = Value::String(artifact_type.to_string());
    if !annotations.is_empty() {
        value["annotations"] = serde_json::to_value(annotations).expect("strings serialize");
    }
    value
}

/// Builds the OCI image manifest for a config and layers. Layer media types
/// are given in OCI's vocabulary (the blobs are unchanged).
pub(crate) fn write_oci_manifest(
    config: &crate::image::BlobDescriptor,
    layers: &[crate::image::BlobDescriptor],
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    use oci_spec::image::{ImageManifestBuilder, MediaType};
    let descriptor = |d: &crate::image::BlobDescriptor, media_type: &str| -> Result<_> {
        let digest: oci_spec::image::Digest = d
            .digest
            .as_str()
            .parse()
            .map_err(|e| Error::new("cannot convert a digest").with_source(e))?;
        Ok(oci_spec::image::Descriptor::new(
            MediaType::from(media_type),
            d.size,
            digest,
        ))
    };
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(config, media_type::OCI_CONFIG)?)
        .layers(
            layers
                .iter()
                .map(|l| descriptor(l, media_type::to_oci_layer(&l.media_type)))
                .collect::<Result<Vec<_>>>()?,
        )
        .build()
        .map_err(|e| Error::new("cannot build the image manifest").with_source(e))?;
    if !annotations.is_empty() || layers.iter().any(|l| !l.annotations.is_empty()) {
        // Through a Value: oci-spec keeps annotations in a HashMap, whose
        // order would change the manifest's bytes from run to run.
        let mut value =
            serde_json::to_value(&manifest).ctx(|| "serializing the image manifest".into())?;
        if !annotations.is_empty() {
            value["annotations"] = serde_json::to_value(annotations).expect("strings serialize");
        }
        for (i, layer) in layers.iter().enumerate() {
            if !layer.annotations.is_empty() {
                value["layers"][i]["annotations"] =
                    serde_json::to_value(&layer.annotations).expect("strings serialize");
            }
        }
        return Ok(crate::image::canonical_json(&value));
    }
    serde_json::to_vec(&manifest).ctx(|| "serializing the image manifest".into())
}

/// An entry of an index: a manifest's descriptor with annotations
/// (`org.opencontainers.image.ref.name`, ...).
pub(crate) fn index_entry(
    d: &crate::image::BlobDescriptor,
    annotations: &[(String, String)],
) -> Value {
    let mut value = descriptor_json(d);
    if !annotations.is_empty() {
        value["annotations"] = annotations
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    value
}

/// An image index of one manifest per platform.
pub(crate) fn write_platform_index(
    manifests: &[(Platform, crate::image::BlobDescriptor)],
) -> Vec<u8> {
    let entries: Vec<Value> = manifests
        .iter()
        .map(|(platform, d)| {
            let mut entry = descriptor_json(d);
            let mut p = serde_json::json!({
                "os": platform.os,
                "architecture": platform.architecture,
            });
            if let Some(variant) = &platform.variant {
                p["variant"] = Value::String(variant.clone());
            }
            entry["platform"] = p;
            entry
        })
        .collect();
    write_oci_index(&entries)
}

/// Builds an OCI index (`index.json`) of these entries ([`index_entry`],
/// [`referrer_descriptor`], or entries read from an index, kept whole).
pub(crate) fn write_oci_index(entries: &[Value]) -> Vec<u8> {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": entries,
    });
    crate::image::canonical_json(&index)
}
