//! Parallel, deterministic gzip, as pigz makes it: the input is cut into
//! fixed blocks of [`BLOCK`] bytes, each compressed on its own (on a shared
//! pool of worker threads) as raw deflate primed with the last 32 KiB of the
//! block before it, and ended with a sync flush so the pieces concatenate
//! into one deflate stream. A block's bytes depend only on its input, its
//! dictionary and the level, never on how many threads there are or which
//! finished first, so a layer's digest is the same on every machine.
//!
//! The writer keeps a bounded number of blocks in flight (twice the pool's
//! threads), so memory stays flat whatever the layer's size.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{mpsc, Arc, OnceLock};

use flate2::{Compress, FlushCompress, Status};

/// Input bytes per block (pigz's default).
pub(crate) const BLOCK: usize = 128 << 10;
/// How much of the previous block primes the next: deflate's window.
const DICT: usize = 32 << 10;

/// The gzip header: no name, no time, unknown OS (as our layers always had).
const HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff];

/// The pool that compresses blocks: one thread per core, or
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

type Piece = mpsc::Receiver<io::Result<Vec<u8>>>;

pub(crate) struct ParallelGzip<W: Write> {
    inner: W,
    level: u32,
    pool: Arc<rayon::ThreadPool>,
    /// Input not yet handed to a worker (less than a block).
    pending: Vec<u8>,
    /// The last [`DICT`] bytes of the previous block.
    dictionary: Arc<Vec<u8>>,
    in_flight: VecDeque<Piece>,
    crc: crc32fast::Hasher,
    total: u64,
    started: bool,
}

impl<W: Write> ParallelGzip<W> {
    pub(crate) fn new(inner: W, level: u32) -> Self {
        Self::with_pool(inner, level, pool())
    }

    pub(crate) fn with_pool(inner: W, level: u32, pool: Arc<rayon::ThreadPool>) -> Self {
        ParallelGzip {
            inner,
            level,
            pool,
            pending: Vec::with_capacity(BLOCK),
            dictionary: Arc::new(Vec::new()),
            in_flight: VecDeque::new(),
            crc: crc32fast::Hasher::new(),
            total: 0,
            started: false,
        }
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        if !self.started {
            self.inner.write_all(&HEADER)?;
            self.started = true;
        }
        let block = std::mem::replace(&mut self.pending, Vec::with_capacity(BLOCK));
        let dictionary = std::mem::replace(
            &mut self.dictionary,
            Arc::new(block[block.len().saturating_sub(DICT)..].to_vec()),
        );
        let level = self.level;
        let (tx, rx) = mpsc::sync_channel(1);
        self.pool.spawn(move || {
            let _ = tx.send(deflate_block(&block, &dictionary, level, last));
        });
        self.in_flight.push_back(rx);
        let limit = 2 * self.pool.current_num_threads().max(1);
        while self.in_flight.len() > limit || (last && !self.in_flight.is_empty()) {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(piece) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let bytes = piece
            .recv()
            .map_err(|_| io::Error::other("a gzip worker stopped"))??;
        self.inner.write_all(&bytes)
    }

    /// Compresses what is left, writes the trailer and returns the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        self.inner
            .write_all(&self.crc.clone().finalize().to_le_bytes())?;
        self.inner.write_all(&(self.total as u32).to_le_bytes())?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let take = buf.len().min(BLOCK - self.pending.len());
        self.pending.extend_from_slice(&buf[..take]);
        self.crc.update(&buf[..take]);
        self.total += take as u64;
        if self.pending.len() == BLOCK {
            self.submit(false)?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// One block as raw deflate, primed with `dictionary`, ending byte-aligned
/// (sync flush) or, for the last block, with the final deflate block.
fn deflate_block(block: &[u8], dictionary: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    let mut deflate = Compress::new(flate2::Compression::new(level), false);
    if !dictionary.is_empty() {
        deflate
            .set_dictionary(dictionary)
            .map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(block.len() / 2 + 1024);
    loop {
        let consumed = deflate.total_in() as usize;
        let status = deflate
            .compress_vec(&block[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done = deflate.total_in() as usize == block.len()
            && match status {
                Status::StreamEnd => true,
                // A sync flush is complete when it left output room unused.
                Status::Ok | Status::BufError => !last && out.len() < out.capacity(),
            };
        if done {
            return Ok(out);
        }
        out.reserve(out.capacity().max(64 << 10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Half text-like, half noise, so blocks refer back to earlier ones.
                if (i / 5000) % 2 == 0 {
                    b"tritonserver backends "[i % 22]
                } else {
                    state as u8
                }
            })
            .collect()
    }

    fn compress(data: &[u8], threads: usize, chunk: usize) -> Vec<u8> {
        let pool = Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap(),
        );
        let mut gz = ParallelGzip::with_pool(Vec::new(), 6, pool);
        for piece in data.chunks(chunk) {
            gz.write_all(piece).unwrap();
        }
        gz.finish().unwrap()
    }

    #[test]
    fn same_bytes_for_any_thread_count_and_any_write_sizes() {
        let data = sample(3 * BLOCK + 12_345);
        let one = compress(&data, 1, 7_000);
        let four = compress(&data, 4, 100_000);
        assert_eq!(one, four);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&one[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // Primed blocks compress like one stream, not like separate ones.
        assert!(one.len() < data.len() * 3 / 4, "{}", one.len());
    }

    #[test]
    fn empty_and_exact_block_inputs_are_valid_gzip() {
        for len in [0, 1, BLOCK, 2 * BLOCK] {
            let data = sample(len);
            let gz = compress(&data, 2, 4096);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "length {len}");
        }
    }
}
