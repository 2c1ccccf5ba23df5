//! Image references and the transports behind them, named as skopeo names
//! them: `oci:DIR[:TAG]`, `docker-archive:FILE[:NAME:TAG]`, `docker://REF` or
//! a bare registry reference, and `docker-daemon:NAME:TAG`.
//!
//! Each transport lives in its own module and knows nothing of the others;
//! this module only parses references and dispatches to them.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::digest::{CheckpointSlot, Digest, VerifyingReader};
use crate::error::{Error, Result};
use crate::image::{ImageSink, ImageSource};

pub(crate) mod docker_archive;
pub(crate) mod docker_daemon;
pub(crate) mod oci_layout;
pub(crate) mod registry;

pub(crate) use registry::RegistryOptions;

use crate::image::Platform;

/// Settings that apply to every transport.
#[derive(Clone, Debug)]
pub struct Options {
    /// The platform to pick from multi-platform images.
    pub platform: Platform,
    pub registry: RegistryOptions,
    /// Where transports that need scratch space (the Docker engine's
    /// export and load) put it.
    pub scratch_dir: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            platform: Platform::host(),
            registry: RegistryOptions::default(),
            scratch_dir: std::env::temp_dir(),
        }
    }
}

/// Where an image is read from or written to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// An OCI image layout directory, optionally naming one tag in it.
    Oci { dir: PathBuf, tag: Option<String> },
    /// A `docker save` archive, optionally naming one `name:tag` in it.
    DockerArchive {
        file: PathBuf,
        reference: Option<String>,
    },
    /// A registry reference (`nvcr.io/nvidia/tritonserver:24.10-py3`).
    Registry(String),
    /// An image in the local Docker engine.
    DockerDaemon(String),
}

impl FromStr for ImageRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let split = |rest: &str| -> (String, Option<String>) {
            match rest.split_once(':') {
                Some((path, tag)) if !tag.is_empty() => (path.to_string(), Some(tag.to_string())),
                Some((path, _)) => (path.to_string(), None),
                None => (rest.to_string(), None),
            }
        };
        let empty = |what: &str| {
            Err(Error::new(format!("{what} reference {s:?} names no path"))
                .hint(format!("write it as {what}:PATH[:TAG]")))
        };
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = split(rest);
            if dir.is_empty() {
                return empty("oci");
            }
            Ok(ImageRef::Oci {
                dir: dir.into(),
                tag,
            })
        } else if let Some(rest) = s.strip_prefix("docker-archive:") {
            let (file, reference) = split(rest);
            if file.is_empty() {
                return empty("docker-archive");
            }
            Ok(ImageRef::DockerArchive {
                file: file.into(),
                reference,
            })
        } else if let Some(rest) = s.strip_prefix("docker://") {
            Ok(ImageRef::Registry(rest.to_string()))
        } else if let Some(rest) = s.strip_prefix("docker-daemon:") {
            Ok(ImageRef::DockerDaemon(rest.to_string()))
        } else if let Some((transport, _)) = s.split_once(':').filter(|(t, rest)| {
            !t.contains(['/', '.'])
                && !rest.starts_with(|c: char| c.is_ascii_digit())
                && [
                    "dir",
                    "containers-storage",
                    "oci-archive",
                    "docker-daemon",
                    "ostree",
                    "sif",
                ]
                .contains(t)
        }) {
            Err(Error::new(format!("unsupported transport {transport:?} in {s:?}"))
                .hint("use oci:DIR[:TAG], docker-archive:FILE[:NAME:TAG], docker://REF or a registry reference"))
        } else if s.is_empty() {
            Err(Error::new("empty image reference"))
        } else {
            Ok(ImageRef::Registry(s.to_string()))
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Oci { dir, tag } => {
                write!(f, "oci:{}", dir.display())?;
                tag.iter().try_for_each(|t| write!(f, ":{t}"))
            }
            ImageRef::DockerArchive { file, reference } => {
                write!(f, "docker-archive:{}", file.display())?;
                reference.iter().try_for_each(|r| write!(f, ":{r}"))
            }
            ImageRef::Registry(r) => write!(f, "docker://{r}"),
            ImageRef::DockerDaemon(r) => write!(f, "docker-daemon:{r}"),
        }
    }
}

/// Opens an image for reading.
pub fn open_source(reference: &ImageRef, options: &Options) -> Result<Box<dyn ImageSource>> {
    let name = reference.to_string();
    match reference {
        ImageRef::Oci { dir, tag } => Ok(Box::new(oci_layout::OciLayoutSource::open(
            dir,
            tag.as_deref(),
            &options.platform,
            name,
        )?)),
        ImageRef::DockerArchive { file, reference } => Ok(Box::new(
            docker_archive::DockerArchiveSource::open(file, reference.as_deref(), name)?,
        )),
        ImageRef::Registry(text) => Ok(Box::new(registry::RegistrySource::open(
            &registry::Reference::parse(text)?,
            &options.platform,
            &options.registry,
        )?)),
        ImageRef::DockerDaemon(image) => Ok(Box::new(
            docker_daemon::open_sources(&[image], &options.scratch_dir)?
                .pop()
                .expect("one source per name"),
        )),
    }
}

/// The platforms a multi-platform image (an index) offers, in its order;
/// for a single image, its own.
pub(crate) fn platforms(reference: &ImageRef, options: &Options) -> Result<Vec<Platform>> {
    let listed = match reference {
        ImageRef::Oci { dir, tag } => oci_layout::platforms(dir, tag.as_deref())?,
        ImageRef::Registry(text) => {
            registry::platforms(&registry::Reference::parse(text)?, &options.registry)?
        }
        _ => None,
    };
    if let Some(list) = listed {
        // Attestations (BuildKit's `unknown/unknown` entries) are no platform.
        return Ok(list.into_iter().filter(|p| p.os != "unknown").collect());
    }
    let source = open_source(reference, options)?;
    Ok(vec![Platform::of_config(&source.image().config)])
}

/// Opens several images for reading, in order, each error in the context
/// of its label ("--image min"). Those in the local Docker engine are
/// exported together, so layers they share are read once.
pub(crate) fn open_sources(
    references: &[(&str, &ImageRef)],
    options: &Options,
) -> Result<Vec<Box<dyn ImageSource>>> {
    let daemon_names: Vec<&str> = references
        .iter()
        .filter_map(|(_, r)| match r {
            ImageRef::DockerDaemon(name) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let mut from_engine = if daemon_names.is_empty() {
        Vec::new()
    } else {
        docker_daemon::open_sources(&daemon_names, &options.scratch_dir)?
    }
    .into_iter();
    references
        .iter()
        .map(|(label, r)| match r {
            ImageRef::DockerDaemon(_) => Ok(Box::new(
                from_engine.next().expect("one source per engine image"),
            ) as Box<dyn ImageSource>),
            other => open_source(other, options).map_err(|e| e.context(*label)),
        })
        .collect()
}

/// Opens a destination, refusing one that would overwrite an existing image.
/// `default_name` (compose.py's `--output-name`) names the image where the
/// reference does not.
pub(crate) fn open_sink(
    reference: &ImageRef,
    default_name: &str,
    options: &Options,
) -> Result<Box<dyn ImageSink>> {
    let name = reference.to_string();
    match reference {
        ImageRef::Oci { dir, tag } => {
            let tag = tag.clone().unwrap_or_else(|| tag_of(default_name));
            Ok(Box::new(oci_layout::OciLayoutSink::create(
                dir, &tag, name,
            )?))
        }
        ImageRef::DockerArchive { file, reference } => {
            let reference = with_tag(reference.as_deref().unwrap_or(default_name));
            Ok(Box::new(docker_archive::DockerArchiveSink::create(
                file, &reference, name,
            )?))
        }
        ImageRef::Registry(text) => Ok(Box::new(registry::RegistrySink::create(
            &registry::Reference::parse(text)?,
            &options.registry,
        )?)),
        ImageRef::DockerDaemon(image) => Ok(Box::new(docker_daemon::DaemonSink::create(
            &with_tag(image),
            &options.scratch_dir,
        )?)),
    }
}

/// The directory an output path will be created in, which must exist.
pub(crate) fn output_parent(path: &std::path::Path) -> Result<PathBuf> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(Error::new(format!("{} does not exist", parent.display()))
            .hint("create the directory the --output goes into first"));
    }
    Ok(parent)
}

/// `name` with `:latest` added when it has no tag.
pub(crate) fn with_tag(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || last.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

fn tag_of(name: &str) -> String {
    let full = with_tag(name);
    full.rsplit_once(':')
        .map(|(_, t)| t.to_string())
        .unwrap_or_else(|| "latest".into())
}

/// Makes rustls's ring provider the process's, once, before any TLS client
/// or server is built (reqwest and axum-server are built without one).
pub(crate) fn tls_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // Taken already (by an embedding program): that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A source's layer blob, checked against its digest and size as it is
/// read; its checkpoints go to `checkpoints` (see
/// [`crate::image::ImageSource::open_layer_checked`]).
pub(crate) fn verified_layer<R: std::io::Read>(
    reader: R,
    source: &str,
    index: usize,
    (digest, size): (&Digest, u64),
    checkpoints: Option<CheckpointSlot>,
) -> VerifyingReader<R> {
    VerifyingReader::new(
        reader,
        digest.clone(),
        Some(size),
        format!("{source} layer {}", index + 1),
    )
    .keeping(checkpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_skopeo_style_references() {
        assert_eq!(
            "oci:/tmp/x:24.10".parse::<ImageRef>().unwrap(),
            ImageRef::Oci {
                dir: "/tmp/x".into(),
                tag: Some("24.10".into())
            }
        );
        assert_eq!(
            "docker-archive:full.tar:tritonserver:full"
                .parse::<ImageRef>()
                .unwrap(),
            ImageRef::DockerArchive {
                file: "full.tar".into(),
                reference: Some("tritonserver:full".into())
            }
        );
        assert_eq!(
            "nvcr.io/nvidia/tritonserver:24.10-py3"
                .parse::<ImageRef>()
                .unwrap(),
            ImageRef::Registry("nvcr.io/nvidia/tritonserver:24.10-py3".into())
        );
        assert!("oci:".parse::<ImageRef>().is_err());
        assert!("containers-storage:foo".parse::<ImageRef>().is_err());
        assert_eq!(with_tag("tritonserver"), "tritonserver:latest");
        assert_eq!(
            with_tag("localhost:5000/triton"),
            "localhost:5000/triton:latest"
        );
        assert_eq!(with_tag("triton:1"), "triton:1");
        assert_eq!(tag_of("tritonserver"), "latest");
    }
}
