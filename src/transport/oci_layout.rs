//! `oci:DIR[:TAG]`: an OCI image layout directory (index.json, oci-layout,
//! blobs/sha256/...). Reading refuses blobs that are symlinks or whose size
//! disagrees with their descriptor; writing stages everything so that a
//! failed run leaves no half-written layout behind.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::digest::{CheckpointSlot, Digest, HashingWriter, VerifyingReader};
use crate::error::{Error, IoContext, Result};
use crate::image::Platform;
use crate::image::{
    media_type, BlobDescriptor, Committed, ImageSink, ImageSource, OutputImage, SourceImage,
};
use crate::manifest::{self, Document, MAX_DOCUMENT_SIZE, REF_NAME_ANNOTATION};

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

pub(crate) struct OciLayoutSource {
    name: String,
    dir: PathBuf,
    image: SourceImage,
}

impl OciLayoutSource {
    pub(crate) fn open(
        dir: &Path,
        tag: Option<&str>,
        platform: &Platform,
        name: String,
    ) -> Result<Self> {
        if !dir.join(LAYOUT_FILE).is_file() {
            return Err(Error::new(format!(
                "{} is not an OCI image layout (it has no oci-layout file)",
                dir.display()
            ))
            .hint("create one with `skopeo copy SOURCE oci:DIR:TAG`, or use docker-archive:FILE for `docker save` output"));
        }
        let index_bytes = read_capped(&dir.join("index.json"), "index.json")?;
        let Document::Index { manifests } = manifest::parse_document(&index_bytes, "index.json")?
        else {
            return Err(Error::new(format!(
                "{}/index.json is not an index",
                dir.display()
            )));
        };
        let chosen = match tag {
            Some(tag) => manifests
                .iter()
                .find(|d| d.ref_name.as_deref() == Some(tag))
                .ok_or_else(|| {
                    Error::new(format!("{name}: no image tagged {tag:?}"))
                        .hint(available(&manifests))
                })?,
            None if images(&manifests).count() == 1 => images(&manifests).next().expect("one"),
            None => {
                return Err(Error::new(format!(
                    "{name} holds {} images; say which one",
                    images(&manifests).count()
                ))
                .hint(format!("write oci:DIR:TAG; {}", available(&manifests))))
            }
        };
        let mut descriptor = chosen.clone();
        for _ in 0..4 {
            let bytes = read_blob_capped(dir, &descriptor.digest, descriptor.size)?;
            let what = format!("manifest {}", descriptor.digest);
            match manifest::parse_document_as(&bytes, &what, &descriptor.media_type)? {
                Document::Index { manifests } => {
                    descriptor = manifest::select_platform(&manifests, platform, &name)?.clone();
                }
                Document::Manifest { config, layers } => {
                    let config_bytes = read_blob_capped(dir, &config.digest, config.size)?;
                    let config: serde_json::Value = serde_json::from_slice(&config_bytes)
                        .ctx(|| format!("{name}: the image config is not valid JSON"))?;
                    let layers = layers
                        .into_iter()
                        .map(|l| (l.media_type, Some((l.digest, l.size))))
                        .collect();
                    let mut image =
                        SourceImage::new(config, layers).map_err(|e| e.context(&name))?;
                    image.id = Some(descriptor.digest.clone());
                    return Ok(OciLayoutSource {
                        name,
                        dir: dir.to_path_buf(),
                        image,
                    });
                }
            }
        }
        Err(Error::new(format!("{name}: indexes nested too deeply")))
    }
}

/// The platforms of the index a tag names (`None`: it names one image).
pub(crate) fn platforms(dir: &Path, tag: Option<&str>) -> Result<Option<Vec<Platform>>> {
    let index_bytes = read_capped(&dir.join("index.json"), "index.json")?;
    let Document::Index { manifests } = manifest::parse_document(&index_bytes, "index.json")?
    else {
        return Ok(None);
    };
    let chosen = match tag {
        Some(tag) => manifests
            .iter()
            .find(|d| d.ref_name.as_deref() == Some(tag)),
        None => images(&manifests).next(),
    };
    let Some(chosen) = chosen else {
        return Ok(None);
    };
    if !manifest::is_index_media_type(&chosen.media_type) {
        return Ok(None);
    }
    let bytes = read_blob_capped(dir, &chosen.digest, chosen.size)?;
    match manifest::parse_document_as(&bytes, "index", &chosen.media_type)? {
        Document::Index { manifests } => Ok(Some(
            images(&manifests)
                .filter_map(|d| d.platform.clone())
                .collect(),
        )),
        Document::Manifest { .. } => Ok(None),
    }
}

/// The entries that are images, not artifacts about them (SBOMs).
fn images(manifests: &[manifest::Descriptor]) -> impl Iterator<Item = &manifest::Descriptor> {
    manifests.iter().filter(|d| d.artifact_type.is_none())
}

fn available(manifests: &[manifest::Descriptor]) -> String {
    let tags: Vec<&str> = manifests
        .iter()
        .filter_map(|d| d.ref_name.as_deref())
        .collect();
    if tags.is_empty() {
        "the layout has no tagged images".into()
    } else {
        format!("tags in the layout: {}", tags.join(", "))
    }
}

fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs")
        .join(digest.algorithm())
        .join(digest.hex())
}

/// Opens a blob after checking it is a regular file of the expected size.
fn open_blob(
    dir: &Path,
    digest: &Digest,
    size: u64,
) -> Result<VerifyingReader<io::BufReader<File>>> {
    let file = blob_file(dir, digest, size)?;
    Ok(VerifyingReader::new(
        io::BufReader::with_capacity(1 << 20, file),
        digest.clone(),
        Some(size),
        format!("blob {digest}"),
    ))
}

/// A blob's file, checked to be a regular file of the expected size.
fn blob_file(dir: &Path, digest: &Digest, size: u64) -> Result<File> {
    let path = blob_path(dir, digest);
    let meta = fs::symlink_metadata(&path)
        .ctx(|| format!("blob {digest} is missing from {}", dir.display()))?;
    if !meta.file_type().is_file() {
        return Err(Error::new(format!(
            "blob {digest} in {} is not a regular file (a symlink or directory)",
            dir.display()
        ))
        .hint("refusing to follow it; re-create the layout with skopeo"));
    }
    if meta.len() != size {
        return Err(Error::new(format!(
            "blob {digest} in {} is {} bytes but its descriptor says {size}",
            dir.display(),
            meta.len()
        ))
        .hint("the layout is corrupt; re-create it"));
    }
    File::open(&path).ctx(|| format!("opening {}", path.display()))
}

fn read_blob_capped(dir: &Path, digest: &Digest, size: u64) -> Result<Vec<u8>> {
    if size > MAX_DOCUMENT_SIZE {
        return Err(Error::new(format!(
            "document {digest} claims {size} bytes, more than the {MAX_DOCUMENT_SIZE} accepted"
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    open_blob(dir, digest, size)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn read_capped(path: &Path, what: &str) -> Result<Vec<u8>> {
    let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_DOCUMENT_SIZE + 1)
        .read_to_end(&mut bytes)
        .ctx(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > MAX_DOCUMENT_SIZE {
        return Err(Error::new(format!(
            "{what} is larger than {MAX_DOCUMENT_SIZE} bytes"
        )));
    }
    Ok(bytes)
}

impl ImageSource for OciLayoutSource {
    fn referrer(&self, artifact_type: &str) -> Result<Option<Vec<u8>>> {
        let Some(subject) = &self.image.id else {
            return Ok(None);
        };
        let bytes = read_capped(&self.dir.join("index.json"), "index.json")?;
        let Document::Index { manifests } = manifest::parse_document(&bytes, "index.json")? else {
            return Ok(None);
        };
        let mut found = Vec::new();
        for d in manifests
            .iter()
            .filter(|d| d.artifact_type.as_deref() == Some(artifact_type))
        {
            let bytes = read_blob_capped(&self.dir, &d.digest, d.size)?;
            let artifact: serde_json::Value = serde_json::from_slice(&bytes)
                .ctx(|| format!("{}: artifact {} is not JSON", self.name, d.digest))?;
            if artifact["subject"]["digest"].as_str() != Some(subject.as_str()) {
                continue;
            }
            let created = artifact["annotations"][crate::manifest::CREATED_ANNOTATION]
                .as_str()
                .unwrap_or("")
                .to_string();
            let layer = manifest::parse_descriptor(&artifact["layers"][0])?;
            found.push((created, d.digest.to_string(), layer));
        }
        found.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        match found.pop() {
            Some((_, _, layer)) => Ok(Some(read_blob_capped(
                &self.dir,
                &layer.digest,
                layer.size,
            )?)),
            None => Ok(None),
        }
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
            .expect("OCI layouts always describe their blobs");
        Ok(Box::new(
            open_blob(&self.dir, &digest, size)?.keeping(checkpoints),
        ))
    }

    fn layer_file(&self, index: usize) -> Option<PathBuf> {
        let (digest, _) = self.image.layers[index].blob.as_ref()?;
        Some(blob_path(&self.dir, digest))
    }

    fn open_layer_range(
        &self,
        index: usize,
        start: u64,
        len: u64,
    ) -> Result<Option<Box<dyn Read + Send + '_>>> {
        let Some((digest, size)) = self.image.blob_holding(index, start, len) else {
            return Ok(None);
        };
        let mut file = blob_file(&self.dir, &digest, size)?;
        io::Seek::seek(&mut file, io::SeekFrom::Start(start))?;
        Ok(Some(Box::new(
            io::BufReader::with_capacity(1 << 20, file).take(len),
        )))
    }
}

/// Writes into a new layout (built in a hidden sibling directory and renamed
/// into place) or adds a new tag to an existing one (blobs are content
/// addressed; index.json is replaced atomically).
pub(crate) struct OciLayoutSink {
    name: String,
    dir: PathBuf,
    tag: String,
    /// Where blobs and documents are written: the staging directory for a
    /// new layout, the layout itself otherwise.
    root: PathBuf,
    staging: Option<TempDir>,
    /// The entries of the layout's index.json before this image.
    existing: Vec<serde_json::Value>,
}

impl OciLayoutSink {
    pub(crate) fn create(dir: &Path, tag: &str, name: String) -> Result<Self> {
        let existing_dir = dir.is_dir();
        if dir.exists() && !existing_dir {
            return Err(
                Error::new(format!("{} exists and is not a directory", dir.display()))
                    .hint("choose another --output path"),
            );
        }
        let empty = existing_dir
            && fs::read_dir(dir)
                .ctx(|| format!("listing {}", dir.display()))?
                .next()
                .is_none();
        if existing_dir && !empty {
            if !dir.join(LAYOUT_FILE).is_file() {
                return Err(Error::new(format!(
                    "{} exists and is not an OCI layout; refusing to write into it",
                    dir.display()
                ))
                .hint("choose a new or empty directory for --output oci:DIR"));
            }
            let bytes = read_capped(&dir.join("index.json"), "index.json")?;
            let Document::Index { manifests } = manifest::parse_document(&bytes, "index.json")?
            else {
                return Err(Error::new(format!(
                    "{}/index.json is not an index",
                    dir.display()
                )));
            };
            if manifests.iter().any(|d| d.ref_name.as_deref() == Some(tag)) {
                return Err(Error::new(format!(
                    "{} already holds an image tagged {tag:?}; refusing to overwrite it",
                    dir.display()
                ))
                .hint(format!(
                    "choose another tag (oci:{}:NEWTAG) or remove the old one",
                    dir.display()
                )));
            }
            // Kept whole: tags, artifacts (SBOMs) and whatever else they say.
            let raw: serde_json::Value = serde_json::from_slice(&bytes)
                .ctx(|| format!("{}/index.json is not JSON", dir.display()))?;
            let existing = raw["manifests"].as_array().cloned().unwrap_or_default();
            fs::create_dir_all(dir.join("blobs/sha256"))?;
            return Ok(OciLayoutSink {
                name,
                dir: dir.to_path_buf(),
                tag: tag.to_string(),
                root: dir.to_path_buf(),
                staging: None,
                existing,
            });
        }
        let parent = super::output_parent(dir)?;
        let staging = tempfile::Builder::new()
            .prefix(&crate::scratch::prefix("oci"))
            .tempdir_in(&parent)
            .ctx(|| format!("creating a staging directory in {}", parent.display()))?;
        fs::create_dir_all(staging.path().join("blobs/sha256"))?;
        Ok(OciLayoutSink {
            name,
            dir: dir.to_path_buf(),
            tag: tag.to_string(),
            root: staging.path().to_path_buf(),
            staging: Some(staging),
            existing: Vec::new(),
        })
    }

    /// A hard link to `file` as the blob of `desc`, if the layout's
    /// filesystem allows: checked against `desc` through the link first,
    /// unless the caller checked it (`check` false: then its size only).
    /// The link pins the inode: what is checked is what is kept, even if
    /// the source's name is replaced meanwhile.
    fn link_in(&mut self, desc: &BlobDescriptor, file: &Path, check: bool) -> Result<bool> {
        let target = blob_path(&self.root, &desc.digest);
        if target.exists() {
            return Ok(true);
        }
        let is_file = fs::symlink_metadata(file).is_ok_and(|m| m.file_type().is_file());
        if !is_file {
            return Ok(false);
        }
        let link = self.root.join("blobs/sha256").join(format!(
            "{}link-{}",
            crate::scratch::prefix("blob"),
            desc.digest.hex()
        ));
        if fs::hard_link(file, &link).is_err() {
            return Ok(false);
        }
        let checked = File::open(&link).and_then(|f| {
            let got = if check {
                crate::digest::digest_of(io::BufReader::with_capacity(1 << 20, &f))?
            } else {
                (desc.digest.clone(), f.metadata()?.len())
            };
            f.sync_all()?;
            Ok(got)
        });
        match checked {
            Ok((digest, size)) if digest == desc.digest && size == desc.size => {
                fs::rename(&link, &target).ctx(|| format!("storing blob {}", desc.digest))?;
                Ok(true)
            }
            _ => {
                let _ = fs::remove_file(&link);
                Ok(false)
            }
        }
    }

    fn write_document(&mut self, media_type: &str, bytes: &[u8]) -> Result<BlobDescriptor> {
        self.put_blob(media_type, None, &mut &bytes[..])
    }
}

impl ImageSink for OciLayoutSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn put_blob(
        &mut self,
        media_type: &str,
        expected: Option<&Digest>,
        content: &mut dyn Read,
    ) -> Result<BlobDescriptor> {
        let blobs = self.root.join("blobs/sha256");
        let temp = tempfile::Builder::new()
            .prefix(&crate::scratch::prefix("blob"))
            .tempfile_in(&blobs)
            .ctx(|| format!("creating a blob in {}", blobs.display()))?;
        let mut writer = HashingWriter::new(io::BufWriter::new(temp));
        io::copy(content, &mut writer)?;
        let (buffered, digest, size) = writer.finish();
        let temp = buffered
            .into_inner()
            .map_err(|e| Error::new("cannot write a blob").with_source(e.into_error()))?;
        if let Some(expected) = expected {
            if &digest != expected {
                return Err(Error::new(format!(
                    "blob has digest {digest}, expected {expected}"
                )));
            }
        }
        temp.as_file().sync_all()?;
        let path = blob_path(&self.root, &digest);
        if !path.exists() {
            temp.persist(&path).map_err(|e| {
                Error::new(format!("cannot store blob {digest}")).with_source(e.error)
            })?;
        }
        Ok(BlobDescriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            annotations: Default::default(),
        })
    }

    fn link_blob(&mut self, desc: &BlobDescriptor, file: &Path) -> Result<bool> {
        self.link_in(desc, file, true)
    }

    fn put_checked_copy(&mut self, desc: &BlobDescriptor, file: &Path) -> Result<bool> {
        self.link_in(desc, file, false)
    }

    fn put_blob_file(&mut self, desc: &BlobDescriptor, path: &Path) -> Result<()> {
        let target = blob_path(&self.root, &desc.digest);
        if target.exists() {
            return Ok(());
        }
        // The staged file becomes the blob: make it durable first.
        File::open(path)
            .and_then(|f| f.sync_all())
            .ctx(|| format!("syncing {}", path.display()))?;
        if fs::rename(path, &target).is_ok() {
            return Ok(());
        }
        // Another filesystem: copy instead.
        let mut file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
        self.put_blob(&desc.media_type, Some(&desc.digest), &mut file)?;
        Ok(())
    }

    fn commit(mut self: Box<Self>, image: &OutputImage) -> Result<Committed> {
        let (manifest, referrers) = self.write_image(image)?;
        self.finish(&manifest, referrers)
    }

    fn commit_index(mut self: Box<Self>, images: &[(Platform, OutputImage)]) -> Result<Committed> {
        let mut manifests = Vec::new();
        let mut referrers = Vec::new();
        for (platform, image) in images {
            let (manifest, more) = self.write_image(image)?;
            manifests.push((platform.clone(), manifest));
            referrers.extend(more);
        }
        let index = manifest::write_platform_index(&manifests);
        let index = self.write_document(media_type::OCI_INDEX, &index)?;
        self.finish(&index, referrers)
    }
}

impl OciLayoutSink {
    /// Writes an image's config and manifest, and its referrers (the
    /// SBOM: an artifact manifest whose subject is the image); returns the
    /// manifest and the referrers' index.json entries.
    fn write_image(
        &mut self,
        image: &OutputImage,
    ) -> Result<(BlobDescriptor, Vec<serde_json::Value>)> {
        let config = self.write_document(media_type::OCI_CONFIG, &image.config)?;
        let manifest_bytes =
            manifest::write_oci_manifest(&config, &image.layers, &image.annotations)?;
        let manifest = self.write_document(media_type::OCI_MANIFEST, &manifest_bytes)?;
        let mut entries = Vec::new();
        for referrer in &image.referrers {
            let blob = self.write_document(&referrer.artifact_type, &referrer.data)?;
            self.write_document(media_type::OCI_EMPTY, manifest::EMPTY_CONFIG)?;
            let bytes = manifest::write_artifact_manifest(referrer, &blob, &manifest);
            let artifact = self.write_document(media_type::OCI_MANIFEST, &bytes)?;
            entries.push(manifest::referrer_descriptor(
                &artifact,
                &referrer.artifact_type,
                &referrer.annotations,
            ));
        }
        Ok((manifest, entries))
    }

    /// Tags `top` (a manifest or an index), lists the referrers, and makes
    /// the layout visible.
    fn finish(
        mut self,
        top: &BlobDescriptor,
        referrers: Vec<serde_json::Value>,
    ) -> Result<Committed> {
        let mut entries = std::mem::take(&mut self.existing);
        entries.push(manifest::index_entry(
            top,
            &[(REF_NAME_ANNOTATION.to_string(), self.tag.clone())],
        ));
        entries.extend(referrers);
        let manifest = top;
        let index = manifest::write_oci_index(&entries);
        write_atomically(&self.root.join(LAYOUT_FILE), LAYOUT_CONTENT)?;
        write_atomically(&self.root.join("index.json"), &index)?;
        if let Some(staging) = self.staging.take() {
            let staged = staging.keep();
            if let Err(err) = fs::rename(&staged, &self.dir) {
                let _ = fs::remove_dir_all(&staged);
                return Err(Error::new(format!(
                    "cannot move the new layout to {}",
                    self.dir.display()
                ))
                .with_source(err)
                .hint("the directory was created by someone else meanwhile; choose another path"));
            }
        }
        let what = if manifest::is_index_media_type(&manifest.media_type) {
            "index"
        } else {
            "manifest"
        };
        Ok(Committed {
            digest: manifest.digest.clone(),
            description: format!(
                "wrote {} ({what} {})",
                ImageRefDisplay(&self.dir, &self.tag),
                manifest.digest
            ),
        })
    }
}

struct ImageRefDisplay<'a>(&'a Path, &'a str);

impl std::fmt::Display for ImageRefDisplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci:{}:{}", self.0.display(), self.1)
    }
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(&crate::scratch::prefix("doc"))
        .tempfile_in(dir)
        .ctx(|| format!("writing {}", path.display()))?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path)
        .map_err(|e| Error::new(format!("cannot write {}", path.display())).with_source(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn link_blob_links_only_bytes_that_match_the_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = OciLayoutSink::create(&dir.path().join("out"), "x", "out".into()).unwrap();
        let source = dir.path().join("blob");
        fs::write(&source, b"layer bytes").unwrap();
        let desc = BlobDescriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            digest: Digest::of(b"layer bytes"),
            size: 11,
            annotations: Default::default(),
        };
        // Bytes that are not the descriptor's: refused, nothing kept.
        let other = dir.path().join("other");
        fs::write(&other, b"other bytes").unwrap();
        assert!(!sink.link_blob(&desc, &other).unwrap());
        let blobs = sink.root.join("blobs/sha256");
        assert_eq!(fs::read_dir(&blobs).unwrap().count(), 0);
        // A symlink is not followed.
        let link = dir.path().join("symlink");
        std::os::unix::fs::symlink(&source, &link).unwrap();
        assert!(!sink.link_blob(&desc, &link).unwrap());
        // The right bytes: the blob is the same inode.
        assert!(sink.link_blob(&desc, &source).unwrap());
        let kept = fs::metadata(blob_path(&sink.root, &desc.digest)).unwrap();
        assert_eq!(kept.ino(), fs::metadata(&source).unwrap().ino());
        assert_eq!(fs::read_dir(&blobs).unwrap().count(), 1);
    }
}
