//! Runtime dependencies on images built in code, with real ELF files
//! compiled here by the system C compiler: DT_NEEDED chains through
//! versioned soname symlinks, $ORIGIN runpaths, a library nobody has, dpkg
//! packages with Depends, a pip distribution, and `verify` on the results.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;
use triton_compose::read_elf;

const LIBDIR: &str = "usr/lib/x86_64-linux-gnu";

/// Compiles a shared library without libc (so no image needs one).
fn cc(dir: &Path, name: &str, soname: &str, source: &str, extra: &[&str]) -> Vec<u8> {
    cc_library(dir, (name, soname), source, extra, false)
}

struct Libs {
    leaf: Vec<u8>,
    mid: Vec<u8>,
    helper: Vec<u8>,
    elfy: Vec<u8>,
    broken: Vec<u8>,
}

fn compile() -> Libs {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let leaf = cc(
        d,
        "libleaf.so.1",
        "libleaf.so.1",
        "int leaf(void){return 1;}",
        &[],
    );
    let mid = cc(
        d,
        "libmid.so.2",
        "libmid.so.2",
        "int leaf(void); int mid(void){return leaf()+1;}",
        &["-l:libleaf.so.1"],
    );
    let helper = cc(
        d,
        "libhelper.so",
        "libhelper.so",
        "int helper(void){return 3;}",
        &[],
    );
    let elfy = cc(
        d,
        "libtriton_elfy.so",
        "libtriton_elfy.so",
        "int mid(void); int helper(void); int go(void){return mid()+helper();}",
        &[
            "-l:libmid.so.2",
            "-l:libhelper.so",
            "-Wl,-rpath,$ORIGIN",
            "-Wl,--enable-new-dtags",
        ],
    );
    let _nowhere = cc(
        d,
        "libnowhere.so.7",
        "libnowhere.so.7",
        "int nowhere(void){return 0;}",
        &[],
    );
    let broken = cc(
        d,
        "libtriton_broken.so",
        "libtriton_broken.so",
        "int nowhere(void); int go(void){return nowhere();}",
        &[
            "-l:libnowhere.so.7",
            "-Wl,-rpath,/opt/old/lib",
            "-Wl,--disable-new-dtags",
        ],
    );
    Libs {
        leaf,
        mid,
        helper,
        elfy,
        broken,
    }
}

const MIN_STATUS: &str =
    "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36\n";

/// What dpkg lists for the packages the closure carries: libmid2 names a
/// file through the merged-/usr link `/lib` (as .debs do), and owns an
/// empty directory.
const LIBMID2_LIST: &str = "/.\n/usr\n/etc\n/etc/mid.d\n/usr/lib/x86_64-linux-gnu/libmid.so.2.0.0\n/lib/x86_64-linux-gnu/libmid.so.2\n/lib/x86_64-linux-gnu/mid\n/lib/x86_64-linux-gnu/mid/tables\n/usr/share/doc/libmid2\n/usr/share/doc/libmid2/copyright\n";
const LIBLEAF1_LIST: &str =
    "/usr/lib/x86_64-linux-gnu/libleaf.so.1.0\n/usr/lib/x86_64-linux-gnu/libleaf.so.1\n";

/// The paths of `lists` that `dpkg --verify` would call missing in `tree`:
/// those that do not exist, their parents resolved through the tree's
/// symlinks (the last component is not followed, as dpkg does not).
fn dpkg_missing(
    tree: &std::collections::BTreeMap<String, FileInfo>,
    lists: &[&str],
) -> Vec<String> {
    let resolve_dir = |path: &str| -> Option<String> {
        let mut pending: Vec<String> = path.split('/').rev().map(str::to_string).collect();
        let mut current = String::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if part.is_empty() || part == "." {
                continue;
            }
            let next = if current.is_empty() {
                part
            } else {
                format!("{current}/{part}")
            };
            let info = tree.get(&next)?;
            if info.kind == 'l' {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let target = info.link.clone().unwrap();
                if target.starts_with('/') {
                    current.clear();
                }
                pending.extend(target.split('/').rev().map(str::to_string));
            } else {
                current = next;
            }
        }
        Some(current)
    };
    let mut missing = Vec::new();
    for path in lists.iter().flat_map(|l| l.lines()) {
        let path = path.trim_start_matches('/');
        if path.is_empty() || path == "." {
            continue;
        }
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let exists = resolve_dir(parent).is_some_and(|dir| {
            let real = if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            };
            tree.contains_key(&real)
        });
        if !exists {
            missing.push(format!("/{path}"));
        }
    }
    missing
}

/// min: Debian-like, /lib a symlink into /usr, dpkg knowing libc6 only.
fn min() -> TestImage {
    let mut min = min_image();
    min.layers.push(layer_tar(&[
        dir("usr/lib"),
        dir(LIBDIR),
        symlink("lib", "usr/lib"),
        dir("var"),
        dir("var/lib"),
        dir("var/lib/dpkg"),
        file("var/lib/dpkg/status", MIN_STATUS),
        dir("var/lib/dpkg/info"),
        file("var/lib/dpkg/info/libc6:amd64.list", "/.\n/usr\n"),
    ]));
    min
}

/// full's own layers: Triton with two ELF backends and a python one, and
/// what apt and pip put beside it.
fn full_layers(libs: &Libs) -> Vec<Vec<u8>> {
    let status = format!(
        "{MIN_STATUS}\nPackage: libmid2\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.0\n\
Depends: libleaf1 (>= 1.0), libc6\nDescription: middle\n multi-line\n\n\
Package: libleaf1\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0\n\n\
Package: bigpkg\nStatus: install ok installed\nArchitecture: all\nVersion: 9\n"
    );
    let site = "usr/local/lib/python3.11/dist-packages";
    let system = layer_tar(&[
        // Every parent, as a layer diff has them.
        dir("usr"),
        dir("usr/lib"),
        dir(LIBDIR),
        bin(&format!("{LIBDIR}/libleaf.so.1.0"), &libs.leaf),
        symlink(&format!("{LIBDIR}/libleaf.so.1"), "libleaf.so.1.0"),
        bin(&format!("{LIBDIR}/libmid.so.2.0.0"), &libs.mid),
        symlink(&format!("{LIBDIR}/libmid.so.2"), "libmid.so.2.0.0"),
        dir("usr/share"),
        dir("usr/share/doc"),
        dir("usr/share/doc/libmid2"),
        file("usr/share/doc/libmid2/copyright", "libmid license\n"),
        dir("usr/share/big"),
        file("usr/share/big/data", "big\n"),
        dir("var"),
        dir("var/lib"),
        dir("var/lib/dpkg"),
        file("var/lib/dpkg/status", &status),
        dir("var/lib/dpkg/info"),
        file("var/lib/dpkg/info/libc6:amd64.list", "/.\n/usr\n"),
        dir("etc"),
        dir("etc/mid.d"),
        dir(&format!("{LIBDIR}/mid")),
        file(&format!("{LIBDIR}/mid/tables"), "data only libmid2 names\n"),
        file("var/lib/dpkg/info/libmid2:amd64.list", LIBMID2_LIST),
        file("var/lib/dpkg/info/libmid2:amd64.md5sums", "abc  usr/lib/x86_64-linux-gnu/libmid.so.2.0.0\n"),
        file("var/lib/dpkg/info/libleaf1:amd64.list", LIBLEAF1_LIST),
        file("var/lib/dpkg/info/bigpkg.list", "/usr/share/big\n/usr/share/big/data\n"),
        dir("usr/local"),
        dir("usr/local/lib"),
        dir("usr/local/lib/python3.11"),
        dir(site),
        dir(&format!("{site}/numpy")),
        file(&format!("{site}/numpy/__init__.py"), "# numpy\n"),
        file(&format!("{site}/numpy/core.py"), "# core\n"),
        dir(&format!("{site}/numpy-1.26.4.dist-info")),
        file(&format!("{site}/numpy-1.26.4.dist-info/METADATA"), "Name: numpy\n"),
        file(
            &format!("{site}/numpy-1.26.4.dist-info/RECORD"),
            "numpy/__init__.py,sha256=x,8\nnumpy/core.py,,\nnumpy-1.26.4.dist-info/METADATA,,\nnumpy-1.26.4.dist-info/RECORD,,\n",
        ),
        file(&format!("{site}/unrelated.py"), "# not numpy\n"),
    ]);
    let triton = layer_tar(&[
        dir("opt/tritonserver"),
        dir("opt/tritonserver/bin"),
        exe("opt/tritonserver/bin/tritonserver", "#!/bin/sh\n"),
        dir("opt/tritonserver/lib"),
        file("opt/tritonserver/lib/libtritonserver.so", "core\n"),
        dir("opt/tritonserver/backends"),
        dir("opt/tritonserver/backends/elfy"),
        bin(
            "opt/tritonserver/backends/elfy/libtriton_elfy.so",
            &libs.elfy,
        ),
        bin("opt/tritonserver/backends/elfy/libhelper.so", &libs.helper),
        dir("opt/tritonserver/backends/broken"),
        bin(
            "opt/tritonserver/backends/broken/libtriton_broken.so",
            &libs.broken,
        ),
        dir("opt/tritonserver/backends/python"),
        file(
            "opt/tritonserver/backends/python/libtriton_python.so",
            "not elf\n",
        ),
    ]);
    vec![system, triton]
}

fn full(min: &TestImage, libs: &Libs, base_of_full: bool) -> TestImage {
    let mut full = full_image(min);
    let mut layers = if base_of_full {
        min.layers.clone()
    } else {
        vec![min.layers[0].clone()]
    };
    layers.extend(full_layers(libs));
    full.layers = layers;
    full
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(base_of_full: bool) -> Setup {
        Setup::with_layer(base_of_full, None)
    }

    /// With one more layer on top of full.
    fn with_layer(base_of_full: bool, extra: Option<Vec<u8>>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let libs = compile();
        let min = min();
        min.write_oci(&dir.path().join("min"), "latest");
        let mut full = full(&min, &libs, base_of_full);
        full.layers.extend(extra);
        full.write_oci(&dir.path().join("full"), "24.10");
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs a compose into oci:NAME; returns its stderr.
    fn compose(&self, name: &str, extra: &[&str]) -> String {
        let min = format!("min,oci:{}:latest", self.path("min").display());
        let full = format!("full,oci:{}:24.10", self.path("full").display());
        let output = format!("oci:{}:latest", self.path(name).display());
        let work = self.path(&format!("work-{name}"));
        let mut args = vec![
            "--enable-gpu=false",
            "--image",
            &min,
            "--image",
            &full,
            "--work-dir",
            work.to_str().unwrap(),
        ];
        if !extra.contains(&"--dry-run") {
            args.extend(["--output", &output]);
        }
        args.extend_from_slice(extra);
        let (ok, stderr) = run_cli(&args);
        assert!(ok, "compose failed:\n{stderr}");
        stderr
    }

    fn verify(&self, name: &str) -> (i32, serde_json::Value) {
        let image = format!("oci:{}:latest", self.path(name).display());
        let (code, stdout, stderr) = run_cli_output(&["verify", "-q", "--json", &image]);
        let report = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("verify printed no JSON ({e}):\n{stdout}\n{stderr}"));
        (code, report)
    }
}

#[test]
fn reads_needed_sonames_and_search_paths_of_compiled_libraries() {
    let libs = compile();
    let elfy = read_elf(&libs.elfy[..], libs.elfy.len() as u64).unwrap();
    assert_eq!(elfy.needed, ["libmid.so.2", "libhelper.so"]);
    assert_eq!(elfy.soname.as_deref(), Some("libtriton_elfy.so"));
    assert_eq!(elfy.runpath, ["$ORIGIN"]);
    assert!(elfy.rpath.is_empty());
    assert!(elfy.is_64);
    let broken = read_elf(&libs.broken[..], libs.broken.len() as u64).unwrap();
    assert_eq!(broken.rpath, ["/opt/old/lib"]);
    assert!(broken.runpath.is_empty());
    let leaf = read_elf(&libs.leaf[..], libs.leaf.len() as u64).unwrap();
    assert!(leaf.needed.is_empty());
    assert!(read_elf(&b"#!/bin/sh\n"[..], 10).is_none());
    // A truncated library is refused, not misread.
    assert!(read_elf(&libs.mid[..200], 200).is_none());
}

fn assert_has(tree: &std::collections::BTreeMap<String, FileInfo>, paths: &[&str]) {
    for path in paths {
        assert!(
            tree.contains_key(*path),
            "{path} is missing from the composed image"
        );
    }
}

fn check_deps_output(setup: &Setup, name: &str) {
    let image = read_oci(&setup.path(name), "latest");
    let tree = &image.tree;
    assert_has(
        tree,
        &[
            "opt/tritonserver/backends/elfy/libhelper.so",
            &format!("{LIBDIR}/libmid.so.2.0.0"),
            &format!("{LIBDIR}/libmid.so.2"),
            &format!("{LIBDIR}/libleaf.so.1.0"),
            &format!("{LIBDIR}/libleaf.so.1"),
            // All of libmid2, its info files, and its Depends.
            "usr/share/doc/libmid2/copyright",
            "var/lib/dpkg/info/libmid2:amd64.list",
            "var/lib/dpkg/info/libmid2:amd64.md5sums",
            "var/lib/dpkg/info/libleaf1:amd64.list",
            // The pip distribution that provides numpy, whole.
            "usr/local/lib/python3.11/dist-packages/numpy/__init__.py",
            "usr/local/lib/python3.11/dist-packages/numpy/core.py",
            "usr/local/lib/python3.11/dist-packages/numpy-1.26.4.dist-info/RECORD",
        ],
    );
    assert_eq!(
        tree[&format!("{LIBDIR}/libmid.so.2")].link.as_deref(),
        Some("libmid.so.2.0.0")
    );
    for absent in [
        "usr/share/big/data",
        "var/lib/dpkg/info/bigpkg.list",
        "usr/local/lib/python3.11/dist-packages/unrelated.py",
    ] {
        assert!(
            !tree.contains_key(absent),
            "{absent} was carried but nothing needs it"
        );
    }
    // The status in the image is the one Dockerfile.compose copies.
    let status = fs::read_to_string(
        setup
            .path(&format!("work-{name}"))
            .join("triton-compose-var-lib-dpkg-status"),
    )
    .unwrap();
    assert_eq!(
        tree["var/lib/dpkg/status"].content.as_deref(),
        Some(sha256(status.as_bytes()).as_str())
    );
    let packages: Vec<&str> = status
        .lines()
        .filter_map(|l| l.strip_prefix("Package: "))
        .collect();
    assert_eq!(packages, ["libc6", "libleaf1", "libmid2"], "{status}");
    // Every path dpkg lists for them is there, as `dpkg --verify` looks.
    let missing = dpkg_missing(tree, &[LIBMID2_LIST, LIBLEAF1_LIST]);
    assert!(
        missing.is_empty(),
        "dpkg would find these missing: {missing:?}"
    );
    assert_eq!(tree["etc/mid.d"].kind, 'd');
    assert!(
        status.contains("Description: middle\n multi-line\n"),
        "{status}"
    );
    // The dependencies have a layer of their own, between the components and the account.
    let deps_layer = &image.layer_paths[image.layer_paths.len() - 2];
    assert!(
        deps_layer.iter().any(|p| p.ends_with("libmid.so.2.0.0")),
        "{deps_layer:?}"
    );
    assert!(!deps_layer
        .iter()
        .any(|p| p.starts_with("opt/tritonserver/backends")));
    let history = image.config["history"].as_array().unwrap();
    assert!(history
        .iter()
        .any(|h| h["comment"] == "runtime dependencies"));
}

#[test]
fn carries_libraries_packages_and_python_distributions_min_lacks() {
    // full FROM min or not; and FROM min with its own account files, so that
    // min is not read at all (its /lib link is then unknown to the closure).
    let accounts = server_accounts_layer();
    for (base_of_full, extra) in [(false, None), (true, None), (true, Some(accounts))] {
        let plans_without_min = extra.is_some();
        let setup = Setup::with_layer(base_of_full, extra);
        let stderr = setup.compose("out", &["--backend", "elfy", "--backend", "python"]);
        if plans_without_min {
            assert!(
                stderr.contains("only full's own layers are read")
                    && !stderr.contains("reading min for them"),
                "{stderr}"
            );
        }
        assert!(
            stderr.contains(
                "libmid.so.2, needed by /opt/tritonserver/backends/elfy/libtriton_elfy.so"
            ),
            "{stderr}"
        );
        assert!(
            stderr.contains("package libleaf1: Depends of libmid2"),
            "{stderr}"
        );
        check_deps_output(&setup, "out");

        let (code, report) = setup.verify("out");
        assert_eq!(
            report["missing_libraries"],
            serde_json::json!([]),
            "{report}"
        );
        assert_eq!(report["python_imports"][0]["module"], "numpy");
        assert!(report["python_imports"][0]["found"].is_string(), "{report}");
        assert_eq!(report["ok"], true);
        assert_eq!(code, 0);
    }
}

#[test]
fn without_deps_verify_names_what_is_missing_and_fails() {
    let setup = Setup::new(false);
    setup.compose(
        "bare",
        &["--backend", "elfy", "--backend", "python", "--no-deps"],
    );
    let image = read_oci(&setup.path("bare"), "latest");
    assert!(!image
        .tree
        .contains_key(&format!("{LIBDIR}/libmid.so.2.0.0")));
    let (code, report) = setup.verify("bare");
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        report["missing_libraries"],
        serde_json::json!([{
            "object": "/opt/tritonserver/backends/elfy/libtriton_elfy.so",
            "needs": "libmid.so.2",
            "root": "/opt/tritonserver/backends/elfy/libtriton_elfy.so",
            "chain": ["/opt/tritonserver/backends/elfy/libtriton_elfy.so"],
        }])
    );
    assert!(report["python_imports"][0]["found"].is_null());
    assert_eq!(report["ok"], false);

    // The human report says the same.
    let image = format!("oci:{}:latest", setup.path("bare").display());
    let (code, stdout, _) = run_cli_output(&["verify", "-q", &image]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains(
            "missing: /opt/tritonserver/backends/elfy/libtriton_elfy.so cannot be loaded because libmid.so.2 is missing"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("missing: python module numpy"), "{stdout}");
}

#[test]
fn a_library_no_image_has_is_reported_and_left_for_verify() {
    let setup = Setup::new(false);
    let stderr = setup.compose("broken", &["--backend", "broken"]);
    assert!(
        stderr.contains("libnowhere.so.7 is in neither image (/opt/tritonserver/backends/broken/libtriton_broken.so)"),
        "{stderr}"
    );
    let (code, report) = setup.verify("broken");
    assert_eq!(code, 1);
    assert_eq!(report["missing_libraries"][0]["needs"], "libnowhere.so.7");
}

#[test]
fn dry_run_renders_the_dependencies_as_copies_from_full() {
    let setup = Setup::new(false);
    setup.compose("dry", &["--backend", "elfy", "--dry-run"]);
    let work = setup.path("work-dry");
    let dockerfile = fs::read_to_string(work.join("Dockerfile.compose")).unwrap();
    assert!(
        dockerfile.contains("FROM ${FULL_IMAGE} AS deps"),
        "{dockerfile}"
    );
    assert!(
        dockerfile.contains("COPY --from=deps /triton-compose-deps/ /"),
        "{dockerfile}"
    );
    assert!(dockerfile.contains("COPY triton-compose-var-lib-dpkg-status /var/lib/dpkg/status"));
    assert!(dockerfile.contains(
        "#   /usr/lib/x86_64-linux-gnu/libmid.so.2.0.0: libmid.so.2, needed by /opt/tritonserver/backends/elfy/libtriton_elfy.so"
    ), "{dockerfile}");
    let files = fs::read_to_string(work.join("triton-compose-deps.files")).unwrap();
    assert!(
        files
            .lines()
            .any(|l| l == "/usr/lib/x86_64-linux-gnu/libmid.so.2"),
        "{files}"
    );
    assert!(!files.contains("bigpkg"));
    let status = fs::read_to_string(work.join("triton-compose-var-lib-dpkg-status")).unwrap();
    assert!(status.contains("Package: libmid2"));
    assert!(!setup.path("dry").exists(), "a dry run writes no image");
}

#[test]
fn sagemaker_serve_is_copied_and_labelled_when_full_has_it() {
    let serve = layer_tar(&[exe(
        "usr/bin/serve",
        "#!/bin/sh\nexec tritonserver \"$@\"\n",
    )]);
    let setup = Setup::with_layer(true, Some(serve));
    setup.compose("sm", &["--backend", "elfy"]);
    let image = read_oci(&setup.path("sm"), "latest");
    assert_eq!(image.tree["usr/bin/serve"].mode & 0o777, 0o755);
    assert_eq!(
        image.config["config"]["Labels"]
            ["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"],
        "true"
    );
    let dockerfile = fs::read_to_string(setup.path("work-sm").join("Dockerfile.compose")).unwrap();
    assert!(dockerfile.contains("COPY --from=full /usr/bin/serve /usr/bin/serve"));

    // Without it, neither.
    let setup = Setup::new(true);
    setup.compose("plain", &["--backend", "elfy"]);
    let image = read_oci(&setup.path("plain"), "latest");
    assert!(!image.tree.contains_key("usr/bin/serve"));
    assert!(image.config["config"]["Labels"]
        .get("com.amazonaws.sagemaker.capabilities.accept-bind-to-port")
        .is_none());
}

#[test]
fn cuda_libraries_gpu_min_provides_are_not_taken_from_full_again() {
    // A CPU-only full as build.py makes it has its own copy of libcudart;
    // the composed image takes gpu-min's, as compose.py does, and the
    // closure counts it as present.
    let tmp = tempfile::tempdir().unwrap();
    let cudart = cc(
        tmp.path(),
        "libcudart.so.12",
        "libcudart.so.12",
        "int cudart(void){return 12;}",
        &[],
    );
    let pytorch = cc(
        tmp.path(),
        "libtriton_pytorch.so",
        "libtriton_pytorch.so",
        "int cudart(void); int go(void){return cudart();}",
        &["-l:libcudart.so.12"],
    );
    let targets = "usr/local/cuda/targets/x86_64-linux/lib";
    let layer = layer_tar(&[
        dir("usr/local"),
        dir("usr/local/cuda"),
        dir("usr/local/cuda/targets"),
        dir("usr/local/cuda/targets/x86_64-linux"),
        dir(targets),
        bin(&format!("{targets}/libcudart.so.12"), &cudart),
        dir("opt/tritonserver/backends/pytorch"),
        bin(
            "opt/tritonserver/backends/pytorch/libtriton_pytorch.so",
            &pytorch,
        ),
    ]);
    let setup = Setup::with_layer(true, Some(layer));
    gpu_min_image().write_oci(&setup.path("gpu-min"), "latest");
    let gpu_min = format!("gpu-min,oci:{}:latest", setup.path("gpu-min").display());
    let stderr = setup.compose("cpu", &["--backend", "pytorch", "--image", &gpu_min]);
    assert!(
        !stderr.contains("libcudart.so.12 is in neither image"),
        "{stderr}"
    );

    let image = read_oci(&setup.path("cpu"), "latest");
    let composed = &image.tree[&format!("{targets}/libcudart.so.12")];
    assert_eq!(
        composed.content,
        Some(sha256(b"cudart\n")),
        "gpu-min's copy, not full's"
    );
    let from_full = image
        .layer_paths
        .iter()
        .flatten()
        .filter(|p| p.ends_with("libcudart.so.12"))
        .count();
    assert_eq!(from_full, 1, "written once, by the gpu-min layer");
    let (code, report) = setup.verify("cpu");
    assert_eq!(code, 0, "{report}");
}

/// Compiles a program without libc: a PT_INTERP executable that needs `extra`'s libraries.
fn cc_program(dir: &Path, name: &str, source: &str, extra: &[&str]) -> Vec<u8> {
    let src = dir.join(format!("{name}.c"));
    fs::write(&src, source).unwrap();
    let out = dir.join(name);
    let status = Command::new("cc")
        .args([
            "-nostdlib",
            "-fPIC",
            "-Wl,-e,_start",
            "-Wl,--allow-shlib-undefined",
            "-o",
        ])
        .arg(&out)
        .arg(&src)
        .arg(format!("-L{}", dir.display()))
        .arg(format!("-Wl,-rpath-link,{}", dir.display()))
        .args(extra)
        .status()
        .expect("a C compiler (cc) is installed");
    assert!(status.success(), "cc failed for {name}");
    fs::read(out).unwrap()
}

/// A Triton laid out as auditwheel-repaired wheels leave it: only the
/// server program has a DT_RPATH (`$ORIGIN/../lib`); the libraries in
/// lib/ find each other through it. `gone` needs a library no image has.
struct Chained {
    layer: Vec<u8>,
}

fn chained_triton() -> Chained {
    let scratch = tempfile::tempdir().unwrap();
    let d = scratch.path();
    let icu = cc(
        d,
        "libicuuc.so.70",
        "libicuuc.so.70",
        "int icu(void){return 1;}",
        &[],
    );
    let xml = cc(
        d,
        "libxml2.so.2",
        "libxml2.so.2",
        "int icu(void); int xml(void){return icu();}",
        &["-l:libicuuc.so.70"],
    );
    let core = cc(
        d,
        "libtritonserver.so",
        "libtritonserver.so",
        "int xml(void); int core(void){return xml();}",
        &["-l:libxml2.so.2"],
    );
    let program = cc_program(
        d,
        "tritonserver",
        "int core(void); void _start(void){ core(); for(;;); }",
        &[
            "-l:libtritonserver.so",
            "-Wl,--disable-new-dtags",
            "-Wl,-rpath,$ORIGIN/../lib",
        ],
    );
    // Only in lib/, loaded by nothing the server loads: a backend finds it
    // through the DT_RPATH chain of libtritonserver's caller.
    let extra = cc(
        d,
        "libextra.so",
        "libextra.so",
        "int extra(void){return 2;}",
        &[],
    );
    let chained = cc(
        d,
        "libtriton_chained.so",
        "libtriton_chained.so",
        "int extra(void); int icu(void); int go(void){return extra()+icu();}",
        &["-l:libextra.so", "-l:libicuuc.so.70"],
    );
    let _gone = cc(
        d,
        "libgone.so.3",
        "libgone.so.3",
        "int gone(void){return 0;}",
        &[],
    );
    let middle = cc(
        d,
        "libmiddle.so",
        "libmiddle.so",
        "int gone(void); int middle(void){return gone();}",
        &["-l:libgone.so.3"],
    );
    let gone = cc(
        d,
        "libtriton_gone.so",
        "libtriton_gone.so",
        "int middle(void); int go(void){return middle();}",
        &["-l:libmiddle.so"],
    );
    let orphan = cc(
        d,
        "liborphan.so",
        "liborphan.so",
        "int extra(void); int orphan(void){return extra();}",
        &["-l:libextra.so"],
    );
    let info = read_elf(&program[..], program.len() as u64).unwrap();
    assert!(info.interpreter.is_some(), "{info:?}");
    assert_eq!(info.rpath, ["$ORIGIN/../lib"]);
    let lib = "opt/tritonserver/lib";
    let layer = layer_tar(&[
        dir("opt/tritonserver"),
        dir("opt/tritonserver/bin"),
        bin("opt/tritonserver/bin/tritonserver", &program),
        dir(lib),
        bin(&format!("{lib}/libtritonserver.so"), &core),
        bin(&format!("{lib}/libxml2.so.2"), &xml),
        bin(&format!("{lib}/libicuuc.so.70"), &icu),
        bin(&format!("{lib}/libextra.so"), &extra),
        bin(&format!("{lib}/libmiddle.so"), &middle),
        bin(&format!("{lib}/liborphan.so"), &orphan),
        dir("opt/tritonserver/backends"),
        dir("opt/tritonserver/backends/chained"),
        bin(
            "opt/tritonserver/backends/chained/libtriton_chained.so",
            &chained,
        ),
        dir("opt/tritonserver/backends/gone"),
        bin("opt/tritonserver/backends/gone/libtriton_gone.so", &gone),
        // A copy of ICU where a standalone look-up of libxml2's needs
        // would find it; the load chain finds lib/'s first.
        dir("usr/lib"),
        dir(LIBDIR),
        bin(&format!("{LIBDIR}/libicuuc.so.70"), &icu),
    ]);
    Chained { layer }
}

/// min, and a full whose own layer is [`chained_triton`].
fn chained_setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let min = min();
    min.write_oci(&dir.path().join("min"), "latest");
    let mut full = full_image(&min);
    full.layers = vec![min.layers[0].clone(), chained_triton().layer];
    full.write_oci(&dir.path().join("full"), "24.10");
    Setup { dir }
}

#[test]
fn libraries_found_through_an_inherited_rpath_verify_and_are_not_copied_again() {
    let setup = chained_setup();
    let stderr = setup.compose("chained", &["--backend", "chained"]);
    let image = read_oci(&setup.path("chained"), "latest");
    // lib/'s ICU is what the chain finds: full's copy in /usr/lib is not added.
    assert!(
        !image.tree.contains_key(&format!("{LIBDIR}/libicuuc.so.70")),
        "{stderr}"
    );
    assert!(!stderr.contains("libicuuc.so.70, needed by"), "{stderr}");

    let (code, report) = setup.verify("chained");
    assert_eq!(
        report["missing_libraries"],
        serde_json::json!([]),
        "{report}"
    );
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(code, 0);
    // Every object of the chains was loaded and checked.
    assert!(report["elf_checked"].as_u64().unwrap() >= 6, "{report}");
    // liborphan and libmiddle (the gone backend's, not selected) are
    // loaded by nothing: warnings, not failures.
    assert_eq!(
        report["unreachable"],
        serde_json::json!([{
            "object": "/opt/tritonserver/lib/libmiddle.so",
            "needs": "libgone.so.3",
            "root": "/opt/tritonserver/lib/libmiddle.so",
            "chain": ["/opt/tritonserver/lib/libmiddle.so"],
        }, {
            "object": "/opt/tritonserver/lib/liborphan.so",
            "needs": "libextra.so",
            "root": "/opt/tritonserver/lib/liborphan.so",
            "chain": ["/opt/tritonserver/lib/liborphan.so"],
        }]),
        "{report}"
    );
    let text = format!("oci:{}:latest", setup.path("chained").display());
    let (code, stdout, _) = run_cli_output(&["verify", "-q", &text]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("unreachable (warning): no root loads /opt/tritonserver/lib/liborphan.so; alone it would not find libextra.so"), "{stdout}");
    assert!(!stdout.contains("missing:"), "{stdout}");
}

#[test]
fn a_library_missing_along_a_chain_fails_verify_naming_the_chain() {
    let setup = chained_setup();
    let stderr = setup.compose("gone", &["--backend", "gone"]);
    assert!(
        stderr.contains("libgone.so.3 is in neither image (/opt/tritonserver/lib/libmiddle.so)"),
        "{stderr}"
    );
    let (code, report) = setup.verify("gone");
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        report["missing_libraries"],
        serde_json::json!([{
            "object": "/opt/tritonserver/lib/libmiddle.so",
            "needs": "libgone.so.3",
            "root": "/opt/tritonserver/backends/gone/libtriton_gone.so",
            "chain": [
                "/opt/tritonserver/bin/tritonserver",
                "/opt/tritonserver/lib/libtritonserver.so",
                "/opt/tritonserver/backends/gone/libtriton_gone.so",
                "/opt/tritonserver/lib/libmiddle.so",
            ],
        }]),
        "{report}"
    );
    let text = format!("oci:{}:latest", setup.path("gone").display());
    let (code, stdout, _) = run_cli_output(&["verify", "-q", &text]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("missing: /opt/tritonserver/lib/libmiddle.so cannot be loaded by /opt/tritonserver/backends/gone/libtriton_gone.so because libgone.so.3 is missing (load chain: /opt/tritonserver/bin/tritonserver -> /opt/tritonserver/lib/libtritonserver.so -> /opt/tritonserver/backends/gone/libtriton_gone.so -> /opt/tritonserver/lib/libmiddle.so)"),
        "{stdout}"
    );
}

#[test]
fn hostile_file_names_and_sonames_cannot_start_a_dockerfile_instruction() {
    // A library whose soname (and so its file name, and the need of the
    // backend linking it) holds a newline and an instruction.
    let scratch = tempfile::tempdir().unwrap();
    let d = scratch.path();
    let evil_name = "libevil.so.1\nRUN touch pwned";
    let evil = cc(d, "libevil.so", evil_name, "int evil(void){return 1;}", &[]);
    std::fs::copy(d.join("libevil.so"), d.join(evil_name)).unwrap();
    let backend = cc(
        d,
        "libtriton_evil.so",
        "libtriton_evil.so",
        "int evil(void); int go(void){return evil();}",
        &[&format!("-l:{evil_name}")],
    );
    let info = read_elf(&backend[..], backend.len() as u64).unwrap();
    assert_eq!(info.needed, [evil_name]);

    let root = tempfile::tempdir().unwrap();
    let min = min();
    min.write_oci(&root.path().join("min"), "latest");
    let mut full = full_image(&min);
    full.layers = vec![
        min.layers[0].clone(),
        layer_tar(&[
            dir("usr/lib"),
            dir(LIBDIR),
            bin(&format!("{LIBDIR}/{evil_name}"), &evil),
            dir("opt/tritonserver"),
            dir("opt/tritonserver/bin"),
            exe("opt/tritonserver/bin/tritonserver", "#!/bin/sh\n"),
            dir("opt/tritonserver/lib"),
            dir("opt/tritonserver/backends"),
            dir("opt/tritonserver/backends/evil"),
            bin("opt/tritonserver/backends/evil/libtriton_evil.so", &backend),
        ]),
    ];
    full.write_oci(&root.path().join("full"), "24.10");
    let setup = Setup { dir: root };
    let stderr = setup.compose("evil", &["--backend", "evil", "--dry-run"]);
    let dockerfile =
        fs::read_to_string(setup.path("work-evil").join("Dockerfile.compose")).unwrap();
    assert!(!dockerfile.contains("\nRUN touch"), "{dockerfile}");
    assert!(
        dockerfile.contains("libevil.so.1?RUN touch pwned"),
        "{dockerfile}\n{stderr}"
    );
    assert_eq!(dockerfile.matches("\nRUN ").count(), 2, "{dockerfile}");
}

#[test]
fn the_closure_covers_the_elf_files_of_a_component_from_a_directory() {
    let setup = Setup::new(false);
    let libs = compile();
    let dir = setup.path("custom-backend");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("libtriton_custom.so"), &libs.elfy).unwrap();
    std::fs::write(dir.join("libhelper.so"), &libs.helper).unwrap();
    let spec = format!("custom={}", dir.display());
    let stderr = setup.compose("custom", &["--backend", &spec]);
    assert!(
        stderr.contains(
            "libmid.so.2, needed by /opt/tritonserver/backends/custom/libtriton_custom.so"
        ),
        "{stderr}"
    );
    let image = read_oci(&setup.path("custom"), "latest");
    assert!(image
        .tree
        .contains_key(&format!("{LIBDIR}/libmid.so.2.0.0")));
    let (code, report) = setup.verify("custom");
    assert_eq!(
        report["missing_libraries"],
        serde_json::json!([]),
        "{report}"
    );
    assert_eq!(code, 0, "{report}");
}

/// One installed distribution: a dist-info with METADATA, top_level.txt and
/// RECORD (as pip writes them), and its files.
fn dist(site: &str, dist_info: &str, metadata: &str, files: &[Item]) -> Vec<Item> {
    let info = format!("{site}/{dist_info}");
    let mut items = vec![dir(&info)];
    let mut record = String::new();
    let mut tops = std::collections::BTreeSet::new();
    for item in files {
        let path = match item {
            Item::File { path, .. } | Item::Dir { path, .. } => path.clone(),
            _ => continue,
        };
        let rel = path.strip_prefix(&format!("{site}/")).unwrap().to_string();
        tops.insert(rel.split(['/', '.']).next().unwrap().to_string());
        if matches!(item, Item::File { .. }) {
            record.push_str(&format!("{rel},,\n"));
        }
    }
    items.extend(files.iter().cloned());
    let tops: Vec<String> = tops.into_iter().collect();
    items.push(file(&format!("{info}/METADATA"), metadata));
    items.push(file(
        &format!("{info}/top_level.txt"),
        &(tops.join("\n") + "\n"),
    ));
    record.push_str(&format!(
        "{dist_info}/METADATA,,\n{dist_info}/top_level.txt,,\n{dist_info}/RECORD,,\n"
    ));
    items.push(file(&format!("{info}/RECORD"), &record));
    items
}

const SITE: &str = "usr/local/lib/python3.11/dist-packages";

/// A python-based backend `pyb` (model.py, no libtriton_pyb.so) and the
/// distributions full has for it, and some it must not bring.
fn python_based_layer(libs: &Libs) -> Vec<u8> {
    let model = r#"
import sys
import json as _json_from_the_stdlib
import triton_python_backend_utils as pb_utils
from outer_pkg.core import add
import native_mod
from . import helpers
import localhelper
try:
    import fancy_optional
except ImportError:
    fancy_optional = None
"#;
    let native = {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("libleaf.so.1"), &libs.leaf).unwrap();
        cc(
            d.path(),
            "native_mod.so",
            "native_mod.so",
            "int leaf(void); int native(void){return leaf();}",
            &["-l:libleaf.so.1"],
        )
    };
    let meta = |name: &str, requires: &[&str]| {
        let mut m = format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n");
        for r in requires {
            m.push_str(&format!("Requires-Dist: {r}\n"));
        }
        m + "\nRequires-Dist: not-a-header (the description)\n"
    };
    let b = "opt/tritonserver/backends/pyb";
    let mut items = vec![
        dir("opt/tritonserver"),
        dir("opt/tritonserver/backends"),
        dir(b),
        file(&format!("{b}/model.py"), model),
        file(
            &format!("{b}/helpers.py"),
            "import also_from_helpers_dist\n",
        ),
        file(&format!("{b}/localhelper.py"), "x = 1\n"),
        dir("opt/tritonserver/backends/python"),
        file(
            "opt/tritonserver/backends/python/triton_python_backend_utils.py",
            "import json\n",
        ),
        dir("usr/bin"),
        symlink("usr/bin/python3", "python3.11"),
        dir("usr/lib/python3.11"),
        dir("usr/lib/python3.11/json"),
        file("usr/lib/python3.11/json/__init__.py", "# stdlib\n"),
        dir("usr/local"),
        dir("usr/local/lib"),
        dir("usr/local/lib/python3.11"),
        dir(SITE),
    ];
    items.extend(dist(
        SITE,
        "Outer_Pkg-1.0.dist-info",
        &meta(
            "Outer-Pkg",
            &[
                "inner.lib>=1.0",
                "never-there ; python_version < \"3\"",
                "on-mac ; sys_platform == \"darwin\"",
                "extra-thing ; extra == \"fast\"",
                "x86-only ; platform_machine == \"x86_64\" and python_version >= \"3.10\"",
            ],
        ),
        &[
            dir(&format!("{SITE}/outer_pkg")),
            file(&format!("{SITE}/outer_pkg/__init__.py"), ""),
            file(
                &format!("{SITE}/outer_pkg/core.py"),
                "from innerlib import f\n",
            ),
        ],
    ));
    items.extend(dist(
        SITE,
        "inner_lib-1.2.dist-info",
        &meta("inner.lib", &[]),
        &[file(&format!("{SITE}/innerlib.py"), "def f(): pass\n")],
    ));
    items.extend(dist(
        SITE,
        "x86_only-1.0.dist-info",
        &meta("x86_only", &[]),
        &[file(&format!("{SITE}/x86only.py"), "")],
    ));
    items.extend(dist(
        SITE,
        "extra_thing-1.0.dist-info",
        &meta("extra-thing", &[]),
        &[file(&format!("{SITE}/extrathing.py"), "")],
    ));
    items.extend(dist(
        SITE,
        "native-1.0.dist-info",
        &meta("native", &[]),
        &[bin(
            &format!("{SITE}/native_mod.cpython-311-x86_64-linux-gnu.so"),
            &native,
        )],
    ));
    items.extend(dist(
        SITE,
        "helpers_dist-1.0.dist-info",
        &meta("helpers-dist", &[]),
        &[file(&format!("{SITE}/also_from_helpers_dist.py"), "")],
    ));
    items.extend(dist(
        SITE,
        "unrelated-1.0.dist-info",
        &meta("unrelated", &[]),
        &[file(&format!("{SITE}/unrelated_mod.py"), "")],
    ));
    layer_tar(&items)
}

#[test]
fn a_python_based_backend_carries_its_imports_and_their_requirements() {
    let libs = compile();
    let setup = Setup::with_layer(false, Some(python_based_layer(&libs)));
    let stderr = setup.compose("pyb", &["--backend", "pyb"]);
    assert!(
        stderr.contains("backend pyb is python-based"),
        "the python backend is added:\n{stderr}"
    );
    let image = read_oci(&setup.path("pyb"), "latest");
    let has = |p: &str| image.tree.contains_key(p);
    for carried in [
        "opt/tritonserver/backends/python/triton_python_backend_utils.py",
        "opt/tritonserver/backends/pyb/model.py",
        &format!("{SITE}/outer_pkg/core.py"),
        &format!("{SITE}/Outer_Pkg-1.0.dist-info/METADATA"),
        &format!("{SITE}/innerlib.py"),
        &format!("{SITE}/x86only.py"),
        &format!("{SITE}/native_mod.cpython-311-x86_64-linux-gnu.so"),
        &format!("{SITE}/also_from_helpers_dist.py"),
        // The extension module's ELF need.
        &format!("{LIBDIR}/libleaf.so.1.0"),
    ] {
        assert!(has(carried), "{carried} was not carried:\n{stderr}");
    }
    for left in [
        "extrathing.py",
        "unrelated_mod.py",
        "extra_thing-1.0.dist-info/METADATA",
    ] {
        assert!(
            !has(&format!("{SITE}/{left}")),
            "{left} was carried:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("Requires-Dist of Outer_Pkg-1.0: inner.lib>=1.0"),
        "{stderr}"
    );
    assert!(!stderr.contains("fancy_optional"), "{stderr}");

    let (code, report) = setup.verify("pyb");
    let imports: Vec<(String, bool, bool)> = report["python_imports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["backend"] == "pyb")
        .map(|i| {
            (
                i["module"].as_str().unwrap().to_string(),
                i["found"].is_string(),
                i["optional"].as_bool().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, bool, bool)> = [
        ("also_from_helpers_dist", true, false),
        ("sys", true, false),
        ("json", true, false),
        ("outer_pkg.core", true, false),
        ("native_mod", true, false),
        ("fancy_optional", false, true),
    ]
    .iter()
    .map(|(m, f, o)| (m.to_string(), *f, *o))
    .collect();
    assert_eq!(imports, expected, "{report}");
    assert_eq!(report["python_requirements"], serde_json::json!([]));
    assert_eq!(code, 0, "{report}");

    // Without the closure, verify names what the backend cannot import;
    // the optional import is only a warning.
    setup.compose("bare", &["--backend", "pyb", "--no-deps"]);
    let (code, report) = setup.verify("bare");
    assert_eq!(code, 1, "{report}");
    let image = format!("oci:{}:latest", setup.path("bare").display());
    let (code, stdout, _) = run_cli_output(&["verify", "-q", &image]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("missing: python module outer_pkg.core (the pyb backend imports it)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("python (warning): fancy_optional is not in the image"),
        "{stdout}"
    );
}

#[test]
fn a_requirement_full_lacks_is_reported_by_compose_and_verify() {
    let libs = compile();
    let mut layer = python_based_layer(&libs);
    // inner.lib is gone from full: Outer-Pkg's requirement cannot be met.
    let gone = layer_tar(&[
        whiteout(&format!("{SITE}/inner_lib-1.2.dist-info")),
        whiteout(&format!("{SITE}/innerlib.py")),
    ]);
    let setup = {
        let dir = tempfile::tempdir().unwrap();
        let min = min();
        min.write_oci(&dir.path().join("min"), "latest");
        let mut full = full(&min, &libs, false);
        full.layers.push(std::mem::take(&mut layer));
        full.layers.push(gone);
        full.write_oci(&dir.path().join("full"), "24.10");
        Setup { dir }
    };
    let stderr = setup.compose("pyb", &["--backend", "pyb", "--backend", "python"]);
    assert!(
        stderr.contains("python distribution inner-lib")
            && stderr.contains("Requires-Dist of Outer_Pkg-1.0"),
        "{stderr}"
    );
    let (code, report) = setup.verify("pyb");
    assert_eq!(code, 1);
    assert_eq!(
        report["python_requirements"],
        serde_json::json!([{
            "dist": format!("/{SITE}/Outer_Pkg-1.0.dist-info"),
            "requires": "inner.lib>=1.0",
        }]),
        "{report}"
    );
}

#[test]
fn a_python_based_backend_from_a_directory_carries_what_it_imports() {
    let libs = compile();
    let setup = Setup::with_layer(false, Some(python_based_layer(&libs)));
    let dir = setup.path("mine-src");
    fs::create_dir(&dir).unwrap();
    fs::write(
        dir.join("model.py"),
        "import triton_python_backend_utils\nfrom outer_pkg import core\n",
    )
    .unwrap();
    let spec = format!("mine={}", dir.display());
    let stderr = setup.compose("mine", &["--backend", &spec]);
    let image = read_oci(&setup.path("mine"), "latest");
    for carried in [
        "opt/tritonserver/backends/mine/model.py",
        "opt/tritonserver/backends/python/triton_python_backend_utils.py",
        &format!("{SITE}/outer_pkg/core.py"),
        &format!("{SITE}/innerlib.py"),
    ] {
        assert!(image.tree.contains_key(carried), "{carried}:\n{stderr}");
    }
    assert!(!image.tree.contains_key(&format!(
        "{SITE}/native_mod.cpython-311-x86_64-linux-gnu.so"
    )));
    let (code, report) = setup.verify("mine");
    assert_eq!(code, 0, "{report}");
}
