//! Random access into gzip layers, as SOCI's zTOC does it.
//!
//! A gzip stream can only be inflated from its start: each deflate block
//! may refer back 32 KiB into the output before it. But at a block boundary,
//! the 32 KiB of output before it and the bit position in the input are
//! all the state there is. So while a layer is read once in full (and
//! checked against its digest and diff-id), [`IndexingReader`] stops at the
//! first block boundary past every [`SPAN`] bytes of output and keeps an
//! [`AccessPoint`] there. Later, [`read_at`] inflates from the access point
//! at or before the bytes wanted, and only as far as they go.
//!
//! What is read at random is checked too, at no cost to the full read: the
//! blob's digest check keeps SHA-256 checkpoints on the way
//! ([`crate::digest::Checkpoints`]), the index holds them, and a random
//! read hashes the compressed bytes it reads from the checkpoint before
//! them to the one after, failing unless they give the values kept.
//!
//! The inflater is zlib-rs (the same as flate2's backend here) through its
//! zlib-compatible API, for `Z_BLOCK`, `inflatePrime`,
//! `inflateGetDictionary` and `inflateSetDictionary`. Gzip members are
//! parsed here, so multi-member streams work; each member's CRC-32 and
//! length are checked on the full read.

use std::io::{self, Read};

use crate::digest::{ChainedSha256, Checkpoints};
use libz_rs_sys as z;
use serde::{Deserialize, Serialize};

/// Uncompressed bytes between access points, at first.
pub(crate) const SPAN: u64 = 4 << 20;
/// The spacing doubles after every this many points, and no more than
/// [`MAX_POINTS`] are kept (each holds a 32 KiB window): memory stays
/// bounded whatever a layer inflates to. 2048 points cover 30 GiB.
const POINTS_PER_DOUBLING: usize = 512;
const MAX_POINTS: usize = 2048;
const WINDOW: usize = 32 << 10;
const BUFFER: usize = 256 << 10;

/// Where inflating can resume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AccessPoint {
    /// Uncompressed offset of the next output byte.
    pub out: u64,
    /// Compressed offset of the first whole byte still to be read.
    pub input: u64,
    /// Bits of the byte before `input` that are still to be read (0-7).
    pub bits: u8,
    /// The output before `out` a block may refer to (up to 32 KiB).
    pub window: Vec<u8>,
}

impl AccessPoint {
    /// The first compressed byte inflating from here reads.
    pub(crate) fn first_byte(&self) -> u64 {
        self.input - u64::from(self.bits > 0)
    }
}

/// The access points a full read of a gzip blob found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PointsFound {
    pub points: Vec<AccessPoint>,
    /// Size of the compressed blob.
    pub compressed: u64,
    /// Size of the uncompressed stream.
    pub uncompressed: u64,
}

impl PointsFound {
    /// The index, with the checkpoints of the same blob's digest check.
    pub(crate) fn with_checkpoints(self, checkpoints: Checkpoints) -> Option<AccessIndex> {
        (checkpoints.len == self.compressed).then_some(AccessIndex {
            points: self.points,
            compressed: self.compressed,
            uncompressed: self.uncompressed,
            checkpoints,
        })
    }
}

/// The access points of one gzip blob, and the checkpoints that check the
/// bytes read from them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AccessIndex {
    pub points: Vec<AccessPoint>,
    /// Size of the compressed blob.
    pub compressed: u64,
    /// Size of the uncompressed stream.
    pub uncompressed: u64,
    pub checkpoints: Checkpoints,
}

impl AccessIndex {
    /// The last point at or before uncompressed `offset`.
    pub(crate) fn point_before(&self, offset: u64) -> Option<usize> {
        let after = self.points.partition_point(|p| p.out <= offset);
        after.checked_sub(1)
    }

    /// The end of point `i`'s span of compressed bytes.
    pub(crate) fn span_end(&self, i: usize) -> u64 {
        self.points
            .get(i + 1)
            .map_or(self.compressed, |next| next.input)
    }
}

/// A raw-deflate inflater (zlib-rs through its zlib API).
struct Inflater {
    stream: Box<z::z_stream>,
}

// The stream holds raw pointers only while `inflate` runs.
unsafe impl Send for Inflater {}

impl Inflater {
    fn new() -> io::Result<Inflater> {
        let mut stream = Box::new(z::z_stream::default());
        // SAFETY: a default stream has valid allocator fields; the version
        // and size are this crate's own.
        let code = unsafe {
            z::inflateInit2_(
                &mut *stream,
                -15,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as i32,
            )
        };
        if code != z::Z_OK {
            return Err(io::Error::other("cannot start an inflater"));
        }
        Ok(Inflater { stream })
    }

    fn reset(&mut self) {
        // SAFETY: the stream was initialised in `new` and never moved (boxed).
        unsafe { z::inflateReset(&mut *self.stream) };
    }

    fn prime(&mut self, bits: u8, value: u8) -> io::Result<()> {
        // SAFETY: as in `reset`.
        let code = unsafe {
            z::inflatePrime(
                &mut *self.stream,
                i32::from(bits),
                i32::from(value) >> (8 - bits),
            )
        };
        if code != z::Z_OK {
            return Err(io::Error::other(
                "cannot resume inflating at an access point",
            ));
        }
        Ok(())
    }

    /// The inflater's window: the last output of this member, up to 32 KiB
    /// (zlib keeps it up to date whenever `inflate` returns).
    fn window(&self) -> io::Result<Vec<u8>> {
        let mut window = vec![0u8; WINDOW];
        let mut len: u32 = 0;
        // SAFETY: as in `reset`; the buffer holds 32 KiB, always enough.
        let code = unsafe { z::inflateGetDictionary(&*self.stream, window.as_mut_ptr(), &mut len) };
        if code != z::Z_OK {
            return Err(io::Error::other("cannot read the inflater's window"));
        }
        window.truncate(len as usize);
        Ok(window)
    }

    fn set_dictionary(&mut self, window: &[u8]) -> io::Result<()> {
        if window.is_empty() {
            return Ok(());
        }
        // SAFETY: as in `reset`; the slice outlives the call.
        let code = unsafe {
            z::inflateSetDictionary(&mut *self.stream, window.as_ptr(), window.len() as u32)
        };
        if code != z::Z_OK {
            return Err(io::Error::other(
                "cannot resume inflating at an access point",
            ));
        }
        Ok(())
    }

    /// Inflates some of `input` into `output`; returns (bytes consumed,
    /// bytes produced, zlib's return code, its `data_type`).
    fn inflate(&mut self, input: &[u8], output: &mut [u8], flush: i32) -> (usize, usize, i32, i32) {
        let stream = &mut *self.stream;
        stream.next_in = input.as_ptr();
        stream.avail_in = input.len().min(u32::MAX as usize) as u32;
        stream.next_out = output.as_mut_ptr();
        stream.avail_out = output.len().min(u32::MAX as usize) as u32;
        let before = (stream.avail_in, stream.avail_out);
        // SAFETY: next_in/next_out point into live slices of the stated
        // lengths for the duration of the call.
        let code = unsafe { z::inflate(stream, flush) };
        let consumed = (before.0 - stream.avail_in) as usize;
        let produced = (before.1 - stream.avail_out) as usize;
        stream.next_in = std::ptr::null();
        stream.avail_in = 0;
        stream.next_out = std::ptr::null_mut();
        stream.avail_out = 0;
        (consumed, produced, code, stream.data_type)
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: as in `reset`.
        unsafe { z::inflateEnd(&mut *self.stream) };
    }
}

/// What a reader wants to know of the stream as it is inflated.
trait Observer {
    /// The uncompressed offset from which block boundaries are wanted;
    /// `None` for none. Inflating stops at every block boundary only from
    /// there (zlib's `Z_BLOCK` costs zlib-rs about a tenth of its speed).
    fn boundaries_from(&self) -> Option<u64> {
        None
    }
    /// A deflate block (not a member's last) ended: the stream can resume
    /// here.
    fn boundary(&mut self, _at: &Boundary<'_>) -> io::Result<()> {
        Ok(())
    }
    /// A member (not the first) starts its deflate stream here: the stream
    /// can resume with no window at all.
    fn member(&mut self, _at: &Boundary<'_>) -> io::Result<()> {
        Ok(())
    }
}

/// The state at a block boundary.
struct Boundary<'a> {
    /// Compressed offset of the first whole byte still to be read.
    input: u64,
    bits: u8,
    out: u64,
    /// Where the window before `out` is, when there is one: none at a
    /// member's start.
    inflater: Option<&'a Inflater>,
}

impl Boundary<'_> {
    fn window(&self) -> io::Result<Vec<u8>> {
        self.inflater.map_or(Ok(Vec::new()), Inflater::window)
    }
}

struct Nothing;
impl Observer for Nothing {}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Header,
    Body,
    Trailer,
    Done,
}

/// A read at random got fewer compressed bytes than its checkpoints need.
fn cut_short() -> io::Error {
    bad("the compressed bytes end before the layer's index says")
}

fn bad(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("gzip: {message}"))
}

/// Inflates a gzip stream (every member), from its start or from an
/// access point.
struct Decoder<R> {
    inner: R,
    inflater: Inflater,
    phase: Phase,
    input: Vec<u8>,
    in_pos: usize,
    /// Compressed offset of `input[0]`.
    in_base: u64,
    /// Uncompressed offset of the next byte produced.
    out_total: u64,
    /// CRC-32 and length of the current member (checked only when it was
    /// read from its start).
    crc: crc32fast::Hasher,
    member_len: u64,
    check_member: bool,
    eof: bool,
}

impl<R: Read> Decoder<R> {
    fn new(inner: R, in_base: u64, out_total: u64, phase: Phase) -> io::Result<Self> {
        Ok(Decoder {
            inner,
            inflater: Inflater::new()?,
            phase,
            input: Vec::with_capacity(BUFFER),
            in_pos: 0,
            in_base,
            out_total,
            crc: crc32fast::Hasher::new(),
            member_len: 0,
            check_member: phase == Phase::Header,
            eof: false,
        })
    }

    /// Makes at least `n` unread input bytes available, unless the input
    /// ends first.
    fn fill(&mut self, n: usize) -> io::Result<bool> {
        while self.input.len() - self.in_pos < n {
            if self.eof {
                return Ok(false);
            }
            if self.in_pos > 0 {
                self.input.drain(..self.in_pos);
                self.in_base += self.in_pos as u64;
                self.in_pos = 0;
            }
            let len = self.input.len();
            self.input.resize(len + BUFFER.max(n), 0);
            let read = self.inner.read(&mut self.input[len..])?;
            self.input.truncate(len + read);
            if read == 0 {
                self.eof = true;
            }
        }
        Ok(true)
    }

    fn take_byte(&mut self) -> io::Result<u8> {
        if !self.fill(1)? {
            return Err(bad("the stream ends inside a header"));
        }
        self.in_pos += 1;
        Ok(self.input[self.in_pos - 1])
    }

    /// Parses a member header; `false` at the clean end of the stream.
    fn header(&mut self, observer: &mut dyn Observer) -> io::Result<bool> {
        if !self.fill(1)? {
            return Ok(false);
        }
        let mut fixed = [0u8; 10];
        for byte in &mut fixed {
            *byte = self.take_byte()?;
        }
        if fixed[..3] != [0x1f, 0x8b, 8] {
            return Err(bad("not a gzip member (bad magic or method)"));
        }
        let flags = fixed[3];
        if flags & 4 != 0 {
            let len = u16::from_le_bytes([self.take_byte()?, self.take_byte()?]);
            for _ in 0..len {
                self.take_byte()?;
            }
        }
        for flag in [8u8, 16] {
            if flags & flag != 0 {
                // A zero-terminated name or comment, bounded like any header.
                let mut len = 0usize;
                while self.take_byte()? != 0 {
                    len += 1;
                    if len > 1 << 20 {
                        return Err(bad("a header name or comment is too long"));
                    }
                }
            }
        }
        if flags & 2 != 0 {
            self.take_byte()?;
            self.take_byte()?;
        }
        self.inflater.reset();
        self.crc = crc32fast::Hasher::new();
        self.member_len = 0;
        self.check_member = true;
        if self.out_total > 0 {
            observer.member(&Boundary {
                input: self.in_base + self.in_pos as u64,
                bits: 0,
                out: self.out_total,
                inflater: None,
            })?;
        }
        Ok(true)
    }

    fn trailer(&mut self) -> io::Result<()> {
        let mut trailer = [0u8; 8];
        for byte in &mut trailer {
            *byte = self.take_byte()?;
        }
        if self.check_member {
            let crc = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes"));
            let len = u32::from_le_bytes(trailer[4..].try_into().expect("4 bytes"));
            let ours = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
            if crc != ours || len != self.member_len as u32 {
                return Err(bad("a member's CRC-32 or length does not match its data"));
            }
        }
        Ok(())
    }

    fn remember(&mut self, produced: &[u8]) {
        if self.check_member {
            self.crc.update(produced);
        }
        self.member_len += produced.len() as u64;
        self.out_total += produced.len() as u64;
    }

    /// Produces output into `buf`; `at_boundary` is called at every deflate
    /// block boundary (not the last block's) with the output total so far.
    /// Returns 0 at the end of the stream.
    fn read_with(&mut self, buf: &mut [u8], observer: &mut dyn Observer) -> io::Result<usize> {
        loop {
            match self.phase {
                Phase::Done => return Ok(0),
                Phase::Header => {
                    self.phase = if self.header(observer)? {
                        Phase::Body
                    } else {
                        Phase::Done
                    };
                }
                Phase::Trailer => {
                    self.trailer()?;
                    self.phase = Phase::Header;
                }
                Phase::Body => {
                    let available = self.input.len() - self.in_pos;
                    if !self.fill(1)? {
                        return Err(bad("the stream ends inside compressed data"));
                    }
                    // Up to where boundaries are wanted with no stop, then
                    // block by block: the same boundaries are found.
                    let (out, flush) = match observer.boundaries_from() {
                        Some(from) if from > self.out_total => {
                            let room = (from - self.out_total).min(buf.len() as u64);
                            (&mut buf[..room as usize], z::Z_NO_FLUSH)
                        }
                        Some(_) => (&mut buf[..], z::Z_BLOCK),
                        None => (&mut buf[..], z::Z_NO_FLUSH),
                    };
                    let (consumed, produced, code, data_type) =
                        self.inflater
                            .inflate(&self.input[self.in_pos..], out, flush);
                    self.in_pos += consumed;
                    self.remember(&buf[..produced]);
                    match code {
                        z::Z_STREAM_END => self.phase = Phase::Trailer,
                        z::Z_OK | z::Z_BUF_ERROR => {
                            if data_type & 128 != 0 && data_type & 64 == 0 {
                                observer.boundary(&Boundary {
                                    input: self.in_base + self.in_pos as u64,
                                    bits: (data_type & 7) as u8,
                                    out: self.out_total,
                                    inflater: Some(&self.inflater),
                                })?;
                            }
                            if consumed == 0 && produced == 0 && !self.fill(available.max(1) + 1)? {
                                return Err(bad("the stream ends inside compressed data"));
                            }
                        }
                        _ => return Err(bad("the compressed data is corrupt")),
                    }
                    if produced > 0 {
                        return Ok(produced);
                    }
                }
            }
        }
    }
}

/// Reads a gzip stream from its start, as a plain reader, keeping access
/// points every [`SPAN`] bytes of output. [`IndexingReader::finish`] gives
/// them once the stream was read to its end.
pub(crate) struct IndexingReader<R> {
    decoder: Decoder<R>,
    points: Points,
    /// Where the access points go when the stream has been read to its end.
    result: Option<std::sync::Arc<std::sync::Mutex<Option<PointsFound>>>>,
}

/// The access points found so far.
struct Points {
    points: Vec<AccessPoint>,
    /// A second member was seen: only member starts are taken from then
    /// on, as they need no window (our own layers are 1 MiB members).
    members: bool,
    last_out: u64,
}

impl Observer for Points {
    fn boundaries_from(&self) -> Option<u64> {
        (!self.members && self.points.len() < MAX_POINTS).then(|| self.next_at())
    }

    fn boundary(&mut self, at: &Boundary<'_>) -> io::Result<()> {
        if self.members {
            return Ok(());
        }
        self.point(at)
    }

    fn member(&mut self, at: &Boundary<'_>) -> io::Result<()> {
        self.members = true;
        self.point(at)
    }
}

impl Points {
    /// The first point, at the stream's start.
    fn new() -> Self {
        Points {
            points: vec![AccessPoint {
                out: 0,
                input: 0,
                bits: 0,
                window: Vec::new(),
            }],
            members: false,
            last_out: 0,
        }
    }

    /// Where the next point may be: [`SPAN`] past the last, doubled after
    /// every [`POINTS_PER_DOUBLING`] points.
    fn next_at(&self) -> u64 {
        let doublings = (self.points.len() / POINTS_PER_DOUBLING).min(16) as u32;
        self.last_out + (SPAN << doublings)
    }

    /// Keeps an access point at `at`, if it is far enough from the last.
    fn point(&mut self, at: &Boundary<'_>) -> io::Result<()> {
        if self.points.len() >= MAX_POINTS || at.out < self.next_at() {
            return Ok(());
        }
        self.points.push(AccessPoint {
            out: at.out,
            input: at.input,
            bits: at.bits,
            window: at.window()?,
        });
        self.last_out = at.out;
        Ok(())
    }
}

impl<R: Read> IndexingReader<R> {
    pub(crate) fn new(inner: R) -> io::Result<Self> {
        Ok(IndexingReader {
            decoder: Decoder::new(inner, 0, 0, Phase::Header)?,
            points: Points::new(),
            result: None,
        })
    }

    /// Like [`IndexingReader::new`]; the access points are put in `slot`
    /// once the stream has been read to its end.
    pub(crate) fn with_slot(
        inner: R,
        slot: std::sync::Arc<std::sync::Mutex<Option<PointsFound>>>,
    ) -> io::Result<Self> {
        let mut reader = Self::new(inner)?;
        reader.result = Some(slot);
        Ok(reader)
    }

    fn conclude(&mut self) -> PointsFound {
        let decoder = &self.decoder;
        PointsFound {
            points: std::mem::take(&mut self.points.points),
            compressed: decoder.in_base + decoder.input.len() as u64,
            uncompressed: decoder.out_total,
        }
    }

    /// The access points; reads whatever is left of the stream first.
    #[cfg(test)]
    pub(crate) fn finish(mut self) -> io::Result<PointsFound> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.conclude())
    }
}

impl<R: Read> Read for IndexingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.decoder.read_with(buf, &mut self.points)?;
        if n == 0 && !buf.is_empty() {
            if let Some(slot) = self.result.take() {
                let index = self.conclude();
                if let Ok(mut slot) = slot.lock() {
                    *slot = Some(index);
                }
            }
        }
        Ok(n)
    }
}

/// Compressed bytes read at random from a checkpoint on, checked as they
/// are read: the chaining value at every checkpoint reached, and the
/// digest at the blob's end.
struct Checked<'a, R> {
    inner: R,
    checkpoints: &'a Checkpoints,
    hasher: Option<ChainedSha256>,
}

impl<'a, R: Read> Checked<'a, R> {
    /// `inner` starts at the checkpoint `from`.
    fn new(inner: R, checkpoints: &'a Checkpoints, from: u64) -> io::Result<Self> {
        let k = (from / checkpoints.interval) as usize;
        let Some(value) = checkpoints
            .values
            .get(k)
            .filter(|_| from % checkpoints.interval == 0)
        else {
            return Err(bad(
                "a read at random starts where the layer's index has no checkpoint",
            ));
        };
        Ok(Checked {
            inner,
            checkpoints,
            hasher: Some(ChainedSha256::resume_at(checkpoints.interval, from, value)),
        })
    }

    /// The offset of the next byte.
    fn position(&self) -> u64 {
        self.hasher
            .as_ref()
            .map_or(self.checkpoints.len, ChainedSha256::position)
    }

    /// Reads (and checks) the bytes up to offset `to`, unused.
    fn read_to(&mut self, to: u64) -> io::Result<()> {
        let want = to.saturating_sub(self.position());
        if io::copy(&mut self.by_ref().take(want), &mut io::sink())? != want {
            return Err(cut_short());
        }
        Ok(())
    }

    /// Reads to the next checkpoint (or the blob's end), so that all that
    /// was read is checked.
    fn finish(&mut self) -> io::Result<()> {
        let to = self.checkpoints.after(self.position());
        self.read_to(to)?;
        if to == self.checkpoints.len && self.hasher.is_some() {
            return Err(cut_short());
        }
        Ok(())
    }
}

impl<R: Read> Read for Checked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(hasher) = self.hasher.as_mut() else {
            return Ok(0);
        };
        let left = self.checkpoints.len - hasher.position();
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        hasher.update(&buf[..n]);
        let interval = self.checkpoints.interval;
        for (at, value) in hasher.take_reached() {
            if self.checkpoints.values.get((at / interval) as usize) != Some(&value) {
                return Err(bad(&format!(
                    "the compressed bytes before {at} do not match the layer's index"
                )));
            }
        }
        if hasher.position() == self.checkpoints.len {
            let whole = self.hasher.take().expect("hashing").finalize();
            if whole != self.checkpoints.digest {
                return Err(bad(
                    "the compressed bytes at the layer's end do not match its digest",
                ));
            }
        }
        Ok(n)
    }
}

/// The compressed bytes to read for uncompressed `[offset, offset + len)`:
/// (first point, first byte, end byte), from checkpoint to checkpoint.
pub(crate) fn compressed_range(
    index: &AccessIndex,
    offset: u64,
    len: u64,
) -> Option<(usize, u64, u64)> {
    let first = index.point_before(offset)?;
    let last = index.point_before((offset + len).saturating_sub(1).max(offset))?;
    Some((
        first,
        index.checkpoints.before(index.points[first].first_byte()),
        index.checkpoints.after(index.span_end(last)),
    ))
}

/// The uncompressed stream from an access point on, inflated from `raw`:
/// the compressed bytes from the checkpoint before that point's first byte
/// ([`compressed_range`]), checked as they are read.
pub(crate) struct RandomReader<'a, R> {
    decoder: Decoder<Checked<'a, R>>,
    buf: Vec<u8>,
    buf_pos: usize,
    /// Uncompressed offset of `buf[buf_pos]`.
    position: u64,
}

impl<'a, R: Read> RandomReader<'a, R> {
    pub(crate) fn new(index: &'a AccessIndex, first: usize, raw: R) -> io::Result<Self> {
        let point = &index.points[first];
        let from = index.checkpoints.before(point.first_byte());
        let mut checked = Checked::new(raw, &index.checkpoints, from)?;
        checked.read_to(point.first_byte())?;
        let phase = if first == 0 {
            Phase::Header
        } else {
            Phase::Body
        };
        let mut decoder = Decoder::new(checked, point.first_byte(), point.out, phase)?;
        if first > 0 {
            if point.bits > 0 {
                let byte = decoder.take_byte()?;
                decoder.inflater.prime(point.bits, byte)?;
            }
            decoder.inflater.set_dictionary(&point.window)?;
            decoder.check_member = false;
        }
        Ok(RandomReader {
            decoder,
            buf: Vec::new(),
            buf_pos: 0,
            position: point.out,
        })
    }

    /// Inflates and drops everything before uncompressed `offset`.
    pub(crate) fn skip_to(&mut self, offset: u64) -> io::Result<()> {
        if offset < self.position {
            return Err(bad("an earlier offset was asked for than already read"));
        }
        let skip = offset - self.position;
        let skipped = io::copy(&mut self.by_ref().take(skip), &mut io::sink())?;
        if skipped != skip {
            return Err(bad("the stream ends before the bytes wanted"));
        }
        Ok(())
    }

    /// Reads on to the next checkpoint, so that every compressed byte read
    /// is checked.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.decoder.inner.finish()
    }
}

impl<R: Read> Read for RandomReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.buf_pos == self.buf.len() {
            self.buf.resize(BUFFER, 0);
            let produced = self.decoder.read_with(&mut self.buf, &mut Nothing)?;
            self.buf.truncate(produced);
            self.buf_pos = 0;
            if produced == 0 {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.buf_pos);
        out[..n].copy_from_slice(&self.buf[self.buf_pos..self.buf_pos + n]);
        self.buf_pos += n;
        self.position += n as u64;
        Ok(n)
    }
}

/// Inflates from the access point `first` over `raw` and hands `visit`
/// each wanted range's bytes, in order. `wanted` is sorted by offset, all
/// at or after the point.
#[cfg(test)]
pub(crate) fn read_at(
    index: &AccessIndex,
    first: usize,
    raw: impl Read,
    wanted: &[(u64, u64)],
    visit: &mut dyn FnMut(usize, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut reader = RandomReader::new(index, first, raw)?;
    let mut buf = vec![0u8; 64 << 10];
    for (n, &(offset, len)) in wanted.iter().enumerate() {
        reader.skip_to(offset)?;
        let mut left = len;
        if len == 0 {
            visit(n, &[])?;
        }
        while left > 0 {
            let want = (left as usize).min(buf.len());
            let got = reader.read(&mut buf[..want])?;
            if got == 0 {
                return Err(bad("the stream ends before the bytes wanted"));
            }
            visit(n, &buf[..got])?;
            left -= got as u64;
        }
    }
    reader.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Test data: runs of letters, of a repeated phrase and of noise.
    pub(crate) fn sample(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if (i / 3000) % 3 == 0 {
                    (state % 7) as u8 + b'a'
                } else if (i / 3000) % 3 == 1 {
                    b"layer tar entry "[i % 16]
                } else {
                    state as u8
                }
            })
            .collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    /// The blob's checkpoints, as its digest check keeps them.
    fn checkpoints(blob: &[u8], interval: u64) -> Checkpoints {
        let mut hasher = ChainedSha256::new(interval);
        hasher.update(blob);
        hasher.into_checkpoints()
    }

    /// Reads `blob` in full as the scan does: its output and its index,
    /// with checkpoints 64 KiB apart (many, to find their edges).
    fn index_of(blob: &[u8]) -> (Vec<u8>, AccessIndex) {
        let mut reader = IndexingReader::new(blob).unwrap();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        let found = reader.finish().unwrap();
        let index = found.with_checkpoints(checkpoints(blob, 64 << 10)).unwrap();
        (out, index)
    }

    fn random_read(
        blob: &[u8],
        index: &AccessIndex,
        wanted: &[(u64, u64)],
    ) -> io::Result<Vec<Vec<u8>>> {
        let (first, start, end) = compressed_range(
            index,
            wanted[0].0,
            wanted.last().map_or(0, |w| w.0 + w.1 - wanted[0].0),
        )
        .unwrap();
        let raw = &blob[start as usize..end as usize];
        let mut got = vec![Vec::new(); wanted.len()];
        read_at(index, first, raw, wanted, &mut |n, bytes| {
            got[n].extend_from_slice(bytes);
            Ok(())
        })?;
        Ok(got)
    }

    #[test]
    fn reads_any_range_from_the_nearest_access_point() {
        let data = sample(23 << 20, 5);
        let blob = gzip(&data);
        let (out, index) = index_of(&blob);
        assert_eq!(out, data);
        assert!(index.points.len() >= 5, "{}", index.points.len());
        assert_eq!(index.compressed, blob.len() as u64);
        for (offset, len) in [
            (0u64, 10u64),
            (5 << 20, 100_000),
            ((9 << 20) + 77, 3 << 20),
            (data.len() as u64 - 5, 5),
        ] {
            let got = random_read(&blob, &index, &[(offset, len)]).unwrap();
            assert_eq!(
                got[0],
                data[offset as usize..(offset + len) as usize],
                "at {offset}"
            );
        }
        // Several ranges in one pass.
        let wanted = [
            (8 << 20, 1000),
            ((8 << 20) + 50_000, 20),
            (15 << 20, 70_000),
        ];
        let got = random_read(&blob, &index, &wanted).unwrap();
        for (n, (o, l)) in wanted.iter().enumerate() {
            assert_eq!(got[n], data[*o as usize..(o + l) as usize]);
        }
    }

    /// Points found when inflating stops at every block boundary.
    struct EveryBlock<'a>(&'a mut Points);
    impl Observer for EveryBlock<'_> {
        fn boundaries_from(&self) -> Option<u64> {
            self.0.boundaries_from().map(|_| 0)
        }
        fn boundary(&mut self, at: &Boundary<'_>) -> io::Result<()> {
            self.0.boundary(at)
        }
        fn member(&mut self, at: &Boundary<'_>) -> io::Result<()> {
            self.0.member(at)
        }
    }

    #[test]
    fn stopping_only_near_the_next_point_finds_the_same_points() {
        let data = sample(23 << 20, 3);
        let blob = gzip(&data);
        let find = |every_block: bool| {
            let mut decoder = Decoder::new(&blob[..], 0, 0, Phase::Header).unwrap();
            let mut points = Points::new();
            let mut buf = vec![0u8; 300_000];
            loop {
                let n = if every_block {
                    decoder.read_with(&mut buf, &mut EveryBlock(&mut points))
                } else {
                    decoder.read_with(&mut buf, &mut points)
                };
                if n.unwrap() == 0 {
                    break;
                }
            }
            points.points
        };
        let (points, reference) = (find(false), find(true));
        assert!(points.len() >= 5, "{}", points.len());
        let places = |p: &[AccessPoint]| {
            p.iter()
                .map(|p| (p.out, p.input, p.bits))
                .collect::<Vec<_>>()
        };
        assert_eq!(places(&points), places(&reference));
        assert!(points == reference, "the same places, other windows");
    }

    #[test]
    fn multi_member_streams_are_read_and_indexed() {
        let a = sample(9 << 20, 1);
        let b = sample(7 << 20, 2);
        let mut blob = gzip(&a);
        blob.extend(gzip(&b));
        let (out, index) = index_of(&blob);
        assert_eq!(out, [a.clone(), b.clone()].concat());
        let offset = a.len() as u64 - 100;
        let got = random_read(&blob, &index, &[(offset, 5000)]).unwrap();
        assert_eq!(
            got[0],
            [a, b].concat()[offset as usize..offset as usize + 5000]
        );
    }

    #[test]
    fn our_own_layers_resume_at_member_starts_with_no_window() {
        use std::io::Write;
        let data = sample(23 << 20, 5);
        let mut gz = crate::layer::gzip::ParallelGzip::new(Vec::new(), 4);
        gz.write_all(&data).unwrap();
        let (blob, _) = gz.finish().unwrap();
        let (out, index) = index_of(&blob);
        assert_eq!(out, data);
        assert!(index.points.len() >= 5, "{}", index.points.len());
        for point in &index.points {
            assert!(
                point.window.is_empty(),
                "a point at {} keeps a window",
                point.out
            );
            assert_eq!(point.bits, 0);
            assert_eq!(point.out % crate::layer::gzip::MEMBER as u64, 0);
        }
        let wanted = [(5 << 20, 10), ((9 << 20) - 7, 3 << 20), ((23 << 20) - 5, 5)];
        let got = random_read(&blob, &index, &wanted).unwrap();
        for (n, (o, l)) in wanted.iter().enumerate() {
            assert_eq!(got[n], data[*o as usize..(o + l) as usize]);
        }
        // Members of another size (pigz -i, eStargz): once a stream shows a
        // second member, points are member starts only, even where a block
        // boundary comes first past the span.
        let blob: Vec<u8> = data.chunks(1_500_000).flat_map(gzip).collect();
        let (out, index) = index_of(&blob);
        assert_eq!(out, data);
        assert!(index.points.len() >= 4, "{}", index.points.len());
        assert!(index.points.iter().all(|p| p.window.is_empty()));
        assert!(index.points.iter().all(|p| p.out % 1_500_000 == 0));
        let got = random_read(&blob, &index, &wanted).unwrap();
        for (n, (o, l)) in wanted.iter().enumerate() {
            assert_eq!(got[n], data[*o as usize..(o + l) as usize]);
        }
    }

    #[test]
    fn damaged_bytes_are_refused_on_full_and_random_reads() {
        let data = sample(12 << 20, 9);
        let blob = gzip(&data);
        let (_, index) = index_of(&blob);
        assert!(index.points.len() >= 3);
        let offset = index.points[1].out + 10;
        let (_, from, to) = compressed_range(&index, offset, 10).unwrap();
        let first_byte = index.points[1].first_byte();
        assert!(from < first_byte && to < blob.len() as u64);
        assert!(random_read(&blob, &index, &[(offset, 10)]).is_ok());
        // Where the inflater stopped reading, short of a checkpoint.
        let stopped = {
            let mut reader = RandomReader::new(&index, 1, &blob[from as usize..]).unwrap();
            reader.skip_to(offset).unwrap();
            reader.decoder.inner.position()
        };
        assert!(stopped % index.checkpoints.interval != 0 && stopped < to);
        // A changed byte the read depends on is refused: in what is
        // inflated, before the point (hashed only) and after what the
        // inflater read (read only to reach the next checkpoint).
        for at in [first_byte + 1000, from + 3, stopped + 1] {
            let mut damaged = blob.clone();
            damaged[at as usize] ^= 0x40;
            let Err(err) = random_read(&damaged, &index, &[(offset, 10)]) else {
                panic!("damage at {at} ({from}..{to}, point at {first_byte}) passed");
            };
            assert!(err.to_string().contains("do not match"), "at {at}: {err}");
        }
        // So is a range the transport cut short of that checkpoint.
        assert!(index.checkpoints.after(stopped) > stopped + 5);
        let short = &blob[from as usize..stopped as usize + 5];
        let mut reader = RandomReader::new(&index, 1, short).unwrap();
        reader.skip_to(offset).unwrap();
        assert!(reader.finish().is_err());
        // The last stretch is checked against the blob's digest.
        let end = data.len() as u64 - 5;
        let mut damaged = blob.clone();
        let n = damaged.len();
        damaged[n - 3] ^= 1;
        let err = random_read(&damaged, &index, &[(end, 5)]).unwrap_err();
        assert!(err.to_string().contains("digest"), "{err}");
        assert!(random_read(&blob, &index, &[(end, 5)]).is_ok());
        // Checkpoints of another blob are not taken.
        let (_, found) = {
            let mut reader = IndexingReader::new(&blob[..]).unwrap();
            let mut out = Vec::new();
            reader.read_to_end(&mut out).unwrap();
            (out, reader.finish().unwrap())
        };
        assert!(found
            .with_checkpoints(checkpoints(&blob[1..], 64 << 10))
            .is_none());
        // A broken trailer is caught on the full read.
        let mut trailer = blob.clone();
        let n = trailer.len();
        trailer[n - 6] ^= 1;
        let mut reader = IndexingReader::new(&trailer[..]).unwrap();
        assert!(reader.read_to_end(&mut Vec::new()).is_err());
    }
}
