//! A registry over TLS with a CA of its own, on 127.0.0.1: its certificate
//! is trusted only when given (--cert-dir, SSL_CERT_FILE), a certificate
//! that does not verify never makes the client drop to plain HTTP, and
//! credentials are never sent to a plain-HTTP token realm.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use support::pki::Pki;
use support::registry::{Registry, PASSWORD, USER};
use support::*;

fn push(registry: &Registry, certs: &Path, layout: &Path, tag: &str, repository: &str) {
    let out = Command::new("skopeo")
        .args(["copy", "-q", "--dest-cert-dir"])
        .arg(certs)
        .args(["--dest-creds", &format!("{USER}:{PASSWORD}")])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{}/{repository}", registry.host))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TLS registry with `pki`'s certificate, holding the in-code min and
/// full images; and a directory for the test's files.
fn tls_registry_with_images(pki: &Pki) -> Option<(Registry, tempfile::TempDir)> {
    let registry = Registry::start_with(&pki.tls_config())?;
    let dir = tempfile::tempdir().unwrap();
    let min = min_image();
    min.write_oci(&dir.path().join("min"), "latest");
    full_image(&min).write_oci(&dir.path().join("full"), "24.10");
    let certs = pki.path("certs");
    push(
        &registry,
        &certs,
        &dir.path().join("min"),
        "latest",
        "triton/min:latest",
    );
    push(
        &registry,
        &certs,
        &dir.path().join("full"),
        "24.10",
        "triton/full:24.10",
    );
    Some((registry, dir))
}

fn compose(
    registry: &Registry,
    dir: &Path,
    out: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (bool, String) {
    let authfile = registry.authfile();
    let min = format!("min,{}/triton/min:latest", registry.host);
    let full = format!("full,{}/triton/full:24.10", registry.host);
    let output = format!("oci:{}:x", dir.join(out).display());
    let work = dir.join("work");
    let mut args = vec![
        "--enable-gpu=false",
        "--image",
        &min,
        "--image",
        &full,
        "--output",
        &output,
    ];
    args.extend([
        "--authfile",
        authfile.to_str().unwrap(),
        "--work-dir",
        work.to_str().unwrap(),
    ]);
    args.extend(["--backend", "python"]);
    args.extend_from_slice(extra);
    run_cli_env(&args, env)
}

#[test]
fn a_registry_with_its_own_ca_is_trusted_only_when_its_ca_is_given() {
    let pki = Pki::new();
    let Some((registry, dir)) = tls_registry_with_images(&pki) else {
        return;
    };
    let certs = pki.path("certs");

    // Unknown CA: an error that says what to do, and no plain HTTP (even
    // on this machine, where a registry without TLS may use it).
    let before = registry.log().lines().count();
    let (ok, stderr) = compose(&registry, dir.path(), "untrusted", &[], &[]);
    assert!(!ok);
    assert!(
        stderr.contains("its TLS certificate does not verify"),
        "{stderr}"
    );
    assert!(stderr.contains("--cert-dir"), "{stderr}");
    assert!(!dir.path().join("untrusted").exists());
    let plain: Vec<String> = registry
        .log()
        .lines()
        .skip(before)
        .filter(|l| l.contains("\"GET /v2"))
        .map(String::from)
        .collect();
    assert!(plain.is_empty(), "requests reached the registry: {plain:?}");

    // --cert-dir, and SSL_CERT_FILE.
    let (ok, stderr) = compose(
        &registry,
        dir.path(),
        "cert-dir",
        &["--cert-dir", certs.to_str().unwrap()],
        &[],
    );
    assert!(ok, "{stderr}");
    assert!(read_oci(&dir.path().join("cert-dir"), "x")
        .tree
        .contains_key("opt/tritonserver/backends/python/libtriton_python.so"));
    let ca = certs.join("ca.crt");
    let (ok, stderr) = compose(
        &registry,
        dir.path(),
        "env",
        &[],
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
    );
    assert!(ok, "{stderr}");

    // The per-host directory docker and podman read.
    let host_dir = Path::new("/etc/containers/certs.d").join(&registry.host);
    if std::fs::create_dir_all(&host_dir).is_ok() {
        std::fs::copy(&ca, host_dir.join("ca.crt")).unwrap();
        let (ok, stderr) = compose(&registry, dir.path(), "certs-d", &[], &[]);
        std::fs::remove_dir_all(&host_dir).unwrap();
        assert!(ok, "{stderr}");
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and can write {}",
            host_dir.display()
        );
        eprintln!(
            "skipping the certs.d case: {} is not writable",
            host_dir.display()
        );
    }
}

#[test]
fn credentials_never_go_to_a_plain_http_token_realm_of_an_https_registry() {
    let pki = Pki::new();
    // A listener standing for the realm: nothing may connect to it.
    let realm = TcpListener::bind("127.0.0.1:0").unwrap();
    realm.set_nonblocking(true).unwrap();
    let auth = format!(
        "---auth:\n  token:\n    realm: http://{}/token\n    service: test\n    issuer: test\n    rootcertbundle: {}\n",
        realm.local_addr().unwrap(),
        pki.path("certs/ca.crt").display()
    );
    let Some(registry) = Registry::start_with(&format!("{}{auth}", pki.tls_config())) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let certs = pki.path("certs");
    let (ok, stderr) = compose(
        &registry,
        dir.path(),
        "out",
        &["--cert-dir", certs.to_str().unwrap()],
        &[],
    );
    assert!(!ok);
    assert!(
        stderr.contains("which is plain HTTP; credentials are not sent there"),
        "{stderr}"
    );
    assert!(
        realm.accept().is_err(),
        "something connected to the plain-HTTP realm"
    );
}

/// A forward proxy that tunnels CONNECT requests, recording their targets;
/// it takes at most `limit` connections and stops after two minutes.
fn connect_proxy(limit: usize) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let mut served = 0;
        while served < limit && std::time::Instant::now() < deadline {
            let Ok((client, _)) = listener.accept() else {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            };
            served += 1;
            client.set_nonblocking(false).unwrap();
            let record = record.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap_or(0);
                let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                }
                if !line.starts_with("CONNECT ") || !target.starts_with("127.0.0.1:") {
                    let _ =
                        (&client).write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
                    return;
                }
                record.lock().unwrap().push(target.clone());
                let Ok(upstream) = std::net::TcpStream::connect(&target) else {
                    return;
                };
                let _ = (&client).write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                let (mut c_read, mut u_write) =
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let forward = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut u_write);
                    let _ = u_write.shutdown(std::net::Shutdown::Write);
                });
                let (mut u_read, mut c_write) = (upstream, client);
                let _ = std::io::copy(&mut u_read, &mut c_write);
                let _ = c_write.shutdown(std::net::Shutdown::Write);
                let _ = forward.join();
            });
        }
    });
    (address, seen)
}

#[test]
fn https_proxy_and_no_proxy_are_honoured() {
    let pki = Pki::new();
    let Some((registry, dir)) = tls_registry_with_images(&pki) else {
        return;
    };
    let certs = pki.path("certs");
    let (proxy, seen) = connect_proxy(200);
    let proxy_url = format!("http://{proxy}");
    let cert_dir = ["--cert-dir", certs.to_str().unwrap()];
    let (ok, stderr) = compose(
        &registry,
        dir.path(),
        "proxied",
        &cert_dir,
        &[("HTTPS_PROXY", &proxy_url), ("NO_PROXY", "")],
    );
    assert!(ok, "{stderr}");
    let tunnels = seen.lock().unwrap().len();
    assert!(tunnels > 0, "no request went through HTTPS_PROXY");
    assert!(seen.lock().unwrap().iter().all(|t| *t == registry.host));
    let (ok, stderr) = compose(
        &registry,
        dir.path(),
        "direct",
        &cert_dir,
        &[("HTTPS_PROXY", &proxy_url), ("NO_PROXY", "127.0.0.1")],
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        seen.lock().unwrap().len(),
        tunnels,
        "NO_PROXY was not honoured"
    );
}
