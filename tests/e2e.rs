//! End to end, against things nobody here wrote: a debootstrapped Debian
//! min, a full image holding the real Triton 2.51.0, a Docker engine, skopeo,
//! umoci and oci-image-tool. The fixtures come from scripts/fixtures.sh;
//! scripts/test.sh builds them, starts Docker and runs these tests.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::docker::*;
use support::{run_cli_output, Compose};

/// An image loaded into the engine, removed when dropped.
struct Loaded(String);

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

/// Composes with compose.py-style arguments into a docker-archive; returns
/// its path and the name:tag it holds.
fn compose_to_archive(fx: &Fixtures, work: &Path, args: &[&str]) -> (PathBuf, String) {
    let name = format!("triton-compose-e2e/{}:test", unique("img"));
    let archive = work.join(format!("{}.tar", unique("out")));
    let output = format!("docker-archive:{}:{name}", archive.display());
    let (ok, stderr) = Compose::new(&fx.archive("min"), &fx.archive("full"))
        .output(&output)
        .work_dir(work)
        .arg("-q")
        .args(args)
        .run();
    assert!(ok, "compose failed:\n{stderr}");
    (archive, name)
}

/// Loads an archive compose_to_archive wrote.
fn load(archive: &Path, name: &str) -> Loaded {
    let loaded = docker(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains(name), "{loaded}");
    Loaded(name.to_string())
}

/// Composes into a docker-archive and loads it.
fn compose_and_load(fx: &Fixtures, work: &Path, args: &[&str]) -> Loaded {
    let (archive, name) = compose_to_archive(fx, work, args);
    let loaded = load(&archive, &name);
    std::fs::remove_file(&archive).unwrap();
    loaded
}

/// `triton-compose verify` of an archive: (exit code, report).
fn verify(archive: &Path) -> (i32, String) {
    let image = format!("docker-archive:{}", archive.display());
    let (code, stdout, stderr) = run_cli_output(&["verify", "-q", &image]);
    (code, format!("{stdout}{stderr}"))
}

fn models_dir(with_add_sub: bool) -> tempfile::TempDir {
    if with_add_sub {
        return add_sub_models("python");
    }
    let dir = tempfile::tempdir().unwrap();
    // The container runs as root but the mount must be readable to all.
    Command::new("chmod")
        .args(["-R", "a+rX", dir.path().to_str().unwrap()])
        .status()
        .unwrap();
    dir
}

/// Asks add_sub for [1,2,3,4] + [10,20,30,40] and checks the sums.
fn assert_add_sub_answers(server: &Server) {
    let (status, body) = http(server.http_port, "GET", "/v2/models/add_sub/ready", None).unwrap();
    assert_eq!(
        status,
        200,
        "add_sub is not ready ({body}):\n{}",
        server.logs()
    );
    if let Err(err) = infer_add_sub(server.http_port) {
        panic!("{err}\n{}", server.logs());
    }
}

/// The arguments of `docker run` for a shell script in the image, offline.
fn sh_args<'a>(image: &'a str, script: &'a str) -> [&'a str; 9] {
    [
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "/bin/sh",
        image,
        "-c",
        script,
    ]
}

/// Runs a shell script in the image; its stdout (it must succeed).
fn sh_in(image: &str, script: &str) -> String {
    docker(&sh_args(image, script))
}

/// Starts the image's server on `models`, checks add_sub answers, stops it.
fn serve_add_sub(image: &str, models: &Path) {
    let server = Server::start(image, models);
    server.wait_ready(Duration::from_secs(120));
    assert_add_sub_answers(&server);
    assert_eq!(server.stop(), 0, "tritonserver did not shut down cleanly");
}

#[test]
fn full_fixture_serves_add_sub() {
    // The harness itself: the real server in the full image answers correctly.
    let Some(fx) = Fixtures::get() else { return };
    let models = models_dir(true);
    serve_add_sub(&fx.full_image, models.path());
}

#[test]
fn composed_python_image_answers_add_sub_with_runtime_deps_carried_from_full() {
    let Some(fx) = Fixtures::get() else { return };
    let work = tempfile::tempdir().unwrap();
    let (archive, name) = compose_to_archive(
        &fx,
        work.path(),
        &["--backend", "python", "--cache", "local"],
    );
    let (code, report) = verify(&archive);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("ok: every need resolves inside the image"),
        "{report}"
    );
    assert!(
        report.contains("python: numpy (for the python backend)"),
        "{report}"
    );
    let image = load(&archive, &name);

    let run = |argv: &[&str]| {
        let mut args = vec!["run", "--rm", "--network", "none", &image.0];
        args.extend_from_slice(argv);
        docker(&args)
    };
    let sum = run(&[
        "python3",
        "-c",
        "import numpy; print(numpy.add([1, 2], [3, 4]))",
    ]);
    assert!(sum.contains("[4 6]"), "{sum}");
    let dpkg = run(&["dpkg", "-l", "python3"]);
    assert!(
        dpkg.lines().any(|l| l.starts_with("ii  python3 ")),
        "python3 is not installed as dpkg sees it:\n{dpkg}"
    );
    // `tritonserver --help` exits non-zero; its text is what counts.
    let help = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            &image.0,
            "tritonserver",
            "--help",
        ])
        .output()
        .unwrap();
    let help =
        String::from_utf8_lossy(&help.stderr).into_owned() + &String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--model-repository"), "{help}");

    let models = models_dir(true);
    serve_add_sub(&image.0, models.path());
}

#[test]
fn without_deps_verify_names_libpython_as_missing_and_fails() {
    let Some(fx) = Fixtures::get() else { return };
    let work = tempfile::tempdir().unwrap();
    let (archive, _) = compose_to_archive(
        &fx,
        work.path(),
        &["--backend", "python", "--cache", "local", "--no-deps"],
    );
    let (code, report) = verify(&archive);
    assert_ne!(code, 0, "{report}");
    assert!(
        report.contains(
            "missing: /opt/tritonserver/backends/python/triton_python_backend_stub cannot be loaded because libpython3.11.so.1.0 is missing"
        ),
        "{report}"
    );
    assert!(report.contains("missing: python module numpy"), "{report}");
}

#[test]
fn composed_standin_and_checksum_variant_has_exactly_its_components() {
    let Some(fx) = Fixtures::get() else { return };
    let work = tempfile::tempdir().unwrap();
    let image = compose_and_load(
        &fx,
        work.path(),
        &["--backend", "standin", "--repoagent", "checksum"],
    );
    let listing = sh_in(
        &image.0,
        "ls /opt/tritonserver/backends /opt/tritonserver/repoagents; ls /opt/tritonserver/caches 2>&1; id triton-server",
    );
    assert!(listing.contains("standin"), "{listing}");
    assert!(listing.contains("checksum"), "{listing}");
    assert!(
        !listing.contains("python") && !listing.contains("obsolete"),
        "{listing}"
    );
    assert!(
        listing.contains("uid=1000(triton-server) gid=1000(triton-server)"),
        "{listing}"
    );
    let models = models_dir(false);
    let server = Server::start(&image.0, models.path());
    server.wait_ready(Duration::from_secs(120));
    assert_eq!(server.stop(), 0);
}

#[test]
fn oci_output_from_oci_fixtures_passes_skopeo_umoci_and_oci_image_tool() {
    let Some(fx) = Fixtures::get() else { return };
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let output = format!("oci:{}:python", layout.display());
    let min = fx.oci("min");
    let full = fx.oci("full");
    let (ok, stderr) = Compose::new(&min, &full)
        .args(&[
            "-q",
            "--backend",
            "python",
            "--cache",
            "local",
            "--output",
            &output,
            "--work-dir",
            work.path().to_str().unwrap(),
        ])
        .run();
    assert!(ok, "{stderr}");
    let inspect = docker_free(&["skopeo", "inspect", &output]);
    assert!(
        inspect.contains("\"com.nvidia.build.id\": \"test-build-1\""),
        "{inspect}"
    );
    let bundle = work.path().join("bundle");
    docker_free(&[
        "umoci",
        "unpack",
        "--rootless",
        "--image",
        &format!("{}:python", layout.display()),
        bundle.to_str().unwrap(),
    ]);
    assert!(bundle
        .join("rootfs/opt/tritonserver/bin/tritonserver")
        .is_file());
    assert!(bundle
        .join("rootfs/opt/tritonserver/backends/python/triton_python_backend_stub")
        .is_file());
    docker_free(&[
        "oci-image-tool",
        "validate",
        "--type",
        "image",
        "--ref",
        "name=python",
        layout.to_str().unwrap(),
    ]);
}

/// Runs another tool; panics with its output unless it succeeds.
fn docker_free(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", argv[0]));
    assert!(
        out.status.success(),
        "{argv:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dockerfile_compose_builds_the_same_files_as_the_daemonless_output() {
    let Some(fx) = Fixtures::get() else { return };
    let work = tempfile::tempdir().unwrap();
    let components = [
        "--backend",
        "python",
        "--backend",
        "standin",
        "--repoagent",
        "checksum",
        "--cache",
        "local",
    ];
    let ours = compose_and_load(&fx, work.path(), &components);
    // compose_and_load wrote Dockerfile.compose from the same plan.
    let dockerfile = work.path().join("Dockerfile.compose");
    let built = Loaded(format!("triton-compose-e2e/{}:built", unique("parity")));
    docker_build(
        &dockerfile,
        work.path(),
        &[
            format!("FULL_IMAGE={}", fx.full_image),
            format!("MIN_IMAGE={}", fx.min_image),
        ],
        &built.0,
    );
    let prefixes = [
        "opt/tritonserver",
        "opt/nvidia",
        "etc/passwd",
        "etc/group",
        // Runtime dependencies, through the deps stage.
        "usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0",
        "usr/lib/x86_64-linux-gnu/libblas.so.3",
        "etc/alternatives/libblas.so.3-x86_64-linux-gnu",
        "usr/lib/python3.11",
        "usr/lib/python3/dist-packages/numpy",
        "usr/bin/python3",
        "var/lib/dpkg/status",
        "var/lib/dpkg/info/python3.list",
    ];
    assert_same_tree(&ours.0, &built.0, &prefixes);
}

/// The files under `prefixes` are the same in both images (as the engine
/// exports them), and there are more than 50 of them.
fn assert_same_tree(ours: &str, built: &str, prefixes: &[&str]) {
    let theirs = exported_tree(built, prefixes);
    let mine = exported_tree(ours, prefixes);
    assert!(
        mine.len() > 50,
        "the export holds the composed tree ({} entries)",
        mine.len()
    );
    let comparable = |info: &support::FileInfo| support::FileInfo {
        // Hard links are compared as the inode they name.
        kind: if info.kind == 'h' { 'f' } else { info.kind },
        link: if info.kind == 'l' {
            info.link.clone()
        } else {
            None
        },
        ..info.clone()
    };
    let mut differences = Vec::new();
    for path in mine
        .keys()
        .chain(theirs.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (a, b) = (
            mine.get(path).map(comparable),
            theirs.get(path).map(comparable),
        );
        if a != b {
            differences.push(format!(
                "{path}:\n  daemonless:   {a:?}\n  docker build: {b:?}"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

#[test]
fn composed_image_is_smaller_than_full_by_more_than_the_backends_left_out() {
    let Some(fx) = Fixtures::get() else { return };
    let work = tempfile::tempdir().unwrap();
    let image = compose_and_load(
        &fx,
        work.path(),
        &["--backend", "python", "--cache", "local"],
    );
    let full = image_size(&fx.full_image);
    let composed = image_size(&image.0);
    let min = image_size(&fx.min_image);
    let left_out: u64 = exported_tree(
        &fx.full_image,
        &["opt/tritonserver/backends", "opt/tritonserver/repoagents"],
    )
    .iter()
    .filter(|(p, _)| !p.starts_with("opt/tritonserver/backends/python"))
    .map(|(_, f)| f.size)
    .sum();
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "image sizes: full {:.1} MB, composed (python + local cache, runtime deps included) {:.1} MB, min {:.1} MB; \
         components left out {:.1} MB, so full minus them is {:.1} MB",
        mb(full), mb(composed), mb(min), mb(left_out), mb(full - left_out)
    );
    assert!(
        left_out > 20_000_000,
        "the fixture's onnxruntime stand-in is left out"
    );
    assert!(
        full >= composed + left_out,
        "full {full} B, composed {composed} B, left out {left_out} B"
    );
}

#[test]
fn registry_to_registry_mounts_min_and_the_result_runs_after_docker_pull() {
    let Some(fx) = Fixtures::get() else { return };
    let Some(registry) = support::registry::Registry::start() else {
        return;
    };
    registry.push_oci(&fx.dir.join("min-oci"), "latest", "triton/min:latest");
    registry.push_oci(&fx.dir.join("full-oci"), "latest", "triton/full:latest");
    let min_layers = support::oci_layer_digests(&fx.dir.join("min-oci"), "latest");
    let host = &registry.host;
    let work = tempfile::tempdir().unwrap();
    let authfile = registry.authfile();
    let (min, full) = (
        format!("{host}/triton/min:latest"),
        format!("{host}/triton/full:latest"),
    );
    let output = format!("{host}/triton/composed:python");
    let (ok, stderr) = {
        // An SBOM lists min's packages and would read min (once per store).
        Compose::new(&min, &full)
            .args(&[
                "--sbom",
                "none",
                "--backend",
                "python",
                "--cache",
                "local",
                "--output",
                &output,
                "--authfile",
                authfile.to_str().unwrap(),
                "--work-dir",
                work.path().to_str().unwrap(),
            ])
            .run()
    };
    assert!(ok, "{stderr}");
    let requests = registry.requests();
    for digest in &min_layers {
        assert!(
            !requests
                .iter()
                .any(|(m, p)| m == "GET" && p.ends_with(&format!("/blobs/{digest}"))),
            "min's layer {digest} was downloaded"
        );
        assert!(
            requests
                .iter()
                .any(|(m, p)| m == "POST" && p.contains(&format!("mount={digest}"))),
            "no mount of {digest}"
        );
    }

    // skopeo reads it back; docker pulls and runs it.
    let pulled = work.path().join("pulled");
    registry.pull_oci("triton/composed:python", &pulled, "python");
    let docker_user = DockerUser::new();
    let docker_as_user = |args: &[&str]| docker_user.run(args);
    docker_as_user(&[
        "login",
        "-u",
        support::registry::USER,
        "-p",
        support::registry::PASSWORD,
        host,
    ]);
    docker_as_user(&["pull", "-q", &output]);
    let image = Loaded(output.clone());
    let models = models_dir(false);
    let server = Server::start(&image.0, models.path());
    server.wait_ready(Duration::from_secs(120));
    assert_eq!(server.stop(), 0);
}

/// The tag an image had before a test took it over, put back when dropped
/// (or the tag removed if there was none).
struct TakenTag {
    tag: String,
    before: Option<String>,
}

impl TakenTag {
    fn take(tag: &str) -> TakenTag {
        let before = Command::new("docker")
            .args(["image", "inspect", "-f", "{{.Id}}", tag])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        TakenTag {
            tag: tag.to_string(),
            before,
        }
    }
}

impl Drop for TakenTag {
    fn drop(&mut self) {
        let _ = match &self.before {
            Some(id) => Command::new("docker").args(["tag", id, &self.tag]).output(),
            None => Command::new("docker").args(["rmi", &self.tag]).output(),
        };
    }
}

fn image_id(tag: &str) -> String {
    docker(&["image", "inspect", "-f", "{{.Id}}", tag])
}

#[test]
fn engine_images_compose_into_tritonserver_latest_by_default() {
    let Some(fx) = Fixtures::get() else { return };
    let work = tempfile::tempdir().unwrap();
    let _restore = TakenTag::take("tritonserver:latest");
    let min = format!("docker-daemon:{}", fx.min_image);
    let full = format!("docker-daemon:{}", fx.full_image);
    let (ok, stderr) = Compose::new(&min, &full)
        .args(&[
            "--backend",
            "python",
            "--work-dir",
            work.path().to_str().unwrap(),
        ])
        .run();
    assert!(ok, "compose failed:\n{stderr}");
    // One export for both images; min's layer is not sent back.
    assert!(
        stderr.contains(&format!(
            "exporting {}, {} from the local Docker engine",
            fx.min_image, fx.full_image
        )),
        "{stderr}"
    );
    let id = image_id("tritonserver:latest");
    let loaded = stderr.lines().last().unwrap();
    assert!(
        loaded.starts_with("loaded into the local Docker engine")
            && loaded.contains("tritonserver:latest")
            && loaded.contains(&format!("image ID {id}"))
            && loaded.contains("base layers it held were not sent"),
        "{stderr}"
    );
    // Triton's --help prints its usage and exits 1; the composed server
    // must do exactly what full's does.
    let help = |image: &str| {
        let out = Command::new("docker")
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                image,
                "tritonserver",
                "--help",
            ])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, usage) = help("tritonserver:latest");
    assert!(
        usage.contains("Usage: tritonserver") && usage.contains("--model-repository"),
        "{usage}"
    );
    assert_eq!((code, usage), help(&fx.full_image));
    // The engine's image reads back as a source too.
    let (code, stdout, stderr) =
        run_cli_output(&["verify", "-q", "docker-daemon:tritonserver:latest"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[test]
fn skip_pull_reads_compose_py_style_names_from_the_engine() {
    let Some(fx) = Fixtures::get() else { return };
    let work = tempfile::tempdir().unwrap();
    let name = format!("triton-compose-e2e/{}", unique("skip"));
    let min = fx.min_image.clone();
    let full = fx.full_image.clone();
    let (ok, stderr) = Compose::new(&min, &full)
        .args(&[
            "--backend",
            "python",
            "--cache",
            "local",
            "--skip-pull",
            "--output-name",
            &name,
            "--work-dir",
            work.path().to_str().unwrap(),
        ])
        .run();
    assert!(ok, "compose failed:\n{stderr}");
    let tag = format!("{name}:latest");
    let _loaded = Loaded(tag.clone());
    assert!(stderr.contains("from the local Docker engine"), "{stderr}");
    let listing = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &tag,
        "ls",
        "/opt/tritonserver/caches",
    ]);
    assert_eq!(listing.lines().last(), Some("local"), "{listing}");
    // Nothing but the work directory's own files is left in it.
    let left: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "scratch files left: {left:?}");

    // A name the engine lacks is named in the error.
    let (ok, stderr) = Compose::new("triton-compose-e2e/not-here:1", &full)
        .args(&[
            "--backend",
            "python",
            "--skip-pull",
            "--output-name",
            &name,
            "--work-dir",
            work.path().to_str().unwrap(),
        ])
        .run();
    assert!(!ok);
    assert!(
        stderr.contains("has no image triton-compose-e2e/not-here:1")
            && stderr.contains("hint: pull or load it first"),
        "{stderr}"
    );
}

/// The needs the dynamic loader itself cannot find, per root of `verify`'s
/// report, traced inside the image: a program with LD_TRACE_LOADED_OBJECTS,
/// a dlopened component the same way, preloaded into the server program
/// (so its DT_RPATH applies, as when libtritonserver dlopens it).
fn loader_not_found(image: &str, roots: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut script = String::new();
    for (path, kind) in roots {
        script.push_str(&format!("echo '== {path}'\n"));
        if kind == "dlopened" {
            script.push_str(&format!(
                "LD_TRACE_LOADED_OBJECTS=1 LD_PRELOAD='{path}' /opt/tritonserver/bin/tritonserver 2>&1\n"
            ));
        } else {
            script.push_str(&format!("LD_TRACE_LOADED_OBJECTS=1 '{path}' 2>&1\n"));
        }
    }
    let output = Command::new("docker")
        .args(sh_args(image, &script))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        if let Some(root) = line.strip_prefix("== ") {
            current = Some(root.to_string());
            found.entry(root.to_string()).or_default();
        } else if let (Some(root), Some((name, _))) = (&current, line.split_once("=> not found")) {
            let name = name.trim().to_string();
            if !triton_compose::is_driver_library(&name) {
                found.get_mut(root).unwrap().insert(name);
            }
        }
    }
    assert_eq!(
        found.len(),
        roots.len(),
        "the trace did not run for every root:\n{text}"
    );
    found
}

/// For every root `verify` names, the loader's own trace inside the
/// container agrees with it: what verify calls missing, the loader cannot
/// find, and what the loader cannot find, verify calls missing.
fn assert_verify_agrees_with_the_loader(reference: &str, image: &str) -> usize {
    let (_, stdout, stderr) = run_cli_output(&["verify", "-q", "--json", reference]);
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("verify printed no JSON ({e}):\n{stdout}\n{stderr}"));
    let roots: Vec<(String, String)> = report["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        roots
            .iter()
            .any(|(p, _)| p == "/opt/tritonserver/bin/tritonserver"),
        "{report}"
    );
    assert!(roots.iter().any(|(_, k)| k == "dlopened"), "{report}");
    let mut missing: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in report["missing_libraries"].as_array().unwrap() {
        missing
            .entry(m["root"].as_str().unwrap().to_string())
            .or_default()
            .insert(m["needs"].as_str().unwrap().to_string());
    }
    let traced = loader_not_found(image, &roots);
    let server = missing
        .get("/opt/tritonserver/bin/tritonserver")
        .cloned()
        .unwrap_or_default();
    for (root, kind) in &roots {
        let mut expected = missing.get(root).cloned().unwrap_or_default();
        if kind == "dlopened" {
            // Preloaded into the server program: its own findings come along.
            expected.extend(server.iter().cloned());
        }
        assert_eq!(
            traced[root], expected,
            "{root}: the loader's trace (left) and verify (right) disagree\n{report}"
        );
    }
    roots.len()
}

#[test]
fn verify_agrees_with_the_loader_on_every_root_of_the_fixture_images() {
    let Some(fx) = Fixtures::get() else { return };
    let (code, stdout, stderr) = run_cli_output(&["verify", "-q", &fx.archive("full")]);
    assert_eq!(
        code, 0,
        "verify fails on the full fixture:\n{stdout}{stderr}"
    );
    let roots = assert_verify_agrees_with_the_loader(&fx.archive("full"), &fx.full_image);
    eprintln!("full fixture: {roots} roots agree with the loader");
    let work = tempfile::tempdir().unwrap();
    for args in [
        &["--backend", "python", "--cache", "local"][..],
        &["--backend", "python", "--cache", "local", "--no-deps"][..],
        &["--backend", "standin", "--repoagent", "checksum"][..],
    ] {
        let (archive, name) = compose_to_archive(&fx, work.path(), args);
        let reference = format!("docker-archive:{}", archive.display());
        let image = load(&archive, &name);
        let roots = assert_verify_agrees_with_the_loader(&reference, &image.0);
        eprintln!("{args:?}: {roots} roots agree with the loader");
    }
}

/// Builds `dockerfile` (in `context`) with the given build args; panics
/// with docker's output unless it succeeds.
fn docker_build(dockerfile: &Path, context: &Path, args: &[String], tag: &str) {
    let mut command = Command::new("docker");
    command
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "--network", "none", "-f"])
        .arg(dockerfile);
    for arg in args {
        command.args(["--build-arg", arg]);
    }
    let out = command.args(["-t", tag]).arg(context).output().unwrap();
    assert!(
        out.status.success(),
        "docker build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hostile_config_values_stay_literal_through_docker_build() {
    let Some(fx) = Fixtures::get() else { return };
    let work = tempfile::tempdir().unwrap();
    // A full image whose labels hold quotes, a backslash and a command
    // substitution: set from build args, which are not parsed again.
    let hostile = Loaded(format!("triton-compose-e2e/{}:hostile", unique("full")));
    let build_ref = "abc\" $(touch /pwned) \\";
    let build_id = "12 ${PATH} '34'";
    let hostile_dir = work.path().join("hostile");
    std::fs::create_dir(&hostile_dir).unwrap();
    std::fs::write(
        hostile_dir.join("Dockerfile"),
        format!(
            "FROM {}\nARG REF\nARG ID\nLABEL com.nvidia.build.ref=\"${{REF}}\" com.nvidia.build.id=\"${{ID}}\"\n",
            fx.full_image
        ),
    )
    .unwrap();
    docker_build(
        &hostile_dir.join("Dockerfile"),
        &hostile_dir,
        &[format!("REF={build_ref}"), format!("ID={build_id}")],
        &hostile.0,
    );
    let set = docker(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Labels}}",
        &hostile.0,
    ]);
    let set: serde_json::Value = serde_json::from_str(set.trim()).unwrap();
    assert_eq!(set["com.nvidia.build.ref"], build_ref, "{set}");

    let compose_work = work.path().join("compose");
    let (ok, stderr) = Compose::new(&fx.min_image, &hostile.0)
        .args(&[
            "-q",
            "--skip-pull",
            "--backend",
            "python",
            "--dry-run",
            "--work-dir",
            compose_work.to_str().unwrap(),
        ])
        .run();
    assert!(ok, "{stderr}");
    let built = Loaded(format!("triton-compose-e2e/{}:built", unique("hostile")));
    docker_build(
        &compose_work.join("Dockerfile.compose"),
        &compose_work,
        &[format!("MIN_IMAGE={}", fx.min_image)],
        &built.0,
    );
    let labels = docker(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Labels}}",
        &built.0,
    ]);
    let labels: serde_json::Value = serde_json::from_str(labels.trim()).unwrap();
    assert_eq!(labels["com.nvidia.build.ref"], build_ref, "{labels}");
    assert_eq!(labels["com.nvidia.build.id"], build_id, "{labels}");
    let env = docker(&["image", "inspect", "-f", "{{json .Config.Env}}", &built.0]);
    assert!(
        env.contains(&format!(
            "NVIDIA_BUILD_ID={}",
            build_id.replace('\'', "\\u0027")
        )) || env.contains(&format!("NVIDIA_BUILD_ID={build_id}")),
        "{env}"
    );
}

/// add_sub's config with `backend: "NAME"` and no code of its own: Triton
/// runs the backend's model.py for it.
fn models_naming_backend(backend: &str) -> tempfile::TempDir {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/models/add_sub");
    let models = tempfile::tempdir().unwrap();
    let model = models.path().join("add_sub");
    std::fs::create_dir_all(model.join("1")).unwrap();
    let config = std::fs::read_to_string(data.join("config.pbtxt"))
        .unwrap()
        .replace("backend: \"python\"", &format!("backend: \"{backend}\""));
    assert!(config.contains(&format!("backend: \"{backend}\"")));
    std::fs::write(model.join("config.pbtxt"), config).unwrap();
    Command::new("chmod")
        .args(["-R", "a+rX", models.path().to_str().unwrap()])
        .status()
        .unwrap();
    models
}

#[test]
fn a_python_based_backend_from_full_answers_with_the_packages_it_imports() {
    // pyllm (backends/pyllm/model.py) imports tcxouter (which requires
    // tcx-inner) and tcx_native (a C extension needing libgomp.so.1): all
    // only in full. Only --backend pyllm is asked for.
    let Some(fx) = Fixtures::get() else { return };
    let work = tempfile::tempdir().unwrap();
    let (archive, name) = compose_to_archive(&fx, work.path(), &["--backend", "pyllm"]);
    let (code, report) = verify(&archive);
    assert_eq!(code, 0, "{report}");
    for module in ["tcxouter", "tcx_native", "numpy", "json"] {
        assert!(
            report.contains(&format!("python: {module} (for the pyllm backend) at /")),
            "{module}:\n{report}"
        );
    }
    assert!(
        report.contains("python (warning): tcx_not_installed is not in the image"),
        "{report}"
    );
    let image = load(&archive, &name);
    let site = "/usr/local/lib/python3.11/dist-packages";
    let listing = sh_in(
        &image.0,
        &format!(
            "ls {site} /opt/tritonserver/backends; ls /usr/lib/x86_64-linux-gnu | grep libgomp"
        ),
    );
    for present in [
        "tcxouter",
        "tcx_inner",
        "tcx_native.cpython-311",
        "python",
        "pyllm",
        "libgomp.so.1",
    ] {
        assert!(
            listing.contains(present),
            "{present} is missing:\n{listing}"
        );
    }
    for absent in ["tcx_extra", "tcx_unused", "standin", "onnxruntime"] {
        assert!(
            !listing.contains(absent),
            "{absent} was carried:\n{listing}"
        );
    }
    let models = models_naming_backend("pyllm");
    serve_add_sub(&image.0, models.path());
}

#[test]
fn a_python_based_backend_from_a_directory_answers_inference() {
    let Some(fx) = Fixtures::get() else { return };
    let work = tempfile::tempdir().unwrap();
    // The backend: add_sub's model.py as backends/addsub/model.py, which
    // Triton runs through the python backend for `backend: "addsub"`.
    let backend = work.path().join("addsub");
    std::fs::create_dir(&backend).unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/models/add_sub");
    std::fs::copy(data.join("1/model.py"), backend.join("model.py")).unwrap();
    let spec = format!("addsub={}", backend.display());
    let image = compose_and_load(
        &fx,
        work.path(),
        &["--backend", "python", "--backend", &spec],
    );
    let models = models_naming_backend("addsub");
    let listing = sh_in(&image.0, "ls -ln /opt/tritonserver/backends/addsub");
    assert!(
        listing.contains("model.py") && listing.contains(" 0 0 "),
        "{listing}"
    );
    serve_add_sub(&image.0, models.path());
}

/// compose for the fixture's OCI layouts, with `extra` after.
fn oci_fixture_compose(fx: &Fixtures, work: &Path, extra: &[&str]) -> Compose {
    Compose::new(
        &format!("oci:{}:latest", fx.dir.join("min-oci").display()),
        &format!("oci:{}:latest", fx.dir.join("full-oci").display()),
    )
    .work_dir(work)
    .args(extra)
}

fn run_cli_strings(args: &[String]) -> (i32, String, String) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_cli_output(&args)
}

#[test]
fn three_variants_of_the_fixture_share_one_core_layer() {
    let Some(fx) = Fixtures::get() else { return };
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let variants = work.path().join("variants.toml");
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
name = "standin"
backends = ["standin"]
repoagents = ["checksum"]
output = "oci:{out}:standin"

[[variant]]
name = "pyllm"
backends = ["pyllm"]
output = "oci:{out}:pyllm"
"#,
            out = out.display()
        ),
    )
    .unwrap();
    let store = work.path().join("store");
    let (code, stdout, stderr) = oci_fixture_compose(
        &fx,
        work.path(),
        &[
            "--json",
            "--store",
            store.to_str().unwrap(),
            "--variants",
            variants.to_str().unwrap(),
        ],
    )
    .output_of();
    assert_eq!(code, 0, "{stderr}");
    let results: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 3, "{stdout}");
    let mut cores = BTreeSet::new();
    let mut built = 0;
    for r in results {
        let core = r["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["purpose"] == "Triton core")
            .unwrap_or_else(|| panic!("no core layer: {r}"));
        cores.insert(core["digest"].as_str().unwrap().to_string());
        built += usize::from(!core["from_store"].as_bool().unwrap());
    }
    assert_eq!(cores.len(), 1, "{stdout}");
    assert_eq!(built, 1, "the core layer is built once: {stdout}");
    // Each image holds its own selection, and the core layer's blob is
    // the same in all three manifests.
    for (tag, has, lacks) in [
        (
            "python",
            vec!["backends/python/", "caches/local/"],
            vec!["backends/standin/", "backends/pyllm/"],
        ),
        (
            "standin",
            vec!["backends/standin/", "repoagents/checksum/"],
            vec!["backends/python/"],
        ),
        (
            "pyllm",
            vec!["backends/pyllm/", "backends/python/"],
            vec!["backends/standin/", "caches/local/"],
        ),
    ] {
        let image = support::read_oci(&out, tag);
        let core = cores.iter().next().unwrap();
        assert!(image.layer_digests.contains(core), "{tag}");
        for prefix in has {
            let path = format!("opt/tritonserver/{prefix}");
            assert!(
                image.tree.keys().any(|p| p.starts_with(&path)),
                "{tag} lacks {path}"
            );
        }
        for prefix in lacks {
            let path = format!("opt/tritonserver/{prefix}");
            assert!(
                !image.tree.keys().any(|p| p.starts_with(&path)),
                "{tag} has {path}"
            );
        }
    }
}

#[test]
fn a_layer_cap_on_the_fixture_gives_the_same_tree_in_more_layers() {
    let Some(fx) = Fixtures::get() else { return };
    let work = tempfile::tempdir().unwrap();
    let compose = |name: &str, extra: &[&str]| {
        let output = format!("oci:{}:x", work.path().join(name).display());
        let mut all = vec![
            "-q",
            "--no-store",
            "--backend",
            "python",
            "--output",
            &output,
        ];
        all.extend_from_slice(extra);
        let (code, _, stderr) =
            oci_fixture_compose(&fx, &work.path().join(format!("w-{name}")), &all).output_of();
        assert_eq!(code, 0, "{stderr}");
        support::read_oci(&work.path().join(name), "x")
    };
    let whole = compose("whole", &[]);
    let min_layers = support::read_oci(&fx.dir.join("min-oci"), "latest")
        .layer_digests
        .len();
    let new_layers = |image: &support::ReadImage| -> Vec<(String, u64)> {
        image.manifest["layers"].as_array().unwrap()[min_layers..]
            .iter()
            .map(|l| {
                (
                    l["digest"].as_str().unwrap().to_string(),
                    l["size"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    // A cap that half the largest new layer passes, compressed.
    let whole_layers = new_layers(&whole);
    let largest = whole_layers.iter().map(|l| l.1).max().unwrap();
    let cap = largest / 2;
    let split = compose("split", &["--max-layer-size", &cap.to_string()]);
    let split_layers = new_layers(&split);
    let over: Vec<&(String, u64)> = whole_layers.iter().filter(|l| l.1 > cap).collect();
    assert!(
        split_layers.len() >= whole_layers.len() + over.len(),
        "{split_layers:?} capped at {cap}, {whole_layers:?} not"
    );
    for (digest, size) in &split_layers {
        assert!(*size <= cap, "a {size}-byte layer passes the cap of {cap}");
        assert!(!over.iter().any(|l| &l.0 == digest));
    }
    // What compresses under the cap is not split.
    for layer in whole_layers.iter().filter(|l| l.1 <= cap) {
        assert!(split_layers.contains(layer), "{layer:?} was split");
    }
    assert_eq!(split.tree, whole.tree);
}

#[test]
fn catalog_of_the_fixture_matches_what_a_compose_of_each_part_writes() {
    let Some(fx) = Fixtures::get() else { return };
    let work = tempfile::tempdir().unwrap();
    let catalog = vec![
        "catalog".to_string(),
        format!("oci:{}:latest", fx.dir.join("full-oci").display()),
        "--min".into(),
        format!("oci:{}:latest", fx.dir.join("min-oci").display()),
        "--no-store".into(),
        "--json".into(),
        "--work-dir".into(),
        work.path().display().to_string(),
    ];
    let (code, stdout, stderr) = run_cli_strings(&catalog);
    assert_eq!(code, 0, "{stderr}");
    let catalog: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(catalog["triton_version"], "2.51.0");
    assert_eq!(catalog["gpu"], false);
    assert_eq!(catalog["platforms"], serde_json::json!(["linux/amd64"]));
    let parts: BTreeSet<(String, String)> = catalog["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap().into(),
                c["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("core", "core"),
        ("backend", "python"),
        ("backend", "pyllm"),
        ("backend", "standin"),
        ("backend", "onnxruntime"),
        ("repoagent", "checksum"),
        ("cache", "local"),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect();
    assert_eq!(parts, expected);
    for entry in catalog["components"].as_array().unwrap() {
        let (kind, name) = (
            entry["kind"].as_str().unwrap(),
            entry["name"].as_str().unwrap(),
        );
        if kind == "core" {
            continue;
        }
        let output = format!("oci:{}:x", work.path().join(name).display());
        let flag = format!("--{kind}");
        let (code, stdout, stderr) = oci_fixture_compose(
            &fx,
            &work.path().join(format!("w-{name}")),
            &[
                "-q",
                "--no-store",
                "--json",
                &flag,
                name,
                "--output",
                &output,
            ],
        )
        .output_of();
        assert_eq!(code, 0, "{stderr}");
        let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let size_of = |purpose: &str| -> u64 {
            summary["layers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["purpose"] == purpose)
                .unwrap_or_else(|| panic!("no layer {purpose}: {summary}"))["size"]
                .as_u64()
                .unwrap()
        };
        let within = |catalogued: u64, written: u64, what: &str| {
            assert!(
                catalogued.abs_diff(written) * 100 <= written.max(1),
                "{name} {what}: catalog says {catalogued}, the compose wrote {written}"
            );
        };
        let noun = match kind {
            "repoagent" => "repository agent",
            other => other,
        };
        within(
            entry["compressed_size"].as_u64().unwrap(),
            size_of(&format!("{noun} {name}")),
            "layer",
        );
        let core = catalog["components"][0]["compressed_size"]
            .as_u64()
            .unwrap();
        within(core, size_of("Triton core"), "core");
        let deps = entry["deps_size"].as_u64().unwrap();
        if deps > 0 {
            within(deps, size_of("runtime dependencies"), "dependencies");
        }
    }
}

#[test]
fn the_sbom_lists_what_dpkg_and_python_see_in_the_composed_image() {
    let Some(fx) = Fixtures::get() else { return };
    let Some(tools) = support::pytools() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (archive, name) = compose_to_archive(
        &fx,
        work.path(),
        &["--json", "--backend", "pyllm", "--cache", "local"],
    );
    let sbom = std::fs::read(work.path().join("sbom.spdx.json")).unwrap();
    support::assert_valid_spdx(&tools, &sbom);
    let doc: serde_json::Value = serde_json::from_slice(&sbom).unwrap();
    let listed = |prefix: &str| -> BTreeSet<(String, String)> {
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["SPDXID"].as_str().unwrap().starts_with(prefix))
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["versionInfo"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let (_, written) = support::read_docker_archive(&archive);
    let image = load(&archive, &name);
    let lines = |script: &str| -> BTreeSet<(String, String)> {
        sh_in(&image.0, script)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    };
    let dpkg = lines("dpkg-query -W -f '${Package} ${Version}\\n'");
    assert!(dpkg.len() > 50, "{dpkg:?}");
    assert_eq!(listed("SPDXRef-deb-"), dpkg);
    // What pip list reads: every distribution on python's path.
    let pip = lines(
        "python3 -c 'import importlib.metadata as m\nfor d in m.distributions(): print(d.metadata[\"Name\"], d.version)'",
    );
    assert!(pip.iter().any(|(n, _)| n == "tcx.outer"), "{pip:?}");
    assert_eq!(listed("SPDXRef-pypi-"), pip);
    // The Triton parts are the layers written: core, pyllm, python, local.
    let parts: BTreeSet<String> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-triton-"))
        .map(|p| {
            assert_eq!(p["versionInfo"], "2.51.0");
            let layer = p["comment"].as_str().unwrap();
            let digest = layer
                .trim_start_matches("in layer ")
                .split(' ')
                .next()
                .unwrap();
            assert!(written.layer_digests.iter().any(|d| d == digest), "{layer}");
            p["name"].as_str().unwrap().to_string()
        })
        .collect();
    let expected: BTreeSet<String> = [
        "tritonserver core",
        "tritonserver backend pyllm",
        "tritonserver backend python",
        "tritonserver cache local",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(parts, expected);
    // Which packages came from full: what the closure added (python3, ...).
    let from_full: BTreeSet<&str> = doc["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["relationshipType"] == "GENERATED_FROM"
                && r["relatedSpdxElement"] == "SPDXRef-Source-full"
        })
        .map(|r| r["spdxElementId"].as_str().unwrap())
        .collect();
    assert!(
        from_full.iter().any(|id| id.ends_with("-python3")),
        "{from_full:?}"
    );
    assert!(
        !from_full.iter().any(|id| id.ends_with("-bash")),
        "{from_full:?}"
    );
}

#[test]
fn sbom_computes_one_for_an_image_we_did_not_compose() {
    let Some(fx) = Fixtures::get() else { return };
    let Some(tools) = support::pytools() else {
        return;
    };
    let (code, stdout, stderr) = run_cli_output(&["sbom", "-q", &fx.archive("full")]);
    assert_eq!(code, 0, "{stderr}");
    support::assert_valid_spdx(&tools, stdout.as_bytes());
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let names: BTreeSet<&str> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for expected in [
        "python3",
        "libgomp1",
        "tcx.outer",
        "tcx-unused",
        "tritonserver core",
        "tritonserver backend pyllm",
        "tritonserver repository agent checksum",
    ] {
        assert!(names.contains(expected), "{expected} is not in {names:?}");
    }
}

/// The paths `dpkg --verify` reports missing in an image.
fn dpkg_missing(image: &str) -> BTreeSet<String> {
    sh_in(image, "dpkg --verify 2>&1; true")
        .lines()
        .filter(|l| l.starts_with("missing"))
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect()
}

#[test]
fn composed_images_miss_no_file_of_their_packages_that_full_has() {
    let Some(fx) = Fixtures::get() else { return };
    let full_missing = dpkg_missing(&fx.full_image);
    println!("full's dpkg --verify: {} missing", full_missing.len());
    // Each selection with packages the closure carries for it.
    for (selection, packages) in [
        (
            &["--backend", "python", "--cache", "local"][..],
            "libpython3.11 python3",
        ),
        (
            &[
                "--backend",
                "python",
                "--backend",
                "onnxruntime",
                "--repoagent",
                "checksum",
            ],
            "libpython3.11 python3 libgomp1",
        ),
        (&["--backend", "pyllm"], "python3 libgomp1"),
        (&["--backend", "standin"], "libgomp1"),
    ] {
        let work = tempfile::tempdir().unwrap();
        let image = compose_and_load(&fx, work.path(), selection);
        // Packages were carried: the test has something to judge.
        let query = format!("dpkg-query -W -f '${{Package}}\\n' {packages}");
        let carried = sh_in(&image.0, &query);
        assert_eq!(
            carried.lines().count(),
            packages.split(' ').count(),
            "{carried}"
        );
        let missing = dpkg_missing(&image.0);
        let extra: Vec<&String> = missing.difference(&full_missing).collect();
        assert!(
            extra.is_empty(),
            "{selection:?}: dpkg --verify finds missing what full has: {extra:#?}"
        );
    }
}

/// Compiles `source` (with libc) into `dir/name` as a shared library.
fn cc_lib(dir: &Path, name: &str, source: &str, extra: &[&str]) -> Vec<u8> {
    support::images::cc_library(dir, (name, name), source, extra, true)
}

fn md5(data: &[u8]) -> String {
    let out = Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(data)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)[..32].to_string()
}

/// A GPU-shaped layer for the fixture min: a cuDNN-like dispatcher that
/// dlopens its parts at load time (no DT_NEEDED on them), an NCCL-like
/// library and a documentation package nothing needs (dpkg packages with
/// true md5sums), and an unowned library nothing loads. Returns the layer
/// and a local backend directory whose library needs the dispatcher.
fn gpu_shaped(fx: &Fixtures, at: &Path) -> (Vec<u8>, PathBuf) {
    use support::images::*;
    const CUDA: &str = "usr/local/cuda/lib64";
    let d = at.join("cc");
    std::fs::create_dir_all(&d).unwrap();
    let dispatcher = cc_lib(
        &d,
        "libcudnn.so.9",
        "#include <dlfcn.h>\n#include <unistd.h>\n\
         __attribute__((constructor)) static void parts(void) {\n\
           const char *p[] = {\"libcudnn_ops.so.9\", \"libcudnn_cnn.so.9\"};\n\
           for (int i = 0; i < 2; i++) if (!dlopen(p[i], RTLD_NOW)) _exit(42);\n}\n\
         int cudnn(void) { return 9; }\n",
        &["-Wl,-rpath,$ORIGIN"],
    );
    let ops = cc_lib(&d, "libcudnn_ops.so.9", "int ops(void){return 1;}", &[]);
    let cnn = cc_lib(&d, "libcudnn_cnn.so.9", "int cnn(void){return 2;}", &[]);
    let nccl = cc_lib(&d, "libnccl.so.2", "int nccl(void){return 2;}", &[]);
    let fft = cc_lib(&d, "libcufft.so.11", "int fft(void){return 11;}", &[]);
    let backend = at.join("cudnnuser");
    std::fs::create_dir_all(&backend).unwrap();
    std::fs::copy(d.join("libcudnn.so.9"), d.join("libcudnn.so.9.1.0")).unwrap();
    let user = cc_lib(
        &d,
        "libtriton_cudnnuser.so",
        "int cudnn(void); int go(void) { return cudnn(); }",
        &["-l:libcudnn.so.9", "-Wl,-rpath,/usr/local/cuda/lib64"],
    );
    std::fs::write(backend.join("libtriton_cudnnuser.so"), user).unwrap();
    let status = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        &fx.min_image,
        "/var/lib/dpkg/status",
    ]);
    let stanza = |name: &str| {
        format!(
            "Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: libs\n\
             Installed-Size: 1\nMaintainer: tests <t@example.org>\nArchitecture: amd64\nVersion: 1.0\n\
             Description: {name}, a stand-in\n"
        )
    };
    let status = format!(
        "{}\n\n{}\n{}\n{}",
        status.trim_end(),
        stanza("libcudnn9"),
        stanza("libnccl2"),
        stanza("unused-doc")
    );
    let readme = b"nobody reads this\n";
    let libs: [(&str, &[u8]); 3] = [
        ("libcudnn.so.9.1.0", &dispatcher),
        ("libcudnn_ops.so.9", &ops),
        ("libcudnn_cnn.so.9", &cnn),
    ];
    let sums = |files: &[(&str, &[u8])]| -> String {
        files
            .iter()
            .map(|(p, data)| format!("{}  {p}\n", md5(data)))
            .collect()
    };
    let cudnn_files: Vec<(String, &[u8])> = libs
        .iter()
        .map(|(n, data)| (format!("{CUDA}/{n}"), *data))
        .collect();
    let cudnn_refs: Vec<(&str, &[u8])> =
        cudnn_files.iter().map(|(p, d)| (p.as_str(), *d)).collect();
    let nccl_path = format!("{CUDA}/libnccl.so.2");
    let lib = |name: &str, data: &[u8]| Item::File {
        path: format!("{CUDA}/{name}"),
        data: data.to_vec(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        xattrs: vec![],
    };
    let list = |paths: &[&str]| -> String { paths.iter().map(|p| format!("/{p}\n")).collect() };
    // Real NVIDIA libraries, copied in unowned as from pip wheels.
    let nvidia: Vec<Item> = nvidia_libs()
        .iter()
        .flat_map(|dir| ["libcudart.so.12", "libcurand.so.10"].map(|n| (dir.join(n), n)))
        .map(|(path, name)| lib(name, &std::fs::read(path).unwrap()))
        .collect();
    let mut items = vec![
        dir("usr"),
        dir("usr/local"),
        dir("usr/local/cuda"),
        dir(CUDA),
        lib("libcudnn.so.9.1.0", &dispatcher),
        symlink(&format!("{CUDA}/libcudnn.so.9"), "libcudnn.so.9.1.0"),
        lib("libcudnn_ops.so.9", &ops),
        lib("libcudnn_cnn.so.9", &cnn),
        lib("libnccl.so.2", &nccl),
        lib("libcufft.so.11", &fft),
        dir("usr/share"),
        dir("usr/share/doc"),
        dir("usr/share/doc/unused-doc"),
        file(
            "usr/share/doc/unused-doc/README",
            std::str::from_utf8(readme).unwrap(),
        ),
        dir("var"),
        dir("var/lib"),
        dir("var/lib/dpkg"),
        file("var/lib/dpkg/status", &status),
        dir("var/lib/dpkg/info"),
        file(
            "var/lib/dpkg/info/libcudnn9.list",
            &list(&[
                &format!("{CUDA}/libcudnn.so.9.1.0"),
                &format!("{CUDA}/libcudnn.so.9"),
                &format!("{CUDA}/libcudnn_ops.so.9"),
                &format!("{CUDA}/libcudnn_cnn.so.9"),
            ]),
        ),
        file("var/lib/dpkg/info/libcudnn9.md5sums", &sums(&cudnn_refs)),
        file("var/lib/dpkg/info/libnccl2.list", &list(&[&nccl_path])),
        file(
            "var/lib/dpkg/info/libnccl2.md5sums",
            &sums(&[(&nccl_path, &nccl)]),
        ),
        file(
            "var/lib/dpkg/info/unused-doc.list",
            &list(&[
                "usr/share/doc/unused-doc",
                "usr/share/doc/unused-doc/README",
            ]),
        ),
        file(
            "var/lib/dpkg/info/unused-doc.md5sums",
            &sums(&[("usr/share/doc/unused-doc/README", readme)]),
        ),
    ];
    items.extend(nvidia);
    (layer_tar(&items), backend)
}

/// The fixture min with [`gpu_shaped`]'s layer and CUDA's variables, as
/// an OCI layout in `at/min`; and the local backend's directory.
fn gpu_shaped_min(fx: &Fixtures, at: &Path) -> (PathBuf, PathBuf) {
    let (layer, backend) = gpu_shaped(fx, at);
    let min = at.join("min");
    support::images::derive_oci(
        &fx.dir.join("min-oci"),
        "latest",
        &min,
        Some(&layer),
        &[
            "CUDA_VERSION=12.9.0",
            "LD_LIBRARY_PATH=/usr/local/cuda/lib64",
        ],
    );
    (min, backend)
}

/// Where scripts/test.sh unpacked CUDA's runtime and cuRAND from PyPI
/// (TRITON_COMPOSE_NVIDIA); required under CI.
fn nvidia_libs() -> Option<PathBuf> {
    let dir = std::env::var_os("TRITON_COMPOSE_NVIDIA").map(PathBuf::from);
    assert!(
        dir.is_some() || std::env::var_os("CI").is_none(),
        "TRITON_COMPOSE_NVIDIA is not set: run the tests with scripts/test.sh"
    );
    if dir.is_none() {
        eprintln!("note: no real NVIDIA libraries (TRITON_COMPOSE_NVIDIA); stand-ins only");
    }
    dir
}

#[test]
fn slim_images_answer_inference_load_what_they_keep_and_keep_dpkg_whole() {
    let Some(fx) = Fixtures::get() else { return };
    let work = tempfile::tempdir().unwrap();
    let (min, backend) = gpu_shaped_min(&fx, work.path());
    let min_ref = format!("oci:{}:latest", min.display());
    let full_ref = format!("oci:{}:latest", fx.dir.join("full-oci").display());
    let cudnnuser = format!("cudnnuser={}", backend.display());
    let select = [
        "--backend",
        "python",
        "--cache",
        "local",
        "--backend",
        &cudnnuser,
    ];
    let compose = |name: &str, extra: &[&str]| -> (PathBuf, String, String) {
        let archive = work.path().join(format!("{name}.tar"));
        let tag = format!("triton-compose-e2e/{}:test", unique(name));
        let output = format!("docker-archive:{}:{tag}", archive.display());
        let (code, stdout, stderr) = Compose::new(&min_ref, &full_ref)
            .select(&select)
            .output(&output)
            .work_dir(work.path())
            .args(&["--json", "--no-store"])
            .args(extra)
            .output_of();
        assert_eq!(code, 0, "{stderr}");
        (archive, tag, stdout)
    };
    let (plain, _, plain_summary) = compose("plain", &[]);
    std::fs::remove_file(plain).unwrap();
    let (slim, tag, summary) = compose("slim", &["--slim"]);
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let plain_summary: serde_json::Value = serde_json::from_str(&plain_summary).unwrap();
    let size = |s: &serde_json::Value, key: &str| s[key].as_u64().unwrap();
    // The figures of the README's table.
    println!(
        "slim: {} removed ({} B uncompressed); image {} B without --slim, {} B with \
         (min's layers {} B, {} B)",
        summary["slim"]["removed"].as_array().unwrap().len(),
        summary["slim"]["removed_bytes"],
        size(&plain_summary, "image_size"),
        size(&summary, "image_size"),
        size(&plain_summary, "min_size"),
        size(&summary, "min_size"),
    );
    assert!(size(&summary, "image_size") < size(&plain_summary, "image_size"));
    let removed: Vec<&str> = summary["slim"]["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        removed.iter().any(|r| r.starts_with("libnccl2 ")),
        "{removed:?}"
    );
    assert!(
        removed.iter().any(|r| r.starts_with("unused-doc ")),
        "{removed:?}"
    );
    if nvidia_libs().is_some() {
        // CPU Triton with python loads neither CUDA's runtime nor cuRAND.
        for lib in ["libcudart.so.12", "libcurand.so.10"] {
            let path = format!("/usr/local/cuda/lib64/{lib}");
            assert!(
                removed.contains(&path.as_str()),
                "{path} stayed: {removed:?}"
            );
        }
    }
    // verify passes, and the loader agrees with it on every root.
    let (code, report) = verify(&slim);
    assert_eq!(code, 0, "{report}");
    let image = load(&slim, &tag);
    assert_verify_agrees_with_the_loader(&format!("docker-archive:{}", slim.display()), &image.0);
    // The dispatcher dlopens its parts when the backend's library loads.
    let loaded = sh_in(
        &image.0,
        "python3 -c 'import ctypes; ctypes.CDLL(\"/opt/tritonserver/backends/cudnnuser/libtriton_cudnnuser.so\"); print(\"loaded\")'; \
         ls /usr/local/cuda/lib64",
    );
    assert!(loaded.starts_with("loaded"), "{loaded}");
    assert!(
        !loaded.contains("libnccl.so.2") && !loaded.contains("libcufft"),
        "{loaded}"
    );
    // dpkg finds every file of every package it lists, and nothing amiss.
    let dpkg = sh_in(
        &image.0,
        "dpkg --verify 2>&1; echo \"verify=$?\"; dpkg --audit 2>&1; echo \"audit=$?\"; dpkg -l libnccl2 2>&1 | tail -1",
    );
    assert!(
        dpkg.contains("verify=0\n") && dpkg.contains("audit=0\n"),
        "{dpkg}"
    );
    // What dpkg misses in the slimmed image, it missed in min already
    // (debootstrap leaves apt's lists/partial out).
    let before = sh_in(&fx.min_image, "dpkg --verify 2>&1 || true");
    for line in dpkg.lines().filter(|l| l.starts_with("missing")) {
        assert!(before.lines().any(|b| b == line), "{line}\n{dpkg}");
    }
    assert!(
        dpkg.contains("no packages found matching libnccl2"),
        "{dpkg}"
    );
    serve_add_sub(&image.0, models_dir(true).path());
    // docker build of Dockerfile.compose (the slim compose wrote it last)
    // gives the same files.
    let min_tag = Loaded(format!("triton-compose-e2e/{}:min", unique("slim")));
    docker_free(&[
        "skopeo",
        "copy",
        "-q",
        &min_ref,
        &format!("docker-daemon:{}", min_tag.0),
    ]);
    let built = Loaded(format!("triton-compose-e2e/{}:built", unique("slim")));
    docker_build(
        &work.path().join("Dockerfile.compose"),
        work.path(),
        &[
            format!("FULL_IMAGE={}", fx.full_image),
            format!("MIN_IMAGE={}", min_tag.0),
        ],
        &built.0,
    );
    assert_same_tree(
        &image.0,
        &built.0,
        &[
            "usr/local/cuda",
            "usr/share/doc/unused-doc",
            "var/lib/dpkg",
            "opt/tritonserver/backends/cudnnuser",
            "opt/tritonserver/bin",
            "usr/bin",
            "usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0",
        ],
    );
}

#[test]
fn slim_gpu_enabled_composes_are_checked_and_reproducible() {
    let Some(fx) = Fixtures::get() else { return };
    let work = tempfile::tempdir().unwrap();
    let (min, _) = gpu_shaped_min(&fx, work.path());
    let full = work.path().join("full");
    // The same Triton, said to be built with GPU support.
    support::images::derive_oci(
        &fx.dir.join("full-oci"),
        "latest",
        &full,
        None,
        &["TRITON_SERVER_GPU_ENABLED=1"],
    );
    let compose = |name: &str| -> (String, PathBuf) {
        let out = work.path().join(name);
        let args = [
            "--enable-gpu".to_string(),
            "--image".into(),
            format!("min,oci:{}:latest", min.display()),
            "--image".into(),
            format!("full,oci:{}:latest", full.display()),
            "--backend".into(),
            "python".into(),
            "--slim".into(),
            "--no-store".into(),
            "--json".into(),
            "--work-dir".into(),
            work.path().display().to_string(),
            "--output".into(),
            format!("oci:{}:latest", out.display()),
        ];
        let (code, stdout, stderr) = run_cli_strings(&args);
        assert_eq!(code, 0, "{stderr}");
        let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        (summary["written"].as_str().unwrap().to_string(), out)
    };
    let (first, out) = compose("a");
    let (second, _) = compose("b");
    let digest = |w: &str| w.rsplit("manifest ").next().unwrap().to_string();
    assert_eq!(
        digest(&first),
        digest(&second),
        "composed twice, two digests"
    );
    let image = format!("oci:{}:latest", out.display());
    let (code, _, report) = run_cli_output(&["verify", &image]);
    assert_eq!(code, 0, "{report}");
    let config = support::images::read_oci(&out, "latest").config;
    let env = config["config"]["Env"].to_string();
    assert!(env.contains("TRITON_SERVER_GPU_ENABLED=1"), "{env}");
}

#[test]
fn slim_of_a_min_with_nothing_to_cut_is_the_plain_image() {
    let Some(fx) = Fixtures::get() else { return };
    let work = tempfile::tempdir().unwrap();
    // debootstrap's min holds required and important packages and what
    // they depend on: nothing for --slim to take.
    let digest = |name: &str, extra: &[&str]| -> (String, serde_json::Value) {
        let out = format!("oci:{}:latest", work.path().join(name).display());
        let (code, stdout, stderr) = oci_fixture_compose(&fx, work.path(), extra)
            .select(&["--backend", "python", "--cache", "local"])
            .output(&out)
            .args(&[
                "--json",
                "--store",
                work.path().join("store").to_str().unwrap(),
            ])
            .output_of();
        assert_eq!(code, 0, "{stderr}");
        let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        (summary["written"].as_str().unwrap().to_string(), summary)
    };
    let (plain, _) = digest("plain", &[]);
    let (slim, summary) = digest("slim", &["--slim"]);
    assert_eq!(summary["slim"]["removed_files"], 0, "{summary}");
    let manifest = |w: &str| w.rsplit("manifest ").next().unwrap().to_string();
    assert_eq!(manifest(&plain), manifest(&slim));
}

/// An hpcx-like tree for a min: an unowned library that carries a package
/// note (ld's `--package-metadata`, systemd's `.note.package`), a symlink
/// to it, and an unowned program.
fn hpcx_layer(at: &Path) -> Vec<u8> {
    use support::images::*;
    let d = at.join("hpcx-cc");
    std::fs::create_dir_all(&d).unwrap();
    let ucp = support::images::cc_library(
        &d,
        ("libucp.so.0.0.0", "libucp.so.0"),
        "int ucp(void) { return 0; }",
        // -Xlinker: -Wl would split the JSON at its commas.
        &[
            "-Xlinker",
            r#"--package-metadata={"type":"deb","name":"hpcx-ucx","version":"2.21.0"}"#,
        ],
        true,
    );
    let main = d.join("main.c");
    std::fs::write(&main, "int main(void) { return 0; }\n").unwrap();
    let tool = d.join("ucx_info");
    let built = Command::new("cc")
        .arg("-o")
        .arg(&tool)
        .arg(&main)
        .status()
        .unwrap();
    assert!(built.success());
    let items = vec![
        dir("opt"),
        dir("opt/hpcx"),
        dir("opt/hpcx/ucx"),
        dir("opt/hpcx/ucx/lib"),
        Item::File {
            path: "opt/hpcx/ucx/lib/libucp.so.0.0.0".into(),
            data: ucp,
            mode: 0o755,
            uid: 0,
            gid: 0,
            xattrs: vec![],
        },
        symlink("opt/hpcx/ucx/lib/libucp.so.0", "libucp.so.0.0.0"),
        dir("opt/hpcx/ucx/bin"),
        Item::File {
            path: "opt/hpcx/ucx/bin/ucx_info".into(),
            data: std::fs::read(&tool).unwrap(),
            mode: 0o755,
            uid: 0,
            gid: 0,
            xattrs: vec![],
        },
    ];
    layer_tar(&items)
}

/// The ELF files of a loaded image that no installed dpkg package lists and
/// no python distribution's RECORD names, found by walking the image's own
/// file system from inside it: path -> (sha1, sha256).
fn unowned_elf_files_inside(image: &str) -> BTreeMap<String, (String, String)> {
    let script = r#"
import glob, hashlib, json, os, importlib.metadata as md
installed = set()
for stanza in open('/var/lib/dpkg/status').read().split('\n\n'):
    fields = dict(l.split(': ', 1) for l in stanza.splitlines() if ': ' in l and not l.startswith(' '))
    if fields.get('Status', '').endswith(' installed'):
        installed.add(fields['Package'])
owned = set()
for listing in glob.glob('/var/lib/dpkg/info/*.list'):
    if os.path.basename(listing)[:-5].split(':')[0] in installed:
        owned.update(os.path.realpath(l.strip()) for l in open(listing) if l.strip())
for dist in md.distributions():
    owned.update(os.path.realpath(dist.locate_file(f)) for f in (dist.files or []))
out = {}
for root, dirs, files in os.walk('/'):
    if root == '/':
        dirs[:] = [d for d in dirs if d not in ('proc', 'sys', 'dev')]
    for name in files:
        path = os.path.join(root, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, 'rb') as f:
            if f.read(4) != b'\x7fELF':
                continue
            f.seek(0)
            data = f.read()
        if os.path.realpath(path) not in owned:
            out[path] = [hashlib.sha1(data).hexdigest(), hashlib.sha256(data).hexdigest()]
print(json.dumps(out))
"#;
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "python3",
        image,
        "-c",
        script,
    ]);
    let found: BTreeMap<String, (String, String)> = serde_json::from_str(out.trim()).unwrap();
    found
}

/// The SBOM's files: path -> ((sha1, sha256), comment).
fn sbom_files(doc: &serde_json::Value) -> BTreeMap<String, ((String, String), String)> {
    let files = doc["files"].as_array().cloned().unwrap_or_default();
    files
        .iter()
        .map(|f| {
            let sum = |algorithm: &str| {
                f["checksums"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["algorithm"] == algorithm)
                    .map(|c| c["checksumValue"].as_str().unwrap().to_string())
                    .unwrap_or_else(|| panic!("no {algorithm} for {f}"))
            };
            let name = f["fileName"].as_str().unwrap();
            (
                name.trim_start_matches('.').to_string(),
                (
                    (sum("SHA1"), sum("SHA256")),
                    f["comment"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

/// The SONAME `readelf` (binutils, on this machine) reads from a file.
fn readelf_soname(path: &Path) -> Option<String> {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "readelf -d {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("(SONAME)"))
        .and_then(|l| l.split('[').nth(1))
        .map(|s| s.trim_end_matches(']').to_string())
}

#[test]
fn the_sbom_lists_every_elf_file_no_package_owns_and_none_that_slim_removed() {
    let Some(fx) = Fixtures::get() else { return };
    let Some(tools) = support::pytools() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (gpu_min, backend) = gpu_shaped_min(&fx, work.path());
    let min = work.path().join("min-hpcx");
    support::images::derive_oci(
        &gpu_min,
        "latest",
        &min,
        Some(&hpcx_layer(work.path())),
        &[],
    );
    let min_ref = format!("oci:{}:latest", min.display());
    let full_ref = format!("oci:{}:latest", fx.dir.join("full-oci").display());
    let cudnnuser = format!("cudnnuser={}", backend.display());
    let mut listed_by_plain = BTreeSet::new();
    for slim in [false, true] {
        let name = if slim { "slim" } else { "plain" };
        let archive = work.path().join(format!("{name}.tar"));
        let tag = format!("triton-compose-e2e/{}:test", unique(name));
        let output = format!("docker-archive:{}:{tag}", archive.display());
        let sbom_dir = work.path().join(format!("work-{name}"));
        let mut compose = Compose::new(&min_ref, &full_ref)
            .select(&[
                "--backend",
                "python",
                "--backend",
                "onnxruntime",
                "--backend",
                &cudnnuser,
            ])
            .output(&output)
            .work_dir(&sbom_dir)
            .args(&["-q", "--no-store"]);
        if slim {
            compose = compose.arg("--slim");
        }
        let (code, _, stderr) = compose.output_of();
        assert_eq!(code, 0, "{stderr}");
        let sbom = std::fs::read(sbom_dir.join("sbom.spdx.json")).unwrap();
        support::assert_valid_spdx(&tools, &sbom);
        let doc: serde_json::Value = serde_json::from_slice(&sbom).unwrap();
        let listed = sbom_files(&doc);
        let image = load(&archive, &tag);
        std::fs::remove_file(&archive).unwrap();
        // Exactly what the image's own file system holds unowned, with the
        // same digests: nothing --slim removed, nothing owned.
        let inside = unowned_elf_files_inside(&image.0);
        let listed_sums: BTreeMap<String, (String, String)> = listed
            .iter()
            .map(|(p, (sums, _))| (p.clone(), sums.clone()))
            .collect();
        assert_eq!(
            listed_sums, inside,
            "{name}: the SBOM's files against the image's"
        );
        for must in [
            "/opt/tritonserver/bin/tritonserver",
            "/opt/hpcx/ucx/bin/ucx_info",
        ] {
            assert!(listed.contains_key(must), "{name}: {must} is not listed");
        }
        // Owned files are not listed: the dpkg-owned cuDNN stand-in.
        assert!(!listed.contains_key("/usr/local/cuda/lib64/libcudnn.so.9.1.0"));
        // Each file is in its directory root's package, or its part's.
        let package_of = |file: &str| -> String {
            let id = doc["files"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["fileName"] == format!(".{file}"))
                .map(|f| f["SPDXID"].as_str().unwrap().to_string())
                .unwrap();
            let holder = doc["relationships"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["relationshipType"] == "CONTAINS" && r["relatedSpdxElement"] == id)
                .map(|r| r["spdxElementId"].as_str().unwrap().to_string())
                .unwrap();
            doc["packages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["SPDXID"] == holder)
                .map(|p| p["name"].as_str().unwrap().to_string())
                .unwrap()
        };
        assert_eq!(
            package_of("/opt/tritonserver/bin/tritonserver"),
            "tritonserver core"
        );
        assert_eq!(
            package_of("/opt/tritonserver/backends/python/libtriton_python.so"),
            "tritonserver backend python"
        );
        if !slim {
            assert_eq!(package_of("/opt/hpcx/ucx/bin/ucx_info"), "/opt/hpcx");
            // The package note's version, and readelf's soname.
            let (_, comment) = &listed["/opt/hpcx/ucx/lib/libucp.so.0.0.0"];
            assert!(
                comment.contains("version 2.21.0 (from its package note)")
                    && comment.contains("name hpcx-ucx")
                    && comment.contains("soname libucp.so.0"),
                "{comment}"
            );
            // libcufft's stand-in: unowned, nothing loads it.
            assert!(listed.contains_key("/usr/local/cuda/lib64/libcufft.so.11"));
            if let Some(nvidia) = nvidia_libs() {
                let real = nvidia.join("libcudart.so.12");
                let soname = readelf_soname(&real).expect("libcudart has a soname");
                let (_, comment) = &listed["/usr/local/cuda/lib64/libcudart.so.12"];
                assert!(comment.contains(&format!("soname {soname};")), "{comment}");
                assert_eq!(
                    package_of("/usr/local/cuda/lib64/libcudart.so.12"),
                    "/usr/local/cuda"
                );
            }
            listed_by_plain = listed.keys().cloned().collect();
        } else {
            // What --slim removed is gone from the SBOM too.
            let gone: Vec<&String> = listed_by_plain
                .iter()
                .filter(|p| !listed.contains_key(*p))
                .collect();
            assert!(
                gone.iter().any(|p| p.ends_with("libcufft.so.11")),
                "{gone:?}"
            );
        }
    }
}

#[test]
fn a_user_image_runs_as_that_user_writes_tmp_and_answers_inference() {
    let Some(fx) = Fixtures::get() else { return };
    let work = tempfile::tempdir().unwrap();
    let image = compose_and_load(
        &fx,
        work.path(),
        &["--backend", "python", "--user", "4242:4243"],
    );
    // The config's user is who runs, with no --user on docker run.
    let ids = sh_in(
        &image.0,
        "id -u; id -g; t=$(mktemp) && echo written > \"$t\" && cat \"$t\"",
    );
    assert_eq!(
        ids.split_whitespace().collect::<Vec<_>>(),
        ["4242", "4243", "written"],
        "{ids}"
    );
    // The real server, as that user, loads the python model and answers;
    // the model repository must be readable by it.
    let models = models_dir(true);
    readable_by_all(models.path());
    serve_add_sub(&image.0, models.path());
}

/// Opens a model repository to every user: a server that is not root
/// must read it.
fn readable_by_all(dir: &Path) {
    let open = |path: &Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    open(dir, 0o755);
    for entry in walk(dir) {
        open(&entry, if entry.is_dir() { 0o755 } else { 0o644 });
    }
}

/// Every path below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// An image's file system, exported by docker into `root`.
fn export_rootfs(image: &str, root: &Path) {
    // A command is needed to create it (never run).
    let id = docker(&["create", image, "/never-run"]);
    let container = Container(id.trim().to_string());
    std::fs::create_dir_all(root).unwrap();
    let export = format!(
        "docker export {} | tar -x -C {}",
        container.0,
        root.display()
    );
    docker_free(&["sh", "-c", &export]);
}

/// `dpkg --verify` of an exported file system, by this machine's dpkg: its
/// problems, one per line.
fn dpkg_verify(root: &Path) -> Vec<String> {
    let out = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .arg("--verify")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn distroless_images_have_no_package_manager_run_as_a_user_answer_and_dpkg_verifies_them() {
    let Some(fx) = Fixtures::get() else { return };
    let work = tempfile::tempdir().unwrap();
    let python = ["--backend", "python", "--backend", "onnxruntime", "--slim"];
    let slim = compose_and_load(&fx, work.path(), &python);
    let distroless_args = [&python[..], &["--distroless", "--user", "1000"]].concat();
    let (archive, name) = compose_to_archive(&fx, work.path(), &distroless_args);
    let (code, report) = verify(&archive);
    assert_eq!(code, 0, "{report}");
    let image = load(&archive, &name);
    std::fs::remove_file(&archive).unwrap();
    let (distroless_size, slim_size) = (image_size(&image.0), image_size(&slim.0));
    eprintln!(
        "distroless {distroless_size} B against --slim {slim_size} B: {:.2}",
        distroless_size as f64 / slim_size as f64
    );
    assert!(distroless_size < slim_size);
    let root = work.path().join("root");
    export_rootfs(&image.0, &root);
    let min_root = work.path().join("min-root");
    export_rootfs(&fx.min_image, &min_root);
    let present = |root: &Path, path: &str| root.join(path).symlink_metadata().is_ok();
    for program in [
        "usr/bin/apt",
        "usr/bin/apt-get",
        "usr/bin/dpkg",
        "usr/bin/dpkg-query",
        "usr/lib/apt/methods/http",
        "usr/bin/ls",
        "usr/bin/cat",
        "usr/sbin/useradd",
    ] {
        assert!(present(&min_root, program), "min lacks {program}");
        assert!(!present(&root, program), "{program} stayed");
    }
    // The python backend starts its stub with bash, after a check through
    // /bin/sh: both stay.
    assert!(present(&root, "usr/bin/bash"));
    assert!(root.join("bin/sh").exists());
    // dpkg's database says what is there: whatever dpkg finds wrong, it
    // found wrong in min already (debootstrap leaves some out).
    let before = dpkg_verify(&min_root);
    for line in dpkg_verify(&root) {
        assert!(before.contains(&line), "{line}");
    }
    // The server is the entrypoint, runs as 1000, and answers.
    let models = models_dir(true);
    readable_by_all(models.path());
    let server = Server::start_as(&image.0, models.path(), None);
    server.wait_ready(Duration::from_secs(120));
    assert_add_sub_answers(&server);
    let user = docker(&["exec", &server.container.0, "bash", "-c", "echo $UID"]);
    assert_eq!(user.trim(), "1000");
    assert_eq!(server.stop(), 0, "tritonserver did not shut down cleanly");
    drop(image);
    drop(slim);

    // Without python nothing runs a shell: there is none.
    let onnx = compose_and_load(
        &fx,
        work.path(),
        &[
            "--backend",
            "onnxruntime",
            "--slim",
            "--distroless",
            "--user",
            "1000",
        ],
    );
    let onnx_root = work.path().join("onnx-root");
    export_rootfs(&onnx.0, &onnx_root);
    for program in [
        "bin/sh",
        "usr/bin/sh",
        "usr/bin/bash",
        "usr/bin/dash",
        "usr/bin/env",
    ] {
        assert!(!present(&onnx_root, program), "{program} stayed");
    }
    for line in dpkg_verify(&onnx_root) {
        assert!(before.contains(&line), "{line}");
    }
    let empty = models_dir(false);
    let server = Server::start_as(&onnx.0, empty.path(), None);
    server.wait_ready(Duration::from_secs(120));
    assert_eq!(server.stop(), 0, "tritonserver did not shut down cleanly");
    // docker build of Dockerfile.compose (the last compose wrote it) gives
    // the same programs and dpkg database, with no RUN where no shell is.
    let built = Loaded(format!("triton-compose-e2e/{}:built", unique("distroless")));
    docker_build(
        &work.path().join("Dockerfile.compose"),
        work.path(),
        &[
            format!("FULL_IMAGE={}", fx.full_image),
            format!("MIN_IMAGE={}", fx.min_image),
        ],
        &built.0,
    );
    assert_same_tree(
        &onnx.0,
        &built.0,
        &[
            "usr/bin",
            "usr/sbin",
            "var/lib/dpkg",
            "opt/tritonserver/bin",
        ],
    );
}
