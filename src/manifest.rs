//! Reading manifest and index documents (OCI and Docker v2 schema 2), shared
//! by the transports that store them: choosing a manifest from an index by
//! tag or platform, and refusing documents that are ambiguous or oversized.

use serde_json::Value;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::media_type;

/// Largest manifest, index or config we accept. Real ones are kilobytes;
/// this only stops a hostile file from exhausting memory.
pub const MAX_DOCUMENT_SIZE: u64 = 16 << 20;

pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// A descriptor as found in a manifest or index.
#[derive(Clone, Debug)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub platform: Option<Platform>,
    pub ref_name: Option<String>,
}

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

    fn matches(&self, wanted: &Platform) -> bool {
        self.os == wanted.os
            && self.architecture == wanted.architecture
            && (wanted.variant.is_none() || self.variant == wanted.variant)
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

pub fn parse_descriptor(value: &Value) -> Result<Descriptor> {
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
    Ok(Descriptor {
        media_type,
        digest,
        size,
        platform,
        ref_name,
    })
}

/// Parses a manifest or an index. A document with both `manifests` and
/// `layers` is refused: which one a reader honours would be a guess.
pub fn parse_document(bytes: &[u8], what: &str) -> Result<Document> {
    let value: Value = serde_json::from_slice(bytes).ctx(|| format!("{what} is not valid JSON"))?;
    let has_layers = value.get("layers").is_some();
    let has_manifests = value.get("manifests").is_some();
    let list = |name: &str| -> Result<Vec<Descriptor>> {
        value
            .get(name)
            .and_then(Value::as_array)
            .ok_or_else(|| Error::new(format!("malformed {what}: `{name}` is not a list")))?
            .iter()
            .map(parse_descriptor)
            .collect::<Result<_>>()
            .map_err(|e| e.context(format!("in {what}")))
    };
    match (has_layers, has_manifests) {
        (true, true) => Err(Error::new(format!(
            "malformed {what}: it has both `layers` and `manifests`"
        ))
        .hint("this is ambiguous and refused; re-export the image with a standard tool")),
        (true, false) => {
            let config = value
                .get("config")
                .ok_or_else(|| Error::new(format!("malformed {what}: no config")))
                .and_then(parse_descriptor)?;
            Ok(Document::Manifest {
                config,
                layers: list("layers")?,
            })
        }
        (false, true) => Ok(Document::Index {
            manifests: list("manifests")?,
        }),
        (false, false) => Err(Error::new(format!(
            "malformed {what}: neither a manifest nor an index"
        ))),
    }
}

pub fn is_index_media_type(media_type: &str) -> bool {
    media_type == media_type::OCI_INDEX || media_type == media_type::DOCKER_MANIFEST_LIST
}

/// Chooses the manifest for `platform` in an index, or says what exists.
pub fn select_platform<'a>(
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

/// Builds the OCI image manifest for a config and layers. Layer media types
/// are given in OCI's vocabulary (the blobs are unchanged).
pub fn write_oci_manifest(
    config: &crate::image::BlobDescriptor,
    layers: &[crate::image::BlobDescriptor],
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
    serde_json::to_vec(&manifest).ctx(|| "serializing the image manifest".into())
}

/// Builds an OCI `index.json` listing manifests, each with an optional
/// `org.opencontainers.image.ref.name` (and any extra annotations).
pub fn write_oci_index(
    entries: &[(crate::image::BlobDescriptor, Vec<(String, String)>)],
) -> Result<Vec<u8>> {
    let manifests: Vec<Value> = entries
        .iter()
        .map(|(d, annotations)| {
            let mut value = serde_json::json!({
                "mediaType": d.media_type,
                "digest": d.digest.as_str(),
                "size": d.size,
            });
            if !annotations.is_empty() {
                value["annotations"] = annotations
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
            }
            value
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": manifests,
    });
    Ok(crate::image::canonical_json(&index))
}
