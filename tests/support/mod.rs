//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod docker;
pub mod images;
pub mod lazy;
pub mod pki;
pub mod proxy;
pub mod registry;
#[allow(unused_imports)] // not every test crate reads images
pub use images::*;

/// Runs the built binary; returns (success, stderr).
pub fn run_cli(args: &[&str]) -> (bool, String) {
    run_cli_env(args, &[])
}

/// The binary, with a store of its own for this one run (so tests never
/// share one by accident) unless the test names one.
fn cli_command(env: &[(&str, &str)]) -> (std::process::Command, Option<tempfile::TempDir>) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_triton-compose"));
    command.env_remove("SOURCE_DATE_EPOCH");
    let own_store = if env.iter().any(|(k, _)| *k == "TRITON_COMPOSE_STORE") {
        None
    } else {
        let dir = tempfile::tempdir().unwrap();
        command.env("TRITON_COMPOSE_STORE", dir.path());
        Some(dir)
    };
    command.envs(env.iter().copied());
    (command, own_store)
}

/// Runs the built binary with extra environment variables.
pub fn run_cli_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let (mut command, _store) = cli_command(env);
    let out = command.args(args).output().expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the built binary; returns (exit code, stdout, stderr).
pub fn run_cli_output(args: &[&str]) -> (i32, String, String) {
    run_cli_output_env(args, &[])
}

/// Runs the built binary with extra environment variables; returns (exit
/// code, stdout, stderr).
pub fn run_cli_output_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let (mut command, _store) = cli_command(env);
    let out = command.args(args).output().expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Peak resident memory of a child process run with `--no-store`, from
/// /proc, polled until it ends.
pub fn run_measuring_rss(args: &[&str]) -> (bool, String, u64) {
    let mut args = args.to_vec();
    args.push("--no-store");
    measure_rss(&args, None)
}

/// The peak resident memory of a process so far (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
}

/// Like [`run_measuring_rss`], with the store (if any) in `store`.
pub fn measure_rss(args: &[&str], store: Option<&std::path::Path>) -> (bool, String, u64) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_triton-compose"));
    if let Some(store) = store {
        command.env("TRITON_COMPOSE_STORE", store);
    }
    let mut child = command
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak_kib = 0u64;
    let status = loop {
        if let Some(kib) = peak_rss_kib(child.id()) {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (status.success(), stderr, peak_kib)
}

/// The bin directory of the python tools scripts/test.sh installs
/// (pyspdxtools, a python with the oras SDK); `None` (skipping, with a
/// note) outside CI when it is not set.
pub fn pytools() -> Option<std::path::PathBuf> {
    match std::env::var_os("TRITON_COMPOSE_PYTOOLS") {
        Some(dir) => Some(dir.into()),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "TRITON_COMPOSE_PYTOOLS is not set: run the tests with scripts/test.sh"
            );
            eprintln!("skipping: no python tools (run scripts/test.sh, which installs them)");
            None
        }
    }
}

/// Validates an SPDX document with spdx-tools' `pyspdxtools -i`.
pub fn assert_valid_spdx(tools: &std::path::Path, document: &[u8]) {
    let file = tempfile::Builder::new()
        .suffix(".spdx.json")
        .tempfile()
        .unwrap();
    std::fs::write(file.path(), document).unwrap();
    let out = std::process::Command::new(tools.join("pyspdxtools"))
        .arg("-i")
        .arg(file.path())
        .output()
        .expect("pyspdxtools runs");
    assert!(
        out.status.success(),
        "pyspdxtools rejects the SBOM:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A compose command line, built instead of spelled out: the images, the
/// selection, the output and the work directory, then any other flags.
///
/// ```ignore
/// let (ok, stderr) = Compose::new(&min, &full).select(&["--backend", "python"])
///     .output(&out).work_dir(&dir).arg("-q").run();
/// ```
#[derive(Clone, Debug)]
pub struct Compose {
    args: Vec<String>,
}

impl Compose {
    /// `--enable-gpu=false --image min,MIN --image full,FULL` (as the CPU-only
    /// test images need); `min` and `full` are references (`oci:DIR:TAG`, ...).
    pub fn new(min: &str, full: &str) -> Compose {
        Compose {
            args: vec![
                "--enable-gpu=false".into(),
                "--image".into(),
                format!("min,{min}"),
                "--image".into(),
                format!("full,{full}"),
            ],
        }
    }

    /// Components as the flags name them: `["--backend", "python", ...]`.
    pub fn select(self, flags: &[&str]) -> Compose {
        self.args(flags)
    }

    pub fn output(self, output: &str) -> Compose {
        self.args(&["--output", output])
    }

    pub fn work_dir(self, dir: &std::path::Path) -> Compose {
        self.args(&["--work-dir", dir.to_str().unwrap()])
    }

    pub fn arg(mut self, arg: &str) -> Compose {
        self.args.push(arg.to_string());
        self
    }

    pub fn args(mut self, args: &[&str]) -> Compose {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// The command line.
    pub fn line(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    /// Runs it; returns (success, stderr).
    pub fn run(&self) -> (bool, String) {
        run_cli(&self.line())
    }

    /// Runs it with extra environment variables; returns (success, stderr).
    pub fn run_env(&self, env: &[(&str, &str)]) -> (bool, String) {
        run_cli_env(&self.line(), env)
    }

    /// Runs it; returns (exit code, stdout, stderr).
    pub fn output_of(&self) -> (i32, String, String) {
        run_cli_output(&self.line())
    }

    /// Runs it and expects success; returns stderr.
    pub fn succeeds(&self) -> String {
        let (ok, stderr) = self.run();
        assert!(ok, "{:?} failed:\n{stderr}", self.args);
        stderr
    }
}
