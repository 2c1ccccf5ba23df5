//! Layer compression: detecting it from magic bytes when reading, and the
//! compressors we write with. Output bytes depend on the compressor and its
//! version (pinned exactly in Cargo.toml: `libdeflate-sys` for gzip, `zstd`
//! for zstd), which is why digests are reproducible only with the same
//! build of this tool; the golden digests below fail when a bump changes
//! them.

use std::io::{self, BufRead, BufReader, Read, Write};

use flate2::read::MultiGzDecoder;

use super::cost::Profile;
use super::gzip::ParallelGzip;

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
    slot: std::sync::Arc<std::sync::Mutex<Option<super::ztoc::PointsFound>>>,
) -> Result<Box<dyn Read + Send + 'a>> {
    let mut buffered = BufReader::with_capacity(1 << 20, raw);
    if buffered.fill_buf()?.starts_with(GZIP_MAGIC) {
        let indexing = super::ztoc::IndexingReader::with_slot(buffered, slot)?;
        return Ok(Box::new(BufReader::with_capacity(256 << 10, indexing)));
    }
    decompress(buffered)
}

/// How new layers are compressed. The default is gzip (every runtime reads
/// it) at libdeflate's level [`DEFAULT_GZIP_LEVEL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip {
        level: u32,
    },
    Zstd {
        level: i32,
    },
    /// eStargz ([`super::estargz`]): gzip a lazy pull can mount.
    Estargz {
        level: u32,
    },
}

/// The default gzip level: see the README's "Compression" for how it was
/// chosen.
pub(crate) const DEFAULT_GZIP_LEVEL: u32 = 4;

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip {
            level: DEFAULT_GZIP_LEVEL,
        }
    }
}

impl Compression {
    pub(super) fn writer<W: Write + Send + 'static>(self, inner: W) -> Result<Compressor<W>> {
        Ok(match self {
            Compression::Gzip { level } => Compressor::Gzip(ParallelGzip::new(inner, level)),
            Compression::Estargz { level } => Compressor::Gzip(ParallelGzip::cut_by_caller(
                inner,
                level,
                super::estargz::CHUNK as usize,
            )),
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
    /// Ends the stream; with gzip, also where each member ended.
    pub(super) fn finish(self) -> io::Result<(W, Option<Profile>)> {
        match self {
            Compressor::Gzip(e) => e.finish().map(|(w, p)| (w, Some(p))),
            Compressor::Zstd(e) => Ok((e.finish()?, None)),
        }
    }

    /// The stream's writer.
    pub(super) fn get_ref(&self) -> &W {
        match self {
            Compressor::Gzip(e) => e.get_ref(),
            Compressor::Zstd(e) => e.get_ref(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    /// A fixed input like a layer's: tar-like headers, text and ELF-like
    /// noise, over several gzip members.
    fn layer_like(len: usize) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            match state % 3 {
                0 => out.extend_from_slice(
                    b"opt/tritonserver/backends/python/triton_python_backend_utils.py\0",
                ),
                1 => out.extend_from_slice(&state.to_le_bytes()[..(state >> 60) as usize % 8]),
                _ => out.extend(std::iter::repeat_n(
                    (state >> 8) as u8,
                    (state >> 56) as usize % 64,
                )),
            }
        }
        out.truncate(len);
        out
    }

    fn digest_of(compression: Compression, data: &[u8]) -> String {
        let mut writer = compression.writer(Vec::new()).unwrap();
        for piece in data.chunks(300_007) {
            writer.write_all(piece).unwrap();
        }
        let (bytes, _) = writer.finish().unwrap();
        let mut back = Vec::new();
        decompress(&bytes[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data, "{compression:?} does not give back its input");
        hex::encode(Sha256::digest(&bytes))
    }

    /// Golden digests: the bytes our compressors make of a fixed input.
    /// When one fails, a dependency bump changed the output of new layers
    /// (and so every digest users pinned): that is a new program version,
    /// to be said in the changelog, and only then are these updated.
    #[test]
    fn compressors_make_the_same_bytes_as_before() {
        assert_eq!(DEFAULT_GZIP_LEVEL, 4, "the default level's digest is below");
        let data = layer_like(5 << 20 | 12_345);
        let cases = [
            (Compression::default(), "default gzip"),
            (Compression::Gzip { level: 1 }, "gzip level 1"),
            (Compression::Gzip { level: 9 }, "gzip level 9"),
            (Compression::Zstd { level: 3 }, "zstd level 3"),
        ];
        let got: Vec<String> = cases
            .iter()
            .map(|(c, name)| format!("{name}: {}", digest_of(*c, &data)))
            .collect();
        let want = [
            "default gzip: 2affdf41bd7c2a767db9d8f657e4b8c4d2ad051d4612ea670e4171af985b97de",
            "gzip level 1: 11067ce2d0a36529c7025495923a4cac112f6b4ff42cda947bea2a789a59d741",
            "gzip level 9: 8671715c5b8b9b0c782ca11dada13ae43191be4e56afd66c6106f936acc8b805",
            "zstd level 3: 726131853575a057f21b0f6b66d810e098c58203cd69c5b8e2e8042d37f3e86a",
        ];
        assert_eq!(got, want);
    }
}
