//! triton-compose builds slim Triton Inference Server images by composition:
//! it lifts pre-built components out of a *full* image and lays them on a
//! *min* image, without a Docker daemon, taking compose.py's command line.
//!
//! Data flows one way: **CLI → request → plan → execute → sink**.
//!
//! - [`cli`] and [`request`]: compose.py's flags, validated into a
//!   [`request::ComposeRequest`].
//! - [`transport`]: where images come from and go to (`oci:`,
//!   `docker-archive:`), behind the [`image::ImageSource`] and
//!   [`image::ImageSink`] traits, one module per transport.
//! - [`scan`]: reads each image's layers once (in parallel) into layer
//!   indexes and a [`tree::MergedTree`] (whiteouts and opaque directories
//!   applied), keeping the content that may be needed in a [`spool::Spool`].
//!   Entries go to disk ([`entrylog`], then the tree's redb database), so
//!   memory does not grow with an image's file count.
//! - [`store`]: the content-addressed cache beside the transports, under
//!   scan and execute: layer indexes by diff-id (with gzip access points,
//!   [`layer::ztoc`]) and built layers by what determines their bytes.
//! - [`plan`]: pure data computed from the configs and the scans: which
//!   paths come from which inode, the generated files, the config. What is
//!   Triton-specific lives in [`triton`] alone.
//! - [`render`] turns the plan into Dockerfile.compose; [`execute`] turns it
//!   into layers (or takes them from the store), written once while hashing
//!   diff-id and digest, gzip in parallel deterministic blocks.
//! - [`layer`]: tar reading (one parser of our own, drawing entry
//!   boundaries as Docker's applier does) and writing (pigz-style gzip),
//!   and random access into gzip layers ([`layer::ztoc`]); it knows nothing
//!   about images.
//! - [`local`]: components from a directory on this machine, laid on full
//!   as a layer of their own.
//! - [`scratch`]: scratch names that carry their owner, sweeping what
//!   killed runs left, and stopping cleanly on SIGINT/SIGTERM.
//!
//! - [`deps`]: the runtime dependencies (libraries, dpkg and python
//!   packages) the selection needs and min lacks, found in full, following
//!   load chains as ld.so does ([`deps::chain`]).
//!
//! - [`provenance`]: what the image says of its sources (annotations and
//!   labels) and its SPDX SBOM, attached as an OCI referrer.
//!
//! - [`serve`]: the same pipeline behind a registry endpoint, where every
//!   combination of components is a tag composed on first pull.
//!
//! [`compose()`] strings these together (and [`compose_variants`] for
//! several images from one read of the sources). [`verify()`] checks an
//! image the same way [`deps`] resolves one.
//!
//! The crate's public face is small: the re-exports below and [`cli`], for
//! the binary and the tests. Modules are the crate's own, and so is what
//! they hold unless it is re-exported here (`unreachable_pub` keeps it so).

#![warn(unreachable_pub)]
// The map above names the crate's own modules, which `cargo doc
// --document-private-items` shows.
#![allow(rustdoc::private_intra_doc_links)]

mod accounts;
mod catalog;
pub mod cli;
mod compose;
mod config;
mod deps;
mod digest;
mod elf;
mod entrylog;
mod error;
mod execute;
mod image;
mod layer;
mod listed;
mod local;
mod manifest;
mod plan;
mod progress;
mod provenance;
mod pysource;
mod render;
mod request;
mod sbom;
mod scan;
mod scratch;
mod serve;
mod slim;
mod spool;
mod store;
mod transport;
mod tree;
mod triton;
mod verify;

// The public face: what the binary (and the tests) use. Everything else is
// the crate's own.
pub use catalog::{catalog, Catalog, CatalogEntry, CatalogOptions, Selection};
pub use compose::{compose, compose_variants, Outcome, SlimSummary, Summary};
pub use error::{Error, Result};
pub use execute::LayerReport;
pub use layer::{read_layer, Compression, LayerItem};
pub use manifest::{parse_document, parse_document_as};
pub use progress::{configure as configure_progress, human_size};
pub use request::{ComposeRequest, RawRequest, SlimOptions, StoreSettings};
pub use sbom::of_reference as sbom_of_reference;
pub use scratch::{install_signal_handlers, interrupted, interruption};
pub use serve::{serve, ServeOptions};
pub use slim::{Removed, RemovedKind};
pub use store::{Store, DEFAULT_MAX_SIZE as DEFAULT_STORE_MAX_SIZE};
pub use transport::registry::Reference as RegistryReference;
pub use transport::{open_source, ImageRef};
pub use triton::{is_driver_library, BuildInfo};
pub use verify::{verify, Report as VerifyReport};

/// ELF facts as the dependency closure reads them (for the fuzz tests).
pub use elf::{read as read_elf, ElfInfo};
