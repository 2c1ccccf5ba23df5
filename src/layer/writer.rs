//! Writes a layer: deterministic tar headers, piped through the compressor,
//! with the uncompressed bytes hashed for the diff-id and the compressed
//! bytes hashed for the digest, in one pass.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

use super::compression::{Compression, Compressor};
use super::cost::Profile;
use super::entry::{EntryKind, EntryMeta, ImagePath};
use super::estargz::{self, EstargzFacts, Toc};
use super::gzip::ParallelGzip;
use crate::digest::{Digest, FileDigests, HashingWriter};
use crate::elf::ElfHashingReader;
use crate::error::{Error, Result};

type Sink = HashingWriter<BufWriter<File>>;

pub(crate) struct LayerWriter {
    builder: tar::Builder<HashingWriter<Compressor<Sink>>>,
    /// The table of contents of an eStargz layer.
    toc: Option<Toc>,
    /// The digests of the ELF files written, for the SBOM.
    elf_files: Vec<(ImagePath, FileDigests)>,
    /// Where each entry the caller marked ([`LayerWriter::entry_start`])
    /// starts in the uncompressed stream.
    starts: Vec<u64>,
    /// zstd's output, sampled at each of those starts.
    sampled: Profile,
}

/// What was written: both digests and the compressed size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenLayer {
    pub diff_id: Digest,
    pub digest: Digest,
    pub size: u64,
    /// What an eStargz layer's descriptor says of it.
    pub estargz: Option<EstargzFacts>,
    /// The ELF files it holds and their content digests, in the order
    /// written: what the SBOM lists of files no package owns.
    pub elf_files: Vec<(ImagePath, FileDigests)>,
    /// What each entry the writer was told of costs compressed
    /// ([`super::cost`]), in order; `None` when it was told of none (no
    /// cap asked for it) and for a layer taken from the store.
    pub costs: Option<Vec<u64>>,
}

impl LayerWriter {
    pub(crate) fn new(file: File, compression: Compression) -> Result<Self> {
        let sink = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
        let compressor = compression.writer(sink)?;
        let mut builder = tar::Builder::new(HashingWriter::new(compressor));
        builder.follow_symlinks(false);
        let toc = matches!(compression, Compression::Estargz { .. }).then(Toc::default);
        Ok(LayerWriter {
            builder,
            toc,
            elf_files: Vec::new(),
            starts: Vec::new(),
            sampled: Profile::default(),
        })
    }

    /// Marks where the next entry starts: [`WrittenLayer::costs`] has one
    /// cost for each entry so marked.
    pub(crate) fn entry_start(&mut self) {
        let uncompressed = self.builder.get_ref();
        let at = uncompressed.count();
        self.starts.push(at);
        if let Compressor::Zstd(_) = uncompressed.get_ref() {
            self.sampled
                .pass(at, uncompressed.get_ref().get_ref().count());
        }
    }

    /// The eStargz layer's gzip stream, whose members it cuts.
    fn members(&mut self) -> Result<&mut ParallelGzip<Sink>> {
        match self.builder.get_mut().get_mut() {
            Compressor::Gzip(gzip) => Ok(gzip),
            Compressor::Zstd(_) => Err(Error::new("internal error: eStargz is gzip")),
        }
    }

    /// Appends eStargz's landmark: the entries before it are what a lazy
    /// pull fetches first (`prefetch`), or (first in the layer) nothing is.
    /// Other layers get no landmark.
    pub(crate) fn landmark(&mut self, prefetch: bool) -> Result<()> {
        if self.toc.is_none() {
            return Ok(());
        }
        let name = if prefetch {
            estargz::PREFETCH_LANDMARK
        } else {
            estargz::NO_PREFETCH_LANDMARK
        };
        let meta = EntryMeta {
            size: 1,
            ..marker_meta()
        };
        let content = [estargz::LANDMARK_CONTENT];
        self.append(
            &ImagePath::from_static(name),
            &meta,
            Some(&mut &content[..] as &mut dyn Read),
        )
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
        let mut sniffed = content.map(ElfHashingReader::new);
        let content = sniffed.as_mut().map(|c| c as &mut dyn Read);
        self.append_entry(path, meta, &mut header, size, content)?;
        if let Some(digests) = sniffed.and_then(ElfHashingReader::finish) {
            self.elf_files.push((path.clone(), digests));
        }
        Ok(())
    }

    fn append_entry(
        &mut self,
        path: &ImagePath,
        meta: &EntryMeta,
        header: &mut Header,
        size: u64,
        content: Option<&mut dyn Read>,
    ) -> Result<()> {
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
        if let Some(toc) = &mut self.toc {
            toc.entry(&name, meta)?;
            if meta.kind == EntryKind::File && size > 0 {
                let content =
                    content.ok_or_else(|| Error::new(format!("no content for file {path}")))?;
                return self
                    .append_chunked(header, &name, content)
                    .map_err(|e| e.context(format!("writing {path} into a new layer")));
            }
        }
        let name = bytes_path(&name);
        match meta.kind {
            EntryKind::Symlink | EntryKind::HardLink => {
                let target = meta
                    .link_target
                    .as_deref()
                    .ok_or_else(|| Error::new(format!("link {path} has no target")))?;
                self.builder
                    .append_link(header, name, bytes_path(target))
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
                    .append_data(header, name, &mut exact)
                    .map_err(|e| write_error(path, e))?;
            }
            _ => {
                self.builder
                    .append_data(header, name, io::empty())
                    .map_err(|e| write_error(path, e))?;
            }
        }
        Ok(())
    }

    /// A file of an eStargz layer: its header, then its content in chunks,
    /// each starting a gzip member, with their digests in the TOC.
    fn append_chunked(
        &mut self,
        header: &mut Header,
        name: &[u8],
        content: &mut dyn Read,
    ) -> Result<()> {
        let size = header.size()?;
        // The header alone (the tar writer pads only what it copies).
        self.builder
            .append_data(header, bytes_path(name), io::empty())?;
        let mut whole = (size > estargz::CHUNK).then(Sha256::new);
        let mut buf = vec![0u8; 256 << 10];
        let mut done = 0;
        while done < size {
            let len = estargz::CHUNK.min(size - done);
            let member = self.members()?.cut()?;
            let mut chunk = Sha256::new();
            let mut left = len;
            while left > 0 {
                let want = buf.len().min(left as usize);
                let n = content.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(Error::new("file content ended early"));
                }
                chunk.update(&buf[..n]);
                if let Some(whole) = &mut whole {
                    whole.update(&buf[..n]);
                }
                self.builder.get_mut().write_all(&buf[..n])?;
                left -= n as u64;
            }
            let toc = self.toc.as_mut().expect("an eStargz layer");
            toc.chunk(member, done, len, &Digest::from_sha256(&chunk.finalize()));
            done += len;
        }
        if let Some(whole) = whole {
            let toc = self.toc.as_mut().expect("an eStargz layer");
            toc.file_digest(&Digest::from_sha256(&whole.finalize()));
        }
        let padding = (512 - size % 512) % 512;
        self.builder
            .get_mut()
            .write_all(&[0u8; 512][..padding as usize])?;
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
    pub(crate) fn finish(mut self) -> Result<WrittenLayer> {
        let toc = self
            .toc
            .take()
            .map(|toc| self.append_toc(toc))
            .transpose()?;
        let uncompressed = self
            .builder
            .into_inner()
            .map_err(|e| Error::new("cannot finish the layer archive").with_source(e))?;
        let (compressor, diff_id, uncompressed_size) = uncompressed.finish();
        let (mut sink, members) = compressor
            .finish()
            .map_err(|e| Error::new("cannot finish compressing the layer").with_source(e))?;
        let costs = (!self.starts.is_empty()).then(|| {
            let mut profile = members.unwrap_or(self.sampled);
            profile.pass(uncompressed_size, sink.count());
            profile.costs(&self.starts, uncompressed_size)
        });
        let estargz = match toc {
            Some((toc_digest, toc_offset)) => {
                sink.write_all(&estargz::footer(toc_offset))?;
                Some(EstargzFacts {
                    toc_digest,
                    uncompressed_size,
                })
            }
            None => None,
        };
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
            estargz,
            elf_files: self.elf_files,
            costs,
        })
    }

    /// Appends eStargz's table of contents as the last entry, alone in a
    /// gzip member with the archive's end; returns its digest and where
    /// that member starts, for the footer.
    fn append_toc(&mut self, toc: Toc) -> Result<(Digest, u64)> {
        let members = self.members()?;
        members.cut()?;
        let offset = members.written_all()?;
        members.rest_in_one_member();
        let members = &*members;
        let json = toc.finish(|member| members.member_start(member))?;
        let meta = EntryMeta {
            size: json.len() as u64,
            ..marker_meta()
        };
        let mut header = header(&meta)?;
        header.set_size(json.len() as u64);
        self.builder
            .append_data(&mut header, estargz::TOC_NAME, &json[..])
            .map_err(|e| Error::new("cannot write the eStargz table of contents").with_source(e))?;
        Ok((Digest::of(&json), offset))
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
