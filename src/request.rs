//! A compose request: the command line, validated and with compose.py's
//! defaults filled in, before any image is opened.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::layer::Compression;
use crate::transport::ImageRef;
use crate::triton::{self, Component, ComponentKind};

#[derive(Clone, Debug)]
pub struct ComposeRequest {
    pub min: ImageRef,
    pub full: ImageRef,
    /// compose.py's `gpu-min`, for CPU-only images with pytorch.
    pub gpu_min: Option<ImageRef>,
    /// Selected components, de-duplicated, in the order given.
    pub components: Vec<Component>,
    pub enable_gpu: bool,
    /// Where the image goes: `--output`, or the local Docker engine as
    /// `--output-name` (compose.py's result).
    pub output: ImageRef,
    pub output_name: String,
    pub work_dir: PathBuf,
    pub dry_run: bool,
    pub skip_pull: bool,
    /// Carry runtime dependencies over from full (off with --no-deps).
    pub deps: bool,
    pub compression: Compression,
    /// Seconds since the epoch for generated timestamps (SOURCE_DATE_EPOCH);
    /// `None` means the full image's creation time.
    pub timestamp: Option<u64>,
    /// Platform, registry access and the like.
    pub transport: crate::transport::Options,
    /// The content-addressed store to reuse and fill (`None`: `--no-store`).
    pub store: Option<StoreSettings>,
    /// Split new layers larger than this (`--max-layer-size`).
    pub max_layer_size: Option<u64>,
    /// Write an SPDX SBOM and attach it where the destination can hold it.
    pub sbom: bool,
    /// `--platform`: one (the transport's), several, or every platform
    /// full has; more than one composes an image index.
    pub platforms: Platforms,
    /// `--platform` was given: the sources must be of that platform.
    pub platform_given: bool,
    /// Components from directories on this machine (`--backend NAME=DIR`).
    pub local: Vec<(Component, PathBuf)>,
    /// `--variants FILE`: several images from one read of the sources;
    /// `components` and `local` are then the union of theirs.
    pub variants: Vec<Variant>,
    /// `--slim`: min cut to what the selection loads.
    pub slim: Option<SlimOptions>,
    /// `--user`: the user the server runs as; `None`, full's.
    pub user: Option<User>,
}

/// `--user UID[:GID]`: numeric, as the image config's `User` holds it
/// without needing the image's /etc/passwd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: Option<u32>,
}

impl std::fmt::Display for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.gid {
            Some(gid) => write!(f, "{}:{gid}", self.uid),
            None => write!(f, "{}", self.uid),
        }
    }
}

impl std::str::FromStr for User {
    type Err = Error;

    fn from_str(text: &str) -> Result<User> {
        let number = |part: &str| {
            part.parse::<u32>().map_err(|_| {
                Error::new(format!("--user {text:?}: {part:?} is not a numeric id")).hint(
                    "give --user UID or UID:GID as numbers, e.g. --user 1000 or --user 1000:1000",
                )
            })
        };
        let (uid, gid) = match text.split_once(':') {
            Some((uid, gid)) => (number(uid)?, Some(number(gid)?)),
            None => (number(text)?, None),
        };
        Ok(User { uid, gid })
    }
}

/// What `--slim` was asked to keep and drop beyond its analysis.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlimOptions {
    /// `--keep`: a path, a glob, or a package name.
    pub keep: Vec<String>,
    /// `--slim-drop`: globs of files no package owns, to remove.
    pub drop: Vec<String>,
    /// `--distroless`: no shell, package manager or program the selection
    /// does not run ([`crate::slim`]'s module docs).
    pub distroless: bool,
}

/// One image of a `--variants` file.
#[derive(Clone, Debug)]
pub struct Variant {
    pub name: String,
    pub components: Vec<Component>,
    pub local: Vec<(Component, PathBuf)>,
    pub output: ImageRef,
}

/// `--backend NAME` or `NAME=DIR` (a component from a directory), likewise
/// repository agents and caches: the components, and those from directories.
#[allow(clippy::type_complexity)]
fn parse_components(
    backends: &[String],
    repoagents: &[String],
    caches: &[String],
) -> Result<(Vec<Component>, Vec<(Component, PathBuf)>)> {
    let mut components: Vec<Component> = Vec::new();
    let mut from_dirs: Vec<(Component, PathBuf)> = Vec::new();
    for (kind, names) in [
        (ComponentKind::Backend, backends),
        (ComponentKind::RepoAgent, repoagents),
        (ComponentKind::Cache, caches),
    ] {
        for name in names {
            let (name, dir) = match name.split_once('=') {
                Some((name, dir)) => (name, Some(PathBuf::from(dir))),
                None => (name.as_str(), None),
            };
            let component = Component::new(kind, name)?;
            if let Some(dir) = dir {
                if !dir.is_dir() {
                    return Err(Error::new(format!(
                        "{} {name}={}: no such directory",
                        kind.flag(),
                        dir.display()
                    ))
                    .hint("name a directory holding the component's files"));
                }
                from_dirs.push((component.clone(), dir));
            }
            if !components.contains(&component) {
                components.push(component);
            }
        }
    }
    Ok((components, from_dirs))
}

/// The variants file: `[[variant]]` tables with `name`, `output` and the
/// component lists (`backends`, `repoagents`, `caches`, as the flags take them).
fn read_variants(file: &std::path::Path) -> Result<Vec<Variant>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FileVariants {
        variant: Vec<RawVariant>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawVariant {
        name: String,
        output: String,
        #[serde(default)]
        backends: Vec<String>,
        #[serde(default)]
        repoagents: Vec<String>,
        #[serde(default)]
        caches: Vec<String>,
    }
    let text = std::fs::read_to_string(file).map_err(|e| {
        Error::new(format!("cannot read --variants {}", file.display())).with_source(e)
    })?;
    let parsed: FileVariants = toml::from_str(&text).map_err(|e| {
        Error::new(format!(
            "--variants {} is not a variants file",
            file.display()
        ))
        .with_source(e)
        .hint("write [[variant]] tables with name, output, and backends/repoagents/caches lists")
    })?;
    let mut variants: Vec<Variant> = Vec::new();
    for raw in parsed.variant {
        let valid = !raw.name.is_empty()
            && !raw.name.starts_with('.')
            && raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid || variants.iter().any(|v| v.name == raw.name) {
            return Err(Error::new(format!(
                "variant name {:?} in {} is not a unique name of letters, digits, `.`, `_` and `-`",
                raw.name,
                file.display()
            )));
        }
        let (components, local) = parse_components(&raw.backends, &raw.repoagents, &raw.caches)
            .map_err(|e| e.context(format!("variant {}", raw.name)))?;
        let output: ImageRef = raw
            .output
            .parse()
            .map_err(|e: Error| e.context(format!("variant {}", raw.name)))?;
        variants.push(Variant {
            name: raw.name,
            components,
            local,
            output,
        });
    }
    if variants.is_empty() {
        return Err(Error::new(format!("{} names no variant", file.display())));
    }
    Ok(variants)
}

/// Where the store is and how large it may grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    pub dir: PathBuf,
    pub max_size: u64,
}

/// The raw values of compose.py's flags (and ours), as parsed by the CLI.
#[derive(Clone, Debug, Default)]
pub struct RawRequest {
    pub images: Vec<String>,
    pub container_version: Option<String>,
    pub backends: Vec<String>,
    pub repoagents: Vec<String>,
    pub caches: Vec<String>,
    pub enable_gpu: bool,
    pub output: Option<String>,
    pub output_name: String,
    pub work_dir: PathBuf,
    pub dry_run: bool,
    pub skip_pull: bool,
    pub no_deps: bool,
    pub compression: Compression,
    pub source_date_epoch: Option<String>,
    /// `os/arch[/variant]`.
    pub platform: Option<String>,
    pub insecure_registries: Vec<String>,
    pub authfile: Option<PathBuf>,
    /// The store (`--store`, or the default location); `None` for none.
    pub store: Option<StoreSettings>,
    /// CA certificates for registries (`--cert-dir`).
    pub cert_dir: Option<PathBuf>,
    pub max_layer_size: Option<u64>,
    /// `--sbom spdx`.
    pub sbom: bool,
    /// `--variants FILE`.
    pub variants_file: Option<PathBuf>,
    /// `--slim`, `--keep`, `--slim-drop`, `--distroless`.
    pub slim: bool,
    pub keep: Vec<String>,
    pub slim_drop: Vec<String>,
    pub distroless: bool,
    /// `--user UID[:GID]`, unparsed.
    pub user: Option<String>,
}

impl ComposeRequest {
    /// Every layer eStargz (`--compression estargz`).
    pub(crate) fn estargz(&self) -> bool {
        matches!(self.compression, Compression::Estargz { .. })
    }

    pub fn new(raw: RawRequest) -> Result<ComposeRequest> {
        let (min, full, gpu_min) = images(&raw)?;
        let (mut components, mut from_dirs) =
            parse_components(&raw.backends, &raw.repoagents, &raw.caches)?;
        let variants = match &raw.variants_file {
            None => Vec::new(),
            Some(file) => {
                if !components.is_empty() {
                    return Err(Error::new(
                        "--variants FILE names the components of each variant; --backend, --repoagent and --cache cannot be given beside it",
                    )
                    .hint("put the components in the variants file"));
                }
                let variants = read_variants(file)?;
                union_of(&variants, file, &mut components, &mut from_dirs)?;
                variants
            }
        };
        let gpu_min = gpu_min_for(&raw, &components, gpu_min)?;
        if raw.output_name.is_empty() {
            return Err(Error::new("--output-name must not be empty"));
        }
        let output = match raw.output.as_deref() {
            Some(o) => o.parse::<ImageRef>().map_err(|e| e.context("--output"))?,
            None => ImageRef::DockerDaemon(crate::transport::with_tag(&raw.output_name)),
        };
        // compose.py's --skip-pull: the images are in the local engine.
        let (min, full, gpu_min) = if raw.skip_pull {
            (local(min), local(full), gpu_min.map(local))
        } else {
            (min, full, gpu_min)
        };
        let timestamp = source_date_epoch(raw.source_date_epoch.as_deref())?;
        let platforms = Platforms::parse(raw.platform.as_deref())?;
        let mut transport = transport_options(
            None,
            &raw.insecure_registries,
            raw.authfile.as_ref(),
            raw.cert_dir.as_ref(),
        )?;
        if let Platforms::List(list) = &platforms {
            transport.platform = list[0].clone();
        }
        transport.scratch_dir = raw.work_dir.clone();
        let slim = slim_options(&raw)?;
        let user = raw.user.as_deref().map(str::parse).transpose()?;
        Ok(ComposeRequest {
            min,
            full,
            gpu_min,
            components,
            enable_gpu: raw.enable_gpu,
            output,
            output_name: raw.output_name,
            work_dir: raw.work_dir,
            dry_run: raw.dry_run,
            deps: !raw.no_deps,
            skip_pull: raw.skip_pull,
            compression: raw.compression,
            timestamp,
            transport,
            store: raw.store,
            max_layer_size: raw.max_layer_size,
            sbom: raw.sbom,
            platforms,
            platform_given: raw.platform.is_some(),
            local: from_dirs,
            variants,
            slim,
            user,
        })
    }
}

/// `--slim` with what it keeps and drops besides; those need `--slim`.
fn slim_options(raw: &RawRequest) -> Result<Option<SlimOptions>> {
    if !raw.slim {
        if let Some(flag) = [("--keep", &raw.keep), ("--slim-drop", &raw.slim_drop)]
            .iter()
            .find(|(_, values)| !values.is_empty())
            .map(|(flag, _)| flag)
        {
            return Err(
                Error::new(format!("{flag} only means something with --slim"))
                    .hint("add --slim, or leave it out"),
            );
        }
        if raw.distroless {
            return Err(Error::new(
                "--distroless removes programs from min, which only --slim's analysis can justify",
            )
            .hint("add --slim: --slim --distroless"));
        }
        return Ok(None);
    }
    Ok(Some(SlimOptions {
        keep: raw.keep.clone(),
        drop: raw.slim_drop.clone(),
        distroless: raw.distroless,
    }))
}

/// min, full and gpu-min from `--image ROLE,REF`, or compose.py's defaults
/// for `--container-version`.
fn images(raw: &RawRequest) -> Result<(ImageRef, ImageRef, Option<ImageRef>)> {
    let mut min = None;
    let mut full = None;
    let mut gpu_min = None;
    for spec in &raw.images {
        let Some((kind, reference)) = spec.split_once(',') else {
            return Err(
                Error::new(format!("--image {spec:?} must be <image-name>,<image-ref>")).hint(
                    "for example --image min,oci:./min:latest --image full,docker-archive:full.tar",
                ),
            );
        };
        let slot = match kind {
            "min" => &mut min,
            "full" => &mut full,
            "gpu-min" => &mut gpu_min,
            other => {
                return Err(
                    Error::new(format!("unsupported image-name {other:?} for --image"))
                        .hint("use min, full or gpu-min"),
                )
            }
        };
        *slot = Some(
            reference
                .parse::<ImageRef>()
                .map_err(|e| e.context(format!("--image {kind}")))?,
        );
    }
    let (min, full) = match (min, full, &raw.container_version) {
        (Some(min), Some(full), _) => (min, full),
        (None, None, Some(version)) => ngc_images(version, raw.enable_gpu),
        (None, None, None) => {
            return Err(Error::new("no images to compose from")
                .hint("pass --image min,REF and --image full,REF, or --container-version VERSION for NGC's images"))
        }
        _ => {
            return Err(Error::new("need to specify both 'full' and 'min' images if at all")
                .hint("pass both --image min,REF and --image full,REF"))
        }
    };
    Ok((min, full, gpu_min))
}

/// compose.py's defaults for a container version.
fn ngc_images(version: &str, enable_gpu: bool) -> (ImageRef, ImageRef) {
    if enable_gpu {
        (
            ImageRef::Registry(format!("nvcr.io/nvidia/tritonserver:{version}-py3-min")),
            ImageRef::Registry(format!("nvcr.io/nvidia/tritonserver:{version}-py3")),
        )
    } else {
        (
            ImageRef::Registry("ubuntu:22.04".into()),
            ImageRef::Registry(format!(
                "nvcr.io/nvidia/tritonserver:{version}-cpu-only-py3"
            )),
        )
    }
}

/// Reads the sources once for all variants: the union of their components
/// (and of those from directories, which must agree).
fn union_of(
    variants: &[Variant],
    file: &std::path::Path,
    components: &mut Vec<Component>,
    from_dirs: &mut Vec<(Component, PathBuf)>,
) -> Result<()> {
    for variant in variants {
        for component in &variant.components {
            if !components.contains(component) {
                components.push(component.clone());
            }
        }
        for local in &variant.local {
            if let Some(other) = from_dirs.iter().find(|(c, _)| *c == local.0) {
                if other.1 != local.1 {
                    return Err(Error::new(format!(
                        "{} {} comes from two directories ({} and {}) in {}",
                        local.0.kind.flag(),
                        local.0.name,
                        other.1.display(),
                        local.1.display(),
                        file.display()
                    )));
                }
            } else {
                from_dirs.push(local.clone());
            }
        }
    }
    Ok(())
}

/// gpu-min when the selection needs it (CPU-only pytorch or tensorflow):
/// as given, or NGC's for `--container-version`; dropped otherwise.
fn gpu_min_for(
    raw: &RawRequest,
    components: &[Component],
    gpu_min: Option<ImageRef>,
) -> Result<Option<ImageRef>> {
    if !triton::needs_gpu_min(components, raw.enable_gpu) {
        if gpu_min.is_some() {
            tracing::debug!(
                "--image gpu-min is only read for CPU-only pytorch or tensorflow; ignored"
            );
        }
        return Ok(None);
    }
    if gpu_min.is_some() {
        return Ok(gpu_min);
    }
    let version = raw.container_version.as_ref().ok_or_else(|| {
        Error::new(
            "a CPU-only image with the pytorch or tensorflow backend needs CUDA libraries from a GPU min image, and none was named",
        )
        .hint("pass --image gpu-min,nvcr.io/nvidia/tritonserver:<version>-py3-min (the GPU min image of the same release), or --container-version VERSION")
    })?;
    Ok(Some(ImageRef::Registry(format!(
        "nvcr.io/nvidia/tritonserver:{version}-py3-min"
    ))))
}

/// `SOURCE_DATE_EPOCH`: seconds since the epoch, if set and not empty.
fn source_date_epoch(value: Option<&str>) -> Result<Option<u64>> {
    value
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim().parse::<u64>().map_err(|_| {
                Error::new(format!(
                    "SOURCE_DATE_EPOCH={s:?} is not a number of seconds"
                ))
                .hint("set it to an integer such as `$(git log -1 --format=%ct)`, or unset it")
            })
        })
        .transpose()
}

/// Parses `os/arch[/variant]` (`linux/amd64`, `linux/arm64/v8`).
/// How images are reached, from `--platform`, `--insecure-registry` and
/// `--authfile`.
/// A registry reference read from the local engine instead (`--skip-pull`);
/// layouts and archives stay where they are.
fn local(reference: ImageRef) -> ImageRef {
    match reference {
        ImageRef::Registry(name) => ImageRef::DockerDaemon(name),
        other => other,
    }
}

pub(crate) fn transport_options(
    platform: Option<&str>,
    insecure_registries: &[String],
    authfile: Option<&PathBuf>,
    cert_dir: Option<&PathBuf>,
) -> Result<crate::transport::Options> {
    let mut transport = crate::transport::Options::default();
    if let Some(text) = platform {
        transport.platform = parse_platform(text)?;
    }
    transport.registry.insecure = insecure_registries.to_vec();
    transport.registry.authfile = authfile.cloned();
    transport.registry.cert_dir = cert_dir.cloned();
    Ok(transport)
}

/// What `--platform` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Platforms {
    /// These, in order (one: an image; more: an index).
    List(Vec<crate::image::Platform>),
    /// Every platform of full's index (`--platform all`).
    All,
}

impl Default for Platforms {
    fn default() -> Self {
        Platforms::List(vec![crate::image::Platform::host()])
    }
}

impl Platforms {
    /// `os/arch[/variant]` (comma-separated for several), or `all`.
    pub fn parse(text: Option<&str>) -> Result<Platforms> {
        let Some(text) = text else {
            return Ok(Platforms::default());
        };
        if text.trim() == "all" {
            return Ok(Platforms::All);
        }
        let mut list = Vec::new();
        for part in text.split(',').map(str::trim) {
            let platform = parse_platform(part)?;
            if list.contains(&platform) {
                return Err(Error::new(format!("--platform names {platform} twice")));
            }
            list.push(platform);
        }
        Ok(Platforms::List(list))
    }

    /// True when the result is an image index.
    pub fn is_index(&self) -> bool {
        !matches!(self, Platforms::List(list) if list.len() == 1)
    }
}

fn parse_platform(text: &str) -> Result<crate::image::Platform> {
    let parts: Vec<&str> = text.split('/').collect();
    match parts.as_slice() {
        [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => {
            Ok(crate::image::Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: parts.get(2).map(|v| v.to_string()),
            })
        }
        _ => Err(
            Error::new(format!("--platform {text:?} is not os/arch[/variant]"))
                .hint("for example --platform linux/amd64 or --platform linux/arm64/v8"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawRequest {
        RawRequest {
            enable_gpu: true,
            output_name: "tritonserver".into(),
            work_dir: ".".into(),
            compression: Compression::default(),
            ..Default::default()
        }
    }

    #[test]
    fn container_version_defaults_like_compose_py() {
        let req = ComposeRequest::new(RawRequest {
            container_version: Some("24.10".into()),
            backends: vec!["python".into(), "python".into()],
            ..raw()
        })
        .unwrap();
        assert_eq!(
            req.full,
            ImageRef::Registry("nvcr.io/nvidia/tritonserver:24.10-py3".into())
        );
        assert_eq!(
            req.min,
            ImageRef::Registry("nvcr.io/nvidia/tritonserver:24.10-py3-min".into())
        );
        assert_eq!(req.components.len(), 1);

        let cpu = ComposeRequest::new(RawRequest {
            container_version: Some("24.10".into()),
            enable_gpu: false,
            backends: vec!["pytorch".into()],
            ..raw()
        })
        .unwrap();
        assert_eq!(cpu.min, ImageRef::Registry("ubuntu:22.04".into()));
        assert_eq!(
            cpu.gpu_min,
            Some(ImageRef::Registry(
                "nvcr.io/nvidia/tritonserver:24.10-py3-min".into()
            ))
        );

        let images = vec!["min,oci:a".to_string(), "full,oci:b".to_string()];
        let no_gpu_min = ComposeRequest::new(RawRequest {
            images: images.clone(),
            enable_gpu: false,
            backends: vec!["pytorch".into()],
            ..raw()
        })
        .unwrap_err();
        assert!(
            no_gpu_min.message().contains("GPU min image"),
            "{no_gpu_min}"
        );
        assert!(no_gpu_min.hint_text().unwrap().contains("--image gpu-min,"));
        let unused = ComposeRequest::new(RawRequest {
            images: [images, vec!["gpu-min,oci:c".to_string()]].concat(),
            enable_gpu: false,
            backends: vec!["python".into()],
            ..raw()
        })
        .unwrap();
        assert_eq!(unused.gpu_min, None);
    }

    #[test]
    fn skip_pull_reads_registry_names_from_the_engine_and_the_default_output_is_the_engine() {
        let req = ComposeRequest::new(RawRequest {
            container_version: Some("24.10".into()),
            skip_pull: true,
            output_name: "my/triton".into(),
            ..raw()
        })
        .unwrap();
        assert_eq!(
            req.full,
            ImageRef::DockerDaemon("nvcr.io/nvidia/tritonserver:24.10-py3".into())
        );
        assert_eq!(
            req.output,
            ImageRef::DockerDaemon("my/triton:latest".into())
        );
        let layouts = ComposeRequest::new(RawRequest {
            images: vec!["min,oci:a".into(), "full,docker://reg/full:1".into()],
            skip_pull: true,
            output: Some("oci:out".into()),
            ..raw()
        })
        .unwrap();
        assert_eq!(
            layouts.min,
            ImageRef::Oci {
                dir: "a".into(),
                tag: None
            }
        );
        assert_eq!(layouts.full, ImageRef::DockerDaemon("reg/full:1".into()));
        assert_eq!(
            layouts.output,
            ImageRef::Oci {
                dir: "out".into(),
                tag: None
            }
        );
    }

    #[test]
    fn rejects_incomplete_or_malformed_images() {
        let only_min = ComposeRequest::new(RawRequest {
            images: vec!["min,oci:x".into()],
            ..raw()
        });
        assert!(only_min
            .unwrap_err()
            .message()
            .contains("both 'full' and 'min'"));
        let bad = ComposeRequest::new(RawRequest {
            images: vec!["mini,oci:x".into()],
            ..raw()
        });
        assert!(bad
            .unwrap_err()
            .message()
            .contains("unsupported image-name"));
        assert!(ComposeRequest::new(raw()).is_err());
        let epoch = ComposeRequest::new(RawRequest {
            images: vec!["min,oci:a".into(), "full,oci:b".into()],
            source_date_epoch: Some("yesterday".into()),
            ..raw()
        });
        assert!(epoch.unwrap_err().message().contains("SOURCE_DATE_EPOCH"));
    }
}
