//! Streams a layer blob as tar entries: decompressing, hashing the
//! uncompressed bytes (the diff-id) and recognising OCI whiteouts, in one pass
//! and without holding any entry's content in memory.

use std::io::{self, Read};

use std::sync::{Arc, Mutex};

use super::compression::{decompress, decompress_indexed};
use super::entry::{EntryKind, EntryMeta, ImagePath};
use super::tarparse::{TarHeader, TarReader};
use super::ztoc::PointsFound;
use crate::digest::{BackgroundHashingReader, Digest};
use crate::error::{Error, Result};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// A file, directory, link or device in a layer. `content` yields a regular
/// file's bytes; it may be left unread.
pub struct LayerEntry<'a> {
    pub path: ImagePath,
    pub meta: EntryMeta,
    /// Where a file's content starts in the uncompressed layer.
    pub offset: u64,
    pub content: &'a mut dyn Read,
}

/// One item of a layer, in archive order.
pub enum LayerItem<'a> {
    Entry(LayerEntry<'a>),
    /// `path` and everything below it are deleted from the layers beneath.
    Whiteout(ImagePath),
    /// The directory's contents from the layers beneath are hidden.
    Opaque(ImagePath),
}

/// Reads every item of a layer, calling `visit` with its ordinal (its
/// position in the archive, stable across reads) and the item. Returns the
/// digest of the uncompressed tar, which callers compare with the diff-id.
pub fn read_layer<'r>(
    raw: impl Read + Send + 'r,
    visit: impl FnMut(u32, LayerItem<'_>) -> Result<()>,
) -> Result<Digest> {
    read_layer_with(raw, false, visit).map(|(digest, _)| digest)
}

/// Like [`read_layer`]; with `access`, a gzip layer's access points are
/// found on the way ([`super::ztoc`]) and returned.
pub(crate) fn read_layer_with<'r>(
    raw: impl Read + Send + 'r,
    access: bool,
    mut visit: impl FnMut(u32, LayerItem<'_>) -> Result<()>,
) -> Result<(Digest, Option<PointsFound>)> {
    let slot = Arc::new(Mutex::new(None));
    let stream = if access {
        decompress_indexed(raw, slot.clone())?
    } else {
        decompress(raw)?
    };
    // Inflating runs on a thread of its own, ahead of the tar parser and
    // whatever `visit` does with each entry; hashing on a third.
    let digest = crate::digest::with_read_ahead(stream, |stream| read_tar(stream, &mut visit))?;
    let access = slot.lock().ok().and_then(|mut s| s.take());
    Ok((digest, access))
}

/// The items of an uncompressed layer, to `visit`; returns its diff-id.
fn read_tar(
    stream: &mut (dyn Read + Send),
    visit: &mut impl FnMut(u32, LayerItem<'_>) -> Result<()>,
) -> Result<Digest> {
    let hashing = BackgroundHashingReader::new(stream);
    let mut tar = TarReader::new(hashing);
    let mut ordinal: u32 = 0;
    while let Some(header) = tar
        .next_header()
        .map_err(|e| e.context("reading the layer as tar"))?
    {
        let this = ordinal;
        ordinal = ordinal
            .checked_add(1)
            .ok_or_else(|| Error::new("a layer has more than 2^32 entries"))?;
        let raw_path = header.path.clone();
        let path = ImagePath::parse(&raw_path)
            .map_err(|e| e.hint("the layer is malformed or hostile; it was not used"))?;
        let Some(kind) = entry_kind(header.typeflag, &raw_path)? else {
            continue;
        };
        if path.is_root() {
            // The root directory's own entry: runtimes ignore it, so do we.
            continue;
        }
        let name = path.file_name();
        if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
            let parent = path.parent().unwrap_or_default();
            let item = if name == OPAQUE_MARKER {
                LayerItem::Opaque(parent)
            } else if target.starts_with(WHITEOUT_PREFIX) {
                // Other `.wh..wh.` names are AUFS bookkeeping, not deletions.
                continue;
            } else if target.is_empty() || target == b"." || target == b".." {
                return Err(Error::new(format!(
                    "layer contains a malformed whiteout {:?}",
                    String::from_utf8_lossy(&raw_path)
                ))
                .hint("the layer is malformed or hostile; it was not used"));
            } else {
                LayerItem::Whiteout(parent.join(target))
            };
            visit(this, item)?;
            continue;
        }
        let meta = entry_meta(&header, kind)?;
        let offset = tar.data_start();
        visit(
            this,
            LayerItem::Entry(LayerEntry {
                path,
                meta,
                offset,
                content: &mut tar,
            }),
        )?;
    }
    // Drain what follows the end-of-archive blocks: it counts for the diff-id.
    let mut hashing = tar.into_inner();
    io::copy(&mut hashing, &mut io::sink())?;
    Ok(hashing.finish()?.0)
}

fn entry_kind(typeflag: u8, raw_path: &[u8]) -> Result<Option<EntryKind>> {
    Ok(Some(match typeflag {
        // A V7 header (no type) naming a directory, as Go reads it.
        0 if raw_path.ends_with(b"/") => EntryKind::Dir,
        b'0' | 0 | b'7' => EntryKind::File,
        b'5' => EntryKind::Dir,
        b'2' => EntryKind::Symlink,
        b'1' => EntryKind::HardLink,
        b'3' => EntryKind::CharDevice,
        b'4' => EntryKind::BlockDevice,
        b'6' => EntryKind::Fifo,
        other => {
            return Err(Error::new(format!(
                "unsupported tar entry type {:?} for {:?}",
                other as char,
                String::from_utf8_lossy(raw_path)
            ))
            .hint("the layer is malformed or hostile; it was not used"))
        }
    }))
}

fn entry_meta(header: &TarHeader, kind: EntryKind) -> Result<EntryMeta> {
    let text =
        |bytes: &[u8]| (!bytes.is_empty()).then(|| String::from_utf8_lossy(bytes).into_owned());
    let mut meta = EntryMeta {
        kind,
        mode: (header.mode & 0o7777) as u32,
        uid: header.uid,
        gid: header.gid,
        uname: text(&header.uname),
        gname: text(&header.gname),
        mtime: header.mtime,
        size: 0,
        link_target: None,
        xattrs: Vec::new(),
        device: (0, 0),
    };
    if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
        let narrow = |n: u64| {
            u32::try_from(n)
                .map_err(|_| Error::new("malformed tar header: a device number overflows"))
        };
        meta.device = (narrow(header.devmajor)?, narrow(header.devminor)?);
    }
    for (key, value) in &header.pax {
        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
            meta.xattrs.push((name.to_string(), value.clone()));
        }
    }
    meta.xattrs.sort();
    meta.xattrs.dedup_by(|a, b| a.0 == b.0);
    if kind == EntryKind::File {
        meta.size = header.size;
    }
    if matches!(kind, EntryKind::Symlink | EntryKind::HardLink) {
        if header.link.is_empty() {
            return Err(Error::new("malformed tar header: a link has no target")
                .hint("the layer is malformed or hostile; it was not used"));
        }
        meta.link_target = Some(header.link.clone());
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::GzBuilder;

    use super::*;

    /// A tar of one file, as `tar` writes it.
    fn tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        let data = vec![7u8; 300_000];
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "opt/data.bin", &data[..])
            .unwrap();
        builder.into_inner().unwrap()
    }

    fn member(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// Reads a blob through both gzip readers (plain, and the one that
    /// keeps access points): the diff-id, or the error.
    fn read_both(blob: &[u8]) -> [Result<Digest>; 2] {
        [false, true]
            .map(|access| read_layer_with(blob, access, |_, _| Ok(())).map(|(digest, _)| digest))
    }

    #[test]
    fn every_gzip_member_is_read_whatever_its_header_says() {
        let tar = tar();
        let expected = Digest::of(&tar);
        let (a, b) = tar.split_at(100_000);
        // Empty members first, between and last; a member with FEXTRA,
        // FNAME and FCOMMENT.
        let mut blob = member(b"");
        blob.extend(member(a));
        blob.extend(member(b""));
        let mut fancy = GzBuilder::new()
            .extra(b"xx\x02\x00ab".to_vec())
            .filename("layer.tar")
            .comment("a comment")
            .write(Vec::new(), flate2::Compression::default());
        fancy.write_all(b).unwrap();
        blob.extend(fancy.finish().unwrap());
        blob.extend(member(b""));
        for read in read_both(&blob) {
            assert_eq!(read.unwrap(), expected);
        }
    }

    #[test]
    fn a_damaged_member_or_garbage_after_the_last_is_an_error() {
        let tar = tar();
        let (a, b) = tar.split_at(100_000);
        let whole = [member(a), member(b)].concat();
        let first = member(a).len();
        // The first member's CRC-32, then its length, then trailing bytes.
        let mut crc = whole.clone();
        crc[first - 8] ^= 1;
        let mut size = whole.clone();
        size[first - 4] ^= 1;
        let mut garbage = whole.clone();
        garbage.extend_from_slice(b"not a gzip member");
        for (case, blob) in [("crc", crc), ("size", size), ("garbage", garbage)] {
            for read in read_both(&blob) {
                assert!(read.is_err(), "{case}: read without error");
            }
        }
    }
}
