//! Runtime-dependency content kept for the life of a `serve` generation.
//!
//! A compose that spools nothing up front (serve's) re-reads, for each new
//! runtime-dependency layer, the files it carries from full. Every
//! combination of components has a dependency layer of its own, made of
//! the files of its components' closures. The prebuild builds each single
//! component's; what they re-read is kept here, so that a combination's
//! layer finds all its content and only compresses, reading nothing from
//! full. The files live in the scratch directory (unlinked), up to a bound
//! on their bytes; past it, a layer re-reads what it lacks as before.

use std::sync::{RwLock, RwLockReadGuard};

use crate::error::Result;
use crate::plan::{LayerRole, Origin, Plan};
use crate::spool::Spool;
use crate::tree::InodeRef;

use super::Spools;

pub(crate) struct Kept {
    spools: RwLock<Spools>,
    /// The most bytes of content held.
    limit: u64,
    scratch: std::path::PathBuf,
}

impl Kept {
    /// Holds up to `limit` bytes of content, in files under `scratch`.
    pub(crate) fn new(scratch: &std::path::Path, limit: u64) -> Kept {
        Kept {
            spools: RwLock::new(Spools::new()),
            limit,
            scratch: scratch.to_path_buf(),
        }
    }

    /// What is kept, to read from while the guard lives.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Spools> {
        self.spools.read().expect("not poisoned")
    }

    /// The bytes of content held.
    pub(crate) fn held(&self) -> u64 {
        self.read().values().map(Spool::held).sum()
    }

    /// The content of `plan`'s runtime-dependency layers this does not
    /// hold: what would be worth keeping.
    pub(crate) fn lacking(&self, plan: &Plan, layers: &[usize]) -> Vec<(Origin, InodeRef, u64)> {
        let kept = self.read();
        let mut lacking: Vec<(Origin, InodeRef, u64)> = dependency_content(plan, layers)
            .filter(|(origin, inode, _)| !kept.get(origin).is_some_and(|s| s.contains(*inode)))
            .collect();
        lacking.sort_unstable_by_key(|&(origin, inode, _)| (origin == Origin::GpuMin, inode));
        lacking.dedup_by_key(|&mut (origin, inode, _)| (origin, inode));
        lacking
    }

    /// True when `bytes` more fit under the bound.
    pub(crate) fn has_room(&self, bytes: u64) -> bool {
        self.held().saturating_add(bytes) <= self.limit
    }

    /// Copies in, from `from`, the content of `plan`'s runtime-dependency
    /// layers among `layers` that is not held yet, while it fits; returns
    /// the bytes copied.
    pub(crate) fn retain(&self, plan: &Plan, layers: &[usize], from: &Spools) -> Result<u64> {
        let wanted: Vec<_> = self
            .lacking(plan, layers)
            .into_iter()
            .filter(|(origin, inode, _)| from.get(origin).is_some_and(|s| s.contains(*inode)))
            .collect();
        if wanted.is_empty() {
            return Ok(0);
        }
        let mut spools = self.spools.write().expect("not poisoned");
        let mut held: u64 = spools.values().map(Spool::held).sum();
        let mut copied = 0;
        for (origin, inode, size) in wanted {
            if held.saturating_add(size) > self.limit {
                break;
            }
            let spool = match spools.entry(origin) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(Spool::create(&self.scratch)?)
                }
            };
            if spool.contains(inode) {
                continue;
            }
            let Some(mut reader) = from.get(&origin).and_then(|s| s.open(inode)) else {
                continue;
            };
            spool.store(inode, size, &mut reader)?;
            held += size;
            copied += size;
        }
        for spool in spools.values_mut() {
            spool.flush()?;
        }
        Ok(copied)
    }
}

/// The copied content of `plan`'s runtime-dependency layers among `layers`:
/// where from, which inode, how many bytes.
fn dependency_content<'a>(
    plan: &'a Plan,
    layers: &'a [usize],
) -> impl Iterator<Item = (Origin, InodeRef, u64)> + 'a {
    layers
        .iter()
        .map(|&index| &plan.layers[index])
        .filter(|layer| layer.role == LayerRole::RuntimeDependencies)
        .flat_map(|layer| &layer.entries)
        .filter_map(|entry| {
            let (origin, inode) = entry.content.copied()?;
            Some((origin, inode, entry.meta.size))
        })
}
