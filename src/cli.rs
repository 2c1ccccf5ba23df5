//! The command line: compose.py's flags with their names and meanings
//! unchanged, plus `--output` and the compression settings.

use std::path::PathBuf;

use clap::{ArgAction, Parser, ValueEnum};

use crate::layer::Compression;
use crate::request::RawRequest;

#[derive(Parser, Debug)]
#[command(
    name = "triton-compose",
    version,
    about = "Compose a slim Triton Inference Server image from a full and a min image, without a Docker daemon.",
    long_about = "Compose a slim Triton Inference Server image from a full and a min image, without a Docker \
daemon. Takes compose.py's command line: the chosen backends, repository agents and caches are lifted \
out of the full image and laid on top of the min image's untouched layers.",
    after_help = "Image references: oci:DIR[:TAG], docker-archive:FILE[:NAME:TAG], docker://REF or a bare registry REF.\n\
To check an image's shared libraries and python imports: triton-compose verify IMAGE [--json]\n\
What a full image offers: triton-compose catalog REF; an image's SBOM: triton-compose sbom REF\n\
Example:\n  triton-compose --backend python --cache local --enable-gpu=false \\\n    \
--image min,oci:min:latest --image full,docker-archive:full.tar --output docker-archive:out.tar"
)]
pub struct Cli {
    /// Disable console output.
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Enable verbose output.
    #[arg(short, long)]
    pub verbose: bool,

    /// Name for the generated image (tag `latest` unless given).
    #[arg(long, default_value = "tritonserver")]
    pub output_name: String,

    /// Generated Dockerfile.compose (and scratch files) are placed here.
    #[arg(long, default_value = ".")]
    pub work_dir: PathBuf,

    /// Container version for NGC's default images, used when --image is not given.
    #[arg(long)]
    pub container_version: Option<String>,

    /// Image to compose from, as <image-name>,<ref>; <image-name> is min, full or gpu-min.
    /// Both min and full are needed. Overrides --container-version.
    #[arg(long = "image", value_name = "NAME,REF", action = ArgAction::Append)]
    pub images: Vec<String>,

    /// Whether the composed image has GPU support, as the full image was built
    /// (compose.py's hidden flag; default true).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "true",
          default_missing_value = "true", value_parser = parse_compose_bool)]
    pub enable_gpu: bool,

    /// Include this backend (repeatable).
    #[arg(long = "backend", value_name = "NAME", action = ArgAction::Append)]
    pub backends: Vec<String>,

    /// Include this repository agent (repeatable).
    #[arg(long = "repoagent", value_name = "NAME", action = ArgAction::Append)]
    pub repoagents: Vec<String>,

    /// Include this cache (repeatable).
    #[arg(long = "cache", value_name = "NAME", action = ArgAction::Append)]
    pub caches: Vec<String>,

    /// The images named by --image (or implied by --container-version) are
    /// in the local Docker engine already (compose.py's meaning): read them
    /// from there, not from a registry.
    #[arg(long)]
    pub skip_pull: bool,

    /// Only write Dockerfile.compose; build nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Do not carry runtime dependencies (libraries, dpkg and python
    /// packages) over from the full image; install them yourself.
    #[arg(long)]
    pub no_deps: bool,

    #[command(flatten)]
    pub slim: SlimFlags,

    /// Where to write the image: oci:DIR[:TAG], docker-archive:FILE[:NAME:TAG],
    /// a registry (docker://REF or a bare REF) or docker-daemon:NAME[:TAG].
    /// Default: the local Docker engine, as --output-name (compose.py's result).
    #[arg(long, value_name = "DEST")]
    pub output: Option<String>,

    #[command(flatten)]
    pub access: Access,

    /// Compression of the new layers.
    #[arg(long, value_enum, default_value_t = CompressionKind::Gzip)]
    pub compression: CompressionKind,

    /// Compression level (gzip and estargz: libdeflate's 0-12, default 4;
    /// zstd 1-22, default 3).
    #[arg(long, value_name = "N")]
    pub compression_level: Option<i32>,

    #[command(flatten)]
    pub store: StoreFlags,

    /// Several images in one run, each a [[variant]] with name, output and
    /// backends/repoagents/caches (TOML): the sources are read once, and
    /// layers they share are built once.
    #[arg(long, value_name = "FILE", conflicts_with = "output")]
    pub variants: Option<PathBuf>,

    /// Print one JSON document on stdout saying what was written (outputs,
    /// digests, layers, sizes, dependencies added, time); logs stay on stderr.
    #[arg(long)]
    pub json: bool,

    /// Split any new layer larger than SIZE (compressed) into several, by
    /// path, for registries that cap layer sizes (e.g. 2G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_layer_size: Option<u64>,

    /// Run the server as this user (numeric, e.g. 1000 or 1000:1000; 1000
    /// is Triton's triton-server account). /tmp stays writable for it.
    /// Default: as full's config says.
    #[arg(long, value_name = "UID[:GID]")]
    pub user: Option<String>,

    /// An SPDX 2.3 SBOM of the result: attached as an OCI referrer (registry,
    /// OCI layout) and written to --work-dir as sbom.spdx.json.
    #[arg(long, value_enum, default_value_t = SbomKind::Spdx)]
    pub sbom: SbomKind,
}

/// `--slim` and what it keeps and drops besides its analysis.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SlimFlags {
    /// Cut min to what the composed image loads: packages, python
    /// distributions and unowned shared libraries nothing needs are removed
    /// (see the README for what is kept and why); the result is checked.
    #[arg(long)]
    pub slim: bool,

    /// With --slim, keep this too: a path, a glob (/usr/local/lib/libfoo*)
    /// or a dpkg package name (repeatable).
    #[arg(long, value_name = "PATH|GLOB|PACKAGE", action = ArgAction::Append)]
    pub keep: Vec<String>,

    /// With --slim, also remove the files no package owns that this glob
    /// names (repeatable).
    #[arg(long = "slim-drop", value_name = "GLOB", action = ArgAction::Append)]
    pub slim_drop: Vec<String>,

    /// With --slim, also remove the shell, apt, dpkg's programs and every
    /// program nothing in the selection runs (a backend that runs a shell,
    /// such as python, keeps it, and the summary says why); the entrypoint
    /// becomes tritonserver itself.
    #[arg(long)]
    pub distroless: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SbomKind {
    Spdx,
    None,
}

/// `triton-compose catalog REF`: what a full image offers, and what each
/// part costs as a compose writes it.
#[derive(Parser, Debug)]
#[command(
    name = "triton-compose catalog",
    version,
    about = "List the core, backends, repository agents and caches of a full image, each with its size, its size as written, and the dependencies it would bring."
)]
pub struct CatalogCli {
    /// The full image (any transport).
    pub image: String,

    /// The min image a compose would use: dependencies are what it lacks
    /// (without it, none are counted).
    #[arg(long, value_name = "REF")]
    pub min: Option<String>,

    /// The GPU min image a compose would copy CUDA libraries from, for
    /// CPU-only pytorch and tensorflow (without it, their rows say so).
    #[arg(long, value_name = "REF")]
    pub gpu_min: Option<String>,

    #[arg(long)]
    pub json: bool,

    /// A selection whose savings against full are shown.
    #[arg(long = "backend", value_name = "NAME", action = ArgAction::Append)]
    pub backends: Vec<String>,

    #[arg(long = "repoagent", value_name = "NAME", action = ArgAction::Append)]
    pub repoagents: Vec<String>,

    #[arg(long = "cache", value_name = "NAME", action = ArgAction::Append)]
    pub caches: Vec<String>,

    /// The selection's size with --slim too (needs --min and a selection).
    #[command(flatten)]
    pub slim: SlimFlags,

    #[command(flatten)]
    pub verbosity: Verbosity,

    #[arg(long, value_name = "DIR", default_value = ".")]
    pub work_dir: PathBuf,

    #[command(flatten)]
    pub store: StoreFlags,

    #[command(flatten)]
    pub access: Access,
}

impl CatalogCli {
    /// The request a catalog reads through: full (and min), the selection,
    /// and `enable_gpu` as full says.
    pub fn into_raw(self, enable_gpu: bool) -> RawRequest {
        let min = self.min.clone().unwrap_or_else(|| self.image.clone());
        let mut images = vec![format!("min,{min}"), format!("full,{}", self.image)];
        images.extend(self.gpu_min.iter().map(|g| format!("gpu-min,{g}")));
        RawRequest {
            images,
            backends: self.backends,
            repoagents: self.repoagents,
            caches: self.caches,
            enable_gpu,
            output_name: "tritonserver".into(),
            work_dir: self.work_dir,
            platform: self.access.platform,
            insecure_registries: self.access.insecure_registries,
            authfile: self.access.authfile,
            cert_dir: self.access.cert_dir,
            store: self.store.settings(),
            slim: self.slim.slim,
            keep: self.slim.keep,
            slim_drop: self.slim.slim_drop,
            distroless: self.slim.distroless,
            ..Default::default()
        }
    }
}

/// `triton-compose serve`: a registry endpoint where every combination of
/// components is a tag.
#[derive(Parser, Debug)]
#[command(
    name = "triton-compose serve",
    version,
    about = "Serve a read-only OCI registry where every combination of full's components is a tag \
(python.onnxruntime, latest), composed on first pull from min and full.",
    after_help = "Example:\n  triton-compose serve --image min,REF --image full,REF --listen 127.0.0.1:5000\n  \
docker pull 127.0.0.1:5000/tritonserver:python.onnxruntime"
)]
pub struct ServeCli {
    /// min,REF and full,REF (and gpu-min,REF for CPU-only pytorch), as compose takes them.
    #[arg(long = "image", value_name = "ROLE,REF", action = ArgAction::Append, required = true)]
    pub images: Vec<String>,

    /// Address to listen on (loopback unless you mean it).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5000")]
    pub listen: std::net::SocketAddr,

    /// Where composed images are kept (default: serve/ in the store's directory).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Stop after this many seconds without a request.
    #[arg(long, value_name = "SECONDS")]
    pub exit_after_idle: Option<u64>,

    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require HTTP Basic credentials from this htpasswd file (bcrypt: `htpasswd -B`).
    #[arg(long, value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,

    /// Every this many seconds, check whether min's or full's tag moved; if
    /// so, serve tags from the new images (digests of the old stay served).
    #[arg(long, value_name = "SECONDS")]
    pub refresh: Option<u64>,

    /// Whether the composed images have GPU support; must match how full
    /// was built (default: as full says).
    #[arg(long, value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true", value_parser = parse_compose_bool)]
    pub enable_gpu: Option<bool>,

    /// Compression of the new layers.
    #[arg(long, value_enum, default_value_t = CompressionKind::Gzip)]
    pub compression: CompressionKind,

    /// Compression level (gzip and estargz: libdeflate's 0-12, default 4;
    /// zstd 1-22, default 3).
    #[arg(long, value_name = "N")]
    pub compression_level: Option<i32>,

    /// An SPDX 2.3 SBOM of each composed image, attached as an OCI referrer.
    #[arg(long, value_enum, default_value_t = SbomKind::Spdx)]
    pub sbom: SbomKind,

    /// Every tag is composed with --slim (and its --keep, --slim-drop,
    /// --distroless).
    #[command(flatten)]
    pub slim: SlimFlags,

    /// How many new selections may wait to be composed at once (composes
    /// run one at a time); past that, clients get 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_pending: usize,

    /// Keep the composed images under this size (K, M, G, T): past it, the
    /// least recently served tags are evicted, and composed again (to the
    /// same digest) when asked for. The store has its own bound.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "50G")]
    pub state_max_size: u64,

    /// Do not build the core's and each component's layers into the store
    /// once ready (by default they are, in the background, pulls first, so
    /// that the first pull of any tag only assembles layers).
    #[arg(long)]
    pub no_prebuild: bool,

    /// On SIGTERM or SIGINT, stop accepting and give in-flight responses
    /// this long to finish (a second signal stops at once).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub shutdown_grace: u64,

    #[command(flatten)]
    pub verbosity: Verbosity,

    #[command(flatten)]
    pub store: StoreFlags,

    #[command(flatten)]
    pub access: Access,
}

impl ServeCli {
    /// The compression `--compression` and `--compression-level` ask for.
    pub fn compression(&self) -> Result<Compression, String> {
        compression(self.compression, self.compression_level)
    }

    /// The request every selection composes through.
    pub fn into_raw(
        self,
        enable_gpu: bool,
        compression: Compression,
        state_dir: &std::path::Path,
    ) -> RawRequest {
        RawRequest {
            images: self.images,
            enable_gpu,
            compression,
            sbom: self.sbom == SbomKind::Spdx,
            output_name: "tritonserver".into(),
            work_dir: state_dir.join("work"),
            platform: self.access.platform,
            insecure_registries: self.access.insecure_registries,
            authfile: self.access.authfile,
            cert_dir: self.access.cert_dir,
            store: self.store.settings(),
            slim: self.slim.slim,
            keep: self.slim.keep,
            slim_drop: self.slim.slim_drop,
            distroless: self.slim.distroless,
            ..Default::default()
        }
    }
}

/// `triton-compose store du|prune`: look after the store.
#[derive(Parser, Debug)]
#[command(
    name = "triton-compose store",
    version,
    about = "Show or trim the content-addressed store."
)]
pub struct StoreCli {
    #[command(subcommand)]
    pub command: StoreCommand,

    /// The store (default as for composes).
    #[arg(long, value_name = "DIR", global = true)]
    pub store: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum StoreCommand {
    /// Print what the store holds.
    Du {
        #[arg(long)]
        json: bool,
    },
    /// Remove dead runs' staging files and the least recently used entries
    /// until the store is at most SIZE (default: the default bound); `--all`
    /// empties it.
    Prune {
        #[arg(long, value_name = "SIZE", value_parser = parse_size, conflicts_with = "all")]
        max_size: Option<u64>,
        #[arg(long)]
        all: bool,
    },
}

/// Parses a size: bytes, or with a K, M, G or T suffix (powers of 1024).
pub fn parse_size(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let (digits, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => value.split_at(i),
        None => (value, ""),
    };
    let shift = match unit
        .trim_end_matches(['i', 'B', 'b'])
        .to_ascii_uppercase()
        .as_str()
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => {
            return Err(format!(
                "{value:?} is not a size (write e.g. 20G, 500M or 1048576)"
            ))
        }
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{value:?} is not a size (write e.g. 20G, 500M or 1048576)"))?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{value:?} is too large"))
}

/// The store a command uses: `--store`, else the default location.
pub fn store_dir(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(crate::store::Store::default_dir)
}

/// `triton-compose verify IMAGE`.
#[derive(Parser, Debug)]
#[command(
    name = "triton-compose verify",
    version,
    about = "Check that every ELF file under /opt/tritonserver, and the entrypoint, finds its shared \
libraries inside the image, and that the python modules its backends import are there. \
Exits non-zero when something is missing."
)]
pub struct VerifyCli {
    /// The image: oci:DIR[:TAG], docker-archive:FILE[:NAME:TAG], docker://REF or a bare registry REF.
    pub image: String,

    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub verbosity: Verbosity,

    #[command(flatten)]
    pub access: Access,
}

/// `triton-compose sbom IMAGE`.
#[derive(Parser, Debug)]
#[command(
    name = "triton-compose sbom",
    version,
    about = "Print an image's SPDX 2.3 SBOM (JSON): the one attached to it as an OCI referrer \
(registries, OCI layouts), else one computed by reading the image."
)]
pub struct SbomCli {
    /// The image: oci:DIR[:TAG], docker-archive:FILE[:NAME:TAG], docker-daemon:NAME, docker://REF or a bare registry REF.
    pub image: String,

    /// Compute it from the image even when one is attached.
    #[arg(long)]
    pub compute: bool,

    #[command(flatten)]
    pub verbosity: Verbosity,

    #[command(flatten)]
    pub access: Access,
}

/// `-q` and `-v`, for the commands besides compose.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct Verbosity {
    /// Disable console output but the command's result.
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Enable verbose output.
    #[arg(short, long)]
    pub verbose: bool,
}

/// The store, the same for every command that reads images through it.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct StoreFlags {
    /// The content-addressed store of layer indexes and built layers that
    /// later composes reuse (default: TRITON_COMPOSE_STORE, else
    /// $XDG_CACHE_HOME/triton-compose/store, else ~/.cache/triton-compose/store).
    #[arg(long, value_name = "DIR", conflicts_with = "no_store")]
    pub store: Option<PathBuf>,

    /// Neither read nor fill the store.
    #[arg(long)]
    pub no_store: bool,

    /// Evict the least recently used store entries past this size (e.g. 20G, 500M).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub store_max_size: Option<u64>,
}

impl StoreFlags {
    /// Where the store is and its bound; `None` with `--no-store` (or when
    /// no default location can be found).
    pub fn settings(&self) -> Option<crate::request::StoreSettings> {
        if self.no_store {
            return None;
        }
        store_dir(self.store.clone()).map(|dir| crate::request::StoreSettings {
            dir,
            max_size: self
                .store_max_size
                .unwrap_or(crate::store::DEFAULT_MAX_SIZE),
        })
    }
}

/// How images are reached, the same for every command.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Access {
    /// Platform to pick from multi-platform images (default: this machine's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,

    /// Registry (HOST[:PORT]) that may be reached over plain HTTP, with a
    /// warning (repeatable). A registry on this machine may use it when it
    /// has no TLS at all.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]", action = ArgAction::Append)]
    pub insecure_registries: Vec<String>,

    /// Registry credentials file (containers-auth.json format); default
    /// REGISTRY_AUTH_FILE, then Docker's config and credential helpers.
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,

    /// CA certificates (*.crt) for registries, beside the system's, the
    /// per-host certs.d directories and SSL_CERT_FILE.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
}

impl Access {
    pub fn options(&self) -> crate::error::Result<crate::transport::Options> {
        crate::request::transport_options(
            self.platform.as_deref(),
            &self.insecure_registries,
            self.authfile.as_ref(),
            self.cert_dir.as_ref(),
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompressionKind {
    Gzip,
    Zstd,
    /// gzip that a lazy pull (containerd's stargz snapshotter) can mount,
    /// every layer min's too, with what the server loads first up front.
    Estargz,
}

/// compose.py's `lambda x: str(x).lower() == "true"`.
fn parse_compose_bool(value: &str) -> Result<bool, String> {
    Ok(value.eq_ignore_ascii_case("true"))
}

/// The compression a kind and an optional level name.
fn compression(kind: CompressionKind, level: Option<i32>) -> Result<Compression, String> {
    match (kind, level) {
        (CompressionKind::Gzip, None) => Ok(Compression::default()),
        (CompressionKind::Gzip, Some(level))
            if u32::try_from(level).is_ok_and(|l| crate::layer::GZIP_LEVELS.contains(&l)) =>
        {
            Ok(Compression::Gzip {
                level: level as u32,
            })
        }
        (CompressionKind::Estargz, None) => Ok(Compression::Estargz {
            level: crate::layer::DEFAULT_GZIP_LEVEL,
        }),
        (CompressionKind::Estargz, Some(level))
            if u32::try_from(level).is_ok_and(|l| crate::layer::GZIP_LEVELS.contains(&l)) =>
        {
            Ok(Compression::Estargz {
                level: level as u32,
            })
        }
        (CompressionKind::Zstd, None) => Ok(Compression::Zstd { level: 3 }),
        (CompressionKind::Zstd, Some(level @ 1..=22)) => Ok(Compression::Zstd { level }),
        (kind, Some(level)) => Err(format!(
            "--compression-level {level} is out of range for {kind:?}"
        )),
    }
}

impl Cli {
    pub fn compression(&self) -> Result<Compression, String> {
        compression(self.compression, self.compression_level)
    }

    pub fn into_raw(
        self,
        compression: Compression,
        source_date_epoch: Option<String>,
    ) -> RawRequest {
        RawRequest {
            images: self.images,
            container_version: self.container_version,
            backends: self.backends,
            repoagents: self.repoagents,
            caches: self.caches,
            enable_gpu: self.enable_gpu,
            output: self.output,
            output_name: self.output_name,
            work_dir: self.work_dir,
            dry_run: self.dry_run,
            skip_pull: self.skip_pull,
            no_deps: self.no_deps,
            compression,
            source_date_epoch,
            platform: self.access.platform,
            insecure_registries: self.access.insecure_registries,
            authfile: self.access.authfile,
            cert_dir: self.access.cert_dir,
            max_layer_size: self.max_layer_size,
            sbom: self.sbom == SbomKind::Spdx,
            variants_file: self.variants,
            store: self.store.settings(),
            slim: self.slim.slim,
            keep: self.slim.keep,
            slim_drop: self.slim.slim_drop,
            distroless: self.slim.distroless,
            user: self.user,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_levels_are_libdeflate_s_and_zstd_s() {
        let gzip = |level| compression(CompressionKind::Gzip, level);
        assert_eq!(gzip(None), Ok(Compression::Gzip { level: 4 }));
        assert_eq!(gzip(Some(0)), Ok(Compression::Gzip { level: 0 }));
        assert_eq!(gzip(Some(12)), Ok(Compression::Gzip { level: 12 }));
        for bad in [-1, 13, 100] {
            assert!(
                gzip(Some(bad)).unwrap_err().contains("out of range"),
                "{bad}"
            );
        }
        let zstd = |level| compression(CompressionKind::Zstd, level);
        assert_eq!(zstd(None), Ok(Compression::Zstd { level: 3 }));
        assert!(zstd(Some(23)).is_err());
        let estargz = |level| compression(CompressionKind::Estargz, level);
        assert_eq!(estargz(None), Ok(Compression::Estargz { level: 4 }));
        assert_eq!(estargz(Some(9)), Ok(Compression::Estargz { level: 9 }));
        assert!(estargz(Some(13)).is_err());
    }

    #[test]
    fn accepts_compose_py_command_lines() {
        let cli = Cli::try_parse_from([
            "triton-compose",
            "--backend",
            "python",
            "--backend",
            "onnxruntime",
            "--repoagent",
            "checksum",
            "--cache",
            "local",
            "--image",
            "min,oci:m",
            "--image",
            "full,oci:f",
            "--enable-gpu",
            "false",
            "--dry-run",
            "-q",
            "--work-dir",
            "/tmp/w",
        ])
        .unwrap();
        assert_eq!(cli.backends, ["python", "onnxruntime"]);
        assert!(!cli.enable_gpu);
        assert!(cli.dry_run && cli.quiet);
        let cli = Cli::try_parse_from(["triton-compose", "--enable-gpu"]).unwrap();
        assert!(cli.enable_gpu);
        let cli = Cli::try_parse_from(["triton-compose", "--enable-gpu=False"]).unwrap();
        assert!(!cli.enable_gpu);
        assert!(Cli::try_parse_from(["triton-compose"]).unwrap().enable_gpu);
        assert!(Cli::try_parse_from(["triton-compose", "-q", "-v"]).is_err());
    }
}
