//! Everything this program knows about Triton's layout and about what
//! compose.py (and build.py's `dockerfile_prepare_container_linux`) do:
//! which paths make the core, where backends, repository agents and caches
//! live, which environment and labels a composed image gets, and the
//! `triton-server` account. The generic image machinery knows none of this.

use std::collections::HashMap;

use serde_json::Value;

use crate::config::{self, ConfigChange};
use crate::error::{Error, Result};
use crate::layer::ImagePath;
use crate::pysource;
use crate::tree::MergedTree;

/// Where Triton lives inside the images.
pub(crate) const INSTALL_DIR: &str = "opt/tritonserver";

/// NVIDIA's container entrypoint directory.
pub(crate) const NVIDIA_DIR: &str = "opt/nvidia";
pub(crate) const ENTRYPOINT_D: &str = "opt/nvidia/entrypoint.d";

/// NGC's entrypoint, `/opt/nvidia/nvidia_entrypoint.sh`: a bash script
/// (`#!/bin/bash`) that runs every file of [`ENTRYPOINT_D`] before the
/// command (as NGC's images have it since 2020; compose.py keeps it as the
/// CPU-only image's ENTRYPOINT).
pub(crate) const NVIDIA_ENTRYPOINT: &str = "opt/nvidia/nvidia_entrypoint.sh";

/// What a container's start reads before the server runs, beside the
/// entrypoint itself, when the entrypoint is NGC's ([`NVIDIA_ENTRYPOINT`]):
/// its interpreter, and the directory whose files it runs.
pub(crate) fn entrypoint_reads(entrypoint: &ImagePath) -> Option<(ImagePath, ImagePath)> {
    (entrypoint.as_bytes() == NVIDIA_ENTRYPOINT.as_bytes()).then(|| {
        (
            ImagePath::from_static("bin/bash"),
            ImagePath::from_static(ENTRYPOINT_D),
        )
    })
}

/// The account compose.py creates, with its fixed uid and gid.
pub(crate) const SERVER_USER: &str = "triton-server";
pub(crate) const SERVER_UID: u64 = 1000;
/// Users compose.py deletes first (`userdel ... || true`).
pub(crate) const REMOVED_USERS: [&str; 2] = ["tensorrt-server", "ubuntu"];

/// The account databases the user step edits.
pub(crate) const ACCOUNT_FILES: [&str; 4] =
    ["etc/passwd", "etc/group", "etc/shadow", "etc/gshadow"];

/// The core items compose.py copies, and whether an image without them can
/// still be called a Triton image.
pub(crate) const CORE_ITEMS: [(&str, bool); 6] = [
    ("LICENSE", false),
    ("TRITON_VERSION", false),
    ("NVIDIA_Deep_Learning_Container_License.pdf", false),
    ("bin", true),
    ("lib", true),
    ("include", false),
];

/// The shell step compose.py runs to create the account; rendered into
/// Dockerfile.compose, executed here as direct edits of /etc files.
pub(crate) const USER_SCRIPT: &str = "userdel tensorrt-server > /dev/null 2>&1 || true \\\n      && userdel ubuntu > /dev/null 2>&1 || true \\\n      && if ! id -u $TRITON_SERVER_USER > /dev/null 2>&1 ; then \\\n          useradd $TRITON_SERVER_USER; \\\n        fi \\\n      && [ `id -u $TRITON_SERVER_USER` -eq 1000 ] \\\n      && [ `id -g $TRITON_SERVER_USER` -eq 1000 ]";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ComponentKind {
    Backend,
    RepoAgent,
    Cache,
}

impl ComponentKind {
    pub const ALL: [ComponentKind; 3] = [Self::Backend, Self::RepoAgent, Self::Cache];

    /// The directory under /opt/tritonserver holding components of this kind.
    pub fn dir(self) -> &'static str {
        match self {
            Self::Backend => "backends",
            Self::RepoAgent => "repoagents",
            Self::Cache => "caches",
        }
    }

    /// The compose.py flag that selects one.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Backend => "--backend",
            Self::RepoAgent => "--repoagent",
            Self::Cache => "--cache",
        }
    }

    /// The short name catalog and serve's page print ("backend",
    /// "repoagent", "cache"): compose.py's flag without its dashes.
    pub fn name(self) -> &'static str {
        &self.flag()[2..]
    }

    pub fn noun(self) -> &'static str {
        match self {
            Self::Backend => "backend",
            Self::RepoAgent => "repository agent",
            Self::Cache => "cache",
        }
    }
}

/// Directories the server writes to, which must stay writable whatever
/// user it runs as (`--user`), with the mode they get: /tmp, where the
/// python backend unpacks the `EXECUTION_ENV_PATH` archives of models
/// (python_backend's src/pb_env.cc extracts them under /tmp) and where
/// Triton's shared-memory helpers and python's tempfile put their files.
pub(crate) const WRITABLE_DIRS: &[(&str, u32)] = &[("tmp", 0o1777)];

/// A selected backend, repository agent or cache.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Component {
    pub kind: ComponentKind,
    pub name: String,
}

impl Component {
    /// Validates a name as given on the command line: one path component.
    /// Names are kept to what Triton's own use (`onnxruntime`,
    /// `tensorrt_llm`, `pytorch-2`): letters, digits, `.`, `_`, `-`, `+`,
    /// not starting with a dot. So a name can be neither a path nor
    /// anything a Dockerfile line would read differently.
    pub fn new(kind: ComponentKind, name: &str) -> Result<Component> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._-+".contains(c);
        if name.is_empty() || name.starts_with('.') || !name.chars().all(allowed) {
            return Err(
                Error::new(format!("{} {name:?} is not a valid name", kind.flag())).hint(format!(
                    "names are letters, digits, `.`, `_`, `-` and `+`: name a {} directory, e.g. {} python",
                    kind.noun(),
                    kind.flag()
                )),
            );
        }
        Ok(Component {
            kind,
            name: name.to_string(),
        })
    }

    pub fn path(&self) -> ImagePath {
        kind_dir(self.kind).join(self.name.as_bytes())
    }
}

pub(crate) fn install_dir() -> ImagePath {
    ImagePath::from_static(INSTALL_DIR)
}

pub(crate) fn kind_dir(kind: ComponentKind) -> ImagePath {
    install_dir().join(kind.dir().as_bytes())
}

/// What the full image's config says about the Triton build it holds,
/// read as compose.py reads it with `docker inspect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: String,
    pub container_version: String,
    pub gpu_enabled: bool,
    pub build_id: String,
    pub build_ref: String,
    /// The full image's architecture in OCI's vocabulary (`amd64`, `arm64`).
    pub architecture: String,
}

impl BuildInfo {
    pub fn from_full_config(config: &Value, full_name: &str) -> Result<BuildInfo> {
        let missing = |var: &str| {
            Error::new(format!("{full_name} has no {var} in its environment"))
                .hint("the full image must be a Triton server image (nvcr.io/nvidia/tritonserver:<version>-py3 or a build of build.py)")
        };
        let version = config::env_var(config, "TRITON_SERVER_VERSION")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| missing("TRITON_SERVER_VERSION"))?;
        let container_version = config::env_var(config, "NVIDIA_TRITON_SERVER_VERSION")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| missing("NVIDIA_TRITON_SERVER_VERSION"))?;
        // As compose.py: the explicit flag wins; otherwise CUDA means GPU.
        let gpu_enabled = match config::env_var(config, "TRITON_SERVER_GPU_ENABLED") {
            Some(flag) => flag == "1",
            None => config::env_var(config, "CUDA_VERSION").is_some(),
        };
        Ok(BuildInfo {
            version,
            container_version,
            gpu_enabled,
            build_id: config::label(config, "com.nvidia.build.id").unwrap_or_default(),
            build_ref: config::label(config, "com.nvidia.build.ref").unwrap_or_default(),
            architecture: config
                .get("architecture")
                .and_then(Value::as_str)
                .unwrap_or("amd64")
                .to_string(),
        })
    }

    /// compose.py's GPU consistency checks between the request, full and min.
    pub fn check_gpu(&self, enable_gpu: bool, min_config: &Value, min_name: &str) -> Result<()> {
        if self.gpu_enabled != enable_gpu {
            let (built, asked) = (u8::from(self.gpu_enabled), u8::from(enable_gpu));
            return Err(Error::new(format!(
                "the full image was built with TRITON_SERVER_GPU_ENABLED={built}, but you are composing with TRITON_SERVER_GPU_ENABLED={asked}"
            ))
            .hint(if self.gpu_enabled {
                "drop --enable-gpu=false, or use a CPU-only full image"
            } else {
                "pass --enable-gpu=false to compose a CPU-only image"
            }));
        }
        if enable_gpu && config::env_var(min_config, "CUDA_VERSION").is_none() {
            return Err(Error::new(format!(
                "composing with GPU support, but the min image {min_name} does not have CUDA installed (no CUDA_VERSION)"
            ))
            .hint("use the matching <version>-py3-min image as min, or pass --enable-gpu=false"));
        }
        Ok(())
    }
}

/// The config changes compose.py's Dockerfile makes, in its order.
pub(crate) fn config_changes(
    info: &BuildInfo,
    components: &[Component],
    enable_gpu: bool,
    full_entrypoint: Option<Vec<String>>,
    min_entrypoint: Option<Vec<String>>,
    sagemaker: bool,
) -> Vec<ConfigChange> {
    let has_backend = |name: &str| has_backend(components, name);
    let env = |k: &str, v: &str| ConfigChange::Env(k.to_string(), v.to_string());
    let literal = |k: &str, v: &str| ConfigChange::Env(k.to_string(), config::literal(v));
    let mut changes = vec![
        env("PIP_BREAK_SYSTEM_PACKAGES", "1"),
        literal("TRITON_SERVER_VERSION", &info.version),
        literal("NVIDIA_TRITON_SERVER_VERSION", &info.container_version),
        ConfigChange::Label(
            "com.nvidia.tritonserver.version".into(),
            info.version.clone(),
        ),
        env("PATH", "/opt/tritonserver/bin:${PATH}"),
        env("UCX_MEM_EVENTS", "no"),
    ];
    if has_backend("pytorch") {
        changes.push(env(
            "LD_LIBRARY_PATH",
            "/opt/hpcx/ucc/lib/:/opt/hpcx/ucx/lib/:${LD_LIBRARY_PATH}",
        ));
    }
    changes.extend([
        env("TF_ADJUST_HUE_FUSED", "1"),
        env("TF_ADJUST_SATURATION_FUSED", "1"),
        env("TF_ENABLE_WINOGRAD_NONFUSED", "1"),
        env("TF_AUTOTUNE_THRESHOLD", "2"),
        env(
            "TRITON_SERVER_GPU_ENABLED",
            if enable_gpu { "1" } else { "0" },
        ),
        env("TRITON_SERVER_USER", SERVER_USER),
        env("DEBIAN_FRONTEND", "noninteractive"),
        env("TCMALLOC_RELEASE_RATE", "200"),
    ]);
    changes.extend(backend_env(info, components, enable_gpu));
    changes.push(ConfigChange::Workdir("/opt/tritonserver".into()));
    changes.push(env("NVIDIA_PRODUCT_NAME", "Triton Server"));
    if let Some(entrypoint) = full_entrypoint.filter(|e| Some(e) != min_entrypoint.as_ref()) {
        changes.push(ConfigChange::Entrypoint(entrypoint));
    }
    changes.push(literal("NVIDIA_BUILD_ID", &info.build_id));
    changes.push(ConfigChange::Label(
        "com.nvidia.build.id".into(),
        info.build_id.clone(),
    ));
    changes.push(ConfigChange::Label(
        "com.nvidia.build.ref".into(),
        info.build_ref.clone(),
    ));
    if sagemaker {
        changes.push(ConfigChange::Label(
            "com.amazonaws.sagemaker.capabilities.accept-bind-to-port".into(),
            "true".into(),
        ));
    }
    changes
}

/// The environment compose.py sets for particular backends: CPU-only
/// pytorch's CUDA libraries, the LLM backends' CUDA tools, DALI's wheel.
fn backend_env(info: &BuildInfo, components: &[Component], enable_gpu: bool) -> Vec<ConfigChange> {
    let has_backend = |name: &str| has_backend(components, name);
    let env = |k: &str, v: &str| ConfigChange::Env(k.to_string(), v.to_string());
    let mut changes = Vec::new();
    if !enable_gpu && has_backend("pytorch") {
        let cuda_arch = cuda_arch(&info.architecture);
        changes.push(env(
            "LD_LIBRARY_PATH",
            &format!(
                "/usr/local/cuda/targets/{cuda_arch}-linux/lib:/usr/local/cuda/lib64/stubs:${{LD_LIBRARY_PATH}}"
            ),
        ));
    }
    if has_backend("tensorrtllm") || has_backend("vllm") {
        for (k, v) in [
            ("TRITON_CUDACRT_PATH", "/usr/local/cuda/include"),
            ("TRITON_CUDART_PATH", "/usr/local/cuda/include"),
            ("TRITON_CUOBJDUMP_PATH", "/usr/local/cuda/bin/cuobjdump"),
            ("TRITON_CUPTI_PATH", "/usr/local/cuda/include"),
            ("TRITON_NVDISASM_PATH", "/usr/local/cuda/bin/nvdisasm"),
            ("TRITON_PTXAS_PATH", "/usr/local/cuda/bin/ptxas"),
        ] {
            changes.push(env(k, v));
        }
    }
    if has_backend("dali") {
        changes.push(env(
            "PYTHONPATH",
            "/opt/tritonserver/backends/dali/wheel/dali:$PYTHONPATH",
        ));
    }
    changes
}

/// The directory names build.py uses for an architecture: CUDA's target
/// directory and Debian's multiarch triplet prefix.
fn cuda_arch(architecture: &str) -> &'static str {
    if architecture == "arm64" {
        "sbsa"
    } else {
        "x86_64"
    }
}

fn libs_arch(architecture: &str) -> &'static str {
    if architecture == "arm64" {
        "aarch64"
    } else {
        "x86_64"
    }
}

fn has_backend(components: &[Component], name: &str) -> bool {
    components
        .iter()
        .any(|c| c.kind == ComponentKind::Backend && c.name == name)
}

/// True when a CPU-only compose needs the `gpu-min` image: the pytorch and
/// tensorflow builds load CUDA libraries even without a GPU, and compose.py
/// copies them from the GPU min image (`FROM gpu-min AS min_container`).
pub(crate) fn needs_gpu_min(components: &[Component], enable_gpu: bool) -> bool {
    !enable_gpu && (has_backend(components, "pytorch") || has_backend(components, "tensorflow"))
}

/// One file compose.py copies from `gpu-min`: `COPY --from=min_container
/// FROM TO`. A symlink at `from` is followed; `to` gets a regular file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GpuMinCopy {
    pub from: ImagePath,
    pub to: ImagePath,
}

/// The files build.py's `add_cpu_libs_to_linux_dockerfile` copies from the
/// GPU min image into a CPU-only image, for the architecture of full.
pub(crate) fn gpu_min_copies(
    components: &[Component],
    enable_gpu: bool,
    architecture: &str,
) -> Vec<GpuMinCopy> {
    if !needs_gpu_min(components, enable_gpu) {
        return Vec::new();
    }
    let (cuda, libs) = (cuda_arch(architecture), libs_arch(architecture));
    let mut pairs: Vec<(String, String)> = Vec::new();
    if has_backend(components, "pytorch") {
        // The stubs are copied under the sonames pytorch links against.
        for (stub, soname) in [
            ("libcusparse.so", "libcusparse.so.12"),
            ("libcusolver.so", "libcusolver.so.11"),
            ("libcurand.so", "libcurand.so.10"),
            ("libcufft.so", "libcufft.so.11"),
            ("libcublas.so", "libcublas.so.12"),
            ("libcublasLt.so", "libcublasLt.so.12"),
            ("libcublasLt.so", "libcublasLt.so.11"),
        ] {
            pairs.push((
                format!("usr/local/cuda/lib64/stubs/{stub}"),
                format!("usr/local/cuda/lib64/stubs/{soname}"),
            ));
        }
        for lib in [
            "libcudart.so.12",
            "libcupti.so.12",
            "libnvToolsExt.so.1",
            "libnvJitLink.so.12",
        ] {
            pairs.push((
                format!("usr/local/cuda/lib64/{lib}"),
                format!("usr/local/cuda/targets/{cuda}-linux/lib/{lib}"),
            ));
        }
        for lib in [
            "ucc/lib/libucc.so.1",
            "ucx/lib/libucm.so.0",
            "ucx/lib/libucp.so.0",
            "ucx/lib/libucs.so.0",
            "ucx/lib/libuct.so.0",
        ] {
            pairs.push((format!("opt/hpcx/{lib}"), format!("opt/hpcx/{lib}")));
        }
        let cudnn = format!("usr/lib/{libs}-linux-gnu/libcudnn.so.9");
        pairs.push((cudnn.clone(), cudnn));
    }
    let nccl = format!("usr/lib/{libs}-linux-gnu/libnccl.so.2");
    pairs.push((nccl.clone(), nccl));
    pairs
        .into_iter()
        .map(|(from, to)| GpuMinCopy {
            from: ImagePath::from_static(&from),
            to: ImagePath::from_static(&to),
        })
        .collect()
}

/// What a component needs at run time that its ELF files do not say, and
/// that compose.py installs with apt or pip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RuntimeNeed {
    /// A dpkg package, with the Depends it needs.
    Package(&'static str),
    /// A python module (dotted), from whichever package or distribution
    /// installed it. An optional one is carried when found, never missing.
    PythonModule { module: String, optional: bool },
}

/// The runtime needs of the selected components, each with its reason:
/// the python backend's interpreter and numpy, and what the code of
/// python-based backends imports (their `.py` files must be in `kept`).
pub(crate) fn runtime_needs(
    components: &[Component],
    tree: &MergedTree,
    kept: &HashMap<ImagePath, Vec<u8>>,
) -> Vec<(RuntimeNeed, String)> {
    let mut needs = Vec::new();
    for component in components {
        if component.kind != ComponentKind::Backend {
            continue;
        }
        if component.name == PYTHON_BACKEND {
            // compose.py: apt python3 libarchive libpython3-dev, pip numpy.
            let why = "the python backend runs models with python3 and numpy".to_string();
            needs.push((RuntimeNeed::Package("python3"), why.clone()));
            needs.push((
                RuntimeNeed::PythonModule {
                    module: "numpy".into(),
                    optional: false,
                },
                why,
            ));
        } else if is_python_based(tree, &component.name) {
            for (import, file) in backend_imports(tree, kept, &component.name) {
                let why = format!("imported by {}", file.display_abs());
                needs.push((
                    RuntimeNeed::PythonModule {
                        module: import.module,
                        optional: import.optional,
                    },
                    why,
                ));
            }
        }
    }
    needs
}

/// The backend that runs python models, and python-based backends.
pub(crate) const PYTHON_BACKEND: &str = "python";

/// True for the files scans keep so that a python-based backend's imports
/// can be read: `.py` files under `backends/`.
pub(crate) fn is_backend_source(path: &ImagePath) -> bool {
    path.file_name().ends_with(b".py") && path.is_within(&kind_dir(ComponentKind::Backend))
}

/// True when `backends/NAME` is a python-based backend: a `model.py` and
/// no `libtriton_NAME.so`. Triton runs it with the python backend (as vllm's).
pub(crate) fn is_python_based(tree: &MergedTree, name: &str) -> bool {
    let dir = kind_dir(ComponentKind::Backend).join(name.as_bytes());
    name != PYTHON_BACKEND
        && tree
            .get(&dir.join(b"model.py"))
            .is_some_and(|n| !n.is_dir())
        && !tree.contains(&dir.join(format!("libtriton_{name}.so").as_bytes()))
}

/// The selection with the python backend added when a python-based backend
/// needs it and it was not asked for; says so.
pub(crate) fn with_python_backend(components: &[Component], tree: &MergedTree) -> Vec<Component> {
    let mut out = components.to_vec();
    let python = Component {
        kind: ComponentKind::Backend,
        name: PYTHON_BACKEND.to_string(),
    };
    let based: Vec<&Component> = components
        .iter()
        .filter(|c| c.kind == ComponentKind::Backend && is_python_based(tree, &c.name))
        .collect();
    if let Some(first) = based.first() {
        if !out.contains(&python) {
            tracing::warn!(
                "backend {} is python-based: Triton runs it with the python backend, which is added",
                first.name
            );
            out.push(python);
        }
    }
    out
}

/// The absolute imports of a python-based backend's `.py` files (each
/// with the file that first imports it), less the backend's own modules
/// and the python backend's (`triton_python_backend_utils`).
pub(crate) fn backend_imports(
    tree: &MergedTree,
    kept: &HashMap<ImagePath, Vec<u8>>,
    name: &str,
) -> Vec<(pysource::Import, ImagePath)> {
    let backends = kind_dir(ComponentKind::Backend);
    let dir = backends.join(name.as_bytes());
    let own_dirs = [dir.clone(), backends.join(PYTHON_BACKEND.as_bytes())];
    let is_own = |top: &str| {
        own_dirs.iter().any(|d| {
            tree.contains(&d.join(format!("{top}.py").as_bytes()))
                || tree
                    .get(&d.join(top.as_bytes()))
                    .is_some_and(|n| n.is_dir())
        })
    };
    let mut out: Vec<(pysource::Import, ImagePath)> = Vec::new();
    let mut sources: Vec<(&ImagePath, &Vec<u8>)> = kept
        .iter()
        .filter(|(p, _)| p.is_within(&dir) && is_backend_source(p))
        .collect();
    sources.sort();
    for (file, text) in sources {
        for import in pysource::imports(&String::from_utf8_lossy(text)) {
            if is_own(import.top_level()) {
                continue;
            }
            match out.iter_mut().find(|(i, _)| i.module == import.module) {
                Some((seen, _)) => seen.optional &= import.optional,
                None => out.push((import, file.clone())),
            }
        }
    }
    out
}

/// Python modules the python backend's models import, for `verify`.
pub(crate) fn python_imports(backend: &str) -> &'static [&'static str] {
    match backend {
        PYTHON_BACKEND => &["numpy"],
        _ => &[],
    }
}

/// Libraries the NVIDIA container runtime mounts from the host driver; no
/// image carries them.
pub(crate) const DRIVER_LIBRARIES: [&str; 10] = [
    "libcuda.so.1",
    "libcuda.so",
    "libnvidia-ml.so.1",
    "libnvcuvid.so.1",
    "libnvidia-encode.so.1",
    "libnvidia-opticalflow.so.1",
    "libnvidia-ptxjitcompiler.so.1",
    "libnvidia-nvvm.so.4",
    "libcudadebugger.so.1",
    "libnvidia-fbc.so.1",
];

pub fn is_driver_library(name: &str) -> bool {
    DRIVER_LIBRARIES.contains(&name)
}

/// Libraries that load others at run time with no DT_NEEDED on them: when a
/// library whose file name starts with `trigger` is kept by `--slim`, so is
/// every library in its directory whose name starts with one of `members`.
pub(crate) struct Family {
    pub trigger: &'static str,
    pub members: &'static [&'static str],
    /// Where the fact comes from.
    pub source: &'static str,
}

pub(crate) const FAMILIES: [Family; 4] = [
    Family {
        trigger: "libcudnn.so.9",
        members: &["libcudnn_"],
        source: "cuDNN 9: libcudnn.so.9 has no DT_NEEDED on its sub-libraries and dlopens \
                 ops, cnn, adv, graph, heuristic, engines_precompiled, engines_runtime_compiled, \
                 engines_tensor_ir and ext (cuDNN 9 release notes; pytorch#189043)",
    },
    Family {
        trigger: "libnvinfer.so",
        members: &["libnvinfer_builder_resource"],
        source: "TensorRT dlopens its builder resource when it builds an engine (TensorRT#2218)",
    },
    Family {
        trigger: "libnvrtc.so",
        members: &["libnvrtc-builtins"],
        source:
            "NVRTC dlopens libnvrtc-builtins when it compiles (CUDA NVRTC guide, \"Installation\")",
    },
    Family {
        trigger: "libcudnn.so.8",
        members: &["libcudnn_"],
        source: "cuDNN 8: libcudnn.so.8 dlopens its ops/cnn/adv infer and train libraries \
                 (cuDNN 8 API reference, \"Library dependencies\")",
    },
];

/// What `--slim` keeps besides load chains because Triton or a backend
/// loads it at run time by a name no ELF file shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RuntimeLoaded {
    /// Files whose name starts with this, wherever they are.
    Named(&'static str),
    /// A path and everything under it.
    Under(&'static str),
}

/// The run-time loads of a selection, each with its source.
pub(crate) fn runtime_loaded(
    components: &[Component],
    enable_gpu: bool,
) -> Vec<(RuntimeLoaded, &'static str)> {
    let mut out = Vec::new();
    if enable_gpu {
        out.push((
            RuntimeLoaded::Named("libdcgm.so"),
            "GPU metrics: the core dlopens DCGM's libdcgm.so (server docs, metrics.md: \
             \"GPU metrics ... through DCGM\")",
        ));
    }
    if enable_gpu {
        out.push((
            RuntimeLoaded::Under("usr/local/cuda/compat"),
            "CUDA forward compatibility: NGC's entrypoint (entrypoint.d, cuda-compat check) puts \
             /usr/local/cuda/compat on the library path when the host driver is older (CUDA \
             Compatibility guide, \"Forward Compatibility\")",
        ));
    }
    if has_backend(components, "pytorch") {
        for dir in ["opt/hpcx/ucx/lib", "opt/hpcx/ucc/lib"] {
            out.push((
                RuntimeLoaded::Under(dir),
                "pytorch: build.py puts hpcx's UCX and UCC on LD_LIBRARY_PATH, and they \
                 dlopen their transports from ucx/ and ucc/ beneath",
            ));
        }
    }
    let llm = ["vllm", "tensorrtllm", "trtllm"]
        .iter()
        .any(|b| has_backend(components, b));
    if llm {
        let why = "python-based LLM backends compile kernels at run time: build.py sets \
                   TRITON_PTXAS_PATH=/usr/local/cuda/bin/ptxas and keeps cuobjdump, nvdisasm, \
                   the CUDA headers and NVRTC";
        out.extend(
            [
                RuntimeLoaded::Named("libnvrtc"),
                RuntimeLoaded::Under("usr/local/cuda/bin/ptxas"),
                RuntimeLoaded::Under("usr/local/cuda/bin/cuobjdump"),
                RuntimeLoaded::Under("usr/local/cuda/bin/nvdisasm"),
                RuntimeLoaded::Under("usr/local/cuda/include"),
            ]
            .into_iter()
            .map(|k| (k, why)),
        );
    }
    out
}

/// dpkg priorities whose packages `--slim` always keeps, so that the image
/// stays a working Debian or Ubuntu system (shell, coreutils, dpkg, apt):
/// Debian Policy 2.5, "Priorities".
pub(crate) const KEPT_PRIORITIES: [&str; 2] = ["required", "important"];

/// How a Triton process reaches an ELF object of the installation, for
/// judging its needs along the load chain ld.so follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LoadRoot {
    /// Started as a process: the programs in `bin/` and the executables
    /// under `backends/` (the python backend's stub).
    Executable,
    /// Loaded with dlopen by libtritonserver inside the server's process:
    /// `backends/NAME/libtriton_NAME.so`, `repoagents/NAME/libtritonrepoagent_NAME.so`,
    /// `caches/NAME/libtritoncache_NAME.so`.
    Dlopened,
}

/// The server program whose process dlopens components.
pub(crate) const SERVER_PROGRAM: &str = "opt/tritonserver/bin/tritonserver";
/// The library in that process that calls dlopen.
pub(crate) const SERVER_LIBRARY: &str = "libtritonserver.so";

/// A program one of Triton's backends runs from the image (not one of its
/// own files), which `--distroless` must keep: a name looked up on the
/// image's PATH, or an absolute path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProgramRun {
    pub backend: &'static str,
    pub program: &'static str,
    pub source: &'static str,
}

/// What the backends run. The python backend starts each model's stub
/// through a shell; a distroless image with it keeps that shell.
pub(crate) const PROGRAMS_RUN: &[ProgramRun] = &[
    ProgramRun {
        backend: PYTHON_BACKEND,
        program: "bash",
        source: "python_backend src/stub_launcher.cc, StubLauncher::Launch: \
                 execvp(\"bash\", {\"bash\", \"-c\", \"exec <stub> ...\"})",
    },
    ProgramRun {
        backend: PYTHON_BACKEND,
        program: "/bin/sh",
        source: "python_backend src/stub_launcher.cc, StubLauncher::Launch: \
                 system(\"<stub> > /dev/null 2>&1\") (a permission check), run by /bin/sh -c",
    },
    ProgramRun {
        backend: PYTHON_BACKEND,
        program: "env",
        source: "python_backend src/stub_launcher.cc, StubLauncher::Launch: with a model's \
                 EXECUTION_ENV_PATH, bash -c \"source <activate> && exec env LD_LIBRARY_PATH=... <stub>\"",
    },
];

/// The programs `components` run (see [`PROGRAMS_RUN`]).
pub(crate) fn programs_run(components: &[Component]) -> Vec<&'static ProgramRun> {
    PROGRAMS_RUN
        .iter()
        .filter(|p| has_backend(components, p.backend))
        .collect()
}

/// The directories `--distroless` counts as holding programs: those of a
/// default PATH (Debian's login.defs and docker's default), and libexec.
pub(crate) const PROGRAM_DIRS: &[&str] = &[
    "usr/local/sbin",
    "usr/local/bin",
    "usr/sbin",
    "usr/bin",
    "sbin",
    "bin",
    "usr/libexec",
    "usr/lib/apt/methods",
];

/// Whether the installation's file at `path` is where a load starts.
/// `executable` says the file has a program interpreter (PT_INTERP).
pub(crate) fn load_root(path: &ImagePath, executable: bool) -> Option<LoadRoot> {
    let rest = path.as_bytes().strip_prefix(INSTALL_DIR.as_bytes())?;
    let rest = rest.strip_prefix(b"/")?;
    let parts: Vec<&[u8]> = rest.split(|&b| b == b'/').collect();
    if let [dir, name, file] = parts.as_slice() {
        let prefix: Option<&[u8]> = match *dir {
            b"backends" => Some(b"libtriton_"),
            b"repoagents" => Some(b"libtritonrepoagent_"),
            b"caches" => Some(b"libtritoncache_"),
            _ => None,
        };
        if prefix.is_some_and(|prefix| *file == [prefix, name, b".so"].concat().as_slice()) {
            return Some(LoadRoot::Dlopened);
        }
    }
    match parts.as_slice() {
        [b"bin", _] | [b"backends", ..] if executable => Some(LoadRoot::Executable),
        _ => None,
    }
}

/// SageMaker's `serve` script: compose.py copies it, and labels the image
/// as binding to SageMaker's port, when the full image has it.
pub(crate) const SAGEMAKER_SERVE: &str = "usr/bin/serve";

pub(crate) fn has_sagemaker_serve(tree: &MergedTree) -> bool {
    tree.get(&ImagePath::from_static(SAGEMAKER_SERVE))
        .is_some_and(|n| !n.is_dir())
}

/// Names of the components of a kind that a full image offers.
pub(crate) fn offered(tree: &MergedTree, kind: ComponentKind) -> Vec<String> {
    let dir = kind_dir(kind);
    tree.child_names(&dir)
        .into_iter()
        .filter(|name| {
            tree.get(&dir.join(name.as_bytes()))
                .is_some_and(|n| n.is_dir())
        })
        .collect()
}

/// The error for a component the full image lacks, with the closest match.
pub(crate) fn unknown_component(
    component: &Component,
    offered: &[String],
    full_name: &str,
) -> Error {
    let kind = component.kind;
    let closest = offered
        .iter()
        .map(|o| (strsim::jaro_winkler(&component.name, o), o))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, o)| o.clone());
    let mut err = Error::new(format!(
        "{full_name} has no {} named {:?} (no /{}/{})",
        kind.noun(),
        component.name,
        kind_dir(kind).as_bytes().escape_ascii(),
        component.name
    ));
    let list = if offered.is_empty() {
        format!("it offers no {}s", kind.noun())
    } else {
        format!("it offers: {}", offered.join(", "))
    };
    err = match closest {
        Some(c) => err.hint(format!("did you mean {} {c}? {list}", kind.flag())),
        None => err.hint(list),
    };
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full_config(gpu: &str) -> Value {
        json!({"config": {
            "Env": ["PATH=/usr/bin", "TRITON_SERVER_VERSION=2.51.0", "NVIDIA_TRITON_SERVER_VERSION=24.10",
                    format!("TRITON_SERVER_GPU_ENABLED={gpu}")],
            "Labels": {"com.nvidia.build.id": "123", "com.nvidia.build.ref": "abc"},
            "Entrypoint": ["/opt/nvidia/nvidia_entrypoint.sh"]}})
    }

    #[test]
    fn load_roots_are_programs_stubs_and_what_libtritonserver_dlopens() {
        let root = |p: &str, exe: bool| load_root(&ImagePath::from_static(p), exe);
        let t = "opt/tritonserver";
        assert_eq!(
            root(&format!("{t}/bin/tritonserver"), true),
            Some(LoadRoot::Executable)
        );
        assert_eq!(root(&format!("{t}/bin/libfoo.so"), false), None);
        assert_eq!(
            root(
                &format!("{t}/backends/python/triton_python_backend_stub"),
                true
            ),
            Some(LoadRoot::Executable)
        );
        for dlopened in [
            "backends/onnxruntime/libtriton_onnxruntime.so",
            "repoagents/checksum/libtritonrepoagent_checksum.so",
            "caches/local/libtritoncache_local.so",
        ] {
            assert_eq!(
                root(&format!("{t}/{dlopened}"), false),
                Some(LoadRoot::Dlopened)
            );
        }
        assert_eq!(
            root(
                &format!("{t}/backends/onnxruntime/libonnxruntime.so"),
                false
            ),
            None
        );
        assert_eq!(root(&format!("{t}/backends/a/libtriton_b.so"), false), None);
        assert_eq!(root(&format!("{t}/lib/libtritonserver.so"), false), None);
        assert_eq!(root("usr/bin/python3", true), None);
    }

    #[test]
    fn reads_build_info_and_checks_gpu_like_compose_py() {
        let info = BuildInfo::from_full_config(&full_config("0"), "full").unwrap();
        assert_eq!(info.version, "2.51.0");
        assert_eq!(info.container_version, "24.10");
        assert!(!info.gpu_enabled);
        assert_eq!(info.build_ref, "abc");
        let min = json!({"config": {"Env": ["PATH=/usr/bin"]}});
        let err = info.check_gpu(true, &min, "min").unwrap_err();
        assert!(err.hint_text().unwrap().contains("--enable-gpu=false"));
        info.check_gpu(false, &min, "min").unwrap();

        let gpu = BuildInfo::from_full_config(&full_config("1"), "full").unwrap();
        let err = gpu.check_gpu(true, &min, "min").unwrap_err();
        assert!(err.message().contains("does not have CUDA"), "{err}");

        let err = BuildInfo::from_full_config(&json!({"config": {}}), "x").unwrap_err();
        assert!(err.message().contains("TRITON_SERVER_VERSION"));
    }

    #[test]
    fn suggests_the_closest_component() {
        let c = Component::new(ComponentKind::Backend, "pyhton").unwrap();
        let err = unknown_component(&c, &["onnxruntime".into(), "python".into()], "full");
        assert!(
            err.hint_text()
                .unwrap()
                .contains("did you mean --backend python?"),
            "{err:?}"
        );
        assert!(Component::new(ComponentKind::Backend, "../x").is_err());
    }

    #[test]
    fn per_backend_environment() {
        let info = BuildInfo::from_full_config(&full_config("0"), "full").unwrap();
        let comps = vec![Component::new(ComponentKind::Backend, "dali").unwrap()];
        let changes = config_changes(&info, &comps, false, Some(vec!["/e".into()]), None, false);
        assert!(changes.contains(&ConfigChange::Env(
            "PYTHONPATH".into(),
            "/opt/tritonserver/backends/dali/wheel/dali:$PYTHONPATH".into()
        )));
        assert!(changes.contains(&ConfigChange::Entrypoint(vec!["/e".into()])));
        assert!(!changes
            .iter()
            .any(|c| matches!(c, ConfigChange::Env(k, _) if k == "LD_LIBRARY_PATH")));
    }

    #[test]
    fn cpu_only_pytorch_copies_cuda_libraries_for_the_full_architecture() {
        let pytorch = vec![Component::new(ComponentKind::Backend, "pytorch").unwrap()];
        assert!(gpu_min_copies(&pytorch, true, "amd64").is_empty());
        let arm = gpu_min_copies(&pytorch, false, "arm64");
        let pair = |from: &str, to: &str| GpuMinCopy {
            from: ImagePath::from_static(from),
            to: ImagePath::from_static(to),
        };
        for expected in [
            pair(
                "usr/local/cuda/lib64/stubs/libcublasLt.so",
                "usr/local/cuda/lib64/stubs/libcublasLt.so.11",
            ),
            pair(
                "usr/local/cuda/lib64/libcudart.so.12",
                "usr/local/cuda/targets/sbsa-linux/lib/libcudart.so.12",
            ),
            pair(
                "usr/lib/aarch64-linux-gnu/libcudnn.so.9",
                "usr/lib/aarch64-linux-gnu/libcudnn.so.9",
            ),
        ] {
            assert!(arm.contains(&expected), "{expected:?}");
        }
        // tensorflow alone needs only NCCL.
        let tf = vec![Component::new(ComponentKind::Backend, "tensorflow").unwrap()];
        let nccl = gpu_min_copies(&tf, false, "amd64");
        assert_eq!(
            nccl,
            [pair(
                "usr/lib/x86_64-linux-gnu/libnccl.so.2",
                "usr/lib/x86_64-linux-gnu/libnccl.so.2"
            )]
        );

        // The CUDA directories go in front of hpcx's, as in compose.py's order.
        let mut config = full_config("0");
        config["architecture"] = Value::from("arm64");
        let info = BuildInfo::from_full_config(&config, "full").unwrap();
        let changes = config_changes(&info, &pytorch, false, None, None, false);
        let ld: Vec<&String> = changes
            .iter()
            .filter_map(|c| match c {
                ConfigChange::Env(k, v) if k == "LD_LIBRARY_PATH" => Some(v),
                _ => None,
            })
            .collect();
        assert_eq!(ld.len(), 2);
        assert!(ld[0].starts_with("/opt/hpcx/"));
        assert_eq!(
            ld[1],
            "/usr/local/cuda/targets/sbsa-linux/lib:/usr/local/cuda/lib64/stubs:${LD_LIBRARY_PATH}"
        );
    }
}
