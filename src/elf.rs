//! What the dynamic loader reads from an ELF file: its DT_NEEDED entries,
//! DT_RPATH, DT_RUNPATH, DT_SONAME and PT_INTERP, plus class and machine to
//! tell incompatible libraries apart; and, for the SBOM, the package
//! metadata note (`.note.package`) some builds stamp into it.
//!
//! Only the headers, the dynamic segment and the dynamic string table are
//! read, through [`ReadAt`], so a multi-GB library costs a few reads and no
//! more memory than its string table. goblin parses the headers.

use std::io::{self, Read};

use goblin::container::{Container, Ctx};
use goblin::elf::dynamic::{
    Dyn, DT_NEEDED, DT_NULL, DT_RPATH, DT_RUNPATH, DT_SONAME, DT_STRSZ, DT_STRTAB,
};
use goblin::elf::program_header::{ProgramHeader, PT_DYNAMIC, PT_INTERP, PT_LOAD, PT_NOTE};
use goblin::elf::Elf;

use crate::digest::{FileDigests, FileHasher};

/// Caps on what a (possibly hostile) header can make us read.
const MAX_PROGRAM_HEADERS: usize = 4096;
const MAX_DYNAMIC: u64 = 1 << 20;
const MAX_STRTAB: u64 = 256 << 20;
const MAX_NOTES: u64 = 64 << 10;

/// The owner and type of a package metadata note, from systemd's "Package
/// Metadata for Executable Files" (uapi-group.org/specifications/specs/
/// package_metadata_for_executable_files): owner `FDO`, a JSON payload.
const PACKAGE_NOTE_OWNER: &[u8] = b"FDO";
const PACKAGE_NOTE_TYPE: u32 = 0xcafe_1a7e;

/// Random access to a file's bytes.
pub trait ReadAt {
    /// Fills `buf` from `offset`; false when the file is shorter.
    fn fill_at(&self, buf: &mut [u8], offset: u64) -> bool;
}

impl ReadAt for [u8] {
    fn fill_at(&self, buf: &mut [u8], offset: u64) -> bool {
        let Ok(start) = usize::try_from(offset) else {
            return false;
        };
        match self.get(start..start.saturating_add(buf.len())) {
            Some(src) if src.len() == buf.len() => {
                buf.copy_from_slice(src);
                true
            }
            _ => false,
        }
    }
}

impl ReadAt for std::fs::File {
    fn fill_at(&self, buf: &mut [u8], offset: u64) -> bool {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset).is_ok()
    }
}

/// The dynamic-linking facts of one ELF file.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ElfInfo {
    pub is_64: bool,
    pub machine: u16,
    pub needed: Vec<String>,
    pub soname: Option<String>,
    /// DT_RPATH entries, split at `:`, tokens unexpanded.
    pub rpath: Vec<String>,
    /// DT_RUNPATH entries, split at `:`, tokens unexpanded.
    pub runpath: Vec<String>,
    /// PT_INTERP, for executables.
    pub interpreter: Option<String>,
    /// The package metadata note, when the file has one. (No
    /// `skip_serializing_if` here: the store's indexes are postcard, whose
    /// fields are positional.)
    pub package: Option<PackageNote>,
    /// The file's content digests, when the scan that read it hashed it
    /// (for the SBOM).
    pub digests: Option<FileDigests>,
}

/// What a `.note.package` says of the file (the fields the SBOM uses).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackageNote {
    /// The package format (`deb`, `rpm`, ...), the note's `type`.
    pub kind: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub architecture: Option<String>,
    /// The note's `osCpe`.
    pub os_cpe: Option<String>,
}

impl ElfInfo {
    /// What these facts take in memory, roughly: their strings.
    pub(crate) fn cost(&self) -> u64 {
        let strings = self
            .needed
            .iter()
            .chain(&self.rpath)
            .chain(&self.runpath)
            .chain(&self.soname)
            .chain(&self.interpreter);
        strings.map(|s| s.len() as u64 + 24).sum()
    }

    /// True when a library with `other`'s class and machine can be loaded
    /// into this object's process.
    pub fn compatible(&self, other: &ElfInfo) -> bool {
        self.is_64 == other.is_64 && self.machine == other.machine
    }
}

/// True when `head` starts like an ELF file.
pub(crate) fn is_elf(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
}

/// Passes a file's content through, and hashes it ([`FileDigests`]) when
/// it starts as an ELF file does: the SBOM's digests of files no package
/// owns cost one pass over the ELF files, nothing over the rest.
pub(crate) struct ElfHashingReader<R> {
    inner: R,
    /// What was read before the first four bytes were seen.
    head: Vec<u8>,
    hasher: Option<FileHasher>,
    decided: bool,
}

impl<R: Read> ElfHashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        ElfHashingReader {
            inner,
            head: Vec::new(),
            hasher: None,
            decided: false,
        }
    }

    /// The digests, when the content was an ELF file.
    pub(crate) fn finish(self) -> Option<FileDigests> {
        self.hasher.map(FileHasher::finish)
    }
}

impl<R: Read> Read for ElfHashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = &buf[..n];
        if let Some(hasher) = &mut self.hasher {
            hasher.update(read);
        } else if !self.decided {
            self.head.extend_from_slice(read);
            if self.head.len() >= 4 || n == 0 {
                self.decided = true;
                if is_elf(&self.head) {
                    let mut hasher = FileHasher::default();
                    hasher.update(&self.head);
                    self.hasher = Some(hasher);
                }
                self.head = Vec::new();
            }
        }
        Ok(n)
    }
}

/// Reads the dynamic-linking facts of an ELF file of `size` bytes; `None`
/// if it is not an ELF file or its headers do not make sense.
pub fn read(file: &(impl ReadAt + ?Sized), size: u64) -> Option<ElfInfo> {
    let mut ident = [0u8; 64];
    let head_len = (size as usize).min(ident.len());
    if !file.fill_at(&mut ident[..head_len], 0) || !is_elf(&ident[..head_len]) {
        return None;
    }
    let header = Elf::parse_header(&ident[..head_len]).ok()?;
    let ctx = Ctx::new(header.container().ok()?, header.endianness().ok()?);
    let count = usize::from(header.e_phnum);
    if count > MAX_PROGRAM_HEADERS {
        return None;
    }
    // A table larger than any real one would make us allocate for nothing.
    let table_size = count.checked_mul(usize::from(header.e_phentsize))?;
    if table_size > MAX_DYNAMIC as usize {
        return None;
    }
    let mut table = vec![0u8; table_size];
    if !file.fill_at(&mut table, header.e_phoff) {
        return None;
    }
    let phdrs = ProgramHeader::parse(&table, 0, count, ctx).ok()?;
    let mut info = ElfInfo {
        is_64: ctx.container == Container::Big,
        machine: header.e_machine,
        ..ElfInfo::default()
    };
    info.package = package_note(file, &phdrs, ctx);
    if let Some(interp) = phdrs.iter().find(|p| p.p_type == PT_INTERP) {
        if interp.p_filesz <= 4096 {
            let mut buf = vec![0u8; interp.p_filesz as usize];
            if file.fill_at(&mut buf, interp.p_offset) {
                info.interpreter = Some(c_string(&buf, 0)?);
            }
        }
    }
    let Some(dynamic) = phdrs.iter().find(|p| p.p_type == PT_DYNAMIC) else {
        return Some(info); // statically linked
    };
    if dynamic.p_filesz > MAX_DYNAMIC {
        return None;
    }
    let mut bytes = vec![0u8; dynamic.p_filesz as usize];
    if !file.fill_at(&mut bytes, dynamic.p_offset) {
        return None;
    }
    let entries = dyn_entries(&bytes, ctx)?;
    let value = |tag: u64| entries.iter().find(|d| d.d_tag == tag).map(|d| d.d_val);
    let (strtab_addr, strtab_size) = (value(DT_STRTAB)?, value(DT_STRSZ)?);
    if strtab_size > MAX_STRTAB {
        return None;
    }
    let offset = file_offset(&phdrs, strtab_addr)?;
    let mut strtab = vec![0u8; strtab_size as usize];
    if !file.fill_at(&mut strtab, offset) {
        return None;
    }
    let string = |d: &Dyn| c_string(&strtab, d.d_val as usize);
    let paths = |s: String| -> Vec<String> { s.split(':').map(str::to_string).collect() };
    for entry in &entries {
        match entry.d_tag {
            DT_NEEDED => info.needed.push(string(entry)?),
            DT_SONAME => info.soname = Some(string(entry)?),
            DT_RPATH => info.rpath.extend(paths(string(entry)?)),
            DT_RUNPATH => info.runpath.extend(paths(string(entry)?)),
            _ => {}
        }
    }
    Some(info)
}

/// The first package metadata note of the PT_NOTE segments, if any.
fn package_note(
    file: &(impl ReadAt + ?Sized),
    phdrs: &[ProgramHeader],
    ctx: Ctx,
) -> Option<PackageNote> {
    phdrs
        .iter()
        .filter(|p| p.p_type == PT_NOTE && p.p_filesz <= MAX_NOTES)
        .find_map(|segment| {
            let mut bytes = vec![0u8; segment.p_filesz as usize];
            if !file.fill_at(&mut bytes, segment.p_offset) {
                return None;
            }
            let align = if segment.p_align == 8 { 8 } else { 4 };
            let note = notes(&bytes, align, ctx.le)
                .find(|(owner, kind, _)| *owner == PACKAGE_NOTE_OWNER && *kind == PACKAGE_NOTE_TYPE)
                .and_then(|(_, _, desc)| parse_package_note(desc));
            note
        })
}

/// The notes of a note segment: (owner without its NUL, type, descriptor).
fn notes(
    bytes: &[u8],
    align: usize,
    endian: scroll::Endian,
) -> impl Iterator<Item = (&[u8], u32, &[u8])> {
    use scroll::Pread;
    let up = move |n: usize| n.checked_add(align - 1).map(|n| n & !(align - 1));
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let word = |i: usize| bytes.pread_with::<u32>(at + 4 * i, endian).ok();
        let (namesz, descsz, kind) = (word(0)? as usize, word(1)? as usize, word(2)?);
        let name_at = at.checked_add(12)?;
        let desc_at = name_at.checked_add(up(namesz)?)?;
        let next = desc_at.checked_add(up(descsz)?)?;
        let name = bytes.get(name_at..name_at.checked_add(namesz)?)?;
        let desc = bytes.get(desc_at..desc_at.checked_add(descsz)?)?;
        at = next;
        let owner = name.strip_suffix(b"\0").unwrap_or(name);
        Some((owner, kind, desc))
    })
}

/// A package note's JSON (NUL-padded), or `None` when it is not JSON.
fn parse_package_note(desc: &[u8]) -> Option<PackageNote> {
    let end = desc.iter().position(|&b| b == 0).unwrap_or(desc.len());
    let value: serde_json::Value = serde_json::from_slice(&desc[..end]).ok()?;
    let field = |key: &str| {
        value
            .get(key)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .map(str::to_string)
    };
    Some(PackageNote {
        kind: field("type"),
        name: field("name"),
        version: field("version"),
        architecture: field("architecture"),
        os_cpe: field("osCpe"),
    })
}

fn dyn_entries(bytes: &[u8], ctx: Ctx) -> Option<Vec<Dyn>> {
    use goblin::elf::dynamic::dyn32::Dyn as Dyn32;
    use goblin::elf::dynamic::dyn64::Dyn as Dyn64;
    use scroll::Pread;
    let mut entries = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let entry: Dyn = if ctx.container == Container::Big {
            bytes.gread_with::<Dyn64>(&mut offset, ctx.le).ok()?.into()
        } else {
            bytes.gread_with::<Dyn32>(&mut offset, ctx.le).ok()?.into()
        };
        if entry.d_tag == DT_NULL {
            break;
        }
        entries.push(entry);
    }
    Some(entries)
}

/// Maps a virtual address to its file offset through the PT_LOAD segments.
fn file_offset(phdrs: &[ProgramHeader], addr: u64) -> Option<u64> {
    phdrs
        .iter()
        .filter(|p| p.p_type == PT_LOAD)
        .find(|p| addr >= p.p_vaddr && addr - p.p_vaddr < p.p_filesz)
        .and_then(|p| (addr - p.p_vaddr).checked_add(p.p_offset))
}

fn c_string(bytes: &[u8], at: usize) -> Option<String> {
    let tail = bytes.get(at..)?;
    let end = tail.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&tail[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(owner: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let pad = |n: usize| vec![0u8; (4 - n % 4) % 4];
        let mut out = Vec::new();
        out.extend_from_slice(&(owner.len() as u32).to_le_bytes());
        out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(owner);
        out.extend(pad(owner.len()));
        out.extend_from_slice(desc);
        out.extend(pad(desc.len()));
        out
    }

    #[test]
    fn package_notes_are_found_among_others_and_bad_ones_yield_nothing() {
        let json = br#"{"type":"deb","name":"hpcx","version":"2.21","osCpe":"cpe:/o:debian:debian_linux:12"}"#;
        let mut json_nul = json.to_vec();
        json_nul.push(0);
        let mut segment = note(b"GNU\0", 3, &[1, 2, 3, 4]);
        segment.extend(note(b"FDO\0", PACKAGE_NOTE_TYPE, &json_nul));
        let found: Vec<_> = notes(&segment, 4, scroll::LE).collect();
        assert_eq!(found.len(), 2);
        let (owner, kind, desc) = found[1];
        assert_eq!((owner, kind), (PACKAGE_NOTE_OWNER, PACKAGE_NOTE_TYPE));
        let parsed = parse_package_note(desc).unwrap();
        assert_eq!(parsed.name.as_deref(), Some("hpcx"));
        assert_eq!(parsed.version.as_deref(), Some("2.21"));
        assert_eq!(parsed.kind.as_deref(), Some("deb"));
        assert_eq!(
            parsed.os_cpe.as_deref(),
            Some("cpe:/o:debian:debian_linux:12")
        );
        // A size that points past the segment ends the walk; no panic.
        let mut hostile = note(b"FDO\0", PACKAGE_NOTE_TYPE, json);
        hostile[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(notes(&hostile, 4, scroll::LE).count(), 0);
        assert_eq!(notes(&hostile[..7], 4, scroll::LE).count(), 0);
        assert_eq!(parse_package_note(b"not json\0"), None);
    }

    #[test]
    fn offsets_near_the_top_of_u64_are_refused_not_wrapped() {
        let load = ProgramHeader {
            p_type: PT_LOAD,
            p_vaddr: 0x1000,
            p_filesz: 0x1000,
            p_offset: u64::MAX - 4,
            ..ProgramHeader::default()
        };
        assert_eq!(file_offset(std::slice::from_ref(&load), 0x1800), None);
        assert_eq!(file_offset(&[load], 0x1002), Some(u64::MAX - 2));
    }
}
