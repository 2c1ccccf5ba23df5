//! Streams a layer blob as tar entries: decompressing, hashing the
//! uncompressed bytes (the diff-id) and recognising OCI whiteouts, in one pass
//! and without holding any entry's content in memory.

use std::io::{self, Read};

use tar::EntryType;

use std::sync::{Arc, Mutex};

use super::compression::{decompress, decompress_indexed};
use super::entry::{EntryKind, EntryMeta, ImagePath};
use super::guard::HeaderGuard;
use super::ztoc::AccessIndex;
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
/// kept on the way ([`super::ztoc`]) and returned.
pub fn read_layer_with<'r>(
    raw: impl Read + Send + 'r,
    access: bool,
    mut visit: impl FnMut(u32, LayerItem<'_>) -> Result<()>,
) -> Result<(Digest, Option<AccessIndex>)> {
    let slot = Arc::new(Mutex::new(None));
    let stream = if access {
        decompress_indexed(raw, slot.clone())?
    } else {
        decompress(raw)?
    };
    let hashing = BackgroundHashingReader::new(stream);
    let mut archive = tar::Archive::new(HeaderGuard::new(hashing));
    {
        let entries = archive
            .entries()
            .map_err(|e| Error::from(e).context("reading the layer as tar"))?;
        for (ordinal, entry) in entries.enumerate() {
            let mut entry =
                entry.map_err(|e| Error::from(e).context("reading the layer as tar"))?;
            let ordinal = u32::try_from(ordinal)
                .map_err(|_| Error::new("a layer has more than 2^32 entries"))?;
            let raw_path = entry.path_bytes().into_owned();
            let path = ImagePath::parse(&raw_path)
                .map_err(|e| e.hint("the layer is malformed or hostile; it was not used"))?;
            let Some(kind) = entry_kind(entry.header().entry_type(), &raw_path)? else {
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
                visit(ordinal, item)?;
                continue;
            }
            let meta = entry_meta(&mut entry, kind)?;
            let offset = entry.raw_file_position();
            visit(
                ordinal,
                LayerItem::Entry(LayerEntry {
                    path,
                    meta,
                    offset,
                    content: &mut entry,
                }),
            )?;
        }
    }
    // Drain what follows the end-of-archive blocks: it counts for the diff-id.
    let mut hashing = archive.into_inner().into_inner();
    io::copy(&mut hashing, &mut io::sink())?;
    let digest = hashing.finish()?.0;
    let access = slot.lock().ok().and_then(|mut s| s.take());
    Ok((digest, access))
}

fn entry_kind(entry_type: EntryType, raw_path: &[u8]) -> Result<Option<EntryKind>> {
    Ok(Some(match entry_type {
        EntryType::Regular | EntryType::Continuous => EntryKind::File,
        EntryType::Directory => EntryKind::Dir,
        EntryType::Symlink => EntryKind::Symlink,
        EntryType::Link => EntryKind::HardLink,
        EntryType::Char => EntryKind::CharDevice,
        EntryType::Block => EntryKind::BlockDevice,
        EntryType::Fifo => EntryKind::Fifo,
        EntryType::XGlobalHeader => return Ok(None),
        other => {
            return Err(Error::new(format!(
                "unsupported tar entry type {:?} for {:?}",
                other.as_byte() as char,
                String::from_utf8_lossy(raw_path)
            )))
        }
    }))
}

fn entry_meta<R: Read>(entry: &mut tar::Entry<'_, R>, kind: EntryKind) -> Result<EntryMeta> {
    let bad = |what: &str| Error::new(format!("malformed tar header: unreadable {what}"));
    let header = entry.header();
    // An all-blank numeric field reads as 0, as Go's archive/tar reads it.
    let blank = |range: std::ops::Range<usize>| {
        header.as_bytes()[range]
            .iter()
            .all(|&b| b == 0 || b == b' ')
    };
    let number = |range: std::ops::Range<usize>, parsed: io::Result<u64>, what: &str| {
        if blank(range) {
            Ok(0)
        } else {
            parsed.map_err(|_| bad(what))
        }
    };
    let mut meta = EntryMeta {
        kind,
        mode: number(100..108, header.mode().map(u64::from), "mode")? as u32 & 0o7777,
        uid: number(108..116, header.uid(), "uid")?,
        gid: number(116..124, header.gid(), "gid")?,
        uname: header
            .username_bytes()
            .filter(|u| !u.is_empty())
            .map(|u| String::from_utf8_lossy(u).into_owned()),
        gname: header
            .groupname_bytes()
            .filter(|g| !g.is_empty())
            .map(|g| String::from_utf8_lossy(g).into_owned()),
        mtime: number(136..148, header.mtime(), "mtime")?,
        size: 0,
        link_target: None,
        xattrs: Vec::new(),
        device: (0, 0),
    };
    if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
        meta.device = (
            header.device_major().ok().flatten().unwrap_or(0),
            header.device_minor().ok().flatten().unwrap_or(0),
        );
    }
    if let Some(extensions) = entry.pax_extensions().map_err(Error::from)? {
        for extension in extensions {
            let extension = extension.map_err(Error::from)?;
            let Ok(key) = extension.key() else { continue };
            let value = extension.value_bytes();
            let number = || {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
            };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                meta.xattrs.push((name.to_string(), value.to_vec()));
            } else {
                match key {
                    "uid" => meta.uid = number().ok_or_else(|| bad("PAX uid"))?,
                    "gid" => meta.gid = number().ok_or_else(|| bad("PAX gid"))?,
                    "uname" => meta.uname = Some(String::from_utf8_lossy(value).into_owned()),
                    "gname" => meta.gname = Some(String::from_utf8_lossy(value).into_owned()),
                    "mtime" => {
                        // Sub-second precision is dropped: layers we write keep seconds.
                        let text = std::str::from_utf8(value).unwrap_or("0");
                        let whole = text.split('.').next().unwrap_or("0");
                        meta.mtime = whole.parse::<i64>().unwrap_or(0).max(0) as u64;
                    }
                    _ => {}
                }
            }
        }
    }
    meta.xattrs.sort();
    meta.xattrs.dedup_by(|a, b| a.0 == b.0);
    if kind == EntryKind::File {
        meta.size = entry.size();
    }
    if matches!(kind, EntryKind::Symlink | EntryKind::HardLink) {
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| bad("link target"))?
            .into_owned();
        meta.link_target = Some(target);
    }
    Ok(meta)
}
