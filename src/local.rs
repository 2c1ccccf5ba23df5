//! Components from a directory on this machine (`--backend NAME=DIR`).
//!
//! The directory is written once as an uncompressed layer (entries sorted,
//! owned by root as `COPY` makes them, modes kept, times fixed) and laid on
//! top of the full image as if full had it: so the scan indexes it, the
//! dependency closure follows its ELF files, the plan puts it in a layer of
//! its own, and the store keys it by content like any other layer. A
//! symlink that leaves the directory, or anything but files, directories
//! and symlinks, is refused.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::digest::{CheckpointSlot, Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::image::{media_type, BlobOrigin, ImageSource, SourceImage, SourceLayer};
use crate::layer::ImagePath;

/// Writes `dir` as a layer holding `target` (and everything below it) into
/// `out`; returns its diff-id (and digest: the layer is not compressed).
pub(crate) fn layer_from_dir(
    dir: &Path,
    target: &ImagePath,
    mtime: u64,
    out: &Path,
) -> Result<Digest> {
    let meta = fs::metadata(dir).ctx(|| format!("reading {}", dir.display()))?;
    if !meta.is_dir() {
        return Err(Error::new(format!("{} is not a directory", dir.display()))
            .hint("name a directory holding the component's files: --backend NAME=DIR"));
    }
    let file = File::create(out).ctx(|| format!("writing {}", out.display()))?;
    let mut builder = tar::Builder::new(HashingWriter::new(BufWriter::new(file)));
    let mut entries = Vec::new();
    walk(dir, dir, &mut entries)?;
    append(&mut builder, dir, target, &meta, mtime)?;
    for path in entries {
        let relative = path.strip_prefix(dir).expect("below dir");
        let name = target.join(relative.as_os_str().as_encoded_bytes());
        let meta = fs::symlink_metadata(&path).ctx(|| format!("reading {}", path.display()))?;
        append(&mut builder, &path, &name, &meta, mtime)?;
    }
    let hashing = builder
        .into_inner()
        .map_err(|e| Error::new("cannot finish a local layer").with_source(e))?;
    let (mut file, digest, _) = hashing.finish();
    file.flush()?;
    Ok(digest)
}

/// Every path below `dir`, sorted (parents before children), refusing
/// what a component directory cannot hold.
fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut children: Vec<PathBuf> = fs::read_dir(dir)
        .ctx(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .ctx(|| format!("reading {}", dir.display()))?;
    children.sort();
    for path in children {
        let meta = fs::symlink_metadata(&path).ctx(|| format!("reading {}", path.display()))?;
        out.push(path.clone());
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path)?;
            if !stays_inside(root, &path, &target) {
                return Err(Error::new(format!(
                    "{} is a symlink to {}, which leaves {}",
                    path.display(),
                    target.display(),
                    root.display()
                ))
                .hint(
                    "a component directory must hold what it links to; copy the file in instead",
                ));
            }
        } else if meta.is_dir() {
            walk(root, &path, out)?;
        } else if !meta.is_file() {
            return Err(Error::new(format!(
                "{} is neither a file, a directory nor a symlink",
                path.display()
            )));
        }
    }
    Ok(())
}

/// True when a relative symlink at `link` resolves inside `root`.
fn stays_inside(root: &Path, link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let base = link.parent().unwrap_or(root);
    let mut depth = base
        .strip_prefix(root)
        .map(|p| p.components().count() as i64)
        .unwrap_or(-1);
    for part in target.components() {
        match part {
            std::path::Component::ParentDir => depth -= 1,
            std::path::Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    name: &ImagePath,
    meta: &fs::Metadata,
    mtime: u64,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut header = tar::Header::new_gnu();
    header.set_mode(meta.permissions().mode() & 0o7777);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    let name_text = String::from_utf8_lossy(name.as_bytes()).into_owned();
    let failed = |e: std::io::Error| {
        Error::new(format!("cannot add {} to its layer", path.display())).with_source(e)
    };
    if meta.file_type().is_symlink() {
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        let target = fs::read_link(path)?;
        builder
            .append_link(&mut header, &name_text, &target)
            .map_err(failed)?;
    } else if meta.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        builder
            .append_data(&mut header, format!("{name_text}/"), std::io::empty())
            .map_err(failed)?;
    } else {
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(meta.len());
        let file = File::open(path).ctx(|| format!("reading {}", path.display()))?;
        builder
            .append_data(&mut header, &name_text, file.take(meta.len()))
            .map_err(failed)?;
    }
    Ok(())
}

/// The full image with layers from this machine on top.
pub(crate) struct WithLocalLayers {
    inner: Box<dyn ImageSource>,
    image: SourceImage,
    files: Vec<PathBuf>,
}

impl WithLocalLayers {
    /// `layers`: (uncompressed tar file, its diff-id), bottom first.
    pub(crate) fn new(inner: Box<dyn ImageSource>, layers: Vec<(PathBuf, Digest)>) -> Result<Self> {
        let mut image = inner.image().clone();
        let mut files = Vec::new();
        for (file, diff_id) in layers {
            let size = fs::metadata(&file)?.len();
            image.layers.push(SourceLayer {
                media_type: media_type::OCI_LAYER.to_string(),
                blob: Some((diff_id.clone(), size)),
                diff_id: diff_id.clone(),
            });
            if let Some(ids) = image
                .config
                .pointer_mut("/rootfs/diff_ids")
                .and_then(serde_json::Value::as_array_mut)
            {
                ids.push(serde_json::Value::String(diff_id.to_string()));
            }
            files.push(file);
        }
        Ok(WithLocalLayers {
            inner,
            image,
            files,
        })
    }

    /// How many layers the image itself has (the local ones come after).
    pub(crate) fn own_layers(&self) -> usize {
        self.image.layers.len() - self.files.len()
    }

    fn local(&self, index: usize) -> Option<&PathBuf> {
        index
            .checked_sub(self.own_layers())
            .and_then(|i| self.files.get(i))
    }
}

impl ImageSource for WithLocalLayers {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn image(&self) -> &SourceImage {
        &self.image
    }

    fn open_layer_checked(
        &self,
        index: usize,
        checkpoints: Option<CheckpointSlot>,
    ) -> Result<Box<dyn Read + Send + '_>> {
        match self.local(index) {
            // Our own layer of the user's files, written by this run.
            Some(path) => Ok(Box::new(
                File::open(path).ctx(|| format!("reading {}", path.display()))?,
            )),
            None => self.inner.open_layer_checked(index, checkpoints),
        }
    }

    fn open_layer_range(
        &self,
        index: usize,
        start: u64,
        len: u64,
    ) -> Result<Option<Box<dyn Read + Send + '_>>> {
        match self.local(index) {
            Some(path) => {
                let mut file = File::open(path).ctx(|| format!("reading {}", path.display()))?;
                file.seek(std::io::SeekFrom::Start(start))?;
                Ok(Some(Box::new(file.take(len))))
            }
            None => self.inner.open_layer_range(index, start, len),
        }
    }

    fn origin(&self) -> Option<BlobOrigin> {
        self.inner.origin()
    }
}

/// Copies `dir` into `to` (the Dockerfile's build context), symlinks kept.
pub(crate) fn copy_tree(dir: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        fs::remove_dir_all(to).ctx(|| format!("replacing {}", to.display()))?;
    }
    let mut entries = Vec::new();
    walk(dir, dir, &mut entries)?;
    fs::create_dir_all(to).ctx(|| format!("writing {}", to.display()))?;
    for path in entries {
        let dest = to.join(path.strip_prefix(dir).expect("below dir"));
        let meta = fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&path)?, &dest)?;
        } else if meta.is_dir() {
            fs::create_dir_all(&dest)?;
        } else {
            fs::copy(&path, &dest).ctx(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}
