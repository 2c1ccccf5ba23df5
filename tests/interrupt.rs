//! Composes killed at random points, with SIGKILL and with SIGTERM, for
//! every kind of output: the destination never holds a partial image under
//! the requested name and what it held before is intact, the next run
//! succeeds, and nothing is left behind once it has run.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::registry::Registry;
use support::*;

const ROUNDS: usize = 20;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    /// min, and a full whose python backend is large enough for a compose
    /// to take a while.
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let min = min_image();
        min.write_oci(&dir.path().join("min"), "latest");
        let mut full = full_image(&min);
        full.layers.push(layer_tar(&[file(
            "opt/tritonserver/backends/python/big.txt",
            &noise(16 << 20, 11),
        )]));
        full.write_oci(&dir.path().join("full"), "24.10");
        std::fs::create_dir(dir.path().join("out")).unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, output: &str, store: bool) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_triton-compose"));
        command
            .args([
                "-q",
                "--enable-gpu=false",
                "--backend",
                "python",
                "--cache",
                "local",
            ])
            .args([
                "--image",
                &format!("min,oci:{}:latest", self.path("min").display()),
            ])
            .args([
                "--image",
                &format!("full,oci:{}:24.10", self.path("full").display()),
            ])
            .args(["--work-dir", self.path("work").to_str().unwrap()])
            .args(["--output", output])
            .env("TRITON_COMPOSE_STORE", self.path("store"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if !store {
            command.arg("--no-store");
        }
        command
    }

    /// Runs a compose to the end; returns how long it took.
    fn run(&self, output: &str, extra_env: &[(&str, &str)]) -> Duration {
        let start = Instant::now();
        let out = self
            .command(output, false)
            .envs(extra_env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "compose to {output} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        start.elapsed()
    }

    /// Starts a compose and stops it after `delay`, with SIGKILL or SIGTERM;
    /// true when it was stopped before it finished.
    fn interrupt(
        &self,
        output: &str,
        delay: Duration,
        kill: bool,
        store: bool,
        env: &[(&str, &str)],
    ) -> bool {
        let mut child = self
            .command(output, store)
            .envs(env.iter().copied())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let signal = if kill { "-KILL" } else { "-TERM" };
        let _ = Command::new("sh")
            .args(["-c", &format!("kill {signal} {} 2>/dev/null", child.id())])
            .status();
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        // A SIGTERM'd run stops with its own error (or had finished). One
        // signalled before main installed its handlers ends by the signal's
        // default action, having done nothing.
        let before_handlers = {
            use std::os::unix::process::ExitStatusExt;
            status.signal() == Some(15) && stderr.is_empty()
        };
        if !kill && !status.success() && !before_handlers {
            assert!(stderr.contains("interrupted"), "{stderr}");
            assert_eq!(status.code(), Some(130), "{stderr}");
        }
        !status.success()
    }

    /// ROUNDS composes to `output(round)`, each stopped at a random point
    /// of a run's length `took` (SIGKILL on odd rounds, so the last is one;
    /// the store on some), with `check(round, delay)` after each. Then a
    /// run to `after` succeeds and leaves nothing behind, here or in `extra`.
    #[allow(clippy::too_many_arguments)]
    fn kill_rounds(
        &self,
        seed: u64,
        took: Duration,
        env: &[(&str, &str)],
        output: impl Fn(usize) -> String,
        mut check: impl FnMut(usize, Duration),
        after: &str,
        extra: &[&Path],
    ) {
        let mut points = Points(seed);
        let mut stopped = 0;
        for round in 0..ROUNDS {
            let delay = points.next(took.mul_f64(0.9));
            stopped += usize::from(self.interrupt(
                &output(round),
                delay,
                round % 2 == 1,
                round % 4 == 2,
                env,
            ));
            check(round, delay);
        }
        assert!(
            stopped >= ROUNDS / 2,
            "only {stopped} of {ROUNDS} runs were stopped before they finished"
        );
        eprintln!(
            "{stopped} of {ROUNDS} runs stopped; {} leftovers before the next run",
            self.leftovers(extra).len()
        );
        self.run(after, env);
        assert_eq!(self.leftovers(extra), Vec::<PathBuf>::new());
    }

    /// Scratch or staging left anywhere this test's runs write.
    fn leftovers(&self, extra: &[&Path]) -> Vec<PathBuf> {
        let mut dirs = vec![self.path("work"), self.path("out"), self.path("store/tmp")];
        dirs.extend(extra.iter().map(|p| p.to_path_buf()));
        let mut found = Vec::new();
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(".triton-compose-") || name.starts_with(".tmp") {
                    found.push(entry.path());
                }
            }
        }
        found
    }
}

/// A small deterministic generator for kill points.
struct Points(u64);

impl Points {
    fn next(&mut self, limit: Duration) -> Duration {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let millis = (limit.as_millis() as u64).max(1);
        Duration::from_millis((self.0 >> 33) % millis)
    }
}

fn tags(layout: &Path) -> Vec<(String, String)> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        // Images only: each has its SBOM beside it, untagged.
        .filter(|m| m.get("artifactType").is_none())
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn killed_composes_to_an_oci_layout_leave_it_whole() {
    let setup = Setup::new();
    let layout = setup.path("out/layout");
    let took = setup.run(&format!("oci:{}:old", layout.display()), &[]);
    let old = tags(&layout);
    let reference = old[0].1.clone();
    setup.kill_rounds(
        1,
        took,
        &[],
        |round| format!("oci:{}:new{round}", layout.display()),
        |_, delay| {
            for (tag, digest) in tags(&layout) {
                // Every tag names a whole image: the old one, or a complete new one.
                assert!(tag == "old" || tag.starts_with("new"), "{tag}");
                assert_eq!(digest, reference, "{tag} after a kill at {delay:?}");
                read_oci(&layout, &tag);
            }
            assert!(tags(&layout).contains(&old[0]));
        },
        &format!("oci:{}:after", layout.display()),
        &[&layout, &layout.join("blobs/sha256")],
    );
}

#[test]
fn killed_composes_to_a_docker_archive_leave_nothing_or_the_whole_archive() {
    let setup = Setup::new();
    let reference = setup.path("out/reference.tar");
    let took = setup.run(
        &format!("docker-archive:{}:x/y:z", reference.display()),
        &[],
    );
    let reference = std::fs::read(reference).unwrap();
    let archive = |round: usize| setup.path(&format!("out/{round}.tar"));
    setup.kill_rounds(
        2,
        took,
        &[],
        |round| format!("docker-archive:{}:x/y:z", archive(round).display()),
        |round, delay| {
            if archive(round).exists() {
                assert_eq!(
                    std::fs::read(archive(round)).unwrap(),
                    reference,
                    "round {round}, kill at {delay:?}"
                );
            }
        },
        &format!(
            "docker-archive:{}:x/y:z",
            setup.path("out/after.tar").display()
        ),
        &[],
    );
}

#[test]
fn killed_composes_to_a_registry_never_leave_a_partial_tag() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let setup = Setup::new();
    let authfile = registry.authfile();
    let env = [("REGISTRY_AUTH_FILE", authfile.to_str().unwrap())];
    let repo = format!("{}/triton/killed", registry.host);
    setup.run(&format!("{repo}:old"), &env);
    // Later pushes skip the blobs the registry has: time one of those.
    let took = setup.run(&format!("{repo}:warm"), &env);
    let digest_of = |tag: &str| -> Option<String> {
        let out = Command::new("skopeo")
            .args([
                "inspect",
                "--tls-verify=false",
                "--authfile",
                authfile.to_str().unwrap(),
            ])
            .args(["--format", "{{.Digest}}", &format!("docker://{repo}:{tag}")])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let reference = digest_of("old").unwrap();
    setup.kill_rounds(
        3,
        took,
        &env,
        |round| format!("{repo}:new{round}"),
        |round, delay| {
            if let Some(digest) = digest_of(&format!("new{round}")) {
                assert_eq!(digest, reference, "round {round}, kill at {delay:?}");
            }
            assert_eq!(digest_of("old").as_deref(), Some(reference.as_str()));
        },
        &format!("{repo}:after"),
        &[],
    );
    assert_eq!(digest_of("after").as_deref(), Some(reference.as_str()));
}

#[test]
fn killed_composes_to_the_docker_engine_never_load_a_partial_image() {
    if !docker::docker_ok(&["info"]) {
        assert!(
            std::env::var_os("CI").is_none(),
            "the Docker engine must answer under CI"
        );
        eprintln!("skipping: no Docker engine (scripts/test.sh starts one)");
        return;
    }
    let setup = Setup::new();
    let name = format!("triton-compose-killed/{}", docker::unique("img"));
    setup.run(&format!("docker-daemon:{name}:old"), &[]);
    // Later loads skip the layers the engine has: time one of those.
    let took = setup.run(&format!("docker-daemon:{name}:warm"), &[]);
    let id_of = |tag: &str| -> Option<String> {
        let out = Command::new("docker")
            .args([
                "image",
                "inspect",
                "-f",
                "{{.Id}}",
                &format!("{name}:{tag}"),
            ])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let reference = id_of("old").unwrap();
    setup.kill_rounds(
        4,
        took,
        &[],
        |round| format!("docker-daemon:{name}:new{round}"),
        |round, delay| {
            if let Some(id) = id_of(&format!("new{round}")) {
                assert_eq!(id, reference, "round {round}, kill at {delay:?}");
            }
            assert_eq!(id_of("old").as_deref(), Some(reference.as_str()));
        },
        &format!("docker-daemon:{name}:after"),
        &[],
    );
    assert_eq!(id_of("after").as_deref(), Some(reference.as_str()));
    let _ = Command::new("docker")
        .args(["rmi", "-f", &reference])
        .output();
}
