//! Prebuild: once the images are read, the core and each component alone
//! (its runtime dependencies included) are built into the store in the
//! background, so that a first pull of any tag only assembles layers.
//!
//! A pull always goes first. The prebuild takes the compose lock only while
//! no pull waits, and gives way between the entries of a layer as soon as
//! one does: what it had finished stays in the store, and the part is
//! built again (from there) once the pulls are served. It stops when the
//! store is full (more would evict what it built) and when the pair it
//! builds for is replaced or the server stops. A restart finds the parts
//! in the store and builds nothing again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::compose::{PrebuiltPart, Session};
use crate::triton::Component;

use super::{Generation, State};

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

fn run(state: &State, generation: &Generation) {
    let prebuild = &generation.prebuild;
    let started = Instant::now();
    let stopped = || prebuild.retired.load(Ordering::Relaxed) || crate::scratch::interrupted();
    let give_way = || stopped() || state.pulls_waiting() > 0;
    let count = prebuild.parts().len();
    for index in 0..count {
        let part = prebuild.parts()[index].clone();
        if !matches!(part.status, Status::Waiting) {
            continue;
        }
        let name = part.component.as_ref().map_or("the core".to_string(), |c| {
            format!("{} {}", c.kind.noun(), c.name)
        });
        let status = loop {
            if stopped() {
                return;
            }
            if state.pulls_waiting() > 0 {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let session = generation.session.lock().expect("not poisoned");
            if state.pulls_waiting() > 0 {
                continue;
            }
            if let Some((used, max)) = session.store_usage().filter(|(used, max)| used >= max) {
                tracing::warn!(
                    "prebuild: stopped before {name}: the store holds {} of its {} \
                     (--store-max-size); the rest is built when pulled",
                    crate::progress::human_size(used),
                    crate::progress::human_size(max)
                );
                prebuild.skip_rest("the store is full (--store-max-size)");
                break None;
            }
            let built = session.prebuild(part.component.as_ref(), &give_way);
            state.measure_store(&session);
            match built {
                Ok(built) => break Some(Status::Prebuilt(built)),
                Err(_) if give_way() => {
                    prebuild.gave_way.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("prebuild: {name} gave way to a pull");
                }
                Err(err) => {
                    tracing::warn!("prebuild: {name}: {err}");
                    break Some(Status::Failed(err.to_string()));
                }
            }
        };
        let Some(status) = status else { break };
        if let Status::Prebuilt(built) = &status {
            record(prebuild, &name, built);
        }
        prebuild.set(index, status.clone());
        if matches!(status, Status::Prebuilt(built) if built.evicted > 0) {
            tracing::warn!(
                "prebuild: stopped after {name}: the store evicted older entries to stay \
                 under --store-max-size; the rest is built when pulled"
            );
            prebuild.skip_rest("the store is full (--store-max-size)");
            break;
        }
    }
    prebuild.finished.store(true, Ordering::Relaxed);
    tracing::info!(
        "prebuild finished in {:.1} s: {} layers built, {} found in the store",
        started.elapsed().as_secs_f64(),
        prebuild.layers_built.load(Ordering::Relaxed),
        prebuild.layers_found.load(Ordering::Relaxed),
    );
}

fn record(prebuild: &Prebuild, name: &str, built: &PrebuiltPart) {
    prebuild
        .layers_built
        .fetch_add(built.built as u64, Ordering::Relaxed);
    prebuild
        .layers_found
        .fetch_add(built.found as u64, Ordering::Relaxed);
    tracing::info!(
        "prebuilt {name}: {} ({} with its dependencies), {} layer(s) built, {} found in the store",
        crate::progress::human_size(built.own.1),
        crate::progress::human_size(built.own.1 + built.deps.1),
        built.built,
        built.found
    );
}
