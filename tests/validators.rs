//! The composed images, read by other people's tools: skopeo, umoci and
//! oci-image-tool. Where a tool is missing the check is skipped with a
//! note, except under CI (`CI` set), where `.ci/run` installs them.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} must be installed under CI"
        );
        eprintln!("skipping the {name} check: {name} is not installed");
    }
    found
}

fn check(cmd: &mut Command) -> String {
    let out = cmd.output().expect("tool runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn compose_fixture(dir: &Path, output: &str) {
    let min = min_image();
    min.write_oci(&dir.join("min"), "latest");
    full_image(&min).write_oci(&dir.join("full"), "24.10");
    let (ok, stderr) = Compose::new(
        &format!("oci:{}:latest", dir.join("min").display()),
        &format!("oci:{}:24.10", dir.join("full").display()),
    )
    .args(&[
        "-q",
        "--backend",
        "python",
        "--repoagent",
        "checksum",
        "--cache",
        "local",
        "--work-dir",
        dir.join("work").to_str().unwrap(),
        "--output",
        output,
    ])
    .run();
    assert!(ok, "{stderr}");
}

#[test]
fn oci_output_passes_skopeo_umoci_and_oci_image_tool() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("out");
    compose_fixture(dir.path(), &format!("oci:{}:composed", layout.display()));
    let reference = format!("oci:{}:composed", layout.display());
    if tool("skopeo") {
        let inspect = check(Command::new("skopeo").args(["inspect", &reference]));
        let value: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        assert_eq!(value["Layers"].as_array().unwrap().len(), 8, "{inspect}");
        assert_eq!(value["Labels"]["com.nvidia.build.ref"], "0123abcd");
        // skopeo re-verifies every blob while copying.
        let copy = dir.path().join("copy");
        check(Command::new("skopeo").args([
            "copy",
            &reference,
            &format!("oci:{}:copy", copy.display()),
        ]));
    }
    if tool("umoci") {
        let bundle = dir.path().join("bundle");
        check(Command::new("umoci").args([
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:composed", layout.display()),
            bundle.to_str().unwrap(),
        ]));
        let rootfs = bundle.join("rootfs");
        assert!(rootfs
            .join("opt/tritonserver/backends/python/libtriton_python.so")
            .is_file());
        assert!(rootfs.join(LONG_NAME).is_file());
        assert!(!rootfs
            .join("opt/tritonserver/backends/onnxruntime")
            .exists());
        let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
        assert!(passwd.contains("triton-server:x:1000:1000"), "{passwd}");
    }
    if tool("oci-image-tool") {
        check(Command::new("oci-image-tool").args([
            "validate",
            "--type",
            "image",
            "--ref",
            "name=composed",
            layout.to_str().unwrap(),
        ]));
    }
}

#[test]
fn docker_archive_output_passes_skopeo() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("out.tar");
    compose_fixture(
        dir.path(),
        &format!("docker-archive:{}:tritonserver:test", archive.display()),
    );
    if tool("skopeo") {
        let inspect = check(
            Command::new("skopeo")
                .args(["inspect", &format!("docker-archive:{}", archive.display())]),
        );
        let value: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        assert_eq!(value["Layers"].as_array().unwrap().len(), 8, "{inspect}");
        assert_eq!(
            value["Env"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e.as_str().unwrap().starts_with("TRITON_SERVER_USER="))
                .count(),
            1
        );
        let copy = dir.path().join("copy");
        check(Command::new("skopeo").args([
            "copy",
            &format!("docker-archive:{}:tritonserver:test", archive.display()),
            &format!("oci:{}:copy", copy.display()),
        ]));
        // What skopeo read equals what we wrote.
        let copied = read_oci(&copy, "copy");
        let (_, ours) = read_docker_archive(&archive);
        assert_eq!(copied.tree, ours.tree);
    }
}
