//! Layer compression: detecting it from magic bytes when reading, and the
//! compressors we write with. Output bytes depend on the compressor and its
//! version (pinned in Cargo.lock), which is why digests are reproducible only
//! with the same build of this tool.

use std::io::{self, BufRead, BufReader, Read, Write};

use flate2::read::MultiGzDecoder;

use super::pgzip::ParallelGzip;

use crate::error::{Error, Result};

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Wraps a layer blob in the decompressor its first bytes call for.
pub(crate) fn decompress<'a>(raw: impl Read + Send + 'a) -> Result<Box<dyn Read + Send + 'a>> {
    let mut buffered = BufReader::with_capacity(1 << 20, raw);
    let head = buffered.fill_buf()?;
    if head.starts_with(GZIP_MAGIC) {
        Ok(Box::new(MultiGzDecoder::new(buffered)))
    } else if head.starts_with(ZSTD_MAGIC) {
        let decoder = zstd::stream::read::Decoder::with_buffer(buffered)
            .map_err(|e| Error::new("cannot start a zstd decoder").with_source(e))?;
        Ok(Box::new(decoder))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Like [`decompress`], but a gzip layer is inflated by
/// [`super::ztoc::IndexingReader`], which puts its access points in `slot`
/// at the end of the stream.
pub(crate) fn decompress_indexed<'a>(
    raw: impl Read + Send + 'a,
    slot: std::sync::Arc<std::sync::Mutex<Option<super::ztoc::AccessIndex>>>,
) -> Result<Box<dyn Read + Send + 'a>> {
    let mut buffered = BufReader::with_capacity(1 << 20, raw);
    if buffered.fill_buf()?.starts_with(GZIP_MAGIC) {
        let indexing = super::ztoc::IndexingReader::with_slot(buffered, slot)?;
        return Ok(Box::new(BufReader::with_capacity(256 << 10, indexing)));
    }
    decompress(buffered)
}

/// How new layers are compressed. The default is gzip at level 6, what
/// Docker writes and every runtime reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip { level: u32 },
    Zstd { level: i32 },
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip { level: 6 }
    }
}

impl Compression {
    pub(super) fn writer<W: Write + Send + 'static>(self, inner: W) -> Result<Compressor<W>> {
        Ok(match self {
            Compression::Gzip { level } => Compressor::Gzip(ParallelGzip::new(inner, level)),
            Compression::Zstd { level } => {
                let mut encoder = zstd::stream::write::Encoder::new(inner, level)
                    .map_err(|e| Error::new("cannot start a zstd encoder").with_source(e))?;
                // Multi-threaded mode always (even with one worker): its output
                // is the same for any worker count, unlike single-threaded mode.
                let workers = super::threads() as u32;
                encoder
                    .multithread(workers.max(1))
                    .map_err(|e| Error::new("cannot enable zstd workers").with_source(e))?;
                Compressor::Zstd(encoder)
            }
        })
    }
}

pub(super) enum Compressor<W: Write> {
    Gzip(ParallelGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    pub(super) fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Gzip(e) => e.finish(),
            Compressor::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(e) => e.write(buf),
            Compressor::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(e) => e.flush(),
            Compressor::Zstd(e) => e.flush(),
        }
    }
}
