//! What the dynamic loader reads from an ELF file: its DT_NEEDED entries,
//! DT_RPATH, DT_RUNPATH, DT_SONAME and PT_INTERP, plus class and machine to
//! tell incompatible libraries apart.
//!
//! Only the headers, the dynamic segment and the dynamic string table are
//! read, through [`ReadAt`], so a multi-GB library costs a few reads and no
//! more memory than its string table. goblin parses the headers.

use goblin::container::{Container, Ctx};
use goblin::elf::dynamic::{
    Dyn, DT_NEEDED, DT_NULL, DT_RPATH, DT_RUNPATH, DT_SONAME, DT_STRSZ, DT_STRTAB,
};
use goblin::elf::program_header::{ProgramHeader, PT_DYNAMIC, PT_INTERP, PT_LOAD};
use goblin::elf::Elf;

/// Caps on what a (possibly hostile) header can make us read.
const MAX_PROGRAM_HEADERS: usize = 4096;
const MAX_DYNAMIC: u64 = 1 << 20;
const MAX_STRTAB: u64 = 256 << 20;

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
