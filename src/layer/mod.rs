//! Layer tarballs: reading them as a stream of entries (with OCI whiteouts
//! recognised and hostile headers refused), and writing new ones
//! deterministically while hashing diff-id and digest in the same pass.
//!
//! Nothing here knows about images, Triton, or where the bytes live.

mod compression;
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

/// How many threads compression may use: `TRITON_COMPOSE_THREADS`, or one
/// per core. Output bytes do not depend on it.
pub(crate) fn threads() -> usize {
    std::env::var("TRITON_COMPOSE_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
