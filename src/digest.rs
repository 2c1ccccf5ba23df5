//! Content digests (`sha256:<hex>`) and the readers and writers that compute
//! and check them while data streams through.
//!
//! Every blob we read is checked: size first (so a hostile size cannot make us
//! hash forever), then the digest at end of stream. A mismatch surfaces as an
//! [`Error`] from `read`, before anything downstream commits output.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

mod chained;
use chained::interval_for;
pub(crate) use chained::{ChainedSha256, Checkpoints};

/// Where a [`VerifyingReader`] puts a blob's checkpoints once it was read in
/// full and found right.
pub(crate) type CheckpointSlot = std::sync::Arc<std::sync::Mutex<Option<Checkpoints>>>;

/// A validated `sha256:<64 lowercase hex>` digest. Only sha256 is accepted,
/// which also guarantees the hex part is safe to use as a file name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn from_sha256(bytes: &[u8]) -> Self {
        Digest(format!("sha256:{}", hex::encode(bytes)))
    }

    pub fn of(data: &[u8]) -> Self {
        Digest::from_sha256(&Sha256::digest(data))
    }

    pub fn algorithm(&self) -> &str {
        "sha256"
    }

    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let Some(hex) = s.strip_prefix("sha256:") else {
            return Err(Error::new(format!(
                "unsupported digest {s:?}: only sha256 digests are supported"
            )));
        };
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::new(format!("malformed digest {s:?}")));
        }
        Ok(Digest(s.to_string()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-1 and SHA-256 of a file's content, hex: what an SPDX file entry
/// carries (SPDX 2.3 requires the SHA-1).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileDigests {
    pub sha1: String,
    pub sha256: String,
}

/// Computes [`FileDigests`] of bytes fed to it in order.
#[derive(Default)]
pub(crate) struct FileHasher {
    sha1: sha1::Sha1,
    sha256: Sha256,
}

impl FileHasher {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.sha1.update(bytes);
        self.sha256.update(bytes);
    }

    pub(crate) fn finish(self) -> FileDigests {
        FileDigests {
            sha1: hex::encode(self.sha1.finalize()),
            sha256: hex::encode(self.sha256.finalize()),
        }
    }

    /// The digests of `bytes`.
    pub(crate) fn of(bytes: &[u8]) -> FileDigests {
        let mut hasher = FileHasher::default();
        hasher.update(bytes);
        hasher.finish()
    }
}

/// Hashes and counts everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The digest and size of what has been read so far.
    pub(crate) fn finish(self) -> (Digest, u64) {
        (Digest::from_sha256(&self.hasher.finalize()), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Like [`HashingReader`], but the hashing runs on a thread of its own, fed
/// in 1 MiB pieces through a bounded channel: a layer read on one core
/// inflates while another hashes.
pub(crate) struct BackgroundHashingReader<R> {
    inner: R,
    pending: Vec<u8>,
    sender: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    worker: Option<std::thread::JoinHandle<(Digest, u64)>>,
}

const HASH_PIECE: usize = 1 << 20;

impl<R: Read> BackgroundHashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let worker = std::thread::spawn(move || {
            let mut hasher = Sha256::new();
            let mut count = 0u64;
            for piece in receiver {
                hasher.update(&piece);
                count += piece.len() as u64;
            }
            (Digest::from_sha256(&hasher.finalize()), count)
        });
        BackgroundHashingReader {
            inner,
            pending: Vec::with_capacity(HASH_PIECE),
            sender: Some(sender),
            worker: Some(worker),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let piece = std::mem::replace(&mut self.pending, Vec::with_capacity(HASH_PIECE));
        match &self.sender {
            Some(sender) => sender
                .send(piece)
                .map_err(|_| io::Error::other("the hashing thread stopped")),
            None => Ok(()),
        }
    }

    /// The digest and size of what has been read.
    pub(crate) fn finish(mut self) -> io::Result<(Digest, u64)> {
        self.send()?;
        drop(self.sender.take());
        self.worker
            .take()
            .expect("joined once")
            .join()
            .map_err(|_| io::Error::other("the hashing thread panicked"))
    }
}

impl<R: Read> Read for BackgroundHashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() >= HASH_PIECE {
            self.send()?;
        }
        Ok(n)
    }
}

impl<R> Drop for BackgroundHashingReader<R> {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Reads a blob and fails at end of stream (or as soon as it is too long)
/// unless the bytes have exactly the expected size and digest. The hash
/// keeps checkpoints on the way ([`Checkpoints`]), handed out with
/// [`VerifyingReader::keeping`] once the blob was found right.
pub(crate) struct VerifyingReader<R> {
    inner: R,
    hasher: ChainedSha256,
    count: u64,
    expected: Digest,
    expected_size: Option<u64>,
    what: String,
    done: bool,
    checkpoints: Option<CheckpointSlot>,
}

impl<R: Read> VerifyingReader<R> {
    pub(crate) fn new(
        inner: R,
        expected: Digest,
        expected_size: Option<u64>,
        what: String,
    ) -> Self {
        VerifyingReader {
            inner,
            hasher: ChainedSha256::new(interval_for(expected_size)),
            count: 0,
            expected,
            expected_size,
            what,
            done: false,
            checkpoints: None,
        }
    }

    /// The blob's checkpoints go to `slot` once it was read and checked.
    pub(crate) fn keeping(mut self, slot: Option<CheckpointSlot>) -> Self {
        self.checkpoints = slot;
        self
    }

    fn check_end(&mut self) -> io::Result<()> {
        self.done = true;
        let hasher = std::mem::replace(&mut self.hasher, ChainedSha256::new(64));
        let checkpoints = hasher.into_checkpoints();
        let actual = Digest::from_sha256(&checkpoints.digest);
        if let Some(size) = self.expected_size {
            if self.count != size {
                return Err(Error::new(format!(
                    "{} is {} bytes long but its descriptor says {size}",
                    self.what, self.count
                ))
                .hint("the image is corrupt or was modified; fetch or export it again")
                .into());
            }
        }
        if actual != self.expected {
            return Err(Error::new(format!(
                "{} has digest {actual}, expected {}",
                self.what, self.expected
            ))
            .hint("the image is corrupt or was modified; fetch or export it again")
            .into());
        }
        if let Some(slot) = self.checkpoints.take() {
            if let Ok(mut slot) = slot.lock() {
                *slot = Some(checkpoints);
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if let Some(size) = self.expected_size {
            if self.count > size {
                return Err(Error::new(format!(
                    "{} is longer than the {size} bytes its descriptor says",
                    self.what
                ))
                .hint("the image is corrupt or was modified; fetch or export it again")
                .into());
            }
        }
        if n == 0 {
            self.check_end()?;
        }
        Ok(n)
    }
}

/// Hashes and counts everything written through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub(crate) fn finish(self) -> (W, Digest, u64) {
        (
            self.inner,
            Digest::from_sha256(&self.hasher.finalize()),
            self.count,
        )
    }

    /// How many bytes went through so far.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// The writer beneath.
    pub(crate) fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The writer beneath: what is written to it directly is not hashed.
    pub(crate) fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The digest and size of everything `reader` yields.
pub(crate) fn digest_of(reader: impl Read) -> io::Result<(Digest, u64)> {
    let mut hashing = HashingReader::new(reader);
    io::copy(&mut hashing, &mut io::sink())?;
    Ok(hashing.finish())
}

/// Runs `body` on a reader of `raw` that a thread of its own fills ahead,
/// in 1 MiB pieces through a bounded channel: a blob read (and hashed, by a
/// [`VerifyingReader`]) on one core is inflated on another. The thread
/// ends when `raw` ends, fails, or `body` stops reading.
pub(crate) fn with_read_ahead<R: Read + Send, T>(
    raw: R,
    body: impl FnOnce(&mut (dyn Read + Send)) -> T,
) -> T {
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
        // Pieces read come back to be filled again (no new allocation and
        // zeroing of a MiB each).
        let (recycle, recycled) = std::sync::mpsc::channel::<Vec<u8>>();
        scope.spawn(move || {
            let mut raw = raw;
            loop {
                let mut piece = recycled.try_recv().unwrap_or_default();
                piece.resize(HASH_PIECE, 0);
                let got = read_full(&mut raw, &mut piece).map(|n| {
                    piece.truncate(n);
                    piece
                });
                let end = got.as_ref().map_or(true, Vec::is_empty);
                if sender.send(got).is_err() || end {
                    return;
                }
            }
        });
        let mut ahead = ReadAhead {
            receiver,
            recycle,
            piece: Vec::new(),
            pos: 0,
            ended: false,
        };
        body(&mut ahead)
    })
}

/// Reads until `buf` is full or the input ends.
fn read_full(raw: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match raw.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

struct ReadAhead {
    receiver: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    recycle: std::sync::mpsc::Sender<Vec<u8>>,
    piece: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.piece.len() {
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            match self.receiver.recv() {
                Ok(Ok(piece)) => {
                    self.ended = piece.is_empty();
                    let used = std::mem::replace(&mut self.piece, piece);
                    let _ = self.recycle.send(used);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                Err(_) => return Err(io::Error::other("the reading thread stopped")),
            }
        }
        let n = buf.len().min(self.piece.len() - self.pos);
        buf[..n].copy_from_slice(&self.piece[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ahead_gives_every_byte_its_error_and_stops_with_its_reader() {
        let data: Vec<u8> = (0..3 * HASH_PIECE + 7).map(|i| (i % 251) as u8).collect();
        let got = with_read_ahead(&data[..], |r| {
            let mut out = Vec::new();
            r.read_to_end(&mut out).map(|_| out)
        });
        assert_eq!(got.unwrap(), data);
        // An error of the source reaches the reader, after the whole pieces
        // before it (the part of a piece the error cut short is dropped).
        let failing = (&data[..HASH_PIECE + 3]).chain(FailingRead);
        let got = with_read_ahead(failing, |r| {
            let mut out = Vec::new();
            let err = r.read_to_end(&mut out).unwrap_err();
            (out.len(), err.kind())
        });
        assert_eq!(got, (HASH_PIECE, io::ErrorKind::BrokenPipe));
        // A reader that stops early ends the thread (the scope returns).
        let endless = io::repeat(7);
        let first = with_read_ahead(endless, |r| {
            let mut byte = [0u8; 1];
            r.read_exact(&mut byte).map(|_| byte[0])
        });
        assert_eq!(first.unwrap(), 7);
    }

    struct FailingRead;
    impl Read for FailingRead {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn parses_only_well_formed_sha256() {
        let d = Digest::of(b"hello");
        assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
        assert!("sha512:abcd".parse::<Digest>().is_err());
        assert!("sha256:../../etc/passwd".parse::<Digest>().is_err());
        assert!(format!("sha256:{}", "A".repeat(64))
            .parse::<Digest>()
            .is_err());
    }

    #[test]
    fn verifying_reader_rejects_wrong_digest_and_size() {
        let data = b"some blob".to_vec();
        let good = Digest::of(&data);
        let mut out = Vec::new();
        VerifyingReader::new(&data[..], good.clone(), Some(9), "blob".into())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);

        let bad = Digest::of(b"other");
        let err = VerifyingReader::new(&data[..], bad, None, "blob".into())
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("has digest"), "{err}");

        let err = VerifyingReader::new(&data[..], good.clone(), Some(4), "blob".into())
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");

        let err = VerifyingReader::new(&data[..], good, Some(20), "blob".into())
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("descriptor says 20"), "{err}");
    }
}
