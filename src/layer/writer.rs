//! Writes a layer: deterministic tar headers, piped through the compressor,
//! with the uncompressed bytes hashed for the diff-id and the compressed
//! bytes hashed for the digest, in one pass.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use tar::{EntryType, Header};

use super::compression::{Compression, Compressor};
use super::entry::{EntryKind, EntryMeta, ImagePath};
use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, Result};

type Sink = HashingWriter<BufWriter<File>>;

pub(crate) struct LayerWriter {
    builder: tar::Builder<HashingWriter<Compressor<Sink>>>,
}

/// What was written: both digests and the compressed size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenLayer {
    pub diff_id: Digest,
    pub digest: Digest,
    pub size: u64,
}

impl LayerWriter {
    pub(crate) fn new(file: File, compression: Compression) -> Result<Self> {
        let sink = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
        let compressor = compression.writer(sink)?;
        let mut builder = tar::Builder::new(HashingWriter::new(compressor));
        builder.follow_symlinks(false);
        Ok(LayerWriter { builder })
    }

    /// Appends one entry. `content` must yield exactly `meta.size` bytes for
    /// files. A `HardLink` entry's `link_target` names an entry written
    /// earlier in this layer.
    pub(crate) fn append(
        &mut self,
        path: &ImagePath,
        meta: &EntryMeta,
        content: Option<&mut dyn Read>,
    ) -> Result<()> {
        let mut header = header(meta)?;
        let size = if meta.kind == EntryKind::File {
            meta.size
        } else {
            0
        };
        header.set_size(size);
        if !meta.xattrs.is_empty() {
            let records: Vec<(String, &[u8])> = meta
                .xattrs
                .iter()
                .map(|(name, value)| (format!("SCHILY.xattr.{name}"), value.as_slice()))
                .collect();
            self.builder
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
                .map_err(|e| write_error(path, e))?;
        }
        let mut name = path.as_bytes().to_vec();
        if meta.kind == EntryKind::Dir {
            name.push(b'/');
        }
        let name = bytes_path(&name);
        match meta.kind {
            EntryKind::Symlink | EntryKind::HardLink => {
                let target = meta
                    .link_target
                    .as_deref()
                    .ok_or_else(|| Error::new(format!("link {path} has no target")))?;
                self.builder
                    .append_link(&mut header, name, bytes_path(target))
                    .map_err(|e| write_error(path, e))?;
            }
            EntryKind::File => {
                let content =
                    content.ok_or_else(|| Error::new(format!("no content for file {path}")))?;
                let mut exact = ExactReader {
                    inner: content.take(size),
                    remaining: size,
                };
                self.builder
                    .append_data(&mut header, name, &mut exact)
                    .map_err(|e| write_error(path, e))?;
            }
            _ => {
                self.builder
                    .append_data(&mut header, name, io::empty())
                    .map_err(|e| write_error(path, e))?;
            }
        }
        Ok(())
    }

    /// Appends an OCI whiteout: `path` is deleted from the layers beneath.
    pub(crate) fn whiteout(&mut self, path: &ImagePath) -> Result<()> {
        let name = [b".wh.".as_slice(), path.file_name()].concat();
        let marker = path.parent().unwrap_or_default().join(&name);
        self.append(&marker, &marker_meta(), Some(&mut io::empty()))
    }

    /// Appends an opaque marker: `dir`'s contents beneath are hidden.
    pub(crate) fn opaque(&mut self, dir: &ImagePath) -> Result<()> {
        self.append(
            &dir.join(b".wh..wh..opq"),
            &marker_meta(),
            Some(&mut io::empty()),
        )
    }

    /// Ends the archive, flushes everything and returns the digests.
    pub(crate) fn finish(self) -> Result<WrittenLayer> {
        let uncompressed = self
            .builder
            .into_inner()
            .map_err(|e| Error::new("cannot finish the layer archive").with_source(e))?;
        let (compressor, diff_id, _) = uncompressed.finish();
        let sink = compressor
            .finish()
            .map_err(|e| Error::new("cannot finish compressing the layer").with_source(e))?;
        let (mut file, digest, size) = sink.finish();
        file.flush()?;
        // No fsync: the file is staging. A sink that keeps it (an OCI
        // layout renaming it into place) makes it durable there.
        file.into_inner()
            .map_err(|e| Error::new("cannot flush the layer").with_source(e.into_error()))?;
        Ok(WrittenLayer {
            diff_id,
            digest,
            size,
        })
    }
}

/// An empty root-owned file, as whiteouts are written.
fn marker_meta() -> EntryMeta {
    EntryMeta {
        kind: EntryKind::File,
        mode: 0o644,
        ..EntryMeta::plain_dir(0, 0)
    }
}

fn bytes_path(bytes: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(bytes))
}

/// The tar header of an entry, but for its name and size.
fn header(meta: &EntryMeta) -> Result<Header> {
    let mut header = Header::new_gnu();
    header.set_entry_type(match meta.kind {
        EntryKind::File => EntryType::Regular,
        EntryKind::Dir => EntryType::Directory,
        EntryKind::Symlink => EntryType::Symlink,
        EntryKind::HardLink => EntryType::Link,
        EntryKind::CharDevice => EntryType::Char,
        EntryKind::BlockDevice => EntryType::Block,
        EntryKind::Fifo => EntryType::Fifo,
    });
    header.set_mode(meta.mode);
    header.set_uid(meta.uid);
    header.set_gid(meta.gid);
    header.set_mtime(meta.mtime);
    if let Some(uname) = &meta.uname {
        // Names longer than the header field are dropped; ids are what count.
        let _ = header.set_username(uname);
    }
    if let Some(gname) = &meta.gname {
        let _ = header.set_groupname(gname);
    }
    if matches!(meta.kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
        header
            .set_device_major(meta.device.0)
            .and_then(|_| header.set_device_minor(meta.device.1))
            .map_err(|e| Error::new("cannot write a device number").with_source(e))?;
    }
    Ok(header)
}

fn write_error(path: &ImagePath, err: io::Error) -> Error {
    Error::from(err).context(format!("writing {path} into a new layer"))
}

/// Fails if the content ends before the size promised in the header.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.remaining > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file content ended early",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}
