//! Layer tarballs: reading them as a stream of entries (with OCI whiteouts
//! recognised and hostile headers refused), and writing new ones
//! deterministically while hashing diff-id and digest in the same pass.
//!
//! Nothing here knows about images, Triton, or where the bytes live.

mod compression;
mod entry;
mod guard;
mod reader;
mod writer;

pub use compression::{decompress, Compression};
pub use entry::{EntryKind, EntryMeta, ImagePath};
pub(crate) use guard::HeaderGuard;
pub use reader::{read_layer, LayerEntry, LayerItem};
pub use writer::{LayerWriter, WrittenLayer};
