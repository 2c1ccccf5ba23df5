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

    /// Runs a compose (to `out` unless `extra` names an --output) with extra
    /// arguments; returns stderr and asserts failure and that nothing was written.
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
            "--work-dir",
            work.to_str().unwrap(),
        ];
        if !extra.contains(&"--output") {
            args.extend(["--output", &output]);
        }
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
    let stderr = case.fails(&[
        "--enable-gpu=false",
        "--image",
        &case.arg("full", "min", "latest"),
    ]);
    assert!(stderr.contains("has no TRITON_SERVER_VERSION"), "{stderr}");
    // Triton's environment but no /opt/tritonserver.
    let mut fake = min_image();
    fake.env.push("TRITON_SERVER_VERSION=2.51.0".into());
    fake.env.push("NVIDIA_TRITON_SERVER_VERSION=24.10".into());
    fake.env.push("TRITON_SERVER_GPU_ENABLED=0".into());
    fake.write_oci(&case.path("fake"), "x");
    let stderr = case.fails(&[
        "--enable-gpu=false",
        "--image",
        &case.arg("full", "fake", "x"),
    ]);
    assert!(
        stderr.contains("is not a Triton image: it has no /opt/tritonserver"),
        "{stderr}"
    );
}

/// Runs the binary expecting failure; returns stderr.
fn cli_fails(args: &[&str]) -> String {
    let (ok, stderr) = run_cli(args);
    assert!(!ok, "expected failure, got success; stderr:\n{stderr}");
    stderr
}

#[test]
fn missing_or_malformed_image_arguments() {
    let case = Case::new();
    let min = case.arg("min", "min", "latest");
    let stderr = cli_fails(&["--image", &min, "--dry-run"]);
    assert!(
        stderr.contains("need to specify both 'full' and 'min'"),
        "{stderr}"
    );
    let stderr = cli_fails(&["--dry-run"]);
    assert!(
        stderr.contains("hint: pass --image min,REF and --image full,REF"),
        "{stderr}"
    );
    let stderr = cli_fails(&["--image", "min", "--image", "full,oci:x", "--dry-run"]);
    assert!(
        stderr.contains("must be <image-name>,<image-ref>"),
        "{stderr}"
    );
    let missing_tag = format!("full,oci:{}:nosuchtag", case.path("full").display());
    let stderr = case.fails(&["--enable-gpu=false", "--image", &missing_tag]);
    assert!(stderr.contains("no image tagged \"nosuchtag\""), "{stderr}");
    assert!(stderr.contains("tags in the layout: 24.10"), "{stderr}");
    // A registry nobody answers at (a closed port on this machine).
    let closed = free_port();
    let unreachable = format!("full,127.0.0.1:{closed}/triton/full:1");
    let (ok, stderr) = run_cli_env(
        &["--image", &min, "--image", &unreachable, "--dry-run"],
        &[("TRITON_COMPOSE_RETRY_BASE_MS", "10")],
    );
    assert!(!ok);
    assert!(
        stderr.contains(&format!("cannot reach 127.0.0.1:{closed}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: check the registry address"),
        "{stderr}"
    );
}

#[test]
fn an_existing_output_is_never_overwritten() {
    let case = Case::new();
    let archive = case.path("taken.tar");
    fs::write(&archive, b"precious").unwrap();
    let taken = format!("docker-archive:{}", archive.display());
    let stderr = case.fails(&["--enable-gpu=false", "--output", &taken]);
    assert!(
        stderr.contains("already exists; refusing to overwrite it"),
        "{stderr}"
    );
    assert_eq!(fs::read(&archive).unwrap(), b"precious");
    let dir = case.path("somedir");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("file"), b"x").unwrap();
    let stderr = case.fails(&[
        "--enable-gpu=false",
        "--output",
        &format!("oci:{}", dir.display()),
    ]);
    assert!(
        stderr.contains("is not an OCI layout; refusing to write into it"),
        "{stderr}"
    );
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
}

/// The hex digest a blob's file is named by.
fn digests_of(blob: &std::path::Path) -> String {
    blob.file_name().unwrap().to_string_lossy().into_owned()
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
    // The blob is hashed on a thread ahead of the inflater: which of the
    // two sees the damage first depends on where it is. Either says so.
    let inflater = stderr.contains("corrupt gzip stream")
        && stderr.contains("hint: the layer is corrupt or truncated");
    let digest = stderr.contains(&format!("expected sha256:{}", &digests_of(&blob)))
        && stderr.contains("hint: the image is corrupt or was modified");
    assert!(inflater || digest, "{stderr}");

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
    // Point its manifest at the honest config (whose diff_ids do not match).
    let config = serde_json::to_vec(&honest).unwrap();
    let config_digest = put_blob(&lying_dir, &config);
    rewrite_manifest(&lying_dir, |manifest| {
        manifest["config"]["digest"] = config_digest.into();
        manifest["config"]["size"] = config.len().into();
    });
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

/// Stores a blob in an OCI layout; returns its digest.
fn put_blob(layout: &Path, data: &[u8]) -> String {
    let digest = sha256(data);
    fs::write(layout.join("blobs/sha256").join(&digest[7..]), data).unwrap();
    digest
}

/// Edits the first manifest of an OCI layout and re-points index.json at it.
fn rewrite_manifest(layout: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let read = |path: &Path| -> serde_json::Value {
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    };
    let mut index = read(&layout.join("index.json"));
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manifest = read(&layout.join("blobs/sha256").join(&digest[7..]));
    edit(&mut manifest);
    let bytes = serde_json::to_vec(&manifest).unwrap();
    index["manifests"][0]["digest"] = put_blob(layout, &bytes).into();
    index["manifests"][0]["size"] = bytes.len().into();
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
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
    rewrite_manifest(&dir, |manifest| {
        manifest["manifests"] = serde_json::json!([])
    });
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

#[test]
fn multi_platform_images_pick_the_platform_or_say_what_exists() {
    let case = Case::new();
    // Wrap full's manifest in an image index that offers only linux/arm64.
    let layout = case.path("full");
    let read = |path: &Path| -> serde_json::Value {
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    };
    let mut index = read(&layout.join("index.json"));
    let mut entry = index["manifests"][0].clone();
    entry["platform"] =
        serde_json::json!({"os": "linux", "architecture": "arm64", "variant": "v8"});
    entry.as_object_mut().unwrap().remove("annotations");
    let image_index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry],
    }))
    .unwrap();
    let digest = put_blob(&layout, &image_index);
    index["manifests"][0]["mediaType"] = "application/vnd.oci.image.index.v1+json".into();
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = image_index.len().into();
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();

    let stderr = case.fails(&["--enable-gpu=false", "--platform", "linux/amd64"]);
    assert!(
        stderr.contains("has no image for platform linux/amd64; it offers: linux/arm64/v8"),
        "{stderr}"
    );
    let stderr = case.fails(&["--enable-gpu=false", "--platform", "amd64"]);
    assert!(stderr.contains("is not os/arch[/variant]"), "{stderr}");

    // full's index offers linux/arm64, but min is a single linux/amd64
    // image: composing arm64 from it is refused, not done as it is.
    let out = case.path("arm");
    let (ok, stderr) = run_cli(&[
        "--enable-gpu=false",
        "--platform",
        "linux/arm64",
        "--image",
        &case.arg("min", "min", "latest"),
        "--image",
        &case.arg("full", "full", "24.10"),
        "--output",
        &format!("oci:{}:arm", out.display()),
        "--work-dir",
        case.path("work").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("--image min")
            && stderr.contains("has no linux/arm64 image; it is linux/amd64"),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn an_unreachable_docker_engine_is_named_with_the_other_destinations() {
    let case = Case::new();
    let sock = case.path("no-engine.sock");
    let host = format!("unix://{}", sock.display());
    let min = case.arg("min", "min", "latest");
    let full = case.arg("full", "full", "24.10");
    let work = case.path("work");
    let base = [
        "--enable-gpu=false",
        "--backend",
        "python",
        "--image",
        &min,
        "--image",
        &full,
        "--work-dir",
        work.to_str().unwrap(),
    ];
    // No --output: the result goes to the engine, which is not there.
    let (ok, stderr) = run_cli_env(&base, &[("DOCKER_HOST", &host)]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "error: cannot reach the local Docker engine at {host}"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: start the Docker engine")
            && stderr.contains("--output oci:DIR, --output docker-archive:FILE"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("reading"),
        "nothing is read first:\n{stderr}"
    );

    // An engine image as a source, likewise.
    let out = format!("oci:{}:x", case.path("out").display());
    let (ok, stderr) = run_cli_env(
        &[
            "--enable-gpu=false",
            "--image",
            "min,docker-daemon:ubuntu:24.04",
            "--image",
            &full,
            "--output",
            &out,
            "--work-dir",
            work.to_str().unwrap(),
        ],
        &[("DOCKER_HOST", &host)],
    );
    assert!(!ok);
    assert!(
        stderr.contains("cannot reach the local Docker engine"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: start the Docker engine") && stderr.contains("registry reference"),
        "{stderr}"
    );
    assert!(!case.path("out").exists());
    assert_no_leftovers(&work);

    let (ok, stderr) = run_cli_env(&base, &[("DOCKER_HOST", "tcp://127.0.0.1:2375")]);
    assert!(!ok);
    assert!(stderr.contains("is not a unix socket"), "{stderr}");
}

/// A full image whose config carries the given ENV entries and labels on
/// top of the usual ones.
fn case_with_config(env: &[(&str, &str)], labels: &[(&str, &str)]) -> Case {
    let case = Case {
        dir: tempfile::tempdir().unwrap(),
    };
    let min = min_image();
    min.write_oci(&case.path("min"), "latest");
    let mut full = full_image(&min);
    for (key, value) in env {
        full.env.retain(|e| !e.starts_with(&format!("{key}=")));
        full.env.push(format!("{key}={value}"));
    }
    for (key, value) in labels {
        full.labels.insert(key.to_string(), value.to_string());
    }
    full.write_oci(&case.path("full"), "24.10");
    case
}

#[test]
fn nothing_from_an_image_can_start_a_dockerfile_instruction() {
    // A newline would start an instruction: refused, the field named.
    for (env, labels, field) in [
        (
            vec![("NVIDIA_TRITON_SERVER_VERSION", "24.10\nRUN touch /pwned")],
            vec![],
            "ENV NVIDIA_TRITON_SERVER_VERSION",
        ),
        (
            vec![("TRITON_SERVER_VERSION", "2.51.0\r\nRUN touch /pwned")],
            vec![],
            "ENV TRITON_SERVER_VERSION",
        ),
        (
            vec![],
            vec![("com.nvidia.build.ref", "abc\nRUN touch /pwned")],
            "LABEL com.nvidia.build.ref",
        ),
        (
            vec![],
            vec![("com.nvidia.build.id", "1\n")],
            "ENV NVIDIA_BUILD_ID",
        ),
    ] {
        let case = case_with_config(&env, &labels);
        let stderr = case.fails(&["--enable-gpu=false", "--backend", "python", "--dry-run"]);
        assert!(
            stderr.contains(field) && stderr.contains("control character"),
            "{stderr}"
        );
        assert!(!case.path("work/Dockerfile.compose").exists(), "{stderr}");
    }

    // Quotes, backslashes and `$` are quoted and escaped, and stay literal.
    let case = case_with_config(
        &[("TRITON_SERVER_VERSION", "2.51\" x")],
        &[
            ("com.nvidia.build.id", "$(touch /pwned) \\"),
            ("com.nvidia.build.ref", "abc\" \\"),
        ],
    );
    let work = case.path("work");
    let (ok, stderr) = run_cli(&[
        "--enable-gpu=false",
        "--image",
        &case.arg("min", "min", "latest"),
        "--image",
        &case.arg("full", "full", "24.10"),
        "--work-dir",
        work.to_str().unwrap(),
        "--backend",
        "python",
        "--dry-run",
    ]);
    assert!(ok, "{stderr}");
    let dockerfile = fs::read_to_string(work.join("Dockerfile.compose")).unwrap();
    assert!(
        dockerfile.contains("ENV NVIDIA_BUILD_ID=\"\\$(touch /pwned) \\\\\"\n"),
        "{dockerfile}"
    );
    assert!(
        dockerfile.contains("LABEL com.nvidia.build.ref=\"abc\\\" \\\\\"\n"),
        "{dockerfile}"
    );
    assert!(
        dockerfile.contains("ARG TRITON_VERSION=\"2.51\\\" x\"\n"),
        "{dockerfile}"
    );
    // Every instruction line is one the plan wrote.
    for line in dockerfile.lines() {
        let word = line.split_whitespace().next().unwrap_or("");
        assert!(
            matches!(
                word,
                "" | "#"
                    | "#!"
                    | "ARG"
                    | "FROM"
                    | "ENV"
                    | "LABEL"
                    | "WORKDIR"
                    | "ENTRYPOINT"
                    | "COPY"
                    | "RUN"
                    | "&&"
            ) || line.starts_with('#')
                || line.starts_with("      "),
            "unexpected line {line:?} in\n{dockerfile}"
        );
    }
    assert_eq!(dockerfile.matches("\nRUN ").count(), 1, "{dockerfile}");

    // Component names are names, not paths or Dockerfile text.
    let case = Case::new();
    for name in ["py\nRUN x", "a b", ".hidden", "x\"y", "$(x)"] {
        let stderr = case.fails(&["--enable-gpu=false", "--backend", name]);
        assert!(stderr.contains("is not a valid name"), "{stderr}");
    }
}

/// A named edit of a manifest, and what the error must say.
type ManifestEdit = (
    &'static str,
    Box<dyn Fn(&mut serde_json::Value)>,
    &'static str,
);

#[test]
fn manifests_are_read_strictly() {
    let case = Case::new();
    let edits: Vec<ManifestEdit> = vec![
        (
            "schema1",
            Box::new(|m| m["schemaVersion"] = 1.into()),
            "schemaVersion 1; only schema 2",
        ),
        (
            "noschema",
            Box::new(|m| {
                m.as_object_mut().unwrap().remove("schemaVersion");
            }),
            "has no schemaVersion 2",
        ),
        (
            "indextype",
            Box::new(|m| m["mediaType"] = "application/vnd.oci.image.index.v1+json".into()),
            "it has layers but its mediaType is application/vnd.oci.image.index.v1+json",
        ),
        (
            "artifact",
            Box::new(|m| {
                m["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json".into()
            }),
            "is not a container image",
        ),
        (
            "layertype",
            Box::new(|m| {
                m["layers"][1]["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into()
            }),
            "which is not a layer's",
        ),
        (
            "bigconfig",
            Box::new(|m| m["config"]["size"] = (1u64 << 40).into()),
            "its config claims 1099511627776 bytes",
        ),
    ];
    for (name, edit, expected) in edits {
        let dir = case.path(name);
        full_image(&min_image()).write_oci(&dir, "x");
        rewrite_manifest(&dir, |m| edit(m));
        let stderr = case.fails(&[
            "--enable-gpu=false",
            "--image",
            &case.arg("full", name, "x"),
        ]);
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }

    // An index entry that is not a manifest, and one described as an index
    // that is a manifest.
    for (name, media_type, expected) in [
        (
            "entrytype",
            "application/vnd.oci.image.layer.v1.tar",
            "which is not a manifest's",
        ),
        (
            "described",
            "application/vnd.oci.image.index.v1+json",
            "it was described as application/vnd.oci.image.index.v1+json",
        ),
    ] {
        let dir = case.path(name);
        full_image(&min_image()).write_oci(&dir, "x");
        let path = dir.join("index.json");
        let mut index: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        index["manifests"][0]["mediaType"] = media_type.into();
        fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
        let stderr = case.fails(&[
            "--enable-gpu=false",
            "--image",
            &case.arg("full", name, "x"),
        ]);
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
}

#[test]
fn entries_beneath_a_symlink_are_refused_naming_both_paths() {
    let case = Case::new();
    let dir = case.path("through");
    let mut full = full_image(&min_image());
    full.layers.push(layer_tar(&[symlink(
        "opt/tritonserver/backends/python/evil",
        "/tmp",
    )]));
    full.layers.push(layer_tar(&[file(
        "opt/tritonserver/backends/python/evil/x",
        "written through the link\n",
    )]));
    full.write_oci(&dir, "x");
    let stderr = case.fails(&[
        "--enable-gpu=false",
        "--backend",
        "python",
        "--image",
        &case.arg("full", "through", "x"),
    ]);
    assert!(
        stderr.contains("/opt/tritonserver/backends/python/evil/x lies beneath /opt/tritonserver/backends/python/evil, which is a symlink (to \"/tmp\")"),
        "{stderr}"
    );
    assert!(stderr.contains("full layer 6"), "{stderr}");
}

#[test]
fn entry_boundaries_are_read_as_docker_reads_them() {
    // A symlink header claiming 1536 bytes of data, followed by an entry
    // Docker (Go's archive/tar) reads, since link headers carry no data.
    let mut link = tar::Header::new_ustar();
    link.set_path("opt/tritonserver/backends/python/link")
        .unwrap();
    link.set_link_name("libtriton_python.so").unwrap();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(1536);
    link.set_mode(0o777);
    link.set_cksum();
    let mut hidden = tar::Header::new_ustar();
    hidden
        .set_path("opt/tritonserver/backends/python/hidden.txt")
        .unwrap();
    hidden.set_size(6);
    hidden.set_mode(0o644);
    hidden.set_cksum();
    let mut raw = link.as_bytes().to_vec();
    raw.extend_from_slice(hidden.as_bytes());
    raw.extend_from_slice(b"hello\n");
    raw.resize(raw.len().div_ceil(512) * 512, 0);
    raw.resize(512 + 1536, 0);
    let case = Case::new();
    let full = with_hostile_layer(&case, "boundary", layer_tar(&[Item::Raw(raw)]));
    let out = case.path("out");
    let (ok, stderr) = run_cli(&[
        "-q",
        "--enable-gpu=false",
        "--image",
        &case.arg("min", "min", "latest"),
        "--image",
        &full,
        "--backend",
        "python",
        "--work-dir",
        case.path("work").to_str().unwrap(),
        "--output",
        &format!("oci:{}:x", out.display()),
    ]);
    assert!(ok, "{stderr}");
    let image = read_oci(&out, "x");
    assert!(
        image
            .tree
            .contains_key("opt/tritonserver/backends/python/hidden.txt"),
        "the entry after a link header is read, as Docker reads it"
    );
    assert_eq!(
        image.tree["opt/tritonserver/backends/python/link"].kind,
        'l'
    );
}

/// The arguments of a CPU-only compose of `min` and `full`, then `rest`.
fn cpu_compose<'a>(min: &'a str, full: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--enable-gpu=false", "--image", min, "--image", full];
    args.extend_from_slice(rest);
    args
}

#[test]
fn a_bomb_of_names_is_refused_with_bounded_memory() {
    // 2200 entries with 64 KiB PAX paths: 140 MiB of names in a layer that
    // compresses to almost nothing.
    let mut builder = tar::Builder::new(Vec::new());
    for i in 0..2200 {
        let name = format!("opt/{i:06}/{}", "n".repeat(60 << 10));
        builder
            .append_pax_extensions([("path", name.as_bytes())])
            .unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_path(format!("opt/short{i}")).unwrap();
        header.set_size(0);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append(&header, std::io::empty()).unwrap();
    }
    let layer = builder.into_inner().unwrap();
    let case = Case::new();
    let full = with_hostile_layer(&case, "names", layer);
    let min = case.arg("min", "min", "latest");
    let work = case.path("work");
    let (ok, stderr, peak_kib) = run_measuring_rss(&cpu_compose(
        &min,
        &full,
        &["--dry-run", "--work-dir", work.to_str().unwrap()],
    ));
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("metadata (names, links, attributes) passes 128 MiB"),
        "{stderr}"
    );
    assert!(
        peak_kib > 0 && peak_kib < 256 << 10,
        "peak RSS {peak_kib} KiB"
    );
    eprintln!("peak RSS of the refused bomb: {} MiB", peak_kib >> 10);
}

#[test]
fn a_million_small_files_are_composed_in_bounded_memory() {
    // What a python-heavy full holds: a million small files in a thousand
    // package directories, in one layer. Their entries go to disk, so the
    // compose's memory does not grow with them, and the metadata budget
    // grows with the image instead of refusing it.
    let layer = many_small_files_layer(1_000_000);
    let case = Case::new();
    let full = with_hostile_layer(&case, "many", layer);
    let out = case.path("out");
    let min = case.arg("min", "min", "latest");
    let (output, work) = (format!("oci:{}:x", out.display()), case.path("work"));
    let (ok, stderr, peak_kib) = run_measuring_rss(&cpu_compose(
        &min,
        &full,
        &["--output", &output, "--work-dir", work.to_str().unwrap()],
    ));
    assert!(ok, "{stderr}");
    let image = read_oci(&out, "x");
    assert!(image.tree.contains_key("opt/tritonserver/bin/tritonserver"));
    assert!(
        peak_kib > 0 && peak_kib < 200 << 10,
        "peak RSS {peak_kib} KiB"
    );
    eprintln!(
        "peak RSS composing from a full with 1,000,000 more files: {} MiB",
        peak_kib >> 10
    );

    // The other commands that read full scan it the same way.
    let full_ref = full.strip_prefix("full,").unwrap();
    let min_ref = min.strip_prefix("min,").unwrap();
    let store = case.path("store");
    for args in [
        vec!["catalog", "--min", min_ref, full_ref],
        vec!["verify", full_ref],
        vec!["sbom", "--compute", full_ref],
    ] {
        let (_, stderr, peak_kib) = measure_rss(&args, Some(&store));
        assert!(!stderr.contains("error:"), "{args:?}: {stderr}");
        assert!(
            peak_kib > 0 && peak_kib < 200 << 10,
            "{args:?}: peak RSS {peak_kib} KiB"
        );
        eprintln!("peak RSS of {}: {} MiB", args[0], peak_kib >> 10);
    }
}
