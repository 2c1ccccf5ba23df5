//! A reader that follows the tar block structure of the bytes passing
//! through it and refuses metadata records (GNU long names, PAX headers) that
//! claim more than [`MAX_METADATA`] bytes, before the tar parser would buffer
//! them in memory. It also refuses GNU sparse files, whose layout it does not
//! follow (and which no container layer needs).

use std::io::{self, Read};

use crate::error::Error;

/// The largest long name, long link name or PAX header we accept.
pub const MAX_METADATA: u64 = 1 << 20;

const BLOCK: u64 = 512;

pub struct HeaderGuard<R> {
    inner: R,
    /// Stream offset of the next bytes returned by `inner`.
    offset: u64,
    /// Where the next header block starts.
    next_header: u64,
    header: Vec<u8>,
    /// Bytes of a PAX header being collected, to learn a `size` override.
    pax: Option<PaxCapture>,
    /// Size override for the next entry, from its PAX header.
    pending_size: Option<u64>,
    /// Saw a zero block: the archive has ended; later bytes are padding.
    ended: bool,
}

struct PaxCapture {
    start: u64,
    len: u64,
    data: Vec<u8>,
}

impl<R: Read> HeaderGuard<R> {
    pub fn new(inner: R) -> Self {
        HeaderGuard {
            inner,
            offset: 0,
            next_header: 0,
            header: Vec::with_capacity(BLOCK as usize),
            pax: None,
            pending_size: None,
            ended: false,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    fn observe(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() && !self.ended {
            if let Some(pax) = &mut self.pax {
                let end = pax.start + pax.len;
                if self.offset < end {
                    let take = ((end - self.offset) as usize).min(data.len());
                    pax.data.extend_from_slice(&data[..take]);
                    self.advance(&mut data, take);
                    if self.offset == end {
                        let pax = self.pax.take().expect("present");
                        self.pending_size = pax_size(&pax.data);
                    }
                    continue;
                }
            }
            if self.offset < self.next_header {
                let skip = ((self.next_header - self.offset) as usize).min(data.len());
                self.advance(&mut data, skip);
                continue;
            }
            let want = BLOCK as usize - self.header.len();
            let take = want.min(data.len());
            self.header.extend_from_slice(&data[..take]);
            self.advance(&mut data, take);
            if self.header.len() == BLOCK as usize {
                let header = std::mem::take(&mut self.header);
                self.on_header(&header)?;
            }
        }
        Ok(())
    }

    fn advance(&mut self, data: &mut &[u8], n: usize) {
        *data = &data[n..];
        self.offset += n as u64;
    }

    fn on_header(&mut self, header: &[u8]) -> io::Result<()> {
        if header.iter().all(|&b| b == 0) {
            self.ended = true;
            return Ok(());
        }
        let typeflag = header[156];
        let declared = parse_numeric(&header[124..136]).ok_or_else(|| {
            io::Error::from(Error::new("malformed tar header: unreadable size field"))
        })?;
        let data_start = self.offset;
        let size = match typeflag {
            b'L' | b'K' | b'x' | b'g' => {
                if declared > MAX_METADATA {
                    return Err(Error::new(format!(
                        "tar header declares a {declared}-byte {} record (the limit is {MAX_METADATA})",
                        match typeflag {
                            b'L' => "long name",
                            b'K' => "long link name",
                            _ => "PAX",
                        }
                    ))
                    .hint("the layer is malformed or hostile; it was not used")
                    .into());
                }
                if typeflag == b'x' && declared > 0 {
                    self.pax = Some(PaxCapture {
                        start: data_start,
                        len: declared,
                        data: Vec::with_capacity(declared as usize),
                    });
                }
                declared
            }
            b'S' => {
                return Err(
                    Error::new("layer contains a GNU sparse file, which is not supported")
                        .hint("re-export the image with a tool that writes plain tar entries")
                        .into(),
                )
            }
            // Entries that carry no data whatever their size field says.
            b'1' | b'2' | b'3' | b'4' | b'5' | b'6' => {
                self.pending_size = None;
                0
            }
            _ => self.pending_size.take().unwrap_or(declared),
        };
        self.next_header = data_start + size.div_ceil(BLOCK) * BLOCK;
        Ok(())
    }
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n])?;
        Ok(n)
    }
}

/// Parses a tar numeric field: octal text, or GNU base-256 binary.
fn parse_numeric(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(value);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| *b != 0 && *b != b' ')
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    let text = std::str::from_utf8(&text).ok()?;
    u64::from_str_radix(text, 8).ok()
}

/// The `size` record of a PAX header, if any.
fn pax_size(data: &[u8]) -> Option<u64> {
    let mut rest = data;
    let mut size = None;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        if len <= space || len > rest.len() {
            return None;
        }
        let record = &rest[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(value) = record.strip_prefix(b"size=") {
            size = std::str::from_utf8(value).ok()?.parse().ok();
        }
        rest = &rest[len..];
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields() {
        assert_eq!(parse_numeric(b"00000001750\0"), Some(0o1750));
        assert_eq!(parse_numeric(b"     17 \0\0\0\0"), Some(0o17));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 5;
        big[10] = 1;
        assert_eq!(parse_numeric(&big), Some(261));
    }

    #[test]
    fn pax_size_record() {
        assert_eq!(
            pax_size(b"16 size=1234567\n19 path=some/thing\n"),
            Some(1234567)
        );
        assert_eq!(pax_size(b"19 path=some/thing\n"), None);
    }
}
