//! Scratch files holding the content of the entries a compose needs, keyed
//! by inode, so that output layers can be written in sorted order after their
//! sources were read once in archive order. It holds only what was selected,
//! never a whole image, and disappears with its directory. Layers read in
//! parallel each fill a spool of their own, which one spool then absorbs.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::tree::InodeRef;

pub(crate) struct Spool {
    dir: PathBuf,
    /// The file being appended to: its index in `files` and its length.
    active: Option<(usize, BufWriter<File>, u64)>,
    /// Every file, for reading.
    files: Vec<File>,
    /// inode -> (file, offset, length)
    index: HashMap<InodeRef, (usize, u64, u64)>,
}

impl Spool {
    /// A spool whose files go in `dir`; none is made until something is stored.
    pub(crate) fn create(dir: &Path) -> Result<Spool> {
        Ok(Spool {
            dir: dir.to_path_buf(),
            active: None,
            files: Vec::new(),
            index: HashMap::new(),
        })
    }

    /// Where its files go.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn contains(&self, inode: InodeRef) -> bool {
        self.index.contains_key(&inode)
    }

    /// The bytes of content it holds.
    pub(crate) fn held(&self) -> u64 {
        self.index.values().map(|&(_, _, len)| len).sum()
    }

    /// Copies `content` (exactly `size` bytes) in under `inode`.
    pub(crate) fn store(
        &mut self,
        inode: InodeRef,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<()> {
        if self.index.contains_key(&inode) {
            return Ok(());
        }
        self.activate()?;
        let (file, writer, len) = self.active.as_mut().expect("just made");
        let copied = io::copy(&mut content.take(size), writer)
            .map_err(|e| Error::from(e).context("writing to the scratch file"))?;
        if copied != size {
            return Err(Error::new(format!(
                "an entry promised {size} bytes but its layer ended after {copied}"
            ))
            .hint("the layer is truncated; fetch or export the image again"));
        }
        self.index.insert(inode, (*file, *len, size));
        *len += size;
        Ok(())
    }

    fn activate(&mut self) -> Result<()> {
        if self.active.is_none() {
            let file = tempfile::tempfile_in(&self.dir)
                .ctx(|| format!("creating a scratch file in {}", self.dir.display()))?;
            self.files.push(file.try_clone()?);
            self.active = Some((
                self.files.len() - 1,
                BufWriter::with_capacity(1 << 20, file),
                0,
            ));
        }
        Ok(())
    }

    /// Makes everything stored so far readable.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if let Some((_, writer, _)) = &mut self.active {
            writer.flush()?;
        }
        Ok(())
    }

    /// Takes over what another spool holds (a layer read on its own).
    pub(crate) fn absorb(&mut self, mut other: Spool) -> Result<()> {
        other.flush()?;
        let base = self.files.len();
        self.files.append(&mut other.files);
        for (inode, (file, offset, len)) in other.index {
            self.index
                .entry(inode)
                .or_insert((file + base, offset, len));
        }
        Ok(())
    }

    /// Random access to an inode's content. Call [`Spool::flush`] after storing.
    pub(crate) fn slice(&self, inode: InodeRef) -> Option<SpoolSlice<'_>> {
        let &(file, offset, len) = self.index.get(&inode)?;
        Some(SpoolSlice {
            file: &self.files[file],
            offset,
            len,
        })
    }

    /// Reads back an inode's content. Call [`Spool::flush`] after storing.
    pub(crate) fn open(&self, inode: InodeRef) -> Option<SpoolReader<'_>> {
        let &(file, offset, len) = self.index.get(&inode)?;
        Some(SpoolReader {
            file: &self.files[file],
            offset,
            remaining: len,
        })
    }
}

/// Random access to one stored inode.
pub(crate) struct SpoolSlice<'a> {
    file: &'a File,
    offset: u64,
    len: u64,
}

impl crate::elf::ReadAt for SpoolSlice<'_> {
    fn fill_at(&self, buf: &mut [u8], offset: u64) -> bool {
        offset.saturating_add(buf.len() as u64) <= self.len
            && self.file.read_exact_at(buf, self.offset + offset).is_ok()
    }
}

pub(crate) struct SpoolReader<'a> {
    file: &'a File,
    offset: u64,
    remaining: u64,
}

impl Read for SpoolReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (buf.len() as u64).min(self.remaining) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.offset)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "scratch file truncated",
            ));
        }
        self.offset += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }
}
