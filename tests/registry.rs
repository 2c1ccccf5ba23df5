//! Registries as source and destination, against a real registry
//! (distribution 2.8 with htpasswd auth) on 127.0.0.1.

mod support;

use support::registry::{Registry, PASSWORD};
use support::*;

struct Setup {
    registry: Registry,
    dir: tempfile::TempDir,
    min_layers: Vec<String>,
}

/// A registry holding the in-code min and full images.
fn setup() -> Option<Setup> {
    let registry = Registry::start()?;
    let dir = tempfile::tempdir().unwrap();
    let min = min_image();
    let min_layers = min.write_oci(&dir.path().join("min"), "latest");
    full_image(&min).write_oci(&dir.path().join("full"), "24.10");
    registry.push_oci(&dir.path().join("min"), "latest", "triton/min:latest");
    registry.push_oci(&dir.path().join("full"), "24.10", "triton/full:24.10");
    Some(Setup {
        registry,
        dir,
        min_layers,
    })
}

const COMPONENTS: [&str; 6] = [
    "--backend",
    "python",
    "--repoagent",
    "checksum",
    "--cache",
    "local",
];

#[test]
fn composes_registry_to_registry_like_local_layouts() {
    let Some(s) = setup() else { return };
    let host = &s.registry.host;
    let authfile = s.registry.authfile();
    let min = format!("{host}/triton/min:latest");
    let full = format!("docker://{host}/triton/full:24.10");
    let output = format!("{host}/triton/composed:python");
    let work = s.dir.path().join("work");
    let (ok, stderr) = Compose::new(&min, &full)
        .select(&COMPONENTS)
        .output(&output)
        .work_dir(&work)
        .args(&["-v", "--authfile", authfile.to_str().unwrap()])
        .run();
    assert!(ok, "{stderr}");
    assert!(
        !stderr.contains(PASSWORD),
        "credentials leaked into the log"
    );

    // The same compose from the OCI layouts gives the very same image.
    let local = s.dir.path().join("local");
    let min_oci = format!("oci:{}:latest", s.dir.path().join("min").display());
    let full_oci = format!("oci:{}:24.10", s.dir.path().join("full").display());
    let local_out = format!("oci:{}:python", local.display());
    let (ok, stderr) = Compose::new(&min_oci, &full_oci)
        .select(&COMPONENTS)
        .output(&local_out)
        .work_dir(&work)
        .arg("-q")
        .run();
    assert!(ok, "{stderr}");
    let pulled = s.dir.path().join("pulled");
    s.registry
        .pull_oci("triton/composed:python", &pulled, "python");
    let pulled = read_oci(&pulled, "python");
    let local = read_oci(&local, "python");
    // The same config and layers; the manifests differ only in naming the
    // registry sources (annotations), which a layout source cannot.
    assert_eq!(pulled.config, local.config);
    assert_eq!(pulled.layer_digests, local.layer_digests);
    let annotations =
        |m: &serde_json::Value| m["annotations"].as_object().cloned().unwrap_or_default();
    let (mut remote, near) = (annotations(&pulled.manifest), annotations(&local.manifest));
    assert_eq!(
        remote["org.opencontainers.image.base.name"],
        format!("{host}/triton/min:latest")
    );
    assert_eq!(
        remote["io.triton-compose.full.name"],
        format!("{host}/triton/full:24.10")
    );
    assert!(!near.contains_key("org.opencontainers.image.base.name"));
    remote.remove("org.opencontainers.image.base.name");
    remote.remove("io.triton-compose.full.name");
    assert_eq!(remote, near);
    assert_eq!(
        near["io.triton-compose.selection"],
        "backends=python;repoagents=checksum;caches=local"
    );
    assert_eq!(pulled.tree, local.tree);
    assert!(pulled
        .tree
        .contains_key("opt/tritonserver/backends/python/libtriton_python.so"));

    // min's layers were mounted into the new repository, not uploaded.
    let requests = s.registry.requests();
    for digest in &s.min_layers {
        let mounted = requests.iter().any(|(m, p)| {
            m == "POST"
                && p.starts_with("/v2/triton/composed/blobs/uploads/")
                && p.contains(&format!("mount={digest}"))
        });
        assert!(mounted, "no mount of {digest}:\n{requests:#?}");
        let uploaded = requests.iter().any(|(m, p)| {
            m == "PUT" && p.contains(&format!("digest={digest}")) && p.contains("/triton/composed/")
        });
        assert!(!uploaded, "{digest} was uploaded instead of mounted");
    }
    assert!(requests
        .iter()
        .any(|(m, p)| m == "PUT" && p == "/v2/triton/composed/manifests/python"));
}

#[test]
fn a_second_push_skips_blobs_the_registry_has() {
    let Some(s) = setup() else { return };
    let host = &s.registry.host;
    let authfile = s.registry.authfile();
    let min = format!("{host}/triton/min:latest");
    let full = format!("{host}/triton/full:24.10");
    let work = s.dir.path().join("work");
    for tag in ["one", "two"] {
        let output = format!("{host}/triton/composed:{tag}");
        let (ok, stderr) = Compose::new(&min, &full)
            .select(&COMPONENTS)
            .output(&output)
            .work_dir(&work)
            .args(&["-q", "--authfile", authfile.to_str().unwrap()])
            .run();
        assert!(ok, "{stderr}");
    }
    let uploads = s
        .registry
        .requests()
        .into_iter()
        .filter(|(m, p)| m == "PUT" && p.starts_with("/v2/triton/composed/blobs/uploads/"))
        .count();
    // The first push uploads the new layers, the config, the SBOM and the
    // artifact's empty config; the second, nothing.
    assert_eq!(uploads, 6 + 1 + 2, "{:#?}", s.registry.requests());
}

#[test]
fn missing_credentials_give_a_clear_error_and_push_nothing() {
    let Some(s) = setup() else { return };
    let host = &s.registry.host;
    let min = format!("{host}/triton/min:latest");
    let full = format!("{host}/triton/full:24.10");
    let empty_auth = s.dir.path().join("empty.json");
    std::fs::write(&empty_auth, r#"{"auths":{}}"#).unwrap();
    let (ok, stderr) = Compose::new(&min, &full)
        .args(&["--dry-run", "--authfile", empty_auth.to_str().unwrap()])
        .run();
    assert!(!ok);
    assert!(
        stderr.contains("authentication failed (HTTP 401)"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("docker login {host}")), "{stderr}");

    let wrong = s.dir.path().join("wrong.json");
    std::fs::write(
        &wrong,
        format!(r#"{{"auths":{{"{host}":{{"auth":"dGVzdGVyOndyb25n"}}}}}}"#),
    )
    .unwrap();
    let (ok, stderr) = Compose::new(&min, &full)
        .args(&["--dry-run", "--authfile", wrong.to_str().unwrap()])
        .run();
    assert!(!ok);
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    assert!(!stderr.contains("wrong"), "credentials leaked: {stderr}");
}

#[test]
fn unknown_tags_and_repositories_are_named() {
    let Some(s) = setup() else { return };
    let host = &s.registry.host;
    let authfile = s.registry.authfile();
    let min = format!("{host}/triton/min:latest");
    let full = format!("{host}/triton/full:nope");
    let (ok, stderr) = Compose::new(&min, &full)
        .args(&["--dry-run", "--authfile", authfile.to_str().unwrap()])
        .run();
    assert!(!ok);
    assert!(
        stderr.contains("triton/full/manifests/nope") && stderr.contains("not found"),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");
}

#[test]
fn when_full_is_built_from_min_min_is_never_downloaded() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let min = min_image();
    let min_layers = min.write_oci(&dir.path().join("min"), "latest");
    full_image_from(&min).write_oci(&dir.path().join("full"), "24.10");
    registry.push_oci(&dir.path().join("min"), "latest", "triton/min:latest");
    registry.push_oci(&dir.path().join("full"), "24.10", "triton/full:24.10");
    let host = &registry.host;
    let authfile = registry.authfile();
    let work = dir.path().join("work");
    let (min_ref, full_ref) = (
        format!("{host}/triton/min:latest"),
        format!("{host}/triton/full:24.10"),
    );
    let output = format!("{host}/triton/composed:python");
    // An SBOM lists min's packages, so it would read min: none here.
    let (ok, stderr) = Compose::new(&min_ref, &full_ref)
        .select(&COMPONENTS)
        .output(&output)
        .work_dir(&work)
        .args(&[
            "-q",
            "--sbom",
            "none",
            "--authfile",
            authfile.to_str().unwrap(),
        ])
        .run();
    assert!(ok, "{stderr}");

    let requests = registry.requests();
    for digest in &min_layers {
        let fetched: Vec<_> = requests
            .iter()
            .filter(|(m, p)| m == "GET" && p.ends_with(&format!("/blobs/{digest}")))
            .collect();
        assert!(
            fetched.is_empty(),
            "min's layer {digest} was downloaded: {fetched:?}"
        );
        assert!(
            requests
                .iter()
                .any(|(m, p)| m == "POST" && p.contains(&format!("mount={digest}"))),
            "no mount of {digest}"
        );
    }

    // The same from OCI layouts, with min's blobs destroyed: min is not read,
    // and the result is the same image.
    for digest in &min_layers {
        let blob = dir.path().join("min/blobs/sha256").join(&digest[7..]);
        let size = std::fs::metadata(&blob).unwrap().len() as usize;
        std::fs::write(&blob, vec![0u8; size]).unwrap();
        let shared = dir.path().join("full/blobs/sha256").join(&digest[7..]);
        std::fs::write(&shared, vec![0u8; size]).unwrap();
    }
    let local = dir.path().join("local");
    let (min_oci, full_oci) = (
        format!("oci:{}:latest", dir.path().join("min").display()),
        format!("oci:{}:24.10", dir.path().join("full").display()),
    );
    let local_out = format!("docker-archive:{}", local.display());
    // An SBOM lists min's packages, so it would read min: none here.
    let (ok, stderr) = Compose::new(&min_oci, &full_oci)
        .select(&COMPONENTS)
        .output(&local_out)
        .work_dir(&work)
        .args(&["-q", "--sbom", "none"])
        .run();
    // min's blobs must be copied into an archive, so this one fails, but
    // only when copying, after everything else was planned and written.
    assert!(!ok);
    assert!(
        stderr.contains("copying") && stderr.contains("min"),
        "{stderr}"
    );
    let pulled = dir.path().join("pulled");
    registry.pull_oci("triton/composed:python", &pulled, "python");
    let image = read_oci(&pulled, "python");
    let passwd = image.tree.get("etc/passwd").expect("account layer");
    assert!(passwd.size > 0);
    assert!(image
        .tree
        .contains_key("opt/tritonserver/backends/python/libtriton_python.so"));
    assert!(!image
        .tree
        .contains_key("opt/tritonserver/backends/onnxruntime"));
}

#[test]
fn credentials_come_from_docker_config_when_no_authfile_is_named() {
    let Some(s) = setup() else { return };
    let host = &s.registry.host;
    let docker_config = s.dir.path().join("docker-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    support::registry::write_auth_file(&docker_config.join("config.json"), &[host]);
    let (min, full) = (
        format!("min,{host}/triton/min:latest"),
        format!("full,{host}/triton/full:24.10"),
    );
    let work = s.dir.path().join("work");
    let (ok, stderr) = dry_run(&min, &full, &work, ("DOCKER_CONFIG", &docker_config));
    assert!(ok, "{stderr}");
    assert!(work.join("Dockerfile.compose").is_file());
}

#[test]
fn digest_references_and_registry_auth_file_work() {
    let Some(s) = setup() else { return };
    let host = &s.registry.host;
    let authfile = s.registry.authfile();
    let inspect = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--creds",
            &format!("{}:{PASSWORD}", support::registry::USER),
        ])
        .arg(format!("docker://{host}/triton/full:24.10"))
        .output()
        .unwrap();
    let digest = serde_json::from_slice::<serde_json::Value>(&inspect.stdout).unwrap()["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    let (min, full) = (
        format!("min,{host}/triton/min:latest"),
        format!("full,{host}/triton/full@{digest}"),
    );
    let work = s.dir.path().join("work");
    let (ok, stderr) = dry_run(&min, &full, &work, ("REGISTRY_AUTH_FILE", &authfile));
    assert!(ok, "{stderr}");
    // A digest that does not exist is named, not guessed around.
    let missing = format!("full,{host}/triton/full@sha256:{}", "0".repeat(64));
    let (ok, stderr) = dry_run(&min, &missing, &work, ("REGISTRY_AUTH_FILE", &authfile));
    assert!(!ok);
    assert!(stderr.contains("not found"), "{stderr}");
}

/// A dry run from registry references, with one extra environment variable.
fn dry_run(
    min: &str,
    full: &str,
    work: &std::path::Path,
    env: (&str, &std::path::Path),
) -> (bool, String) {
    run_cli_env(
        &[
            "--enable-gpu=false",
            "--dry-run",
            "--image",
            min,
            "--image",
            full,
            "--work-dir",
            work.to_str().unwrap(),
        ],
        &[(env.0, env.1.to_str().unwrap())],
    )
}

/// Composes between repositories of the test registry, from
/// triton/min:latest and triton/full:FULL_TAG into triton/composed:OUT_TAG,
/// with `store`; returns stderr.
fn compose_with_store(
    registry: &Registry,
    dir: &std::path::Path,
    full_tag: &str,
    out_tag: &str,
    selection: &[&str],
) -> String {
    let store = dir.join("store");
    let env = [("TRITON_COMPOSE_STORE", store.to_str().unwrap())];
    registry_compose(registry, dir, (full_tag, out_tag), selection, &env).1
}

/// Composes triton/min:latest and triton/full:FULL_TAG of the registry
/// into triton/composed:OUT_TAG with `args` (the selection and more);
/// returns the work directory and the log.
fn registry_compose(
    registry: &Registry,
    dir: &std::path::Path,
    (full_tag, out_tag): (&str, &str),
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::path::PathBuf, String) {
    let host = &registry.host;
    let authfile = registry.authfile();
    let min = format!("{host}/triton/min:latest");
    let full = format!("{host}/triton/full:{full_tag}");
    let output = format!("{host}/triton/composed:{out_tag}");
    let work = dir.join(format!("work-{out_tag}"));
    let (ok, stderr) = Compose::new(&min, &full)
        .output(&output)
        .work_dir(&work)
        .args(&["--authfile", authfile.to_str().unwrap()])
        .args(args)
        .run_env(env);
    assert!(ok, "{stderr}");
    (work, stderr)
}

#[test]
fn a_warm_compose_between_registries_downloads_no_layer() {
    let Some(s) = setup() else { return };
    let full_layers = full_image(&min_image()).write_oci(&s.dir.path().join("again"), "x");
    let compose =
        |tag: &str| compose_with_store(&s.registry, s.dir.path(), "24.10", tag, &COMPONENTS);
    let is_layer_get = |(m, p): &&(String, String)| {
        m == "GET"
            && s.min_layers
                .iter()
                .chain(&full_layers)
                .any(|d| p.ends_with(&format!("/blobs/{d}")))
    };
    compose("cold");
    let cold = s.registry.requests();
    assert!(cold.iter().any(|r| is_layer_get(&r)), "{cold:#?}");
    let warm = compose("warm");
    assert!(!warm.contains("reading "), "{warm}");
    let requests: Vec<(String, String)> = s.registry.requests().split_off(cold.len());
    let layer_gets: Vec<&(String, String)> = requests.iter().filter(is_layer_get).collect();
    assert!(layer_gets.is_empty(), "{layer_gets:#?}");
    let uploads = requests
        .iter()
        .filter(|(m, p)| m == "PUT" && p.contains("/blobs/uploads/"))
        .count();
    assert_eq!(uploads, 0, "{requests:#?}");
    assert!(requests
        .iter()
        .any(|(m, p)| m == "PUT" && p == "/v2/triton/composed/manifests/warm"));
}

#[test]
fn a_new_component_in_a_large_layer_is_fetched_with_range_requests() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let min = min_image();
    min.write_oci(&dir.path().join("min"), "latest");
    let mut full = full_image(&min);
    let mut items = vec![
        support::dir("opt"),
        support::dir("opt/tritonserver"),
        support::dir("opt/tritonserver/backends"),
        support::dir("opt/tritonserver/backends/python"),
        file(
            "opt/tritonserver/backends/python/big.txt",
            &noise(30 << 20, 3),
        ),
    ];
    items.extend([
        support::dir("opt/tritonserver/backends/extra"),
        file(
            "opt/tritonserver/backends/extra/libtriton_extra.so",
            "extra\n",
        ),
    ]);
    full.layers.push(layer_tar(&items));
    let full_layers = full.write_oci(&dir.path().join("full"), "24.10");
    let big = full_layers.last().unwrap().clone();
    registry.push_oci(&dir.path().join("min"), "latest", "triton/min:latest");
    registry.push_oci(&dir.path().join("full"), "24.10", "triton/full:24.10");
    let work = dir.path().join("work");
    let compose = |tag: &str, selection: &[&str]| {
        compose_with_store(&registry, dir.path(), "24.10", tag, selection)
    };
    compose("cold", &["--backend", "python"]);
    let before = registry.log().lines().count();
    let warm = compose("warm", &["--backend", "python", "--backend", "extra"]);
    assert!(warm.contains("through its access points"), "{warm}");
    // The large layer was fetched in part: partial-content answers only.
    let log = registry.log();
    let fetches: Vec<&str> = log
        .lines()
        .skip(before)
        .filter(|l| l.contains(&format!("GET /v2/triton/full/blobs/{big}")))
        .collect();
    assert!(!fetches.is_empty(), "{log}");
    assert!(
        fetches.iter().all(|l| l.contains("\" 206 ")),
        "{fetches:#?}"
    );
    // And the image is what a cold compose of the same selection gives.
    let pulled = dir.path().join("pulled");
    registry.pull_oci("triton/composed:warm", &pulled, "warm");
    let local = dir.path().join("local");
    let (ok, stderr) = Compose::new(
        &format!("oci:{}:latest", dir.path().join("min").display()),
        &format!("oci:{}:24.10", dir.path().join("full").display()),
    )
    .select(&["--backend", "python", "--backend", "extra"])
    .output(&format!("oci:{}:x", local.display()))
    .work_dir(&work)
    .args(&["-q", "--no-store"])
    .run();
    assert!(ok, "{stderr}");
    // The same image (the manifests differ only in naming registry sources).
    let (pulled, local) = (read_oci(&pulled, "warm"), read_oci(&local, "x"));
    assert_eq!(pulled.config, local.config);
    assert_eq!(pulled.layer_digests, local.layer_digests);
}

/// Composes `COMPONENTS` from the registry's triton/min and triton/full
/// into triton/composed:TAG with `extra` flags; returns the work directory.
fn compose_in_registry(
    registry: &Registry,
    dir: &std::path::Path,
    tag: &str,
    extra: &[&str],
) -> std::path::PathBuf {
    let mut args = vec!["-q"];
    args.extend(COMPONENTS);
    args.extend_from_slice(extra);
    registry_compose(registry, dir, ("24.10", tag), &args, &[]).0
}

/// `skopeo [flags] inspect [--raw] docker://HOST/triton/composedREFERENCE`.
fn skopeo_inspect(registry: &Registry, flags: &[&str], raw: bool, reference: &str) -> Vec<u8> {
    let out = std::process::Command::new("skopeo")
        .args(flags)
        .args(["inspect", "--tls-verify=false", "--authfile"])
        .arg(registry.authfile())
        .args(raw.then_some("--raw"))
        .arg(format!(
            "docker://{}/triton/composed{reference}",
            registry.host
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The artifacts the fallback tag lists for a subject (distribution 2.8
/// has no referrers API).
fn fallback_referrers(registry: &Registry, subject: &str) -> Vec<serde_json::Value> {
    let index = json(&skopeo_inspect(
        registry,
        &[],
        true,
        &format!(":sha256-{}", &subject[7..]),
    ));
    index["manifests"].as_array().unwrap().clone()
}

#[test]
fn the_sbom_is_a_referrer_that_skopeo_and_oras_find() {
    let Some(s) = setup() else { return };
    let Some(tools) = pytools() else { return };
    let host = &s.registry.host;
    let work = compose_in_registry(&s.registry, s.dir.path(), "sbom", &[]);
    let written = std::fs::read(work.join("sbom.spdx.json")).unwrap();
    assert_valid_spdx(&tools, &written);

    // skopeo: the image's manifest, then the fallback tag's index naming
    // the SBOM artifact, and the artifact.
    let subject = sha256(&skopeo_inspect(&s.registry, &[], true, ":sbom"));
    let entries = fallback_referrers(&s.registry, &subject);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["artifactType"], "application/spdx+json");
    let artifact_digest = entries[0]["digest"].as_str().unwrap().to_string();
    let artifact = json(&skopeo_inspect(
        &s.registry,
        &[],
        true,
        &format!("@{artifact_digest}"),
    ));
    assert_eq!(
        artifact["subject"]["digest"],
        subject.as_str(),
        "{artifact}"
    );
    assert_eq!(artifact["layers"][0]["mediaType"], "application/spdx+json");

    // The oras SDK pulls it by digest: the very bytes written.
    let pulled = s.dir.path().join("oras");
    let script = format!(
        "import oras.client\n\
c = oras.client.OrasClient(hostname='{host}', insecure=True, auth_backend='basic')\n\
c.login(username='{user}', password='{password}', hostname='{host}', tls_verify=False)\n\
print(c.pull(target='{host}/triton/composed@{artifact_digest}', outdir='{out}'))\n",
        user = support::registry::USER,
        password = PASSWORD,
        out = pulled.display()
    );
    let out = std::process::Command::new(tools.join("python"))
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oras: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(pulled.join("sbom.spdx.json")).unwrap(),
        written
    );

    // And `triton-compose sbom` reads it back.
    let reference = format!("docker://{host}/triton/composed:sbom");
    let authfile = s.registry.authfile();
    let (code, stdout, stderr) = run_cli_output(&[
        "sbom",
        "-q",
        &reference,
        "--authfile",
        authfile.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.as_bytes(), written.as_slice());
}

#[test]
fn every_platform_of_registry_sources_composes_into_a_pushed_index() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut images = Vec::new();
    for arch in ["amd64", "arm64"] {
        let mut min = min_image();
        min.architecture = arch.into();
        let mut full = full_image(&min);
        full.architecture = arch.into();
        images.push((min, full));
    }
    let (mins, fulls): (Vec<&TestImage>, Vec<&TestImage>) =
        images.iter().map(|(m, f)| (m, f)).unzip();
    TestImage::write_oci_multi(&dir.path().join("min"), "latest", &mins);
    TestImage::write_oci_multi(&dir.path().join("full"), "24.10", &fulls);
    registry.push_oci_all(&dir.path().join("min"), "latest", "triton/min:latest");
    registry.push_oci_all(&dir.path().join("full"), "24.10", "triton/full:24.10");
    compose_in_registry(&registry, dir.path(), "multi", &["--platform", "all"]);

    let index = json(&skopeo_inspect(&registry, &[], true, ":multi"));
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    let manifests = index["manifests"].as_array().unwrap();
    let archs: Vec<&str> = manifests
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    for (arch, entry) in ["amd64", "arm64"].iter().zip(manifests) {
        let flags = ["--override-arch", arch, "--override-os", "linux"];
        let inspected = json(&skopeo_inspect(&registry, &flags, false, ":multi"));
        assert_eq!(inspected["Architecture"], *arch);
        // Its SBOM hangs off its own manifest.
        let referrers = fallback_referrers(&registry, entry["digest"].as_str().unwrap());
        assert_eq!(referrers[0]["artifactType"], "application/spdx+json");
    }
    let layout = dir.path().join("arm");
    registry.pull_oci_platform("triton/composed:multi", &layout, "x", "arm64");
    assert_eq!(read_oci(&layout, "x").config["architecture"], "arm64");
}
