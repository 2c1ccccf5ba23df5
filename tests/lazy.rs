//! eStargz for real: a composed `--compression estargz` image checked by
//! stargz-snapshotter's own estargz package, pulled lazily by containerd
//! through the stargz snapshotter from Debian's docker-registry on
//! loopback and run with `ctr run` until it answers inference; and the same
//! image pulled and run as an ordinary one by docker, skopeo and podman.
//! Fixtures from scripts/fixtures.sh, tools from scripts/lib.sh's
//! stargz_tools; under CI none of them may be missing.

mod support;

use std::path::Path;
use std::time::Duration;

use support::docker::*;
use support::lazy::{stargz_tools, verify_estargz_layout, Lazy};
use support::registry::{Registry, PASSWORD, USER};
use support::Compose;

/// python + onnxruntime, `--slim`, eStargz: what the users run.
fn estargz_compose(fixtures: &Fixtures, out: &Path, work: &Path, store: &Path) -> String {
    let (ok, stderr) = Compose::new(&fixtures.oci("min"), &fixtures.oci("full"))
        .select(&["--backend", "python", "--backend", "onnxruntime"])
        .args(&["--slim", "--compression", "estargz"])
        .output(&format!("oci:{}:esgz", out.display()))
        .work_dir(work)
        .run_env(&[("TRITON_COMPOSE_STORE", store.to_str().unwrap())]);
    assert!(ok, "compose failed:\n{stderr}");
    stderr
}

fn manifest_digest(layout: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn estargz_image_is_valid_reproducible_stored_and_pulls_lazily_to_an_answer() {
    let Some(fixtures) = Fixtures::get() else {
        return;
    };
    let Some(tools) = stargz_tools() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let first = work.path().join("first");
    let stderr = estargz_compose(&fixtures, &first, work.path(), &store);

    // Every layer, min's too, is eStargz the estargz package accepts; each
    // has a landmark; the prefetch holds what the server opens first.
    let reports = verify_estargz_layout(&tools, &first, "esgz");
    assert!(reports.len() >= 3, "{reports:?}");
    for (n, report) in reports.iter().enumerate() {
        assert_ne!(report.landmark, "none", "layer {} has no landmark", n + 1);
        assert!(
            report.files > 0 || report.landmark == "no-prefetch",
            "layer {}: {report:?}",
            n + 1
        );
    }
    let prefetched: Vec<&str> = reports
        .iter()
        .flat_map(|r| r.prefetched.iter().map(String::as_str))
        .collect();
    for wanted in [
        "opt/tritonserver/bin/tritonserver",
        "opt/tritonserver/backends/python/libtriton_python.so",
        "opt/tritonserver/backends/onnxruntime/libtriton_onnxruntime.so",
        "usr/lib/x86_64-linux-gnu/libc.so.6",
        "etc/ld.so.cache",
    ] {
        assert!(
            prefetched.contains(&wanted),
            "{wanted} is not prefetched: {prefetched:?}"
        );
    }
    assert!(
        prefetched
            .iter()
            .any(|p| p.starts_with("opt/tritonserver/lib/libtritonserver")),
        "libtritonserver is not prefetched"
    );
    // Documentation is nothing the server opens.
    assert!(
        !prefetched.iter().any(|p| p.starts_with("usr/share/doc/")),
        "{prefetched:?}"
    );
    let total: u64 = reports.iter().map(|r| r.blob_size).sum();
    let ahead: u64 = reports.iter().map(|r| r.prefetch_end.max(0) as u64).sum();
    eprintln!(
        "estargz: {} layers, {total} bytes, prefetch {ahead} bytes ({:.0}%)",
        reports.len(),
        100.0 * ahead as f64 / total as f64
    );
    assert!(ahead < total, "everything is prefetched");
    // Dockerfile.compose's record of the prefetch, in ctr-remote's format.
    let record = std::fs::read_to_string(work.path().join("triton-compose-prefetch.json")).unwrap();
    let recorded: Vec<String> = record
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for path in &prefetched {
        assert!(recorded.iter().any(|r| r == path), "{path} not recorded");
    }
    assert!(
        !stderr.contains("(from the store)"),
        "a cold compose took layers from the store:\n{stderr}"
    );

    // Warm: every layer, the converted min layer too, from the store; the
    // same bytes. Cold in another store: the same bytes again.
    let warm = work.path().join("warm");
    let stderr = estargz_compose(&fixtures, &warm, work.path(), &store);
    for line in stderr
        .lines()
        .filter(|l| l.starts_with("min layer") || l.starts_with("Triton core"))
    {
        assert!(
            line.contains("(from the store)"),
            "not reused: {line}\n{stderr}"
        );
    }
    assert_eq!(manifest_digest(&warm), manifest_digest(&first));
    let again = work.path().join("again");
    estargz_compose(&fixtures, &again, work.path(), &work.path().join("store2"));
    assert_eq!(
        manifest_digest(&again),
        manifest_digest(&first),
        "not reproducible"
    );

    // Lazily: containerd through the stargz snapshotter, from the registry.
    let Some(registry) = Registry::start() else {
        return;
    };
    registry.push_oci(&first, "esgz", "triton/lazy:esgz");
    let lazy = Lazy::start(&tools);
    let before = registry.blob_bytes_sent();
    let pulled_in = lazy.pull(&registry, "triton/lazy:esgz", "stargz");
    let models = add_sub_models("python");
    let mut server = lazy.run_server(&registry, "triton/lazy:esgz", "stargz", models.path());
    server.wait_ready(Duration::from_secs(180));
    if let Err(err) = infer_add_sub(server.http_port) {
        panic!("{err}\n{}\n{}", server.logs(), lazy.log());
    }
    let fetched = registry.blob_bytes_sent() - before;
    eprintln!(
        "lazy pull: {pulled_in:?}; {fetched} of {total} bytes ({:.0}%) fetched before the first answer",
        100.0 * fetched as f64 / total as f64
    );
    // Lazy means not everything: the layers' other files stay in the registry.
    assert!(fetched < total, "the lazy pull fetched the whole image");
    // The snapshotter fetched each layer's prefetch up to its landmark.
    assert!(
        fetched >= ahead,
        "fetched {fetched} bytes, less than the {ahead} bytes of prefetch"
    );
    assert_eq!(server.stop(), Some(0), "tritonserver did not stop cleanly");
    drop(lazy);

    // An ordinary image to everyone else: docker pulls and runs it, skopeo
    // and podman pull it.
    let docker_user = DockerUser::new();
    let docker_as_user = |args: &[&str]| docker_user.run(args);
    docker_as_user(&["login", "-u", USER, "-p", PASSWORD, &registry.host]);
    let reference = format!("{}/triton/lazy:esgz", registry.host);
    docker_as_user(&["pull", "-q", &reference]);
    let server = Server::start(&reference, models.path());
    server.wait_ready(Duration::from_secs(120));
    if let Err(err) = infer_add_sub(server.http_port) {
        panic!("{err}\n{}", server.logs());
    }
    assert_eq!(server.stop(), 0);
    docker_as_user(&["rmi", "-f", &reference]);
    let copied = work.path().join("copied");
    registry.pull_oci("triton/lazy:esgz", &copied, "esgz");
    verify_estargz_layout(&tools, &copied, "esgz");
    let creds = format!("{USER}:{PASSWORD}");
    podman_pull(
        &work.path().join("podman"),
        &["--creds", &creds, &reference],
    );
}

#[test]
fn variants_with_estargz_write_every_image_as_verified_estargz() {
    let Some(fixtures) = Fixtures::get() else {
        return;
    };
    let Some(tools) = stargz_tools() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let variants = work.path().join("variants.toml");
    std::fs::write(
        &variants,
        format!(
            "[[variant]]\nname = \"python\"\nbackends = [\"python\"]\noutput = \"oci:{out}:python\"\n\n\
             [[variant]]\nname = \"onnx\"\nbackends = [\"onnxruntime\"]\noutput = \"oci:{out}:onnx\"\n",
            out = out.display()
        ),
    )
    .unwrap();
    let (code, _, stderr) = support::run_cli_output(&[
        "--enable-gpu=false",
        "--image",
        &format!("min,{}", fixtures.oci("min")),
        "--image",
        &format!("full,{}", fixtures.oci("full")),
        "--compression",
        "estargz",
        "--work-dir",
        work.path().to_str().unwrap(),
        "--variants",
        variants.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    for (tag, component) in [
        (
            "python",
            "opt/tritonserver/backends/python/libtriton_python.so",
        ),
        (
            "onnx",
            "opt/tritonserver/backends/onnxruntime/libtriton_onnxruntime.so",
        ),
    ] {
        let reports = verify_estargz_layout(&tools, &out, tag);
        assert!(
            reports.iter().all(|r| r.landmark != "none"),
            "{tag}: {reports:?}"
        );
        // Without --slim min's layer is converted, and prefetches libc.
        let prefetched: Vec<&String> = reports.iter().flat_map(|r| &r.prefetched).collect();
        for wanted in [component, "usr/lib/x86_64-linux-gnu/libc.so.6"] {
            assert!(
                prefetched.iter().any(|p| *p == wanted),
                "{tag}: {wanted} not prefetched"
            );
        }
    }
}
