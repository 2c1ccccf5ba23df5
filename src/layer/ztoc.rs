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
//! What is read at random is checked too: every span of compressed bytes
//! between two access points has its SHA-256 in the index, and
//! [`read_at`] fails unless the bytes it was given match.
//!
//! The inflater is zlib-rs (the same as flate2's backend here) through its
//! zlib-compatible API, for `Z_BLOCK`, `inflatePrime` and
//! `inflateSetDictionary`. Gzip members are parsed here, so multi-member
//! streams work; each member's CRC-32 and length are checked on the full
//! read.

use std::io::{self, Read};

use libz_rs_sys as z;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

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
    /// SHA-256 of the compressed bytes from this point's first byte to
    /// the next point's `input` (or the end of the blob).
    pub span_digest: [u8; 32],
}

impl AccessPoint {
    /// The first compressed byte inflating from here reads.
    pub(crate) fn first_byte(&self) -> u64 {
        self.input - u64::from(self.bits > 0)
    }
}

/// The access points of one gzip blob.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AccessIndex {
    pub points: Vec<AccessPoint>,
    /// Size of the compressed blob.
    pub compressed: u64,
    /// Size of the uncompressed stream.
    pub uncompressed: u64,
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
    /// `bytes`, starting at compressed offset `base`, are about to leave
    /// the input buffer.
    fn dropping(&mut self, _base: u64, _bytes: &[u8]) {}
    /// A deflate block (not a member's last) ended: the stream can resume
    /// here.
    fn boundary(&mut self, _at: &Boundary<'_>) {}
    /// A member (not the first) starts its deflate stream here: the stream
    /// can resume with no window at all.
    fn member(&mut self, _at: &Boundary<'_>) {}
}

/// The state at a block boundary.
struct Boundary<'a> {
    /// Compressed bytes consumed so far, and where they start.
    consumed: &'a [u8],
    consumed_base: u64,
    bits: u8,
    out: u64,
    window: &'a [u8],
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
    /// The last output of the current member, up to 32 KiB.
    history: Vec<u8>,
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
            history: Vec::with_capacity(2 * WINDOW),
            crc: crc32fast::Hasher::new(),
            member_len: 0,
            check_member: phase == Phase::Header,
            eof: false,
        })
    }

    /// Makes at least `n` unread input bytes available, unless the input
    /// ends first. `observer` sees the bytes about to be discarded.
    fn fill(&mut self, n: usize, observer: &mut dyn Observer) -> io::Result<bool> {
        while self.input.len() - self.in_pos < n {
            if self.eof {
                return Ok(false);
            }
            if self.in_pos > 0 {
                observer.dropping(self.in_base, &self.input[..self.in_pos]);
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

    fn take_byte(&mut self, observer: &mut dyn Observer) -> io::Result<u8> {
        if !self.fill(1, observer)? {
            return Err(bad("the stream ends inside a header"));
        }
        self.in_pos += 1;
        Ok(self.input[self.in_pos - 1])
    }

    /// Parses a member header; `false` at the clean end of the stream.
    fn header(&mut self, observer: &mut dyn Observer) -> io::Result<bool> {
        if !self.fill(1, observer)? {
            return Ok(false);
        }
        let mut fixed = [0u8; 10];
        for byte in &mut fixed {
            *byte = self.take_byte(observer)?;
        }
        if fixed[..3] != [0x1f, 0x8b, 8] {
            return Err(bad("not a gzip member (bad magic or method)"));
        }
        let flags = fixed[3];
        if flags & 4 != 0 {
            let len = u16::from_le_bytes([self.take_byte(observer)?, self.take_byte(observer)?]);
            for _ in 0..len {
                self.take_byte(observer)?;
            }
        }
        for flag in [8u8, 16] {
            if flags & flag != 0 {
                // A zero-terminated name or comment, bounded like any header.
                let mut len = 0usize;
                while self.take_byte(observer)? != 0 {
                    len += 1;
                    if len > 1 << 20 {
                        return Err(bad("a header name or comment is too long"));
                    }
                }
            }
        }
        if flags & 2 != 0 {
            self.take_byte(observer)?;
            self.take_byte(observer)?;
        }
        self.inflater.reset();
        self.history.clear();
        self.crc = crc32fast::Hasher::new();
        self.member_len = 0;
        self.check_member = true;
        if self.out_total > 0 {
            observer.member(&Boundary {
                consumed: &self.input[..self.in_pos],
                consumed_base: self.in_base,
                bits: 0,
                out: self.out_total,
                window: &[],
            });
        }
        Ok(true)
    }

    fn trailer(&mut self, observer: &mut dyn Observer) -> io::Result<()> {
        let mut trailer = [0u8; 8];
        for byte in &mut trailer {
            *byte = self.take_byte(observer)?;
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
        self.history.extend_from_slice(produced);
        if self.history.len() > 2 * WINDOW {
            self.history.drain(..self.history.len() - WINDOW);
        }
    }

    fn window(&self) -> &[u8] {
        &self.history[self.history.len().saturating_sub(WINDOW)..]
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
                    self.trailer(observer)?;
                    self.phase = Phase::Header;
                }
                Phase::Body => {
                    let available = self.input.len() - self.in_pos;
                    if !self.fill(1, observer)? {
                        return Err(bad("the stream ends inside compressed data"));
                    }
                    let (consumed, produced, code, data_type) =
                        self.inflater
                            .inflate(&self.input[self.in_pos..], buf, z::Z_BLOCK);
                    self.in_pos += consumed;
                    self.remember(&buf[..produced]);
                    match code {
                        z::Z_STREAM_END => self.phase = Phase::Trailer,
                        z::Z_OK | z::Z_BUF_ERROR => {
                            if data_type & 128 != 0 && data_type & 64 == 0 {
                                observer.boundary(&Boundary {
                                    consumed: &self.input[..self.in_pos],
                                    consumed_base: self.in_base,
                                    bits: (data_type & 7) as u8,
                                    out: self.out_total,
                                    window: self.window(),
                                });
                            }
                            if consumed == 0
                                && produced == 0
                                && !self.fill(available.max(1) + 1, observer)?
                            {
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
    result: Option<std::sync::Arc<std::sync::Mutex<Option<AccessIndex>>>>,
}

/// The access points found so far, and the hash of the current span.
struct Points {
    points: Vec<AccessPoint>,
    /// A second member was seen: only member starts are taken from then
    /// on, as they need no window (our own layers are 1 MiB members).
    members: bool,
    span: Sha256,
    hashed_upto: u64,
    last_out: u64,
}

impl Points {
    /// Hashes the part of `bytes` (which start at `base`) not hashed yet.
    fn hash(&mut self, base: u64, bytes: &[u8]) {
        let end = base + bytes.len() as u64;
        if end > self.hashed_upto {
            let skip = self.hashed_upto.saturating_sub(base) as usize;
            self.span.update(&bytes[skip..]);
            self.hashed_upto = end;
        }
    }

    fn close_span(&mut self) {
        let finished = std::mem::replace(&mut self.span, Sha256::new());
        if let Some(previous) = self.points.last_mut() {
            previous.span_digest = finished.finalize().into();
        }
    }
}

impl Observer for Points {
    fn dropping(&mut self, base: u64, bytes: &[u8]) {
        self.hash(base, bytes);
    }

    fn boundary(&mut self, at: &Boundary<'_>) {
        if !self.members {
            self.point(at);
        }
    }

    fn member(&mut self, at: &Boundary<'_>) {
        self.members = true;
        self.point(at);
    }
}

impl Points {
    /// Keeps an access point at `at`, if it is far enough from the last.
    fn point(&mut self, at: &Boundary<'_>) {
        let doublings = (self.points.len() / POINTS_PER_DOUBLING).min(16) as u32;
        if self.points.len() >= MAX_POINTS || at.out < self.last_out + (SPAN << doublings) {
            return;
        }
        // The span before this point ends with the bytes consumed so far;
        // the next one starts with the byte holding the leftover bits.
        self.hash(at.consumed_base, at.consumed);
        self.close_span();
        let input = at.consumed_base + at.consumed.len() as u64;
        if at.bits > 0 {
            if let Some(last) = at.consumed.last() {
                self.span.update([*last]);
            }
        }
        self.points.push(AccessPoint {
            out: at.out,
            input,
            bits: at.bits,
            window: at.window.to_vec(),
            span_digest: [0; 32],
        });
        self.last_out = at.out;
    }
}

impl<R: Read> IndexingReader<R> {
    pub(crate) fn new(inner: R) -> io::Result<Self> {
        Ok(IndexingReader {
            decoder: Decoder::new(inner, 0, 0, Phase::Header)?,
            points: Points {
                points: vec![AccessPoint {
                    out: 0,
                    input: 0,
                    bits: 0,
                    window: Vec::new(),
                    span_digest: [0; 32],
                }],
                members: false,
                span: Sha256::new(),
                hashed_upto: 0,
                last_out: 0,
            },
            result: None,
        })
    }

    /// Like [`IndexingReader::new`]; the access points are put in `slot`
    /// once the stream has been read to its end.
    pub(crate) fn with_slot(
        inner: R,
        slot: std::sync::Arc<std::sync::Mutex<Option<AccessIndex>>>,
    ) -> io::Result<Self> {
        let mut reader = Self::new(inner)?;
        reader.result = Some(slot);
        Ok(reader)
    }

    fn conclude(&mut self) -> AccessIndex {
        let decoder = &mut self.decoder;
        let points = &mut self.points;
        points.hash(decoder.in_base, &decoder.input);
        points.close_span();
        AccessIndex {
            points: std::mem::take(&mut points.points),
            compressed: decoder.in_base + decoder.input.len() as u64,
            uncompressed: decoder.out_total,
        }
    }

    /// The access points; reads whatever is left of the stream first.
    #[cfg(test)]
    pub(crate) fn finish(mut self) -> io::Result<AccessIndex> {
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

/// Checks spans of compressed bytes against their digests as they are read.
struct VerifiedSpans<'a, R> {
    inner: R,
    index: &'a AccessIndex,
    /// Absolute offset of the next byte.
    pos: u64,
    /// Spans being hashed: (point, hasher).
    open: Vec<(usize, Sha256)>,
    next_span: usize,
}

impl<R: Read> Read for VerifiedSpans<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let start = self.pos;
        let end = start + n as u64;
        // Spans that start within what was read.
        while let Some(point) = self.index.points.get(self.next_span) {
            if point.first_byte() >= end {
                break;
            }
            self.open.push((self.next_span, Sha256::new()));
            self.next_span += 1;
        }
        let mut still_open = Vec::with_capacity(self.open.len());
        for (i, mut hasher) in self.open.drain(..) {
            let from = self.index.points[i].first_byte().max(start);
            let to = self.index.span_end(i).min(end);
            if to > from {
                hasher.update(&buf[(from - start) as usize..(to - start) as usize]);
            }
            if self.index.span_end(i) <= end {
                let digest: [u8; 32] = hasher.finalize().into();
                if digest != self.index.points[i].span_digest {
                    return Err(bad(&format!(
                        "the compressed bytes at {} do not match the layer's index",
                        self.index.points[i].first_byte()
                    )));
                }
            } else {
                still_open.push((i, hasher));
            }
        }
        self.open = still_open;
        self.pos = end;
        Ok(n)
    }
}

/// Which span range of compressed bytes holds uncompressed `[offset,
/// offset + len)`: (first point, first byte, end byte).
pub(crate) fn compressed_range(
    index: &AccessIndex,
    offset: u64,
    len: u64,
) -> Option<(usize, u64, u64)> {
    let first = index.point_before(offset)?;
    let last = index.point_before((offset + len).saturating_sub(1).max(offset))?;
    Some((
        first,
        index.points[first].first_byte(),
        index.span_end(last),
    ))
}

/// The uncompressed stream from an access point on, inflated from `raw`:
/// the compressed bytes from that point's first byte, checked against the
/// span digests as they are read.
pub(crate) struct RandomReader<'a, R> {
    decoder: Decoder<VerifiedSpans<'a, R>>,
    index: &'a AccessIndex,
    buf: Vec<u8>,
    buf_pos: usize,
    /// Uncompressed offset of `buf[buf_pos]`.
    position: u64,
}

impl<'a, R: Read> RandomReader<'a, R> {
    pub(crate) fn new(index: &'a AccessIndex, first: usize, raw: R) -> io::Result<Self> {
        let point = &index.points[first];
        let verified = VerifiedSpans {
            inner: raw,
            index,
            pos: point.first_byte(),
            open: Vec::new(),
            next_span: first,
        };
        let phase = if first == 0 {
            Phase::Header
        } else {
            Phase::Body
        };
        let mut decoder = Decoder::new(verified, point.first_byte(), point.out, phase)?;
        if first > 0 {
            if point.bits > 0 {
                let byte = decoder.take_byte(&mut Nothing)?;
                decoder.inflater.prime(point.bits, byte)?;
            }
            decoder.inflater.set_dictionary(&point.window)?;
            decoder.history.extend_from_slice(&point.window);
            decoder.check_member = false;
        }
        Ok(RandomReader {
            decoder,
            index,
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

    /// Reads the rest of the span holding the last byte read, so that its
    /// digest is checked.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        let last = self.index.point_before(self.position.saturating_sub(1));
        if let Some(last) = last {
            let raw = &mut self.decoder.inner;
            let remaining = self.index.span_end(last).saturating_sub(raw.pos);
            io::copy(&mut raw.by_ref().take(remaining), &mut io::sink())?;
            // Spans up to that one were all checked (the next may have
            // begun, on the byte two spans share).
            if raw.open.iter().any(|(i, _)| *i <= last) {
                return Err(bad(
                    "the compressed bytes end before the layer's index says",
                ));
            }
        }
        Ok(())
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

    fn index_of(blob: &[u8]) -> (Vec<u8>, AccessIndex) {
        let mut reader = IndexingReader::new(blob).unwrap();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        (out, reader.finish().unwrap())
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
        let blob = gz.finish().unwrap();
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
        let mut damaged = blob.clone();
        let at = index.points[2].input as usize + 1000;
        damaged[at] ^= 0x40;
        let offset = index.points[2].out + 10;
        assert!(random_read(&damaged, &index, &[(offset, 10)]).is_err());
        // A broken trailer is caught on the full read.
        let mut trailer = blob.clone();
        let n = trailer.len();
        trailer[n - 6] ^= 1;
        let mut reader = IndexingReader::new(&trailer[..]).unwrap();
        assert!(reader.read_to_end(&mut Vec::new()).is_err());
    }
}
