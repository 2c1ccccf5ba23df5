//! The content-addressed store, through the command line: warm composes
//! reuse indexes and layers and give the bytes a cold compose gives,
//! composes share a store safely, killed runs leave nothing that is
//! reused, damaged entries are detected and rebuilt, and eviction keeps the
//! store under its bound, least recently used first.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    /// min, and full with a large file in the python backend and a backend
    /// `extra` in a layer of its own.
    fn new() -> Setup {
        let root = tempfile::tempdir().unwrap();
        let min = min_image();
        min.write_oci(&root.path().join("min"), "latest");
        let mut full = full_image(&min);
        // A real ELF library too: its facts are in the layer's index, which a
        // warm compose must read back.
        let cc = root.path().join("cc");
        std::fs::create_dir_all(&cc).unwrap();
        let elf = images::cc_library(
            &cc,
            ("libtriton_helper.so", "libtriton_helper.so"),
            "int helper(void) { return 1; }",
            &[],
            false,
        );
        full.layers.push(layer_tar(&[
            file(
                "opt/tritonserver/backends/python/big.txt",
                &noise(24 << 20, 7),
            ),
            Item::File {
                path: "opt/tritonserver/backends/python/libtriton_helper.so".into(),
                data: elf,
                mode: 0o755,
                uid: 0,
                gid: 0,
                xattrs: vec![],
            },
        ]));
        full.layers.push(layer_tar(&[
            dir("opt/tritonserver/backends/extra"),
            file(
                "opt/tritonserver/backends/extra/libtriton_extra.so",
                "extra\n",
            ),
        ]));
        full.write_oci(&root.path().join("full"), "24.10");
        Setup { dir: root }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn args(&self, out: &str, store: &str, selection: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "--enable-gpu=false",
            "--image",
            &format!("min,oci:{}:latest", self.path("min").display()),
            "--image",
            &format!("full,oci:{}:24.10", self.path("full").display()),
            "--work-dir",
            self.path(&format!("work-{out}")).to_str().unwrap(),
            "--output",
            &format!("oci:{}:x", self.path(out).display()),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if store.is_empty() {
            args.push("--no-store".into());
        } else {
            args.extend(["--store".into(), self.path(store).display().to_string()]);
        }
        args.extend(selection.iter().map(|s| s.to_string()));
        args
    }

    /// Composes into oci:OUT with the store STORE ("" for none); returns
    /// stderr and the image.
    fn compose(&self, out: &str, store: &str, selection: &[&str]) -> (String, ReadImage) {
        let args = self.args(out, store, selection);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, stderr) = run_cli(&args);
        assert!(ok, "compose failed:\n{stderr}");
        (stderr, read_oci(&self.path(out), "x"))
    }

    fn store_files(&self, store: &str) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for sub in ["index", "layers", "blobs/sha256"] {
            for entry in std::fs::read_dir(self.path(store).join(sub)).unwrap() {
                files.push(entry.unwrap().path());
            }
        }
        files.sort();
        files
    }
}

const PYTHON: &[&str] = &["--backend", "python", "--cache", "local"];
const PYTHON_EXTRA: &[&str] = &[
    "--backend",
    "python",
    "--cache",
    "local",
    "--backend",
    "extra",
];

fn layer_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(" layer ") && l.contains(" entries, "))
        .collect()
}

#[test]
fn warm_composes_reuse_indexes_and_layers_and_match_a_cold_compose() {
    let setup = Setup::new();
    let (cold, first) = setup.compose("cold", "store", PYTHON);
    assert!(cold.contains("reading full layer"), "{cold}");
    assert!(!cold.contains("from the store"), "{cold}");
    let files = setup.store_files("store");

    // The same combination again: nothing read, nothing written.
    let (same, again) = setup.compose("same", "store", PYTHON);
    assert!(!same.contains("reading "), "{same}");
    let lines = layer_lines(&same);
    assert!(!lines.is_empty(), "{same}");
    assert!(lines.iter().all(|l| l.contains("from the store")), "{same}");
    assert_eq!(again.manifest_digest, first.manifest_digest);
    assert_eq!(setup.store_files("store"), files);

    // Another combination reads only the layer holding what is new.
    let (other, warm) = setup.compose("other", "store", PYTHON_EXTRA);
    let read: Vec<&str> = other.lines().filter(|l| l.contains("reading ")).collect();
    assert_eq!(read.len(), 1, "{other}");
    assert!(
        read[0].contains("re-reading") && read[0].contains("layer 6 "),
        "{other}"
    );
    for line in layer_lines(&other) {
        let new = line.contains("backend extra");
        assert_eq!(!new, line.contains("from the store"), "{other}");
    }
    // Byte for byte what a compose without the store writes.
    let (_, reference) = setup.compose("reference", "", PYTHON_EXTRA);
    assert_eq!(warm.manifest_digest, reference.manifest_digest);
    assert_eq!(warm.layer_digests, reference.layer_digests);
}

#[test]
fn concurrent_composes_share_a_store_safely() {
    let setup = Setup::new();
    let (_, python) = setup.compose("ref-python", "", PYTHON);
    let (_, extra) = setup.compose("ref-extra", "", PYTHON_EXTRA);
    let store = setup.path("shared").display().to_string();
    let children: Vec<(std::process::Child, &str, &str)> = (0..6)
        .map(|i| {
            let (selection, expect) = if i % 2 == 0 {
                (PYTHON, "python")
            } else {
                (PYTHON_EXTRA, "extra")
            };
            let out = format!("out-{i}");
            let child = Command::new(env!("CARGO_BIN_EXE_triton-compose"))
                .args(setup.args(&out, "shared", selection))
                .arg("-q")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (child, expect, if i % 2 == 0 { "py" } else { "ex" })
        })
        .collect();
    for (i, (child, expect, _)) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "compose {i} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let image = read_oci(&setup.path(&format!("out-{i}")), "x");
        let reference = if expect == "python" { &python } else { &extra };
        assert_eq!(
            image.manifest_digest, reference.manifest_digest,
            "compose {i}"
        );
    }
    // And what they stored serves a later compose whole.
    let (warm, image) = setup.compose("after", "shared", PYTHON_EXTRA);
    assert!(
        layer_lines(&warm)
            .iter()
            .all(|l| l.contains("from the store")),
        "{warm}"
    );
    assert_eq!(image.manifest_digest, extra.manifest_digest);
    assert!(Path::new(&store).join("tmp").is_dir());
}

#[test]
fn a_compose_killed_mid_write_leaves_nothing_that_is_reused() {
    let setup = Setup::new();
    let (_, reference) = setup.compose("reference", "", PYTHON);
    for (round, delay) in [30u64, 80, 150, 300, 600].into_iter().enumerate() {
        let out = format!("killed-{round}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_triton-compose"))
            .args(setup.args(&out, "store", PYTHON))
            .arg("-q")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // The next run succeeds, with the bytes a fresh compose gives.
        let (_, image) = setup.compose(&format!("after-{round}"), "store", PYTHON);
        assert_eq!(
            image.manifest_digest, reference.manifest_digest,
            "after a kill at {delay} ms"
        );
    }
}

/// A repeat takes every layer from the store without hashing it again:
/// the blobs' stamps (inode, size, modification time) kept when they were
/// written or checked say they are unchanged. A blob whose file changed
/// is checked again.
#[test]
fn a_repeat_hashes_no_stored_layer_again_but_checks_a_changed_one() {
    let setup = Setup::new();
    let verbose: Vec<&str> = ["-v"].iter().chain(PYTHON).copied().collect();
    let (_, cold) = setup.compose("cold", "store", PYTHON);
    let checking = |stderr: &str| stderr.matches("checking the layer blob").count();
    let (same, again) = setup.compose("same", "store", &verbose);
    assert!(
        layer_lines(&same)
            .iter()
            .all(|l| l.contains("from the store")),
        "{same}"
    );
    assert_eq!(checking(&same), 0, "{same}");
    assert_eq!(again.manifest_digest, cold.manifest_digest);
    // One blob touched: its content is the same, but it is checked again.
    let blob = (setup.store_files("store").into_iter())
        .find(|p| p.parent().unwrap().ends_with("blobs/sha256"))
        .unwrap();
    let file = std::fs::File::options().write(true).open(&blob).unwrap();
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .unwrap();
    let (touched, again) = setup.compose("touched", "store", &verbose);
    assert_eq!(checking(&touched), 1, "{touched}");
    assert_eq!(again.manifest_digest, cold.manifest_digest);
    let (after, _) = setup.compose("after", "store", &verbose);
    assert_eq!(checking(&after), 0, "{after}");
    // min's blobs too, once checked on their way into an output.
    let unhashed = |stderr: &str| stderr.matches("not hashed again").count();
    assert!(unhashed(&after) > 0, "{after}");
    let min_layer = read_oci(&setup.path("min"), "latest").layer_digests[0].clone();
    let min_blob =
        (setup.path("min").join("blobs/sha256")).join(min_layer.trim_start_matches("sha256:"));
    let file = std::fs::File::options()
        .write(true)
        .open(&min_blob)
        .unwrap();
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .unwrap();
    let (min_touched, image) = setup.compose("min-touched", "store", &verbose);
    assert_eq!(
        unhashed(&min_touched),
        unhashed(&after) - 1,
        "{min_touched}"
    );
    assert_eq!(image.manifest_digest, cold.manifest_digest);
    let archive = |name: &str, store: &str| {
        let mut args = setup.args(name, store, &verbose);
        let output = args.iter().position(|a| a == "--output").unwrap() + 1;
        args[output] = format!(
            "docker-archive:{}",
            setup.path(name).with_extension("tar").display()
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, stderr) = run_cli(&args);
        assert!(ok, "{stderr}");
        (
            stderr,
            std::fs::read(setup.path(name).with_extension("tar")).unwrap(),
        )
    };
    // A docker-archive takes copies of them, byte for byte what a run
    // that hashes them (with a store of its own) writes.
    let (first, bytes) = archive("archive-1", "fresh");
    let (second, again) = archive("archive-2", "store");
    assert_eq!(unhashed(&first), 0, "{first}");
    assert_eq!(unhashed(&second), unhashed(&after), "{second}");
    assert!(bytes == again, "the archives differ");
}

#[test]
fn a_damaged_store_entry_is_detected_and_rebuilt() {
    let setup = Setup::new();
    let (_, cold) = setup.compose("cold", "store", PYTHON);
    for path in setup.store_files("store") {
        let parent = path.parent().unwrap().file_name().unwrap().to_owned();
        if parent == "layers" {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        std::fs::write(&path, bytes).unwrap();
    }
    let (stderr, image) = setup.compose("damaged", "store", PYTHON);
    assert!(stderr.contains("is damaged; it is removed"), "{stderr}");
    assert!(stderr.contains("reading full layer"), "{stderr}");
    assert!(!stderr.contains("from the store"), "{stderr}");
    assert_eq!(image.manifest_digest, cold.manifest_digest);
    // Rebuilt entries serve the next compose.
    let (warm, image) = setup.compose("healed", "store", PYTHON);
    assert!(
        layer_lines(&warm)
            .iter()
            .all(|l| l.contains("from the store")),
        "{warm}"
    );
    assert_eq!(image.manifest_digest, cold.manifest_digest);

    // A damaged entry log alone is found too: its digest is in the index.
    let mut logs = 0;
    for path in setup.store_files("store") {
        if path.extension().is_some_and(|e| e == "entries") {
            let mut bytes = std::fs::read(&path).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x55;
            std::fs::write(&path, bytes).unwrap();
            logs += 1;
        }
    }
    assert!(logs > 0, "the store keeps entry logs");
    let (stderr, image) = setup.compose("log-damaged", "store", PYTHON);
    assert!(stderr.contains("is damaged; it is removed"), "{stderr}");
    assert!(stderr.contains("reading full layer"), "{stderr}");
    assert_eq!(image.manifest_digest, cold.manifest_digest);
}

fn store_total(setup: &Setup, store: &str) -> u64 {
    let dir = setup.path(store).display().to_string();
    let (code, stdout, stderr) = run_cli_output(&["store", "--store", &dir, "du", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let usage: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(usage["layers"]["count"].is_u64(), "{usage}");
    usage["total"].as_u64().unwrap()
}

#[test]
fn eviction_keeps_the_store_under_its_bound_least_recently_used_first() {
    let setup = Setup::new();
    setup.compose("python", "store", PYTHON);
    let with_python = store_total(&setup, "store");
    assert!(with_python > 10 << 20, "{with_python}");
    // A small selection, then a bound that holds it but not the python layer.
    let small = &["--backend", "onnxruntime"];
    let args = setup.args("small", "store", small);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--store-max-size", "2M"]);
    let (ok, stderr) = run_cli(&args);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("store: evicted"), "{stderr}");
    let total = store_total(&setup, "store");
    assert!(total <= 2 << 20, "{total}");
    // The most recently used entries stayed; the python layer went.
    let (warm, _) = setup.compose("small-again", "store", small);
    assert!(
        layer_lines(&warm)
            .iter()
            .all(|l| l.contains("from the store")),
        "{warm}"
    );
    let (rebuilt, _) = setup.compose("python-again", "store", PYTHON);
    let python_line = layer_lines(&rebuilt)
        .into_iter()
        .find(|l| l.contains("backend python"))
        .unwrap();
    assert!(!python_line.contains("from the store"), "{rebuilt}");

    // `store prune --all` empties it.
    let dir = setup.path("store").display().to_string();
    let (code, stdout, _) = run_cli_output(&["store", "--store", &dir, "prune", "--all"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("freed "), "{stdout}");
    assert_eq!(store_total(&setup, "store"), 0);
}

/// min, and a full whose own files are all in one layer, as NGC builds
/// them: a large python backend first, then small components.
fn single_layer_setup() -> Setup {
    let root = tempfile::tempdir().unwrap();
    let min = min_image();
    min.write_oci(&root.path().join("min"), "latest");
    let mut full = full_image(&min);
    let mut items = vec![
        dir("opt"),
        dir("opt/tritonserver"),
        dir("opt/tritonserver/backends"),
        dir("opt/tritonserver/backends/python"),
    ];
    for i in 0..6 {
        items.push(file(
            &format!("opt/tritonserver/backends/python/part{i}.txt"),
            &noise(6 << 20, 100 + i),
        ));
    }
    items.extend([
        dir("opt/tritonserver/backends/extra"),
        file(
            "opt/tritonserver/backends/extra/libtriton_extra.so",
            "extra\n",
        ),
    ]);
    full.layers.push(layer_tar(&items));
    full.write_oci(&root.path().join("full"), "24.10");
    Setup { dir: root }
}

#[test]
fn a_single_layer_full_is_read_through_access_points_for_a_new_component() {
    let setup = single_layer_setup();
    setup.compose("cold", "store", &["--backend", "python"]);
    // Only the spans holding the new backend are read and inflated.
    let (warm, image) = setup.compose(
        "warm",
        "store",
        &["--backend", "python", "--backend", "extra"],
    );
    let line = warm
        .lines()
        .find(|l| l.contains("through its access points"))
        .unwrap_or_else(|| panic!("{warm}"));
    let mib = |text: &str| -> f64 {
        let number: f64 = text.split_whitespace().next().unwrap().parse().unwrap();
        if text.contains("KiB") {
            number / 1024.0
        } else if text.contains("MiB") {
            number
        } else if text.contains(" B") {
            number / 1048576.0
        } else {
            number * 1024.0
        }
    };
    let inside = &line[line.find('(').unwrap() + 1..line.find(" compressed").unwrap()];
    let (read, total) = inside.split_once(" of ").unwrap();
    assert!(mib(read) * 4.0 < mib(total), "{line}");
    assert!(!warm.contains("re-reading"), "{warm}");
    let (_, reference) = setup.compose(
        "reference",
        "",
        &["--backend", "python", "--backend", "extra"],
    );
    assert_eq!(image.manifest_digest, reference.manifest_digest);
    assert!(image
        .tree
        .contains_key("opt/tritonserver/backends/extra/libtriton_extra.so"));
}

/// The largest blob of an OCI layout.
fn largest_blob(layout: &Path) -> PathBuf {
    std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
}

#[test]
fn a_blob_changed_after_its_index_was_kept_is_refused_when_read_at_random() {
    let setup = single_layer_setup();
    setup.compose("cold", "store", &["--backend", "python"]);
    // A byte near the end of the large layer, in a stored deflate block of
    // noise (or the tar's end): it still inflates, to other bytes. Only
    // the checkpoints of the blob's digest check can tell.
    let blob = largest_blob(&setup.path("full"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let at = bytes.len() - 1500;
    bytes[at] ^= 0x20;
    std::fs::write(&blob, bytes).unwrap();
    let args = setup.args(
        "warm",
        "store",
        &["--backend", "python", "--backend", "extra"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, stderr) = run_cli(&args);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("do not match") || stderr.contains("digest"),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");
    assert!(!setup.path("warm").exists());
}

#[test]
fn with_the_store_an_unknown_name_fails_before_any_layer_is_read() {
    let setup = Setup::new();
    setup.compose("cold", "store", PYTHON);
    let args = setup.args("unknown", "store", &["--backend", "pythn"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, stderr) = run_cli(&args);
    assert!(!ok);
    assert!(
        stderr.contains("python"),
        "the closest name is suggested: {stderr}"
    );
    assert!(!stderr.contains("reading "), "a layer was read: {stderr}");
}

#[test]
fn catalog_sizes_are_what_a_compose_of_each_component_writes() {
    let setup = Setup::new();
    let catalog_args = |extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "catalog".to_string(),
            format!("oci:{}:24.10", setup.path("full").display()),
            "--min".into(),
            format!("oci:{}:latest", setup.path("min").display()),
            "--store".into(),
            setup.path("store").display().to_string(),
            "--work-dir".into(),
            setup.path("catalog-work").display().to_string(),
            "--json".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let args = catalog_args(&["--backend", "python"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = run_cli_output(&args);
    assert_eq!(code, 0, "{stderr}");
    let catalog: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(catalog["triton_version"], "2.51.0");
    assert_eq!(catalog["gpu"], false);
    let components = catalog["components"].as_array().unwrap();
    let names: Vec<&str> = components
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for expected in [
        "core",
        "python",
        "onnxruntime",
        "extra",
        "checksum",
        "local",
    ] {
        assert!(names.contains(&expected), "{names:?}");
    }
    // Each size as written is what a compose of that component writes.
    for (kind, name) in [
        ("backend", "python"),
        ("backend", "extra"),
        ("cache", "local"),
    ] {
        let (_, image) = setup.compose(&format!("one-{name}"), "", &[&format!("--{kind}"), name]);
        let entry = components.iter().find(|c| c["name"] == name).unwrap();
        let written = entry["compressed_size"].as_u64().unwrap();
        let layer_sizes: Vec<u64> = image.manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .collect();
        assert!(
            layer_sizes.iter().any(|&s| s.abs_diff(written) * 100 <= s),
            "{name}: catalog says {written}, the compose wrote layers {layer_sizes:?}"
        );
    }
    assert!(
        catalog["selection"]["saved"].as_u64().is_some(),
        "{catalog}"
    );
    // Again, with the store: nothing is read.
    let args = catalog_args(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, stderr) = run_cli_output(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("reading "), "{stderr}");
}
