//! min's layers that `--slim` cuts: each read once and written again
//! without the paths its [`MinFilter`] removes (and with dpkg's status
//! replaced), in the order and with the metadata it had. They go through
//! the store like new layers, keyed by what determines their bytes.

use std::io::Read;

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layer::{EntryKind, EntryMeta, LayerItem, LayerWriter, WrittenLayer};
use crate::plan::MinFilter;

use super::{BuiltLayer, Execution, LAYER_FORMAT};

impl Execution<'_> {
    /// Writes (or finds in the store) each min layer `--slim` cuts: its
    /// index and compressed size, for `catalog`.
    pub(crate) fn slimmed_sizes(&self) -> Result<Vec<(usize, u64)>> {
        self.plan
            .min_filters
            .iter()
            .map(|f| Ok((f.layer, self.slimmed_min_layer(f)?.written.size)))
            .collect()
    }

    /// min's layer without what `filter` removes: from the store when it
    /// was written before, else written now (and kept there).
    pub(super) fn slimmed_min_layer(&self, filter: &MinFilter) -> Result<BuiltLayer> {
        let key = self.slimmed_key(filter)?;
        if let Some(store) = self.store {
            let path = self.scratch.join(format!("slimmed-{}", filter.layer));
            if let Some(written) = store.take_layer(&key, &path) {
                return Ok(BuiltLayer {
                    path,
                    written,
                    staged: None,
                });
            }
        }
        let (staged, written) = self.write_slimmed(filter).map_err(|e| {
            e.context(format!(
                "writing {} layer {} without what --slim removes",
                self.min.name(),
                filter.layer + 1
            ))
        })?;
        if let Some(store) = self.store {
            if let Err(err) = store.put_layer(&key, &written, staged.path()) {
                tracing::warn!(
                    "store: cannot keep slimmed min layer {}: {err}",
                    filter.layer + 1
                );
            }
        }
        Ok(BuiltLayer {
            path: staged.path().to_path_buf(),
            written,
            staged: Some(staged),
        })
    }

    /// Digests what fixes the layer's bytes: this program, the format and
    /// compression, the source layer's diff-id, what goes and what changes.
    fn slimmed_key(&self, filter: &MinFilter) -> Result<Digest> {
        let source = self
            .min
            .image()
            .layers
            .get(filter.layer)
            .ok_or_else(|| Error::new("internal error: no such min layer"))?;
        let mut hasher = Sha256::new();
        hasher.update(b"triton-compose slimmed min layer\n");
        hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
        hasher.update(LAYER_FORMAT.as_bytes());
        hasher.update(format!("{:?}\n{}\n", self.compression, source.diff_id).as_bytes());
        for path in &filter.remove {
            hasher.update((path.as_bytes().len() as u64).to_le_bytes());
            hasher.update(path.as_bytes());
        }
        for (path, bytes) in &filter.replace {
            hasher.update(path.as_bytes());
            hasher.update(Digest::of(bytes).as_str().as_bytes());
        }
        Ok(Digest::from_sha256(&hasher.finalize()))
    }

    fn write_slimmed(&self, filter: &MinFilter) -> Result<(tempfile::NamedTempFile, WrittenLayer)> {
        let expected = self.min.image().layers[filter.layer].diff_id.clone();
        let staged = tempfile::Builder::new()
            .prefix("slimmed-")
            .tempfile_in(self.scratch)
            .map_err(|e| Error::new("cannot stage a layer").with_source(e))?;
        let mut writer = LayerWriter::new(staged.reopen()?, self.compression)?;
        let blob = crate::scratch::Interruptible(self.min.open_layer(filter.layer)?);
        let read = crate::layer::read_layer(blob, |_, item| {
            crate::scratch::check()?;
            match item {
                LayerItem::Entry(entry) if filter.remove.contains(&entry.path) => Ok(()),
                LayerItem::Entry(entry) => match filter.replace.get(&entry.path) {
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
        if read != expected {
            return Err(Error::new(format!(
                "{} layer {} has diff-id {read}, not the {expected} its config says",
                self.min.name(),
                filter.layer + 1
            ))
            .hint("the image is damaged or was changed while being read; it was not used"));
        }
        Ok((staged, writer.finish()?))
    }
}
