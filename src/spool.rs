//! A scratch file holding the content of the entries a compose needs, keyed
//! by inode, so that output layers can be written in sorted order after their
//! sources were read once in archive order. It holds only what was selected,
//! never a whole image, and disappears with its directory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::tree::InodeRef;

pub struct Spool {
    writer: BufWriter<File>,
    reader: File,
    len: u64,
    index: HashMap<InodeRef, (u64, u64)>,
}

impl Spool {
    pub fn create(dir: &Path) -> Result<Spool> {
        let file = tempfile::tempfile_in(dir)
            .ctx(|| format!("creating a scratch file in {}", dir.display()))?;
        let reader = file.try_clone()?;
        Ok(Spool {
            writer: BufWriter::with_capacity(1 << 20, file),
            reader,
            len: 0,
            index: HashMap::new(),
        })
    }

    pub fn contains(&self, inode: InodeRef) -> bool {
        self.index.contains_key(&inode)
    }

    /// Copies `content` (exactly `size` bytes) in under `inode`.
    pub fn store(&mut self, inode: InodeRef, size: u64, content: &mut dyn Read) -> Result<()> {
        if self.index.contains_key(&inode) {
            return Ok(());
        }
        let copied = io::copy(&mut content.take(size), &mut self.writer)
            .map_err(|e| Error::from(e).context("writing to the scratch file"))?;
        if copied != size {
            return Err(Error::new(format!(
                "an entry promised {size} bytes but its layer ended after {copied}"
            ))
            .hint("the layer is truncated; fetch or export the image again"));
        }
        self.index.insert(inode, (self.len, size));
        self.len += size;
        Ok(())
    }

    /// Makes everything stored so far readable.
    pub fn flush(&mut self) -> Result<()> {
        self.writer.flush()?;
        Ok(())
    }

    /// Random access to an inode's content. Call [`Spool::flush`] after storing.
    pub fn slice(&self, inode: InodeRef) -> Option<SpoolSlice<'_>> {
        let &(offset, len) = self.index.get(&inode)?;
        Some(SpoolSlice {
            file: &self.reader,
            offset,
            len,
        })
    }

    /// Reads back an inode's content. Call [`Spool::flush`] after storing.
    pub fn open(&self, inode: InodeRef) -> Option<SpoolReader<'_>> {
        let &(offset, len) = self.index.get(&inode)?;
        Some(SpoolReader {
            file: &self.reader,
            offset,
            remaining: len,
        })
    }
}

/// Random access to one stored inode.
pub struct SpoolSlice<'a> {
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

pub struct SpoolReader<'a> {
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
