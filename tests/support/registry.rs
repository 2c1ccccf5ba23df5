//! A real registry for the tests: Debian's docker-registry (CNCF
//! distribution 2.8) on 127.0.0.1, with htpasswd auth and its access log
//! kept, stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub const USER: &str = "tester";
pub const PASSWORD: &str = "pa55-w0rd-not-for-logs";

pub struct Registry {
    pub host: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry, or returns None (skipping) when it is not
    /// installed outside CI.
    pub fn start() -> Option<Registry> {
        Registry::start_with("")
    }

    /// Like [`Registry::start`], with more configuration under `http:` and
    /// in place of htpasswd auth (`extra_http`, `auth` lines, YAML).
    pub fn start_with(extra: &str) -> Option<Registry> {
        for tool in ["docker-registry", "htpasswd", "skopeo"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "{tool} must be installed under CI"
                );
                eprintln!("skipping: {tool} is not installed (scripts/test.sh installs it)");
                return None;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", USER, PASSWORD])
            .output()
            .unwrap();
        assert!(htpasswd.status.success());
        std::fs::write(dir.path().join("htpasswd"), htpasswd.stdout).unwrap();
        let (tls, auth) = extra.split_once("---").unwrap_or((extra, ""));
        let auth = if auth.is_empty() {
            format!(
                "auth:\n  htpasswd:\n    realm: triton-compose-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            )
        } else {
            auth.to_string()
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{tls}{auth}",
            root = dir.path().join("storage").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .args(["serve", config_path.to_str().unwrap()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        let registry = Registry { host, child, dir };
        let start = Instant::now();
        while std::net::TcpStream::connect(&registry.host).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "the registry did not start:\n{}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(registry)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A containers-auth.json with this registry's credentials.
    pub fn authfile(&self) -> PathBuf {
        let path = self.dir.path().join("auth.json");
        write_auth_file(&path, &[&self.host]);
        path
    }

    /// `skopeo GLOBAL copy -q OWN FROM TO`, with this registry's
    /// credentials and no TLS on its side.
    fn skopeo_copy(&self, global: &[&str], own: &[&str], from: &str, to: &str) {
        let side = if to.starts_with("docker://") {
            "dest"
        } else {
            "src"
        };
        let out = Command::new("skopeo")
            .args(global)
            .args(["copy", "-q", &format!("--{side}-tls-verify=false")])
            .arg(format!("--{side}-creds"))
            .arg(format!("{USER}:{PASSWORD}"))
            .args(own)
            .args([from, to])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy {from} {to} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Pushes an OCI layout's image with skopeo, blobs unchanged.
    pub fn push_oci(&self, layout: &Path, tag: &str, repository: &str) {
        let from = format!("oci:{}:{tag}", layout.display());
        self.skopeo_copy(
            &[],
            &[],
            &from,
            &format!("docker://{}/{repository}", self.host),
        );
    }

    /// Pushes every platform of an OCI layout's index.
    pub fn push_oci_all(&self, layout: &Path, tag: &str, repository: &str) {
        let from = format!("oci:{}:{tag}", layout.display());
        let to = format!("docker://{}/{repository}", self.host);
        self.skopeo_copy(&[], &["--all"], &from, &to);
    }

    /// Pulls an image with skopeo into an OCI layout, tagged `tag`.
    pub fn pull_oci(&self, repository: &str, layout: &Path, tag: &str) {
        let from = format!("docker://{}/{repository}", self.host);
        self.skopeo_copy(&[], &[], &from, &format!("oci:{}:{tag}", layout.display()));
    }

    /// Pulls one architecture of a multi-platform image.
    pub fn pull_oci_platform(&self, repository: &str, layout: &Path, tag: &str, arch: &str) {
        let from = format!("docker://{}/{repository}", self.host);
        let global = ["--override-arch", arch, "--override-os", "linux"];
        self.skopeo_copy(
            &global,
            &[],
            &from,
            &format!("oci:{}:{tag}", layout.display()),
        );
    }

    /// Bytes of blobs the registry sent so far (GETs of `/blobs/`, whole or
    /// ranges), from its access log's size field.
    pub fn blob_bytes_sent(&self) -> u64 {
        self.log()
            .lines()
            .filter_map(|line| {
                let start = line.find("\"GET /v2/")?;
                let rest = &line[start + 1..];
                let end = rest.find('"')?;
                if !rest[..end].contains("/blobs/") {
                    return None;
                }
                let mut after = rest[end + 1..].split_whitespace();
                let status: u16 = after.next()?.parse().ok()?;
                let size: u64 = after.next()?.parse().ok()?;
                (200..300).contains(&status).then_some(size)
            })
            .sum()
    }

    /// Request lines of the access log: (method, path).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.log()
            .lines()
            .filter_map(|line| {
                let start = line.find('"')? + 1;
                let rest = &line[start..];
                let request = &rest[..rest.find('"')?];
                let mut parts = request.split_whitespace();
                Some((parts.next()?.to_string(), parts.next()?.to_string()))
            })
            .filter(|(method, path)| {
                matches!(
                    method.as_str(),
                    "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE"
                ) && path.starts_with("/v2")
            })
            .collect()
    }
}

/// Writes an `{"auths": ...}` file (containers-auth.json, or Docker's
/// config.json) giving the test credentials for each host.
pub fn write_auth_file(path: &Path, hosts: &[&str]) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let auths: serde_json::Map<String, serde_json::Value> = hosts
        .iter()
        .map(|h| (h.to_string(), serde_json::json!({ "auth": auth })))
        .collect();
    std::fs::write(
        path,
        serde_json::to_vec(&serde_json::json!({ "auths": auths })).unwrap(),
    )
    .unwrap();
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
