//! End-to-end compose runs on images built in code: OCI layouts and
//! docker-archives in and out, checked entry by entry and field by field.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use support::*;
use triton_compose::{compose, ComposeRequest, Compression, RawRequest};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// min and full as OCI layouts under one directory.
    fn oci() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let min = min_image();
        min.write_oci(&dir.path().join("min"), "latest");
        full_image(&min).write_oci(&dir.path().join("full"), "24.10");
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn request(&self, output: &str, components: &[(&str, &str)]) -> RawRequest {
        let pick = |kind: &str| -> Vec<String> {
            components
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, n)| n.to_string())
                .collect()
        };
        RawRequest {
            images: vec![
                format!("min,oci:{}:latest", self.path("min").display()),
                format!("full,oci:{}:24.10", self.path("full").display()),
            ],
            backends: pick("backend"),
            repoagents: pick("repoagent"),
            caches: pick("cache"),
            enable_gpu: false,
            output: Some(output.to_string()),
            output_name: "tritonserver".into(),
            work_dir: self.path("work"),
            compression: Compression::default(),
            ..Default::default()
        }
    }
}

fn run(raw: RawRequest) -> triton_compose::Result<triton_compose::Outcome> {
    compose(&ComposeRequest::new(raw)?)
}

const PYTHON_CHECKSUM_LOCAL: &[(&str, &str)] = &[
    ("backend", "python"),
    ("repoagent", "checksum"),
    ("cache", "local"),
];

fn under_triton(image: &ReadImage) -> Vec<(String, char)> {
    image
        .tree
        .iter()
        .filter(|(p, _)| p.starts_with("opt/"))
        .map(|(p, f)| (p.clone(), f.kind))
        .collect()
}

#[test]
fn composes_selected_components_from_merged_full_layers() {
    let fx = Fixture::oci();
    let out = fx.path("out");
    let outcome = run(fx.request(
        &format!("oci:{}:composed", out.display()),
        PYTHON_CHECKSUM_LOCAL,
    ))
    .unwrap();
    assert!(outcome.written.unwrap().contains("manifest sha256:"));
    let image = read_oci(&out, "composed");

    // min's layers are the same blobs; then core, python, checksum, local, entrypoint, user.
    let min_blobs = min_image().write_oci(&fx.path("min-again"), "x");
    assert_eq!(&image.layer_digests[..2], &min_blobs[..]);
    assert_eq!(image.layer_digests.len(), 2 + 6);

    let mut expected: Vec<(String, char)> = [
        ("opt/nvidia", 'd'),
        ("opt/nvidia/entrypoint.d", 'd'),
        ("opt/nvidia/entrypoint.d/10-banner.txt", 'f'),
        ("opt/nvidia/nvidia_entrypoint.sh", 'f'),
        ("opt/tritonserver", 'd'),
        ("opt/tritonserver/LICENSE", 'f'),
        ("opt/tritonserver/TRITON_VERSION", 'f'),
        ("opt/tritonserver/backends", 'd'),
        ("opt/tritonserver/backends/python", 'd'),
        ("opt/tritonserver/backends/python/a_directory_name_long_enough_to_need_an_extension_record", 'd'),
        (LONG_NAME, 'f'),
        ("opt/tritonserver/backends/python/libtriton_python.so", 'f'),
        ("opt/tritonserver/backends/python/libtriton_python_copy.so", 'h'),
        ("opt/tritonserver/backends/python/outside_link.txt", 'f'),
        ("opt/tritonserver/backends/python/owned_by_1000", 'f'),
        ("opt/tritonserver/bin", 'd'),
        ("opt/tritonserver/bin/tritonserver", 'f'),
        ("opt/tritonserver/caches", 'd'),
        ("opt/tritonserver/caches/local", 'd'),
        ("opt/tritonserver/caches/local/libtritoncache_local.so", 'f'),
        ("opt/tritonserver/include", 'd'),
        ("opt/tritonserver/include/new.h", 'f'),
        ("opt/tritonserver/lib", 'd'),
        ("opt/tritonserver/lib/libfoo.so.1", 'l'),
        ("opt/tritonserver/lib/libfoo.so.1.0", 'f'),
        ("opt/tritonserver/lib/libtritonserver.so", 'f'),
        ("opt/tritonserver/repoagents", 'd'),
        ("opt/tritonserver/repoagents/checksum", 'd'),
        ("opt/tritonserver/repoagents/checksum/libtritonrepoagent_checksum.so", 'f'),
    ]
    .iter()
    .map(|(p, k)| (p.to_string(), *k))
    .collect();
    expected.sort();
    assert_eq!(under_triton(&image), expected);

    let t = &image.tree;
    // Entry by entry, everything copied is what full's merged tree holds
    // (read by the tests' own reader): type, mode, owner, size, content,
    // symlink target, xattrs. Hard links compare by the content they share.
    let full = read_oci(&fx.path("full"), "24.10");
    let copied_roots = [
        "opt/tritonserver/LICENSE",
        "opt/tritonserver/TRITON_VERSION",
        "opt/tritonserver/bin",
        "opt/tritonserver/lib",
        "opt/tritonserver/include",
        "opt/tritonserver/backends/python",
        "opt/tritonserver/repoagents/checksum",
        "opt/tritonserver/caches/local",
        "opt/nvidia",
    ];
    let mut compared = 0;
    for (path, ours) in t.iter().filter(|(p, _)| {
        copied_roots
            .iter()
            .any(|r| p == r || p.starts_with(&format!("{r}/")))
    }) {
        let theirs = &full.tree[path];
        let strip = |f: &FileInfo| FileInfo {
            kind: if f.kind == 'h' { 'f' } else { f.kind },
            link: if f.kind == 'l' { f.link.clone() } else { None },
            ..f.clone()
        };
        assert_eq!(strip(ours), strip(theirs), "{path}");
        compared += 1;
    }
    assert_eq!(compared, 25);
    // Later layers win; opaque dirs and whiteouts hid what they should.
    assert_eq!(
        t["opt/tritonserver/lib/libtritonserver.so"].content,
        Some(sha256(b"new core library\n"))
    );
    assert_eq!(
        t["opt/tritonserver/lib/libfoo.so.1"].link.as_deref(),
        Some("libfoo.so.1.0")
    );
    // Hard link inside the selection stays a link; one to a file outside it carries the content.
    let copy = &t["opt/tritonserver/backends/python/libtriton_python_copy.so"];
    assert_eq!(
        copy.link.as_deref(),
        Some("opt/tritonserver/backends/python/libtriton_python.so")
    );
    assert_eq!(copy.content, Some(sha256(b"python backend\n")));
    assert_eq!(copy.mode, 0o755);
    let outside = &t["opt/tritonserver/backends/python/outside_link.txt"];
    assert_eq!(outside.content, Some(sha256(b"outside the selection\n")));
    assert!(
        !t.contains_key("usr/share/doc/outside.txt"),
        "only the selection is carried over"
    );
    // Modes, owners, xattrs, long names.
    let server = &t["opt/tritonserver/bin/tritonserver"];
    assert_eq!((server.mode, server.uid, server.gid), (0o755, 0, 0));
    assert_eq!(
        server.xattrs,
        vec![("user.triton.origin".to_string(), b"full".to_vec())]
    );
    let owned = &t["opt/tritonserver/backends/python/owned_by_1000"];
    assert_eq!((owned.mode, owned.uid, owned.gid), (0o600, 1000, 1000));
    assert_eq!(t[LONG_NAME].content, Some(sha256(b"long\n")));
    // Parent dirs min already has are left alone; the rest are root 0755.
    assert!(
        !image.layer_paths[2..].iter().flatten().any(|p| p == "opt"),
        "min has /opt"
    );
    assert_eq!(t["opt/tritonserver/backends"].mode, 0o755);

    // One layer for the core, one per component.
    let layer_of = |path: &str| {
        image
            .layer_paths
            .iter()
            .rposition(|l| l.iter().any(|p| p == path))
            .unwrap()
    };
    assert_eq!(layer_of("opt/tritonserver/bin/tritonserver"), 2);
    assert_eq!(
        layer_of("opt/tritonserver/backends/python/libtriton_python.so"),
        3
    );
    assert_eq!(
        layer_of("opt/tritonserver/repoagents/checksum/libtritonrepoagent_checksum.so"),
        4
    );
    assert_eq!(
        layer_of("opt/tritonserver/caches/local/libtritoncache_local.so"),
        5
    );
    assert_eq!(layer_of("opt/nvidia/nvidia_entrypoint.sh"), 6);
    assert_eq!(layer_of("etc/passwd"), 7);
    // Entries are sorted within each new layer.
    for paths in &image.layer_paths[2..] {
        let mut sorted = paths.clone();
        sorted.sort_by_key(|p| p.replace('/', "\0"));
        assert_eq!(paths, &sorted);
    }

    // The triton-server account replaced ubuntu, as userdel/useradd would.
    let passwd = String::from_utf8(read_file(&out, "composed", "etc/passwd")).unwrap();
    assert_eq!(
        passwd,
        "root:x:0:0:root:/root:/bin/bash\ntriton-server:x:1000:1000::/home/triton-server:/bin/sh\n"
    );
    let shadow = &t["etc/shadow"];
    assert_eq!(
        (shadow.mode, shadow.gid),
        (0o640, 42),
        "account files keep min's modes"
    );
}

/// Content of one file of a composed OCI image.
fn read_file(dir: &Path, tag: &str, wanted: &str) -> Vec<u8> {
    let image = read_oci(dir, tag);
    let mut found = None;
    for digest in &image.layer_digests {
        let data = fs::read(dir.join("blobs/sha256").join(&digest[7..])).unwrap();
        let mut tar_bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::MultiGzDecoder::new(&data[..]),
            &mut tar_bytes,
        )
        .unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().to_str() == Some(wanted) {
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut out).unwrap();
                found = Some(out);
            }
        }
    }
    found.unwrap_or_else(|| panic!("{wanted} not in image"))
}

#[test]
fn config_is_min_config_with_compose_py_changes() {
    let fx = Fixture::oci();
    let out = fx.path("out");
    run(fx.request(
        &format!("oci:{}:c", out.display()),
        &[("backend", "python")],
    ))
    .unwrap();
    let image = read_oci(&out, "c");
    let config = &image.config;
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for wanted in [
        "PATH=/opt/tritonserver/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PIP_BREAK_SYSTEM_PACKAGES=1",
        "TRITON_SERVER_VERSION=2.51.0",
        "NVIDIA_TRITON_SERVER_VERSION=24.10",
        "UCX_MEM_EVENTS=no",
        "TF_ADJUST_HUE_FUSED=1",
        "TF_ADJUST_SATURATION_FUSED=1",
        "TF_ENABLE_WINOGRAD_NONFUSED=1",
        "TF_AUTOTUNE_THRESHOLD=2",
        "TRITON_SERVER_GPU_ENABLED=0",
        "TRITON_SERVER_USER=triton-server",
        "DEBIAN_FRONTEND=noninteractive",
        "TCMALLOC_RELEASE_RATE=200",
        "NVIDIA_PRODUCT_NAME=Triton Server",
        "NVIDIA_BUILD_ID=121212",
    ] {
        assert!(env.contains(&wanted), "{wanted} missing from {env:?}");
    }
    assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
    assert!(
        !env.iter().any(|e| e.starts_with("LD_LIBRARY_PATH=")),
        "only pytorch sets it"
    );
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["com.nvidia.tritonserver.version"], "2.51.0");
    assert_eq!(labels["com.nvidia.build.id"], "121212");
    assert_eq!(labels["com.nvidia.build.ref"], "0123abcd");
    assert_eq!(config["config"]["WorkingDir"], "/opt/tritonserver");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/opt/nvidia/nvidia_entrypoint.sh"])
    );
    assert!(
        config["config"].get("Cmd").is_none(),
        "a new ENTRYPOINT clears the inherited CMD"
    );
    assert_eq!(
        config["x-unknown-field"],
        serde_json::json!({"kept": true}),
        "unknown fields survive"
    );
    assert_eq!(
        config["created"], "2024-11-05T10:00:00Z",
        "timestamps come from full's creation time"
    );
    let history = config["history"].as_array().unwrap();
    let non_empty = history
        .iter()
        .filter(|h| h.get("empty_layer") != Some(&serde_json::json!(true)))
        .count();
    assert_eq!(non_empty, image.layer_digests.len());
    assert!(history
        .iter()
        .any(|h| h["created_by"].as_str().unwrap().contains(
            "COPY --from=full /opt/tritonserver/backends/python /opt/tritonserver/backends/python"
        )));
}

#[test]
fn same_inputs_give_the_same_digest_and_source_date_epoch_is_honoured() {
    let fx = Fixture::oci();
    let compose_to = |name: &str, epoch: Option<&str>| {
        let out = fx.path(name);
        let mut raw = fx.request(&format!("oci:{}:x", out.display()), PYTHON_CHECKSUM_LOCAL);
        raw.source_date_epoch = epoch.map(String::from);
        run(raw).unwrap();
        read_oci(&out, "x")
    };
    let a = compose_to("a", None);
    let b = compose_to("b", None);
    assert_eq!(a.layer_digests, b.layer_digests);
    assert_eq!(a.config, b.config);
    assert_eq!(a.manifest, b.manifest);
    assert_eq!(a.manifest_digest, b.manifest_digest);
    let c = compose_to("c", Some("1000000000"));
    assert_ne!(a.manifest_digest, c.manifest_digest);
    assert_eq!(c.config["created"], "2001-09-09T01:46:40Z");
    assert_eq!(
        c.tree["opt/tritonserver/backends/python/libtriton_python.so"],
        a.tree["opt/tritonserver/backends/python/libtriton_python.so"]
    );
}

#[test]
fn docker_archives_in_both_layouts_compose_like_oci() {
    let fx = Fixture::oci();
    let min = min_image();
    let full = full_image(&min);
    let reference = fx.path("out-oci");
    run(fx.request(
        &format!("oci:{}:r", reference.display()),
        PYTHON_CHECKSUM_LOCAL,
    ))
    .unwrap();
    let reference = read_oci(&reference, "r");

    for legacy in [true, false] {
        let min_tar = fx.path(&format!("min-{legacy}.tar"));
        let full_tar = fx.path(&format!("full-{legacy}.tar"));
        min.write_docker_archive(&min_tar, "debian:bookworm", legacy);
        // An image with a repeated layer: the legacy archive stores the
        // second copy as a symlink to the first.
        let mut full_with_dup = full.clone();
        let tmp_layer = layer_tar(&[dir("tmp")]);
        full_with_dup.layers.push(tmp_layer.clone());
        full_with_dup.layers.push(tmp_layer);
        full_with_dup.write_docker_archive(&full_tar, "tritonserver:full", legacy);
        let out = fx.path(&format!("out-{legacy}.tar"));
        let mut raw = fx.request(
            &format!("docker-archive:{}", out.display()),
            PYTHON_CHECKSUM_LOCAL,
        );
        raw.images = vec![
            format!("min,docker-archive:{}", min_tar.display()),
            format!(
                "full,docker-archive:{}:tritonserver:full",
                full_tar.display()
            ),
        ];
        run(raw).unwrap();
        let (manifest_json, image) = read_docker_archive(&out);
        assert_eq!(
            manifest_json[0]["RepoTags"],
            serde_json::json!(["tritonserver:latest"])
        );
        assert_eq!(
            under_triton(&image),
            under_triton(&reference),
            "legacy={legacy}"
        );
        for (path, info) in &reference.tree {
            assert_eq!(image.tree.get(path), Some(info), "{path} (legacy={legacy})");
        }
        // Our new layers are byte-identical whatever the source transport.
        assert_eq!(image.layer_digests[2..], reference.layer_digests[2..]);
    }
}

#[test]
fn min_layers_are_linked_into_a_layout_only_when_their_bytes_check_out() {
    use std::os::unix::fs::MetadataExt;
    let fx = Fixture::oci();
    let min_blobs = min_image().write_oci(&fx.path("scratch"), "x");
    let source = |d: &String| fx.path("min/blobs/sha256").join(&d[7..]);
    let out = fx.path("out");
    let mut request = fx.request(
        &format!("oci:{}:x", out.display()),
        &[("backend", "python")],
    );
    request.sbom = false;
    run(request.clone()).unwrap();
    for digest in &min_blobs {
        let (ours, theirs) = (
            fs::metadata(out.join("blobs/sha256").join(&digest[7..])).unwrap(),
            fs::metadata(source(digest)).unwrap(),
        );
        assert_eq!(ours.ino(), theirs.ino(), "{digest} was copied, not linked");
    }
    assert!(read_oci(&out, "x")
        .tree
        .contains_key("opt/tritonserver/backends/python/libtriton_python.so"));
    // A damaged blob of the same size is refused and nothing is left (here
    // the scan, which reads min for its accounts, sees it first; the link's
    // own check is `link_blob`'s unit test).
    let damaged = source(&min_blobs[0]);
    let size = fs::metadata(&damaged).unwrap().len() as usize;
    fs::remove_file(&damaged).unwrap();
    fs::write(&damaged, vec![b'!'; size]).unwrap();
    let out2 = fx.path("out2");
    request.output = Some(format!("oci:{}:x", out2.display()));
    let err = run(request).unwrap_err().to_string();
    assert!(err.contains("has digest"), "{err}");
    let linked = fs::read_dir(out2.join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(linked, 0, "a failed compose left blobs behind");
}

#[test]
fn layers_full_shares_with_min_are_never_read() {
    let fx = Fixture::oci();
    // Corrupt full's copy of the layer it shares with min (same diff-id):
    // if it were read, its digest check would fail the compose.
    let shared = full_image(&min_image()).write_oci(&fx.path("scratch"), "x")[0].clone();
    let min_blobs = min_image().write_oci(&fx.path("scratch2"), "x");
    assert_eq!(shared, min_blobs[0]);
    let full_copy = fx.path("full/blobs/sha256").join(&shared[7..]);
    let size = fs::metadata(&full_copy).unwrap().len() as usize;
    fs::write(&full_copy, vec![b'!'; size]).unwrap();
    let out = fx.path("out");
    run(fx.request(
        &format!("oci:{}:x", out.display()),
        &[("backend", "python")],
    ))
    .unwrap();
    assert!(read_oci(&out, "x")
        .tree
        .contains_key("opt/tritonserver/backends/python/libtriton_python.so"));
}

#[test]
fn dry_run_writes_dockerfile_from_the_same_plan_and_nothing_else() {
    let fx = Fixture::oci();
    let out = fx.path("out");
    let mut raw = fx.request(&format!("oci:{}:x", out.display()), PYTHON_CHECKSUM_LOCAL);
    raw.dry_run = true;
    let outcome = run(raw).unwrap();
    assert!(outcome.written.is_none());
    assert!(!out.exists(), "a dry run writes no image");
    let dockerfile = fs::read_to_string(fx.path("work/Dockerfile.compose")).unwrap();
    for line in [
        "FROM ${FULL_IMAGE} AS full",
        "FROM ${MIN_IMAGE}",
        "ENV PATH=\"/opt/tritonserver/bin:${PATH}\"",
        "ENV TRITON_SERVER_VERSION=\"2.51.0\"",
        "LABEL com.nvidia.build.ref=\"0123abcd\"",
        "WORKDIR /opt/tritonserver",
        "ENTRYPOINT [\"/opt/nvidia/nvidia_entrypoint.sh\"]",
        "COPY --from=full /opt/tritonserver/LICENSE /opt/tritonserver/LICENSE",
        "COPY --from=full /opt/tritonserver/bin /opt/tritonserver/bin",
        "COPY --from=full /opt/tritonserver/lib /opt/tritonserver/lib",
        "COPY --from=full /opt/tritonserver/include /opt/tritonserver/include",
        "COPY --from=full /opt/tritonserver/backends/python /opt/tritonserver/backends/python",
        "COPY --from=full /opt/tritonserver/repoagents/checksum /opt/tritonserver/repoagents/checksum",
        "COPY --from=full /opt/tritonserver/caches/local /opt/tritonserver/caches/local",
        "COPY --from=full /opt/nvidia /opt/nvidia",
        "RUN userdel tensorrt-server",
    ] {
        assert!(dockerfile.lines().any(|l| l.starts_with(line)), "missing {line:?} in\n{dockerfile}");
    }
    assert!(
        !dockerfile.contains("NVIDIA_Deep_Learning_Container_License.pdf"),
        "absent core files are not copied"
    );
    let leftovers: Vec<_> = fs::read_dir(fx.path("work"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        vec![std::ffi::OsString::from("Dockerfile.compose")],
        "scratch files are removed"
    );
}

#[test]
fn zstd_layers_are_written_with_oci_media_types() {
    let fx = Fixture::oci();
    let out = fx.path("out");
    let mut raw = fx.request(
        &format!("oci:{}:z", out.display()),
        &[("backend", "python")],
    );
    raw.compression = Compression::Zstd { level: 3 };
    run(raw).unwrap();
    let image = read_oci(&out, "z");
    let types: Vec<&str> = image.manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(types[0], "application/vnd.oci.image.layer.v1.tar+gzip");
    assert!(
        types[2..]
            .iter()
            .all(|t| *t == "application/vnd.oci.image.layer.v1.tar+zstd"),
        "{types:?}"
    );
    assert!(image
        .tree
        .contains_key("opt/tritonserver/backends/python/libtriton_python.so"));
}

#[test]
fn adds_a_tag_to_an_existing_layout_but_never_overwrites_one() {
    let fx = Fixture::oci();
    let out = fx.path("out");
    run(fx.request(
        &format!("oci:{}:one", out.display()),
        &[("backend", "python")],
    ))
    .unwrap();
    run(fx.request(
        &format!("oci:{}:two", out.display()),
        &[("backend", "onnxruntime")],
    ))
    .unwrap();
    let one = read_oci(&out, "one");
    let two = read_oci(&out, "two");
    assert_eq!(
        one.layer_digests[2], two.layer_digests[2],
        "the core layer is shared by variants"
    );
    let index_before = fs::read(out.join("index.json")).unwrap();
    let err = run(fx.request(
        &format!("oci:{}:one", out.display()),
        &[("backend", "python")],
    ))
    .unwrap_err();
    assert!(
        err.message()
            .contains("already holds an image tagged \"one\""),
        "{err}"
    );
    assert_eq!(fs::read(out.join("index.json")).unwrap(), index_before);
}

/// min, a CPU-only full with a pytorch backend, and gpu-min as OCI layouts.
fn cpu_pytorch_fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let min = min_image();
    min.write_oci(&tmp.path().join("min"), "latest");
    let mut full = full_image(&min);
    full.layers.push(layer_tar(&[
        dir("opt/tritonserver/backends/pytorch"),
        file(
            "opt/tritonserver/backends/pytorch/libtriton_pytorch.so",
            "pytorch\n",
        ),
    ]));
    full.write_oci(&tmp.path().join("full"), "24.10");
    gpu_min_image().write_oci(&tmp.path().join("gpu-min"), "24.10");
    Fixture { dir: tmp }
}

#[test]
fn cpu_only_pytorch_gets_cuda_libraries_from_gpu_min_as_compose_py_copies_them() {
    let fx = cpu_pytorch_fixture();
    let out = fx.path("out");
    let mut raw = fx.request(
        &format!("oci:{}:cpu", out.display()),
        &[("backend", "pytorch")],
    );
    raw.images.push(format!(
        "gpu-min,oci:{}:24.10",
        fx.path("gpu-min").display()
    ));
    run(raw.clone()).unwrap();
    let image = read_oci(&out, "cpu");

    let stubs = "usr/local/cuda/lib64/stubs";
    let targets = "usr/local/cuda/targets/x86_64-linux/lib";
    let expected = [
        (
            format!("{stubs}/libcusparse.so.12"),
            "stub libcusparse.so\n",
        ),
        (
            format!("{stubs}/libcusolver.so.11"),
            "stub libcusolver.so\n",
        ),
        (format!("{stubs}/libcurand.so.10"), "stub libcurand.so\n"),
        (format!("{stubs}/libcufft.so.11"), "stub libcufft.so\n"),
        (format!("{stubs}/libcublas.so.12"), "stub libcublas.so\n"),
        (
            format!("{stubs}/libcublasLt.so.11"),
            "stub libcublasLt.so\n",
        ),
        (format!("{targets}/libcudart.so.12"), "cudart\n"),
        (format!("{targets}/libcupti.so.12"), "cupti\n"),
        (format!("{targets}/libnvToolsExt.so.1"), "nvtx\n"),
        (format!("{targets}/libnvJitLink.so.12"), "jitlink\n"),
        ("opt/hpcx/ucc/lib/libucc.so.1".into(), "ucc\n"),
        ("opt/hpcx/ucx/lib/libucm.so.0".into(), "libucm\n"),
        ("opt/hpcx/ucx/lib/libuct.so.0".into(), "libuct\n"),
        ("usr/lib/x86_64-linux-gnu/libcudnn.so.9".into(), "cudnn\n"),
        ("usr/lib/x86_64-linux-gnu/libnccl.so.2".into(), "nccl\n"),
    ];
    for (path, content) in &expected {
        let info = image
            .tree
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing"));
        assert_eq!(
            info.kind, 'f',
            "{path} is a regular file, its symlinks followed"
        );
        assert_eq!(info.content, Some(sha256(content.as_bytes())), "{path}");
        assert_eq!(
            (info.uid, info.gid),
            (0, 0),
            "{path}: COPY makes files root's"
        );
    }
    assert_eq!(
        image.tree[&format!("{stubs}/libcusparse.so.12")].mode,
        0o755
    );
    // The same stub under two names is stored once.
    let twin = &image.tree[&format!("{stubs}/libcublasLt.so.12")];
    assert_eq!(twin.kind, 'h');
    assert_eq!(
        twin.link.as_deref(),
        Some(&format!("{stubs}/libcublasLt.so.11")[..])
    );
    assert!(
        !image.tree.contains_key("usr/local/cuda-12.4"),
        "only the named files come"
    );
    assert!(!image
        .tree
        .contains_key(&format!("{targets}/libcufft.so.11.2.1")));
    assert_eq!(image.tree["usr/local/cuda"].kind, 'd');

    let env: Vec<String> = serde_json::from_value(image.config["config"]["Env"].clone()).unwrap();
    let ld = env
        .iter()
        .find(|e| e.starts_with("LD_LIBRARY_PATH="))
        .unwrap();
    assert!(
        ld.starts_with("LD_LIBRARY_PATH=/usr/local/cuda/targets/x86_64-linux/lib:/usr/local/cuda/lib64/stubs:/opt/hpcx/ucc/lib/:/opt/hpcx/ucx/lib/"),
        "{ld}"
    );
    let history = image.config["history"].as_array().unwrap();
    assert!(history.iter().any(|h| h["comment"] == "CUDA libraries from gpu-min"
        && h["created_by"].as_str().unwrap().contains(
            "COPY --from=min_container /usr/local/cuda/lib64/stubs/libcusparse.so /usr/local/cuda/lib64/stubs/libcusparse.so.12"
        )));

    // Dockerfile.compose names the stage as compose.py does.
    raw.dry_run = true;
    run(raw).unwrap();
    let dockerfile = fs::read_to_string(fx.path("work/Dockerfile.compose")).unwrap();
    for line in [
        "ARG GPU_MIN_IMAGE=triton-compose-gpu-min",
        "FROM ${GPU_MIN_IMAGE} AS min_container",
        "COPY --from=min_container /usr/local/cuda/lib64/libcudart.so.12 /usr/local/cuda/targets/x86_64-linux/lib/libcudart.so.12",
        "COPY --from=min_container /usr/lib/x86_64-linux-gnu/libnccl.so.2 /usr/lib/x86_64-linux-gnu/libnccl.so.2",
        "ENV LD_LIBRARY_PATH=\"/usr/local/cuda/targets/x86_64-linux/lib:/usr/local/cuda/lib64/stubs:${LD_LIBRARY_PATH}\"",
    ] {
        assert!(dockerfile.lines().any(|l| l == line), "missing {line:?} in\n{dockerfile}");
    }
}

#[test]
fn catalog_lists_components_that_need_gpu_min_and_costs_them_with_it() {
    let fx = cpu_pytorch_fixture();
    let catalog = |extra: &[&str]| -> serde_json::Value {
        let full = format!("oci:{}:24.10", fx.path("full").display());
        let work = fx.path("catalog-work");
        let mut args = vec![
            "catalog",
            "--json",
            &full,
            "--work-dir",
            work.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = run_cli_output(&args);
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str(&stdout).unwrap()
    };
    let row = |catalog: &serde_json::Value, name: &str| -> serde_json::Value {
        catalog["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {catalog:#}"))
    };
    // Without gpu-min: listed, saying what it needs, its content counted.
    let without = catalog(&[]);
    let pytorch = row(&without, "pytorch");
    assert_eq!(pytorch["kind"], "backend");
    assert_eq!(pytorch["needs"], "gpu-min", "{pytorch:#}");
    assert_eq!(pytorch["size"], "pytorch\n".len());
    assert_eq!(pytorch["compressed_size"], 0);
    assert!(row(&without, "python").get("needs").is_none());
    // The table says so too.
    let full = format!("oci:{}:24.10", fx.path("full").display());
    let work = fx.path("catalog-work");
    let (code, table, stderr) =
        run_cli_output(&["catalog", &full, "--work-dir", work.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        table.lines().any(|l| l.starts_with("backend")
            && l.contains("pytorch")
            && l.contains("needs gpu-min")),
        "{table}"
    );
    // With gpu-min: costed as a compose writes it.
    let gpu_min = format!("oci:{}:24.10", fx.path("gpu-min").display());
    let with = catalog(&["--gpu-min", &gpu_min]);
    let pytorch = row(&with, "pytorch");
    assert!(pytorch.get("needs").is_none(), "{pytorch:#}");
    assert!(
        pytorch["compressed_size"].as_u64().unwrap() > 0,
        "{pytorch:#}"
    );
}

#[test]
fn catalog_lists_a_component_it_cannot_cost_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let min = min_image();
    let mut full = full_image(&min);
    // A hard link to nothing full has: a compose of it fails, the rest not.
    full.layers.push(layer_tar(&[
        dir("opt/tritonserver/backends/torn"),
        hardlink(
            "opt/tritonserver/backends/torn/libtriton_torn.so",
            "opt/tritonserver/backends/torn/gone.so",
        ),
    ]));
    full.write_oci(&tmp.path().join("full"), "24.10");
    let full = format!("oci:{}:24.10", tmp.path().join("full").display());
    let work = tmp.path().join("work");
    let (code, stdout, stderr) = run_cli_output(&[
        "catalog",
        "--json",
        &full,
        "--work-dir",
        work.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let catalog: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let rows = catalog["components"].as_array().unwrap();
    let torn = rows
        .iter()
        .find(|c| c["name"] == "torn")
        .expect("torn is listed");
    assert!(
        torn["error"]
            .as_str()
            .unwrap()
            .contains("is a hard link to"),
        "{torn:#}"
    );
    assert_eq!(torn["compressed_size"], 0);
    let python = rows.iter().find(|c| c["name"] == "python").unwrap();
    assert!(python.get("error").is_none() && python["compressed_size"].as_u64().unwrap() > 0);
}

#[test]
fn cpu_only_pytorch_errors_name_what_gpu_min_lacks() {
    let fx = cpu_pytorch_fixture();
    let out = fx.path("out");
    let raw = fx.request(
        &format!("oci:{}:cpu", out.display()),
        &[("backend", "pytorch")],
    );
    let err = run(raw.clone()).unwrap_err();
    assert!(err.message().contains("GPU min image"), "{err}");
    assert!(
        err.hint_text().unwrap().contains("--image gpu-min,"),
        "{err:?}"
    );

    // gpu-min without CUDA: min itself.
    let mut wrong = raw;
    wrong
        .images
        .push(format!("gpu-min,oci:{}:latest", fx.path("min").display()));
    let err = run(wrong).unwrap_err();
    assert!(
        err.message()
            .contains("has no file /usr/local/cuda/lib64/stubs/libcusparse.so"),
        "{err}"
    );
    assert!(err.hint_text().unwrap().contains("py3-min"), "{err:?}");
    assert!(!out.exists(), "no partial output");
}

#[test]
fn layers_are_byte_identical_with_one_thread_or_several() {
    let dir = tempfile::tempdir().unwrap();
    let min = min_image();
    min.write_oci(&dir.path().join("min"), "latest");
    let mut full = full_image(&min);
    // Several gzip members (1 MiB of input each).
    let mut state = 7u64;
    let big: String = (0..3_300_000)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if (i / 4000) % 2 == 0 {
                "tritonserver "[i % 13..].chars().next().unwrap()
            } else {
                (b'a' + (state >> 59) as u8) as char
            }
        })
        .collect();
    full.layers.push(layer_tar(&[file(
        "opt/tritonserver/backends/python/big.txt",
        &big,
    )]));
    full.write_oci(&dir.path().join("full"), "24.10");
    let compose_with = |threads: &str, archive: bool| {
        let out = dir.path().join(format!("out-{threads}-{archive}"));
        let output = if archive {
            format!("docker-archive:{}:x/y:z", out.display())
        } else {
            format!("oci:{}:x", out.display())
        };
        let (ok, stderr) = run_cli_env(
            &[
                "-q",
                "--enable-gpu=false",
                "--image",
                &format!("min,oci:{}:latest", dir.path().join("min").display()),
                "--image",
                &format!("full,oci:{}:24.10", dir.path().join("full").display()),
                "--backend",
                "python",
                "--work-dir",
                dir.path().join(format!("work-{threads}")).to_str().unwrap(),
                "--output",
                &output,
            ],
            &[("TRITON_COMPOSE_THREADS", threads)],
        );
        assert!(ok, "{stderr}");
        out
    };
    let one = read_oci(&compose_with("1", false), "x");
    let three = read_oci(&compose_with("3", false), "x");
    // Layers are put into the sink in the plan's order whatever order they
    // are built in: an archive's bytes follow that order.
    assert_eq!(
        fs::read(compose_with("1", true)).unwrap(),
        fs::read(compose_with("3", true)).unwrap()
    );
    assert_eq!(one.manifest_digest, three.manifest_digest);
    assert_eq!(one.layer_digests, three.layer_digests);
    assert_eq!(
        one.tree["opt/tritonserver/backends/python/big.txt"],
        three.tree["opt/tritonserver/backends/python/big.txt"]
    );
}

#[test]
fn a_layer_cap_splits_layers_by_path_and_their_union_is_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    let min = min_image();
    min.write_oci(&dir.path().join("min"), "latest");
    let mut full = full_image(&min);
    let mut files: Vec<Item> = (0..12)
        .map(|i| {
            file(
                &format!("opt/tritonserver/backends/python/part{i:02}.txt"),
                &noise(100 << 10, i),
            )
        })
        .collect();
    // Hard links whose target lands in an earlier part.
    for name in ["zz-link1.txt", "zz-link2.txt"] {
        files.push(hardlink(
            &format!("opt/tritonserver/backends/python/{name}"),
            "opt/tritonserver/backends/python/part00.txt",
        ));
    }
    full.layers.push(layer_tar(&files));
    full.write_oci(&dir.path().join("full"), "24.10");
    let compose_with = |name: &str, cap: Option<&str>| {
        let out = dir.path().join(name);
        let mut args = vec![
            "-q".to_string(),
            "--enable-gpu=false".into(),
            "--no-store".into(),
            "--image".into(),
            format!("min,oci:{}:latest", dir.path().join("min").display()),
            "--image".into(),
            format!("full,oci:{}:24.10", dir.path().join("full").display()),
            "--backend".into(),
            "python".into(),
            "--work-dir".into(),
            dir.path()
                .join(format!("work-{name}"))
                .display()
                .to_string(),
            "--output".into(),
            format!("oci:{}:x", out.display()),
        ];
        if let Some(cap) = cap {
            args.extend(["--max-layer-size".into(), cap.into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, stderr) = run_cli(&args);
        (ok, stderr, out)
    };
    let (ok, stderr, whole) = compose_with("whole", None);
    assert!(ok, "{stderr}");
    let (ok, stderr, split) = compose_with("split", Some("256K"));
    assert!(ok, "{stderr}");
    let whole = read_oci(&whole, "x");
    let split = read_oci(&split, "x");
    assert!(
        split.layer_digests.len() >= whole.layer_digests.len() + 3,
        "{} vs {}",
        split.layer_digests.len(),
        whole.layer_digests.len()
    );
    // The same tree, but for links whose target went to another part:
    // they are copies of it there (one copy per part, linked to it).
    let as_files = |tree: &std::collections::BTreeMap<String, FileInfo>| {
        let mut tree = tree.clone();
        for info in tree.values_mut().filter(|i| i.kind == 'h') {
            info.kind = 'f';
            info.link = None;
        }
        tree
    };
    assert_eq!(as_files(&split.tree), as_files(&whole.tree));
    let link2 = &split.tree["opt/tritonserver/backends/python/zz-link2.txt"];
    assert_eq!(link2.kind, 'h', "the second copy links to the first");
    assert_eq!(
        link2.link.as_deref(),
        Some("opt/tritonserver/backends/python/zz-link1.txt")
    );
    for layer in split.manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .skip(min.layers.len())
    {
        assert!(layer["size"].as_u64().unwrap() <= 256 << 10, "{layer}");
    }
    let history = split.config["history"].as_array().unwrap();
    assert!(
        history.iter().any(|h| h["comment"]
            .as_str()
            .is_some_and(|c| c.contains("backend python (part 2 of "))),
        "{history:?}"
    );

    // A file that compresses to more than the cap cannot be split: a
    // clear error.
    let (ok, stderr, out) = compose_with("tiny", Some("32K"));
    assert!(!ok);
    assert!(
        stderr.contains("more than --max-layer-size allows") && stderr.contains("part00.txt"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// Registries check a layer's compressed size: a 29 MB library that
/// compresses to about 8 MB goes into a 20M-capped layer whole; a layer
/// whose content compresses to more is cut into parts that each fit; a file
/// that compresses to more than the cap is the error, by name.
#[test]
fn a_layer_cap_checks_compressed_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let min = min_image();
    min.write_oci(&dir.path().join("min"), "latest");
    let backend = "opt/tritonserver/backends/python";
    let library = bin(
        &format!("{backend}/libbig.so"),
        &random_bytes(29 << 20, 4, 1),
    );
    let fulls: [(&str, Vec<Item>); 3] = [
        ("compressible", vec![library.clone()]),
        (
            "mixed",
            vec![
                library,
                bin(
                    &format!("{backend}/librandom1.so"),
                    &random_bytes(7 << 20, 256, 2),
                ),
                bin(
                    &format!("{backend}/librandom2.so"),
                    &random_bytes(7 << 20, 256, 3),
                ),
            ],
        ),
        (
            "incompressible",
            vec![bin(
                &format!("{backend}/librandom.so"),
                &random_bytes(21 << 20, 256, 4),
            )],
        ),
    ];
    let store = dir.path().join("store");
    let runs = std::cell::Cell::new(0);
    let compose = |name: &str, cap: Option<&str>, extra: &[&str]| {
        runs.set(runs.get() + 1);
        let out = dir.path().join(format!("out-{}", runs.get()));
        let full = format!("full,oci:{}:24.10", dir.path().join(name).display());
        let min = format!("min,oci:{}:latest", dir.path().join("min").display());
        let work = dir.path().join(format!("work-{}", runs.get()));
        let output = format!("oci:{}:x", out.display());
        let quiet = if extra.contains(&"-v") {
            None
        } else {
            Some("-q")
        };
        let mut args: Vec<&str> = quiet.into_iter().collect();
        args.extend([
            "--enable-gpu=false",
            "--image",
            &min,
            "--image",
            &full,
            "--backend",
            "python",
            "--work-dir",
            work.to_str().unwrap(),
            "--output",
            &output,
        ]);
        args.extend(
            cap.map(|cap| ["--max-layer-size", cap])
                .into_iter()
                .flatten(),
        );
        args.extend_from_slice(extra);
        let (ok, stderr) = run_cli_env(&args, &[("TRITON_COMPOSE_STORE", store.to_str().unwrap())]);
        (ok, stderr, out)
    };
    let new_layers = |out: &Path| {
        let image = read_oci(out, "x");
        let sizes: Vec<u64> = image.manifest["layers"].as_array().unwrap()[min.layers.len()..]
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .collect();
        (image, sizes)
    };
    for (name, items) in &fulls {
        let mut full = full_image(&min);
        full.layers.push(layer_tar(items));
        full.write_oci(&dir.path().join(name), "24.10");
    }
    let cap = 20u64 << 20;
    for name in ["compressible", "mixed"] {
        let (ok, stderr, whole) = compose(name, None, &["--no-store"]);
        assert!(ok, "{stderr}");
        let (whole, whole_sizes) = new_layers(&whole);
        // Measured into the store, then taken from it: the same image;
        // without a store, measured into one of the run's own.
        let (ok, stderr, capped) = compose(name, Some("20M"), &[]);
        assert!(ok, "{name}: {stderr}");
        let (capped, capped_sizes) = new_layers(&capped);
        for again in [&[][..], &["-v"], &["--no-store"]] {
            let (ok, stderr, out) = compose(name, Some("20M"), again);
            assert!(ok, "{name}: {stderr}");
            assert_eq!(read_oci(&out, "x").manifest_digest, capped.manifest_digest);
            if again == ["-v"] {
                assert!(!stderr.contains("measured the"), "{stderr}");
            }
        }
        assert_eq!(capped.tree, whole.tree, "{name}");
        assert!(
            capped_sizes.iter().all(|&s| s <= cap),
            "{name}: {capped_sizes:?}"
        );
        let largest = *whole_sizes.iter().max().unwrap();
        if name == "compressible" {
            // 29 MiB of content in one layer that compresses under the cap.
            assert!(largest <= cap && largest > 5 << 20, "{whole_sizes:?}");
            assert_eq!(capped.layer_digests, whole.layer_digests, "not split");
        } else {
            assert!(largest > cap, "{whole_sizes:?}");
            assert_eq!(
                capped_sizes.len(),
                whole_sizes.len() + 1,
                "{capped_sizes:?}"
            );
            assert!(capped_sizes.iter().filter(|&&s| s > cap / 4).count() >= 2);
            // zstd's costs are sampled, eStargz's are gzip's: parts fit too.
            for compression in ["zstd", "estargz"] {
                let (ok, stderr, out) = compose(name, Some("20M"), &["--compression", compression]);
                assert!(ok, "{compression}: {stderr}");
                let (image, sizes) = new_layers(&out);
                assert!(sizes.iter().all(|&s| s <= cap), "{compression}: {sizes:?}");
                assert!(sizes.len() > whole_sizes.len(), "{compression}: {sizes:?}");
                let mut tree = image.tree.clone();
                // eStargz's own entries.
                tree.retain(|path, _| !path.ends_with(".landmark") && path != "stargz.index.json");
                assert_eq!(tree, whole.tree, "{compression}");
            }
        }
    }
    let (ok, stderr, out) = compose("incompressible", Some("20M"), &["--no-store"]);
    assert!(!ok);
    assert!(
        stderr.contains("librandom.so compresses to")
            && stderr.contains("more than --max-layer-size allows"),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn json_says_what_was_written_and_the_table_sums_it_up() {
    let fx = Fixture::oci();
    let out = fx.path("out");
    let args = [
        cli_args(fx.dir.path(), &["--json".to_string()]),
        vec![
            "--backend".into(),
            "python".into(),
            "--cache".into(),
            "local".into(),
            "--work-dir".into(),
            fx.path("work").display().to_string(),
            "--output".into(),
            format!("oci:{}:x", out.display()),
        ],
    ]
    .concat();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = run_cli_output(&args);
    assert_eq!(code, 0, "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let image = read_oci(&out, "x");
    let layers = summary["layers"].as_array().unwrap();
    let new_digests: Vec<&str> = layers
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    let manifest_layers = image.manifest["layers"].as_array().unwrap();
    let tail: Vec<&str> = manifest_layers[manifest_layers.len() - layers.len()..]
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(new_digests, tail);
    let total: u64 = manifest_layers
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert_eq!(summary["image_size"], total);
    assert_eq!(summary["layers"][1]["purpose"], "backend python");
    assert!(summary["written"]
        .as_str()
        .unwrap()
        .contains(&image.manifest_digest));
    assert!(summary["seconds"].as_f64().unwrap() > 0.0);
    // The table on stderr, for people.
    assert!(
        stderr.contains("backend python")
            && stderr.contains("new layers")
            && stderr.contains("of full's"),
        "{stderr}"
    );
}

#[test]
fn a_component_from_a_directory_is_a_layer_of_its_own_owned_by_root() {
    let fx = Fixture::oci();
    let dir = fx.path("mine");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("model.py"), "print('hi')\n").unwrap();
    std::fs::write(dir.join("sub/data.txt"), "data\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("sub/data.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::symlink("model.py", dir.join("link.py")).unwrap();
    let compose = |out: &str, spec: &str| {
        let output = format!("oci:{}:x", fx.path(out).display());
        let work = fx.path(&format!("work-{out}"));
        let args = cli_args(
            fx.dir.path(),
            &[
                "--backend".into(),
                spec.to_string(),
                "--work-dir".into(),
                work.display().to_string(),
                "--output".into(),
                output,
            ],
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, stderr) = run_cli_env(&args, &[("SOURCE_DATE_EPOCH", "1000000000")]);
        (ok, stderr, work)
    };
    let spec = format!("mine={}", dir.display());
    let (ok, stderr, work) = compose("out", &spec);
    assert!(ok, "{stderr}");
    let image = read_oci(&fx.path("out"), "x");
    let base = "opt/tritonserver/backends/mine";
    let model = &image.tree[&format!("{base}/model.py")];
    assert_eq!((model.uid, model.gid, model.kind), (0, 0, 'f'));
    assert_eq!(
        image.tree[&format!("{base}/sub/data.txt")].mode & 0o777,
        0o640
    );
    assert_eq!(
        image.tree[&format!("{base}/link.py")].link.as_deref(),
        Some("model.py")
    );
    let own_layer = image
        .layer_paths
        .iter()
        .find(|l| l.iter().any(|p| p.ends_with("mine/model.py")))
        .unwrap();
    assert!(
        own_layer
            .iter()
            .all(|p| p.starts_with(base) || base.starts_with(p.trim_end_matches('/'))),
        "{own_layer:?}"
    );
    let dockerfile = std::fs::read_to_string(work.join("Dockerfile.compose")).unwrap();
    assert!(
        dockerfile.contains(&format!("COPY triton-compose-backends-mine /{base}\n")),
        "{dockerfile}"
    );
    assert!(work
        .join("triton-compose-backends-mine/sub/data.txt")
        .exists());
    // The same directory again gives the same bytes.
    let (ok, stderr, _) = compose("again", &spec);
    assert!(ok, "{stderr}");
    assert_eq!(
        read_oci(&fx.path("again"), "x").manifest_digest,
        image.manifest_digest
    );

    // A symlink leaving the directory, a name full has, a missing directory.
    std::os::unix::fs::symlink("/etc/passwd", dir.join("escape")).unwrap();
    let (ok, stderr, _) = compose("escape", &spec);
    assert!(!ok && stderr.contains("which leaves"), "{stderr}");
    std::fs::remove_file(dir.join("escape")).unwrap();
    let (ok, stderr, _) = compose("clash", &format!("python={}", dir.display()));
    assert!(
        !ok && stderr.contains("already has a backend python"),
        "{stderr}"
    );
    let (ok, stderr, _) = compose("missing", &format!("mine={}", fx.path("nowhere").display()));
    assert!(!ok && stderr.contains("no such directory"), "{stderr}");
}

#[test]
fn three_variants_in_one_run_share_the_core_layer_built_once() {
    let fx = Fixture::oci();
    let own = fx.path("own");
    std::fs::create_dir(&own).unwrap();
    std::fs::write(own.join("model.py"), "print('own')\n").unwrap();
    let variants = fx.path("variants.toml");
    std::fs::write(
        &variants,
        format!(
            r#"
[[variant]]
name = "python"
backends = ["python"]
caches = ["local"]
output = "oci:{out}:python"

[[variant]]
name = "onnx"
backends = ["onnxruntime"]
repoagents = ["checksum"]
output = "oci:{out}:onnx"

[[variant]]
name = "own"
backends = ["python", "own={own}"]
output = "oci:{out}:own"
"#,
            out = fx.path("out").display(),
            own = own.display()
        ),
    )
    .unwrap();
    let args = [
        "--enable-gpu=false".to_string(),
        "--no-store".into(),
        "--json".into(),
        "--image".into(),
        format!("min,oci:{}:latest", fx.path("min").display()),
        "--image".into(),
        format!("full,oci:{}:24.10", fx.path("full").display()),
        "--work-dir".into(),
        fx.path("work").display().to_string(),
        "--variants".into(),
        variants.display().to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = run_cli_output(&args);
    assert_eq!(code, 0, "{stderr}");
    // Every source layer was read once.
    let reads: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("reading full layer"))
        .collect();
    let mut unique = reads.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(reads.len(), unique.len(), "{stderr}");
    let results: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 3);
    let core = |name: &str| -> (String, bool) {
        let r = results.iter().find(|r| r["variant"] == name).unwrap();
        let layer = r["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["purpose"] == "Triton core")
            .unwrap();
        (
            layer["digest"].as_str().unwrap().to_string(),
            layer["from_store"].as_bool().unwrap(),
        )
    };
    let (python, onnx, mine) = (core("python"), core("onnx"), core("own"));
    assert_eq!(python.0, onnx.0);
    assert_eq!(python.0, mine.0);
    // Built once: the first variant wrote it, the others took it.
    assert_eq!(
        [python.1, onnx.1, mine.1]
            .iter()
            .filter(|from| !**from)
            .count(),
        1
    );
    for (tag, backend) in [
        ("python", "python"),
        ("onnx", "onnxruntime"),
        ("own", "own"),
    ] {
        let image = read_oci(&fx.path("out"), tag);
        assert!(
            image
                .tree
                .keys()
                .any(|p| p.starts_with(&format!("opt/tritonserver/backends/{backend}/"))),
            "{tag}"
        );
        assert!(fx.path(&format!("work/{tag}/Dockerfile.compose")).exists());
    }
    let onnx_image = read_oci(&fx.path("out"), "onnx");
    assert!(!onnx_image
        .tree
        .keys()
        .any(|p| p.contains("backends/python")));
    assert!(!onnx_image.tree.keys().any(|p| p.contains("backends/own")));
}

/// The command line's common part for images laid out in `dir` (`min`,
/// `full`), without a store; `extra` follows.
fn cli_args(dir: &Path, extra: &[String]) -> Vec<String> {
    let mut args = vec![
        "--enable-gpu=false".to_string(),
        "--no-store".into(),
        "--image".into(),
        format!("min,oci:{}:latest", dir.join("min").display()),
        "--image".into(),
        format!("full,oci:{}:24.10", dir.join("full").display()),
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn an_oci_layout_gets_provenance_annotations_and_its_sbom_as_a_referrer() {
    let fx = Fixture::oci();
    let request = |out: &str| {
        let mut raw = fx.request(
            &format!("oci:{}:x", fx.path(out).display()),
            PYTHON_CHECKSUM_LOCAL,
        );
        raw.sbom = true;
        raw.source_date_epoch = Some("1700000000".into());
        raw.work_dir = fx.path(&format!("work-{out}"));
        raw
    };
    run(request("out")).unwrap();
    let image = read_oci(&fx.path("out"), "x");
    let index_digest = |dir: &str| -> String {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fx.path(dir).join("index.json")).unwrap())
                .unwrap();
        index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let annotations = &image.manifest["annotations"];
    assert_eq!(
        annotations["org.opencontainers.image.base.digest"],
        index_digest("min")
    );
    assert_eq!(
        annotations["io.triton-compose.full.digest"],
        index_digest("full")
    );
    assert_eq!(
        annotations["org.opencontainers.image.created"],
        "2023-11-14T22:13:20Z"
    );
    assert_eq!(
        annotations["io.triton-compose.selection"],
        "backends=python;repoagents=checksum;caches=local"
    );
    // Paths of local layouts are no names to pull by.
    assert!(annotations
        .get("org.opencontainers.image.base.name")
        .is_none());
    let labels = &image.config["config"]["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.created"],
        "2023-11-14T22:13:20Z"
    );
    assert_eq!(
        labels["io.triton-compose.selection"],
        annotations["io.triton-compose.selection"]
    );
    assert!(
        labels.get("io.triton-compose.full.digest").is_none(),
        "{labels}"
    );

    // The SBOM: in the work directory, and in the layout as an artifact
    // whose subject is the image.
    let sbom = std::fs::read(fx.path("work-out").join("sbom.spdx.json")).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.path("out").join("index.json")).unwrap()).unwrap();
    let artifact = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["artifactType"] == "application/spdx+json")
        .unwrap_or_else(|| panic!("no SBOM in {index}"));
    let blob = |digest: &str| {
        std::fs::read(fx.path("out").join("blobs/sha256").join(&digest[7..])).unwrap()
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(artifact["digest"].as_str().unwrap())).unwrap();
    assert_eq!(
        manifest["subject"]["digest"],
        image.manifest_digest.as_str()
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(
        blob(manifest["layers"][0]["digest"].as_str().unwrap()),
        sbom
    );
    let doc: serde_json::Value = serde_json::from_slice(&sbom).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");

    // Read back by `triton-compose sbom`, and the layout still reads
    // without a tag (the artifact is not an image).
    let reference = format!("oci:{}", fx.path("out").display());
    let (code, stdout, stderr) = run_cli_output(&["sbom", "-q", &reference]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.as_bytes(), sbom.as_slice());

    // The same inputs give the same bytes, in another layout.
    run(request("again")).unwrap();
    let again = std::fs::read(fx.path("work-again").join("sbom.spdx.json")).unwrap();
    assert_eq!(again, sbom);
    assert_eq!(
        read_oci(&fx.path("again"), "x").manifest_digest,
        image.manifest_digest
    );
}

/// min and full for one architecture, each with a file saying which.
fn platform_images(arch: &str) -> (TestImage, TestImage) {
    let mut min = min_image();
    min.architecture = arch.into();
    min.layers.push(layer_tar(&[file("etc/platform", arch)]));
    let mut full = full_image(&min);
    full.architecture = arch.into();
    full.layers.push(layer_tar(&[
        dir("opt/tritonserver"),
        dir("opt/tritonserver/lib"),
        file(
            "opt/tritonserver/lib/libarch.so",
            &format!("built for {arch}\n"),
        ),
    ]));
    (min, full)
}

fn skopeo(args: &[&str]) -> String {
    let out = std::process::Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo runs");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn several_platforms_compose_into_one_index_each_from_its_own_sources() {
    let dir = tempfile::tempdir().unwrap();
    let (min_amd, full_amd) = platform_images("amd64");
    let (min_arm, full_arm) = platform_images("arm64");
    TestImage::write_oci_multi(&dir.path().join("min"), "latest", &[&min_amd, &min_arm]);
    TestImage::write_oci_multi(&dir.path().join("full"), "24.10", &[&full_amd, &full_arm]);
    let images = [
        format!("min,oci:{}:latest", dir.path().join("min").display()),
        format!("full,oci:{}:24.10", dir.path().join("full").display()),
    ];
    let compose = |platforms: &str, output: &str| {
        let work = dir.path().join("work");
        run_cli_output(&[
            "-q",
            "--enable-gpu=false",
            "--no-store",
            "--backend",
            "python",
            "--image",
            &images[0],
            "--image",
            &images[1],
            "--platform",
            platforms,
            "--output",
            output,
            "--work-dir",
            work.to_str().unwrap(),
        ])
    };
    let out = dir.path().join("out");
    let (code, _, stderr) = compose(
        "linux/amd64,linux/arm64",
        &format!("oci:{}:x", out.display()),
    );
    assert_eq!(code, 0, "{stderr}");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let top = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "x")
        .unwrap();
    assert_eq!(top["mediaType"], "application/vnd.oci.image.index.v1+json");
    let blob = |d: &serde_json::Value| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(out.join("blobs/sha256").join(&d.as_str().unwrap()[7..])).unwrap(),
        )
        .unwrap()
    };
    let platforms: Vec<String> = blob(&top["digest"])["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(platforms, ["amd64", "arm64"]);
    // Each platform, as skopeo picks it, holds its own platform's files only.
    let reference = format!("oci:{}:x", out.display());
    for (arch, other) in [("amd64", "arm64"), ("arm64", "amd64")] {
        let inspected: serde_json::Value = serde_json::from_str(&skopeo(&[
            "--override-arch",
            arch,
            "--override-os",
            "linux",
            "inspect",
            &reference,
        ]))
        .unwrap();
        assert_eq!(inspected["Architecture"], arch);
        let single = dir.path().join(format!("single-{arch}"));
        skopeo(&[
            "--override-arch",
            arch,
            "--override-os",
            "linux",
            "copy",
            "-q",
            &reference,
            &format!("oci:{}:x", single.display()),
        ]);
        let image = read_oci(&single, "x");
        assert_eq!(image.config["architecture"], arch);
        let lib = &image.tree["opt/tritonserver/lib/libarch.so"];
        let own = sha256(format!("built for {arch}\n").as_bytes());
        assert_ne!(own, sha256(format!("built for {other}\n").as_bytes()));
        assert_eq!(lib.content.as_deref(), Some(own.as_str()), "{arch}");
        assert_eq!(
            image.tree["etc/platform"].content.as_deref(),
            Some(sha256(arch.as_bytes()).as_str())
        );
        let dockerfile = std::fs::read_to_string(
            dir.path()
                .join(format!("work/linux-{arch}/Dockerfile.compose")),
        )
        .unwrap();
        assert!(
            dockerfile.contains(&format!("Rendered for platform linux/{arch}")),
            "{dockerfile}"
        );
        // Each platform's SBOM is its own referrer.
        let sbom =
            std::fs::read(dir.path().join(format!("work/linux-{arch}/sbom.spdx.json"))).unwrap();
        assert!(!sbom.is_empty());
    }

    // A platform the sources lack: the error lists what they have.
    let (code, _, stderr) = compose(
        "linux/amd64,linux/s390x",
        &format!("oci:{}:y", dir.path().join("y").display()),
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("no image for platform linux/s390x")
            && stderr.contains("linux/amd64, linux/arm64"),
        "{stderr}"
    );
    // An archive holds one image: refused, and nothing written.
    let archive = dir.path().join("both.tar");
    let (code, _, stderr) = compose("all", &format!("docker-archive:{}", archive.display()));
    assert_ne!(code, 0);
    assert!(stderr.contains("not a multi-platform index"), "{stderr}");
    assert!(!archive.exists());
}

#[test]
fn a_platform_single_platform_sources_lack_is_refused() {
    let fx = Fixture::oci();
    let out = fx.path("out");
    let (code, _, stderr) = run_cli_output(&[
        "-q",
        "--enable-gpu=false",
        "--no-store",
        "--backend",
        "python",
        "--image",
        &format!("min,oci:{}:latest", fx.path("min").display()),
        "--image",
        &format!("full,oci:{}:24.10", fx.path("full").display()),
        "--platform",
        "linux/arm64",
        "--output",
        &format!("oci:{}:x", out.display()),
        "--work-dir",
        fx.path("work").to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("has no linux/arm64 image; it is linux/amd64"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// The eStargz files a layer carries besides the image's own.
fn estargz_own(path: &str) -> bool {
    matches!(
        path,
        ".prefetch.landmark" | ".no.prefetch.landmark" | "stargz.index.json"
    )
}

#[test]
fn estargz_writes_every_layer_with_its_landmark_the_same_files_and_stores_min_converted() {
    let fx = Fixture::oci();
    let store = triton_compose::StoreSettings {
        dir: fx.path("store"),
        max_size: u64::MAX,
    };
    let compose_to = |name: &str, compression: Compression| {
        let out = fx.path(name);
        let mut raw = fx.request(&format!("oci:{}:x", out.display()), PYTHON_CHECKSUM_LOCAL);
        raw.compression = compression;
        raw.store = Some(store.clone());
        let outcome = run(raw).unwrap();
        (read_oci(&out, "x"), outcome.summary.unwrap())
    };
    let (plain, _) = compose_to("plain", Compression::default());
    let (esgz, summary) = compose_to("esgz", Compression::Estargz { level: 4 });
    // The same files, as an ordinary client unpacks them.
    let own: BTreeMap<_, _> = esgz.tree.iter().filter(|(p, _)| !estargz_own(p)).collect();
    assert_eq!(own, plain.tree.iter().collect::<BTreeMap<_, _>>());
    assert_eq!(esgz.layer_paths.len(), plain.layer_paths.len());
    let layers = esgz.manifest["layers"].as_array().unwrap();
    for (n, paths) in esgz.layer_paths.iter().enumerate() {
        assert!(
            layers[n]["annotations"]["containerd.io/snapshot/stargz/toc.digest"].is_string(),
            "layer {n}: {}",
            layers[n]
        );
        assert!(
            layers[n]["annotations"]["io.containers.estargz.uncompressed-size"].is_string(),
            "layer {n}"
        );
        // The TOC last; a landmark, the no-prefetch one first.
        assert_eq!(paths.last().map(String::as_str), Some("stargz.index.json"));
        let landmark = paths.iter().position(|p| p == ".prefetch.landmark");
        let none = paths.iter().position(|p| p == ".no.prefetch.landmark");
        assert!(landmark.is_some() != none.is_some(), "layer {n}: {paths:?}");
        assert!(none.is_none_or(|i| i == 0), "layer {n}: {paths:?}");
    }
    // The server's binary and its libraries come before the core layer's
    // landmark; a header (nothing loads it) after it.
    let core = esgz
        .layer_paths
        .iter()
        .find(|p| p.iter().any(|p| p == "opt/tritonserver/bin/tritonserver"))
        .unwrap();
    let at = |wanted: &str| {
        core.iter()
            .position(|p| p == wanted)
            .unwrap_or_else(|| panic!("no {wanted}: {core:?}"))
    };
    let landmark = at(".prefetch.landmark");
    assert!(
        at("opt/tritonserver/bin/tritonserver") < landmark,
        "{core:?}"
    );
    assert!(at("opt/tritonserver/include/new.h") > landmark, "{core:?}");
    // min's layer, rewritten, came from no store the first time.
    let min_layer = summary
        .layers
        .iter()
        .find(|l| l.purpose.starts_with("min layer"))
        .unwrap();
    assert!(
        min_layer.purpose.ends_with("as eStargz"),
        "{}",
        min_layer.purpose
    );
    assert!(!min_layer.from_store);
    // Again: every layer from the store, min's converted one too; the same image.
    let (again, summary) = compose_to("again", Compression::Estargz { level: 4 });
    assert!(
        summary.layers.iter().all(|l| l.from_store),
        "{:?}",
        summary.layers
    );
    assert_eq!(again.manifest_digest, esgz.manifest_digest);
}

#[test]
fn user_sets_the_config_user_keeps_tmp_writable_and_renders_last() {
    let fx = Fixture::oci();
    let out = fx.path("out");
    let mut raw = fx.request(
        &format!("oci:{}:u", out.display()),
        &[("backend", "python")],
    );
    raw.user = Some("4242:4343".into());
    run(raw).unwrap();
    let image = read_oci(&out, "u");
    assert_eq!(image.config["config"]["User"], "4242:4343");
    let tmp = image.tree.get("tmp").expect("the image has /tmp");
    assert_eq!((tmp.kind, tmp.mode & 0o7777), ('d', 0o1777), "{tmp:?}");
    // Dockerfile.compose sets it after every RUN, so those run as root.
    let dockerfile = fs::read_to_string(fx.path("work/Dockerfile.compose")).unwrap();
    let last = dockerfile.lines().rfind(|l| !l.trim().is_empty()).unwrap();
    assert_eq!(last, "USER 4242:4343", "{dockerfile}");
    let run_at = dockerfile.rfind("\nRUN ").unwrap();
    assert!(run_at < dockerfile.rfind("\nUSER ").unwrap());
    // Without --user the image's user is full's: none here.
    let mut raw = fx.request(
        &format!("oci:{}:v", out.display()),
        &[("backend", "python")],
    );
    raw.work_dir = fx.path("work-v");
    run(raw).unwrap();
    let plain = read_oci(&out, "v");
    assert!(plain.config["config"].get("User").is_none_or(|u| u == ""));
    // A name is refused with what to give instead.
    for bad in ["triton-server", "1000:", "-1", "1000:1000:1"] {
        let mut raw = fx.request(
            &format!("oci:{}:w", out.display()),
            &[("backend", "python")],
        );
        raw.user = Some(bad.into());
        let err = run(raw).unwrap_err();
        assert!(
            err.to_string().contains("not a numeric id")
                && err.hint_text().is_some_and(|h| h.contains("--user 1000")),
            "{bad}: {err}"
        );
    }
}
