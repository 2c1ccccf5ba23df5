//! eStargz: a gzip layer that a lazy-pulling snapshotter (containerd's
//! stargz snapshotter) can mount before it has fetched it, and that every
//! other runtime pulls as the plain gzip layer it also is. The format is
//! stargz-snapshotter's `docs/estargz.md`, as its Go package `estargz`
//! writes and verifies it:
//!
//! - every regular file's content starts a gzip member of its own, and a
//!   file larger than [`CHUNK`] is cut into chunks, each its own member;
//!   tar headers, padding and entries without content ride in the member
//!   before (or any member: readers start only at chunks);
//! - the last tar entry is the table of contents, `stargz.index.json`
//!   ([`TOC_NAME`]): one JSON entry per tar entry and chunk, with the
//!   compressed offset where each chunk's member starts and the SHA-256 of
//!   each chunk and file; it and the tar's end are one member on their own;
//! - a 51-byte footer, an empty gzip member whose Extra field says where
//!   the TOC's member starts (`%016xSTARGZ`, subfield `SG`);
//! - the layer's descriptor carries the TOC JSON's digest
//!   ([`TOC_DIGEST_ANNOTATION`]), which the snapshotter checks the TOC
//!   against; the config keeps the diff-id of the whole uncompressed tar.
//!
//! What a layer's first reads need (the prefetch) comes first in it,
//! followed by the file [`PREFETCH_LANDMARK`]: the snapshotter fetches the
//! layer up to the landmark's member at once. A layer with nothing to
//! prefetch starts with [`NO_PREFETCH_LANDMARK`]. Which files those are is
//! the plan's business; this module only writes what it is given, in the
//! order given.
//!
//! Members are compressed by the same parallel libdeflate writer as plain
//! gzip layers ([`super::gzip`]), so output depends only on the entries and
//! the level.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use serde::Serialize;

use crate::digest::Digest;
use crate::error::{Error, Result};

use super::entry::{EntryKind, EntryMeta, ImagePath};

/// The TOC's tar entry.
pub(crate) const TOC_NAME: &str = "stargz.index.json";
/// Files before this entry are prefetched.
pub(crate) const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
/// Nothing of this layer is prefetched.
pub(crate) const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";
/// The one byte a landmark holds.
pub(crate) const LANDMARK_CONTENT: u8 = 0x0f;
/// The layer descriptor's annotation with the TOC JSON's digest.
pub(crate) const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// The layer descriptor's annotation with the uncompressed size, which
/// containers/storage's lazy pulling reads.
pub(crate) const UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";
/// File content per chunk (the Go writer's default).
pub(crate) const CHUNK: u64 = 4 << 20;
/// The footer's length.
pub(crate) const FOOTER_SIZE: usize = 51;

/// True for the names eStargz reserves at a layer's root: a layer read
/// from an eStargz image holds them, and a layer written again must not
/// keep them (it gets its own).
pub(crate) fn is_reserved(path: &ImagePath) -> bool {
    [TOC_NAME, PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK]
        .iter()
        .any(|name| path.as_bytes() == name.as_bytes())
}

/// What an eStargz layer adds to its descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EstargzFacts {
    /// The digest of the TOC JSON.
    pub toc_digest: Digest,
    /// The uncompressed tar's length.
    pub uncompressed_size: u64,
}

impl EstargzFacts {
    /// The layer descriptor's annotations.
    pub(crate) fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                TOC_DIGEST_ANNOTATION.to_string(),
                self.toc_digest.to_string(),
            ),
            (
                UNCOMPRESSED_SIZE_ANNOTATION.to_string(),
                self.uncompressed_size.to_string(),
            ),
        ])
    }
}

/// One TOC entry, as the Go package's `TOCEntry` serializes it.
#[derive(Serialize)]
struct Entry {
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "is_zero")]
    size: u64,
    #[serde(rename = "modtime", skip_serializing_if = "String::is_empty")]
    mod_time: String,
    #[serde(rename = "linkName", skip_serializing_if = "String::is_empty")]
    link_name: String,
    #[serde(skip_serializing_if = "is_zero")]
    mode: u64,
    #[serde(skip_serializing_if = "is_zero")]
    uid: u64,
    #[serde(skip_serializing_if = "is_zero")]
    gid: u64,
    #[serde(rename = "userName", skip_serializing_if = "String::is_empty")]
    user_name: String,
    #[serde(rename = "groupName", skip_serializing_if = "String::is_empty")]
    group_name: String,
    /// Where the chunk's member starts; set from `member` at the end.
    #[serde(skip_serializing_if = "is_zero")]
    offset: u64,
    #[serde(rename = "devMajor", skip_serializing_if = "is_zero")]
    dev_major: u64,
    #[serde(rename = "devMinor", skip_serializing_if = "is_zero")]
    dev_minor: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    xattrs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    digest: String,
    #[serde(rename = "chunkOffset", skip_serializing_if = "is_zero")]
    chunk_offset: u64,
    #[serde(rename = "chunkSize", skip_serializing_if = "is_zero")]
    chunk_size: u64,
    #[serde(rename = "chunkDigest", skip_serializing_if = "String::is_empty")]
    chunk_digest: String,
    /// The member holding the chunk, while the layer is being written.
    #[serde(skip)]
    member: Option<usize>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct Document<'a> {
    version: u32,
    entries: &'a [Entry],
}

/// The table of contents of a layer being written.
#[derive(Default)]
pub(crate) struct Toc {
    entries: Vec<Entry>,
    /// The user and group names given last for each id: like the Go
    /// writer, a name is written only when it changes.
    user_names: HashMap<u64, String>,
    group_names: HashMap<u64, String>,
    /// The entry of the file whose chunks are being written.
    file: Option<usize>,
}

impl Toc {
    /// Records an entry as its tar header names it (`name`, with a
    /// directory's trailing `/`). A file with content is followed by its
    /// chunks ([`Toc::chunk`]).
    pub(crate) fn entry(&mut self, name: &[u8], meta: &EntryMeta) -> Result<()> {
        let text = |bytes: &[u8]| {
            String::from_utf8(bytes.to_vec()).map_err(|_| {
                Error::new(format!(
                    "{:?} is not UTF-8, which an eStargz table of contents (JSON) cannot name",
                    String::from_utf8_lossy(name)
                ))
                .hint("write this layer with --compression gzip")
            })
        };
        let kind = match meta.kind {
            EntryKind::File => "reg",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::HardLink => "hardlink",
            EntryKind::CharDevice => "char",
            EntryKind::BlockDevice => "block",
            EntryKind::Fifo => "fifo",
        };
        let changed = |names: &mut HashMap<u64, String>, id: u64, name: &Option<String>| match name
        {
            Some(name) if names.get(&id) != Some(name) => {
                names.insert(id, name.clone());
                name.clone()
            }
            _ => String::new(),
        };
        let device = matches!(meta.kind, EntryKind::CharDevice | EntryKind::BlockDevice);
        let entry = Entry {
            name: text(name)?,
            kind,
            size: if meta.kind == EntryKind::File {
                meta.size
            } else {
                0
            },
            mod_time: mod_time(meta.mtime),
            link_name: match &meta.link_target {
                Some(target) => text(target)?,
                None => String::new(),
            },
            mode: u64::from(meta.mode),
            uid: meta.uid,
            gid: meta.gid,
            user_name: changed(&mut self.user_names, meta.uid, &meta.uname),
            group_name: changed(&mut self.group_names, meta.gid, &meta.gname),
            offset: 0,
            dev_major: if device { meta.device.0.into() } else { 0 },
            dev_minor: if device { meta.device.1.into() } else { 0 },
            xattrs: meta
                .xattrs
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        base64::engine::general_purpose::STANDARD.encode(v),
                    )
                })
                .collect(),
            digest: String::new(),
            chunk_offset: 0,
            chunk_size: 0,
            chunk_digest: String::new(),
            member: None,
        };
        self.file = (meta.kind == EntryKind::File && meta.size > 0).then_some(self.entries.len());
        self.entries.push(entry);
        Ok(())
    }

    /// Records a chunk of the file just recorded: `len` bytes from
    /// `offset` in the file, starting member `member`. The first chunk is
    /// the file's own entry; a file of more than one chunk says how long
    /// its chunks are.
    pub(crate) fn chunk(&mut self, member: usize, offset: u64, len: u64, digest: &Digest) {
        let Some(index) = self.file else { return };
        let size = self.entries[index].size;
        // As the Go writer: a whole chunk says its size, a shorter last one
        // runs to the file's end.
        let chunk_size = if len == CHUNK { len } else { 0 };
        if offset == 0 {
            let entry = &mut self.entries[index];
            entry.member = Some(member);
            entry.chunk_size = chunk_size;
            entry.chunk_digest = digest.to_string();
            if len == size {
                // One chunk: the file's digest is the chunk's.
                entry.digest = digest.to_string();
            }
            return;
        }
        let name = self.entries[index].name.clone();
        self.entries.push(Entry {
            name,
            kind: "chunk",
            size: 0,
            mod_time: String::new(),
            link_name: String::new(),
            mode: 0,
            uid: 0,
            gid: 0,
            user_name: String::new(),
            group_name: String::new(),
            offset: 0,
            dev_major: 0,
            dev_minor: 0,
            xattrs: BTreeMap::new(),
            digest: String::new(),
            chunk_offset: offset,
            chunk_size,
            chunk_digest: digest.to_string(),
            member: Some(member),
        });
    }

    /// The digest of the whole file just recorded, when it took several
    /// chunks.
    pub(crate) fn file_digest(&mut self, digest: &Digest) {
        if let Some(index) = self.file {
            self.entries[index].digest = digest.to_string();
        }
    }

    /// The TOC JSON, each chunk's offset found by `start` from its member.
    pub(crate) fn finish(mut self, start: impl Fn(usize) -> Option<u64>) -> Result<Vec<u8>> {
        for entry in &mut self.entries {
            if let Some(member) = entry.member {
                entry.offset = start(member).ok_or_else(|| {
                    Error::new("internal error: an eStargz chunk's member was not written")
                })?;
            }
        }
        serde_json::to_vec(&Document {
            version: 1,
            entries: &self.entries,
        })
        .map_err(|e| Error::new("cannot write the eStargz table of contents").with_source(e))
    }
}

/// RFC 3339 in UTC, to the second; empty for the epoch (as the Go writer
/// leaves a zero time out).
fn mod_time(mtime: u64) -> String {
    if mtime == 0 {
        return String::new();
    }
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The footer: an empty gzip member (a stored final block) whose Extra
/// field's `SG` subfield says where the TOC's member starts.
pub(crate) fn footer(toc_offset: u64) -> [u8; FOOTER_SIZE] {
    let subfield = format!("{toc_offset:016x}STARGZ");
    let mut out = Vec::with_capacity(FOOTER_SIZE);
    // ID1 ID2, deflate, FEXTRA; no time; no extra flags; OS unknown.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff]);
    out.extend_from_slice(&((subfield.len() + 4) as u16).to_le_bytes());
    out.extend_from_slice(b"SG");
    out.extend_from_slice(&(subfield.len() as u16).to_le_bytes());
    out.extend_from_slice(subfield.as_bytes());
    // A final stored block of no bytes, then CRC-32 and length (both 0).
    out.extend_from_slice(&[1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.try_into().expect("the footer is 51 bytes")
}

/// Where the TOC's member starts, from a blob's last [`FOOTER_SIZE`] bytes;
/// `None` when they are no eStargz footer.
#[cfg(test)]
pub(crate) fn toc_offset(footer: &[u8]) -> Option<u64> {
    let magic = footer.get(..12)?;
    if magic[..4] != [0x1f, 0x8b, 8, 4] || magic[10..12] != [26, 0] {
        return None;
    }
    let extra = footer.get(12..38)?;
    if &extra[..2] != b"SG" || extra[2..4] != [22, 0] || &extra[20..] != b"STARGZ" {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&extra[4..20]).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_footer_is_51_bytes_of_gzip_that_says_where_the_toc_is() {
        let footer = footer(0x1234_5678_9abc);
        assert_eq!(footer.len(), FOOTER_SIZE);
        assert_eq!(toc_offset(&footer), Some(0x1234_5678_9abc));
        // An empty member, which a gzip reader takes as nothing.
        let mut out = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::MultiGzDecoder::new(&footer[..]),
            &mut out,
        )
        .unwrap();
        assert!(out.is_empty());
        let mut broken = footer;
        broken[30] = b'x';
        assert_eq!(toc_offset(&broken), None);
    }

    #[test]
    fn chunks_say_their_size_except_the_last_and_names_only_when_they_change() {
        let mut toc = Toc::default();
        let meta = EntryMeta {
            kind: EntryKind::File,
            mode: 0o755,
            size: 2 * CHUNK + 5,
            uname: Some("root".into()),
            mtime: 1_700_000_000,
            ..EntryMeta::plain_dir(0, 0)
        };
        let d = Digest::of(b"x");
        toc.entry(b"big", &meta).unwrap();
        toc.chunk(1, 0, CHUNK, &d);
        toc.chunk(2, CHUNK, CHUNK, &d);
        toc.chunk(3, 2 * CHUNK, 5, &d);
        toc.file_digest(&Digest::of(b"whole"));
        toc.entry(
            b"small",
            &EntryMeta {
                size: 3,
                ..meta.clone()
            },
        )
        .unwrap();
        toc.chunk(4, 0, 3, &d);
        let json = toc.finish(|m| Some(100 * m as u64)).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let entries = value["entries"].as_array().unwrap();
        assert_eq!(value["version"], 1);
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0]["type"], "reg");
        assert_eq!(entries[0]["offset"], 100);
        assert_eq!(entries[0]["chunkSize"], CHUNK);
        assert_eq!(entries[0]["digest"], Digest::of(b"whole").to_string());
        assert_eq!(entries[0]["userName"], "root");
        assert_eq!(entries[0]["modtime"], "2023-11-14T22:13:20Z");
        assert_eq!(entries[1]["type"], "chunk");
        assert_eq!(entries[1]["chunkOffset"], CHUNK);
        assert_eq!(entries[1]["chunkSize"], CHUNK);
        assert_eq!(entries[2]["offset"], 300);
        assert!(
            entries[2].get("chunkSize").is_none(),
            "the last chunk runs to the end"
        );
        assert_eq!(entries[3]["digest"], d.to_string());
        assert!(
            entries[3].get("userName").is_none(),
            "root was named already"
        );
        assert!(entries[3].get("chunkSize").is_none());
    }

    #[test]
    fn names_json_cannot_hold_are_refused() {
        let mut toc = Toc::default();
        let err = toc
            .entry(b"bad\xff", &EntryMeta::plain_dir(0o755, 0))
            .unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }
}

/// A layer written as eStargz, read back as a lazy reader would: footer,
/// TOC member alone, then each chunk inflated from its own offset.
#[cfg(test)]
pub(crate) mod written {
    use std::io::{Read, Seek};

    use super::*;
    use crate::layer::{Compression, LayerWriter, WrittenLayer};

    /// The TOC of an eStargz blob, read from its footer and its member.
    pub(crate) fn toc_of(blob: &[u8]) -> (serde_json::Value, Vec<u8>) {
        let footer = &blob[blob.len() - FOOTER_SIZE..];
        let offset = toc_offset(footer).expect("an eStargz footer") as usize;
        // One member: a gzip reader that stops after it.
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob[offset..blob.len() - FOOTER_SIZE])
            .read_to_end(&mut tar)
            .unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let mut entries = archive.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some(TOC_NAME));
        let mut json = Vec::new();
        entry.read_to_end(&mut json).unwrap();
        (serde_json::from_slice(&json).unwrap(), json)
    }

    /// `len` bytes of a file from the member at `offset`, as the
    /// snapshotter reads a chunk.
    pub(crate) fn chunk_at(blob: &[u8], offset: u64, len: u64) -> Vec<u8> {
        let mut out = vec![0u8; len as usize];
        flate2::read::MultiGzDecoder::new(&blob[offset as usize..])
            .read_exact(&mut out)
            .unwrap();
        out
    }

    pub(crate) fn write(
        entries: &[(&str, EntryMeta, Vec<u8>)],
        prefetch: usize,
    ) -> (Vec<u8>, WrittenLayer) {
        let mut file = tempfile::tempfile().unwrap();
        let mut writer =
            LayerWriter::new(file.try_clone().unwrap(), Compression::Estargz { level: 4 }).unwrap();
        if prefetch == 0 {
            writer.landmark(false).unwrap();
        }
        for (i, (path, meta, content)) in entries.iter().enumerate() {
            let path = ImagePath::from_static(path);
            writer
                .append(&path, meta, Some(&mut &content[..] as &mut dyn Read))
                .unwrap();
            if i + 1 == prefetch {
                writer.landmark(true).unwrap();
            }
        }
        let written = writer.finish().unwrap();
        let mut blob = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut blob).unwrap();
        (blob, written)
    }

    fn file(size: usize, seed: u64) -> (EntryMeta, Vec<u8>) {
        let meta = EntryMeta {
            kind: EntryKind::File,
            mode: 0o644,
            size: size as u64,
            mtime: 1_700_000_000,
            ..EntryMeta::plain_dir(0, 0)
        };
        (meta, crate::layer::ztoc::tests::sample(size, seed))
    }

    /// Inflates every chunk the TOC names from its own offset and checks it
    /// against the file's content and its digest; returns the offsets.
    fn check_chunks(
        blob: &[u8],
        toc: &serde_json::Value,
        contents: &HashMap<&str, &[u8]>,
    ) -> Vec<u64> {
        let mut name = String::new();
        let mut offsets = Vec::new();
        for entry in toc["entries"].as_array().unwrap() {
            if entry["type"] != "chunk" {
                name = entry["name"].as_str().unwrap().to_string();
            }
            if entry["type"] != "reg" && entry["type"] != "chunk" {
                continue;
            }
            let content = contents[name.as_str()];
            let from = entry["chunkOffset"].as_u64().unwrap_or(0);
            let len = entry["chunkSize"]
                .as_u64()
                .unwrap_or(content.len() as u64 - from);
            let offset = entry["offset"].as_u64().unwrap();
            offsets.push(offset);
            let bytes = chunk_at(blob, offset, len);
            assert_eq!(
                bytes,
                &content[from as usize..(from + len) as usize],
                "{name}"
            );
            assert_eq!(entry["chunkDigest"], Digest::of(&bytes).to_string());
        }
        offsets
    }

    #[test]
    fn every_chunk_starts_a_member_the_toc_names_and_the_tar_is_whole() {
        let (small_meta, small) = file(1000, 1);
        let (big_meta, big) = file(2 * CHUNK as usize + 12_345, 2);
        let (exact_meta, exact) = file(CHUNK as usize, 3);
        let link = EntryMeta {
            kind: EntryKind::HardLink,
            link_target: Some(b"opt/big".to_vec()),
            ..EntryMeta::plain_dir(0, 0)
        };
        let entries = vec![
            ("opt", EntryMeta::plain_dir(0o755, 5), Vec::new()),
            ("opt/small", small_meta, small.clone()),
            ("opt/big", big_meta, big.clone()),
            ("opt/exact", exact_meta, exact.clone()),
            ("opt/link", link, Vec::new()),
        ];
        let (blob, written) = write(&entries, 2);
        let facts = written.estargz.clone().expect("eStargz facts");
        let (toc, json) = toc_of(&blob);
        assert_eq!(facts.toc_digest, Digest::of(&json));
        // The whole blob is one gzip stream of members: a tar holding the
        // entries, the landmark and the TOC, whose digest is the diff-id.
        let mut tar = Vec::new();
        flate2::read::MultiGzDecoder::new(&blob[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(Digest::of(&tar), written.diff_id);
        assert_eq!(tar.len() as u64, facts.uncompressed_size);
        let names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "opt/",
                "opt/small",
                PREFETCH_LANDMARK,
                "opt/big",
                "opt/exact",
                "opt/link",
                TOC_NAME
            ]
        );
        // Each chunk from its own offset, against its digest.
        let contents: HashMap<&str, &[u8]> = [
            ("opt/small", &small[..]),
            ("opt/big", &big[..]),
            ("opt/exact", &exact[..]),
            (PREFETCH_LANDMARK, &[LANDMARK_CONTENT][..]),
        ]
        .into();
        let offsets = check_chunks(&blob, &toc, &contents);
        assert_eq!(
            offsets.len(),
            1 + 3 + 1 + 1,
            "small, big's three, exact, landmark"
        );
        let mut unique = offsets.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), offsets.len(), "offsets are unique");
        let big_entry = &toc["entries"][3];
        assert_eq!(big_entry["name"], "opt/big");
        assert_eq!(big_entry["digest"], Digest::of(&big).to_string());
        assert_eq!(toc["entries"][7]["type"], "hardlink");
    }

    #[test]
    fn the_same_entries_make_the_same_bytes_and_a_layer_without_prefetch_says_so() {
        let (meta, content) = file(3 * CHUNK as usize, 9);
        let entries = vec![("data", meta, content)];
        let (one, _) = write(&entries, 0);
        let (two, _) = write(&entries, 0);
        assert_eq!(one, two);
        let (toc, _) = toc_of(&one);
        assert_eq!(toc["entries"][0]["name"], NO_PREFETCH_LANDMARK);
    }
}
