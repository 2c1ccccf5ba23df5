//! `docker-archive:FILE[:NAME:TAG]`: the tarball `docker save` writes and
//! `docker load` reads.
//!
//! Reading indexes the archive's members once (name → offset), then serves
//! layers straight from the file; links between members are followed inside
//! the archive only, with a hop limit against cycles. Both the legacy layout
//! (`<id>/layer.tar`) and Docker 25's OCI layout plus manifest.json are read.
//!
//! Writing produces an archive that is both: manifest.json for `docker load`
//! of any age, and index.json, oci-layout and blobs/sha256 for OCI tools.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::Value;
use tempfile::NamedTempFile;

use crate::digest::{CheckpointSlot, Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::image::{
    media_type, BlobDescriptor, Committed, ImageSink, ImageSource, OutputImage, SourceImage,
};
use crate::layer::tarparse::TarReader;
use crate::layer::ImagePath;
use crate::manifest::{self, MAX_DOCUMENT_SIZE, REF_NAME_ANNOTATION};

const MAX_LINK_HOPS: usize = 16;

#[derive(Clone, Debug)]
enum Member {
    File { offset: u64, size: u64 },
    Link(ImagePath),
}

pub(crate) struct DockerArchiveSource {
    name: String,
    file: PathBuf,
    members: HashMap<ImagePath, Member>,
    layer_members: Vec<(u64, u64)>,
    image: SourceImage,
}

/// Which image of an archive to read.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pick<'a> {
    /// The only one.
    Only,
    /// The one tagged NAME:TAG.
    Named(&'a str),
    /// The one with this config digest (an engine's image ID).
    Config(&'a Digest),
}

/// The names an entry of manifest.json gives its image.
fn tags_of(entry: &Value) -> Vec<String> {
    entry
        .get("RepoTags")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The entry of manifest.json that `pick` names.
fn pick_entry<'a>(entries: &'a [Value], pick: Pick<'_>, name: &str) -> Result<&'a Value> {
    match pick {
        Pick::Config(digest) => entries
            .iter()
            .find(|e| {
                e.get("Config")
                    .and_then(Value::as_str)
                    .is_some_and(|c| c.trim_end_matches(".json").ends_with(digest.hex()))
            })
            .ok_or_else(|| Error::new(format!("{name}: no image with ID {digest}"))),
        Pick::Named(wanted) => {
            let wanted_full = crate::transport::with_tag(wanted);
            entries
                .iter()
                .find(|e| {
                    tags_of(e).iter().any(|t| {
                        let t = t.strip_prefix("docker.io/").unwrap_or(t);
                        let t = t.strip_prefix("library/").unwrap_or(t);
                        t == wanted || t == wanted_full
                    })
                })
                .ok_or_else(|| {
                    let all: Vec<String> = entries.iter().flat_map(tags_of).collect();
                    Error::new(format!("{name}: no image named {wanted:?}")).hint(
                        if all.is_empty() {
                            "the archive's images have no names; leave the name out".to_string()
                        } else {
                            format!("names in the archive: {}", all.join(", "))
                        },
                    )
                })
        }
        Pick::Only if entries.len() == 1 => Ok(&entries[0]),
        Pick::Only => {
            let all: Vec<String> = entries.iter().flat_map(tags_of).collect();
            Err(Error::new(format!(
                "{name} holds {} images; say which one",
                entries.len()
            ))
            .hint(format!(
                "write docker-archive:FILE:NAME:TAG; names in the archive: {}",
                all.join(", ")
            )))
        }
    }
}

impl DockerArchiveSource {
    pub(crate) fn open(file: &Path, reference: Option<&str>, name: String) -> Result<Self> {
        Self::open_picked(file, reference.map_or(Pick::Only, Pick::Named), name)
    }

    pub(crate) fn open_picked(file: &Path, pick: Pick<'_>, name: String) -> Result<Self> {
        let handle = File::open(file).ctx(|| format!("opening {}", file.display()))?;
        let members = index_members(handle).map_err(|e| {
            e.context(format!(
                "{} is not a readable docker-archive",
                file.display()
            ))
        })?;
        let mut source = DockerArchiveSource {
            name,
            file: file.to_path_buf(),
            members,
            layer_members: Vec::new(),
            image: SourceImage {
                config: Value::Null,
                layers: Vec::new(),
                id: None,
            },
        };
        let manifest_bytes = source
            .read_small("manifest.json")
            .map_err(|e| e.hint("a `docker save` archive has a manifest.json at its top level"))?;
        let entries: Vec<Value> = serde_json::from_slice(&manifest_bytes)
            .ctx(|| format!("{}: manifest.json is not a JSON list", source.name))?;
        let chosen = pick_entry(&entries, pick, &source.name)?;
        let config_name = chosen
            .get("Config")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::new(format!("{}: manifest.json has no Config", source.name)))?;
        let config_bytes = source.read_small(config_name)?;
        let config: Value = serde_json::from_slice(&config_bytes)
            .ctx(|| format!("{}: the image config is not valid JSON", source.name))?;
        let layer_names: Vec<String> = chosen
            .get("Layers")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::new(format!("{}: manifest.json has no Layers", source.name)))?
            .iter()
            .map(|v| v.as_str().map(String::from))
            .collect::<Option<_>>()
            .ok_or_else(|| Error::new(format!("{}: a layer name is not a string", source.name)))?;
        source.image = source.layers(config, &config_bytes, &layer_names)?;
        Ok(source)
    }

    /// The image of `config`, its layers located in the archive.
    fn layers(
        &mut self,
        config: Value,
        config_bytes: &[u8],
        layer_names: &[String],
    ) -> Result<SourceImage> {
        let mut layers = Vec::new();
        for layer_name in layer_names {
            let (offset, size) = self.locate(layer_name)?;
            let media_type = self.sniff_media_type(offset, size)?;
            // `blobs/sha256/<hex>` names the blob's digest; a legacy
            // `<id>/layer.tar` is verified through the diff-id instead.
            let blob = layer_name
                .strip_prefix("blobs/sha256/")
                .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok())
                .map(|d| (d, size));
            layers.push((media_type, blob));
            self.layer_members.push((offset, size));
        }
        let mut image = SourceImage::new(config, layers).map_err(|e| e.context(&self.name))?;
        image.id = Some(Digest::of(config_bytes));
        for (layer, &(_, size)) in image.layers.iter_mut().zip(&self.layer_members) {
            if layer.blob.is_none() && layer.media_type == media_type::DOCKER_LAYER {
                // An uncompressed layer's digest is its diff-id.
                layer.blob = Some((layer.diff_id.clone(), size));
            }
        }
        Ok(image)
    }

    /// Resolves a member name (following in-archive links) to its data.
    fn locate(&self, name: &str) -> Result<(u64, u64)> {
        let mut path = ImagePath::parse(name.as_bytes()).map_err(|e| e.context(&self.name))?;
        for _ in 0..MAX_LINK_HOPS {
            match self.members.get(&path) {
                Some(Member::File { offset, size }) => return Ok((*offset, *size)),
                Some(Member::Link(target)) => path = target.clone(),
                None => {
                    return Err(Error::new(format!(
                        "{}: the archive has no member {name:?}",
                        self.name
                    ))
                    .hint("the archive is incomplete or was not written by `docker save`"))
                }
            }
        }
        Err(Error::new(format!(
            "{}: member {name:?} is a chain of more than {MAX_LINK_HOPS} links (a cycle?)",
            self.name
        )))
    }

    fn open_member(&self, offset: u64, size: u64) -> Result<io::Take<BufReader<File>>> {
        let mut file = File::open(&self.file).ctx(|| format!("opening {}", self.file.display()))?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(BufReader::with_capacity(1 << 20, file).take(size))
    }

    fn read_small(&self, name: &str) -> Result<Vec<u8>> {
        let (offset, size) = self.locate(name)?;
        if size > MAX_DOCUMENT_SIZE {
            return Err(Error::new(format!(
                "{}: {name} is {size} bytes, more than the {MAX_DOCUMENT_SIZE} accepted",
                self.name
            )));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        self.open_member(offset, size)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn sniff_media_type(&self, offset: u64, size: u64) -> Result<String> {
        let mut head = [0u8; 4];
        let mut reader = self.open_member(offset, size.min(4))?;
        let n = reader.read(&mut head)?;
        Ok(match &head[..n] {
            [0x1f, 0x8b, ..] => media_type::DOCKER_LAYER_GZIP.to_string(),
            [0x28, 0xb5, 0x2f, 0xfd] => media_type::OCI_LAYER_ZSTD.to_string(),
            _ => media_type::DOCKER_LAYER.to_string(),
        })
    }
}

fn index_members(file: File) -> Result<HashMap<ImagePath, Member>> {
    let mut archive = TarReader::new(BufReader::new(file));
    let mut members = HashMap::new();
    while let Some(header) = archive.next_header()? {
        let path = ImagePath::parse(&header.path)?;
        let member = match header.typeflag {
            b'0' | 0 | b'7' => Member::File {
                offset: archive.data_start(),
                size: header.size,
            },
            b'2' => {
                let target = &header.link;
                // Symlinks resolve relative to the member's directory.
                let base = path.parent().unwrap_or_default();
                let joined = if target.starts_with(b"/") {
                    target.to_vec()
                } else {
                    [base.as_bytes(), b"/", target].concat()
                };
                Member::Link(resolve_dots(&joined)?)
            }
            b'1' => Member::Link(ImagePath::parse(&header.link)?),
            _ => continue,
        };
        members.insert(path, member);
    }
    Ok(members)
}

/// Resolves `..` lexically within the archive; climbing above its top is refused.
fn resolve_dots(raw: &[u8]) -> Result<ImagePath> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err(Error::new(format!(
                        "archive link {:?} points outside the archive",
                        String::from_utf8_lossy(raw)
                    )));
                }
            }
            other => parts.push(other),
        }
    }
    ImagePath::parse(&parts.join(&b'/'))
}

impl ImageSource for DockerArchiveSource {
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
        let (offset, size) = self.layer_members[index];
        let reader = self.open_member(offset, size)?;
        Ok(match &self.image.layers[index].blob {
            Some((digest, _)) => Box::new(super::verified_layer(
                reader,
                &self.name,
                index,
                (digest, size),
                checkpoints,
            )),
            // Verified through its diff-id when decompressed.
            None => Box::new(reader),
        })
    }

    fn open_layer_range(
        &self,
        index: usize,
        start: u64,
        len: u64,
    ) -> Result<Option<Box<dyn Read + Send + '_>>> {
        let (offset, size) = self.layer_members[index];
        if !crate::image::range_within(start, len, size) {
            return Ok(None);
        }
        Ok(Some(Box::new(self.open_member(offset + start, len)?)))
    }
}

/// Writes a docker-archive into a temporary file beside the destination and
/// moves it into place on commit; the destination must not exist.
pub(crate) struct DockerArchiveSink {
    name: String,
    file: PathBuf,
    /// The destination's directory, where blobs are staged too.
    dir: PathBuf,
    reference: String,
    builder: tar::Builder<BufWriter<NamedTempFile>>,
    written: BTreeSet<Digest>,
}

impl DockerArchiveSink {
    pub(crate) fn create(file: &Path, reference: &str, name: String) -> Result<Self> {
        if file.exists() {
            return Err(Error::new(format!(
                "{} already exists; refusing to overwrite it",
                file.display()
            ))
            .hint("remove it first or choose another --output file"));
        }
        let dir = super::output_parent(file)?;
        let temp = tempfile::Builder::new()
            .prefix(&crate::scratch::prefix("archive"))
            .tempfile_in(&dir)
            .ctx(|| format!("creating a temporary file in {}", dir.display()))?;
        let builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, temp));
        Ok(DockerArchiveSink {
            name,
            file: file.to_path_buf(),
            dir,
            reference: reference.to_string(),
            builder,
            written: BTreeSet::new(),
        })
    }

    fn append(&mut self, member: &str, size: u64, content: &mut dyn Read) -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(size);
        header.set_mtime(0);
        self.builder
            .append_data(&mut header, member, content)
            .map_err(|e| Error::from(e).context(format!("writing {member} into {}", self.name)))
    }

    fn append_blob_file(&mut self, desc: &BlobDescriptor, file: &mut File) -> Result<()> {
        if self.written.insert(desc.digest.clone()) {
            let member = format!("blobs/sha256/{}", desc.digest.hex());
            self.append(&member, desc.size, file)?;
        }
        Ok(())
    }

    fn append_document(&mut self, media_type: &str, bytes: &[u8]) -> Result<BlobDescriptor> {
        let desc = BlobDescriptor {
            media_type: media_type.to_string(),
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            annotations: Default::default(),
        };
        if self.written.insert(desc.digest.clone()) {
            let member = format!("blobs/sha256/{}", desc.digest.hex());
            self.append(&member, desc.size, &mut &bytes[..])?;
        }
        Ok(desc)
    }
}

impl ImageSink for DockerArchiveSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn put_blob(
        &mut self,
        media_type: &str,
        expected: Option<&Digest>,
        content: &mut dyn Read,
    ) -> Result<BlobDescriptor> {
        // A tar member needs its size up front: stage the blob first.
        let temp = tempfile::tempfile_in(&self.dir)
            .ctx(|| format!("staging a blob in {}", self.dir.display()))?;
        let mut writer = HashingWriter::new(BufWriter::new(temp));
        io::copy(content, &mut writer)?;
        let (buffered, digest, size) = writer.finish();
        let mut temp = buffered
            .into_inner()
            .map_err(|e| Error::new("cannot stage a blob").with_source(e.into_error()))?;
        if let Some(expected) = expected {
            if &digest != expected {
                return Err(Error::new(format!(
                    "blob has digest {digest}, expected {expected}"
                )));
            }
        }
        temp.seek(SeekFrom::Start(0))?;
        let desc = BlobDescriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            annotations: Default::default(),
        };
        self.append_blob_file(&desc, &mut temp)?;
        Ok(desc)
    }

    fn put_blob_file(&mut self, desc: &BlobDescriptor, path: &Path) -> Result<()> {
        let mut file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
        self.append_blob_file(desc, &mut file)
    }

    fn put_checked_copy(&mut self, desc: &BlobDescriptor, path: &Path) -> Result<bool> {
        if std::fs::metadata(path).map(|m| m.len()).ok() != Some(desc.size) {
            return Ok(false);
        }
        self.put_blob_file(desc, path)?;
        Ok(true)
    }

    fn commit(mut self: Box<Self>, image: &OutputImage) -> Result<Committed> {
        let config = self.append_document(media_type::OCI_CONFIG, &image.config)?;
        let manifest_bytes =
            manifest::write_oci_manifest(&config, &image.layers, &image.annotations)?;
        let manifest = self.append_document(media_type::OCI_MANIFEST, &manifest_bytes)?;
        let docker_manifest = serde_json::json!([{
            "Config": format!("blobs/sha256/{}", config.digest.hex()),
            "RepoTags": [self.reference],
            "Layers": image
                .layers
                .iter()
                .map(|l| format!("blobs/sha256/{}", l.digest.hex()))
                .collect::<Vec<_>>(),
        }]);
        let docker_manifest = crate::image::canonical_json(&docker_manifest);
        let tag = self
            .reference
            .rsplit_once(':')
            .map(|(_, t)| t.to_string())
            .unwrap_or_default();
        let index = manifest::write_oci_index(&[manifest::index_entry(
            &manifest,
            &[
                (
                    "io.containerd.image.name".to_string(),
                    self.reference.clone(),
                ),
                (REF_NAME_ANNOTATION.to_string(), tag),
            ],
        )]);
        self.append(
            "manifest.json",
            docker_manifest.len() as u64,
            &mut &docker_manifest[..],
        )?;
        self.append("index.json", index.len() as u64, &mut &index[..])?;
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        self.append("oci-layout", layout.len() as u64, &mut &layout[..])?;
        let buffered = self
            .builder
            .into_inner()
            .map_err(|e| Error::new("cannot finish the archive").with_source(e))?;
        let temp = buffered
            .into_inner()
            .map_err(|e| Error::new("cannot flush the archive").with_source(e.into_error()))?;
        temp.as_file().sync_all()?;
        temp.persist_noclobber(&self.file).map_err(|e| {
            Error::new(format!(
                "cannot move the archive to {}",
                self.file.display()
            ))
            .with_source(e.error)
        })?;
        Ok(Committed {
            description: format!(
                "wrote docker-archive:{} ({}, manifest {})",
                self.file.display(),
                self.reference,
                manifest.digest
            ),
            digest: manifest.digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_resolution_stays_inside() {
        assert_eq!(
            resolve_dots(b"abc/../def/layer.tar").unwrap(),
            ImagePath::from_static("def/layer.tar")
        );
        assert!(resolve_dots(b"../../etc/passwd").is_err());
    }
}
