//! The new layers' entries: full's subtrees (with the parents min
//! lacks), the core, each component, the entrypoint and the account files.

use std::collections::{BTreeMap, HashMap};

use super::*;

/// The core's paths full has; a required one missing is an error.
pub(super) fn core_roots(full: &PlanInput<'_>) -> Result<Vec<ImagePath>> {
    let install = triton::install_dir();
    let mut roots = Vec::new();
    for (name, required) in triton::CORE_ITEMS {
        let path = install.join(name.as_bytes());
        if full.scan.tree.contains(&path) {
            roots.push(path);
        } else if required {
            return Err(Error::new(format!(
                "{} is not a complete Triton image: /{}/{name} is missing",
                full.name,
                triton::INSTALL_DIR
            ))
            .hint("the full image must hold a Triton installation with bin and lib"));
        } else {
            tracing::warn!(
                "{} has no /{}/{name}; it is left out",
                full.name,
                triton::INSTALL_DIR
            );
        }
    }
    Ok(roots)
}

/// A component's layer: its directory of full (copied from the build
/// context when it came from a directory on this machine).
pub(super) fn component_layer(
    builder: &LayerBuilder<'_>,
    full: &PlanInput<'_>,
    component: &Component,
    local: &[(ImagePath, String)],
) -> Result<LayerPlan> {
    let full_tree = &full.scan.tree;
    let path = component.path();
    if !full_tree.get(&path).is_some_and(|n| n.is_dir()) {
        let offered = triton::offered(full_tree, component.kind);
        return Err(triton::unknown_component(component, &offered, full.name));
    }
    let role = LayerRole::Component(component.clone());
    let mut layer = builder.layer(role, std::slice::from_ref(&path))?;
    if let Some((_, name)) = local.iter().find(|(p, _)| *p == path) {
        layer.steps = vec![Step::CopyContext {
            name: name.clone(),
            to: path,
        }];
    }
    Ok(layer)
}

/// NVIDIA's entrypoint: what full has under `/opt/nvidia` and min lacks.
pub(super) fn entrypoint_layer(
    builder: &LayerBuilder<'_>,
    min: &MinInput<'_>,
    full_tree: &crate::tree::MergedTree,
    slim: Option<&crate::request::SlimOptions>,
) -> Result<Option<LayerPlan>> {
    // Distroless: the server is the entrypoint, not NVIDIA's shell script.
    if slim.is_some_and(|s| s.distroless) {
        return Ok(None);
    }
    let nvidia = ImagePath::from_static(triton::NVIDIA_DIR);
    let entrypoint_d = ImagePath::from_static(triton::ENTRYPOINT_D);
    let layer = match &min.view {
        MinView::Scanned(scan) if !scan.tree.contains(&nvidia) && full_tree.contains(&nvidia) => {
            builder.layer(LayerRole::NvidiaEntrypoint, &[nvidia])?
        }
        MinView::Scanned(_) if full_tree.contains(&entrypoint_d) => {
            builder.layer(LayerRole::NvidiaEntrypointD, &[entrypoint_d])?
        }
        // What full's own layers put under /opt/nvidia (min has the rest).
        MinView::BaseOfFull if full_tree.contains(&nvidia) => {
            builder.layer(LayerRole::NvidiaEntrypoint, &[nvidia])?
        }
        _ => return Ok(None),
    };
    Ok(Some(layer))
}

pub(super) struct LayerBuilder<'a> {
    pub(super) full: &'a ScannedImage,
    pub(super) min: &'a MinView<'a>,
    pub(super) timestamp: u64,
}

impl LayerBuilder<'_> {
    /// A layer holding the given subtrees of the full image, plus the parent
    /// directories min lacks (root-owned 0755, as `COPY` creates them).
    pub(super) fn layer(&self, role: LayerRole, roots: &[ImagePath]) -> Result<LayerPlan> {
        let mut entries: BTreeMap<ImagePath, PlannedEntry> = BTreeMap::new();
        for root in roots {
            self.add_parents(&mut entries, root);
            for (path, _) in self.full.tree.subtree(root) {
                let entry = self.entry(&path)?;
                entries.insert(path, entry);
            }
        }
        Ok(finish_layer(
            role,
            Vec::new(),
            roots.iter().cloned().map(Step::Copy).collect(),
            entries,
        ))
    }

    /// The layer of runtime dependencies: single paths of full and the
    /// merged dpkg status; `None` when nothing is needed.
    pub(super) fn deps_layer(&self, deps: &Deps) -> Result<Option<LayerPlan>> {
        if deps.paths.is_empty() && deps.dpkg_status.is_none() {
            return Ok(None);
        }
        let mut entries: BTreeMap<ImagePath, PlannedEntry> = BTreeMap::new();
        for path in &deps.paths {
            self.add_parents(&mut entries, path);
            entries.insert(path.clone(), self.entry(path)?);
        }
        let (files, dirs) = listed_paths(&entries);
        let mut steps = vec![Step::CopyListed { files, dirs }];
        if let Some(status) = &deps.dpkg_status {
            let path = ImagePath::from_static(deps::dpkg::STATUS);
            let mut meta = self
                .full
                .tree
                .get(&path)
                .map(|n| n.meta.clone())
                .unwrap_or_else(|| EntryMeta::plain_dir(0o644, self.timestamp));
            meta.kind = EntryKind::File;
            meta.size = status.len() as u64;
            meta.mtime = self.timestamp;
            meta.link_target = None;
            self.add_parents(&mut entries, &path);
            entries.insert(
                path.clone(),
                PlannedEntry {
                    path: path.clone(),
                    meta,
                    content: Content::Inline(status.clone()),
                },
            );
            steps.push(Step::CopyGenerated(path));
        }
        let notes = deps
            .reasons
            .iter()
            .map(|r| format!("{}: {}", r.added, r.because))
            .collect();
        Ok(Some(finish_layer(
            LayerRole::RuntimeDependencies,
            notes,
            steps,
            entries,
        )))
    }

    /// The layer of CUDA libraries from gpu-min, if any are to be copied.
    pub(super) fn gpu_min_copies(
        &self,
        gpu_min: Option<&PlanInput<'_>>,
        copies: &[GpuMinCopy],
    ) -> Result<Option<LayerPlan>> {
        match gpu_min {
            _ if copies.is_empty() => Ok(None),
            Some(gpu_min) => Ok(Some(self.gpu_min_layer(gpu_min, copies)?)),
            None => Err(Error::new(
                "a CPU-only pytorch or tensorflow image needs the gpu-min image, and it was not read",
            )
            .hint("pass --image gpu-min,REF")),
        }
    }

    /// The layer of files compose.py copies from `gpu-min`, each symlink
    /// followed to a regular file owned by root, as `COPY --from` does.
    pub(super) fn gpu_min_layer(
        &self,
        gpu_min: &PlanInput<'_>,
        copies: &[GpuMinCopy],
    ) -> Result<LayerPlan> {
        let tree = &gpu_min.scan.tree;
        let mut entries: BTreeMap<ImagePath, PlannedEntry> = BTreeMap::new();
        let mut steps = Vec::new();
        for copy in copies {
            let missing = || {
                Error::new(format!(
                    "the gpu-min image {} has no file {} (compose.py copies it into CPU-only images with pytorch)",
                    gpu_min.name,
                    copy.from.display_abs()
                ))
                .hint("--image gpu-min must name the GPU min image of the same release as full: nvcr.io/nvidia/tritonserver:<version>-py3-min")
            };
            let Resolution::Found(resolved) = fsview::resolve(tree, &copy.from) else {
                return Err(missing());
            };
            let node = tree.get(&resolved.path).ok_or_else(missing)?;
            if node.meta.kind != EntryKind::File {
                return Err(missing());
            }
            let mut meta = node.meta.clone();
            (meta.uid, meta.gid, meta.uname, meta.gname) = (0, 0, None, None);
            self.add_parents(&mut entries, &copy.to);
            entries.insert(
                copy.to.clone(),
                PlannedEntry {
                    path: copy.to.clone(),
                    meta,
                    content: Content::GpuMin(node.inode),
                },
            );
            steps.push(Step::CopyGpuMin {
                from: copy.from.clone(),
                to: copy.to.clone(),
            });
        }
        let notes = vec![format!(
            "CPU-only pytorch loads these CUDA libraries; compose.py copies them from {}",
            gpu_min.name
        )];
        Ok(finish_layer(LayerRole::GpuMinCuda, notes, steps, entries))
    }

    pub(super) fn add_parents(
        &self,
        entries: &mut BTreeMap<ImagePath, PlannedEntry>,
        path: &ImagePath,
    ) {
        for parent in path.ancestors() {
            let meta = match self.min {
                MinView::Scanned(min) if min.tree.contains(&parent) => continue,
                MinView::Scanned(_) => EntryMeta::plain_dir(0o755, self.timestamp),
                // Parents full's own layers touched carry full's metadata;
                // the others are min's already.
                MinView::BaseOfFull => match self.full.tree.get(&parent) {
                    Some(node) if node.is_dir() => node.meta.clone(),
                    _ => continue,
                },
            };
            entries.entry(parent.clone()).or_insert(PlannedEntry {
                path: parent,
                meta,
                content: Content::None,
            });
        }
    }

    pub(super) fn entry(&self, path: &ImagePath) -> Result<PlannedEntry> {
        let node = self
            .full
            .tree
            .get(path)
            .expect("paths come from full's tree");
        let content = match node.meta.kind {
            EntryKind::File => Content::Full(node.inode),
            EntryKind::HardLink => {
                return Err(Error::new(format!(
                    "{path} is a hard link to {:?}, which the full image does not contain",
                    String::from_utf8_lossy(node.meta.link_target.as_deref().unwrap_or_default())
                ))
                .hint("the full image is malformed; re-export it"))
            }
            _ => Content::None,
        };
        Ok(PlannedEntry {
            path: path.clone(),
            meta: node.meta.clone(),
            content,
        })
    }
}

pub(super) fn finish_layer(
    role: LayerRole,
    notes: Vec<String>,
    steps: Vec<Step>,
    entries: BTreeMap<ImagePath, PlannedEntry>,
) -> LayerPlan {
    let mut entries: Vec<PlannedEntry> = entries.into_values().collect();
    relink(&mut entries);
    LayerPlan {
        role,
        part: None,
        notes,
        steps,
        entries,
        prefetch: None,
    }
}

/// What a `cp -a --parents` needs to be given to recreate the entries:
/// the files and links, and the directories no other entry lies in.
fn listed_paths(entries: &BTreeMap<ImagePath, PlannedEntry>) -> (Vec<ImagePath>, Vec<ImagePath>) {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    let mut iter = entries.values().peekable();
    while let Some(entry) = iter.next() {
        if entry.meta.is_dir() {
            let holds_more = iter
                .peek()
                .is_some_and(|next| next.path.is_within(&entry.path));
            if !holds_more {
                dirs.push(entry.path.clone());
            }
        } else if !matches!(entry.content, Content::Inline(_)) {
            files.push(entry.path.clone());
        }
    }
    (files, dirs)
}

/// Files of one layer that share an inode become hard links to the first of
/// them (in path order), so the layer stores their content once.
pub(super) fn relink(entries: &mut [PlannedEntry]) {
    let mut first: HashMap<(Origin, InodeRef), ImagePath> = HashMap::new();
    for entry in entries.iter_mut() {
        let Some(inode) = entry.content.copied() else {
            continue;
        };
        match first.get(&inode) {
            Some(target) => {
                entry.meta.kind = EntryKind::HardLink;
                entry.meta.size = 0;
                entry.meta.link_target = Some(target.as_bytes().to_vec());
                entry.content = Content::None;
            }
            None => {
                first.insert(inode, entry.path.clone());
            }
        }
    }
}

/// The layer that makes the `triton-server` account as compose.py's
/// `userdel`/`useradd` step would, or `None` if min already has it.
pub(super) fn account_layer(
    min: &MinInput<'_>,
    full: &PlanInput<'_>,
    timestamp: u64,
    other_user: bool,
) -> Result<Option<LayerPlan>> {
    // When min is not read, the account files come from full's own layers
    // (compose checks first that they are there) and are always written.
    let (source, always) = match &min.view {
        MinView::Scanned(scan) => (*scan, false),
        MinView::BaseOfFull => (full.scan, true),
    };
    let file = |name: &str| {
        source
            .kept
            .get(&ImagePath::from_static(name))
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
    };
    let (Some(passwd), Some(group)) = (file("etc/passwd"), file("etc/group")) else {
        return Err(Error::new(format!(
            "the min image {} has no /etc/passwd or /etc/group, so the {} user cannot be added",
            min.name,
            triton::SERVER_USER
        ))
        .hint("use a min image with a standard /etc (a Debian or Ubuntu base)"));
    };
    let original = AccountFiles {
        passwd,
        group,
        shadow: file("etc/shadow"),
        gshadow: file("etc/gshadow"),
    };
    let files = server_accounts(&original, timestamp)?;
    let writable = writable_dirs(&source.tree, other_user, timestamp);
    if files == original && !always && writable.is_empty() {
        return Ok(None);
    }
    let mut entries = Vec::new();
    let mut steps = vec![Step::Run(triton::USER_SCRIPT.to_string())];
    for (entry, step) in writable {
        entries.push(entry);
        steps.push(step);
    }
    for (name, text) in [
        ("etc/passwd", Some(&files.passwd)),
        ("etc/group", Some(&files.group)),
        ("etc/shadow", files.shadow.as_ref()),
        ("etc/gshadow", files.gshadow.as_ref()),
    ] {
        let Some(text) = text else { continue };
        let path = ImagePath::from_static(name);
        let node = source.tree.get(&path).expect("kept files are in the tree");
        let mut meta = node.meta.clone();
        meta.kind = EntryKind::File;
        meta.size = text.len() as u64;
        meta.mtime = timestamp;
        meta.link_target = None;
        entries.push(PlannedEntry {
            path,
            meta,
            content: Content::Inline(text.clone().into_bytes()),
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Some(LayerPlan {
        role: LayerRole::Accounts,
        part: None,
        notes: Vec::new(),
        steps,
        entries,
        prefetch: None,
    }))
}

/// The account files as compose.py's RUN leaves them: its removed users
/// gone, its server user there with id 1000.
fn server_accounts(original: &AccountFiles, timestamp: u64) -> Result<AccountFiles> {
    let mut files = original.clone();
    for user in triton::REMOVED_USERS {
        files.remove_user(user);
    }
    match files.user(triton::SERVER_USER) {
        Some((uid, gid)) if uid == triton::SERVER_UID && gid == triton::SERVER_UID => {}
        Some((uid, gid)) => {
            return Err(Error::new(format!(
                "the min image's {} user has uid {uid} and gid {gid}; compose.py requires 1000 for both",
                triton::SERVER_USER
            ))
            .hint("use a min image whose triton-server user has id 1000, or none"))
        }
        None => files.add_user(triton::SERVER_USER, triton::SERVER_UID, timestamp / 86_400)?,
    }
    Ok(files)
}

/// The directories the server writes to ([`triton::WRITABLE_DIRS`]) that
/// another user than root could not write in `tree`: each as a planned
/// directory and the step that makes it.
fn writable_dirs(
    tree: &crate::tree::MergedTree,
    other_user: bool,
    timestamp: u64,
) -> Vec<(PlannedEntry, Step)> {
    if !other_user {
        return Vec::new();
    }
    triton::WRITABLE_DIRS
        .iter()
        .map(|(dir, mode)| (ImagePath::from_static(dir), *mode))
        .filter(|(dir, mode)| {
            !tree
                .get(dir)
                .is_some_and(|n| n.meta.kind == EntryKind::Dir && n.meta.mode & 0o7777 == *mode)
        })
        .map(|(dir, mode)| {
            let step = Step::Run(format!(
                "mkdir -p {p} && chmod {mode:o} {p}",
                p = dir.display_abs()
            ));
            let entry = PlannedEntry {
                path: dir,
                meta: EntryMeta::plain_dir(mode, timestamp),
                content: Content::None,
            };
            (entry, step)
        })
        .collect()
}
