//! `triton-compose serve` on the fixtures, on 127.0.0.1, pulled by clients
//! that are not ours: docker, skopeo and podman.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::docker::*;

/// A running `serve` of the fixtures, killed when dropped (it also stops
/// by itself after a while without requests).
struct Served {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Served {
    fn start(fx: &Fixtures) -> Served {
        let min = format!("min,oci:{}:latest", fx.dir.join("min-oci").display());
        let full = format!("full,oci:{}:latest", fx.dir.join("full-oci").display());
        Served::start_with(&["--image", &min, "--image", &full])
    }

    /// `serve ARGS` (the images and more) on a free port, until it is ready.
    fn start_with(args: &[&str]) -> Served {
        let args = args.iter().map(|a| a.to_string()).collect();
        Served::start_in(args, tempfile::tempdir().unwrap())
    }

    /// `serve ARGS` with its state and store in `dir`.
    fn start_in(args: Vec<String>, dir: tempfile::TempDir) -> Served {
        let port = support::free_port();
        // The log of a restart goes on after the last run's.
        let before =
            std::fs::metadata(dir.path().join("serve.log")).map_or(0, |m| m.len() as usize);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("serve.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_triton-compose"))
            .arg("serve")
            .args(&args)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--exit-after-idle",
                "300",
            ])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--store")
            .arg(dir.path().join("store"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the binary runs");
        let served = Served {
            child,
            port,
            dir,
            args,
        };
        let start = Instant::now();
        // It answers /healthz at once, and says it is ready (as /readyz
        // does) once the images are read; TLS or not.
        let ready = |served: &Served| {
            served
                .log()
                .get(before..)
                .unwrap_or_default()
                .lines()
                .any(|l| l.trim_end().ends_with("INFO ready"))
        };
        while !ready(&served) {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "serve did not get ready:\n{}",
                served.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        served
    }

    /// Sends SIGTERM (or SIGINT); waits at most `limit` for the process to
    /// end; its exit code.
    fn signal_and_wait(&mut self, signal: &str, limit: Duration) -> Option<i32> {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                start.elapsed() < limit,
                "serve still runs {} s after {signal}:\n{}",
                limit.as_secs(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until serve has taken a SIGTERM sent to it: none is pending any
    /// more. Two signals of one kind sent before the first is taken merge
    /// into one, as POSIX allows.
    fn term_taken(&self) {
        const SIGTERM_BIT: u64 = 1 << (15 - 1);
        let status = format!("/proc/{}/status", self.child.id());
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&status).unwrap_or_default();
            let pending = text
                .lines()
                .filter(|l| l.starts_with("ShdPnd:") || l.starts_with("SigPnd:"))
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter_map(|mask| u64::from_str_radix(mask, 16).ok())
                .any(|mask| mask & SIGTERM_BIT != 0);
            if !pending {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "serve has not taken SIGTERM in 5 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Asks for the manifest of a new `tag` in the background; returns once
    /// serve says it is composing it (the request's answer, when it comes).
    fn composing(&self, tag: &str) -> std::thread::JoinHandle<Option<(u16, String, Vec<u8>)>> {
        let (port, path) = (self.port, format!("/v2/tritonserver/manifests/{tag}"));
        let pending = std::thread::spawn(move || request(port, "GET", &path, &[]));
        let start = Instant::now();
        while !self.log().contains(&format!("composing {tag}")) {
            assert!(start.elapsed() < Duration::from_secs(60), "{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        pending
    }

    /// The same serve again, on the state and store this one left.
    fn restart(mut self) -> Served {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Served::start_in(std::mem::take(&mut self.args), dir)
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Digests of the blobs GET in full (status 200) so far, in order.
    fn blob_gets(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" GET /v2/") && l.contains("/blobs/") && l.contains(" 200 "))
            .filter_map(|l| {
                l.split("/blobs/")
                    .nth(1)?
                    .split(' ')
                    .next()
                    .map(String::from)
            })
            .collect()
    }

    fn metric(&self, name: &str) -> u64 {
        let (_, _, body) = request(self.port, "GET", "/metrics", &[]).unwrap();
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    /// The manifest a tag names: (digest, JSON).
    fn manifest(&self, tag: &str) -> (String, serde_json::Value) {
        let path = format!("/v2/tritonserver/manifests/{tag}");
        let (status, head, body) = request(self.port, "GET", &path, &[]).unwrap();
        assert_eq!(status, 200, "{head}\n{}", String::from_utf8_lossy(&body));
        (
            header(&head, "docker-content-digest").unwrap(),
            serde_json::from_slice(&body).unwrap(),
        )
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request: (status, head, body).
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[&str],
) -> Option<(u16, String, Vec<u8>)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .ok()?;
    let mut text =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head, response[split + 4..].to_vec()))
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// `skopeo copy` from the served registry into `oci:LAYOUT:TAG`.
fn skopeo_copy(source: &str, layout: &Path, tag: &str) {
    let out = Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false", source])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{source}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn layer_digests(manifest: &serde_json::Value) -> BTreeSet<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Asks add_sub for [1,2,3,4] + [10,20,30,40].
fn assert_add_sub(image: &str, models: &Path) {
    let server = Server::start(image, models);
    server.wait_ready(Duration::from_secs(120));
    if let Err(err) = infer_add_sub(server.http_port) {
        panic!("{err}\n{}", server.logs());
    }
    assert_eq!(server.stop(), 0);
}

/// Removes pulled images when dropped.
struct Pulled(Vec<String>);

impl Drop for Pulled {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", image]).output();
        }
    }
}

#[test]
fn docker_skopeo_and_podman_pull_variants_and_errors_follow_the_spec() {
    let Some(fx) = Fixtures::get() else { return };
    let served = Served::start(&fx);
    let host = served.host();
    let mut pulled = Pulled(Vec::new());

    // docker pull, then the image answers inference.
    let first = format!("{host}/tritonserver:python");
    docker(&["pull", "-q", &first]);
    pulled.0.push(first.clone());
    assert_add_sub(&first, add_sub_models("python").path());

    // skopeo copies a second variant to an OCI layout, and inspects it.
    let layout = served.dir.path().join("copied");
    let copy = |tag: &str, to: &str| {
        skopeo_copy(&format!("docker://{host}/tritonserver:{tag}"), &layout, to)
    };
    copy("standin.checksum", "a");
    let image = support::read_oci(&layout, "a");
    assert!(image
        .tree
        .contains_key("opt/tritonserver/backends/standin/libtriton_standin.so"));
    assert!(!image
        .tree
        .keys()
        .any(|p| p.starts_with("opt/tritonserver/backends/python")));
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{host}/tritonserver:checksum.standin"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        inspected["Digest"],
        image.manifest_digest.as_str(),
        "one selection, one digest"
    );
    assert_eq!(
        inspected["Labels"]["io.triton-compose.selection"],
        "backends=standin;repoagents=checksum"
    );

    // Another variant into the same layout moves only the layers the first
    // lacked, and its config (the layout keeps blobs by digest).
    let (_, first) = served.manifest("standin.checksum");
    let before = served.blob_gets().len();
    copy("checksum.standin.local", "b");
    let moved: BTreeSet<String> = served.blob_gets().split_off(before).into_iter().collect();
    let (_, second) = served.manifest("local.checksum.standin");
    let mut expected: BTreeSet<String> = layer_digests(&second)
        .difference(&layer_digests(&first))
        .cloned()
        .collect();
    expected.insert(second["config"]["digest"].as_str().unwrap().to_string());
    assert!(expected.len() >= 2, "{expected:?}");
    assert_eq!(moved, expected, "{}", served.log());

    // podman (Debian's) pulls a fourth, into a store of its own.
    let id = podman_pull(
        &served.dir.path().join("podman"),
        &[&format!("{host}/tritonserver:onnxruntime")],
    );
    // podman names the image by its config's digest.
    let (_, onnx) = served.manifest("onnxruntime");
    let id = id.trim().to_string();
    assert_eq!(
        format!("sha256:{id}"),
        onnx["config"]["digest"].as_str().unwrap()
    );

    // Errors, as the distribution spec says them.
    let (status, _, body) = request(
        served.port,
        "GET",
        "/v2/tritonserver/manifests/pyton.local",
        &[],
    )
    .unwrap();
    assert_eq!(status, 404);
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["errors"][0]["code"], "MANIFEST_UNKNOWN");
    assert!(
        error["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean \"python\""),
        "{error}"
    );
    let (status, _, body) =
        request(served.port, "HEAD", "/v2/any/name/manifests/nothing", &[]).unwrap();
    assert_eq!((status, body.len()), (404, 0));
    let missing = format!("/v2/tritonserver/blobs/sha256:{}", "0".repeat(64));
    let (status, _, body) = request(served.port, "GET", &missing, &[]).unwrap();
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["errors"][0]["code"],
        "BLOB_UNKNOWN"
    );
    let long = format!("/v2/tritonserver/manifests/{}", "python.".repeat(20));
    assert_eq!(request(served.port, "GET", &long, &[]).unwrap().0, 404);
    // A blob in part, and a HEAD with its size.
    let config = second["config"]["digest"].as_str().unwrap();
    let path = format!("/v2/tritonserver/blobs/{config}");
    let (status, head, body) = request(served.port, "GET", &path, &["Range: bytes=0-9"]).unwrap();
    assert_eq!((status, body.len()), (206, 10), "{head}");
    assert!(header(&head, "content-range")
        .unwrap()
        .starts_with("bytes 0-9/"));
    let (status, head, _) = request(served.port, "HEAD", &path, &[]).unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        header(&head, "content-length").unwrap(),
        second["config"]["size"].to_string()
    );
}

#[test]
fn twenty_concurrent_pulls_of_five_variants_compose_each_once() {
    let Some(fx) = Fixtures::get() else { return };
    let served = Served::start(&fx);
    let host = served.host();
    let variants = [
        "python",
        "python.local",
        "standin.checksum",
        "checksum.standin.local",
        "onnxruntime.python",
    ];
    let out_dir = served.dir.path().join("pulls");
    std::fs::create_dir(&out_dir).unwrap();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let tag = variants[i % variants.len()];
            let source = format!("docker://{host}/tritonserver:{tag}");
            let target = out_dir.join(format!("{i}"));
            std::thread::spawn(move || {
                skopeo_copy(&source, &target, "x");
                (tag, target)
            })
        })
        .collect();
    let mut digests: std::collections::BTreeMap<&str, BTreeSet<String>> = Default::default();
    for handle in handles {
        let (tag, target) = handle.join().expect("a pull thread");
        let image = support::read_oci(&target, "x");
        assert!(
            image.tree.contains_key("opt/tritonserver/bin/tritonserver"),
            "{tag}"
        );
        digests
            .entry(tag)
            .or_default()
            .insert(image.manifest_digest.clone());
    }
    for (tag, seen) in &digests {
        assert_eq!(seen.len(), 1, "{tag} had several digests: {seen:?}");
    }
    assert_eq!(
        served.metric("triton_compose_composes_total"),
        5,
        "{}",
        served.log()
    );
    // The same tag, asked again, is the same digest and no new compose.
    let (again, _) = served.manifest("local.python");
    assert!(digests["python.local"].contains(&again));
    assert_eq!(served.metric("triton_compose_composes_total"), 5);
    // The core layer (at least) was built once and reused by the others.
    assert!(served.metric("triton_compose_store_layer_hits_total") >= 4);
}

#[test]
fn tls_and_basic_authentication_guard_a_served_registry() {
    let pki = support::pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let min = support::min_image();
    min.write_oci(&dir.path().join("min"), "latest");
    support::full_image(&min).write_oci(&dir.path().join("full"), "24.10");
    let htpasswd = Command::new("htpasswd")
        .args(["-Bbn", "puller", "s3cret-pull"])
        .output()
        .expect("htpasswd is installed (apache2-utils)");
    assert!(htpasswd.status.success());
    let users = dir.path().join("htpasswd");
    std::fs::write(&users, htpasswd.stdout).unwrap();
    let images = [
        format!("min,oci:{}:latest", dir.path().join("min").display()),
        format!("full,oci:{}:24.10", dir.path().join("full").display()),
    ];
    let (cert, key) = (pki.path("server.crt"), pki.path("server.key"));
    let served = Served::start_with(&[
        "--image",
        &images[0],
        "--image",
        &images[1],
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--htpasswd",
        users.to_str().unwrap(),
    ]);
    let certs = pki.path("certs");
    let inspect = |creds: Option<&str>| {
        let mut command = Command::new("skopeo");
        command
            .args(["inspect", "--cert-dir", certs.to_str().unwrap()])
            .arg(format!(
                "docker://{}/tritonserver:python.checksum",
                served.host()
            ));
        if let Some(creds) = creds {
            command.args(["--creds", creds]);
        }
        command.output().unwrap()
    };
    // Trusted through the CA, with the right password: the image.
    let out = inspect(Some("puller:s3cret-pull"));
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        served.log()
    );
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        inspected["Labels"]["io.triton-compose.selection"],
        "backends=python;repoagents=checksum"
    );
    // Without credentials, or with a wrong one: 401.
    for creds in [None, Some("puller:wrong")] {
        let out = inspect(creds);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            stderr.contains("unauthorized") || stderr.contains("401"),
            "{stderr}"
        );
    }
    // Plain HTTP gets no answer from a TLS listener.
    assert!(request(served.port, "GET", "/v2/", &[]).is_none_or(|r| r.0 != 200));
    assert!(served.log().contains(" 401 "), "{}", served.log());
}

#[test]
fn refresh_follows_a_moved_tag_and_keeps_serving_old_digests() {
    let Some(registry) = support::registry::Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let min = support::min_image();
    min.write_oci(&dir.path().join("min"), "latest");
    support::full_image(&min).write_oci(&dir.path().join("full"), "one");
    registry.push_oci(&dir.path().join("min"), "latest", "triton/min:latest");
    registry.push_oci(&dir.path().join("full"), "one", "triton/full:24.10");
    let host = &registry.host;
    let authfile = registry.authfile();
    let images = [
        format!("min,{host}/triton/min:latest"),
        format!("full,{host}/triton/full:24.10"),
    ];
    let served = Served::start_with(&[
        "--image",
        &images[0],
        "--image",
        &images[1],
        "--authfile",
        authfile.to_str().unwrap(),
        "--refresh",
        "1",
    ]);
    let (old, old_manifest) = served.manifest("python");

    // full's tag moves to a rebuilt full (one more file in the python backend).
    let mut rebuilt = support::full_image(&min);
    rebuilt.layers.push(support::layer_tar(&[
        support::dir("opt/tritonserver"),
        support::dir("opt/tritonserver/backends"),
        support::dir("opt/tritonserver/backends/python"),
        support::file("opt/tritonserver/backends/python/NEW", "rebuilt\n"),
    ]));
    rebuilt.write_oci(&dir.path().join("full"), "two");
    registry.push_oci(&dir.path().join("full"), "two", "triton/full:24.10");
    let start = Instant::now();
    let new = loop {
        let (digest, _) = served.manifest("python");
        if digest != old {
            break digest;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the moved tag was not followed:\n{}",
            served.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_ne!(new, old);
    // The old image stays whole by digest.
    let (status, _, _) = request(
        served.port,
        "GET",
        &format!("/v2/tritonserver/manifests/{old}"),
        &[],
    )
    .unwrap();
    assert_eq!(status, 200);
    for layer in layer_digests(&old_manifest) {
        let path = format!("/v2/tritonserver/blobs/{layer}");
        assert_eq!(
            request(served.port, "HEAD", &path, &[]).unwrap().0,
            200,
            "{layer}"
        );
    }
}

#[test]
fn sigterm_stops_serve_gracefully_and_a_restart_serves_the_same_digests() {
    let Some(fx) = Fixtures::get() else { return };
    let mut served = Served::start(&fx);
    // Probes: alive and ready, with no credentials.
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(
            request(served.port, "GET", probe, &[]).unwrap().0,
            200,
            "{probe}"
        );
    }
    // Small spec edges: a malformed digest, an empty component name.
    for path in [
        "/v2/tritonserver/blobs/sha256:nothex",
        "/v2/tritonserver/manifests/sha256:nothex",
    ] {
        let (status, _, body) = request(served.port, "GET", path, &[]).unwrap();
        assert_eq!(status, 400, "{path}");
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(error["errors"][0]["code"], "DIGEST_INVALID", "{path}");
    }
    let (status, _, body) = request(
        served.port,
        "GET",
        "/v2/tritonserver/manifests/python..local",
        &[],
    )
    .unwrap();
    assert_eq!(status, 404);
    assert!(
        String::from_utf8_lossy(&body).contains("empty component name"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    let (python, manifest) = served.manifest("python");
    // A blob download under way when SIGTERM comes completes.
    let largest = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap()
        .clone();
    let port = served.port;
    let path = format!(
        "/v2/tritonserver/blobs/{}",
        largest["digest"].as_str().unwrap()
    );
    let download = std::thread::spawn(move || request(port, "GET", &path, &[]));
    std::thread::sleep(Duration::from_millis(20));
    let code = served.signal_and_wait("-TERM", Duration::from_secs(12));
    assert_eq!(code, Some(0), "{}", served.log());
    if let Some((status, _, body)) = download.join().unwrap() {
        assert_eq!(status, 200);
        assert_eq!(body.len() as u64, largest["size"].as_u64().unwrap());
    }
    assert!(served
        .log()
        .contains("stopping: finishing in-flight responses"));

    // A restart serves the same digest without composing again.
    let mut served = served.restart();
    assert_eq!(served.manifest("python").0, python);
    assert_eq!(served.metric("triton_compose_composes_total"), 0);

    // SIGTERM during a compose: it is abandoned, nothing half-written.
    let pending = served.composing("onnxruntime.standin");
    let code = served.signal_and_wait("-TERM", Duration::from_secs(12));
    assert_eq!(code, Some(0), "{}", served.log());
    if let Some((status, _, _)) = pending.join().unwrap() {
        assert_ne!(status, 200, "the compose was to be abandoned");
    }
    let leftovers: Vec<String> = walk(served.dir.path())
        .into_iter()
        .filter(|p| p.contains(".triton-compose-"))
        .collect();
    assert!(leftovers.is_empty(), "half-written: {leftovers:?}");
    // Composed again on demand, after the restart.
    let mut served = served.restart();
    let (digest, _) = served.manifest("onnxruntime.standin");
    assert!(digest.starts_with("sha256:"));

    // A second signal stops it at once (sent once the first was taken,
    // or the two could merge into one).
    let _pending = served.composing("checksum.python.standin");
    Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap();
    served.term_taken();
    let code = served.signal_and_wait("-TERM", Duration::from_secs(3));
    assert_eq!(code, Some(130));
}

/// Every path under `dir`, recursively.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        out.push(path.display().to_string());
        if path.is_dir() && !path.is_symlink() {
            out.extend(walk(&path));
        }
    }
    out
}

#[test]
fn what_compose_can_change_about_an_image_serve_can_too() {
    let Some(fx) = Fixtures::get() else { return };
    let min = format!("min,oci:{}:latest", fx.dir.join("min-oci").display());
    let full = format!("full,oci:{}:latest", fx.dir.join("full-oci").display());
    // A GPU flag full was not built with is refused at start, saying why.
    let out = Command::new(env!("CARGO_BIN_EXE_triton-compose"))
        .args(["serve", "--image", &min, "--image", &full, "--enable-gpu"])
        .args(["--listen", &format!("127.0.0.1:{}", support::free_port())])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("TRITON_SERVER_GPU_ENABLED=0"), "{stderr}");

    let served = Served::start_with(&[
        "--image",
        &min,
        "--image",
        &full,
        "--enable-gpu=false",
        "--compression",
        "zstd",
        "--compression-level",
        "5",
        "--sbom",
        "none",
    ]);
    let (_, manifest) = served.manifest("python");
    let types: BTreeSet<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect();
    assert!(
        types.contains("application/vnd.oci.image.layer.v1.tar+zstd"),
        "{types:?}"
    );
    // No SBOM: the layout's index holds the image and no artifact.
    let layouts: Vec<_> = std::fs::read_dir(served.dir.path().join("state/layouts"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(layouts.len(), 1);
    let index = std::fs::read_to_string(layouts[0].path().join("index.json")).unwrap();
    assert!(!index.contains("artifactType"), "{index}");
}

#[test]
fn past_max_pending_clients_are_told_to_come_back_and_serve_stays_responsive() {
    let Some(fx) = Fixtures::get() else { return };
    let min = format!("min,oci:{}:latest", fx.dir.join("min-oci").display());
    let full = format!("full,oci:{}:latest", fx.dir.join("full-oci").display());
    let served = Served::start_with(&["--image", &min, "--image", &full, "--max-pending", "1"]);
    let first = served.composing("onnxruntime");
    // A second new selection while the first composes: 429, come back later.
    let (status, head, body) = request(
        served.port,
        "GET",
        "/v2/tritonserver/manifests/standin",
        &[],
    )
    .unwrap();
    assert_eq!(status, 429, "{head}");
    assert!(header(&head, "retry-after").is_some(), "{head}");
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["errors"][0]["code"], "TOOMANYREQUESTS");
    // The registry answers meanwhile.
    let start = Instant::now();
    assert_eq!(request(served.port, "GET", "/v2/", &[]).unwrap().0, 200);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(served.metric("triton_compose_pending_selections"), 1);
    assert_eq!(served.metric("triton_compose_refused_total"), 1);
    // Once the first is composed, the second is admitted.
    assert_eq!(first.join().unwrap().unwrap().0, 200);
    assert_eq!(served.metric("triton_compose_pending_selections"), 0);
    served.manifest("standin");
    assert_eq!(served.metric("triton_compose_compose_seconds_count"), 2);
}

#[test]
fn a_registry_in_front_as_a_pull_through_cache_serves_what_it_pulled_with_serve_stopped() {
    let Some(fx) = Fixtures::get() else { return };
    let mut served = Served::start(&fx);
    // CNCF distribution 2.8 as a pull-through cache of serve.
    let Some(mirror) = support::registry::Registry::start_with(&format!(
        "---proxy:\n  remoteurl: http://{}\n",
        served.host()
    )) else {
        return;
    };
    let through = format!("{}/tritonserver:python", mirror.host);
    let mut pulled = Pulled(vec![through.clone()]);
    docker(&["pull", "-q", &through]);
    let id = docker(&["image", "inspect", "-f", "{{.Id}}", &through]);
    let (digest, _) = served.manifest("python");
    assert!(
        served.log().contains("composing python"),
        "serve composed it for the mirror:\n{}",
        served.log()
    );
    // serve gone: the mirror still serves what it pulled.
    assert_eq!(
        served.signal_and_wait("-TERM", Duration::from_secs(12)),
        Some(0)
    );
    docker(&["rmi", "-f", &through]);
    docker(&["pull", "-q", &through]);
    assert_eq!(docker(&["image", "inspect", "-f", "{{.Id}}", &through]), id);
    let repo_digest = docker(&[
        "image",
        "inspect",
        "-f",
        "{{index .RepoDigests 0}}",
        &through,
    ]);
    assert!(repo_digest.ends_with(&digest), "{repo_digest} vs {digest}");
    pulled.0.push(through);
}

/// Bytes of the blobs of every layout in serve's state directory.
fn state_bytes(served: &Served) -> u64 {
    walk(&served.dir.path().join("state/layouts"))
        .iter()
        .filter(|p| p.contains("/blobs/sha256/"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn a_bounded_state_evicts_the_least_recently_served_and_composes_them_again_alike() {
    let Some(fx) = Fixtures::get() else { return };
    let mut served = Served::start(&fx);
    // The first two are the largest of these (standin's runtime dependencies
    // add libgomp), so any one of the others fits where those two did.
    let tags = [
        "python.standin",
        "checksum.python.standin",
        "python",
        "local.python",
        "checksum.python",
    ];
    let mut digests = std::collections::BTreeMap::new();
    for tag in &tags[..2] {
        digests.insert(*tag, served.manifest(tag).0);
    }
    // Room for these two and no more: each of the others evicts.
    let bound = state_bytes(&served);
    served
        .args
        .extend(["--state-max-size".to_string(), bound.to_string()]);
    let served = served.restart();
    assert_eq!(served.metric("triton_compose_state_max_bytes"), bound);
    for tag in &tags[2..] {
        digests.insert(*tag, served.manifest(tag).0);
        let kept = state_bytes(&served);
        assert!(kept <= bound, "{tag}: {kept} > {bound}\n{}", served.log());
        assert_eq!(served.metric("triton_compose_state_bytes"), kept);
    }
    let evicted = served.metric("triton_compose_evictions_total");
    for line in served.log().lines().filter(|l| l.contains("evicted")) {
        eprintln!("{line}");
    }
    assert!(evicted >= 2, "{evicted} evictions\n{}", served.log());
    // What is left is whole: a real client pulls the last tag.
    let pulled = served.dir.path().join("pulled");
    skopeo_copy(
        &format!("docker://{}/tritonserver:{}", served.host(), tags[4]),
        &pulled,
        "x",
    );
    // The first tag went first; asked for by digest, it is composed again.
    assert!(served.log().contains(&format!("evicted {}", tags[0])));
    let path = format!("/v2/tritonserver/manifests/{}", digests[tags[0]]);
    let (status, head, _) = request(served.port, "GET", &path, &[]).unwrap();
    assert_eq!(status, 200, "{head}\n{}", served.log());
    assert_eq!(
        header(&head, "docker-content-digest").as_deref(),
        Some(digests[tags[0]].as_str())
    );
    // And every tag, asked for again, is its old digest, under the bound.
    let composes = served.metric("triton_compose_composes_total");
    for tag in tags {
        assert_eq!(served.manifest(tag).0, digests[tag], "{tag}");
        assert!(state_bytes(&served) <= bound);
    }
    assert!(served.metric("triton_compose_composes_total") > composes);
    // skopeo pulls an evicted-and-composed-again tag too.
    skopeo_copy(
        &format!("docker://{}/tritonserver:{}", served.host(), tags[3]),
        &pulled,
        "y",
    );
}

#[test]
fn a_full_with_a_million_more_files_is_served_in_bounded_memory() {
    let Some(fx) = Fixtures::get() else { return };
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("full-big");
    let layer = support::many_small_files_layer(1_000_000);
    support::derive_oci(&fx.dir.join("full-oci"), "latest", &big, Some(&layer), &[]);
    drop(layer);
    let min = format!("min,oci:{}:latest", fx.dir.join("min-oci").display());
    let full = format!("full,oci:{}:latest", big.display());
    let served = Served::start_with(&["--image", &min, "--image", &full]);
    // skopeo, a client not ours, pulls a variant that serve composes.
    let layout = served.dir.path().join("copied");
    skopeo_copy(
        &format!("docker://{}/tritonserver:python", served.host()),
        &layout,
        "a",
    );
    let image = support::read_oci(&layout, "a");
    assert!(image
        .tree
        .keys()
        .any(|p| p.starts_with("opt/tritonserver/backends/python/")));
    assert!(
        !image.tree.keys().any(|p| p.contains("/bulk0")),
        "the million files are not part of the selection"
    );
    let peak_kib = support::peak_rss_kib(served.child.id()).unwrap();
    assert!(peak_kib < 200 << 10, "peak RSS of serve {peak_kib} KiB");
    eprintln!(
        "peak RSS of serve with a million more files in full: {} MiB",
        peak_kib >> 10
    );
}

#[test]
fn serve_with_estargz_serves_every_layer_as_estargz_with_its_toc_digest() {
    let Some(fx) = Fixtures::get() else { return };
    let Some(tools) = support::lazy::stargz_tools() else {
        return;
    };
    let min = format!("min,oci:{}:latest", fx.dir.join("min-oci").display());
    let full = format!("full,oci:{}:latest", fx.dir.join("full-oci").display());
    let served = Served::start_with(&[
        "--image",
        &min,
        "--image",
        &full,
        "--enable-gpu=false",
        "--compression",
        "estargz",
        "--sbom",
        "none",
    ]);
    let (_, manifest) = served.manifest("python.onnxruntime");
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert!(
            layer["annotations"]["containerd.io/snapshot/stargz/toc.digest"].is_string(),
            "{layer}"
        );
    }
    // What a client pulls is eStargz, layer for layer, min's too.
    let pulled = served.dir.path().join("pulled");
    skopeo_copy(
        &format!(
            "docker://127.0.0.1:{}/tritonserver:python.onnxruntime",
            served.port
        ),
        &pulled,
        "esgz",
    );
    let reports = support::lazy::verify_estargz_layout(&tools, &pulled, "esgz");
    assert_eq!(reports.len(), manifest["layers"].as_array().unwrap().len());
    assert!(reports.iter().all(|r| r.landmark != "none"), "{reports:?}");
}

/// Waits until `/metrics` says the prebuild is done.
fn wait_prebuilt(served: &Served) {
    let start = Instant::now();
    while served.metric("triton_compose_prebuild_finished") != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "the prebuild did not finish:\n{}",
            served.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `/metrics` as Prometheus' own text parser (prometheus_client) reads it:
/// family → {type, samples: [[name, labels, value]]}. A parse error fails.
fn parsed_metrics(served: &Served, tools: &Path) -> serde_json::Value {
    let (status, _, body) = request(served.port, "GET", "/metrics", &[]).unwrap();
    assert_eq!(status, 200);
    let mut child = Command::new(tools.join("python"))
        .args([
            "-c",
            "import sys, json\n\
             from prometheus_client.parser import text_string_to_metric_families\n\
             out = {f.name: {'type': f.type, 'samples': [[s.name, s.labels, s.value] for s in f.samples]}\n\
                    for f in text_string_to_metric_families(sys.stdin.read())}\n\
             print(json.dumps(out))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client cannot parse /metrics: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A sample's value: the family, the sample's name and some of its labels.
fn sample(metrics: &serde_json::Value, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let family = &metrics[family];
    family["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family} in {metrics}"))
        .iter()
        .find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k] == *v))
        .and_then(|s| s[2].as_f64())
        .unwrap_or_else(|| panic!("no {name} {labels:?} in {family}"))
}

/// The components serve offers (its tag list, `latest` aside).
fn offered(served: &Served) -> Vec<String> {
    let (_, _, body) = request(served.port, "GET", "/v2/tritonserver/tags/list", &[]).unwrap();
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    list["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str().filter(|t| *t != "latest").map(String::from))
        .collect()
}

#[test]
fn prebuild_builds_every_part_so_first_pulls_only_assemble_and_a_restart_builds_nothing() {
    let Some(fx) = Fixtures::get() else { return };
    let Some(tools) = support::pytools() else {
        return;
    };
    let served = Served::start(&fx);
    // A pull right after ready goes first: the prebuild, which starts with
    // every component together, gives way to it (or waits for it).
    served.manifest("checksum");
    wait_prebuilt(&served);
    let log = served.log();
    let composed = log
        .find("composed checksum")
        .expect("checksum was composed");
    let together = log
        .find("prebuilt the core and")
        .unwrap_or_else(|| panic!("no step of every component together:\n{log}"));
    assert!(
        composed < together,
        "the pull waited for the prebuild:\n{log}"
    );
    let parts = offered(&served).len() + 1;
    let metrics = parsed_metrics(&served, &tools);
    let parts_in = |state: &str| {
        sample(
            &metrics,
            "triton_compose_prebuild_parts",
            "triton_compose_prebuild_parts",
            &[("state", state)],
        )
    };
    assert_eq!(parts_in("prebuilt") as usize, parts, "{metrics}");
    assert_eq!(parts_in("waiting") + parts_in("failed"), 0.0, "{metrics}");
    assert!(served.log().contains("INFO prebuild finished in"));
    // Every single-component tag now only assembles stored layers.
    let built = served.metric("triton_compose_layers_built_total");
    for tag in offered(&served) {
        served.manifest(&tag);
    }
    assert_eq!(
        served.metric("triton_compose_layers_built_total"),
        built,
        "{}",
        served.log()
    );
    // The metrics' types and labels, as Prometheus reads them.
    let metrics = parsed_metrics(&served, &tools);
    for (family, kind) in [
        ("triton_compose_requests", "counter"),
        ("triton_compose_compose_seconds", "histogram"),
        ("triton_compose_pending_selections", "gauge"),
        ("triton_compose_store_bytes", "gauge"),
        ("triton_compose_prebuild_layers_built", "counter"),
    ] {
        assert_eq!(metrics[family]["type"], kind, "{family}: {metrics}");
    }
    let pulls = sample(
        &metrics,
        "triton_compose_requests",
        "triton_compose_requests_total",
        &[("kind", "manifest"), ("status", "200")],
    );
    assert!(pulls as usize > parts - 1, "{metrics}");
    let store = sample(
        &metrics,
        "triton_compose_store_bytes",
        "triton_compose_store_bytes",
        &[],
    );
    assert!(store > 1e6, "{metrics}");
    let composes = sample(
        &metrics,
        "triton_compose_compose_seconds",
        "triton_compose_compose_seconds_count",
        &[],
    );
    assert_eq!(
        composes as u64,
        served.metric("triton_compose_composes_total")
    );
    // A restart finds every part in the store.
    let served = served.restart();
    wait_prebuilt(&served);
    assert_eq!(
        served.metric("triton_compose_prebuild_layers_built_total"),
        0,
        "{}",
        served.log()
    );
    assert!(served.metric("triton_compose_prebuild_layers_found_total") > 0);
}

/// The layer blobs of the image an OCI layout's `tag` names.
fn layout_layers(layout: &Path, tag: &str) -> Vec<std::path::PathBuf> {
    let image = support::read_oci(layout, tag);
    (image.layer_digests.iter())
        .map(|d| layout.join("blobs").join(d.replace(':', "/")))
        .collect()
}

#[test]
fn once_prebuilt_a_combination_with_a_dependency_layer_of_its_own_reads_nothing_from_full() {
    let Some(fx) = Fixtures::get() else { return };
    // full, linked into a layout of the test's own, whose layers are put
    // aside while the combinations are pulled.
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full-oci");
    let copied = Command::new("cp")
        .arg("-rl")
        .arg(fx.dir.join("full-oci"))
        .arg(&full)
        .status()
        .unwrap();
    assert!(copied.success());
    let layers = layout_layers(&full, "latest");
    assert!(layers.len() > 1);
    let aside = |layer: &std::path::PathBuf| layer.with_extension("aside");
    let min = format!("min,oci:{}:latest", fx.dir.join("min-oci").display());
    let images = [
        "--image".to_string(),
        min.clone(),
        "--image".to_string(),
        format!("full,oci:{}:latest", full.display()),
    ];
    // What a serve with nothing prebuilt composes from the whole full.
    let fresh = Served::start_with(&[
        "--image",
        &min,
        "--image",
        &format!("full,oci:{}:latest", fx.dir.join("full-oci").display()),
        "--no-prebuild",
    ]);
    let tag = "python.standin";
    let (fresh_digest, fresh_manifest) = fresh.manifest(tag);
    // Then after a restart whose prebuild found every layer in the store.
    for restart in [false, true] {
        for layer in &layers {
            if aside(layer).exists() {
                std::fs::rename(aside(layer), layer).unwrap();
            }
        }
        let mut served = Served::start_in(images.to_vec(), tempfile::tempdir().unwrap());
        if restart {
            wait_prebuilt(&served);
            served = served.restart();
        }
        wait_prebuilt(&served);
        for layer in &layers {
            std::fs::rename(layer, aside(layer)).unwrap();
        }
        // python brings python3's packages and standin libgomp: their
        // layer together is no single component's, so no prebuild step
        // built it.
        let built = served.metric("triton_compose_layers_built_total");
        let (digest, manifest) = served.manifest(tag);
        assert_eq!(
            served.metric("triton_compose_layers_built_total"),
            built + 1,
            "restart {restart}: not one new layer (the dependencies'):\n{}",
            served.log()
        );
        assert_eq!(layer_digests(&manifest), layer_digests(&fresh_manifest));
        assert_eq!(digest, fresh_digest, "restart {restart}");
        // A real client pulls it whole, and libgomp is in it.
        let layout = dir.path().join(format!("pulled-{restart}"));
        let host = served.host();
        skopeo_copy(&format!("docker://{host}/tritonserver:{tag}"), &layout, tag);
        let image = support::read_oci(&layout, tag);
        assert!(
            image.tree.keys().any(|p| p.contains("libgomp.so")),
            "no libgomp in the pulled image"
        );
    }
}

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        let port = support::free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (chromium-driver; scripts/test.sh installs it)");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            port,
            _profile: tempfile::tempdir().unwrap(),
        }
    }

    /// A headless Chromium session (flags that keep it off the network).
    async fn browser(&self) -> fantoccini::Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", self._profile.path().display()),
                ],
            }),
        );
        // fantoccini's client is built with rustls, which needs a provider
        // (chromedriver itself is spoken to over plain HTTP).
        let _ = rustls::crypto::ring::default_provider().install_default();
        fantoccini::ClientBuilder::rustls()
            .expect("rustls")
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("chromedriver starts chromium")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the page's components table shows: name → [uncompressed,
/// compressed, dependencies] in bytes (from each cell's data-bytes).
async fn page_components(browser: &fantoccini::Client) -> Vec<(String, Vec<Option<u64>>)> {
    use fantoccini::Locator;
    let mut rows = Vec::new();
    for row in browser
        .find_all(Locator::Css("table#components tr[data-kind]"))
        .await
        .unwrap()
    {
        let name = row.attr("data-name").await.unwrap().unwrap();
        let mut sizes = Vec::new();
        for cell in row.find_all(Locator::Css("td.n")).await.unwrap() {
            sizes.push(
                cell.attr("data-bytes")
                    .await
                    .unwrap()
                    .and_then(|b| b.parse().ok()),
            );
        }
        rows.push((name, sizes));
    }
    rows
}

/// Clicks what `link` finds, then waits for the page to show `css`.
async fn click_and_wait(browser: &fantoccini::Client, link: fantoccini::Locator<'_>, css: &str) {
    let found = browser.find(link).await.unwrap();
    found.click().await.unwrap();
    browser
        .wait()
        .for_element(fantoccini::Locator::Css(css))
        .await
        .unwrap();
}

fn within_a_percent(shown: Option<u64>, catalogued: u64) -> bool {
    shown.is_some_and(|s| (s as f64 - catalogued as f64).abs() <= catalogued as f64 * 0.01)
}

#[test]
fn the_browse_page_in_headless_chromium_lists_every_component_and_its_pull_line_pulls() {
    let Some(fx) = Fixtures::get() else { return };
    let served = Served::start(&fx);
    wait_prebuilt(&served);
    let catalog = Command::new(env!("CARGO_BIN_EXE_triton-compose"))
        .args([
            "catalog",
            &fx.oci("full"),
            "--min",
            &fx.oci("min"),
            "--json",
        ])
        .arg("--store")
        .arg(served.dir.path().join("store"))
        .output()
        .unwrap();
    assert!(
        catalog.status.success(),
        "{}",
        String::from_utf8_lossy(&catalog.stderr)
    );
    let catalog: serde_json::Value = serde_json::from_slice(&catalog.stdout).unwrap();
    let driver = Driver::start();
    let base = format!("http://{}", served.host());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pull_line = runtime.block_on(async {
        use fantoccini::Locator;
        let browser = driver.browser().await;
        browser.goto(&format!("{base}/")).await.unwrap();
        assert_eq!(browser.title().await.unwrap(), "triton-compose serve");
        // Every component catalog lists, with its sizes within 1%.
        let shown = page_components(&browser).await;
        let listed = catalog["components"].as_array().unwrap();
        assert_eq!(shown.len(), listed.len(), "{shown:?}\n{catalog}");
        for entry in listed {
            let name = entry["name"].as_str().unwrap();
            let (_, sizes) = shown
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{name} is not on the page: {shown:?}"));
            for (at, key) in [(0, "size"), (1, "compressed_size"), (2, "deps_size")] {
                assert!(
                    within_a_percent(sizes[at], entry[key].as_u64().unwrap()),
                    "{name} {key}: page {:?}, catalog {}",
                    sizes[at],
                    entry[key]
                );
            }
        }
        // Every tag link of the page leads to a tag's page.
        let mut links = Vec::new();
        for link in browser.find_all(Locator::Css("ul#tags a")).await.unwrap() {
            links.push(link.attr("href").await.unwrap().unwrap());
        }
        assert!(links.len() >= 3, "{links:?}");
        for href in &links {
            browser.goto(&format!("{base}{href}")).await.unwrap();
            browser.find(Locator::Css("table#layers")).await.unwrap();
            assert!(browser
                .find_all(Locator::Css(".error"))
                .await
                .unwrap()
                .is_empty());
        }
        // A click from the components table, and its layers as served.
        browser.goto(&format!("{base}/")).await.unwrap();
        click_and_wait(
            &browser,
            Locator::Css("a[href='/tags/python']"),
            "table#layers",
        )
        .await;
        assert_eq!(browser.title().await.unwrap(), "tritonserver:python");
        let rows = browser
            .find_all(Locator::Css("table#layers tr"))
            .await
            .unwrap();
        let (_, manifest) = served.manifest("python");
        assert_eq!(rows.len() - 1, manifest["layers"].as_array().unwrap().len());
        let command = browser
            .find(Locator::Id("command-triton-compose"))
            .await
            .unwrap();
        assert!(command.text().await.unwrap().contains("--backend python"));
        let line = browser
            .find(Locator::Id("pull-docker"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        click_and_wait(
            &browser,
            Locator::LinkText("All components"),
            "table#components",
        )
        .await;
        assert_eq!(browser.current_url().await.unwrap().path(), "/");
        browser.close().await.unwrap();
        line
    });
    // The pull line, as copied from the page, pulls.
    let words: Vec<&str> = pull_line.split_whitespace().collect();
    assert_eq!(words[..2], ["docker", "pull"], "{pull_line}");
    let _pulled = Pulled(vec![words[2].to_string()]);
    docker(&words[1..]);
    let id = docker(&["image", "inspect", "--format", "{{.Id}}", words[2]]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
}

#[test]
fn hostile_requests_to_the_page_get_4xx_and_nothing_is_echoed_unescaped() {
    let dir = tempfile::tempdir().unwrap();
    let min = support::min_image();
    min.write_oci(&dir.path().join("min"), "latest");
    support::full_image(&min).write_oci(&dir.path().join("full"), "24.10");
    let htpasswd = Command::new("htpasswd")
        .args(["-Bbn", "viewer", "s3cret-view"])
        .output()
        .expect("htpasswd is installed (apache2-utils)");
    let users = dir.path().join("htpasswd");
    std::fs::write(&users, htpasswd.stdout).unwrap();
    let served = Served::start_with(&[
        "--image",
        &format!("min,oci:{}:latest", dir.path().join("min").display()),
        "--image",
        &format!("full,oci:{}:24.10", dir.path().join("full").display()),
        "--htpasswd",
        users.to_str().unwrap(),
        "--no-prebuild",
    ]);
    use base64::Engine;
    let auth = format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode("viewer:s3cret-view")
    );
    // The page needs the registry's credentials.
    let (status, _, _) = request(served.port, "GET", "/", &[]).unwrap();
    assert_eq!(status, 401);
    let (status, _, body) = request(served.port, "GET", "/", &[&auth]).unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("data-name=\"python\""));
    // A hostile Host is not used for the pull lines.
    let (status, _, body) = request(
        served.port,
        "GET",
        "/",
        &[&auth, "Host: \"><script>alert(1)</script>"],
    )
    .unwrap();
    let body = String::from_utf8_lossy(&body);
    assert!(status < 500 && !body.contains("<script"), "{status} {body}");
    let long = "a".repeat(5000);
    let huge = format!("/tags/{}", "python.".repeat(20_000));
    for path in [
        "/tags/nope",
        "/tags/python..checksum",
        "/tags/",
        "/tags/%3Cscript%3Ealert(1)%3C/script%3E",
        "/tags/python\"onmouseover='x'",
        "/tags/../../etc/passwd",
        "/tags/python/extra",
        "/nothing-here",
        &format!("/tags/{long}"),
        &huge,
    ] {
        let (status, _, body) = request(served.port, "GET", path, &[&auth])
            .unwrap_or_else(|| panic!("no answer to {:.80}", path));
        let body = String::from_utf8_lossy(&body);
        assert!(
            (400..500).contains(&status),
            "{status} for {path:.80}: {body:.300}"
        );
        assert!(
            !body.contains("<script") && !body.contains("\"onmouseover") && !body.contains("'x'"),
            "{path:.80} echoed: {body:.500}"
        );
    }
    assert!(!served.log().contains(" 500 "), "{}", served.log());
}

#[test]
fn prebuild_stops_at_the_store_bound_and_pulls_still_compose() {
    let dir = tempfile::tempdir().unwrap();
    let min = support::min_image();
    min.write_oci(&dir.path().join("min"), "latest");
    support::full_image(&min).write_oci(&dir.path().join("full"), "24.10");
    let served = Served::start_with(&[
        "--image",
        &format!("min,oci:{}:latest", dir.path().join("min").display()),
        "--image",
        &format!("full,oci:{}:24.10", dir.path().join("full").display()),
        "--store-max-size",
        "1K",
    ]);
    wait_prebuilt(&served);
    let (_, _, body) = request(served.port, "GET", "/metrics", &[]).unwrap();
    let metrics = String::from_utf8_lossy(&body);
    let parts = |state: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "triton_compose_prebuild_parts{{state=\"{state}\"}} "
                ))?
                .parse()
                .ok()
            })
            .unwrap_or_else(|| panic!("no {state} parts in {metrics}"))
    };
    assert_eq!(
        parts("prebuilt") + parts("waiting") + parts("failed"),
        0,
        "{metrics}"
    );
    assert_eq!(parts("skipped") as usize, offered(&served).len() + 1);
    assert!(
        served.log().contains("--store-max-size"),
        "{}",
        served.log()
    );
    // The page says why, and a pull is composed as before.
    let (_, _, page) = request(served.port, "GET", "/", &[]).unwrap();
    assert!(String::from_utf8_lossy(&page).contains("the store is full"));
    served.manifest("python.checksum");
}
