//! The work directory: made and swept before a run, and given
//! Dockerfile.compose with the files it copies from its build context.

use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::plan::Plan;
use crate::render::{self, FromNames};
use crate::request::{ComposeRequest, StoreSettings};
use crate::transport::ImageRef;
use crate::triton;

pub(crate) const DOCKERFILE_NAME: &str = "Dockerfile.compose";

/// Makes a target's work directory and sweeps what killed runs left
/// there and beside its `output`.
pub(super) fn prepare(
    work_dir: &Path,
    output: &ImageRef,
    store: Option<&StoreSettings>,
) -> Result<()> {
    std::fs::create_dir_all(work_dir)
        .ctx(|| format!("creating --work-dir {}", work_dir.display()))?;
    sweep_leftovers(work_dir, output, store);
    Ok(())
}

/// Removes what runs that are gone (killed with SIGKILL) left where this
/// one writes: the work directory, beside the destination, and the store's
/// staging directory.
fn sweep_leftovers(work_dir: &Path, output: &ImageRef, store: Option<&StoreSettings>) {
    let mut dirs = vec![work_dir.to_path_buf()];
    match output {
        ImageRef::Oci { dir, .. } => {
            dirs.push(dir.parent().map(Path::to_path_buf).unwrap_or_default());
            dirs.push(dir.join("blobs/sha256"));
            dirs.push(dir.clone());
        }
        ImageRef::DockerArchive { file, .. } => {
            dirs.push(file.parent().map(Path::to_path_buf).unwrap_or_default());
        }
        ImageRef::Registry(_) | ImageRef::DockerDaemon(_) => {}
    }
    if let Some(store) = store {
        dirs.push(store.dir.join("tmp"));
    }
    for dir in dirs {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        crate::scratch::sweep(&dir);
    }
}

/// The name a component from a directory has in the build context.
pub(super) fn context_name(component: &triton::Component) -> String {
    format!("triton-compose-{}-{}", component.kind.dir(), component.name)
}

/// Writes Dockerfile.compose (and the files it copies from its context,
/// the `local` components' trees among them) into `work_dir`; returns its
/// path.
pub(super) fn write_dockerfile(
    request: &ComposeRequest,
    work_dir: &Path,
    local: &[(triton::Component, PathBuf)],
    plan: &Plan,
) -> Result<PathBuf> {
    let dockerfile_path = work_dir.join(DOCKERFILE_NAME);
    let gpu_min_from = request
        .gpu_min
        .as_ref()
        .map(|r| buildable_name(r, "triton-compose-gpu-min"))
        .unwrap_or_default();
    let dockerfile = render::dockerfile(
        plan,
        &FromNames {
            full: &buildable_name(&request.full, "triton-compose-full"),
            min: &buildable_name(&request.min, "triton-compose-min"),
            gpu_min: &gpu_min_from,
        },
    )?;
    std::fs::write(&dockerfile_path, dockerfile)
        .ctx(|| format!("writing {}", dockerfile_path.display()))?;
    for (name, bytes) in render::context_files(plan) {
        let path = work_dir.join(name);
        std::fs::write(&path, bytes).ctx(|| format!("writing {}", path.display()))?;
    }
    for (component, dir) in local {
        crate::local::copy_tree(dir, &work_dir.join(context_name(component)))?;
    }
    tracing::info!("wrote {}", dockerfile_path.display());
    Ok(dockerfile_path)
}

/// A name `docker build` can resolve for a reference, for FROM lines.
pub(crate) fn buildable_name(reference: &ImageRef, fallback: &str) -> String {
    match reference {
        ImageRef::Registry(name) | ImageRef::DockerDaemon(name) => name.clone(),
        ImageRef::DockerArchive {
            reference: Some(name),
            ..
        } => name.clone(),
        _ => fallback.to_string(),
    }
}
