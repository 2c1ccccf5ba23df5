//! A layer's entries, as its scan finds them, kept on disk rather than in
//! memory: a zstd stream of length-prefixed postcard records in archive
//! order, read back once, in order, when the layer is laid on the merged
//! tree ([`crate::tree`]). Nothing looks anything up in it; the tree is the
//! index.
//!
//! The log's SHA-256 is taken as it is written, so a copy kept in the
//! [`crate::store`] is checked before it is read again.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, Result};
use crate::layer::{EntryMeta, ImagePath};

/// No record is longer: a path, a link and extended attributes (each
/// bounded by the tar reader to 64 KiB), and a listed file's content (at
/// most 16 MiB, as the scan keeps them).
const MAX_RECORD: usize = 64 << 20;

/// One entry of a layer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LogEntry {
    pub ordinal: u32,
    pub path: ImagePath,
    pub meta: EntryMeta,
    /// Where a file's content starts in the uncompressed layer.
    pub offset: u64,
    /// The content of a file kept on disk ([`crate::listed`]).
    pub content: Option<Vec<u8>>,
}

/// A written log: its file (unnamed, or the store's), how many entries it
/// holds and its digest.
pub(crate) struct EntryLog {
    file: File,
    pub count: u64,
    pub digest: Digest,
}

impl std::fmt::Debug for EntryLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EntryLog({} entries, {})", self.count, self.digest)
    }
}

pub(crate) struct LogWriter {
    out: zstd::Encoder<'static, HashingWriter<BufWriter<File>>>,
    count: u64,
}

fn log_error(err: impl std::fmt::Display) -> Error {
    Error::new(format!("cannot write a layer's entry log: {err}"))
        .hint("check that the temporary directory (TMPDIR) is writable and has space")
}

impl LogWriter {
    /// A log in an unnamed temporary file.
    pub(crate) fn new() -> Result<LogWriter> {
        let file = tempfile::tempfile().map_err(log_error)?;
        let out =
            zstd::Encoder::new(HashingWriter::new(BufWriter::new(file)), 1).map_err(log_error)?;
        Ok(LogWriter { out, count: 0 })
    }

    pub(crate) fn push(&mut self, entry: &LogEntry) -> Result<()> {
        let bytes = postcard::to_stdvec(entry).map_err(log_error)?;
        self.out
            .write_all(&(bytes.len() as u32).to_le_bytes())
            .and_then(|()| self.out.write_all(&bytes))
            .map_err(log_error)?;
        self.count += 1;
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<EntryLog> {
        let hashing = self.out.finish().map_err(log_error)?;
        let (buffered, digest, _) = hashing.finish();
        let file = buffered.into_inner().map_err(|e| log_error(e.error()))?;
        Ok(EntryLog {
            file,
            count: self.count,
            digest,
        })
    }
}

impl EntryLog {
    /// A log kept elsewhere (in the store), if its bytes have `digest`.
    pub(crate) fn open_checked(mut file: File, count: u64, digest: &Digest) -> Option<EntryLog> {
        file.rewind().ok()?;
        let (found, _) = crate::digest::digest_of(&mut file).ok()?;
        (found == *digest).then(|| EntryLog {
            file,
            count,
            digest: found,
        })
    }

    /// The log's compressed bytes, from the start.
    pub(crate) fn raw(&self) -> Result<BufReader<&File>> {
        let mut file = &self.file;
        file.rewind().map_err(log_error)?;
        Ok(BufReader::new(file))
    }

    /// The entries, in the order they were pushed; reading fails on a log
    /// that is cut short or damaged.
    pub(crate) fn entries(&self) -> Result<Entries<'_>> {
        let decoder = zstd::Decoder::new(self.raw()?).map_err(log_error)?;
        Ok(Entries {
            decoder,
            left: self.count,
            buf: Vec::new(),
        })
    }
}

pub(crate) struct Entries<'a> {
    decoder: zstd::Decoder<'static, BufReader<BufReader<&'a File>>>,
    left: u64,
    buf: Vec<u8>,
}

impl Iterator for Entries<'_> {
    type Item = Result<LogEntry>;

    fn next(&mut self) -> Option<Result<LogEntry>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let damaged = |what: &str| Error::new(format!("a layer's entry log is damaged ({what})"));
        let mut len = [0u8; 4];
        if self.decoder.read_exact(&mut len).is_err() {
            self.left = 0;
            return Some(Err(damaged("cut short")));
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_RECORD {
            self.left = 0;
            return Some(Err(damaged("a record is too long")));
        }
        self.buf.resize(len, 0);
        if self.decoder.read_exact(&mut self.buf).is_err() {
            self.left = 0;
            return Some(Err(damaged("cut short")));
        }
        Some(postcard::from_bytes(&self.buf).map_err(|_| {
            self.left = 0;
            damaged("a record does not decode")
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u32) -> LogEntry {
        LogEntry {
            ordinal: i,
            path: ImagePath::from_static(&format!("d/f{i}")),
            meta: EntryMeta::plain_dir(0o755, u64::from(i)),
            offset: u64::from(i) * 512,
            content: (i % 10 == 0).then(|| vec![i as u8; 3]),
        }
    }

    #[test]
    fn reads_back_what_was_written_and_refuses_a_damaged_copy() {
        let mut writer = LogWriter::new().unwrap();
        for i in 0..1000 {
            writer.push(&entry(i)).unwrap();
        }
        let log = writer.finish().unwrap();
        let back: Vec<LogEntry> = log.entries().unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(back.len(), 1000);
        assert_eq!(back[999].path, entry(999).path);
        assert_eq!(back[7].offset, 7 * 512);
        assert_eq!(back[20].content.as_deref(), Some(&[20u8; 3][..]));
        // Twice: each read starts over.
        assert_eq!(log.entries().unwrap().count(), 1000);

        let mut raw = Vec::new();
        log.raw().unwrap().read_to_end(&mut raw).unwrap();
        let (digest, _) = crate::digest::digest_of(&raw[..]).unwrap();
        assert_eq!(digest, log.digest);
        let copy = |bytes: &[u8]| {
            let mut file = tempfile::tempfile().unwrap();
            file.write_all(bytes).unwrap();
            file
        };
        assert!(EntryLog::open_checked(copy(&raw), 1000, &log.digest).is_some());
        let mut damaged = raw.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 1;
        assert!(EntryLog::open_checked(copy(&damaged), 1000, &log.digest).is_none());
        // A log that claims more entries than it has ends in an error.
        let short = EntryLog::open_checked(copy(&raw), 1001, &log.digest).unwrap();
        let last = short.entries().unwrap().last().unwrap();
        assert!(last.is_err());
    }
}
