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
//! [`compose::compose`] strings these together (and
//! [`compose::compose_variants`] for several images from one read of the
//! sources). [`verify`] checks an image the same way [`deps`] resolves one.

pub mod accounts;
pub mod catalog;
pub mod cli;
pub mod compose;
pub mod config;
pub mod deps;
pub mod digest;
pub mod elf;
pub mod error;
pub mod execute;
pub mod image;
pub mod layer;
pub mod local;
pub mod manifest;
pub mod plan;
pub mod progress;
pub mod provenance;
pub mod pysource;
pub mod render;
pub mod request;
pub mod sbom;
pub mod scan;
pub mod scratch;
pub mod serve;
pub mod spool;
pub mod store;
pub mod transport;
pub mod tree;
pub mod triton;
pub mod verify;
