//! Lazy pulling for real: containerd with the stargz snapshotter
//! (scripts/lazy.sh starts and stops them), the Go tools of tests/stargz
//! (built by scripts/lib.sh's stargz_tools; TRITON_COMPOSE_STARGZ names
//! them), and `ctr run` of a pulled image. Everything on this machine, every
//! wait bounded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::docker::{http, unique};
use super::free_port;
use super::registry::{Registry, PASSWORD, USER};

/// The directory of tcverify, tcstargz and tcpull; `None` (skipping, with a
/// note) outside CI when TRITON_COMPOSE_STARGZ is not set. Under CI a
/// missing tool is a failure: the lazy-pull tests never pass empty.
pub fn stargz_tools() -> Option<PathBuf> {
    match std::env::var_os("TRITON_COMPOSE_STARGZ") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            for tool in ["tcverify", "tcstargz", "tcpull"] {
                assert!(
                    dir.join(tool).is_file(),
                    "{}/{tool} is missing: scripts/lib.sh's stargz_tools builds it",
                    dir.display()
                );
            }
            Some(dir)
        }
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "TRITON_COMPOSE_STARGZ is not set: run the tests with scripts/test.sh"
            );
            eprintln!("skipping: no eStargz tools (run scripts/test.sh, which builds them)");
            None
        }
    }
}

/// What the estargz package found in one layer blob (tcverify's report).
#[derive(Debug, serde::Deserialize)]
pub struct EstargzReport {
    pub files: u64,
    pub chunks: u64,
    /// "prefetch", "no-prefetch" or "none".
    pub landmark: String,
    /// The compressed offset of the prefetch landmark (-1: none).
    pub prefetch_end: i64,
    pub blob_size: u64,
    pub prefetched: Vec<String>,
}

/// Checks every layer of the image tagged `tag` in an OCI layout with
/// stargz-snapshotter's estargz package (footer, TOC digest from the
/// descriptor's annotation, every chunk's digest, the config's diff-id);
/// panics naming the layer that fails. Reports in layer order.
pub fn verify_estargz_layout(tools: &Path, layout: &Path, tag: &str) -> Vec<EstargzReport> {
    let blob = |digest: &str| layout.join("blobs/sha256").join(&digest[7..]);
    let read = |path: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let index = read(layout.join("index.json"));
    let manifest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {}", layout.display()));
    let manifest = read(blob(manifest["digest"].as_str().unwrap()));
    let config = read(blob(manifest["config"]["digest"].as_str().unwrap()));
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    layers
        .iter()
        .zip(diff_ids)
        .enumerate()
        .map(|(n, (layer, diff_id))| {
            let digest = layer["digest"].as_str().unwrap();
            let toc = layer["annotations"]["containerd.io/snapshot/stargz/toc.digest"]
                .as_str()
                .unwrap_or_else(|| panic!("layer {} ({digest}) has no TOC digest", n + 1));
            let out = Command::new(tools.join("tcverify"))
                .arg(blob(digest))
                .args([toc, diff_id.as_str().unwrap()])
                .output()
                .expect("tcverify runs");
            assert!(
                out.status.success(),
                "layer {} ({digest}) is not valid eStargz: {}",
                n + 1,
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect()
}

/// containerd and the stargz snapshotter, stopped (and their mounts
/// undone) when dropped.
pub struct Lazy {
    dir: tempfile::TempDir,
    tools: PathBuf,
}

impl Lazy {
    /// Starts the stack with `registry`'s credentials; panics with what to
    /// do when FUSE or containerd cannot run here.
    pub fn start(tools: &Path) -> Lazy {
        // In /tmp: socket paths are short.
        let dir = tempfile::Builder::new()
            .prefix("tc-lazy-")
            .tempdir_in("/tmp")
            .unwrap();
        let lazy = Lazy {
            dir,
            tools: tools.to_path_buf(),
        };
        let out = lazy.script("up");
        assert!(
            out.status.success(),
            "the lazy-pull stack (containerd + stargz snapshotter over FUSE) cannot run here: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lazy
    }

    fn script(&self, verb: &str) -> std::process::Output {
        Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lazy.sh"))
            .args([verb, self.dir.path().to_str().unwrap()])
            .env("TRITON_COMPOSE_STARGZ", &self.tools)
            .env("TC_REGISTRY_USER", USER)
            .env("TC_REGISTRY_PASSWORD", PASSWORD)
            .output()
            .expect("bash runs")
    }

    fn socket(&self) -> String {
        self.dir
            .path()
            .join("containerd.sock")
            .display()
            .to_string()
    }

    /// The snapshotter's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stargz.log")).unwrap_or_default()
    }

    /// Pulls `reference` from `registry` with `snapshotter` ("stargz":
    /// lazily; "overlayfs": every layer downloaded and unpacked); how long
    /// it took.
    pub fn pull(&self, registry: &Registry, reference: &str, snapshotter: &str) -> Duration {
        let start = Instant::now();
        let out = Command::new(self.tools.join("tcpull"))
            .args(["-address", &self.socket(), "-namespace", "tc"])
            .args(["-snapshotter", snapshotter])
            .arg(format!("{}/{reference}", registry.host))
            .env("TC_REGISTRY_USER", USER)
            .env("TC_REGISTRY_PASSWORD", PASSWORD)
            .output()
            .expect("tcpull runs");
        assert!(
            out.status.success(),
            "pull of {reference} with {snapshotter} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        start.elapsed()
    }

    /// Runs `tritonserver` from the pulled image with `ctr run`, on
    /// loopback ports, `models` mounted read-only at /models.
    pub fn run_server(
        &self,
        registry: &Registry,
        reference: &str,
        snapshotter: &str,
        models: &Path,
    ) -> CtrServer {
        let name = unique("tc-lazy");
        let (http_port, grpc, metrics) = (free_port(), free_port(), free_port());
        let log_path = self.dir.path().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new("ctr")
            .args([
                "-a",
                &self.socket(),
                "-n",
                "tc",
                "run",
                "--rm",
                "--net-host",
            ])
            .args(["--snapshotter", snapshotter, "--mount"])
            .arg(format!(
                "type=bind,src={},dst=/models,options=rbind:ro",
                models.display()
            ))
            .arg(format!("{}/{reference}", registry.host))
            .arg(&name)
            .args([
                "tritonserver",
                "--model-repository=/models",
                "--http-address=127.0.0.1",
                &format!("--http-port={http_port}"),
                "--grpc-address=127.0.0.1",
                &format!("--grpc-port={grpc}"),
                "--metrics-address=127.0.0.1",
                &format!("--metrics-port={metrics}"),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("ctr runs");
        CtrServer {
            child,
            name,
            socket: self.socket(),
            log_path,
            http_port,
        }
    }
}

impl Drop for Lazy {
    fn drop(&mut self) {
        let out = self.script("down");
        if !out.status.success() {
            eprintln!("lazy.sh down: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// `tritonserver` in a containerd task; killed when dropped.
pub struct CtrServer {
    child: Child,
    name: String,
    socket: String,
    log_path: PathBuf,
    pub http_port: u16,
}

impl CtrServer {
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits (at most `limit`) for /v2/health/ready to answer 200.
    pub fn wait_ready(&mut self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok((200, _)) = http(self.http_port, "GET", "/v2/health/ready", None) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the server exited ({status}) before it was ready:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the server was not ready within {limit:?}:\n{}",
            self.logs()
        );
    }

    /// Sends `signal` to the server's task.
    fn signal(&self, signal: &str) {
        let _ = Command::new("ctr")
            .args([
                "-a",
                &self.socket,
                "-n",
                "tc",
                "tasks",
                "kill",
                "-s",
                signal,
            ])
            .arg(&self.name)
            .output();
    }

    /// Stops the server with SIGTERM; its exit code.
    pub fn stop(mut self) -> Option<i32> {
        self.signal("SIGTERM");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for CtrServer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal("SIGKILL");
            let _ = self.child.wait();
        }
    }
}
