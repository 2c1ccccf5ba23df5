//! Bad input gets a clear error, a non-zero exit, and no output: unknown
//! components, wrong images, corrupt or hostile blobs, existing outputs.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use support::*;

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        let case = Case {
            dir: tempfile::tempdir().unwrap(),
        };
        let min = min_image();
        min.write_oci(&case.path("min"), "latest");
        full_image(&min).write_oci(&case.path("full"), "24.10");
        case
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, kind: &str, name: &str, tag: &str) -> String {
        format!("{kind},oci:{}:{tag}", self.path(name).display())
    }

    /// Runs a compose to `out` with extra arguments; returns stderr and
    /// asserts failure and that nothing was written.
    fn fails(&self, extra: &[&str]) -> String {
        let out = self.path("out");
        let work = self.path("work");
        let min = self.arg("min", "min", "latest");
        let full = self.arg("full", "full", "24.10");
        let output = format!("oci:{}:x", out.display());
        let mut args = vec![
            "--image",
            &min,
            "--image",
            &full,
            "--output",
            &output,
            "--work-dir",
            work.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (ok, stderr) = run_cli(&args);
        assert!(!ok, "expected failure, got success; stderr:\n{stderr}");
        assert!(stderr.contains("error: "), "{stderr}");
        assert!(!out.exists(), "no output may be written on error");
        assert_no_leftovers(self.dir.path());
        if work.exists() {
            for entry in fs::read_dir(&work).unwrap() {
                let name = entry.unwrap().file_name();
                assert_eq!(name, "Dockerfile.compose", "scratch left in work dir");
            }
        }
        stderr
    }
}

fn assert_no_leftovers(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".triton-compose"),
            "staging leftover {name}"
        );
    }
}

#[test]
fn unknown_backend_names_what_full_offers_and_the_closest_match() {
    let case = Case::new();
    let stderr = case.fails(&["--enable-gpu=false", "--backend", "pyhton"]);
    assert!(
        stderr.contains("has no backend named \"pyhton\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("did you mean --backend python?"),
        "{stderr}"
    );
    // identity was deleted by a later layer of full: not offered.
    assert!(
        stderr.contains("it offers: onnxruntime, python"),
        "{stderr}"
    );
    let stderr = case.fails(&["--enable-gpu=false", "--cache", "nope"]);
    assert!(stderr.contains("it offers: local, redis"), "{stderr}");
    let stderr = case.fails(&["--enable-gpu=false", "--backend", "identity"]);
    assert!(
        stderr.contains("has no backend named \"identity\""),
        "{stderr}"
    );
}

#[test]
fn gpu_flag_must_match_the_full_image() {
    let case = Case::new();
    let stderr = case.fails(&["--backend", "python"]);
    assert!(stderr.contains("TRITON_SERVER_GPU_ENABLED=0"), "{stderr}");
    assert!(stderr.contains("hint: pass --enable-gpu=false"), "{stderr}");
}

#[test]
fn images_that_are_not_triton_images_are_refused() {
    let case = Case::new();
    // min as full: no Triton environment at all.
    let min = case.arg("min", "min", "latest");
    let full = case.arg("full", "min", "latest");
    let out = case.path("out");
    let (ok, stderr) = run_cli(&[
        "--enable-gpu=false",
        "--image",
        &min,
        "--image",
        &full,
        "--output",
        &format!("oci:{}", out.display()),
    ]);
    assert!(!ok);
    assert!(stderr.contains("has no TRITON_SERVER_VERSION"), "{stderr}");
    // Triton's environment but no /opt/tritonserver.
    let mut fake = min_image();
    fake.env.push("TRITON_SERVER_VERSION=2.51.0".into());
    fake.env.push("NVIDIA_TRITON_SERVER_VERSION=24.10".into());
    fake.env.push("TRITON_SERVER_GPU_ENABLED=0".into());
    fake.write_oci(&case.path("fake"), "x");
    let full = case.arg("full", "fake", "x");
    let (ok, stderr) = run_cli(&[
        "--enable-gpu=false",
        "--image",
        &min,
        "--image",
        &full,
        "--output",
        &format!("oci:{}", out.display()),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("is not a Triton image: it has no /opt/tritonserver"),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn missing_or_malformed_image_arguments() {
    let case = Case::new();
    let min = case.arg("min", "min", "latest");
    let (ok, stderr) = run_cli(&["--image", &min, "--dry-run"]);
    assert!(!ok);
    assert!(
        stderr.contains("need to specify both 'full' and 'min'"),
        "{stderr}"
    );
    let (ok, stderr) = run_cli(&["--dry-run"]);
    assert!(!ok);
    assert!(
        stderr.contains("hint: pass --image min,REF and --image full,REF"),
        "{stderr}"
    );
    let (ok, stderr) = run_cli(&["--image", "min", "--image", "full,oci:x", "--dry-run"]);
    assert!(!ok);
    assert!(
        stderr.contains("must be <image-name>,<image-ref>"),
        "{stderr}"
    );
    let stderr = case.fails(&[
        "--enable-gpu=false",
        "--image",
        &format!("full,oci:{}:nosuchtag", case.path("full").display()),
    ]);
    assert!(stderr.contains("no image tagged \"nosuchtag\""), "{stderr}");
    assert!(stderr.contains("tags in the layout: 24.10"), "{stderr}");
    let (ok, stderr) = run_cli(&[
        "--image",
        "min,nvcr.io/nvidia/tritonserver:24.10-py3-min",
        "--image",
        "full,nvcr.io/nvidia/tritonserver:24.10-py3",
        "--dry-run",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("registries are not supported yet"),
        "{stderr}"
    );
    assert!(stderr.contains("skopeo copy"), "{stderr}");
    let full = case.arg("full", "full", "24.10");
    let (ok, stderr) = run_cli(&[
        "--enable-gpu=false",
        "--image",
        &min,
        "--image",
        &full,
        "--work-dir",
        case.path("w").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("hint: pass --output oci:DIR"), "{stderr}");
}

#[test]
fn an_existing_output_is_never_overwritten() {
    let case = Case::new();
    let archive = case.path("taken.tar");
    fs::write(&archive, b"precious").unwrap();
    let min = case.arg("min", "min", "latest");
    let full = case.arg("full", "full", "24.10");
    let (ok, stderr) = run_cli(&[
        "--enable-gpu=false",
        "--image",
        &min,
        "--image",
        &full,
        "--output",
        &format!("docker-archive:{}", archive.display()),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("already exists; refusing to overwrite it"),
        "{stderr}"
    );
    assert_eq!(fs::read(&archive).unwrap(), b"precious");
    let dir = case.path("somedir");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("file"), b"x").unwrap();
    let (ok, stderr) = run_cli(&[
        "--enable-gpu=false",
        "--image",
        &min,
        "--image",
        &full,
        "--output",
        &format!("oci:{}", dir.display()),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("is not an OCI layout; refusing to write into it"),
        "{stderr}"
    );
}

/// Replaces the blob of full's layer `index` (in manifest order).
fn full_layer_blob(case: &Case, index: usize) -> PathBuf {
    let digests = full_image(&min_image()).write_oci(&case.path("scratch"), "x");
    case.path("full/blobs/sha256").join(&digests[index][7..])
}

#[test]
fn corrupt_blobs_fail_before_anything_is_written() {
    let case = Case::new();
    let blob = full_layer_blob(&case, 1);
    let mut data = fs::read(&blob).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    fs::write(&blob, &data).unwrap();
    let stderr = case.fails(&["--enable-gpu=false", "--backend", "python"]);
    assert!(stderr.contains("corrupt gzip stream"), "{stderr}");
    assert!(
        stderr.contains("hint: the layer is corrupt or truncated"),
        "{stderr}"
    );

    // A blob that decompresses fine but is not the blob its digest names.
    // (an uncompressed tar entry, padded with zeros to the same size).
    let mut forged = raw_header(b"opt/tritonserver/x", b'0', 0);
    assert!(forged.len() < data.len());
    forged.resize(data.len(), 0);
    fs::write(&blob, &forged).unwrap();
    let stderr = case.fails(&["--enable-gpu=false", "--backend", "python"]);
    assert!(
        stderr.contains("expected sha256:") || stderr.contains("has digest"),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");

    data.truncate(last);
    fs::write(&blob, &data).unwrap();
    let stderr = case.fails(&["--enable-gpu=false", "--backend", "python"]);
    assert!(stderr.contains("but its descriptor says"), "{stderr}");

    fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &blob).unwrap();
    let stderr = case.fails(&["--enable-gpu=false", "--backend", "python"]);
    assert!(stderr.contains("is not a regular file"), "{stderr}");
}

#[test]
fn a_config_that_lies_about_diff_ids_is_refused() {
    let case = Case::new();
    let mut full = full_image(&min_image());
    // Same layers, but the config claims different content for one.
    let honest = full.config();
    full.layers[2] = layer_tar(&[file("opt/tritonserver/other", "x")]);
    let lying_dir = case.path("lying");
    full.write_oci(&lying_dir, "x");
    // Rewrite its config with the honest diff_ids (which do not match).
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(lying_dir.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest_path = lying_dir.join("blobs/sha256").join(&manifest_digest[7..]);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(&manifest_path).unwrap()).unwrap();
    let config = serde_json::to_vec(&honest).unwrap();
    let config_digest = sha256(&config);
    fs::write(
        lying_dir.join("blobs/sha256").join(&config_digest[7..]),
        &config,
    )
    .unwrap();
    manifest["config"]["digest"] = config_digest.into();
    manifest["config"]["size"] = config.len().into();
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let new_digest = sha256(&manifest);
    fs::write(
        lying_dir.join("blobs/sha256").join(&new_digest[7..]),
        &manifest,
    )
    .unwrap();
    let mut index = index;
    index["manifests"][0]["digest"] = new_digest.into();
    index["manifests"][0]["size"] = manifest.len().into();
    fs::write(
        lying_dir.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let stderr = case.fails(&[
        "--enable-gpu=false",
        "--image",
        &case.arg("full", "lying", "x"),
    ]);
    assert!(
        stderr.contains("has diff-id") && stderr.contains("but the image config says"),
        "{stderr}"
    );
}

fn with_hostile_layer(case: &Case, name: &str, layer: Vec<u8>) -> String {
    let mut full = full_image(&min_image());
    full.layers.push(layer);
    full.write_oci(&case.path(name), "x");
    case.arg("full", name, "x")
}

#[test]
fn hostile_layers_are_refused() {
    let case = Case::new();
    let escape = with_hostile_layer(
        &case,
        "escape",
        layer_tar(&[Item::Raw(raw_header(b"../../etc/evil", b'0', 0))]),
    );
    let stderr = case.fails(&["--enable-gpu=false", "--image", &escape]);
    assert!(stderr.contains("climbs out of the image root"), "{stderr}");

    let mut bomb = raw_header(b"PaxHeaders/bomb", b'x', 1 << 40);
    bomb.extend(vec![0u8; 1024]);
    let bomb = with_hostile_layer(&case, "bomb", layer_tar(&[Item::Raw(bomb)]));
    let stderr = case.fails(&["--enable-gpu=false", "--image", &bomb]);
    assert!(
        stderr.contains("declares a 1099511627776-byte PAX record"),
        "{stderr}"
    );

    let mut long = raw_header(b"././@LongLink", b'L', 1 << 33);
    long.extend(vec![0u8; 1024]);
    let long = with_hostile_layer(&case, "long", layer_tar(&[Item::Raw(long)]));
    let stderr = case.fails(&["--enable-gpu=false", "--image", &long]);
    assert!(stderr.contains("long name record"), "{stderr}");

    let bad_whiteout = with_hostile_layer(
        &case,
        "wh",
        layer_tar(&[Item::Raw(raw_header(b"opt/.wh.", b'0', 0))]),
    );
    let stderr = case.fails(&["--enable-gpu=false", "--image", &bad_whiteout]);
    assert!(stderr.contains("malformed whiteout"), "{stderr}");

    let dangling = with_hostile_layer(
        &case,
        "dangling",
        layer_tar(&[hardlink("opt/tritonserver/bin/ghost", "nowhere/at/all")]),
    );
    let stderr = case.fails(&["--enable-gpu=false", "--image", &dangling]);
    assert!(
        stderr.contains("is a hard link to \"nowhere/at/all\""),
        "{stderr}"
    );
}

#[test]
fn ambiguous_manifests_and_archive_link_cycles_are_refused() {
    let case = Case::new();
    // A manifest with both `layers` and `manifests`.
    let dir = case.path("ambiguous");
    full_image(&min_image()).write_oci(&dir, "x");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let path = dir.join("blobs/sha256").join(&digest[7..]);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    manifest["manifests"] = serde_json::json!([]);
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let new_digest = sha256(&bytes);
    fs::write(dir.join("blobs/sha256").join(&new_digest[7..]), &bytes).unwrap();
    let mut index = index;
    index["manifests"][0]["digest"] = new_digest.into();
    index["manifests"][0]["size"] = bytes.len().into();
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let stderr = case.fails(&[
        "--enable-gpu=false",
        "--image",
        &case.arg("full", "ambiguous", "x"),
    ]);
    assert!(
        stderr.contains("has both `layers` and `manifests`"),
        "{stderr}"
    );

    // A docker-archive whose layer member is a symlink cycle.
    let mut builder = tar::Builder::new(Vec::new());
    for (name, target) in [
        ("a/layer.tar", "../b/layer.tar"),
        ("b/layer.tar", "../a/layer.tar"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        builder.append_link(&mut h, name, target).unwrap();
    }
    let config = serde_json::to_vec(&min_image().config()).unwrap();
    for (name, data) in [
        ("config.json", config.clone()),
        ("manifest.json", serde_json::to_vec(&serde_json::json!([{"Config": "config.json", "RepoTags": ["x:y"], "Layers": ["a/layer.tar", "a/layer.tar"]}])).unwrap()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        builder.append_data(&mut h, name, &data[..]).unwrap();
    }
    let cyclic = case.path("cyclic.tar");
    fs::write(&cyclic, builder.into_inner().unwrap()).unwrap();
    let stderr = case.fails(&[
        "--enable-gpu=false",
        "--image",
        &format!("min,docker-archive:{}", cyclic.display()),
    ]);
    assert!(stderr.contains("chain of more than 16 links"), "{stderr}");
}
