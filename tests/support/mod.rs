//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod docker;
pub mod images;
pub mod proxy;
pub mod registry;
pub use images::*;

/// Runs the built binary; returns (success, stderr).
pub fn run_cli(args: &[&str]) -> (bool, String) {
    run_cli_env(args, &[])
}

/// Runs the built binary with extra environment variables.
pub fn run_cli_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_triton-compose"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
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
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_triton-compose"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
