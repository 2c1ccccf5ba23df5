//! The SBOM of an image: an SPDX 2.3 JSON document.
//!
//! It lists every dpkg package (name, version, architecture, source
//! package, and the license of its Debian copyright file when that file is
//! machine-readable) and every python distribution the image's python sees
//! (`*.dist-info` and `*.egg-info` in its site directories), the Triton
//! core and each component (with TRITON_VERSION and the layer it is in),
//! the ELF files no package record owns, one package per directory root
//! ([`files`]), and the source images by digest. Relationships say that the image
//! CONTAINS each of them, that each GENERATED_FROM the image it was taken
//! from (min, or full for what was carried over), and that the image is a
//! DESCENDANT_OF min.
//!
//! The bytes depend on the inputs alone: the namespace is derived from the
//! image's config and layers, the creation time is the composed image's
//! (SOURCE_DATE_EPOCH or full's), and every list is sorted.
//!
//! [`Contents`] is gathered from what a compose knows
//! ([`Contents::of_composition`]) or from any scanned image
//! ([`Contents::of_image`]); [`document`] writes it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};

use crate::deps::dpkg;
use crate::deps::python::{self, normalize_name};
use crate::digest::Digest;
use crate::layer::ImagePath;
use crate::provenance;
use crate::tree::MergedTree;

mod files;

pub(crate) use files::{ElfFile, RecordFiles, Records};

/// The media type (and OCI `artifactType`) of an SPDX JSON document.
pub(crate) const MEDIA_TYPE: &str = "application/spdx+json";
/// The file compose writes into `--work-dir`.
pub(crate) const FILE_NAME: &str = "sbom.spdx.json";

/// Which source image something came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Role {
    Min,
    Full,
    GpuMin,
    /// The image itself (an SBOM computed for an image we did not compose).
    Image,
}

impl Role {
    fn word(self) -> &'static str {
        match self {
            Role::Min => "min",
            Role::Full => "full",
            Role::GpuMin => "gpu-min",
            Role::Image => "image",
        }
    }
}

/// A source image, by name and digest.
#[derive(Clone, Debug)]
pub(crate) struct Source {
    pub role: Role,
    pub name: String,
    pub id: Option<Digest>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct DebPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub source: String,
    /// The `License:` of the copyright file's `Files: *` paragraph.
    pub license: Option<String>,
    pub origin: Role,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PyDist {
    pub name: String,
    pub version: String,
    /// The dist-info or egg-info path.
    pub path: String,
    pub origin: Role,
}

/// The core or a component, and the layers it is in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Part {
    /// `core`, `backend python`, ...
    pub name: String,
    /// `(digest, diff-id)` of each layer holding it.
    pub layers: Vec<(String, String)>,
    pub origin: Role,
    /// Its directory: the files listed below it are its own.
    pub dir: ImagePath,
}

/// What an image holds, for its SBOM.
#[derive(Clone, Debug, Default)]
pub(crate) struct Contents {
    pub packages: Vec<DebPackage>,
    pub dists: Vec<PyDist>,
    pub parts: Vec<Part>,
    /// ELF files no package record owns ([`Records::unowned`]).
    pub files: Vec<ElfFile>,
    pub triton_version: Option<String>,
    /// `ID` of os-release (`debian`, `ubuntu`), for package URLs.
    pub distro: Option<String>,
}

/// Files an SBOM reads, besides dpkg's status and python's metadata
/// (which [`crate::deps::keeps`] keeps): Debian copyright files, egg-info
/// metadata and os-release.
pub(crate) fn keeps(path: &ImagePath) -> bool {
    let bytes = path.as_bytes();
    if bytes == b"etc/os-release" || bytes == b"usr/lib/os-release" {
        return true;
    }
    let parent = path.parent().unwrap_or_default();
    let name = path.file_name();
    (name == b"copyright"
        && parent
            .parent()
            .is_some_and(|d| d.as_bytes() == b"usr/share/doc"))
        || (name == b"PKG-INFO" && parent.file_name().ends_with(b".egg-info"))
        || name.ends_with(b".egg-info")
}

/// Files of one source as the image holds them.
pub(crate) struct Kept<'a> {
    pub files: &'a HashMap<ImagePath, Vec<u8>>,
    pub role: Role,
    /// True for the paths the image holds from this source.
    pub holds: &'a dyn Fn(&ImagePath) -> bool,
}

/// What an SBOM is gathered from: the kept files of each source, as the
/// image holds them.
pub(crate) struct Layered<'a> {
    pub kept: Vec<Kept<'a>>,
    /// The image's trees, to find its python.
    pub trees: Vec<&'a MergedTree>,
    pub architecture: &'a str,
}

impl Layered<'_> {
    fn file(&self, path: &ImagePath) -> Option<(&[u8], Role)> {
        self.kept.iter().find_map(|k| {
            ((k.holds)(path))
                .then(|| k.files.get(path))
                .flatten()
                .map(|b| (b.as_slice(), k.role))
        })
    }

    fn text(&self, path: &str) -> Option<String> {
        self.file(&ImagePath::from_static(path))
            .map(|(b, _)| String::from_utf8_lossy(b).into_owned())
    }

    fn all_paths(&self) -> BTreeSet<&ImagePath> {
        self.kept
            .iter()
            .flat_map(|k| k.files.keys().filter(|p| (k.holds)(p)))
            .collect()
    }
}

impl Contents {
    /// Packages from `status` (the image's dpkg status), each from
    /// `origin(name)`; distributions and licenses from the files.
    pub(crate) fn gather(
        files: &Layered<'_>,
        status: &str,
        origin: &dyn Fn(&str) -> Role,
        parts: Vec<Part>,
        triton_version: Option<String>,
    ) -> Contents {
        let mut packages: Vec<DebPackage> = dpkg::parse_status(status)
            .iter()
            .filter(|s| {
                s.field("Status")
                    .is_some_and(|st| !st.ends_with("not-installed"))
            })
            .map(|s| {
                let source = s
                    .field("Source")
                    .and_then(|v| v.split_whitespace().next())
                    .unwrap_or(&s.package)
                    .to_string();
                let copyright = format!("usr/share/doc/{}/copyright", s.package);
                DebPackage {
                    name: s.package.clone(),
                    version: s.field("Version").unwrap_or("").to_string(),
                    arch: s.arch.clone(),
                    source,
                    license: files.text(&copyright).and_then(|t| dep5_license(&t)),
                    origin: origin(&s.package),
                }
            })
            .collect();
        packages.sort();
        let distro = files
            .text("etc/os-release")
            .or_else(|| files.text("usr/lib/os-release"))
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("ID=")
                        .map(|v| v.trim_matches('"').to_string())
                })
            });
        Contents {
            packages,
            dists: python_dists(files),
            parts,
            files: Vec::new(),
            triton_version,
            distro,
        }
    }
}

/// Distributions in the site directories of the image's python.
fn python_dists(files: &Layered<'_>) -> Vec<PyDist> {
    let env = python::PythonEnv::of_image(&files.trees, |_| None, files.architecture);
    let sites: BTreeSet<ImagePath> =
        python::site_dirs(&files.trees, env.as_ref().map(|e| e.version.as_str()))
            .into_iter()
            .collect();
    let mut out = Vec::new();
    for path in files.all_paths() {
        let name = path.file_name();
        let dir = match name {
            b"METADATA" => path
                .parent()
                .filter(|d| d.file_name().ends_with(b".dist-info")),
            b"PKG-INFO" => path
                .parent()
                .filter(|d| d.file_name().ends_with(b".egg-info")),
            _ if name.ends_with(b".egg-info") => Some(path.clone()),
            _ => None,
        };
        let Some(dir) = dir else { continue };
        if !dir.parent().is_some_and(|p| sites.contains(&p)) {
            continue;
        }
        let Some((bytes, role)) = files.file(path) else {
            continue;
        };
        let text = String::from_utf8_lossy(bytes);
        let header = |key: &str| {
            text.lines()
                .take_while(|l| !l.trim().is_empty())
                .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        };
        if let (Some(name), Some(version)) = (header("Name:"), header("Version:")) {
            out.push(PyDist {
                name,
                version,
                path: dir.display_abs(),
                origin: role,
            });
        }
    }
    out.sort();
    out
}

/// The license a machine-readable Debian copyright file (DEP-5) gives for
/// `Files: *`, else its first `License:`.
fn dep5_license(text: &str) -> Option<String> {
    if !text.starts_with("Format:") {
        return None;
    }
    let paragraphs: Vec<&str> = text.split("\n\n").collect();
    let field = |p: &str, key: &str| {
        p.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
    };
    paragraphs
        .iter()
        .find(|p| field(p, "Files:").as_deref() == Some("*"))
        .and_then(|p| field(p, "License:"))
        .or_else(|| paragraphs.iter().find_map(|p| field(p, "License:")))
        .filter(|l| !l.is_empty())
}

/// A DEP-5 license name as an SPDX identifier, when it is one we know.
fn spdx_license(name: &str) -> Option<&'static str> {
    const KNOWN: &[(&str, &str)] = &[
        ("gpl-2", "GPL-2.0-only"),
        ("gpl-2+", "GPL-2.0-or-later"),
        ("gpl-3", "GPL-3.0-only"),
        ("gpl-3+", "GPL-3.0-or-later"),
        ("lgpl-2", "LGPL-2.0-only"),
        ("lgpl-2+", "LGPL-2.0-or-later"),
        ("lgpl-2.1", "LGPL-2.1-only"),
        ("lgpl-2.1+", "LGPL-2.1-or-later"),
        ("lgpl-3", "LGPL-3.0-only"),
        ("lgpl-3+", "LGPL-3.0-or-later"),
        ("apache-2.0", "Apache-2.0"),
        ("expat", "MIT"),
        ("mit", "MIT"),
        ("bsd-2-clause", "BSD-2-Clause"),
        ("bsd-3-clause", "BSD-3-Clause"),
        ("isc", "ISC"),
        ("zlib", "Zlib"),
        ("mpl-2.0", "MPL-2.0"),
        ("psf-2", "PSF-2.0"),
        ("openssl", "OpenSSL"),
        ("curl", "curl"),
        ("cc0-1.0", "CC0-1.0"),
    ];
    let lower = name.to_ascii_lowercase();
    KNOWN.iter().find(|(k, _)| *k == lower).map(|(_, v)| *v)
}

/// Letters, digits, `.` and `-` only, as SPDX identifiers allow.
fn id_part(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Percent-encodes what a package URL's version may not hold raw.
fn purl_escape(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What the document is about.
pub(crate) struct Meta<'a> {
    /// The image as the output names it.
    pub name: &'a str,
    /// Seconds since the epoch: the image's creation time.
    pub created: u64,
    pub sources: &'a [Source],
    /// Bytes that identify the image (its config and layer digests): the
    /// namespace is derived from them.
    pub identity: &'a [u8],
}

/// The SPDX 2.3 JSON document, canonical (sorted keys, no whitespace).
pub(crate) fn document(meta: &Meta<'_>, contents: &Contents) -> Vec<u8> {
    let mut doc = Document::default();
    doc.image(meta);
    let distro = contents.distro.as_deref().unwrap_or("debian");
    for (n, deb) in contents.packages.iter().enumerate() {
        doc.deb(n, deb, distro);
    }
    for (n, dist) in contents.dists.iter().enumerate() {
        doc.dist(n, dist);
    }
    let dirs: Vec<ImagePath> = contents.parts.iter().map(|p| p.dir.clone()).collect();
    let mut of_part: Vec<Vec<&ElfFile>> = vec![Vec::new(); contents.parts.len()];
    let mut by_root: BTreeMap<ImagePath, Vec<&ElfFile>> = BTreeMap::new();
    for file in &contents.files {
        match files::filed(&file.path, &dirs) {
            files::Filed::Part(index) => of_part[index].push(file),
            files::Filed::Root(root) => by_root.entry(root).or_default().push(file),
        }
    }
    for (n, (part, held)) in contents.parts.iter().zip(&of_part).enumerate() {
        let id = doc.part(n, part, contents.triton_version.as_deref());
        doc.files(&id, held);
    }
    for (n, (root, held)) in by_root.iter().enumerate() {
        let id = doc.file_root(n, root, held);
        doc.files(&id, held);
    }
    doc.finish(meta)
}

const IMAGE_ID: &str = "SPDXRef-Image";

/// An SPDX document being written: packages, relationships, and the
/// licenses it declares.
#[derive(Default)]
struct Document {
    packages: Vec<Value>,
    files: Vec<Value>,
    relationships: Vec<Value>,
    licenses: BTreeMap<String, String>,
    source_ids: HashMap<Role, String>,
}

impl Document {
    /// The image and its sources.
    fn image(&mut self, meta: &Meta<'_>) {
        self.packages.push(json!({
            "SPDXID": IMAGE_ID,
            "name": meta.name,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "CONTAINER",
        }));
        self.relationships
            .push(relation("SPDXRef-DOCUMENT", "DESCRIBES", IMAGE_ID));
        for source in meta.sources {
            let id = format!("SPDXRef-Source-{}", source.role.word());
            let mut package = json!({
                "SPDXID": id,
                "name": source.name,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "primaryPackagePurpose": "CONTAINER",
                "comment": format!("the {} image", source.role.word()),
            });
            if let Some(digest) = &source.id {
                package["versionInfo"] = json!(digest.as_str());
                package["checksums"] =
                    json!([{"algorithm": "SHA256", "checksumValue": digest.hex()}]);
            }
            self.packages.push(package);
            if source.role == Role::Min {
                self.relationships
                    .push(relation(IMAGE_ID, "DESCENDANT_OF", &id));
            }
            self.source_ids.insert(source.role, id);
        }
    }

    /// A package the image contains, generated from `origin`.
    fn contains(&mut self, package: Value, origin: Role) {
        let id = package["SPDXID"].as_str().expect("set").to_string();
        self.relationships.push(relation(IMAGE_ID, "CONTAINS", &id));
        if let Some(source) = self.source_ids.get(&origin) {
            self.relationships
                .push(relation(&id, "GENERATED_FROM", source));
        }
        self.packages.push(package);
    }

    fn deb(&mut self, n: usize, deb: &DebPackage, distro: &str) {
        let purl = format!(
            "pkg:deb/{distro}/{}@{}?arch={}",
            purl_escape(&deb.name),
            purl_escape(&deb.version),
            purl_escape(&deb.arch)
        );
        let mut package = json!({
            "SPDXID": format!("SPDXRef-deb-{n}-{}", id_part(&deb.name)),
            "name": deb.name,
            "versionInfo": deb.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "sourceInfo": format!("built from the {} source package", deb.source),
            "externalRefs": [purl_ref(&purl)],
        });
        if let Some(license) = &deb.license {
            let spdx = spdx_license(license)
                .map(str::to_string)
                .unwrap_or_else(|| {
                    let reference = format!("LicenseRef-{}", id_part(license));
                    self.licenses.insert(reference.clone(), license.clone());
                    reference
                });
            package["licenseDeclared"] = json!(spdx);
        }
        self.contains(package, deb.origin);
    }

    fn dist(&mut self, n: usize, dist: &PyDist) {
        let purl = format!(
            "pkg:pypi/{}@{}",
            purl_escape(&normalize_name(&dist.name)),
            purl_escape(&dist.version)
        );
        let package = json!({
            "SPDXID": format!("SPDXRef-pypi-{n}-{}", id_part(&dist.name)),
            "name": dist.name,
            "versionInfo": dist.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "comment": format!("python distribution at {}", dist.path),
            "externalRefs": [purl_ref(&purl)],
        });
        self.contains(package, dist.origin);
    }

    /// The part's package; returns its SPDX ID.
    fn part(&mut self, n: usize, part: &Part, triton_version: Option<&str>) -> String {
        let layers: Vec<String> = part
            .layers
            .iter()
            .map(|(digest, diff_id)| format!("{digest} (diff-id {diff_id})"))
            .collect();
        let mut package = json!({
            "SPDXID": format!("SPDXRef-triton-{n}-{}", id_part(&part.name)),
            "name": format!("tritonserver {}", part.name),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "supplier": "Organization: NVIDIA",
            "comment": format!("in layer {}", layers.join(", ")),
        });
        if let Some(version) = triton_version {
            package["versionInfo"] = json!(version);
        }
        let id = package["SPDXID"].as_str().expect("set").to_string();
        self.contains(package, part.origin);
        id
    }

    /// The package of the unowned files under a directory root outside
    /// Triton's parts; returns its SPDX ID.
    fn file_root(&mut self, n: usize, root: &ImagePath, held: &[&ElfFile]) -> String {
        let id = format!("SPDXRef-Files-{n}-{}", id_part(&root.display_abs()));
        let package = json!({
            "SPDXID": id,
            "name": root.display_abs(),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "comment": format!(
                "ELF files under {} that no dpkg or pip record owns",
                root.display_abs()
            ),
        });
        // Each file says which image it came from; the package, the first's.
        self.contains(package, held[0].origin);
        id
    }

    /// The files of the package `id`: each listed, with both digests, and
    /// the package's verification code.
    fn files(&mut self, id: &str, held: &[&ElfFile]) {
        if held.is_empty() {
            return;
        }
        for file in held {
            let file_id = format!("SPDXRef-File-{}", self.files.len());
            let mut comment = format!("ELF file of {} bytes", file.size);
            if let Some(soname) = &file.soname {
                comment.push_str(&format!("; soname {soname}"));
            }
            if let Some((version, from)) = file.version() {
                comment.push_str(&format!("; version {version} (from {from})"));
            }
            if let Some(note) = &file.package {
                let said: Vec<String> = [
                    ("type", &note.kind),
                    ("name", &note.name),
                    ("version", &note.version),
                    ("architecture", &note.architecture),
                    ("osCpe", &note.os_cpe),
                ]
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
                .collect();
                comment.push_str(&format!("; package note: {}", said.join(", ")));
            }
            self.files.push(json!({
                "SPDXID": file_id,
                "fileName": format!(".{}", file.path.display_abs()),
                "fileTypes": ["BINARY"],
                "checksums": [
                    {"algorithm": "SHA1", "checksumValue": file.digests.sha1},
                    {"algorithm": "SHA256", "checksumValue": file.digests.sha256},
                ],
                "comment": comment,
            }));
            self.relationships.push(relation(id, "CONTAINS", &file_id));
            if let Some(source) = self.source_ids.get(&file.origin) {
                self.relationships
                    .push(relation(&file_id, "GENERATED_FROM", source));
            }
        }
        let package = self
            .packages
            .iter_mut()
            .find(|p| p["SPDXID"] == id)
            .expect("the package was written first");
        package["filesAnalyzed"] = json!(true);
        package["packageVerificationCode"] =
            json!({"packageVerificationCodeValue": files::verification_code(held)});
    }

    fn finish(self, meta: &Meta<'_>) -> Vec<u8> {
        let namespace_seed = [meta.name.as_bytes(), b"\n", meta.identity].concat();
        let mut doc = json!({
            "spdxVersion": "SPDX-2.3",
            "dataLicense": "CC0-1.0",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": format!("SBOM of {}", meta.name),
            "documentNamespace": format!(
                "https://triton-compose.invalid/spdx/{}",
                Digest::of(&namespace_seed).hex()
            ),
            "creationInfo": {
                "created": provenance::rfc3339(meta.created),
                "creators": [format!("Tool: triton-compose-{}", env!("CARGO_PKG_VERSION"))],
            },
            "documentDescribes": [IMAGE_ID],
            "packages": self.packages,
            "relationships": self.relationships,
        });
        if !self.files.is_empty() {
            doc["files"] = json!(self.files);
        }
        if !self.licenses.is_empty() {
            doc["hasExtractedLicensingInfos"] = self
                .licenses
                .iter()
                .map(|(id, name)| {
                    json!({
                        "licenseId": id,
                        "name": name,
                        "extractedText": format!("License: {name} (as the package's Debian copyright file names it)"),
                    })
                })
                .collect();
        }
        crate::image::canonical_json(&doc)
    }
}

/// The SBOM of any image, from one scan of it (kept with [`keeps`] and
/// [`crate::deps::keeps`]): everything is the image's own.
pub(crate) fn for_image(
    source: &dyn crate::image::ImageSource,
    scanned: &crate::scan::ScannedImage,
) -> Vec<u8> {
    let image = source.image();
    let all = |_: &ImagePath| true;
    let files = Layered {
        kept: vec![Kept {
            files: &scanned.kept,
            role: Role::Image,
            holds: &all,
        }],
        trees: vec![&scanned.tree],
        architecture: image.config["architecture"].as_str().unwrap_or("amd64"),
    };
    let parts = image_parts(image, scanned);
    let status = scanned
        .kept
        .get(&ImagePath::from_static(dpkg::STATUS))
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let mut contents = Contents::gather(
        &files,
        &status,
        &|_| Role::Image,
        parts,
        crate::config::env_var(&image.config, "TRITON_SERVER_VERSION"),
    );
    let records = Records::new(&[(&scanned.kept, &scanned.listed)], &contents);
    contents.files = records.unowned(elf_files(&scanned.tree, &scanned.elf, Role::Image, |_| {
        true
    }));
    let created = image.config["created"]
        .as_str()
        .and_then(|t| crate::config::parse_timestamp(t).ok())
        .unwrap_or(0);
    let sources = [Source {
        role: Role::Image,
        name: source.name().to_string(),
        id: image.id.clone(),
    }];
    let mut identity = crate::image::canonical_json(&image.config);
    for layer in &image.layers {
        identity.extend_from_slice(layer.diff_id.as_str().as_bytes());
    }
    document(
        &Meta {
            name: source.name(),
            created,
            sources: &sources,
            identity: &identity,
        },
        &contents,
    )
}

/// The ELF files of a scanned tree whose digests the scan took, among the
/// paths `held` says the image holds.
pub(crate) fn elf_files<'a>(
    tree: &'a MergedTree,
    elf: &'a HashMap<crate::tree::InodeRef, crate::elf::ElfInfo>,
    origin: Role,
    held: impl Fn(&ImagePath) -> bool + 'a,
) -> impl Iterator<Item = ElfFile> + 'a {
    tree.iter().filter_map(move |(path, node)| {
        if node.meta.kind != crate::layer::EntryKind::File || !held(&path) {
            return None;
        }
        let info = elf.get(&node.inode)?;
        Some(ElfFile {
            size: node.meta.size,
            digests: info.digests.clone()?,
            soname: info.soname.clone(),
            package: info.package.clone(),
            origin,
            path,
        })
    })
}

/// The Triton parts of an image we did not compose: the core and each
/// component, with the layers that hold their files.
fn image_parts(
    image: &crate::image::SourceImage,
    scanned: &crate::scan::ScannedImage,
) -> Vec<Part> {
    use crate::triton::{self, ComponentKind};
    let layers_under = |root: &ImagePath| -> Vec<(String, String)> {
        let held: BTreeSet<u32> = scanned
            .tree
            .subtree(root)
            .map(|(_, n)| n.inode.layer)
            .collect();
        held.into_iter()
            .filter_map(|i| image.layers.get(i as usize))
            .map(|l| {
                let digest = l
                    .blob
                    .as_ref()
                    .map_or_else(|| "?".to_string(), |b| b.0.to_string());
                (digest, l.diff_id.to_string())
            })
            .collect()
    };
    let install = triton::install_dir();
    let mut parts = Vec::new();
    if scanned.tree.contains(&install) {
        parts.push(Part {
            name: "core".into(),
            layers: layers_under(&install.join(b"bin")),
            origin: Role::Image,
            dir: install.clone(),
        });
        for kind in ComponentKind::ALL {
            for name in triton::offered(&scanned.tree, kind) {
                let path = triton::kind_dir(kind).join(name.as_bytes());
                parts.push(Part {
                    name: format!("{} {name}", kind.noun()),
                    layers: layers_under(&path),
                    origin: Role::Image,
                    dir: path,
                });
            }
        }
    }
    parts
}

/// `triton-compose sbom REF`: the SBOM attached to the image, else (or
/// with `compute`) one computed by reading it.
pub fn of_reference(
    reference: &crate::transport::ImageRef,
    options: &crate::transport::Options,
    compute: bool,
) -> crate::error::Result<Vec<u8>> {
    let source = crate::transport::open_source(reference, options)?;
    if !compute {
        if let Some(attached) = source.referrer(MEDIA_TYPE)? {
            tracing::info!("{}: the SBOM attached to it", source.name());
            return Ok(attached);
        }
        tracing::info!("{}: no SBOM attached; computing one", source.name());
    }
    let keep = |p: &ImagePath| keeps(p) || crate::deps::keeps(p);
    let every = |_: &ImagePath| true;
    let scanned = crate::scan::scan(
        source.as_ref(),
        "image",
        crate::scan::ScanOptions {
            keep: Some(&keep),
            listed: Some(&crate::deps::lists),
            elf: Some(&every),
            digests: true,
            ..Default::default()
        },
    )?;
    let sbom = for_image(source.as_ref(), &scanned);
    // A lookup that could not read the tree on disk answered "absent".
    scanned.tree.health()?;
    Ok(sbom)
}

/// A package URL, as SPDX references one.
fn purl_ref(locator: &str) -> Value {
    json!({
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": locator,
    })
}

fn relation(from: &str, kind: &str, to: &str) -> Value {
    json!({
        "spdxElementId": from,
        "relationshipType": kind,
        "relatedSpdxElement": to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep5_licenses_map_to_spdx_or_license_refs() {
        let text = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
Upstream-Name: x\n\nFiles: debian/*\nLicense: GPL-3+\n\nFiles: *\nCopyright: someone\nLicense: LGPL-2.1+\n";
        assert_eq!(dep5_license(text).as_deref(), Some("LGPL-2.1+"));
        assert_eq!(spdx_license("LGPL-2.1+"), Some("LGPL-2.1-or-later"));
        assert_eq!(dep5_license("This is free software.\nLicense: GPL\n"), None);
        assert_eq!(id_part("libstdc++6"), "libstdc--6");
        assert_eq!(purl_escape("1:2.3+dfsg-1~b1"), "1%3A2.3%2Bdfsg-1~b1");
    }

    /// A package of min, a distribution of full and one part.
    fn sample_contents() -> Contents {
        Contents {
            packages: vec![DebPackage {
                name: "libc6".into(),
                version: "2.36-9".into(),
                arch: "amd64".into(),
                source: "glibc".into(),
                license: Some("public-domain and GPL-2+".into()),
                origin: Role::Min,
            }],
            dists: vec![PyDist {
                name: "numpy".into(),
                version: "1.26.4".into(),
                path: "/usr/lib/python3/dist-packages/numpy-1.26.4.dist-info".into(),
                origin: Role::Full,
            }],
            parts: vec![Part {
                name: "backend python".into(),
                layers: vec![("sha256:aa".into(), "sha256:bb".into())],
                origin: Role::Full,
                dir: ImagePath::from_static("opt/tritonserver/backends/python"),
            }],
            files: Vec::new(),
            triton_version: Some("2.51.0".into()),
            distro: Some("debian".into()),
        }
    }

    #[test]
    fn the_document_depends_on_its_inputs_alone() {
        let contents = sample_contents();
        let sources = [
            Source {
                role: Role::Min,
                name: "min".into(),
                id: Some(Digest::of(b"min")),
            },
            Source {
                role: Role::Full,
                name: "full".into(),
                id: None,
            },
        ];
        let meta = Meta {
            name: "out",
            created: 0,
            sources: &sources,
            identity: b"config",
        };
        let one = document(&meta, &contents);
        assert_eq!(one, document(&meta, &contents));
        let doc: Value = serde_json::from_slice(&one).unwrap();
        assert_eq!(doc["creationInfo"]["created"], "1970-01-01T00:00:00Z");
        let relations: Vec<(String, String, String)> = doc["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["spdxElementId"].as_str().unwrap().into(),
                    r["relationshipType"].as_str().unwrap().into(),
                    r["relatedSpdxElement"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert!(relations.contains(&(
            "SPDXRef-pypi-0-numpy".into(),
            "GENERATED_FROM".into(),
            "SPDXRef-Source-full".into()
        )));
        assert!(relations.contains(&(
            "SPDXRef-Image".into(),
            "CONTAINS".into(),
            "SPDXRef-deb-0-libc6".into()
        )));
        assert_eq!(
            doc["hasExtractedLicensingInfos"][0]["licenseId"],
            "LicenseRef-public-domain-and-GPL-2-"
        );
        let other = Meta {
            identity: b"another config",
            ..meta
        };
        assert_ne!(
            serde_json::from_slice::<Value>(&document(&other, &contents)).unwrap()
                ["documentNamespace"],
            doc["documentNamespace"]
        );
    }
}
