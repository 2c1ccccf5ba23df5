//! The one authority over where a layer's tar entries begin and end.
//!
//! Docker applies layers with Go's archive/tar, so this reads them by the
//! same rules: a link, symlink, device, directory or FIFO header carries no
//! data whatever its size field (or a PAX `size`) says; a regular file's
//! size comes from PAX `size` when there is one, else the header (octal or
//! base-256). Every number from the input is checked, and every record kept
//! in memory is bounded: GNU long names and PAX headers ([`MAX_RECORD`]),
//! extended attributes per entry, entries per layer. Nothing is buffered
//! but headers and those records.

use std::io::{self, Read};

use crate::error::{Error, Result};

const BLOCK: usize = 512;
/// The largest GNU long name, long link name or PAX header accepted.
pub(crate) const MAX_RECORD: u64 = 64 << 10;
/// Most extended attributes one entry may carry.
pub(crate) const MAX_XATTRS: usize = 128;
/// Most entries one layer may have.
pub(crate) const MAX_ENTRIES: u64 = 4_000_000;

/// An entry's header, with GNU and PAX extensions applied.
#[derive(Clone, Debug, Default)]
pub(crate) struct TarHeader {
    pub typeflag: u8,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u64,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    pub devmajor: u64,
    pub devminor: u64,
    /// Bytes of content that follow (0 for header-only types).
    pub size: u64,
    /// PAX records other than the ones applied above (xattrs among them).
    pub pax: Vec<(String, Vec<u8>)>,
}

fn bad(message: impl Into<String>) -> Error {
    Error::new(format!("malformed tar: {}", message.into()))
        .hint("the layer is malformed or hostile; it was not used")
}

/// Reads a numeric field: octal text (spaces and NULs around it), or GNU
/// base-256. An all-blank field is 0, as Go reads it.
fn number(field: &[u8], what: &str) -> Result<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        if field[0] == 0xff {
            return Err(bad(format!("negative {what}")));
        }
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| bad(format!("{what} overflows")))?;
        }
        return Ok(value);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ' || *b == 0)
        .take_while(|b| *b != 0 && *b != b' ')
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    std::str::from_utf8(&text)
        .ok()
        .and_then(|t| u64::from_str_radix(t, 8).ok())
        .ok_or_else(|| bad(format!("unreadable {what} field")))
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// Types whose entries have no data, whatever their size says (Go's
/// `isHeaderOnlyType`).
fn header_only(typeflag: u8) -> bool {
    matches!(typeflag, b'1' | b'2' | b'3' | b'4' | b'5' | b'6')
}

/// Reads a tar stream entry by entry.
pub(crate) struct TarReader<R> {
    inner: R,
    /// Stream offset of the next byte `inner` yields.
    pos: u64,
    /// Where the current entry's data ends (data, then padding, follow).
    data_end: u64,
    next_header: u64,
    entries: u64,
    done: bool,
}

impl<R: Read> TarReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        TarReader {
            inner,
            pos: 0,
            data_end: 0,
            next_header: 0,
            entries: 0,
            done: false,
        }
    }

    pub(crate) fn into_inner(self) -> R {
        self.inner
    }

    /// Where the current entry's data starts in the stream.
    pub(crate) fn data_start(&self) -> u64 {
        self.pos
    }

    fn skip_to(&mut self, target: u64) -> Result<()> {
        let skip = target.saturating_sub(self.pos);
        let skipped = io::copy(&mut (&mut self.inner).take(skip), &mut io::sink())?;
        self.pos += skipped;
        if skipped != skip {
            return Err(bad("the archive ends inside an entry"));
        }
        Ok(())
    }

    /// Reads exactly one block; `None` at a clean end of input.
    fn block(&mut self) -> Result<Option<[u8; BLOCK]>> {
        let mut block = [0u8; BLOCK];
        let mut filled = 0;
        while filled < BLOCK {
            let n = self.inner.read(&mut block[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        self.pos += filled as u64;
        match filled {
            0 => Ok(None),
            BLOCK => Ok(Some(block)),
            _ => Err(bad("the archive ends inside a header")),
        }
    }

    /// Reads a metadata record's data (long name, PAX), bounded.
    fn record(&mut self, size: u64, what: &str) -> Result<Vec<u8>> {
        if size > MAX_RECORD {
            return Err(bad(format!(
                "a header declares a {size}-byte {what} record (the limit is {MAX_RECORD})"
            )));
        }
        let mut data = vec![0u8; size as usize];
        self.inner
            .read_exact(&mut data)
            .map_err(|_| bad("the archive ends inside a record"))?;
        self.pos += size;
        let padded = self.pos.div_ceil(BLOCK as u64) * BLOCK as u64;
        self.skip_to(padded)?;
        Ok(data)
    }

    /// The next entry's header, with extensions applied; `None` at the end
    /// of the archive. The previous entry's unread data is skipped.
    pub(crate) fn next_header(&mut self) -> Result<Option<TarHeader>> {
        if self.done {
            return Ok(None);
        }
        self.skip_to(self.next_header)?;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        loop {
            let Some(block) = self.block()? else {
                self.done = true;
                return Ok(None);
            };
            if block.iter().all(|&b| b == 0) {
                // One zero block ends it when a second or the input's end follows.
                match self.block()? {
                    Some(next) if next.iter().any(|&b| b != 0) => {
                        return Err(bad("a zero block is followed by more headers"))
                    }
                    _ => {
                        self.done = true;
                        return Ok(None);
                    }
                }
            }
            check_sum(&block)?;
            let typeflag = block[156];
            let declared = number(&block[124..136], "size")?;
            match typeflag {
                b'L' => long_name = Some(trim_nul(self.record(declared, "long name")?)),
                b'K' => long_link = Some(trim_nul(self.record(declared, "long link name")?)),
                b'x' => pax.extend(parse_pax(&self.record(declared, "PAX")?)?),
                b'g' => {
                    // Global records: Docker ignores them, and so do we.
                    self.record(declared, "PAX")?;
                }
                b'S' => {
                    return Err(bad("a GNU sparse file, which is not supported")
                        .hint("re-export the image with a tool that writes plain tar entries"))
                }
                _ => {
                    self.entries += 1;
                    if self.entries > MAX_ENTRIES {
                        return Err(bad(format!("more than {MAX_ENTRIES} entries in one layer")));
                    }
                    let header = self.entry_header(&block, long_name, long_link, pax, declared)?;
                    self.data_end = self
                        .pos
                        .checked_add(header.size)
                        .ok_or_else(|| bad("an entry's size overflows"))?;
                    self.next_header = self
                        .data_end
                        .checked_next_multiple_of(BLOCK as u64)
                        .ok_or_else(|| bad("an entry's size overflows"))?;
                    return Ok(Some(header));
                }
            }
        }
    }

    fn entry_header(
        &self,
        block: &[u8; BLOCK],
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        pax: Vec<(String, Vec<u8>)>,
        declared: u64,
    ) -> Result<TarHeader> {
        let ustar = &block[257..263] == b"ustar\0";
        let mut path = cstr(&block[0..100]).to_vec();
        if ustar {
            let prefix = cstr(&block[345..500]);
            if !prefix.is_empty() {
                path = [prefix, b"/", &path].concat();
            }
        }
        let mut header = TarHeader {
            typeflag: block[156],
            path: long_name.unwrap_or(path),
            link: long_link.unwrap_or_else(|| cstr(&block[157..257]).to_vec()),
            mode: number(&block[100..108], "mode")?,
            uid: number(&block[108..116], "uid")?,
            gid: number(&block[116..124], "gid")?,
            mtime: number(&block[136..148], "mtime")?,
            uname: cstr(&block[265..297]).to_vec(),
            gname: cstr(&block[297..329]).to_vec(),
            devmajor: number(&block[329..337], "devmajor")?,
            devminor: number(&block[337..345], "devminor")?,
            size: declared,
            pax: Vec::new(),
        };
        let mut xattrs = 0;
        for (key, value) in pax {
            let text = || std::str::from_utf8(&value).ok();
            let numeric = |what: &str| {
                text()
                    .and_then(|t| t.parse::<u64>().ok())
                    .ok_or_else(|| bad(format!("unreadable PAX {what}")))
            };
            match key.as_str() {
                "path" => header.path = value.clone(),
                "linkpath" => header.link = value.clone(),
                "size" => header.size = numeric("size")?,
                "uid" => header.uid = numeric("uid")?,
                "gid" => header.gid = numeric("gid")?,
                "uname" => header.uname = value.clone(),
                "gname" => header.gname = value.clone(),
                "mtime" => {
                    // Sub-second precision is dropped; times before 1970 are 0.
                    let whole = text()
                        .unwrap_or("0")
                        .split('.')
                        .next()
                        .unwrap_or("0")
                        .to_string();
                    header.mtime = whole.parse::<i64>().unwrap_or(0).max(0) as u64;
                }
                k if k.starts_with("GNU.sparse.") => {
                    return Err(bad("a GNU sparse file (PAX), which is not supported"))
                }
                k => {
                    if k.starts_with("SCHILY.xattr.") {
                        xattrs += 1;
                        if xattrs > MAX_XATTRS {
                            return Err(bad(format!(
                                "more than {MAX_XATTRS} extended attributes on one entry"
                            )));
                        }
                    }
                    header.pax.push((key, value));
                }
            }
        }
        if header_only(header.typeflag) {
            header.size = 0;
        }
        Ok(header)
    }
}

/// The current entry's data, up to its end.
impl<R: Read> Read for TarReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.data_end.saturating_sub(self.pos);
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside an entry's data",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn trim_nul(mut data: Vec<u8>) -> Vec<u8> {
    if let Some(end) = data.iter().position(|&b| b == 0) {
        data.truncate(end);
    }
    data
}

/// Checks a header's checksum, signed or unsigned as Go accepts.
fn check_sum(block: &[u8; BLOCK]) -> Result<()> {
    let stored = number(&block[148..156], "checksum")?;
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if stored != unsigned && i64::try_from(stored).ok() != Some(signed) {
        return Err(bad("a header's checksum does not match"));
    }
    Ok(())
}

/// Parses PAX records: `LEN KEY=VALUE\n`, each length checked.
fn parse_pax(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut records = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("a PAX record has no length"))?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| bad("a PAX record's length is unreadable"))?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("a PAX record's length does not fit"));
        }
        let record = &rest[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("a PAX record has no `=`"))?;
        let key = String::from_utf8(record[..eq].to_vec())
            .map_err(|_| bad("a PAX record's key is not UTF-8"))?;
        records.push((key, record[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, typeflag: u8, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_entry_type(tar::EntryType::new(typeflag));
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn pad(mut data: Vec<u8>) -> Vec<u8> {
        let len = data.len().div_ceil(BLOCK) * BLOCK;
        data.resize(len, 0);
        data
    }

    fn names(archive: &[u8]) -> Result<Vec<(String, u64)>> {
        let mut reader = TarReader::new(archive);
        let mut out = Vec::new();
        while let Some(h) = reader.next_header()? {
            let mut data = Vec::new();
            reader.read_to_end(&mut data)?;
            out.push((
                String::from_utf8_lossy(&h.path).into_owned(),
                data.len() as u64,
            ));
        }
        Ok(out)
    }

    #[test]
    fn header_only_types_carry_no_data_whatever_their_size_says() {
        // A symlink claiming 1024 bytes, followed by what Docker reads as the
        // next entry: we must see that entry too.
        let mut archive = header("link", b'2', 1024);
        archive.extend(pad(
            [header("hidden", b'0', 5), pad(b"hello".to_vec())].concat()
        ));
        archive.extend(vec![0u8; 1024]);
        assert_eq!(
            names(&archive).unwrap(),
            [("link".into(), 0), ("hidden".into(), 5)]
        );

        // A PAX size before a directory is ignored the same way.
        let pax = b"14 size=99999\n".to_vec();
        let mut archive = header("PaxHeaders/d", b'x', pax.len() as u64);
        archive.extend(pad(pax));
        archive.extend(header("d/", b'5', 0));
        archive.extend(header("f", b'0', 3));
        archive.extend(pad(b"abc".to_vec()));
        archive.extend(vec![0u8; 1024]);
        assert_eq!(
            names(&archive).unwrap(),
            [("d/".into(), 0), ("f".into(), 3)]
        );
    }

    #[test]
    fn records_and_numbers_are_bounded_and_checked() {
        let mut big = header("././@LongLink", b'L', 1 << 40);
        big.extend(vec![0u8; 1024]);
        let err = names(&big).unwrap_err();
        assert!(
            err.message()
                .contains("1099511627776-byte long name record"),
            "{}",
            err.message()
        );

        let mut huge = header("f", b'0', 0);
        // base-256 size near 2^64: refused as overflow, not wrapped.
        huge[124] = 0x80;
        for b in &mut huge[125..136] {
            *b = 0xff;
        }
        let mut h = tar::Header::from_byte_slice(&huge[..512]).clone();
        h.set_cksum();
        let mut archive = h.as_bytes().to_vec();
        archive.extend(vec![0u8; 1024]);
        assert!(names(&archive).is_err());

        let mut corrupt = header("f", b'0', 0);
        corrupt[0] ^= 1;
        assert!(names(&corrupt).unwrap_err().message().contains("checksum"));

        let pax = b"99 path=x\n".to_vec();
        let mut archive = header("PaxHeaders/f", b'x', pax.len() as u64);
        archive.extend(pad(pax));
        assert!(names(&archive)
            .unwrap_err()
            .message()
            .contains("PAX record"));
    }
}
