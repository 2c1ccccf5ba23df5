//! Builds small images in code (OCI layouts and docker-archives) and reads
//! composed images back, independently of the crate's own readers, so the
//! tests check the tool against a second implementation. Also used by the
//! demo example.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use flate2::write::GzEncoder;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// One entry of a layer under construction.
#[derive(Clone, Debug)]
pub enum Item {
    Dir {
        path: String,
        mode: u32,
        uid: u64,
    },
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
        uid: u64,
        gid: u64,
        xattrs: Vec<(String, Vec<u8>)>,
    },
    Symlink {
        path: String,
        target: String,
    },
    HardLink {
        path: String,
        target: String,
    },
    Whiteout {
        path: String,
    },
    Opaque {
        dir: String,
    },
    /// Raw bytes appended as-is (for hostile archives).
    Raw(Vec<u8>),
}

pub fn dir(path: &str) -> Item {
    Item::Dir {
        path: path.into(),
        mode: 0o755,
        uid: 0,
    }
}
pub fn file(path: &str, data: &str) -> Item {
    Item::File {
        path: path.into(),
        data: data.as_bytes().to_vec(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        xattrs: vec![],
    }
}
pub fn exe(path: &str, data: &str) -> Item {
    Item::File {
        path: path.into(),
        data: data.as_bytes().to_vec(),
        mode: 0o755,
        uid: 0,
        gid: 0,
        xattrs: vec![],
    }
}
/// An executable file of any bytes (compiled ELF files).
pub fn bin(path: &str, data: &[u8]) -> Item {
    Item::File {
        path: path.into(),
        data: data.to_vec(),
        mode: 0o755,
        uid: 0,
        gid: 0,
        xattrs: vec![],
    }
}

/// Compiles `source` into the shared library `dir/name` with soname
/// `soname`, linking against what `dir` holds; `libc`: with the C library
/// (else `-nostdlib`, so that no image needs one).
pub fn cc_library(
    dir: &Path,
    (name, soname): (&str, &str),
    source: &str,
    extra: &[&str],
    libc: bool,
) -> Vec<u8> {
    let src = dir.join(format!("{name}.c"));
    fs::write(&src, source).unwrap();
    let out = dir.join(name);
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC"])
        .args((!libc).then_some("-nostdlib"))
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .arg(format!("-Wl,-soname,{soname}"))
        .arg(format!("-L{}", dir.display()))
        .args(extra)
        .status()
        .expect("a C compiler (cc) is installed");
    assert!(status.success(), "cc failed for {name}");
    fs::read(out).unwrap()
}

pub fn symlink(path: &str, target: &str) -> Item {
    Item::Symlink {
        path: path.into(),
        target: target.into(),
    }
}
pub fn hardlink(path: &str, target: &str) -> Item {
    Item::HardLink {
        path: path.into(),
        target: target.into(),
    }
}
pub fn whiteout(path: &str) -> Item {
    Item::Whiteout { path: path.into() }
}
pub fn opaque(dir: &str) -> Item {
    Item::Opaque { dir: dir.into() }
}

/// An uncompressed layer tar, as Docker writes them (PAX for extras).
pub fn layer_tar(items: &[Item]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        match item {
            Item::Dir { path, mode, uid } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_uid(*uid);
                header.set_gid(*uid);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{path}/"), std::io::empty())
                    .unwrap();
            }
            Item::File {
                path,
                data,
                mode,
                uid,
                gid,
                xattrs,
            } => {
                if !xattrs.is_empty() {
                    let records: Vec<(String, &[u8])> = xattrs
                        .iter()
                        .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                        .collect();
                    builder
                        .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
                        .unwrap();
                }
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_uid(*uid);
                header.set_gid(*gid);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, &data[..]).unwrap();
            }
            Item::Symlink { path, target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
            Item::HardLink { path, target } => {
                header.set_entry_type(tar::EntryType::Link);
                header.set_mode(0o644);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
            Item::Whiteout { path } => {
                let (parent, name) = path
                    .rsplit_once('/')
                    .map_or(("", path.as_str()), |(p, n)| (p, n));
                let wh = if parent.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{parent}/.wh.{name}")
                };
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(0);
                builder
                    .append_data(&mut header, wh, std::io::empty())
                    .unwrap();
            }
            Item::Opaque { dir } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{dir}/.wh..wh..opq"), std::io::empty())
                    .unwrap();
            }
            Item::Raw(bytes) => builder.get_mut().extend_from_slice(bytes),
        }
    }
    builder.into_inner().unwrap()
}

/// A xorshift stream: cheap, fixed pseudo-random numbers from `seed`.
pub fn xorshift(seed: u64) -> impl Iterator<Item = u64> {
    let mut state = seed | 1;
    std::iter::repeat_with(move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    })
}

/// ASCII noise that deflate cannot shrink much, so that layers holding it
/// are large and slow to write.
pub fn noise(len: usize, seed: u64) -> String {
    (xorshift(seed).take(len))
        .map(|n| (b'a' + (n % 26) as u8) as char)
        .collect()
}

/// Bytes of a given entropy: random over `symbols` letters (2 bits each
/// for 4), or over every byte (256).
pub fn random_bytes(len: usize, symbols: u64, seed: u64) -> Vec<u8> {
    (xorshift(seed).take(len))
        .map(|n| {
            let byte = (n >> 24) as u8;
            if symbols < 256 {
                b'A' + byte % symbols as u8
            } else {
                byte
            }
        })
        .collect()
}

/// Gzip at the default level, as Docker writes layers: deflate blocks of
/// ordinary size, so that access points can be found in them.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// An image under construction: uncompressed layer tars and a config.
#[derive(Clone)]
pub struct TestImage {
    pub layers: Vec<Vec<u8>>,
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub created: String,
    /// rootfs.diff_ids as written, when a test wants them to lie.
    pub diff_ids_override: Option<Vec<String>>,
    /// The config's architecture (`amd64` unless a test says otherwise).
    pub architecture: String,
}

/// Lists a manifest or index in a layout's index.json under a tag.
fn add_to_oci_index(dir: &Path, tag: &str, media_type: &str, digest: &str, size: usize) {
    let index_path = dir.join("index.json");
    let mut manifests: Vec<Value> = if index_path.exists() {
        let index: Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
        index["manifests"].as_array().unwrap().clone()
    } else {
        vec![]
    };
    manifests.push(json!({
        "mediaType": media_type,
        "digest": digest, "size": size,
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }));
    fs::write(
        index_path,
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests})).unwrap(),
    )
    .unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

impl TestImage {
    /// The true diff-ids of the layers.
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| sha256(l)).collect()
    }

    pub fn new(layers: Vec<Vec<u8>>) -> TestImage {
        TestImage {
            layers,
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            labels: BTreeMap::new(),
            entrypoint: None,
            cmd: Some(vec!["/bin/bash".into()]),
            created: "2024-10-01T00:00:00Z".into(),
            diff_ids_override: None,
            architecture: "amd64".into(),
        }
    }

    pub fn config(&self) -> Value {
        let diff_ids = self
            .diff_ids_override
            .clone()
            .unwrap_or_else(|| self.diff_ids());
        let history: Vec<Value> = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, _)| json!({"created": self.created, "created_by": format!("layer {i}")}))
            .collect();
        let mut config = json!({"Env": self.env, "Labels": self.labels, "Cmd": self.cmd});
        if let Some(e) = &self.entrypoint {
            config["Entrypoint"] = json!(e);
        }
        json!({
            "architecture": self.architecture,
            "os": "linux",
            "created": self.created,
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
            "x-unknown-field": {"kept": true},
        })
    }

    /// Writes an OCI layout with gzip layers, tagged `tag`. Returns the
    /// compressed layer blobs' digests.
    pub fn write_oci(&self, dir: &Path, tag: &str) -> Vec<String> {
        let (manifest_digest, manifest_size, digests) = self.write_oci_manifest(dir);
        add_to_oci_index(
            dir,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            &manifest_digest,
            manifest_size,
        );
        digests
    }

    /// Writes the blobs and manifest into a layout; (digest, size, layer digests).
    fn write_oci_manifest(&self, dir: &Path) -> (String, usize, Vec<String>) {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        let put = |data: &[u8]| -> (String, usize) {
            let digest = sha256(data);
            fs::write(blobs.join(&digest[7..]), data).unwrap();
            (digest, data.len())
        };
        let mut layer_descs = Vec::new();
        let mut digests = Vec::new();
        for layer in &self.layers {
            let (digest, size) = put(&gzip(layer));
            digests.push(digest.clone());
            layer_descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size}));
        }
        let config = serde_json::to_vec(&self.config()).unwrap();
        let (config_digest, config_size) = put(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": layer_descs,
        }))
        .unwrap();
        let (manifest_digest, manifest_size) = put(&manifest);
        (manifest_digest, manifest_size, digests)
    }

    /// Writes several images (one per architecture, from their configs)
    /// under one image index tagged `tag`.
    pub fn write_oci_multi(dir: &Path, tag: &str, images: &[&TestImage]) {
        let entries: Vec<Value> = images
            .iter()
            .map(|image| {
                let (digest, size, _) = image.write_oci_manifest(dir);
                json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest, "size": size,
                    "platform": {"os": "linux", "architecture": image.architecture},
                })
            })
            .collect();
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }))
        .unwrap();
        let digest = sha256(&index);
        fs::write(dir.join("blobs/sha256").join(&digest[7..]), &index).unwrap();
        add_to_oci_index(
            dir,
            tag,
            "application/vnd.oci.image.index.v1+json",
            &digest,
            index.len(),
        );
    }

    /// Writes a docker-archive. `legacy` uses `<id>/layer.tar` members and
    /// stores a repeated layer as a symlink, as old `docker save` did;
    /// otherwise Docker 25's blobs/sha256 layout with index.json.
    pub fn write_docker_archive(&self, file: &Path, name: &str, legacy: bool) {
        let mut builder = tar::Builder::new(Vec::new());
        let add = |builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            h.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut h, path, data).unwrap();
        };
        let config = serde_json::to_vec(&self.config()).unwrap();
        let config_digest = sha256(&config);
        let mut layer_paths = Vec::new();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for layer in &self.layers {
            let digest = sha256(layer);
            if legacy {
                let id = &digest[7..];
                let path = format!("{id}/layer.tar");
                if let Some(first) = seen.get(&digest) {
                    // Already stored: docker save links duplicates.
                    let alias = format!("{}x/layer.tar", &id[..20]);
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    builder
                        .append_link(&mut h, &alias, format!("../{first}"))
                        .unwrap();
                    layer_paths.push(alias);
                    continue;
                }
                add(&mut builder, &path, layer);
                seen.insert(digest.clone(), path.clone());
                layer_paths.push(path);
            } else {
                let path = format!("blobs/sha256/{}", &digest[7..]);
                if seen.insert(digest.clone(), path.clone()).is_none() {
                    add(&mut builder, &path, layer);
                }
                layer_paths.push(path);
            }
        }
        let config_path = if legacy {
            format!("{}.json", &config_digest[7..])
        } else {
            format!("blobs/sha256/{}", &config_digest[7..])
        };
        add(&mut builder, &config_path, &config);
        let manifest = json!([{"Config": config_path, "RepoTags": [name], "Layers": layer_paths}]);
        add(
            &mut builder,
            "manifest.json",
            &serde_json::to_vec(&manifest).unwrap(),
        );
        if !legacy {
            add(
                &mut builder,
                "oci-layout",
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            );
        }
        fs::write(file, builder.into_inner().unwrap()).unwrap();
    }
}

/// A composed file, as the tests compare them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub content: Option<String>,
    pub link: Option<String>,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// An image read back: config, layer blobs (as stored) and the merged tree.
pub struct ReadImage {
    pub manifest: Value,
    pub manifest_digest: String,
    pub config: Value,
    pub layer_digests: Vec<String>,
    /// Paths of each layer, in archive order.
    pub layer_paths: Vec<Vec<String>>,
    pub tree: BTreeMap<String, FileInfo>,
}

fn decompress(data: &[u8]) -> Vec<u8> {
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::decode_all(data).unwrap()
    } else {
        data.to_vec()
    }
}

/// Applies a layer to a tree, whiteouts included (a simple second
/// implementation, for cross-checking). Devices and FIFOs are kind 'o'.
pub fn apply_layer(tree: &mut BTreeMap<String, FileInfo>, tar_bytes: impl Read) -> Vec<String> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut paths = Vec::new();
    let mut contents: BTreeMap<String, FileInfo> = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = String::from_utf8(entry.path_bytes().to_vec()).unwrap();
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        paths.push(path.clone());
        let name = path.rsplit('/').next().unwrap().to_string();
        let parent = path
            .rsplit_once('/')
            .map(|(p, _)| p.to_string())
            .unwrap_or_default();
        if name == ".wh..wh..opq" {
            let prefix = format!("{parent}/");
            tree.retain(|k, _| !k.starts_with(&prefix));
            continue;
        }
        if let Some(target) = name.strip_prefix(".wh.") {
            let victim = if parent.is_empty() {
                target.to_string()
            } else {
                format!("{parent}/{target}")
            };
            let prefix = format!("{victim}/");
            tree.retain(|k, _| k != &victim && !k.starts_with(&prefix));
            continue;
        }
        let h = entry.header().clone();
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                if let Some(n) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.push((n.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8(l.to_vec()).unwrap());
        let kind = match h.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Regular => 'f',
            _ => 'o',
        };
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        let info = if kind == 'h' {
            // A hard link is its target's inode: same mode, owner, content.
            let name = link.as_ref().unwrap();
            let target = contents
                .get(name.trim_start_matches("./").trim_start_matches('/'))
                .unwrap_or_else(|| {
                    panic!("{path}: hard link target {name} is not earlier in the layer")
                });
            FileInfo {
                kind: 'h',
                link: link.clone(),
                ..target.clone()
            }
        } else {
            FileInfo {
                kind,
                mode: h.mode().unwrap() & 0o7777,
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                size: data.len() as u64,
                content: (kind == 'f').then(|| sha256(&data)),
                link,
                xattrs,
            }
        };
        if kind == 'f' {
            contents.insert(path.clone(), info.clone());
        }
        tree.insert(path, info);
    }
    paths
}

/// Reads a composed image from an OCI layout.
pub fn read_oci(dir: &Path, tag: &str) -> ReadImage {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"));
    let blob = |digest: &str| fs::read(dir.join("blobs/sha256").join(&digest[7..])).unwrap();
    let manifest_digest = desc["digest"].as_str().unwrap().to_string();
    let manifest: Value = serde_json::from_slice(&blob(&manifest_digest)).unwrap();
    let config_bytes = blob(manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(sha256(&config_bytes), manifest["config"]["digest"]);
    let config: Value = serde_json::from_slice(&config_bytes).unwrap();
    let mut tree = BTreeMap::new();
    let mut layer_digests = Vec::new();
    let mut layer_paths = Vec::new();
    for (i, layer) in manifest["layers"].as_array().unwrap().iter().enumerate() {
        let digest = layer["digest"].as_str().unwrap();
        let data = blob(digest);
        assert_eq!(sha256(&data), digest, "layer blob digest");
        assert_eq!(data.len() as u64, layer["size"].as_u64().unwrap());
        let tar_bytes = decompress(&data);
        assert_eq!(
            sha256(&tar_bytes),
            config["rootfs"]["diff_ids"][i],
            "diff_id of layer {i}"
        );
        layer_paths.push(apply_layer(&mut tree, &tar_bytes[..]));
        layer_digests.push(digest.to_string());
    }
    ReadImage {
        manifest,
        manifest_digest,
        config,
        layer_digests,
        layer_paths,
        tree,
    }
}

/// Reads a docker-archive through its manifest.json, as `docker load` does.
pub fn read_docker_archive(file: &Path) -> (Value, ReadImage) {
    let mut members: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut archive = tar::Archive::new(fs::File::open(file).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        members.insert(path, data);
    }
    let manifest_json: Value = serde_json::from_slice(&members["manifest.json"]).unwrap();
    let entry = &manifest_json[0];
    let config: Value =
        serde_json::from_slice(&members[entry["Config"].as_str().unwrap()]).unwrap();
    let mut tree = BTreeMap::new();
    let mut layer_digests = Vec::new();
    let mut layer_paths = Vec::new();
    for (i, layer) in entry["Layers"].as_array().unwrap().iter().enumerate() {
        let data = &members[layer.as_str().unwrap()];
        let tar_bytes = decompress(data);
        assert_eq!(sha256(&tar_bytes), config["rootfs"]["diff_ids"][i]);
        layer_paths.push(apply_layer(&mut tree, &tar_bytes[..]));
        layer_digests.push(sha256(data));
    }
    let index: Value = serde_json::from_slice(&members["index.json"]).unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest: Value =
        serde_json::from_slice(&members[&format!("blobs/sha256/{}", &manifest_digest[7..])])
            .unwrap();
    (
        manifest_json.clone(),
        ReadImage {
            manifest,
            manifest_digest,
            config,
            layer_digests,
            layer_paths,
            tree,
        },
    )
}

pub const LONG_NAME: &str = "opt/tritonserver/backends/python/a_directory_name_long_enough_to_need_an_extension_record/and_then_some_file_name_too.py";

/// A Debian-like min image: accounts with an `ubuntu` user at uid 1000.
pub fn min_image() -> TestImage {
    let base = layer_tar(&[
        dir("etc"),
        file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\nubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash\n",
        ),
        file("etc/group", "root:x:0:\nubuntu:x:1000:\n"),
        Item::File {
            path: "etc/shadow".into(),
            data: b"root:*:19000:0:99999:7:::\nubuntu:!:19000:0:99999:7:::\n".to_vec(),
            mode: 0o640,
            uid: 0,
            gid: 42,
            xattrs: vec![],
        },
        file("etc/gshadow", "root:*::\nubuntu:!::\n"),
        dir("opt"),
        dir("usr"),
        dir("usr/bin"),
        exe("usr/bin/sh", "#!fake shell\n"),
    ]);
    let second = layer_tar(&[file("etc/os-release", "ID=debian\n")]);
    TestImage::new(vec![base, second])
}

/// A full image built FROM min (sharing its first layer), with Triton laid
/// out across several layers, one of which deletes and hides earlier files.
pub fn full_image(min: &TestImage) -> TestImage {
    let triton = layer_tar(&[
        dir("usr/share"),
        dir("usr/share/doc"),
        file("usr/share/doc/outside.txt", "outside the selection\n"),
        dir("opt/tritonserver"),
        file("opt/tritonserver/LICENSE", "BSD-3-Clause\n"),
        file("opt/tritonserver/TRITON_VERSION", "2.51.0\n"),
        dir("opt/tritonserver/bin"),
        Item::File {
            path: "opt/tritonserver/bin/tritonserver".into(),
            data: b"\x7fELF fake server".to_vec(),
            mode: 0o755, uid: 0, gid: 0,
            xattrs: vec![("user.triton.origin".into(), b"full".to_vec())],
        },
        dir("opt/tritonserver/lib"),
        file("opt/tritonserver/lib/libtritonserver.so", "old core library\n"),
        file("opt/tritonserver/lib/libfoo.so.1.0", "foo\n"),
        symlink("opt/tritonserver/lib/libfoo.so.1", "libfoo.so.1.0"),
        dir("opt/tritonserver/include"),
        file("opt/tritonserver/include/old.h", "old\n"),
        dir("opt/tritonserver/backends"),
        dir("opt/tritonserver/backends/python"),
        exe("opt/tritonserver/backends/python/libtriton_python.so", "python backend\n"),
        hardlink("opt/tritonserver/backends/python/libtriton_python_copy.so", "opt/tritonserver/backends/python/libtriton_python.so"),
        hardlink("opt/tritonserver/backends/python/outside_link.txt", "usr/share/doc/outside.txt"),
        Item::File { path: "opt/tritonserver/backends/python/owned_by_1000".into(), data: b"x".to_vec(), mode: 0o600, uid: 1000, gid: 1000, xattrs: vec![] },
        file("opt/tritonserver/backends/python/removed.txt", "to be deleted\n"),
        dir("opt/tritonserver/backends/python/a_directory_name_long_enough_to_need_an_extension_record"),
        file(LONG_NAME, "long\n"),
        dir("opt/tritonserver/backends/onnxruntime"),
        file("opt/tritonserver/backends/onnxruntime/libtriton_onnxruntime.so", "onnx\n"),
        dir("opt/tritonserver/backends/identity"),
        file("opt/tritonserver/backends/identity/libtriton_identity.so", "identity\n"),
        dir("opt/tritonserver/repoagents"),
        dir("opt/tritonserver/repoagents/checksum"),
        file("opt/tritonserver/repoagents/checksum/libtritonrepoagent_checksum.so", "checksum\n"),
        dir("opt/tritonserver/caches"),
        dir("opt/tritonserver/caches/local"),
        file("opt/tritonserver/caches/local/libtritoncache_local.so", "local\n"),
        dir("opt/tritonserver/caches/redis"),
        file("opt/tritonserver/caches/redis/libtritoncache_redis.so", "redis\n"),
    ]);
    let changes = layer_tar(&[
        whiteout("opt/tritonserver/backends/identity"),
        opaque("opt/tritonserver/include"),
        file("opt/tritonserver/include/new.h", "new\n"),
        file(
            "opt/tritonserver/lib/libtritonserver.so",
            "new core library\n",
        ),
        whiteout("opt/tritonserver/backends/python/removed.txt"),
    ]);
    let entrypoint = layer_tar(&[
        dir("opt/nvidia"),
        exe(
            "opt/nvidia/nvidia_entrypoint.sh",
            "#!/bin/bash\nexec \"$@\"\n",
        ),
        dir("opt/nvidia/entrypoint.d"),
        file("opt/nvidia/entrypoint.d/10-banner.txt", "Triton\n"),
    ]);
    let mut full = TestImage::new(vec![min.layers[0].clone(), triton, changes, entrypoint]);
    full.env.extend([
        "TRITON_SERVER_VERSION=2.51.0".to_string(),
        "NVIDIA_TRITON_SERVER_VERSION=24.10".to_string(),
        "TRITON_SERVER_GPU_ENABLED=0".to_string(),
        "NVIDIA_BUILD_ID=121212".to_string(),
    ]);
    full.labels
        .insert("com.nvidia.build.id".into(), "121212".into());
    full.labels
        .insert("com.nvidia.build.ref".into(), "0123abcd".into());
    full.entrypoint = Some(vec!["/opt/nvidia/nvidia_entrypoint.sh".into()]);
    full.created = "2024-11-05T10:00:00Z".into();
    full
}

/// A raw tar header with an arbitrary name and type, bypassing the tar
/// crate's own checks (for hostile archives).
pub fn raw_header(name: &[u8], typeflag: u8, size: u64) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    {
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
    }
    header.as_mut_bytes()[156] = typeflag;
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(size);
    header.set_mtime(0);
    header.set_cksum();
    header.as_bytes().to_vec()
}

/// A layer with the account files and the triton-server user (uid 1000), as
/// NGC's full images add it in their own layers.
pub fn server_accounts_layer() -> Vec<u8> {
    layer_tar(&[
        dir("etc"),
        file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\ntriton-server:x:1000:1000::/home/triton-server:/bin/sh\n",
        ),
        file("etc/group", "root:x:0:\ntriton-server:x:1000:\n"),
    ])
}

/// A full image built FROM min the way build.py builds NGC's: all of min's
/// layers first, then Triton, and the triton-server account added in full's
/// own layers.
pub fn full_image_from(min: &TestImage) -> TestImage {
    let mut full = full_image(min);
    let mut layers = min.layers.clone();
    layers.push(server_accounts_layer());
    layers.extend(full.layers[1..].iter().cloned());
    full.layers = layers;
    full
}

/// The layer digests of an image in an OCI layout, bottom first.
pub fn oci_layer_digests(dir: &Path, tag: &str) -> Vec<String> {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    let digest = desc["digest"].as_str().unwrap();
    let manifest: Value =
        serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(&digest[7..])).unwrap())
            .unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// A GPU min image with CUDA where NGC's has it: /usr/local/cuda a symlink
/// to a versioned tree, sonames symlinks to versioned files.
pub fn gpu_min_image() -> TestImage {
    let stub = |name: &str| Item::File {
        path: format!("usr/local/cuda-12.4/targets/x86_64-linux/lib/stubs/{name}"),
        data: format!("stub {name}\n").into_bytes(),
        mode: 0o755,
        uid: 1000,
        gid: 1000,
        xattrs: vec![],
    };
    let lib = "usr/local/cuda-12.4/targets/x86_64-linux/lib";
    let mut cuda = vec![
        dir("usr"),
        dir("usr/local"),
        dir("usr/local/cuda-12.4"),
        dir("usr/local/cuda-12.4/targets"),
        dir("usr/local/cuda-12.4/targets/x86_64-linux"),
        dir(lib),
        dir(&format!("{lib}/stubs")),
        symlink("usr/local/cuda", "cuda-12.4"),
        symlink("usr/local/cuda-12.4/lib64", "targets/x86_64-linux/lib"),
    ];
    for name in [
        "libcusparse.so",
        "libcusolver.so",
        "libcurand.so",
        "libcufft.so",
        "libcublas.so",
        "libcublasLt.so",
    ] {
        cuda.push(stub(name));
    }
    cuda.extend([
        file(&format!("{lib}/libcudart.so.12.4.127"), "cudart\n"),
        symlink(&format!("{lib}/libcudart.so.12"), "libcudart.so.12.4.127"),
        // A target whose name the scan does not expect: read in a second pass.
        file(&format!("{lib}/cupti-real.bin"), "cupti\n"),
        symlink(&format!("{lib}/libcupti.so.12"), "cupti-real.bin"),
        file(&format!("{lib}/libnvToolsExt.so.1"), "nvtx\n"),
        file(&format!("{lib}/libnvJitLink.so.12.4.99"), "jitlink\n"),
        symlink(
            &format!("{lib}/libnvJitLink.so.12"),
            "libnvJitLink.so.12.4.99",
        ),
        file(&format!("{lib}/libcufft.so.11.2.1"), "not copied\n"),
    ]);
    let mut hpcx = vec![
        dir("opt"),
        dir("opt/hpcx"),
        dir("opt/hpcx/ucc"),
        dir("opt/hpcx/ucc/lib"),
        dir("opt/hpcx/ucx"),
        dir("opt/hpcx/ucx/lib"),
        file("opt/hpcx/ucc/lib/libucc.so.1.0.0", "ucc\n"),
        symlink("opt/hpcx/ucc/lib/libucc.so.1", "libucc.so.1.0.0"),
        dir("usr/lib"),
        dir("usr/lib/x86_64-linux-gnu"),
        file("usr/lib/x86_64-linux-gnu/libcudnn.so.9.1.0", "cudnn\n"),
        symlink(
            "usr/lib/x86_64-linux-gnu/libcudnn.so.9",
            "libcudnn.so.9.1.0",
        ),
        file("usr/lib/x86_64-linux-gnu/libnccl.so.2.21.5", "nccl\n"),
        symlink(
            "usr/lib/x86_64-linux-gnu/libnccl.so.2",
            "/usr/lib/x86_64-linux-gnu/libnccl.so.2.21.5",
        ),
    ];
    for name in ["libucm", "libucp", "libucs", "libuct"] {
        hpcx.push(file(
            &format!("opt/hpcx/ucx/lib/{name}.so.0"),
            &format!("{name}\n"),
        ));
    }
    let mut image = TestImage::new(vec![layer_tar(&cuda), layer_tar(&hpcx)]);
    image.env.push("CUDA_VERSION=12.4.1".into());
    image
}

/// Writes into `dst` an OCI layout of the image `src:tag` with `layer` (an
/// uncompressed tar) on top and `env` set in its config (`KEY=VALUE`,
/// replacing a variable of that name). Blobs are hard-linked, not copied.
pub fn derive_oci(src: &Path, tag: &str, dst: &Path, layer: Option<&[u8]>, env: &[&str]) {
    let blob = |dir: &Path, digest: &str| dir.join("blobs/sha256").join(&digest[7..]);
    let index: Value = serde_json::from_slice(&fs::read(src.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("{} has no tag {tag}", src.display()))
        .clone();
    let mut manifest: Value =
        serde_json::from_slice(&fs::read(blob(src, entry["digest"].as_str().unwrap())).unwrap())
            .unwrap();
    let mut config: Value = serde_json::from_slice(
        &fs::read(blob(src, manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    fs::create_dir_all(dst.join("blobs/sha256")).unwrap();
    for file in fs::read_dir(src.join("blobs/sha256")).unwrap() {
        let file = file.unwrap();
        let to = dst.join("blobs/sha256").join(file.file_name());
        if !to.exists() {
            fs::hard_link(file.path(), &to).unwrap_or_else(|_| {
                fs::copy(file.path(), &to).unwrap();
            });
        }
    }
    let put = |bytes: &[u8]| -> String {
        let digest = sha256(bytes);
        fs::write(blob(dst, &digest), bytes).unwrap();
        digest
    };
    if let Some(tar) = layer {
        let compressed = gzip(tar);
        let digest = put(&compressed);
        manifest["layers"].as_array_mut().unwrap().push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest, "size": compressed.len(),
        }));
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .unwrap()
            .push(json!(sha256(tar)));
        if let Some(history) = config["history"].as_array_mut() {
            history.push(json!({"created_by": "test: derive_oci"}));
        }
    }
    let vars = config["config"]["Env"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut vars: Vec<String> = vars
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    for pair in env {
        let key = pair.split('=').next().unwrap();
        vars.retain(|v| v.split('=').next() != Some(key));
        vars.push(pair.to_string());
    }
    config["config"]["Env"] = json!(vars);
    let config_bytes = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = json!(put(&config_bytes));
    manifest["config"]["size"] = json!(config_bytes.len());
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = put(&manifest_bytes);
    let _ = fs::remove_file(dst.join("index.json"));
    add_to_oci_index(
        dst,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        &digest,
        manifest_bytes.len(),
    );
}

/// A layer of `files` one-line `.py` files, a thousand to a package under
/// usr/lib/python3/dist-packages, each package installed as pip does (a
/// dist-info directory whose RECORD names its files): what a python-heavy
/// full holds.
pub fn many_small_files_layer(files: usize) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::with_capacity(files * 1100 + (1 << 20)));
    // `None` for a directory.
    let mut add = |path: &str, body: Option<&[u8]>| {
        let mut header = tar::Header::new_ustar();
        if body.is_none() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
        } else {
            header.set_mode(0o644);
        }
        let body = body.unwrap_or_default();
        header.set_size(body.len() as u64);
        builder.append_data(&mut header, path, body).unwrap();
    };
    let site = "usr/lib/python3/dist-packages";
    for package in 0..files.div_ceil(1000) {
        let count = 1000.min(files - package * 1000);
        let name = format!("bulk{package:04}");
        let dist = format!("{name}-1.0.dist-info");
        add(&format!("{site}/{name}"), None);
        let mut record = String::new();
        for file in 0..count {
            let module = format!("{name}/module_{file:03}.py");
            add(
                &format!("{site}/{module}"),
                Some(format!("X = {file}\n").as_bytes()),
            );
            record.push_str(&format!("{module},,\n"));
        }
        record.push_str(&format!(
            "{dist}/METADATA,,\n{dist}/top_level.txt,,\n{dist}/RECORD,,\n"
        ));
        add(&format!("{site}/{dist}"), None);
        let metadata = format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n");
        add(
            &format!("{site}/{dist}/METADATA"),
            Some(metadata.as_bytes()),
        );
        add(
            &format!("{site}/{dist}/top_level.txt"),
            Some(format!("{name}\n").as_bytes()),
        );
        add(&format!("{site}/{dist}/RECORD"), Some(record.as_bytes()));
    }
    builder.into_inner().unwrap()
}
