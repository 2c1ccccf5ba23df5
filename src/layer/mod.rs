//! Layer tarballs: reading them as a stream of entries (with OCI whiteouts
//! recognised and hostile headers refused), and writing new ones
//! deterministically while hashing diff-id and digest in the same pass.
//!
//! Nothing here knows about images, Triton, or where the bytes live.

mod compression;
mod cost;
mod entry;
pub(crate) mod estargz;
mod gzip;
mod reader;
pub(crate) mod tarparse;
mod writer;
pub(crate) mod ztoc;

pub use compression::Compression;
pub(crate) use compression::DEFAULT_GZIP_LEVEL;
pub(crate) use entry::{EntryKind, EntryMeta, ImagePath};
pub(crate) use estargz::EstargzFacts;
pub(crate) use gzip::LEVELS as GZIP_LEVELS;
pub(crate) use reader::read_layer_with;
pub use reader::{read_layer, LayerItem};
pub(crate) use writer::{LayerWriter, WrittenLayer};

/// Runs `job` on each of `items` with one worker per core at most
/// ([`threads`]), each taking the next item in order; the results come
/// back in the items' order. Once a job fails, no worker starts another
/// (those items yield `None`). The crate's one worker pool of threads (the
/// gzip pool aside).
pub(crate) fn each_in_parallel<T: Sync, R: Send, E: Send>(
    items: &[T],
    job: impl Fn(&T) -> std::result::Result<R, E> + Sync,
) -> Vec<Option<std::result::Result<R, E>>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Vec<std::sync::Mutex<Option<std::result::Result<R, E>>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let workers = threads().min(items.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(index) else { break };
                let result = job(item);
                if result.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                *slots[index].lock().expect("not poisoned") = Some(result);
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| slot.into_inner().expect("not poisoned"))
        .collect()
}

/// How many threads compression may use: `TRITON_COMPOSE_THREADS`, or one
/// per core. Output bytes do not depend on it.
pub(crate) fn threads() -> usize {
    std::env::var("TRITON_COMPOSE_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
