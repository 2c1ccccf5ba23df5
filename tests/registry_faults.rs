//! Registry failures, injected by a proxy on 127.0.0.1 in front of a real
//! registry: each case ends in a correct image after retries, or in a clear
//! error with nothing pushed under the tag. Credentials never reach the
//! host a registry redirects to.

mod support;

use std::process::Command;

use support::proxy::{Fault, Proxy, Rule};
use support::registry::{write_auth_file, Registry, PASSWORD, USER};
use support::*;

struct Setup {
    registry: Registry,
    dir: tempfile::TempDir,
    /// full's layer blobs, bottom first; [1] is the big Triton layer.
    full_layers: Vec<String>,
    full_config: String,
}

fn setup() -> Option<Setup> {
    let registry = Registry::start()?;
    let dir = tempfile::tempdir().unwrap();
    let min = min_image();
    min.write_oci(&dir.path().join("min"), "latest");
    let full = full_image(&min);
    let full_layers = full.write_oci(&dir.path().join("full"), "24.10");
    let full_config = sha256(&serde_json::to_vec(&full.config()).unwrap());
    registry.push_oci(&dir.path().join("min"), "latest", "triton/min:latest");
    registry.push_oci(&dir.path().join("full"), "24.10", "triton/full:24.10");
    Some(Setup {
        registry,
        dir,
        full_layers,
        full_config,
    })
}

fn rule(method: &'static str, path: &str, times: usize, fault: Fault) -> Rule {
    Rule {
        method,
        path_contains: path.to_string(),
        times,
        fault,
    }
}

/// Composes from the proxy to the registry itself; returns (ok, stderr).
fn compose_through(s: &Setup, proxy: &Proxy, tag: &str) -> (bool, String) {
    compose_from_proxy_to(s, proxy, &s.registry.host, tag)
}

/// Composes from the proxy to `output_host` (the registry or the proxy).
fn compose_from_proxy_to(s: &Setup, proxy: &Proxy, output_host: &str, tag: &str) -> (bool, String) {
    let authfile = s.dir.path().join("auth.json");
    write_auth_file(&authfile, &[&proxy.host, &s.registry.host]);
    compose_with(s, proxy, output_host, tag, &authfile, &[])
}

/// Composes from the proxy to `output_host` with the given credentials
/// file and environment (fast retries always).
fn compose_with(
    s: &Setup,
    proxy: &Proxy,
    output_host: &str,
    tag: &str,
    authfile: &std::path::Path,
    env: &[(&str, &str)],
) -> (bool, String) {
    let min = format!("min,{}/triton/min:latest", proxy.host);
    let full = format!("full,{}/triton/full:24.10", proxy.host);
    let output = format!("{output_host}/triton/composed:{tag}");
    let work = s.dir.path().join("work");
    run_cli_env(
        &[
            "--enable-gpu=false",
            "--backend",
            "python",
            "--image",
            &min,
            "--image",
            &full,
            "--output",
            &output,
            "--authfile",
            authfile.to_str().unwrap(),
            "--work-dir",
            work.to_str().unwrap(),
        ],
        &[&[("TRITON_COMPOSE_RETRY_BASE_MS", "50")], env].concat(),
    )
}

fn tag_exists(s: &Setup, tag: &str) -> bool {
    Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--creds",
            &format!("{USER}:{PASSWORD}"),
        ])
        .arg(format!(
            "docker://{}/triton/composed:{tag}",
            s.registry.host
        ))
        .output()
        .unwrap()
        .status
        .success()
}

fn basic_auth() -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    )
}

#[test]
fn transient_failures_are_retried_and_broken_reads_resumed() {
    let Some(s) = setup() else { return };
    let big = format!("/blobs/{}", s.full_layers[1]);
    let proxy = Proxy::start(
        &s.registry.host,
        vec![
            rule("GET", "/manifests/24.10", 1, Fault::Status(429, Some(1))),
            rule("GET", &big, 1, Fault::Reset),
            rule("GET", &big, 1, Fault::Truncate),
            rule("GET", "/blobs/", 2, Fault::Status(503, None)),
        ],
        basic_auth(),
    );
    let (ok, stderr) = compose_through(&s, &proxy, "retried");
    assert!(ok, "{stderr}");
    assert!(stderr.contains("HTTP 429"), "{stderr}");
    assert!(
        stderr.contains("resuming"),
        "the truncated read was resumed: {stderr}"
    );
    assert!(tag_exists(&s, "retried"));
    let pulled = s.dir.path().join("pulled");
    s.registry.pull_oci("triton/composed:retried", &pulled, "x");
    assert!(read_oci(&pulled, "x")
        .tree
        .contains_key("opt/tritonserver/backends/python/libtriton_python.so"));
}

#[test]
fn corrupt_blobs_fail_clearly_and_push_nothing() {
    let Some(s) = setup() else { return };
    let config = format!("/blobs/{}", s.full_config);
    let proxy = Proxy::start(
        &s.registry.host,
        vec![rule("GET", &config, usize::MAX, Fault::Corrupt)],
        basic_auth(),
    );
    let (ok, stderr) = compose_through(&s, &proxy, "corrupt-config");
    assert!(!ok);
    assert!(
        stderr.contains(&format!("expected {}", s.full_config)),
        "{stderr}"
    );
    assert!(!tag_exists(&s, "corrupt-config"));

    let big = format!("/blobs/{}", s.full_layers[1]);
    let proxy = Proxy::start(
        &s.registry.host,
        vec![rule("GET", &big, usize::MAX, Fault::Corrupt)],
        basic_auth(),
    );
    let (ok, stderr) = compose_through(&s, &proxy, "corrupt-layer");
    assert!(!ok);
    assert!(stderr.contains("full layer 2"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
    assert!(!tag_exists(&s, "corrupt-layer"));
}

#[test]
fn persistent_failures_end_in_a_clear_error() {
    let Some(s) = setup() else { return };
    let proxy = Proxy::start(
        &s.registry.host,
        vec![rule("GET", "/blobs/", usize::MAX, Fault::Status(503, None))],
        basic_auth(),
    );
    let (ok, stderr) = compose_through(&s, &proxy, "unavailable");
    assert!(!ok);
    assert!(stderr.contains("HTTP 503"), "{stderr}");
    assert_eq!(
        stderr.matches("retrying in").count(),
        3,
        "a bounded number of retries: {stderr}"
    );
    assert!(!tag_exists(&s, "unavailable"));
}

#[test]
fn redirected_blob_reads_never_carry_credentials_to_the_other_host() {
    let Some(s) = setup() else { return };
    let proxy = Proxy::start(
        &s.registry.host,
        vec![rule("GET", "/blobs/sha256:", usize::MAX, Fault::Redirect)],
        basic_auth(),
    );
    let (ok, stderr) = compose_through(&s, &proxy, "redirected");
    assert!(ok, "{stderr}");
    assert!(tag_exists(&s, "redirected"));
    let seen = proxy.seen();
    let storage: Vec<_> = seen.iter().filter(|r| r.host == "storage").collect();
    assert!(
        storage.len() >= s.full_layers.len(),
        "blob reads went to the storage host: {seen:#?}"
    );
    assert!(
        storage.iter().all(|r| !r.authorization),
        "Authorization reached the storage host: {storage:#?}"
    );
    assert!(
        seen.iter().any(|r| r.host == "registry" && r.authorization),
        "the registry itself got credentials"
    );
}

#[test]
fn bearer_tokens_are_fetched_per_repository_and_reused() {
    let Some(s) = setup() else { return };
    let proxy = Proxy::start_with_token_server(&s.registry.host, basic_auth());
    let (ok, stderr) = compose_through(&s, &proxy, "token");
    assert!(ok, "{stderr}");
    let seen = proxy.seen();
    let token_requests: Vec<_> = seen.iter().filter(|r| r.host == "token").collect();
    assert!(
        token_requests
            .iter()
            .any(|r| r.path.contains("scope=repository%3Atriton%2Ffull%3Apull")),
        "{token_requests:#?}"
    );
    assert!(
        token_requests
            .iter()
            .all(|r| r.scheme.as_deref() == Some("Basic")),
        "{token_requests:#?}"
    );
    // One token per repository scope, reused for every manifest and blob.
    assert!(
        token_requests.len() <= 2,
        "tokens were not reused: {token_requests:#?}"
    );
    let registry_requests = seen.iter().filter(|r| r.host == "registry").count();
    assert!(registry_requests > 2 * token_requests.len());
    assert!(
        seen.iter()
            .filter(|r| r.host == "registry")
            .all(|r| r.scheme.as_deref() != Some("Basic")),
        "the token-protected registry never got Basic credentials"
    );
}

#[test]
fn a_declined_mount_cancels_its_upload_session_and_uploads_instead() {
    let Some(s) = setup() else { return };
    let proxy = Proxy::start(
        &s.registry.host,
        vec![rule("POST", "mount=", usize::MAX, Fault::DeclineMount)],
        basic_auth(),
    );
    // Source and destination behind the proxy: one registry, so mounts are tried.
    let (ok, stderr) = compose_from_proxy_to(&s, &proxy, &proxy.host, "declined");
    assert!(ok, "{stderr}");
    let seen = proxy.seen();
    let mounts = seen
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("mount="))
        .count();
    let cancels = seen
        .iter()
        .filter(|r| r.method == "DELETE" && r.path.contains("/blobs/uploads/"))
        .count();
    assert!(mounts >= 2, "{seen:#?}");
    assert_eq!(
        cancels, mounts,
        "every declined mount's session was cancelled: {seen:#?}"
    );
    assert!(tag_exists(&s, "declined"));
}

#[test]
fn an_identity_token_is_exchanged_with_the_refresh_token_flow() {
    use base64::Engine as _;
    let Some(s) = setup() else { return };
    let proxy = Proxy::start_with_token_server(&s.registry.host, basic_auth());
    // The proxy's credential is an identity token; the registry's is Basic.
    let authfile = s.dir.path().join("identity.json");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        &authfile,
        serde_json::to_vec(&serde_json::json!({"auths": {
            proxy.host.clone(): {"identitytoken": support::proxy::REFRESH_TOKEN},
            s.registry.host.clone(): {"auth": basic},
        }}))
        .unwrap(),
    )
    .unwrap();
    let (ok, stderr) = compose_with(&s, &proxy, &s.registry.host, "identity", &authfile, &[]);
    assert!(ok, "{stderr}");
    assert!(
        !stderr.contains(support::proxy::REFRESH_TOKEN),
        "the refresh token was logged"
    );
    let token_requests: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|r| r.host == "token")
        .collect();
    assert!(!token_requests.is_empty());
    assert!(
        token_requests
            .iter()
            .all(|r| r.method == "POST" && r.scheme.is_none()),
        "{token_requests:#?}"
    );
    assert!(tag_exists(&s, "identity"));
}

#[test]
fn a_stalled_download_is_broken_off_and_resumed() {
    let Some(s) = setup() else { return };
    let big = format!("/blobs/{}", s.full_layers[1]);
    let proxy = Proxy::start(
        &s.registry.host,
        vec![rule("GET", &big, 1, Fault::Stall(20_000))],
        basic_auth(),
    );
    let authfile = s.dir.path().join("auth.json");
    write_auth_file(&authfile, &[&proxy.host, &s.registry.host]);
    let started = std::time::Instant::now();
    let (ok, stderr) = compose_with(
        &s,
        &proxy,
        &s.registry.host,
        "stalled",
        &authfile,
        &[("TRITON_COMPOSE_STALL_MS", "1000")],
    );
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("resuming"),
        "the stalled read was resumed: {stderr}"
    );
    // Broken off after about a second of silence, not after the 20 s stall.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(tag_exists(&s, "stalled"));
}
