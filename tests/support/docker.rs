//! The real-world test bed: fixture images built by scripts/fixtures.sh, a
//! Docker engine driven through its CLI, and a small HTTP client for
//! Triton's API. Servers bind to 127.0.0.1 only, and every wait is bounded.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;
use super::images::{apply_layer, FileInfo};

/// The fixture images (see scripts/fixtures.sh).
pub struct Fixtures {
    pub dir: PathBuf,
    /// Names of the images in the engine.
    pub min_image: String,
    pub full_image: String,
}

impl Fixtures {
    /// The fixtures named by TRITON_COMPOSE_FIXTURES (scripts/test.sh sets
    /// it). Without it the test is skipped with a note, except under CI,
    /// where that is a failure.
    pub fn get() -> Option<Fixtures> {
        let Some(dir) = std::env::var_os("TRITON_COMPOSE_FIXTURES") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "TRITON_COMPOSE_FIXTURES is not set: run the tests with scripts/test.sh"
            );
            eprintln!("skipping: no fixture images (run scripts/test.sh, which builds them and starts Docker)");
            return None;
        };
        let dir = PathBuf::from(dir);
        let env = std::fs::read_to_string(dir.join("images.env")).unwrap_or_else(|e| {
            panic!(
                "{}/images.env: {e}; rebuild with scripts/fixtures.sh",
                dir.display()
            )
        });
        let var = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("{name} missing from images.env"))
                .to_string()
        };
        assert!(
            docker_ok(&["info"]),
            "the Docker engine is not reachable: scripts/test.sh starts it (see its dockerd log)"
        );
        Some(Fixtures {
            min_image: var("MIN_IMAGE"),
            full_image: var("FULL_IMAGE"),
            dir,
        })
    }

    pub fn archive(&self, name: &str) -> String {
        format!(
            "docker-archive:{}",
            self.dir.join(format!("{name}.tar")).display()
        )
    }

    pub fn oci(&self, name: &str) -> String {
        format!(
            "oci:{}:latest",
            self.dir.join(format!("{name}-oci")).display()
        )
    }
}

/// Runs docker; panics with its output unless it succeeds.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    assert!(
        out.status.success(),
        "docker {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A container removed when dropped.
pub struct Container(pub String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A Triton server running in a container, on loopback ports.
pub struct Server {
    pub container: Container,
    pub http_port: u16,
}

impl Server {
    /// Starts `tritonserver` from `image` with `models` as its model repository.
    pub fn start(image: &str, models: &Path) -> Server {
        Server::start_as(image, models, Some("tritonserver"))
    }

    /// The same, with `program` as the command (`None`: the image's
    /// entrypoint is the server, and gets only its arguments).
    pub fn start_as(image: &str, models: &Path, program: Option<&str>) -> Server {
        let name = unique("triton-compose-e2e");
        let (http, grpc, metrics) = (free_port(), free_port(), free_port());
        let mount = format!("{}:/models:ro", models.display());
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "host",
            "-v",
            &mount,
            image,
        ];
        args.extend(program);
        let ports = [
            format!("--http-port={http}"),
            format!("--grpc-port={grpc}"),
            format!("--metrics-port={metrics}"),
        ];
        docker(
            &[
                &args[..],
                &[
                    "--model-repository=/models",
                    "--http-address=127.0.0.1",
                    &ports[0],
                    "--grpc-address=127.0.0.1",
                    &ports[1],
                    "--metrics-address=127.0.0.1",
                    &ports[2],
                ],
            ]
            .concat(),
        );
        Server {
            container: Container(name),
            http_port: http,
        }
    }

    pub fn logs(&self) -> String {
        let out = Command::new("docker")
            .args(["logs", &self.container.0])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Waits (at most `limit`) for /v2/health/ready to answer 200.
    pub fn wait_ready(&self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok((200, _)) = http(self.http_port, "GET", "/v2/health/ready", None) {
                return;
            }
            let running = docker(&["inspect", "-f", "{{.State.Running}}", &self.container.0]);
            assert_eq!(
                running,
                "true",
                "the server exited before it was ready:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "the server was not ready within {limit:?}:\n{}",
            self.logs()
        );
    }

    /// Stops the server with SIGTERM and returns its exit code.
    pub fn stop(self) -> i64 {
        docker(&["stop", "-t", "30", &self.container.0]);
        docker(&["inspect", "-f", "{{.State.ExitCode}}", &self.container.0])
            .parse()
            .unwrap()
    }
}

/// The docker CLI with a config directory of its own (for `docker login`
/// to a test registry without touching the user's).
pub struct DockerUser {
    config: tempfile::TempDir,
}

impl DockerUser {
    pub fn new() -> DockerUser {
        DockerUser {
            config: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs docker; panics with its output unless it succeeds.
    pub fn run(&self, args: &[&str]) {
        let out = Command::new("docker")
            .env("DOCKER_CONFIG", self.config.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `podman pull -q --tls-verify=false ARGS` (Debian's podman) into a
/// store of its own under `dir`; its stdout (the image's id). Panics with
/// podman's error unless it succeeds.
pub fn podman_pull(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(["--storage-driver", "vfs", "--root"])
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(["pull", "-q", "--tls-verify=false"])
        .args(args)
        .output()
        .expect("podman is installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A model repository holding add_sub (tests/data/models) served by
/// `backend` (its model.py only for python), readable to all.
pub fn add_sub_models(backend: &str) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/models/add_sub");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("add_sub");
    std::fs::create_dir_all(model.join("1")).unwrap();
    let config = std::fs::read_to_string(src.join("config.pbtxt"))
        .unwrap()
        .replace("backend: \"python\"", &format!("backend: \"{backend}\""));
    std::fs::write(model.join("config.pbtxt"), config).unwrap();
    if backend == "python" {
        std::fs::copy(src.join("1/model.py"), model.join("1/model.py")).unwrap();
    }
    // The container's user must be able to read the mount.
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir.path())
        .status()
        .unwrap();
    dir
}

/// Asks the server on `port` for add_sub of [1,2,3,4] + [10,20,30,40];
/// the error says what came back instead of [11,22,33,44].
pub fn infer_add_sub(port: u16) -> Result<(), String> {
    let request = r#"{"inputs":[
        {"name":"INPUT0","shape":[4],"datatype":"FP32","data":[1,2,3,4]},
        {"name":"INPUT1","shape":[4],"datatype":"FP32","data":[10,20,30,40]}]}"#;
    let (status, body) = http(port, "POST", "/v2/models/add_sub/infer", Some(request))
        .map_err(|e| format!("inference request: {e}"))?;
    if status != 200 {
        return Err(format!("inference answered {status}: {body}"));
    }
    let reply: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    let output = &reply["outputs"][0];
    if output["name"] != "OUTPUT0" || output["data"] != serde_json::json!([11.0, 22.0, 33.0, 44.0])
    {
        return Err(format!("wrong answer: {body}"));
    }
    Ok(())
}

/// One HTTP/1.1 request to 127.0.0.1; returns status and body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    // One write: Triton's HTTP server misroutes requests that arrive in pieces.
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {head}")))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// The files of an image as a container sees them (`docker export`),
/// restricted to paths under `prefixes`.
pub fn exported_tree(image: &str, prefixes: &[&str]) -> BTreeMap<String, FileInfo> {
    let name = unique("triton-compose-export");
    docker(&["create", "--name", &name, image, "true"]);
    let _container = Container(name.clone());
    let mut child = Command::new("docker")
        .args(["export", &name])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker export runs");
    let mut tree = BTreeMap::new();
    apply_layer(&mut tree, child.stdout.take().unwrap());
    assert!(child.wait().unwrap().success(), "docker export failed");
    tree.retain(|path, _| {
        prefixes
            .iter()
            .any(|p| path == p || path.starts_with(&format!("{p}/")))
    });
    tree
}

/// Size of an image in the engine, in bytes.
pub fn image_size(image: &str) -> u64 {
    docker(&["image", "inspect", "-f", "{{.Size}}", image])
        .parse()
        .unwrap()
}
