//! Writes a large synthetic min and full image (OCI layouts) for the
//! benchmark: `cargo run --release --example bench_images -- DIR SIZE_MIB
//! [LAYERS]`, with LAYERS: full's own content over that many layers, as
//! NGC images have it, and compressing about 2:1 as their libraries do;
//! or, with `--many-files SRC_LAYOUT TAG DST FILES`, a copy of an image
//! with that many small python files (as pip installs them) on top.
//! Layers are streamed to disk; file content is pseudo-random (so it does
//! not compress away) with some text-like files.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Pseudo-random bytes (xorshift), cheap to make.
struct Noise(u64);

impl io::Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(buf.len())
    }
}

/// A layer tar being written to `blobs/tmp-layer`, gzip'd, both forms hashed.
type LayerBuilder = tar::Builder<Hashing<flate2::write::GzEncoder<Hashing<BufWriter<File>>>>>;

fn layer_builder(blobs: &Path) -> LayerBuilder {
    let file = BufWriter::with_capacity(1 << 20, File::create(blobs.join("tmp-layer")).unwrap());
    let compressed = Hashing {
        inner: file,
        hasher: Sha256::new(),
        count: 0,
    };
    let gz = flate2::write::GzEncoder::new(compressed, flate2::Compression::fast());
    tar::Builder::new(Hashing {
        inner: gz,
        hasher: Sha256::new(),
        count: 0,
    })
}

/// Ends a layer of [`layer_builder`], renamed to its digest: (digest,
/// diff-id, compressed size).
fn finish_layer(blobs: &Path, builder: LayerBuilder) -> (String, String, u64) {
    let uncompressed = builder.into_inner().unwrap();
    let diff_id = format!("sha256:{}", hex::encode(uncompressed.hasher.finalize()));
    let mut compressed = uncompressed.inner.finish().unwrap();
    compressed.flush().unwrap();
    let digest = format!("sha256:{}", hex::encode(compressed.hasher.finalize()));
    let size = compressed.count;
    fs::rename(blobs.join("tmp-layer"), blobs.join(&digest[7..])).unwrap();
    (digest, diff_id, size)
}

/// Noise with only the bits of `mask` set in each byte: 0xff does not
/// compress, 0x0f compresses about 2:1.
struct Masked(Noise, u8);

impl io::Read for Masked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        for byte in &mut buf[..n] {
            *byte &= self.1;
        }
        Ok(n)
    }
}

/// Files of a layer: (path, size); directories are made for parents; file
/// bytes are noise masked with `mask` ([`Masked`]).
fn write_layer(
    blobs: &Path,
    files: &[(String, u64)],
    seed: u64,
    mask: u8,
) -> (String, String, u64) {
    let mut builder = layer_builder(blobs);
    let mut dirs = std::collections::BTreeSet::new();
    for (i, (path, size)) in files.iter().enumerate() {
        let mut parent = Path::new(path).parent();
        let mut missing = Vec::new();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            if dirs.insert(p.to_path_buf()) {
                missing.push(p.to_path_buf());
            }
            parent = p.parent();
        }
        for dir in missing.into_iter().rev() {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_mtime(1_700_000_000);
            h.set_uid(0);
            h.set_gid(0);
            builder
                .append_data(&mut h, format!("{}/", dir.display()), io::empty())
                .unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_size(*size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let noise = Noise(seed ^ ((i as u64 + 1) * 0x9e3779b97f4a7c15));
        let content = io::Read::take(Masked(noise, mask), *size);
        builder.append_data(&mut h, path, content).unwrap();
    }
    finish_layer(blobs, builder)
}

fn write_image(
    dir: &Path,
    tag: &str,
    layers: &[Vec<(String, u64)>],
    env: &[&str],
    shared: Option<(String, String, u64)>,
    mask: u8,
) -> (String, String, u64) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let mut written = Vec::new();
    if let Some(first) = shared.clone() {
        written.push(first);
    }
    for (i, files) in layers.iter().enumerate() {
        written.push(write_layer(&blobs, files, i as u64 + 7, mask));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": "2024-11-05T10:00:00Z",
        "config": {"Env": env, "Entrypoint": ["/opt/nvidia/nvidia_entrypoint.sh"]},
        "rootfs": {"type": "layers", "diff_ids": written.iter().map(|l| l.1.clone()).collect::<Vec<_>>()},
    })).unwrap();
    let put = |data: &[u8]| {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(data)));
        fs::write(blobs.join(&digest[7..]), data).unwrap();
        (digest, data.len())
    };
    let (config_digest, config_size) = put(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": written.iter().map(|l| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l.0, "size": l.2})).collect::<Vec<_>>(),
    })).unwrap();
    let (manifest_digest, manifest_size) = put(&manifest);
    fs::write(dir.join("index.json"), serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size,
        "annotations": {"org.opencontainers.image.ref.name": tag}}]})).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    written[0].clone()
}

/// A layer of `files` one-line `.py` files, a thousand to a package under
/// usr/lib/python3/dist-packages, each installed as pip does (a dist-info
/// directory whose RECORD names its files).
fn write_python_layer(blobs: &Path, files: u64) -> (String, String, u64) {
    let mut builder = layer_builder(blobs);
    // `None` for a directory.
    let mut add = |path: &str, body: Option<&[u8]>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(if body.is_some() {
            tar::EntryType::Regular
        } else {
            tar::EntryType::Directory
        });
        h.set_mode(if body.is_some() { 0o644 } else { 0o755 });
        let body = body.unwrap_or_default();
        h.set_size(body.len() as u64);
        h.set_mtime(1_700_000_000);
        builder.append_data(&mut h, path, body).unwrap();
    };
    let site = "usr/lib/python3/dist-packages";
    for package in 0..files.div_ceil(1000) {
        let name = format!("bulk{package:04}");
        let dist = format!("{name}-1.0.dist-info");
        add(&format!("{site}/{name}"), None);
        let mut record = String::new();
        for file in 0..1000.min(files - package * 1000) {
            let body = format!("X = {file}\n");
            let hash = hex::encode(Sha256::digest(body.as_bytes()));
            let module = format!("{name}/module_{file:03}.py");
            add(&format!("{site}/{module}"), Some(body.as_bytes()));
            record.push_str(&format!("{module},sha256={hash},{}\n", body.len()));
        }
        record.push_str(&format!("{dist}/METADATA,,\n{dist}/RECORD,,\n"));
        add(&format!("{site}/{dist}"), None);
        let metadata = format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n");
        add(
            &format!("{site}/{dist}/METADATA"),
            Some(metadata.as_bytes()),
        );
        add(&format!("{site}/{dist}/RECORD"), Some(record.as_bytes()));
    }
    finish_layer(blobs, builder)
}

/// Writes into `dst` the image `src:tag` (an OCI layout; blobs hard-linked)
/// with a layer of `files` small python files on top.
fn with_many_files(src: &Path, tag: &str, dst: &Path, files: u64) {
    let _ = fs::remove_dir_all(dst);
    let blobs = dst.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    for blob in fs::read_dir(src.join("blobs/sha256")).unwrap() {
        let blob = blob.unwrap();
        fs::hard_link(blob.path(), blobs.join(blob.file_name()))
            .or_else(|_| fs::copy(blob.path(), blobs.join(blob.file_name())).map(|_| ()))
            .unwrap();
    }
    let read = |digest: &str| -> serde_json::Value {
        serde_json::from_slice(&fs::read(blobs.join(&digest[7..])).unwrap()).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(src.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    let mut manifest = read(entry["digest"].as_str().unwrap());
    let mut config = read(manifest["config"]["digest"].as_str().unwrap());
    let (digest, diff_id, size) = write_python_layer(&blobs, files);
    manifest["layers"].as_array_mut().unwrap().push(json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size,
    }));
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(json!(diff_id));
    if let Some(history) = config["history"].as_array_mut() {
        history.push(json!({"created_by": "bench: many small files"}));
    }
    let put = |value: &serde_json::Value| {
        let data = serde_json::to_vec(value).unwrap();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
        fs::write(blobs.join(&digest[7..]), &data).unwrap();
        (digest, data.len())
    };
    let (config_digest, config_size) = put(&config);
    manifest["config"]["digest"] = json!(config_digest);
    manifest["config"]["size"] = json!(config_size);
    let (manifest_digest, manifest_size) = put(&manifest);
    fs::write(dst.join("index.json"), serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size,
        "annotations": {"org.opencontainers.image.ref.name": tag}}]})).unwrap()).unwrap();
    fs::write(dst.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--many-files") {
        // --many-files SRC_LAYOUT TAG DST FILES
        let rest: Vec<String> = args.skip(1).collect();
        let [src, tag, dst, files] = &rest[..] else {
            panic!("usage: bench_images --many-files SRC_LAYOUT TAG DST FILES");
        };
        with_many_files(Path::new(src), tag, Path::new(dst), files.parse().unwrap());
        println!("wrote {dst}: {src}:{tag} and {files} small python files");
        return;
    }
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "target/bench".into()));
    let mib: u64 = args.next().map(|s| s.parse().unwrap()).unwrap_or(1024);
    let layers: Option<usize> = args.next().map(|s| s.parse().unwrap());
    let mask = if layers.is_some() { 0x0f } else { 0xff };
    let _ = fs::remove_dir_all(&dir);
    let unit = mib * 1024 * 1024 / 100;
    let many = |prefix: &str, count: u64, total: u64| -> Vec<(String, u64)> {
        (0..count)
            .map(|i| (format!("{prefix}/file{i:05}.so"), total / count))
            .collect()
    };
    let base = vec![("etc/passwd".to_string(), 0), ("etc/group".to_string(), 0)];
    let mut base_layer = base;
    base_layer.extend(many("usr/lib/x86_64-linux-gnu", 200, 10 * unit));
    let min_first = write_image(
        &dir.join("min"),
        "latest",
        &[base_layer],
        &["PATH=/usr/bin:/bin"],
        None,
        mask,
    );
    let install = "opt/tritonserver";
    let mut triton = many(&format!("{install}/bin"), 4, 2 * unit);
    triton.extend(many(&format!("{install}/lib"), 40, 8 * unit));
    triton.extend(many(&format!("{install}/include/triton"), 400, unit));
    triton.extend(many(&format!("{install}/backends/python"), 50, 4 * unit));
    triton.extend(many(
        &format!("{install}/backends/onnxruntime"),
        20,
        15 * unit,
    ));
    triton.extend(many(&format!("{install}/backends/pytorch"), 100, 40 * unit));
    triton.extend(many(&format!("{install}/backends/openvino"), 30, 15 * unit));
    triton.extend(many(&format!("{install}/caches/local"), 2, unit / 10));
    triton.push(("opt/nvidia/nvidia_entrypoint.sh".into(), 100));
    let other = many("usr/local/lib/python3/dist-packages/big", 1000, 5 * unit);
    let own = match layers {
        // Consecutive runs of the files, one run a layer.
        Some(count) => {
            let all: Vec<(String, u64)> = other.into_iter().chain(triton).collect();
            let per = all.len().div_ceil(count.max(1));
            all.chunks(per).map(<[_]>::to_vec).collect()
        }
        None => vec![other, triton],
    };
    write_image(
        &dir.join("full"),
        "bench",
        &own,
        &[
            "PATH=/usr/bin:/bin",
            "TRITON_SERVER_VERSION=2.51.0",
            "NVIDIA_TRITON_SERVER_VERSION=24.10",
            "TRITON_SERVER_GPU_ENABLED=0",
        ],
        Some(min_first),
        mask,
    );
    println!(
        "wrote {dir}/min and {dir}/full (about {mib} MiB uncompressed)",
        dir = dir.display()
    );
}
