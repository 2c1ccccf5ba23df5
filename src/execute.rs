//! Carries out a [`Plan`]: writes the new layers (in parallel from a work
//! queue, one file each, hashing as they are written; content the scans did
//! not keep is re-read meanwhile), then hands min's unchanged layer blobs and
//! the new layers to the sink and returns the final config.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{canonical_json, BlobDescriptor, ImageSink, ImageSource, OutputImage};
use crate::layer::{Compression, LayerWriter, WrittenLayer};
use crate::plan::{Content, LayerPlan, Origin, Plan};
use crate::scan::{self, ScannedImage};
use crate::spool::Spool;
use crate::store::Store;
use crate::tree::InodeRef;

mod kept;
mod measure;
mod min;

pub(crate) use kept::Kept;

/// Content read ahead of writing: one spool per image the plan copies from.
pub(crate) type Spools = HashMap<Origin, Spool>;

pub(crate) struct Execution<'a> {
    pub plan: &'a Plan,
    pub min: &'a dyn ImageSource,
    pub full: &'a dyn ImageSource,
    /// The gpu-min image, when the plan copies from it.
    pub gpu_min: Option<&'a dyn ImageSource>,
    pub compression: Compression,
    /// Where layer files are staged before the sink takes them.
    pub scratch: &'a Path,
    /// Layers built before are taken from here, new ones kept here.
    pub store: Option<&'a Store>,
    /// The scans of the images copied from, for their access points.
    pub scans: HashMap<Origin, &'a ScannedImage>,
    /// Asked between the entries of a layer: true when this execution is
    /// to stop and give way (a prebuild in `serve` when a pull waits). It
    /// then fails; the layers finished before stay in the store.
    pub give_way: Option<GiveWay<'a>>,
    /// Runtime-dependency content kept from one execution to the next
    /// (serve's generation): read from, and filled with what is re-read.
    pub kept: Option<&'a Kept>,
}

/// See [`Execution::give_way`].
pub(crate) type GiveWay<'a> = crate::scratch::Stop<'a>;

/// Bumped whenever the layer writer's output changes for the same plan.
const LAYER_FORMAT: &str = "1";

/// What one new layer is, for the summary a compose prints.
#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    /// What the layer is for, as the plan says.
    #[serde(skip)]
    pub role: crate::plan::LayerRole,
    #[serde(skip)]
    pub part: Option<crate::plan::Part>,
    /// The same, for people ("backend python").
    pub purpose: String,
    pub entries: usize,
    /// Compressed size.
    pub size: u64,
    pub digest: String,
    pub diff_id: String,
    /// Taken from the store rather than written now.
    pub from_store: bool,
    /// The ELF files written into it and their digests (for the SBOM).
    #[serde(skip)]
    pub elf_files: Vec<(crate::layer::ImagePath, crate::digest::FileDigests)>,
}

/// Where a new layer goes once it is ready: its index in the plan, and it.
type Built<'a> = &'a (dyn Fn(usize, Result<BuiltLayer>) + Sync);
/// Where a layer goes once it is written to a staged file.
type Staged<'a> = &'a (dyn Fn(usize, Result<(tempfile::NamedTempFile, WrittenLayer)>) + Sync);

/// A min layer `--slim` cut: its index, and what it is now.
type Slimmed = (usize, LayerReport);
/// min's layers as put into the sink, and those `--slim` cut.
type MinLayers = (Vec<BlobDescriptor>, Vec<Slimmed>);

/// A new layer, ready for the sink.
struct BuiltLayer {
    /// A file the sink may take over (rename) or copy.
    path: PathBuf,
    written: WrittenLayer,
    /// Keeps a staged file alive until the sink has it; `None` for a layer
    /// taken from the store.
    staged: Option<tempfile::NamedTempFile>,
}

impl BuiltLayer {
    /// Hands the layer to the sink.
    fn put(&self, sink: &mut dyn ImageSink, compression: Compression) -> Result<BlobDescriptor> {
        let desc = BlobDescriptor {
            media_type: crate::image::media_type::of_layer(compression).to_string(),
            digest: self.written.digest.clone(),
            size: self.written.size,
            annotations: (self.written.estargz.as_ref())
                .map(|e| e.annotations())
                .unwrap_or_default(),
        };
        sink.put_blob_file(&desc, &self.path)?;
        Ok(desc)
    }

    /// What the layer is, for the summary.
    fn report(
        &self,
        role: crate::plan::LayerRole,
        part: Option<crate::plan::Part>,
        entries: usize,
    ) -> LayerReport {
        LayerReport {
            purpose: crate::plan::purpose(&role, part),
            role,
            part,
            entries,
            size: self.written.size,
            digest: self.written.digest.to_string(),
            diff_id: self.written.diff_id.to_string(),
            from_store: self.staged.is_none(),
            elf_files: self.written.elf_files.clone(),
        }
    }
}

/// One line of the log for a layer written or taken from the store.
fn log_report(report: &LayerReport, counted: &str) {
    tracing::info!(
        "layer {}: {} {counted}, {} ({}){}",
        report.purpose,
        report.entries,
        crate::progress::human_size(report.size),
        report.digest,
        if report.from_store {
            ", built before: from the store"
        } else {
            ""
        }
    );
}

/// What determines a layer's content, entry by entry, for its store key.
#[derive(Serialize)]
enum ContentId<'a> {
    None,
    /// An entry of a source layer: the layer's diff-id fixes its bytes.
    Source(&'a str, u32),
    Inline(String),
}

impl<'a> Execution<'a> {
    /// Writes the image into `sink` (all but the commit); returns it, with
    /// what each new layer is.
    pub(crate) fn run(
        &self,
        spools: &Spools,
        sink: &mut dyn ImageSink,
    ) -> Result<(OutputImage, Vec<LayerReport>)> {
        let (built, (mut layers, slimmed)) = self.build_and_put(spools, sink)?;
        let mut config = self.plan.config.clone();
        let diff_ids = config
            .pointer_mut("/rootfs/diff_ids")
            .and_then(serde_json::Value::as_array_mut)
            .ok_or_else(|| Error::new("the min image config has no rootfs.diff_ids"))?;
        let mut reports = Vec::with_capacity(built.len() + slimmed.len());
        for (index, report) in slimmed {
            if let Some(slot) = diff_ids.get_mut(index) {
                *slot = serde_json::Value::String(report.diff_id.clone());
            }
            reports.push(report);
        }
        for (plan, (built, desc)) in self.plan.layers.iter().zip(built) {
            check_cap(self.plan.max_layer_size, plan, &built.written)?;
            diff_ids.push(serde_json::Value::String(built.written.diff_id.to_string()));
            let report = built.report(plan.role.clone(), plan.part, plan.entries.len());
            log_report(&report, "entries");
            layers.push(desc);
            reports.push(report);
        }
        let image = OutputImage {
            config: canonical_json(&config),
            layers,
            annotations: self.plan.annotations.clone(),
            referrers: Vec::new(),
        };
        Ok((image, reports))
    }

    /// Builds the new layers and puts them, and min's, into the sink.
    /// min's layers go first (copied, pushed or mounted: mostly I/O) while
    /// the new layers are built (mostly compressing); each new layer goes
    /// as soon as it is built, so that its upload overlaps the others'
    /// compression. Returns the new layers in plan order, with min's.
    fn build_and_put(
        &self,
        spools: &Spools,
        sink: &mut dyn ImageSink,
    ) -> Result<(Vec<(BuiltLayer, BlobDescriptor)>, MinLayers)> {
        let (sender, receiver) = std::sync::mpsc::channel::<(usize, Result<BuiltLayer>)>();
        let mut put: Vec<Option<(BuiltLayer, BlobDescriptor)>> =
            (0..self.plan.layers.len()).map(|_| None).collect();
        let (building, min_layers, failed) = std::thread::scope(|scope| {
            // The sender is this thread's: the receiver below ends with it.
            let building = scope.spawn(move || {
                let _phase = crate::progress::phase("build new layers");
                let deliver = |index: usize, built: Result<BuiltLayer>| {
                    let _ = sender.send((index, built));
                };
                self.build_layers(spools, &deliver)
            });
            let min_layers = {
                let _phase = crate::progress::phase("put min's layers into the sink");
                self.put_min_layers(sink)
            };
            let _phase = crate::progress::phase("put new layers into the sink");
            let mut failed = None;
            // In plan order, whatever order they are built in: what some
            // sinks write (a docker-archive's tar) follows the order of puts.
            let mut ready = std::collections::BTreeMap::new();
            let mut next = 0;
            for (index, built) in receiver.iter() {
                // After a failure the rest is only drained.
                if failed.is_some() || min_layers.is_err() {
                    continue;
                }
                match built {
                    Ok(built) => ready.insert(index, built),
                    Err(err) => {
                        failed = Some(err);
                        continue;
                    }
                };
                while let Some(built) = ready.remove(&next) {
                    match built.put(sink, self.compression) {
                        Ok(desc) => put[next] = Some((built, desc)),
                        Err(err) => {
                            failed = Some(err);
                            break;
                        }
                    }
                    next += 1;
                }
            }
            let building = building
                .join()
                .unwrap_or_else(|_| Err(Error::new("building the new layers panicked")));
            (building, min_layers, failed)
        });
        building?;
        let min_layers = min_layers?;
        if let Some(err) = failed {
            return Err(err);
        }
        let built = put
            .into_iter()
            .map(|slot| slot.ok_or_else(|| Error::new("internal error: a layer was not written")))
            .collect::<Result<Vec<_>>>()?;
        Ok((built, min_layers))
    }

    /// min's layers: those `--slim` cuts written again (with what each
    /// is, by index), the others unchanged: left to a destination that
    /// holds them, mounted or found there, or copied.
    fn put_min_layers(&self, sink: &mut dyn ImageSink) -> Result<MinLayers> {
        let mut layers = Vec::new();
        let mut slimmed = Vec::new();
        let origin = self.min.origin();
        let min_layers = &self.min.image().layers;
        let diff_ids: Vec<Digest> = min_layers.iter().map(|l| l.diff_id.clone()).collect();
        let rewrites = &self.plan.min_rewrites;
        // Unchanged layers above a rewritten one are no longer a prefix the
        // destination could hold.
        let first_cut = rewrites.iter().map(|f| f.layer).min().unwrap_or(usize::MAX);
        for (index, layer) in min_layers.iter().enumerate() {
            if let Some(rewrite) = rewrites.iter().find(|f| f.layer == index) {
                let (desc, report) = self.put_rewritten(sink, rewrite)?;
                layers.push(desc);
                slimmed.push((index, report));
                continue;
            }
            if index < first_cut && sink.holds_layers(&diff_ids[..=index])? {
                let (digest, size) = layer.blob.clone().unwrap_or((layer.diff_id.clone(), 0));
                layers.push(BlobDescriptor {
                    media_type: layer.media_type.clone(),
                    digest,
                    size,
                    annotations: Default::default(),
                });
                continue;
            }
            if let Some((digest, size)) = &layer.blob {
                let desc = BlobDescriptor {
                    media_type: layer.media_type.clone(),
                    digest: digest.clone(),
                    size: *size,
                    annotations: Default::default(),
                };
                if sink.reuse_blob(&desc, origin.as_ref())? {
                    layers.push(desc);
                    continue;
                }
                if self.put_min_file(sink, &desc, index)? {
                    layers.push(desc);
                    continue;
                }
            }
            let known = layer.blob.as_ref().map(|(digest, _)| digest);
            let file = self.min.layer_file(index);
            let before = file.as_deref().and_then(Store::stamp);
            let mut blob = crate::scratch::Interruptible(self.min.open_layer(index)?);
            let stored = sink
                .put_blob(&layer.media_type, known, &mut blob)
                .map_err(|e| {
                    e.context(format!("copying {} layer {}", self.min.name(), index + 1))
                })?;
            // Checked against its digest on the way, as it was read.
            if let (Some(store), Some(file), Some(_)) = (self.store, &file, known) {
                store.remember_source(&stored.digest, file, before);
            }
            layers.push(stored);
        }
        Ok((layers, slimmed))
    }

    /// Gets min's layer `index` to the sink from its blob file, if min has
    /// one: without hashing it when the store says it was checked before
    /// and is unchanged, else linked and checked through the link.
    fn put_min_file(
        &self,
        sink: &mut dyn ImageSink,
        desc: &BlobDescriptor,
        index: usize,
    ) -> Result<bool> {
        let Some(file) = self.min.layer_file(index) else {
            return Ok(false);
        };
        if self
            .store
            .is_some_and(|s| s.source_checked(&desc.digest, &file))
            && sink.put_checked_copy(desc, &file)?
        {
            tracing::debug!(
                "{} layer {}: checked before and unchanged, not hashed again",
                self.min.name(),
                index + 1
            );
            return Ok(true);
        }
        let before = Store::stamp(&file);
        let linked = sink.link_blob(desc, &file)?;
        if let Some(store) = self.store.filter(|_| linked) {
            store.remember_source(&desc.digest, &file, before);
        }
        Ok(linked)
    }

    /// A min layer written again (cut by `--slim`, or as eStargz), handed
    /// to the sink.
    fn put_rewritten(
        &self,
        sink: &mut dyn ImageSink,
        rewrite: &crate::plan::MinRewrite,
    ) -> Result<(BlobDescriptor, LayerReport)> {
        let built = self.rewritten_min_layer(rewrite)?;
        let desc = built.put(sink, self.compression)?;
        let role = crate::plan::LayerRole::MinLayer {
            index: rewrite.layer,
            slimmed: !rewrite.remove.is_empty() || !rewrite.replace.is_empty(),
        };
        let report = built.report(role, None, rewrite.remove.len());
        log_report(&report, "paths removed");
        Ok((desc, report))
    }

    /// Builds (or finds in the store) every new layer without writing an
    /// image: what each would be, for `catalog`.
    pub(crate) fn build_only(&self, spools: &Spools) -> Result<Vec<LayerReport>> {
        let built = self.collect_layers(spools)?;
        self.keep_dependencies(spools)?;
        Ok(self
            .plan
            .layers
            .iter()
            .zip(built)
            .map(|(plan, built)| built.report(plan.role.clone(), plan.part, plan.entries.len()))
            .collect())
    }

    /// Fills [`Execution::kept`] with the content of the runtime-dependency
    /// layers it lacks (layers the store held, so nothing was re-read),
    /// when all of it fits.
    fn keep_dependencies(&self, spools: &Spools) -> Result<()> {
        let Some(kept) = self.kept else {
            return Ok(());
        };
        let layers: Vec<usize> = (0..self.plan.layers.len())
            .filter(|&i| self.plan.layers[i].role == crate::plan::LayerRole::RuntimeDependencies)
            .collect();
        let lacking = kept.lacking(self.plan, &layers);
        if lacking.is_empty() || !kept.has_room(lacking.iter().map(|l| l.2).sum()) {
            return Ok(());
        }
        let refills = {
            let held = kept.read();
            self.refill(&[spools, &held], &layers)?
        };
        kept.retain(self.plan, &layers, &refills)?;
        Ok(())
    }

    /// Every new layer, handed to `deliver` (with its index in the plan)
    /// as soon as it is ready, in no set order: from the store when it was
    /// built before, else written now (and kept in the store).
    fn build_layers(&self, spools: &Spools, deliver: Built<'_>) -> Result<()> {
        let count = self.plan.layers.len();
        let keys: Vec<Digest> = self.plan.layers.iter().map(|l| self.layer_key(l)).collect();
        let mut taken = vec![false; count];
        if let Some(store) = self.store {
            for (index, key) in keys.iter().enumerate() {
                // A link (or copy) the sink may take over; the store keeps its own.
                let path = self.scratch.join(format!("stored-{index}"));
                let Some(written) = store.take_layer(key, &path) else {
                    continue;
                };
                tracing::debug!(
                    "layer {}: built before, taken from the store",
                    self.plan.layers[index].purpose()
                );
                taken[index] = true;
                deliver(
                    index,
                    Ok(BuiltLayer {
                        path,
                        written,
                        staged: None,
                    }),
                );
            }
        }
        let missing: Vec<usize> = (0..count).filter(|&i| !taken[i]).collect();
        // Kept in the store first: a sink may take the staged file over.
        let keep = |index: usize, result: Result<(tempfile::NamedTempFile, WrittenLayer)>| {
            let built = result.map(|(staged, written)| {
                if let Some(store) = self.store {
                    if let Err(err) = store.put_layer(&keys[index], &written, staged.path()) {
                        tracing::warn!(
                            "store: cannot keep the {} layer: {err}",
                            self.plan.layers[index].purpose()
                        );
                    }
                }
                BuiltLayer {
                    path: staged.path().to_path_buf(),
                    written,
                    staged: Some(staged),
                }
            });
            deliver(index, built);
        };
        self.write_layers(spools, &missing, &keep)
    }

    /// Every new layer, in plan order (for callers that need them all
    /// before going on).
    fn collect_layers(&self, spools: &Spools) -> Result<Vec<BuiltLayer>> {
        let slots: std::sync::Mutex<Vec<Option<Result<BuiltLayer>>>> =
            std::sync::Mutex::new((0..self.plan.layers.len()).map(|_| None).collect());
        let deliver = |index: usize, built: Result<BuiltLayer>| {
            if let Ok(mut slots) = slots.lock() {
                slots[index] = Some(built);
            }
        };
        self.build_layers(spools, &deliver)?;
        let slots = slots
            .into_inner()
            .map_err(|_| Error::new("building a layer panicked"))?;
        slots
            .into_iter()
            .map(|slot| {
                slot.unwrap_or_else(|| Err(Error::new("internal error: a layer was not written")))
            })
            .collect()
    }

    fn layer_key(&self, layer: &LayerPlan) -> Digest {
        self.keys().key(layer)
    }

    /// What keys this execution's layers in the store.
    pub(crate) fn keys(&self) -> LayerKeys<'a> {
        LayerKeys::new(self.full, self.gpu_min, self.compression)
    }

    /// Reads content the scans did not keep, such as targets of hard links
    /// that lie outside the selected subtrees and the runtime dependencies,
    /// re-reading only the layers that hold it, into spools of their own.
    fn refill(&self, have: &[&Spools], layers: &[usize]) -> Result<Spools> {
        let _phase = crate::progress::phase("re-read content the scan did not keep");
        let mut refills = Spools::new();
        for (origin, source) in [
            (Origin::Full, Some(self.full)),
            (Origin::GpuMin, self.gpu_min),
        ] {
            let Some(source) = source else { continue };
            let mut missing: BTreeMap<u32, HashSet<u32>> = BTreeMap::new();
            let inodes = layers
                .iter()
                .flat_map(|&i| &self.plan.layers[i].entries)
                .filter_map(|e| e.content.copied())
                .filter(|(from, _)| *from == origin)
                .map(|(_, inode)| inode);
            for inode in inodes {
                if !holds(have, origin, inode) {
                    missing
                        .entry(inode.layer)
                        .or_default()
                        .insert(inode.ordinal);
                }
            }
            if missing.is_empty() {
                continue;
            }
            // One layer per worker, the largest first, each into a spool of
            // its own.
            let mut missing: Vec<(u32, HashSet<u32>)> = missing.into_iter().collect();
            let size = |layer: u32| {
                let layers = &source.image().layers;
                layers
                    .get(layer as usize)
                    .and_then(|l| l.blob.as_ref())
                    .map_or(0, |b| b.1)
            };
            missing.sort_by_key(|(layer, _)| std::cmp::Reverse(size(*layer)));
            let read = crate::layer::each_in_parallel(&missing, |(layer, ordinals)| {
                self.check_give_way()?;
                let mut spool = Spool::create(self.scratch)?;
                if !self.refill_at(origin, source, *layer, ordinals, &mut spool) {
                    self.check_give_way()?;
                    scan::spool_inodes(
                        source,
                        source.name(),
                        *layer,
                        ordinals,
                        &mut spool,
                        self.give_way,
                    )?;
                }
                Ok::<Spool, Error>(spool)
            });
            // A failed read is the error, not the layers it left unread.
            let mut spools = Vec::with_capacity(read.len());
            let mut unread = false;
            for result in read {
                match result {
                    Some(Ok(spool)) => spools.push(spool),
                    Some(Err(err)) => return Err(err),
                    None => unread = true,
                }
            }
            if unread {
                return Err(Error::new("internal error: a layer was not re-read"));
            }
            let mut spool = Spool::create(self.scratch)?;
            for one in spools {
                spool.absorb(one)?;
            }
            refills.insert(origin, spool);
        }
        Ok(refills)
    }

    /// Reads files of a layer through its access points, when it has them
    /// and the transport can read part of a blob; false means read it whole.
    fn refill_at(
        &self,
        origin: Origin,
        source: &dyn ImageSource,
        layer: u32,
        ordinals: &HashSet<u32>,
        spool: &mut Spool,
    ) -> bool {
        let Some(scan) = self.scans.get(&origin) else {
            return false;
        };
        let Some(access) = scan.access.get(&layer) else {
            return false;
        };
        let sizes: HashMap<InodeRef, u64> = self
            .plan
            .layers
            .iter()
            .flat_map(|l| &l.entries)
            .filter_map(|e| e.content.copied().map(|(o, inode)| (o, inode, e.meta.size)))
            .filter(|(o, inode, _)| *o == origin && inode.layer == layer)
            .map(|(_, inode, size)| (inode, size))
            .collect();
        let mut wanted = Vec::with_capacity(ordinals.len());
        for &ordinal in ordinals {
            let inode = InodeRef { layer, ordinal };
            match (scan.tree.offset(inode), sizes.get(&inode)) {
                (Some(offset), Some(&size)) => wanted.push((ordinal, offset, size)),
                _ => return false,
            }
        }
        let read = scan::spool_inodes_at(
            source,
            source.name(),
            layer,
            access,
            &wanted,
            spool,
            self.give_way,
        );
        match read {
            Ok(done) => done,
            // Stopped to give way (the caller sees it), not failed.
            Err(_) if self.check_give_way().is_err() => false,
            Err(err) => {
                tracing::warn!(
                    "{} layer {}: reading through its access points failed ({err}); reading it whole",
                    source.name(),
                    layer + 1
                );
                false
            }
        }
    }

    /// Writes every new layer to a staged file. Layers whose content the
    /// scans kept are written at once, from a work queue (largest first),
    /// while the layers that still miss content are re-read; the rest
    /// follow when that is done.
    fn write_layers(&self, spools: &Spools, layers: &[usize], deliver: Staged<'_>) -> Result<()> {
        let kept = self.kept.map(Kept::read);
        let none = Spools::new();
        let have = [spools, kept.as_deref().unwrap_or(&none)];
        let has_all = |layer: &LayerPlan| {
            (layer.entries.iter()).all(|e| {
                (e.content.copied()).is_none_or(|(origin, inode)| holds(&have, origin, inode))
            })
        };
        let (ready, waiting): (Vec<usize>, Vec<usize>) =
            layers.iter().partition(|&&i| has_all(&self.plan.layers[i]));
        let refills = std::thread::scope(|scope| {
            let refill =
                (!waiting.is_empty()).then(|| scope.spawn(|| self.refill(&have, &waiting)));
            self.write_queue(&ready, &have, deliver);
            refill.map(|job| {
                job.join()
                    .unwrap_or_else(|_| Err(Error::new("re-reading a layer panicked")))
            })
        });
        let refills = refills.transpose()?.unwrap_or_default();
        self.check_give_way()?;
        {
            let _phase = crate::progress::phase("write layers that waited for the re-read");
            self.write_queue(&waiting, &[have[0], have[1], &refills], deliver);
        }
        drop(kept);
        if let Some(kept) = self.kept {
            let copied = kept.retain(self.plan, &waiting, &refills)?;
            if copied > 0 {
                tracing::debug!(
                    "kept {} of runtime-dependency content for later combinations",
                    crate::progress::human_size(copied)
                );
            }
        }
        Ok(())
    }

    /// Writes the given layers with one worker per core, each taking the
    /// largest layer left.
    fn write_queue(&self, indexes: &[usize], have: &[&Spools], deliver: Staged<'_>) {
        let size = |i: &usize| -> u64 {
            self.plan.layers[*i]
                .entries
                .iter()
                .map(|e| e.meta.size)
                .sum()
        };
        let mut queue: Vec<usize> = indexes.to_vec();
        queue.sort_by_key(|i| std::cmp::Reverse(size(i)));
        crate::layer::each_in_parallel(&queue, |&index| {
            deliver(index, self.write_layer(&self.plan.layers[index], have));
            Ok::<(), ()>(())
        });
    }

    /// Fails when this execution is to give way ([`Execution::give_way`]).
    fn check_give_way(&self) -> Result<()> {
        match self.give_way {
            Some(give_way) if give_way() => Err(Error::new("gave way to a pull")),
            _ => Ok(()),
        }
    }

    fn write_layer(
        &self,
        layer: &LayerPlan,
        have: &[&Spools],
    ) -> Result<(tempfile::NamedTempFile, WrittenLayer)> {
        let staged = tempfile::Builder::new()
            .prefix("layer-")
            .tempfile_in(self.scratch)
            .map_err(|e| Error::new("cannot stage a layer").with_source(e))?;
        let mut writer = LayerWriter::new(staged.reopen()?, self.compression)?;
        let total: u64 = layer.entries.iter().map(|e| e.meta.size).sum();
        let bar = crate::progress::bar(total, format!("writing {}", layer.purpose()));
        if layer.prefetch == Some(0) {
            writer.landmark(false)?;
        }
        for (index, entry) in layer.entries.iter().enumerate() {
            crate::scratch::check()?;
            self.check_give_way()?;
            // What each entry costs compressed: only `--max-layer-size` asks.
            if self.plan.max_layer_size.is_some() {
                writer.entry_start();
            }
            if let Some(bar) = &bar {
                bar.inc(entry.meta.size);
            }
            match &entry.content {
                Content::None => writer.append(&entry.path, &entry.meta, None)?,
                Content::Inline(bytes) => writer.append(
                    &entry.path,
                    &entry.meta,
                    Some(&mut &bytes[..] as &mut dyn Read),
                )?,
                Content::Full(_) | Content::GpuMin(_) => {
                    let (origin, inode) = entry.content.copied().expect("copied content");
                    let reader =
                        (have.iter()).find_map(|s| s.get(&origin).and_then(|s| s.open(inode)));
                    let mut reader = reader.ok_or_else(|| {
                        Error::new(format!(
                            "internal error: no content kept for {}",
                            entry.path
                        ))
                    })?;
                    writer.append(&entry.path, &entry.meta, Some(&mut reader))?;
                }
            }
            // The prefetch ends after its last entry.
            if layer.prefetch == Some(index + 1) {
                writer.landmark(true)?;
            }
        }
        let written = writer
            .finish()
            .map_err(|e| e.context(format!("writing the {} layer", layer.purpose())))?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        Ok((staged, written))
    }
}

/// A layer the plan said fits `--max-layer-size`, checked as written:
/// registries check the compressed size.
fn check_cap(cap: Option<u64>, layer: &LayerPlan, written: &WrittenLayer) -> Result<()> {
    match cap {
        Some(cap) if written.size > cap => Err(Error::new(format!(
            "internal error: the {} layer compressed to {} bytes, more than --max-layer-size ({cap} bytes)",
            layer.purpose(),
            written.size
        ))
        .hint("nothing was written; please report this, with the command")),
        _ => Ok(()),
    }
}

/// What determines a layer's key in the store, but for its entries.
#[derive(Clone, Copy)]
pub(crate) struct LayerKeys<'a> {
    full: &'a dyn ImageSource,
    gpu_min: Option<&'a dyn ImageSource>,
    compression: Compression,
}

impl<'a> LayerKeys<'a> {
    pub(crate) fn new(
        full: &'a dyn ImageSource,
        gpu_min: Option<&'a dyn ImageSource>,
        compression: Compression,
    ) -> Self {
        LayerKeys {
            full,
            gpu_min,
            compression,
        }
    }

    /// Digests exactly what determines a layer's bytes: this program's
    /// version (which pins the compressors), the format and compression,
    /// and each entry's path, metadata and content identity.
    pub(crate) fn key(&self, layer: &LayerPlan) -> Digest {
        let mut hasher = Sha256::new();
        hasher.update(b"triton-compose layer\n");
        hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
        hasher.update(LAYER_FORMAT.as_bytes());
        hasher.update(format!("{:?}\n", self.compression).as_bytes());
        if let Some(prefetch) = layer.prefetch {
            hasher.update(format!("prefetch {prefetch}\n").as_bytes());
        }
        fn diff_id(source: Option<&dyn ImageSource>, layer: u32) -> &str {
            source
                .and_then(|s| s.image().layers.get(layer as usize))
                .map(|l| l.diff_id.as_str())
                .unwrap_or("?")
        }
        for entry in &layer.entries {
            let content = match &entry.content {
                Content::None => ContentId::None,
                Content::Inline(bytes) => ContentId::Inline(Digest::of(bytes).to_string()),
                Content::Full(inode) => {
                    ContentId::Source(diff_id(Some(self.full), inode.layer), inode.ordinal)
                }
                Content::GpuMin(inode) => {
                    ContentId::Source(diff_id(self.gpu_min, inode.layer), inode.ordinal)
                }
            };
            let record = postcard::to_stdvec(&(&entry.path, &entry.meta, content))
                .expect("entries serialize");
            hasher.update((record.len() as u64).to_le_bytes());
            hasher.update(&record);
        }
        Digest::from_sha256(&hasher.finalize())
    }
}

/// True when one of `have` holds the content of `origin`'s `inode`.
fn holds(have: &[&Spools], origin: Origin, inode: InodeRef) -> bool {
    have.iter()
        .any(|s| s.get(&origin).is_some_and(|s| s.contains(inode)))
}
