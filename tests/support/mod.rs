//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod docker;
pub mod images;
pub use images::*;

/// Runs the built binary; returns (success, stderr).
pub fn run_cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_triton-compose"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
