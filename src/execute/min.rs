//! min's layers written again: each read and written without the paths its
//! [`MinRewrite`] removes (and with dpkg's status replaced), in the order
//! and with the metadata it had; for eStargz, with the files the server
//! reads first up front, then the landmark. They go through the store like
//! new layers, keyed by what determines their bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, Write};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::layer::{
    estargz, EntryKind, EntryMeta, ImagePath, LayerItem, LayerWriter, WrittenLayer,
};
use crate::plan::MinRewrite;

use super::{BuiltLayer, Execution, LAYER_FORMAT};

/// The entries of a min layer written ahead of the rest (eStargz's
/// prefetch): their metadata, and the files' content in a scratch file.
#[derive(Default)]
struct Ahead {
    entries: BTreeMap<ImagePath, (EntryMeta, u64)>,
    content: Option<std::fs::File>,
}

impl Execution<'_> {
    /// Writes (or finds in the store) each min layer written again: its
    /// index and compressed size, for `catalog`.
    pub(crate) fn rewritten_sizes(&self) -> Result<Vec<(usize, u64)>> {
        self.plan
            .min_rewrites
            .iter()
            .map(|r| Ok((r.layer, self.rewritten_min_layer(r)?.written.size)))
            .collect()
    }

    /// min's layer as `rewrite` says: from the store when it was written
    /// before, else written now (and kept there).
    pub(super) fn rewritten_min_layer(&self, rewrite: &MinRewrite) -> Result<BuiltLayer> {
        let key = self.rewritten_key(rewrite)?;
        if let Some(store) = self.store {
            let path = self.scratch.join(format!("min-{}", rewrite.layer));
            if let Some(written) = store.take_layer(&key, &path) {
                return Ok(BuiltLayer {
                    path,
                    written,
                    staged: None,
                });
            }
        }
        let (staged, written) = self.write_rewritten(rewrite).map_err(|e| {
            e.context(format!(
                "writing {} layer {} again",
                self.min.name(),
                rewrite.layer + 1
            ))
        })?;
        if let Some(store) = self.store {
            if let Err(err) = store.put_layer(&key, &written, staged.path()) {
                tracing::warn!("store: cannot keep min layer {}: {err}", rewrite.layer + 1);
            }
        }
        Ok(BuiltLayer {
            path: staged.path().to_path_buf(),
            written,
            staged: Some(staged),
        })
    }

    /// Digests what fixes the layer's bytes: this program, the format and
    /// compression, the source layer's diff-id, what goes, what changes and
    /// what comes first.
    fn rewritten_key(&self, rewrite: &MinRewrite) -> Result<Digest> {
        let source = self
            .min
            .image()
            .layers
            .get(rewrite.layer)
            .ok_or_else(|| Error::new("internal error: no such min layer"))?;
        let mut hasher = Sha256::new();
        hasher.update(b"triton-compose slimmed min layer\n");
        hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
        hasher.update(LAYER_FORMAT.as_bytes());
        hasher.update(format!("{:?}\n{}\n", self.compression, source.diff_id).as_bytes());
        for path in &rewrite.remove {
            hasher.update((path.as_bytes().len() as u64).to_le_bytes());
            hasher.update(path.as_bytes());
        }
        for (path, bytes) in &rewrite.replace {
            hasher.update(path.as_bytes());
            hasher.update(Digest::of(bytes).as_str().as_bytes());
        }
        if let Some(first) = &rewrite.prefetch {
            hasher.update(format!("prefetch {}\n", first.len()).as_bytes());
            for path in first {
                hasher.update((path.as_bytes().len() as u64).to_le_bytes());
                hasher.update(path.as_bytes());
            }
        }
        Ok(Digest::from_sha256(&hasher.finalize()))
    }

    fn write_rewritten(
        &self,
        rewrite: &MinRewrite,
    ) -> Result<(tempfile::NamedTempFile, WrittenLayer)> {
        let ahead = match &rewrite.prefetch {
            Some(first) if !first.is_empty() => self.read_ahead(rewrite, first)?,
            _ => Ahead::default(),
        };
        let staged = tempfile::Builder::new()
            .prefix("min-")
            .tempfile_in(self.scratch)
            .map_err(|e| Error::new("cannot stage a layer").with_source(e))?;
        let mut writer = LayerWriter::new(staged.reopen()?, self.compression)?;
        if rewrite.prefetch.is_some() {
            write_ahead(&mut writer, ahead.entries.iter(), ahead.content.as_ref())?;
            let files = ahead
                .entries
                .values()
                .any(|(m, _)| m.kind == EntryKind::File);
            writer.landmark(files)?;
        }
        let estargz = rewrite.prefetch.is_some();
        let blob = crate::scratch::Interruptible(self.min.open_layer(rewrite.layer)?);
        let read = crate::layer::read_layer(blob, |_, item| {
            crate::scratch::check()?;
            match item {
                LayerItem::Entry(entry)
                    if rewrite.remove.contains(&entry.path)
                        || ahead.entries.contains_key(&entry.path)
                        || (estargz && estargz::is_reserved(&entry.path)) =>
                {
                    Ok(())
                }
                LayerItem::Entry(entry) => match rewrite.replace.get(&entry.path) {
                    Some(bytes) if entry.meta.kind == EntryKind::File => {
                        let meta = EntryMeta {
                            size: bytes.len() as u64,
                            ..entry.meta
                        };
                        writer.append(&entry.path, &meta, Some(&mut &bytes[..] as &mut dyn Read))
                    }
                    _ => {
                        let content = (entry.meta.kind == EntryKind::File)
                            .then_some(entry.content as &mut dyn Read);
                        writer.append(&entry.path, &entry.meta, content)
                    }
                },
                LayerItem::Whiteout(path) => writer.whiteout(&path),
                LayerItem::Opaque(dir) => writer.opaque(&dir),
            }
        })?;
        self.check_diff_id(rewrite.layer, &read)?;
        Ok((staged, writer.finish()?))
    }

    /// Reads min's layer once for the entries to write ahead: the files of
    /// `first` (not hard links: a link stays where its target is) and the
    /// directories above them, as the layer has them (the last of an entry
    /// given twice), their content to a scratch file.
    fn read_ahead(&self, rewrite: &MinRewrite, first: &[ImagePath]) -> Result<Ahead> {
        let wanted: BTreeSet<&ImagePath> = first.iter().collect();
        let dirs: BTreeSet<ImagePath> = first.iter().flat_map(|p| p.ancestors()).collect();
        let mut file = tempfile::tempfile_in(self.scratch)
            .ctx(|| "creating a scratch file for eStargz's prefetch".into())?;
        let mut entries = BTreeMap::new();
        let mut written = 0u64;
        let blob = crate::scratch::Interruptible(self.min.open_layer(rewrite.layer)?);
        let read = crate::layer::read_layer(blob, |_, item| {
            crate::scratch::check()?;
            let LayerItem::Entry(entry) = item else {
                return Ok(());
            };
            let is_file = entry.meta.kind == EntryKind::File;
            if is_file && wanted.contains(&entry.path) && !rewrite.remove.contains(&entry.path) {
                let n = std::io::copy(entry.content, &mut file)?;
                entries.insert(entry.path, (entry.meta, written));
                written += n;
            } else if entry.meta.kind == EntryKind::Dir && dirs.contains(&entry.path) {
                entries.insert(entry.path, (entry.meta, 0));
            } else {
                // A path given again as something else is not moved.
                entries.remove(&entry.path);
            }
            Ok(())
        })?;
        self.check_diff_id(rewrite.layer, &read)?;
        file.flush()?;
        Ok(Ahead {
            entries,
            content: Some(file),
        })
    }

    fn check_diff_id(&self, layer: usize, read: &Digest) -> Result<()> {
        let expected = &self.min.image().layers[layer].diff_id;
        if read != expected {
            return Err(Error::new(format!(
                "{} layer {} has diff-id {read}, not the {expected} its config says",
                self.min.name(),
                layer + 1
            ))
            .hint("the image is damaged or was changed while being read; it was not used"));
        }
        Ok(())
    }
}

/// Writes the entries read ahead, in path order (parents first).
fn write_ahead<'a>(
    writer: &mut LayerWriter,
    entries: impl Iterator<Item = (&'a ImagePath, &'a (EntryMeta, u64))>,
    content: Option<&std::fs::File>,
) -> Result<()> {
    for (path, (meta, offset)) in entries {
        if meta.kind != EntryKind::File {
            writer.append(path, meta, None)?;
            continue;
        }
        let mut file = content
            .ok_or_else(|| Error::new("internal error: no content read ahead"))?
            .try_clone()?;
        file.seek(std::io::SeekFrom::Start(*offset))?;
        let mut part = file.take(meta.size);
        writer.append(path, meta, Some(&mut part as &mut dyn Read))?;
    }
    Ok(())
}
