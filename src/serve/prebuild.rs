//! Prebuild: once the images are read, the core and each component alone
//! (its runtime dependencies included) are built into the store in the
//! background, so that a first pull of any tag only assembles layers.
//! Every component is built together first (full's layers are read once
//! for all, as a compose of all of them reads them, and `latest` is then
//! prebuilt too); each alone then adds only its own runtime dependencies.
//!
//! A pull always goes first. The prebuild starts a step only while no pull
//! waits, and gives way (between the entries of a layer, and while it reads
//! full's layers) as soon as one waits that lacks a component of the step
//! (one that has them all would only build them again: the core, say):
//! what it had finished stays in the store, and the step is built again
//! (from there) once the pulls are served. It stops when the
//! store is full (more would evict what it built) and when the pair it
//! builds for is replaced or the server stops. A restart finds the parts
//! in the store and builds nothing again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::compose::{Parts, Session};
use crate::plan::LayerRole;
use crate::triton::Component;

use super::{Generation, State};

/// What prebuilding one part left in the store.
#[derive(Clone, Copy, Debug)]
pub(super) struct PrebuiltPart {
    /// (content bytes, compressed bytes) of the part's own layers.
    pub own: (u64, u64),
    /// The same for the runtime dependencies it alone brings.
    pub deps: (u64, u64),
}

impl PrebuiltPart {
    fn of(parts: &Parts, component: Option<&Component>) -> PrebuiltPart {
        let role = match component {
            Some(c) => LayerRole::Component(c.clone()),
            None => LayerRole::Core,
        };
        PrebuiltPart {
            own: parts.sizes(&role),
            deps: parts.sizes(&LayerRole::RuntimeDependencies),
        }
    }
}

/// Where one part stands.
#[derive(Clone, Debug)]
pub(super) enum Status {
    Waiting,
    Prebuilt(PrebuiltPart),
    /// Not built, and why (the store is full, gpu-min is missing).
    Skipped(String),
    /// Building it failed (a compose of it would fail the same way).
    Failed(String),
}

/// A part: the core (`None`) or a component alone.
#[derive(Clone, Debug)]
pub(super) struct Part {
    pub component: Option<Component>,
    /// Bytes of content it holds in full.
    pub content: u64,
    pub status: Status,
}

/// The prebuild of one min/full pair.
pub(super) struct Prebuild {
    parts: Mutex<Vec<Part>>,
    /// Set when the pair is replaced or the server stops.
    retired: AtomicBool,
    finished: AtomicBool,
    pub layers_built: AtomicU64,
    pub layers_found: AtomicU64,
    /// Times it stopped to let a pull go first.
    pub gave_way: AtomicU64,
}

impl Prebuild {
    /// The core, then each component `offered`, all waiting.
    pub(super) fn new(session: &Session, offered: &[Component], enabled: bool) -> Prebuild {
        let mut parts = vec![Part {
            component: None,
            content: 0,
            status: Status::Waiting,
        }];
        parts.extend(offered.iter().map(|c| Part {
            component: Some(c.clone()),
            content: session.content_size(c),
            status: if session.lacks_gpu_min(c) {
                Status::Skipped("needs gpu-min: serve it with --image gpu-min,REF".into())
            } else {
                Status::Waiting
            },
        }));
        if !enabled {
            for part in &mut parts {
                if matches!(part.status, Status::Waiting) {
                    part.status = Status::Skipped("--no-prebuild".into());
                }
            }
        }
        Prebuild {
            parts: Mutex::new(parts),
            retired: AtomicBool::new(false),
            finished: AtomicBool::new(!enabled),
            layers_built: AtomicU64::new(0),
            layers_found: AtomicU64::new(0),
            gave_way: AtomicU64::new(0),
        }
    }

    pub(super) fn parts(&self) -> Vec<Part> {
        self.parts.lock().expect("not poisoned").clone()
    }

    pub(super) fn finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }

    pub(super) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    fn set(&self, index: usize, status: Status) {
        self.parts.lock().expect("not poisoned")[index].status = status;
    }

    /// Marks every part still waiting as skipped, for `why`.
    fn skip_rest(&self, why: &str) {
        for part in self.parts.lock().expect("not poisoned").iter_mut() {
            if matches!(part.status, Status::Waiting) {
                part.status = Status::Skipped(why.to_string());
            }
        }
    }
}

/// Starts the prebuild of `generation` on a thread of its own.
pub(super) fn start(state: &Arc<State>, generation: &Arc<Generation>) {
    if generation.prebuild.finished() {
        return;
    }
    let (state, generation) = (state.clone(), generation.clone());
    let spawned = std::thread::Builder::new()
        .name("prebuild".into())
        .spawn(move || run(&state, &generation));
    if let Err(err) = spawned {
        tracing::warn!("prebuild: cannot start a thread ({err}); tags are built when pulled");
    }
}

/// Why a step ended without its layers.
enum Unbuilt {
    /// The pair was replaced, or the server stops.
    Stopped,
    /// The store is at its bound: more would evict what was built.
    StoreFull,
    Failed(String),
}

/// Builds `components` together (the core alone when empty), pulls first.
fn step(
    state: &State,
    generation: &Generation,
    components: &[Component],
) -> Result<Parts, Unbuilt> {
    let prebuild = &generation.prebuild;
    let stopped = || prebuild.retired.load(Ordering::Relaxed) || crate::scratch::interrupted();
    // A pull that needs all of them would only build them again.
    let give_way = || stopped() || state.pulls_lack_one_of(components);
    loop {
        if stopped() {
            return Err(Unbuilt::Stopped);
        }
        if state.pulls_waiting() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let session = generation.session.lock().expect("not poisoned");
        if state.pulls_waiting() {
            continue;
        }
        if let Some((used, max)) = session.store_usage().filter(|(used, max)| used >= max) {
            tracing::warn!(
                "prebuild: the store holds {} of its {} (--store-max-size); the rest is \
                 built when pulled",
                crate::progress::human_size(used),
                crate::progress::human_size(max)
            );
            return Err(Unbuilt::StoreFull);
        }
        let built = session.prebuild(components, &give_way);
        state.measure_store(&session);
        match built {
            Ok((parts, evicted)) => {
                prebuild
                    .layers_built
                    .fetch_add(parts.built() as u64, Ordering::Relaxed);
                prebuild.layers_found.fetch_add(
                    (parts.reports.len() - parts.built()) as u64,
                    Ordering::Relaxed,
                );
                if evicted > 0 {
                    tracing::warn!(
                        "prebuild: the store evicted older entries to stay under \
                         --store-max-size; the rest is built when pulled"
                    );
                    return Err(Unbuilt::StoreFull);
                }
                return Ok(parts);
            }
            Err(_) if give_way() => {
                prebuild.gave_way.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("prebuild: gave way to a pull");
            }
            Err(err) => return Err(Unbuilt::Failed(err.to_string())),
        }
    }
}

fn run(state: &State, generation: &Generation) {
    let prebuild = &generation.prebuild;
    let started = Instant::now();
    let waiting: Vec<Component> = prebuild
        .parts()
        .iter()
        .filter(|p| matches!(p.status, Status::Waiting))
        .filter_map(|p| p.component.clone())
        .collect();
    // Every component together: the core and each component's layers.
    match step(state, generation, &waiting) {
        Ok(parts) => {
            let core = PrebuiltPart::of(&parts, None);
            tracing::info!(
                "prebuilt the core and {} component(s) together: {} layer(s) built, {} found",
                waiting.len(),
                parts.built(),
                parts.reports.len() - parts.built()
            );
            prebuild.set(
                0,
                Status::Prebuilt(PrebuiltPart {
                    deps: (0, 0),
                    ..core
                }),
            );
        }
        Err(Unbuilt::Stopped) => return,
        Err(Unbuilt::StoreFull) => {
            prebuild.skip_rest("the store is full (--store-max-size)");
        }
        // One of them fails: each is tried alone below, and says which.
        Err(Unbuilt::Failed(err)) => {
            tracing::warn!("prebuild: every component together: {err}; trying each alone");
        }
    }
    let count = prebuild.parts().len();
    for index in 0..count {
        let part = prebuild.parts()[index].clone();
        if !matches!(part.status, Status::Waiting) {
            continue;
        }
        let name = part.component.as_ref().map_or("the core".to_string(), |c| {
            format!("{} {}", c.kind.noun(), c.name)
        });
        let components: Vec<Component> = part.component.clone().into_iter().collect();
        let status = match step(state, generation, &components) {
            Ok(parts) => {
                let built = PrebuiltPart::of(&parts, part.component.as_ref());
                tracing::info!(
                    "prebuilt {name}: {} ({} with its dependencies), {} layer(s) built",
                    crate::progress::human_size(built.own.1),
                    crate::progress::human_size(built.own.1 + built.deps.1),
                    parts.built(),
                );
                Status::Prebuilt(built)
            }
            Err(Unbuilt::Stopped) => return,
            Err(Unbuilt::StoreFull) => {
                prebuild.skip_rest("the store is full (--store-max-size)");
                break;
            }
            Err(Unbuilt::Failed(err)) => {
                tracing::warn!("prebuild: {name}: {err}");
                Status::Failed(err)
            }
        };
        prebuild.set(index, status);
    }
    prebuild.finished.store(true, Ordering::Relaxed);
    tracing::info!(
        "prebuild finished in {:.1} s: {} layers built, {} found in the store",
        started.elapsed().as_secs_f64(),
        prebuild.layers_built.load(Ordering::Relaxed),
        prebuild.layers_found.load(Ordering::Relaxed),
    );
}
