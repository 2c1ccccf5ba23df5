//! Measuring layers for `--max-layer-size`: the layers the plan could not
//! tell fit are written (into the store, where the run that follows takes
//! them) and their compressed sizes, and what each entry cost, handed back
//! for the plan to be made again ([`crate::plan::Measured`]).

use std::sync::Mutex;

use super::{Execution, Spools};
use crate::error::{Error, Result};
use crate::plan::Measured;

impl Execution<'_> {
    /// What the plan's `layers` (by index) measure, with their indexes:
    /// from the store when it knows, else written now and kept there.
    /// Needs a store (a run without one measures into a scratch store).
    pub(crate) fn measure(
        &self,
        spools: &Spools,
        layers: &[usize],
    ) -> Result<Vec<(usize, Measured)>> {
        let store = self
            .store
            .ok_or_else(|| Error::new("internal error: measuring layers needs a store"))?;
        let cap = self.plan.max_layer_size.unwrap_or(u64::MAX);
        let keys = self.keys();
        let mut known = Vec::new();
        let mut to_write = std::collections::BTreeMap::new();
        for &index in layers {
            let key = keys.key(&self.plan.layers[index]);
            // Costs are needed, and kept, only past the cap.
            let stored = store.layer_size(&key).and_then(|size| {
                if size <= cap {
                    return Some(Measured { size, costs: None });
                }
                let costs = store.costs(&key)?;
                Some(Measured {
                    size,
                    costs: Some(costs),
                })
            });
            match stored {
                Some(measured) => known.push((index, measured)),
                None => {
                    to_write.insert(index, key);
                }
            }
        }
        let written = Mutex::new(Vec::new());
        let deliver =
            |index: usize,
             result: Result<(tempfile::NamedTempFile, crate::layer::WrittenLayer)>| {
                let measured = result.and_then(|(staged, written)| {
                    let key = &to_write[&index];
                    store.put_layer(key, &written, staged.path())?;
                    let costs = written.costs.filter(|_| written.size > cap);
                    if let Some(costs) = &costs {
                        store.put_costs(key, costs)?;
                    }
                    tracing::debug!(
                        "measured the {} layer: {} compressed",
                        self.plan.layers[index].purpose(),
                        crate::progress::human_size(written.size)
                    );
                    Ok((
                        index,
                        Measured {
                            size: written.size,
                            costs,
                        },
                    ))
                });
                written.lock().expect("not poisoned").push(measured);
            };
        let indexes: Vec<usize> = to_write.keys().copied().collect();
        self.write_layers(spools, &indexes, &deliver)?;
        for measured in written.into_inner().expect("not poisoned") {
            known.push(measured?);
        }
        Ok(known)
    }
}
