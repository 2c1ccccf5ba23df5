//! Writes a small min and full image as OCI layouts, for trying
//! triton-compose without downloading anything (`scripts/demo.sh`):
//! `triton-compose-demo DIR` writes `DIR/min` (tag `latest`) and `DIR/full`
//! (tag `24.10`).
//!
//! They are shaped like NGC's, at a thousandth of the size: min is a
//! Debian-like base with libc; full is built FROM min and adds python3 and
//! numpy (from dpkg packages), Triton's core, the python backend (whose stub
//! needs libpython, so the dependency closure has something to carry),
//! onnxruntime, a repository agent and two caches. Every shared library is a
//! real ELF file (headers, dynamic section, DT_NEEDED/DT_SONAME/DT_RUNPATH)
//! padded with incompressible bytes, so the sizes a compose prints mean
//! what they would mean on real images.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const LIB: &str = "usr/lib/x86_64-linux-gnu";
const SITE: &str = "usr/lib/python3/dist-packages";
const MIB: usize = 1 << 20;

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "demo".into()));
    let min_layers = vec![layer(&min_files())];
    let mut full_layers = min_layers.clone();
    full_layers.push(layer(&python_files()));
    full_layers.push(layer(&triton_files()));
    full_layers.push(layer(&entrypoint_files()));
    for (name, tag, layers, config) in [
        ("min", "latest", &min_layers, min_config()),
        ("full", "24.10", &full_layers, full_config()),
    ] {
        let path = dir.join(name);
        if path.exists() {
            fs::remove_dir_all(&path).expect("remove the old demo image");
        }
        write_oci(&path, tag, layers, config);
    }
    println!(
        "wrote oci:{0}/min:latest and oci:{0}/full:24.10",
        dir.display()
    );
}

/// One entry of a layer.
enum Entry {
    Dir(String),
    File(String, Vec<u8>, u32),
    Link(String, String),
}

fn dir(path: &str) -> Entry {
    Entry::Dir(path.to_string())
}

fn text(path: &str, content: &str) -> Entry {
    Entry::File(path.to_string(), content.as_bytes().to_vec(), 0o644)
}

fn binary(path: &str, content: Vec<u8>) -> Entry {
    Entry::File(path.to_string(), content, 0o755)
}

fn link(path: &str, target: &str) -> Entry {
    Entry::Link(path.to_string(), target.to_string())
}

/// Parent directories first, as `docker build` writes them.
fn dirs(paths: &[&str]) -> Vec<Entry> {
    paths.iter().map(|p| dir(p)).collect()
}

/// A dpkg stanza of an installed package.
fn stanza(name: &str, version: &str, depends: &str) -> String {
    let depends = if depends.is_empty() {
        String::new()
    } else {
        format!("Depends: {depends}\n")
    };
    format!(
        "Package: {name}\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\n\
         Version: {version}\n{depends}Description: {name} (demo)\n"
    )
}

/// A package's files as dpkg lists them in `info/NAME:amd64.list`.
fn file_list(name: &str, paths: &[&str]) -> Entry {
    let mut list = String::from("/.\n");
    for path in paths {
        list.push_str(&format!("/{path}\n"));
    }
    text(&format!("var/lib/dpkg/info/{name}:amd64.list"), &list)
}

fn copyright(package: &str, license: &str) -> Entry {
    text(
        &format!("usr/share/doc/{package}/copyright"),
        &format!(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n\
             Files: *\nCopyright: the {package} authors\nLicense: {license}\n"
        ),
    )
}

const MIN_STATUS: &[(&str, &str, &str)] = &[("base-files", "12.4", ""), ("libc6", "2.36-9", "")];

const FULL_STATUS: &[(&str, &str, &str)] = &[
    ("libpython3.11", "3.11.2-6", "libc6"),
    ("python3.11-minimal", "3.11.2-6", "libc6"),
    (
        "python3.11",
        "3.11.2-6",
        "python3.11-minimal, libpython3.11",
    ),
    ("python3", "3.11.2-1", "python3.11"),
    ("python3-numpy", "1:1.24.2-1", "python3, libc6"),
];

fn status(packages: &[&[(&str, &str, &str)]]) -> String {
    packages
        .iter()
        .flat_map(|p| p.iter())
        .map(|(name, version, depends)| stanza(name, version, depends))
        .collect::<Vec<_>>()
        .join("\n")
}

/// min: accounts, libc, and dpkg's record of them.
fn min_files() -> Vec<Entry> {
    let libc = format!("{LIB}/libc.so.6");
    let mut files = dirs(&[
        "etc",
        "usr",
        "usr/bin",
        "usr/lib",
        LIB,
        "usr/share",
        "usr/share/doc",
        "usr/share/doc/libc6",
        "var",
        "var/lib",
        "var/lib/dpkg",
        "var/lib/dpkg/info",
        "opt",
    ]);
    files.extend([
        text(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\nubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash\n",
        ),
        text("etc/group", "root:x:0:\nubuntu:x:1000:\n"),
        text(
            "etc/shadow",
            "root:*:19000:0:99999:7:::\nubuntu:!:19000:0:99999:7:::\n",
        ),
        text("etc/gshadow", "root:*::\nubuntu:!::\n"),
        text("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n"),
        binary("usr/bin/sh", elf(Elf::exe(&["libc.so.6"]), 64 << 10, 1)),
        binary(&libc, elf(Elf::lib("libc.so.6", &[]), 2 * MIB, 2)),
        copyright("libc6", "LGPL-2.1+"),
        text("var/lib/dpkg/status", &status(&[MIN_STATUS])),
        file_list("base-files", &["etc/os-release"]),
        file_list("libc6", &[LIB, &libc, "usr/share/doc/libc6/copyright"]),
    ]);
    files
}

/// What apt put into full: python3.11 with libpython, and numpy.
fn python_files() -> Vec<Entry> {
    let libpython = format!("{LIB}/libpython3.11.so.1.0");
    let numpy_ext = format!("{SITE}/numpy/core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so");
    let mut files = dirs(&[
        "usr",
        "usr/bin",
        "usr/lib",
        LIB,
        "usr/lib/python3",
        SITE,
        "usr/lib/python3.11",
        &format!("{SITE}/numpy"),
        &format!("{SITE}/numpy/core"),
        "usr/share",
        "usr/share/doc",
        "usr/share/doc/libpython3.11",
        "usr/share/doc/python3-numpy",
        "var",
        "var/lib",
        "var/lib/dpkg",
        "var/lib/dpkg/info",
    ]);
    files.extend([
        link("usr/bin/python3", "python3.11"),
        binary(
            "usr/bin/python3.11",
            elf(
                Elf::exe(&["libpython3.11.so.1.0", "libc.so.6"]),
                32 << 10,
                3,
            ),
        ),
        binary(
            &libpython,
            elf(Elf::lib("libpython3.11.so.1.0", &["libc.so.6"]), 5 * MIB, 4),
        ),
        text("usr/lib/python3.11/os.py", "# the standard library\n"),
        text(
            &format!("{SITE}/numpy/__init__.py"),
            "from .core import *\n",
        ),
        text(
            &format!("{SITE}/numpy/core/__init__.py"),
            "from ._multiarray_umath import *\n",
        ),
        binary(&numpy_ext, elf(Elf::lib("", &["libc.so.6"]), 3 * MIB, 5)),
        copyright("libpython3.11", "PSF-2.0"),
        copyright("python3-numpy", "BSD-3-clause"),
        text("var/lib/dpkg/status", &status(&[MIN_STATUS, FULL_STATUS])),
        file_list(
            "libpython3.11",
            &[&libpython, "usr/share/doc/libpython3.11/copyright"],
        ),
        file_list("python3.11-minimal", &["usr/bin/python3.11"]),
        file_list(
            "python3.11",
            &["usr/lib/python3.11", "usr/lib/python3.11/os.py"],
        ),
        file_list("python3", &["usr/bin/python3"]),
        file_list(
            "python3-numpy",
            &[
                &format!("{SITE}/numpy"),
                &format!("{SITE}/numpy/__init__.py"),
                &format!("{SITE}/numpy/core"),
                &format!("{SITE}/numpy/core/__init__.py"),
                &numpy_ext,
                "usr/share/doc/python3-numpy/copyright",
            ],
        ),
    ]);
    files
}

/// Triton's installation: the core, four backends' worth of components.
fn triton_files() -> Vec<Entry> {
    let t = "opt/tritonserver";
    let mut files = dirs(&[
        "opt",
        t,
        &format!("{t}/bin"),
        &format!("{t}/lib"),
        &format!("{t}/include"),
        &format!("{t}/backends"),
        &format!("{t}/backends/python"),
        &format!("{t}/backends/onnxruntime"),
        &format!("{t}/repoagents"),
        &format!("{t}/repoagents/checksum"),
        &format!("{t}/caches"),
        &format!("{t}/caches/local"),
        &format!("{t}/caches/redis"),
    ]);
    let origin_lib = "$ORIGIN/../lib";
    files.extend([
        text(&format!("{t}/LICENSE"), "BSD-3-Clause\n"),
        text(&format!("{t}/TRITON_VERSION"), "2.51.0\n"),
        Entry::File(
            format!("{t}/NVIDIA_Deep_Learning_Container_License.pdf"),
            noise(64 << 10, 6),
            0o644,
        ),
        binary(
            &format!("{t}/bin/tritonserver"),
            elf(
                Elf::exe(&["libtritonserver.so", "libc.so.6"]).runpath(origin_lib),
                512 << 10,
                7,
            ),
        ),
        binary(
            &format!("{t}/lib/libtritonserver.so"),
            elf(Elf::lib("libtritonserver.so", &["libc.so.6"]), 6 * MIB, 8),
        ),
        text(
            &format!("{t}/include/tritonserver.h"),
            "/* the server API */\n",
        ),
        binary(
            &format!("{t}/backends/python/libtriton_python.so"),
            elf(Elf::lib("libtriton_python.so", &["libc.so.6"]), MIB, 9),
        ),
        binary(
            &format!("{t}/backends/python/triton_python_backend_stub"),
            elf(
                Elf::exe(&["libpython3.11.so.1.0", "libc.so.6"]),
                768 << 10,
                10,
            ),
        ),
        text(
            &format!("{t}/backends/python/triton_python_backend_utils.py"),
            "import numpy\n",
        ),
        binary(
            &format!("{t}/backends/onnxruntime/libtriton_onnxruntime.so"),
            elf(
                Elf::lib(
                    "libtriton_onnxruntime.so",
                    &["libonnxruntime.so.1", "libc.so.6"],
                )
                .runpath("$ORIGIN"),
                MIB,
                11,
            ),
        ),
        binary(
            &format!("{t}/backends/onnxruntime/libonnxruntime.so.1"),
            elf(
                Elf::lib("libonnxruntime.so.1", &["libc.so.6"]),
                20 * MIB,
                12,
            ),
        ),
        binary(
            &format!("{t}/repoagents/checksum/libtritonrepoagent_checksum.so"),
            elf(
                Elf::lib("libtritonrepoagent_checksum.so", &["libc.so.6"]),
                256 << 10,
                13,
            ),
        ),
        binary(
            &format!("{t}/caches/local/libtritoncache_local.so"),
            elf(
                Elf::lib("libtritoncache_local.so", &["libc.so.6"]),
                256 << 10,
                14,
            ),
        ),
        binary(
            &format!("{t}/caches/redis/libtritoncache_redis.so"),
            elf(
                Elf::lib("libtritoncache_redis.so", &["libc.so.6"]),
                768 << 10,
                15,
            ),
        ),
    ]);
    files
}

fn entrypoint_files() -> Vec<Entry> {
    let mut files = dirs(&["opt", "opt/nvidia", "opt/nvidia/entrypoint.d"]);
    files.extend([
        Entry::File(
            "opt/nvidia/nvidia_entrypoint.sh".into(),
            b"#!/bin/bash\nexec \"$@\"\n".to_vec(),
            0o755,
        ),
        text("opt/nvidia/entrypoint.d/10-banner.txt", "Triton (demo)\n"),
    ]);
    files
}

fn min_config() -> Value {
    config(
        &["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        None,
    )
}

fn full_config() -> Value {
    config(
        &[
            "PATH=/opt/tritonserver/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "TRITON_SERVER_VERSION=2.51.0",
            "NVIDIA_TRITON_SERVER_VERSION=24.10",
            "TRITON_SERVER_GPU_ENABLED=0",
            "NVIDIA_BUILD_ID=121212",
        ],
        Some(json!({"com.nvidia.build.id": "121212", "com.nvidia.build.ref": "0123abcd"})),
    )
}

fn config(env: &[&str], labels: Option<Value>) -> Value {
    let mut config = json!({"Env": env});
    if let Some(labels) = labels {
        config["Labels"] = labels;
        config["Entrypoint"] = json!(["/opt/nvidia/nvidia_entrypoint.sh"]);
        config["WorkingDir"] = json!("/opt/tritonserver");
    }
    json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-11-05T10:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    })
}

/// What an ELF file's dynamic section says.
struct Elf {
    soname: String,
    needed: Vec<String>,
    runpath: Option<String>,
}

impl Elf {
    fn lib(soname: &str, needed: &[&str]) -> Elf {
        Elf {
            soname: soname.to_string(),
            needed: needed.iter().map(|n| n.to_string()).collect(),
            runpath: None,
        }
    }

    fn exe(needed: &[&str]) -> Elf {
        Elf::lib("", needed)
    }

    fn runpath(mut self, runpath: &str) -> Elf {
        self.runpath = Some(runpath.to_string());
        self
    }
}

/// A 64-bit little-endian x86-64 ELF file: the ELF header, a PT_LOAD and a
/// PT_DYNAMIC program header, the dynamic string table and the dynamic
/// section, then `size` bytes in all, filled with noise from `seed`.
fn elf(what: Elf, size: usize, seed: u64) -> Vec<u8> {
    const DT_NEEDED: u64 = 1;
    const DT_STRTAB: u64 = 5;
    const DT_STRSZ: u64 = 10;
    const DT_SONAME: u64 = 14;
    const DT_RUNPATH: u64 = 29;
    let mut strtab = vec![0u8];
    let mut string = |s: &str| {
        let at = strtab.len() as u64;
        strtab.extend_from_slice(s.as_bytes());
        strtab.push(0);
        at
    };
    let mut dynamic: Vec<(u64, u64)> = what.needed.iter().map(|n| (DT_NEEDED, string(n))).collect();
    if !what.soname.is_empty() {
        dynamic.push((DT_SONAME, string(&what.soname)));
    }
    if let Some(runpath) = &what.runpath {
        dynamic.push((DT_RUNPATH, string(runpath)));
    }
    let strtab_at = 64 + 2 * 56;
    let dynamic_at = (strtab_at + strtab.len()).next_multiple_of(8);
    dynamic.push((DT_STRTAB, strtab_at as u64));
    dynamic.push((DT_STRSZ, strtab.len() as u64));
    dynamic.push((0, 0));
    let end = dynamic_at + dynamic.len() * 16;

    let mut out = Vec::with_capacity(size.max(end));
    out.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    let half = |out: &mut Vec<u8>, v: u16| out.extend_from_slice(&v.to_le_bytes());
    let word = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
    let quad = |out: &mut Vec<u8>, v: u64| out.extend_from_slice(&v.to_le_bytes());
    half(&mut out, 3); // ET_DYN
    half(&mut out, 62); // EM_X86_64
    word(&mut out, 1);
    quad(&mut out, 0); // entry
    quad(&mut out, 64); // program headers
    quad(&mut out, 0); // no section headers
    word(&mut out, 0);
    for v in [64u16, 56, 2, 64, 0, 0] {
        half(&mut out, v);
    }
    // PT_LOAD over the headers and tables, PT_DYNAMIC over the section.
    for (kind, flags, at, len) in [
        (1u32, 4u32, 0usize, end),
        (2, 6, dynamic_at, end - dynamic_at),
    ] {
        word(&mut out, kind);
        word(&mut out, flags);
        for v in [at, at, at, len, len] {
            quad(&mut out, v as u64);
        }
        quad(&mut out, 8);
    }
    out.extend_from_slice(&strtab);
    out.resize(dynamic_at, 0);
    for (tag, value) in dynamic {
        quad(&mut out, tag);
        quad(&mut out, value);
    }
    if size > out.len() {
        out.extend(noise(size - out.len(), seed));
    }
    out
}

/// Bytes that do not compress (xorshift), as machine code and data mostly
/// do not.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A layer's tar, entries as given, owned by root, times fixed.
fn layer(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_730_800_800);
        match entry {
            Entry::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{path}/"), std::io::empty())
                    .expect("a directory entry");
            }
            Entry::File(path, data, mode) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, path, &data[..])
                    .expect("a file entry");
            }
            Entry::Link(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder
                    .append_link(&mut header, path, target)
                    .expect("a symlink entry");
            }
        }
    }
    builder.into_inner().expect("a layer")
}

fn sha256(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Writes an OCI layout holding one image tagged `tag`.
fn write_oci(dir: &Path, tag: &str, layers: &[Vec<u8>], mut config: Value) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("the layout's directory");
    let put = |data: &[u8]| -> (String, usize) {
        let digest = sha256(data);
        fs::write(blobs.join(&digest[7..]), data).expect("a blob");
        (digest, data.len())
    };
    let mut descriptors = Vec::new();
    for tar in layers {
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .expect("a list")
            .push(json!(sha256(tar)));
        config["history"]
            .as_array_mut()
            .expect("a list")
            .push(json!({"created": "2024-11-05T10:00:00Z", "created_by": "triton-compose-demo"}));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(tar).expect("compressing in memory");
        let (digest, size) = put(&gz.finish().expect("compressing in memory"));
        descriptors.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest,
            "size": size,
        }));
    }
    let (config_digest, config_size) = put(&serde_json::to_vec(&config).expect("json"));
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": descriptors,
    }))
    .expect("json");
    let (digest, size) = put(&manifest);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("index.json");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
}
