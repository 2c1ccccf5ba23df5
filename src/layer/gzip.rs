//! Parallel, reproducible gzip on libdeflate: the input is cut into fixed
//! chunks of [`MEMBER`] bytes, and each is compressed on its own, on a
//! shared pool of worker threads, into a whole gzip member (header, deflate,
//! CRC-32, length). The members are written in input order, one after the
//! other: RFC 1952 §2.2 makes a gzip file a series of members, and every
//! runtime's reader (Go's `compress/gzip`, klauspost/pgzip, igzip, pigz)
//! reads them all.
//!
//! A member's bytes depend only on its chunk and the level, never on how
//! many threads there are or which finished first, so a layer's digest is
//! the same on every machine, for one version of libdeflate. libdeflate's
//! compressor has no CPU-dependent path that changes its output (its SIMD
//! only fills the match finder's tables), and `libdeflate-sys` is pinned
//! exactly in Cargo.toml: a new version is a new program version, and the
//! golden digests in `compression.rs`'s tests say so.
//!
//! Each member starts with a fresh window, so it is also where a reader can
//! start inflating: the layer needs no stored access points.
//!
//! The writer keeps a bounded number of chunks in flight (twice the pool's
//! threads), so memory stays flat whatever the layer's size.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{mpsc, Arc, OnceLock};

use libdeflate_sys as sys;

use super::cost::Profile;

/// Uncompressed bytes per member.
pub(crate) const MEMBER: usize = 1 << 20;

/// The levels libdeflate has: 0 stores, 12 is its slowest.
pub(crate) const LEVELS: std::ops::RangeInclusive<u32> = 0..=12;

/// The pool that compresses chunks: one thread per core, or
/// `TRITON_COMPOSE_THREADS` (the output is the same for any number).
pub(crate) fn pool() -> Arc<rayon::ThreadPool> {
    static POOL: OnceLock<Arc<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = crate::layer::threads();
        Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("gzip-{i}"))
                .build()
                .expect("a thread pool can be started"),
        )
    })
    .clone()
}

/// A member being compressed, and how many input bytes it holds.
type Piece = (u64, mpsc::Receiver<io::Result<Vec<u8>>>);

pub(crate) struct ParallelGzip<W: Write> {
    inner: W,
    level: u32,
    pool: Arc<rayon::ThreadPool>,
    /// Input not yet handed to a worker (less than a member).
    pending: Vec<u8>,
    /// The most a member holds: [`MEMBER`], or more for eStargz's chunks.
    member: usize,
    in_flight: VecDeque<Piece>,
    /// How many members were submitted: an empty stream is still one.
    submitted: usize,
    /// Compressed bytes written to `inner` so far.
    written: u64,
    /// Where each member written so far starts, when asked for ([`cut`]).
    ///
    /// [`cut`]: ParallelGzip::cut
    starts: Option<Vec<u64>>,
    /// Where each member written so far ends, in both streams.
    profile: Profile,
    /// Input bytes in the members written so far.
    consumed: u64,
}

impl<W: Write> ParallelGzip<W> {
    pub(crate) fn new(inner: W, level: u32) -> Self {
        Self::with_pool(inner, level, pool())
    }

    pub(crate) fn with_pool(inner: W, level: u32, pool: Arc<rayon::ThreadPool>) -> Self {
        ParallelGzip {
            inner,
            level: level.min(*LEVELS.end()),
            pool,
            pending: Vec::with_capacity(MEMBER),
            member: MEMBER,
            in_flight: VecDeque::new(),
            submitted: 0,
            written: 0,
            starts: None,
            profile: Profile::default(),
            consumed: 0,
        }
    }

    /// A stream whose members hold up to `member` bytes and end where the
    /// caller [cuts](ParallelGzip::cut) too, keeping where each starts:
    /// eStargz's, whose every file chunk is a member of its own.
    pub(crate) fn cut_by_caller(inner: W, level: u32, member: usize) -> Self {
        ParallelGzip {
            member: member.max(1),
            starts: Some(Vec::new()),
            ..Self::new(inner, level)
        }
    }

    /// Ends the member being filled (if it holds anything), so that what is
    /// written next starts a member; returns that member's number (from 0).
    pub(crate) fn cut(&mut self) -> io::Result<usize> {
        if !self.pending.is_empty() {
            self.submit();
            self.drain_to(self.in_flight_limit())?;
        }
        Ok(self.submitted)
    }

    /// Writes every member submitted so far; returns how many compressed
    /// bytes there are.
    pub(crate) fn written_all(&mut self) -> io::Result<u64> {
        self.drain_to(0)?;
        Ok(self.written)
    }

    /// Puts everything written from now on into one member, however long:
    /// eStargz's table of contents, which readers inflate as one member.
    pub(crate) fn rest_in_one_member(&mut self) {
        self.member = usize::MAX;
    }

    /// The writer the members go to.
    pub(crate) fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Where member `number` starts in the compressed stream, once it was
    /// written ([`ParallelGzip::written_all`]).
    pub(crate) fn member_start(&self, number: usize) -> Option<u64> {
        self.starts.as_ref()?.get(number).copied()
    }

    fn in_flight_limit(&self) -> usize {
        2 * self.pool.current_num_threads().max(1)
    }

    fn submit(&mut self) {
        let capacity = self.member.min(MEMBER);
        let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(capacity));
        let length = chunk.len() as u64;
        let level = self.level;
        let (tx, rx) = mpsc::sync_channel(1);
        self.pool.spawn(move || {
            let _ = tx.send(member(&chunk, level));
        });
        self.in_flight.push_back((length, rx));
        self.submitted += 1;
    }

    /// Writes finished members until no more than `limit` are in flight.
    fn drain_to(&mut self, limit: usize) -> io::Result<()> {
        while self.in_flight.len() > limit {
            let (length, piece) = self.in_flight.pop_front().expect("a piece in flight");
            let bytes = piece
                .recv()
                .map_err(|_| io::Error::other("a gzip worker stopped"))??;
            if let Some(starts) = &mut self.starts {
                starts.push(self.written);
            }
            self.inner.write_all(&bytes)?;
            self.written += bytes.len() as u64;
            self.consumed += length;
            self.profile.pass(self.consumed, self.written);
        }
        Ok(())
    }

    /// Compresses what is left; returns the writer and where each member
    /// ended, in both streams.
    pub(crate) fn finish(mut self) -> io::Result<(W, Profile)> {
        if !self.pending.is_empty() || self.submitted == 0 {
            self.submit();
        }
        self.drain_to(0)?;
        Ok((self.inner, self.profile))
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let take = buf.len().min(self.member - self.pending.len());
        self.pending.extend_from_slice(&buf[..take]);
        if self.pending.len() == self.member {
            self.submit();
            self.drain_to(self.in_flight_limit())?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// One libdeflate compressor per worker thread and level, kept for the
/// thread's life (allocating one costs more than compressing a small chunk).
struct Compressor {
    level: u32,
    raw: *mut sys::libdeflate_compressor,
}

impl Drop for Compressor {
    fn drop(&mut self) {
        // SAFETY: `raw` came from libdeflate_alloc_compressor and is freed once.
        unsafe { sys::libdeflate_free_compressor(self.raw) }
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<Compressor>> = const { RefCell::new(None) };
}

/// `chunk` as one whole gzip member: libdeflate's header (no name, no time,
/// OS unknown), the deflate stream, CRC-32 and length.
fn member(chunk: &[u8], level: u32) -> io::Result<Vec<u8>> {
    COMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.as_ref().is_none_or(|c| c.level != level) {
            *slot = None;
            // SAFETY: any level in LEVELS is valid; null means out of memory.
            let raw = unsafe { sys::libdeflate_alloc_compressor(level as i32) };
            if raw.is_null() {
                return Err(io::Error::other("cannot start a libdeflate compressor"));
            }
            *slot = Some(Compressor { level, raw });
        }
        let raw = slot.as_ref().expect("a compressor").raw;
        // SAFETY: `raw` is a live compressor used by this thread only.
        let bound = unsafe { sys::libdeflate_gzip_compress_bound(raw, chunk.len()) };
        let mut out = vec![0u8; bound];
        // SAFETY: `chunk` and `out` are valid for their lengths; the bound
        // is libdeflate's own, so the output fits.
        let written = unsafe {
            sys::libdeflate_gzip_compress(
                raw,
                chunk.as_ptr().cast(),
                chunk.len(),
                out.as_mut_ptr().cast(),
                out.len(),
            )
        };
        if written == 0 {
            return Err(io::Error::other("libdeflate could not compress a chunk"));
        }
        out.truncate(written);
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        crate::layer::ztoc::tests::sample(len, 7)
    }

    fn compress(data: &[u8], threads: usize, chunk: usize, level: u32) -> Vec<u8> {
        let pool = Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap(),
        );
        let mut gz = ParallelGzip::with_pool(Vec::new(), level, pool);
        for piece in data.chunks(chunk) {
            gz.write_all(piece).unwrap();
        }
        gz.finish().unwrap().0
    }

    fn inflate(gz: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(gz)
            .read_to_end(&mut back)
            .unwrap();
        back
    }

    #[test]
    fn same_bytes_for_any_thread_count_and_any_write_sizes() {
        let data = sample(3 * MEMBER + 12_345);
        let one = compress(&data, 1, 7_000, 4);
        let four = compress(&data, 4, 100_000, 4);
        assert_eq!(one, four);
        assert_eq!(inflate(&one), data);
        // Four members, each a whole gzip member with libdeflate's header.
        let members = one.windows(4).filter(|w| w == &[0x1f, 0x8b, 8, 0]).count();
        assert!(members >= 4, "{members}");
        assert!(one.len() < data.len() * 3 / 4, "{}", one.len());
    }

    #[test]
    fn empty_and_exact_member_inputs_are_valid_gzip_at_every_level() {
        for level in LEVELS {
            for len in [0, 1, MEMBER, 2 * MEMBER] {
                let data = sample(len);
                let gz = compress(&data, 2, 4096, level);
                assert_eq!(inflate(&gz), data, "length {len}, level {level}");
                // A reader that stops after the first member is not enough.
                let mut first = Vec::new();
                flate2::read::GzDecoder::new(&gz[..])
                    .read_to_end(&mut first)
                    .unwrap();
                assert_eq!(first.len(), len.min(MEMBER), "length {len}, level {level}");
            }
        }
    }
}
