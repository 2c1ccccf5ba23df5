//! `--slim` on a GPU-shaped min built in code, with real ELF files compiled
//! here: a cuDNN-like dispatcher that loads its sub-libraries with no
//! DT_NEEDED on them, an NCCL-like library nothing loads, dpkg packages
//! nothing needs, unowned libraries, a file a later layer replaces, and a
//! layer that loses nothing.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

const CUDA: &str = "usr/local/cuda/lib64";
const SITE: &str = "usr/local/lib/python3.11/dist-packages";

/// A shared library without libc; what it needs is linked from `dir`.
fn cc(dir: &Path, name: &str, source: &str, extra: &[&str]) -> Vec<u8> {
    cc_library(dir, (name, name), source, extra, false)
}

struct Libs(BTreeMap<&'static str, Vec<u8>>);

fn compile() -> Libs {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut libs = BTreeMap::new();
    let mut add = |name: &'static str, source: &str, extra: &[&str]| {
        libs.insert(name, cc(d, name, source, extra));
    };
    add("libcublas.so.12", "int gemm(void){return 1;}", &[]);
    // The dispatcher: no DT_NEEDED on its parts (it dlopens them).
    add("libcudnn.so.9", "int cudnn(void){return 9;}", &[]);
    add(
        "libcudnn_ops.so.9",
        "int gemm(void); int ops(void){return gemm();}",
        &["-l:libcublas.so.12"],
    );
    add("libcudnn_cnn.so.9", "int cnn(void){return 2;}", &[]);
    add("libnccl.so.2", "int nccl(void){return 2;}", &[]);
    add("libcufft.so.11", "int fft(void){return 11;}", &[]);
    add("libkeepme.so", "int keepme(void){return 0;}", &[]);
    add("libold.so.1", "int old(void){return 0;}", &[]);
    add("libtool.so", "int tool(void){return 0;}", &[]);
    add(
        "libtriton_cudnnuser.so",
        "int cudnn(void); int go(void){return cudnn();}",
        &[
            "-l:libcudnn.so.9",
            "-Wl,-rpath,/usr/local/cuda/lib64",
            "-Wl,--enable-new-dtags",
        ],
    );
    // A program no package owns, and the unowned library it needs.
    let src = d.join("tool.c");
    fs::write(
        &src,
        "int tool(void); void _start(void){ tool(); for(;;); }",
    )
    .unwrap();
    let status = Command::new("cc")
        .args(["-nostdlib", "-fPIC", "-Wl,-e,_start", "-o"])
        .arg(d.join("tool"))
        .arg(&src)
        .arg(format!("-L{}", d.display()))
        .args(["-l:libtool.so", "-Wl,-rpath,/usr/local/lib"])
        .status()
        .unwrap();
    assert!(status.success());
    libs.insert("tool", fs::read(d.join("tool")).unwrap());
    Libs(libs)
}

fn stanza(name: &str, priority: &str, depends: &str) -> String {
    let depends = if depends.is_empty() {
        String::new()
    } else {
        format!("Depends: {depends}\n")
    };
    format!(
        "Package: {name}\nStatus: install ok installed\nPriority: {priority}\nArchitecture: amd64\n\
         Version: 1.0\n{depends}Description: {name}\n"
    )
}

/// The status stanzas of [`min`]'s packages.
fn min_stanzas() -> Vec<String> {
    vec![
        stanza("base-files", "required", ""),
        stanza("libcudnn9", "optional", "libcublas12"),
        stanza("libcublas12", "optional", ""),
        stanza("libnccl2", "optional", ""),
        stanza("unused-tool", "optional", "base-files"),
        stanza("libold1", "optional", ""),
    ]
}

/// min: a base, packages and CUDA-like libraries, NCCL replaced by a later
/// layer, and a last layer nothing touches.
fn min(libs: &Libs) -> TestImage {
    let mut min = min_image();
    let status = min_stanzas().join("\n");
    let lib = |name: &'static str| bin(&format!("{CUDA}/{name}"), &libs.0[name]);
    min.layers.push(layer_tar(&[
        dir("etc"),
        file("etc/debian_version", "12.0\n"),
        dir("usr/local"),
        dir("usr/local/cuda"),
        dir(CUDA),
        bin(&format!("{CUDA}/libcudnn.so.9.1.0"), &libs.0["libcudnn.so.9"]),
        symlink(&format!("{CUDA}/libcudnn.so.9"), "libcudnn.so.9.1.0"),
        lib("libcudnn_ops.so.9"),
        lib("libcudnn_cnn.so.9"),
        lib("libcublas.so.12"),
        lib("libnccl.so.2"),
        lib("libcufft.so.11"),
        symlink(&format!("{CUDA}/libcufft.so"), "libcufft.so.11"),
        dir("usr/local/lib"),
        bin("usr/local/lib/libkeepme.so", &libs.0["libkeepme.so"]),
        bin("usr/local/lib/libtool.so", &libs.0["libtool.so"]),
        dir("usr/local/bin"),
        bin("usr/local/bin/tool", &libs.0["tool"]),
        // Merged /usr: dpkg lists /lib/..., the file is under /usr/lib.
        dir("usr/lib"),
        dir("usr/lib/x86_64-linux-gnu"),
        symlink("lib", "usr/lib"),
        bin("usr/lib/x86_64-linux-gnu/libold.so.1", &libs.0["libold.so.1"]),
        exe("usr/bin/unused-tool", "#!/bin/sh\n"),
        dir("usr/share"),
        dir("usr/share/doc"),
        dir("usr/share/doc/unused-tool"),
        file("usr/share/doc/unused-tool/copyright", "unused\n"),
        dir("var"),
        dir("var/lib"),
        dir("var/lib/dpkg"),
        file("var/lib/dpkg/status", &status),
        dir("var/lib/dpkg/info"),
        file("var/lib/dpkg/info/base-files.list", "/.\n/etc\n/etc/debian_version\n"),
        file(
            "var/lib/dpkg/info/libcudnn9.list",
            &format!("/{CUDA}/libcudnn.so.9.1.0\n/{CUDA}/libcudnn.so.9\n"),
        ),
        file(
            "var/lib/dpkg/info/libcublas12.list",
            &format!("/{CUDA}/libcublas.so.12\n"),
        ),
        file(
            "var/lib/dpkg/info/libnccl2.list",
            &format!("/{CUDA}/libnccl.so.2\n"),
        ),
        file(
            "var/lib/dpkg/info/unused-tool.list",
            "/usr/bin/unused-tool\n/usr/share/doc/unused-tool\n/usr/share/doc/unused-tool/copyright\n",
        ),
        file("var/lib/dpkg/info/unused-tool.md5sums", "x  usr/bin/unused-tool\n"),
        file(
            "var/lib/dpkg/info/libold1.list",
            "/lib/x86_64-linux-gnu/libold.so.1\n",
        ),
        file("var/lib/dpkg/info/unused-tool.postinst", "#!/bin/sh\n"),
        // A pip distribution nothing imports (python is not selected).
        dir("usr/local/lib/python3.11"),
        dir(SITE),
        dir(&format!("{SITE}/unused")),
        file(&format!("{SITE}/unused/__init__.py"), "# unused\n"),
        dir(&format!("{SITE}/unused-1.0.dist-info")),
        file(&format!("{SITE}/unused-1.0.dist-info/METADATA"), "Name: unused\n"),
        file(
            &format!("{SITE}/unused-1.0.dist-info/RECORD"),
            "unused/__init__.py,,\nunused-1.0.dist-info/METADATA,,\nunused-1.0.dist-info/RECORD,,\n",
        ),
    ]));
    // A later layer replaces NCCL: both copies must go.
    min.layers.push(layer_tar(&[lib("libnccl.so.2")]));
    min.layers
        .push(layer_tar(&[file("etc/motd", "untouched\n")]));
    min
}

fn full(min: &TestImage, libs: &Libs) -> TestImage {
    let mut full = full_image(min);
    full.layers = vec![min.layers[0].clone()];
    full.layers.push(layer_tar(&[
        dir("opt/tritonserver"),
        dir("opt/tritonserver/bin"),
        exe("opt/tritonserver/bin/tritonserver", "#!/bin/sh\n"),
        dir("opt/tritonserver/lib"),
        file("opt/tritonserver/lib/libtritonserver.so", "core\n"),
        dir("opt/tritonserver/backends"),
        dir("opt/tritonserver/backends/cudnnuser"),
        bin(
            "opt/tritonserver/backends/cudnnuser/libtriton_cudnnuser.so",
            &libs.0["libtriton_cudnnuser.so"],
        ),
        dir("opt/tritonserver/backends/plain"),
        file(
            "opt/tritonserver/backends/plain/libtriton_plain.so",
            "plain\n",
        ),
    ]));
    full
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let libs = compile();
        let min = min(&libs);
        min.write_oci(&dir.path().join("min"), "latest");
        full(&min, &libs).write_oci(&dir.path().join("full"), "24.10");
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Composes cudnnuser into oci:NAME with `extra`; (success, stdout, stderr).
    fn compose(&self, name: &str, extra: &[&str]) -> (bool, String, String) {
        let mut compose = Compose::new(
            &format!("oci:{}:latest", self.path("min").display()),
            &format!("oci:{}:24.10", self.path("full").display()),
        )
        .select(&["--backend", "cudnnuser"])
        .work_dir(&self.path(&format!("work-{name}")))
        .arg("--json");
        if !extra.contains(&"--dry-run") {
            compose = compose.output(&format!("oci:{}:latest", self.path(name).display()));
        }
        let (code, stdout, stderr) = compose.args(extra).output_of();
        (code == 0, stdout, stderr)
    }
}

/// The packages of the status file the compose wrote (beside its
/// Dockerfile.compose), checked to be the image's.
fn status_packages(image: &ReadImage, work: &Path) -> Vec<String> {
    let written = fs::read(work.join("triton-compose-slim.status")).unwrap();
    assert_eq!(
        image.tree["var/lib/dpkg/status"].content.as_deref(),
        Some(sha256(&written).as_str())
    );
    String::from_utf8_lossy(&written)
        .lines()
        .filter_map(|l| l.strip_prefix("Package: ").map(str::to_string))
        .collect()
}

#[test]
fn slim_removes_what_nothing_loads_and_keeps_families_and_packages_whole() {
    let setup = Setup::new();
    let (ok, stdout, stderr) = setup.compose(
        "slim",
        &[
            "--slim",
            "--keep",
            "/usr/local/lib/libkeepme.so",
            "--no-store",
        ],
    );
    assert!(ok, "{stderr}");
    let image = read_oci(&setup.path("slim"), "latest");
    let gone = [
        format!("{CUDA}/libnccl.so.2"),
        format!("{CUDA}/libcufft.so.11"),
        format!("{CUDA}/libcufft.so"),
        "usr/bin/unused-tool".to_string(),
        "usr/lib/x86_64-linux-gnu/libold.so.1".to_string(),
        "usr/share/doc/unused-tool/copyright".to_string(),
        "var/lib/dpkg/info/libnccl2.list".to_string(),
        "var/lib/dpkg/info/unused-tool.md5sums".to_string(),
        "var/lib/dpkg/info/unused-tool.postinst".to_string(),
        format!("{SITE}/unused/__init__.py"),
        format!("{SITE}/unused-1.0.dist-info/RECORD"),
    ];
    for path in &gone {
        assert!(
            !image.tree.contains_key(path.as_str()),
            "{path} stayed\n{stderr}"
        );
    }
    let kept = [
        format!("{CUDA}/libcudnn.so.9.1.0"),
        format!("{CUDA}/libcudnn.so.9"),
        // The dispatcher's family, and what a member needs.
        format!("{CUDA}/libcudnn_ops.so.9"),
        format!("{CUDA}/libcudnn_cnn.so.9"),
        format!("{CUDA}/libcublas.so.12"),
        "usr/local/lib/libkeepme.so".to_string(),
        "usr/local/bin/tool".to_string(),
        "usr/local/lib/libtool.so".to_string(),
        "etc/debian_version".to_string(),
        "etc/motd".to_string(),
        "usr/share/doc/unused-tool".to_string(),
    ];
    for path in &kept {
        assert!(
            image.tree.contains_key(path.as_str()),
            "{path} went\n{stderr}"
        );
    }
    assert_eq!(
        status_packages(&image, &setup.path("work-slim")),
        ["base-files", "libcudnn9", "libcublas12"]
    );
    // The summary says what went, and why.
    let (named, removed) = removals(&stdout);
    assert!(named("package", "libnccl2 "), "{removed:?}");
    assert!(named("package", "unused-tool "), "{removed:?}");
    assert!(named("python-dist", "unused-1.0"), "{removed:?}");
    assert!(
        named("library", &format!("/{CUDA}/libcufft.so.11")),
        "{removed:?}"
    );
    assert!(
        named("dangling-link", &format!("/{CUDA}/libcufft.so")),
        "{removed:?}"
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(summary["slim"]["removed_bytes"].as_u64().unwrap() > 0);
    // min's layers that lose nothing stay as they were; the others are cut.
    let digests = oci_layer_digests(&setup.path("slim"), "latest");
    let min_digests = oci_layer_digests(&setup.path("min"), "latest");
    assert_eq!(min_digests.len(), 5);
    assert_eq!(digests[0], min_digests[0], "min's base loses nothing");
    assert_ne!(digests[2], min_digests[2]);
    assert_ne!(
        digests[3], min_digests[3],
        "the replacing layer loses NCCL too"
    );
    assert_eq!(digests[4], min_digests[4]);
    // verify judges the result whole.
    let (code, _, verify) = run_cli_output(&[
        "verify",
        &format!("oci:{}:latest", setup.path("slim").display()),
    ]);
    assert_eq!(code, 0, "{verify}");
}

#[test]
fn slim_output_is_reproducible_through_the_store_and_without_it() {
    let setup = Setup::new();
    let store = setup.path("store");
    let store = store.to_str().unwrap();
    let (ok, first, stderr) = setup.compose("a", &["--slim", "--no-store"]);
    assert!(ok, "{stderr}");
    let (ok, second, stderr) = setup.compose("b", &["--slim", "--store", store]);
    assert!(ok, "{stderr}");
    let (ok, third, stderr) = setup.compose("c", &["--slim", "--store", store]);
    assert!(ok, "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("slimmed:") && l.contains("built before: from the store")),
        "{stderr}"
    );
    let digest = |out: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        v["written"]
            .as_str()
            .unwrap()
            .rsplit("manifest ")
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(digest(&first), digest(&second));
    assert_eq!(digest(&second), digest(&third));
    // Without --slim, min's layers are min's, byte for byte.
    let (ok, _, stderr) = setup.compose("plain", &["--no-store"]);
    assert!(ok, "{stderr}");
    let digests = oci_layer_digests(&setup.path("plain"), "latest");
    assert_eq!(
        digests[..5],
        oci_layer_digests(&setup.path("min"), "latest")[..]
    );
}

#[test]
fn slim_dry_run_says_what_goes_and_the_dockerfile_mirrors_it() {
    let setup = Setup::new();
    let (ok, stdout, stderr) = setup.compose("dry", &["--slim", "--dry-run"]);
    assert!(ok, "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["dry_run"], true);
    let removed = summary["slim"]["removed"].as_array().unwrap();
    assert!(removed
        .iter()
        .any(|r| r["name"].as_str().unwrap().starts_with("libnccl2")));
    let work = setup.path("work-dry");
    let dockerfile = fs::read_to_string(work.join("Dockerfile.compose")).unwrap();
    assert!(dockerfile.contains("AS slimmed"), "{dockerfile}");
    assert!(
        dockerfile.contains("COPY --from=slimmed / /"),
        "{dockerfile}"
    );
    let list = fs::read(work.join("triton-compose-slim.remove")).unwrap();
    let paths: Vec<&[u8]> = list.split(|&b| b == 0).filter(|p| !p.is_empty()).collect();
    assert!(paths.contains(&format!("/{CUDA}/libnccl.so.2").as_bytes()));
    assert!(!paths.contains(&format!("/{CUDA}/libcudnn_ops.so.9").as_bytes()));
    // --slim-drop removes an unowned file the analysis would keep.
    let (ok, stdout, stderr) = setup.compose(
        "drop",
        &[
            "--slim",
            "--slim-drop",
            "/usr/local/lib/libkeep*",
            "--dry-run",
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("\"dropped\""), "{stdout}");
    assert!(stdout.contains("/usr/local/lib/libkeepme.so"), "{stdout}");
    // Dropping what something loads is refused, naming what loads it.
    let ops = format!("/{CUDA}/libcudnn_ops.so.9");
    let (ok, _, stderr) = setup.compose("bad", &["--slim", "--slim-drop", &ops, "--dry-run"]);
    assert!(!ok);
    assert!(
        stderr.contains("loads at run time") && stderr.contains("libcudnn.so.9"),
        "{stderr}"
    );
    // A file name glob keeps (or drops) wherever the file is; one that
    // names nothing is said so.
    let (ok, stdout, stderr) = setup.compose(
        "names",
        &[
            "--slim",
            "--keep",
            "libcufft.so.*",
            "--keep",
            "libnothing*",
            "--dry-run",
        ],
    );
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("libcufft.so.11"), "{stdout}");
    assert!(
        stderr.contains("--keep \"libnothing*\" names no package or file of min"),
        "{stderr}"
    );
    // --keep PACKAGE keeps a package (and its files) nothing loads.
    let (ok, stdout, stderr) =
        setup.compose("kept", &["--slim", "--keep", "libnccl2", "--dry-run"]);
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("libnccl2"), "{stdout}");
    // Its options need --slim.
    let (ok, _, stderr) = setup.compose("bad", &["--keep", "x", "--dry-run"]);
    assert!(!ok);
    assert!(
        stderr.contains("--keep only means something with --slim"),
        "{stderr}"
    );
    let (ok, _, stderr) = setup.compose("bad", &["--slim", "--slim-drop", "[", "--dry-run"]);
    assert!(!ok);
    assert!(stderr.contains("is not a glob"), "{stderr}");
}

/// `serve FLAGS` of min and full until `skopeo copy` of `tag` from it is
/// done: the image pulled.
fn serve_pull(setup: &Setup, min: &str, full: &str, flags: &[&str], tag: &str) -> ReadImage {
    let port = free_port();
    let state = setup.path(&format!("serve-{}", flags.join("")));
    fs::create_dir_all(&state).unwrap();
    let log = state.join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_triton-compose"))
        .args([
            "serve",
            "--image",
            &format!("min,{min}"),
            "--image",
            &format!("full,{full}"),
        ])
        .args(flags)
        .args([
            "--exit-after-idle",
            "120",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--state-dir")
        .arg(state.join("state"))
        .arg("--store")
        .arg(state.join("store"))
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("INFO ready")
    {
        assert!(
            start.elapsed().as_secs() < 60,
            "{}",
            fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let pulled = state.join("pulled");
    let out = Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://127.0.0.1:{port}/tritonserver:{tag}"))
        .arg(format!("oci:{}:x", pulled.display()))
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(&log).unwrap()
    );
    read_oci(&pulled, "x")
}

#[test]
fn catalog_sizes_a_slim_selection_and_serve_slims_every_tag() {
    let setup = Setup::new();
    let min = format!("oci:{}:latest", setup.path("min").display());
    let full = format!("oci:{}:24.10", setup.path("full").display());
    let catalog = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["catalog", &full, "--min", &min, "--json", "--no-store"];
        args.extend(["--backend", "cudnnuser"]);
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = run_cli_output(&args);
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str(&stdout).unwrap()
    };
    let plain = catalog(&[]);
    let slim = catalog(&["--slim"]);
    assert!(plain["selection"].get("slim_removed").is_none());
    assert!(slim["selection"]["slim_removed"].as_u64().unwrap() > 0);
    assert!(
        slim["selection"]["compressed_size"].as_u64()
            < plain["selection"]["compressed_size"].as_u64(),
        "{slim}\n{plain}"
    );
    let (code, _, stderr) = run_cli_output(&["catalog", &full, "--slim", "--no-store"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("--min REF and a selection"), "{stderr}");

    // serve --slim: a real client pulls a slimmed tag.
    let image = serve_pull(&setup, &min, &full, &["--slim"], "cudnnuser");
    assert!(!image.tree.contains_key(&*format!("{CUDA}/libnccl.so.2")));
    assert!(image
        .tree
        .contains_key(&*format!("{CUDA}/libcudnn_ops.so.9")));
}

#[test]
fn every_variant_of_a_slim_run_is_slimmed() {
    let setup = Setup::new();
    let variants = setup.path("variants.toml");
    let out = |name: &str| format!("oci:{}:latest", setup.path(name).display());
    fs::write(
        &variants,
        format!(
            "[[variant]]\nname = \"user\"\noutput = \"{}\"\nbackends = [\"cudnnuser\"]\n\n\
             [[variant]]\nname = \"plain\"\noutput = \"{}\"\nbackends = [\"plain\"]\n",
            out("v-user"),
            out("v-plain")
        ),
    )
    .unwrap();
    let min = format!("min,oci:{}:latest", setup.path("min").display());
    let full = format!("full,oci:{}:24.10", setup.path("full").display());
    let work = setup.path("work-variants");
    let (code, _, stderr) = run_cli_output(&[
        "--enable-gpu=false",
        "--image",
        &min,
        "--image",
        &full,
        "--variants",
        variants.to_str().unwrap(),
        "--slim",
        "--work-dir",
        work.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let user = read_oci(&setup.path("v-user"), "latest");
    let plain = read_oci(&setup.path("v-plain"), "latest");
    let ops = format!("{CUDA}/libcudnn_ops.so.9");
    // Each variant keeps what it loads: only cudnnuser loads cuDNN.
    assert!(user.tree.contains_key(ops.as_str()));
    assert!(!plain.tree.contains_key(ops.as_str()));
    for image in [&user, &plain] {
        assert!(!image.tree.contains_key(&*format!("{CUDA}/libnccl.so.2")));
    }
}

/// What the summary (`--json` on stdout) says `--slim` removed: a test of
/// kind and name (its start), and the list.
fn removals(stdout: &str) -> (impl Fn(&str, &str) -> bool, Vec<serde_json::Value>) {
    let summary: serde_json::Value = serde_json::from_str(stdout).unwrap();
    let removed = summary["slim"]["removed"].as_array().unwrap().clone();
    let list = removed.clone();
    let named = move |kind: &str, name: &str| {
        list.iter()
            .any(|r| r["kind"] == kind && r["name"].as_str().unwrap().starts_with(name))
    };
    (named, removed)
}

/// min with a shell, dpkg, apt and coreutils (priority required or
/// important, as Debian's are), and a program of a package that stays.
fn distroless_min(libs: &Libs) -> TestImage {
    let mut min = min(libs);
    let essential = |name: &str, priority: &str| {
        stanza(name, priority, "").replace("Priority:", "Essential: yes\nPriority:")
    };
    let mut status = min_stanzas();
    status.extend([
        essential("bash", "required"),
        essential("dash", "required"),
        essential("dpkg", "required"),
        essential("coreutils", "required"),
        stanza("apt", "important", ""),
    ]);
    let status = status.join("\n");
    min.layers.push(layer_tar(&[
        file("var/lib/dpkg/status", &status),
        exe("usr/bin/bash", "#!bash\n"),
        exe("usr/bin/dash", "#!dash\n"),
        symlink("bin", "usr/bin"),
        symlink("usr/bin/sh", "dash"),
        exe("usr/bin/dpkg", "#!dpkg\n"),
        exe("usr/bin/dpkg-query", "#!dpkg-query\n"),
        exe("usr/bin/env", "#!env\n"),
        exe("usr/bin/ls", "#!ls\n"),
        exe("usr/bin/apt", "#!apt\n"),
        dir("usr/lib/apt"),
        dir("usr/lib/apt/methods"),
        exe("usr/lib/apt/methods/http", "#!http\n"),
        exe("usr/bin/cublas-tool", "#!cublas\n"),
        file(
            "var/lib/dpkg/info/bash.list",
            "/.\n/usr\n/usr/bin\n/usr/bin/bash\n",
        ),
        file("var/lib/dpkg/info/dash.list", "/usr/bin/dash\n/bin/sh\n"),
        file(
            "var/lib/dpkg/info/dpkg.list",
            "/usr/bin/dpkg\n/usr/bin/dpkg-query\n",
        ),
        file(
            "var/lib/dpkg/info/coreutils.list",
            "/usr/bin/env\n/usr/bin/ls\n",
        ),
        file(
            "var/lib/dpkg/info/apt.list",
            "/usr/bin/apt\n/usr/lib/apt/methods/http\n",
        ),
        file(
            "var/lib/dpkg/info/libcublas12.list",
            &format!("/.\n/{CUDA}/libcublas.so.12\n/usr/bin/cublas-tool\n"),
        ),
        file(
            "var/lib/dpkg/info/libcublas12.md5sums",
            &format!("aa  {CUDA}/libcublas.so.12\nbb  usr/bin/cublas-tool\n"),
        ),
    ]));
    min
}

#[test]
fn distroless_removes_the_shell_dpkg_apt_and_every_program_nothing_runs_and_keeps_dpkg_truthful() {
    let setup = Setup::new();
    let libs = compile();
    let min = distroless_min(&libs);
    min.write_oci(&setup.path("dmin"), "latest");
    let compose = |name: &str, extra: &[&str]| {
        Compose::new(
            &format!("oci:{}:latest", setup.path("dmin").display()),
            &format!("oci:{}:24.10", setup.path("full").display()),
        )
        .select(&["--backend", "cudnnuser"])
        .work_dir(&setup.path(&format!("work-{name}")))
        .output(&format!("oci:{}:latest", setup.path(name).display()))
        .args(&["--json", "--no-store", "--slim"])
        .args(extra)
        .output_of()
    };
    // Without --slim it is refused, saying what to add.
    let (code, _, stderr) = Compose::new(
        &format!("oci:{}:latest", setup.path("dmin").display()),
        &format!("oci:{}:24.10", setup.path("full").display()),
    )
    .select(&["--backend", "cudnnuser"])
    .work_dir(&setup.path("work-refused"))
    .output(&format!("oci:{}:latest", setup.path("refused").display()))
    .args(&["--distroless"])
    .output_of();
    assert_ne!(code, 0);
    assert!(stderr.contains("--slim --distroless"), "{stderr}");

    let (code, _, stderr) = compose("plain", &[]);
    assert_eq!(code, 0, "{stderr}");
    let plain = read_oci(&setup.path("plain"), "latest");
    let (code, stdout, stderr) = compose("distroless", &["--distroless"]);
    assert_eq!(code, 0, "{stderr}");
    let image = read_oci(&setup.path("distroless"), "latest");
    let gone = [
        "usr/bin/bash",
        "usr/bin/sh",
        "usr/bin/dash",
        "usr/bin/dpkg",
        "usr/bin/dpkg-query",
        "usr/bin/env",
        "usr/bin/ls",
        "usr/bin/apt",
        "usr/lib/apt/methods/http",
        "usr/bin/cublas-tool",
        "usr/local/bin/tool",
        "var/lib/dpkg/info/apt.list",
    ];
    for path in gone {
        // --slim alone keeps them all (they are required, or unowned programs).
        assert!(
            plain.tree.contains_key(path),
            "{path} went without --distroless"
        );
        assert!(!image.tree.contains_key(path), "{path} stayed\n{stderr}");
    }
    for path in [
        format!("{CUDA}/libcublas.so.12"),
        format!("{CUDA}/libcudnn.so.9.1.0"),
        "etc/debian_version".to_string(),
    ] {
        assert!(image.tree.contains_key(path.as_str()), "{path} went");
    }
    // dpkg's database says exactly what is there: removed packages left
    // the status, and a package that stays lists only the files it has.
    let work = setup.path("work-distroless");
    assert_eq!(
        status_packages(&image, &work),
        ["base-files", "libcudnn9", "libcublas12"]
    );
    let has = |path: &str, text: &str| {
        assert_eq!(
            image.tree[path].content.as_deref(),
            Some(sha256(text.as_bytes()).as_str()),
            "{path}"
        );
    };
    let list = format!("/.\n/{CUDA}/libcublas.so.12\n");
    has("var/lib/dpkg/info/libcublas12.list", &list);
    has(
        "var/lib/dpkg/info/libcublas12.md5sums",
        &format!("aa  {CUDA}/libcublas.so.12\n"),
    );
    for line in list.lines().skip(1) {
        let path = line.trim_start_matches('/');
        assert!(image.tree.contains_key(path), "{path} is listed, not there");
    }
    // The entrypoint is the server itself; the summary says what went.
    assert_eq!(
        image.config["config"]["Entrypoint"],
        serde_json::json!(["/opt/tritonserver/bin/tritonserver"])
    );
    let (named, removed) = removals(&stdout);
    assert!(named("program", "programs of libcublas12"), "{removed:?}");
    assert!(named("program", "/usr/local/bin/tool"), "{removed:?}");
    assert!(named("package", "bash "), "{removed:?}");
    assert!(named("package", "apt "), "{removed:?}");
    // Dockerfile.compose: every RUN in the slimmed stage (from min, which
    // has a shell), the dpkg lists copied in, the server as entrypoint.
    let dockerfile = fs::read_to_string(work.join("Dockerfile.compose")).unwrap();
    let final_stage = dockerfile.rsplit("FROM scratch").next().unwrap();
    assert!(!final_stage.contains("\nRUN "), "{dockerfile}");
    assert!(
        dockerfile.contains("/var/lib/dpkg/info/libcublas12.list\n"),
        "{dockerfile}"
    );
    assert!(
        final_stage.contains("ENTRYPOINT [\"/opt/tritonserver/bin/tritonserver\"]"),
        "{dockerfile}"
    );
    let (code, _, verify) = run_cli_output(&[
        "verify",
        &format!("oci:{}:latest", setup.path("distroless").display()),
    ]);
    assert_eq!(code, 0, "{verify}");
    // serve --slim --distroless serves the same image.
    let served = serve_pull(
        &setup,
        &format!("oci:{}:latest", setup.path("dmin").display()),
        &format!("oci:{}:24.10", setup.path("full").display()),
        &["--slim", "--distroless"],
        "cudnnuser",
    );
    assert_eq!(
        served.tree.keys().collect::<Vec<_>>(),
        image.tree.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        served.config["config"]["Entrypoint"],
        image.config["config"]["Entrypoint"]
    );
}
