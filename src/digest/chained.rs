//! SHA-256 with checkpoints: the chaining value at every multiple of an
//! interval, kept while a blob is hashed once in full.
//!
//! SHA-256 hashes 64-byte blocks in order, carrying a 32-byte chaining value
//! from one block to the next; the digest is the last value after padding.
//! So a stretch of the blob between two checkpoints can be checked on its
//! own later: hashing it from the first value must give the second, and
//! the last stretch must give the blob's digest. Bytes that pass are the
//! blob's bytes, as surely as a whole-blob check would say, because finding
//! other bytes that give the same chaining value is finding a SHA-256
//! collision. This is what lets [`crate::layer::ztoc`] check the compressed
//! bytes it reads at random with no hash of its own: the checkpoints come
//! from the blob's digest check, which runs anyway.

use serde::{Deserialize, Serialize};
use sha2::block_api::compress256;

const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Checkpoints are at least this far apart, and at most this many are kept.
const MIN_INTERVAL: u64 = 1 << 20;
const MAX_CHECKPOINTS: u64 = 4096;

/// The interval of checkpoints for a blob of `len` bytes (a power of two,
/// so a multiple of SHA-256's block).
pub(crate) fn interval_for(len: Option<u64>) -> u64 {
    let wanted = len.unwrap_or(0).div_ceil(MAX_CHECKPOINTS);
    wanted.next_power_of_two().max(MIN_INTERVAL)
}

/// A blob's chaining values every `interval` bytes, and its digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoints {
    pub interval: u64,
    /// `values[k]`: the chaining value after `k * interval` bytes.
    pub values: Vec<[u8; 32]>,
    /// The blob's length and SHA-256.
    pub len: u64,
    pub digest: [u8; 32],
}

impl Checkpoints {
    /// The checkpoint at or before byte `offset`.
    pub(crate) fn before(&self, offset: u64) -> u64 {
        offset / self.interval * self.interval
    }

    /// The checkpoint at or after byte `offset`, or the blob's end.
    pub(crate) fn after(&self, offset: u64) -> u64 {
        offset
            .div_ceil(self.interval)
            .saturating_mul(self.interval)
            .min(self.len)
    }
}

/// SHA-256 that keeps its chaining value at every multiple of an interval.
pub(crate) struct ChainedSha256 {
    state: [u32; 8],
    block: [u8; 64],
    filled: usize,
    total: u64,
    interval: u64,
    /// Chaining values reached at checkpoints since the last
    /// [`ChainedSha256::take_reached`].
    reached: Vec<(u64, [u8; 32])>,
}

impl ChainedSha256 {
    /// From the start of a blob; `interval` is a multiple of 64.
    pub(crate) fn new(interval: u64) -> Self {
        Self::resume(interval, 0, IV)
    }

    /// From a checkpoint: `value` is the chaining value after `at` bytes.
    pub(crate) fn resume_at(interval: u64, at: u64, value: &[u8; 32]) -> Self {
        let mut state = [0u32; 8];
        for (word, bytes) in state.iter_mut().zip(value.chunks_exact(4)) {
            *word = u32::from_be_bytes(bytes.try_into().expect("4 bytes"));
        }
        Self::resume(interval, at, state)
    }

    fn resume(interval: u64, at: u64, state: [u32; 8]) -> Self {
        debug_assert!(interval > 0 && interval % 64 == 0 && at % interval == 0);
        ChainedSha256 {
            state,
            block: [0; 64],
            filled: 0,
            total: at,
            interval,
            reached: Vec::new(),
        }
    }

    /// Bytes hashed so far (from the blob's start).
    pub(crate) fn position(&self) -> u64 {
        self.total
    }

    fn value(&self) -> [u8; 32] {
        be_bytes(&self.state)
    }

    pub(crate) fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            // Up to the next checkpoint at most.
            let to_checkpoint = self.interval - self.total % self.interval;
            let take = (to_checkpoint.min(data.len() as u64)) as usize;
            self.absorb(&data[..take]);
            data = &data[take..];
            if self.total % self.interval == 0 {
                self.reached.push((self.total, self.value()));
            }
        }
    }

    fn absorb(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.filled > 0 {
            let take = (64 - self.filled).min(data.len());
            self.block[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled < 64 {
                return;
            }
            compress256(&mut self.state, &[self.block]);
            self.filled = 0;
        }
        let (blocks, rest) = as_blocks(data);
        compress256(&mut self.state, blocks);
        self.block[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }

    /// The checkpoints reached since the last call: (offset, value).
    pub(crate) fn take_reached(&mut self) -> Vec<(u64, [u8; 32])> {
        std::mem::take(&mut self.reached)
    }

    /// The SHA-256 of everything hashed from the blob's start.
    pub(crate) fn finalize(mut self) -> [u8; 32] {
        let bits = self.total.wrapping_mul(8);
        let mut tail = [0u8; 128];
        tail[..self.filled].copy_from_slice(&self.block[..self.filled]);
        tail[self.filled] = 0x80;
        let blocks = if self.filled < 56 { 1 } else { 2 };
        tail[blocks * 64 - 8..blocks * 64].copy_from_slice(&bits.to_be_bytes());
        let (tail, _) = as_blocks(&tail[..blocks * 64]);
        compress256(&mut self.state, tail);
        self.value()
    }

    /// Finishes a hash of a whole blob: its digest and checkpoints.
    pub(crate) fn into_checkpoints(mut self) -> Checkpoints {
        let mut values = vec![be_bytes(&IV)];
        values.extend(self.take_reached().into_iter().map(|(_, value)| value));
        let (interval, len) = (self.interval, self.total);
        Checkpoints {
            interval,
            values,
            len,
            digest: self.finalize(),
        }
    }
}

/// `data` as whole 64-byte blocks, and what is left (`as_chunks`, which
/// needs a newer Rust than ours).
fn as_blocks(data: &[u8]) -> (&[[u8; 64]], &[u8]) {
    let n = data.len() / 64;
    let (head, rest) = data.split_at(n * 64);
    // SAFETY: `[u8; 64]` is 64 bytes with alignment 1, and `head` holds
    // exactly `n * 64` initialised bytes that outlive the result.
    let blocks = unsafe { std::slice::from_raw_parts(head.as_ptr().cast::<[u8; 64]>(), n) };
    (blocks, rest)
}

fn be_bytes(state: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn digests_equal_sha256_for_any_length_and_pieces() {
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 70_000] {
            let bytes = data(len);
            for piece in [1, 7, 64, 100, 4096] {
                let mut hasher = ChainedSha256::new(128);
                bytes.chunks(piece).for_each(|p| hasher.update(p));
                assert_eq!(
                    hasher.finalize(),
                    <[u8; 32]>::from(Sha256::digest(&bytes)),
                    "len {len}, pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn a_stretch_is_checked_from_its_checkpoint() {
        let bytes = data(10_000);
        let mut whole = ChainedSha256::new(1024);
        whole.update(&bytes);
        let checks = whole.into_checkpoints();
        assert_eq!(checks.values.len(), 10);
        assert_eq!(checks.digest, <[u8; 32]>::from(Sha256::digest(&bytes)));
        // From checkpoint 3 to 5: the value at 5 comes out.
        let mut part = ChainedSha256::resume_at(1024, 3072, &checks.values[3]);
        part.update(&bytes[3072..5120]);
        let reached = part.take_reached();
        assert_eq!(
            reached,
            vec![(4096, checks.values[4]), (5120, checks.values[5])]
        );
        // The last stretch gives the digest; a changed byte does not.
        let mut last = ChainedSha256::resume_at(1024, 9216, &checks.values[9]);
        last.update(&bytes[9216..]);
        assert_eq!(last.finalize(), checks.digest);
        let mut changed = bytes[9216..].to_vec();
        changed[5] ^= 1;
        let mut last = ChainedSha256::resume_at(1024, 9216, &checks.values[9]);
        last.update(&changed);
        assert_ne!(last.finalize(), checks.digest);
    }

    #[test]
    fn intervals_grow_with_the_blob_and_stay_powers_of_two() {
        assert_eq!(interval_for(None), 1 << 20);
        assert_eq!(interval_for(Some(100)), 1 << 20);
        assert_eq!(interval_for(Some(4096 << 20)), 1 << 20);
        assert_eq!(interval_for(Some((4096 << 20) + 1)), 2 << 20);
        assert_eq!(interval_for(Some(30 << 30)), 8 << 20);
    }
}
