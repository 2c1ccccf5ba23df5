//! A corpus of hostile and malformed images, built in code: traversal, link
//! escapes, whiteout abuse, PAX and GNU bombs, boundary disagreements, size
//! overflows, duplicate entries, digest, size and diff-id mismatches, and
//! injection through the config. Each composes to a clear error with
//! nothing written, or to a valid image holding nothing hostile; never a
//! panic, and never more than 256 MiB of memory.

mod support;

use std::path::Path;

use support::*;

/// How a case changes the full image.
enum Change {
    /// One more layer on top of full, as raw tar bytes.
    Layer(Vec<u8>),
    /// The full image's config (and so its diff-ids) edited.
    Config(Box<dyn Fn(&mut TestImage)>),
    /// The written OCI layout edited (manifest, blobs).
    Layout(Box<dyn Fn(&Path)>),
}

/// What a case must end in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    Error,
    /// A valid image; the closure checks it holds nothing hostile.
    Image,
}

fn raw(name: &[u8], typeflag: u8, size: u64, link: &[u8]) -> Vec<u8> {
    let mut block = vec![0u8; 512];
    block[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    block[100..107].copy_from_slice(b"0000644");
    block[108..115].copy_from_slice(b"0000000");
    block[116..123].copy_from_slice(b"0000000");
    if size < 1 << 33 {
        block[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    } else {
        // GNU base-256, as tools write sizes past 8 GiB.
        block[124] = 0x80;
        block[128..136].copy_from_slice(&size.to_be_bytes());
    }
    block[136..147].copy_from_slice(b"00000000000");
    block[156] = typeflag;
    block[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    checksum(&mut block);
    block
}

fn checksum(block: &mut [u8]) {
    block[148..156].copy_from_slice(b"        ");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
}

fn pad(mut data: Vec<u8>) -> Vec<u8> {
    data.resize(data.len().div_ceil(512) * 512, 0);
    data
}

fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (key, value) in records {
        let rest = key.len() + value.len() + 3;
        let mut len = rest + rest.to_string().len();
        if (len).to_string().len() != rest.to_string().len() {
            len += 1;
        }
        body.extend(format!("{len} {key}=").as_bytes());
        body.extend(*value);
        body.push(b'\n');
    }
    let mut out = raw(b"PaxHeaders/x", b'x', body.len() as u64, b"");
    out.extend(pad(body));
    out
}

const PY: &str = "opt/tritonserver/backends/python";

fn layer(parts: Vec<Vec<u8>>) -> Change {
    let mut data: Vec<u8> = parts.concat();
    data.extend(vec![0u8; 1024]);
    Change::Layer(data)
}

fn file_entry(name: &str, data: &[u8]) -> Vec<u8> {
    let mut out = raw(name.as_bytes(), b'0', data.len() as u64, b"");
    out.extend(pad(data.to_vec()));
    out
}

fn cases() -> Vec<(&'static str, Change, Expect)> {
    let py = |rest: &str| format!("{PY}/{rest}");
    let mut cases: Vec<(&'static str, Change, Expect)> = vec![
        // Traversal.
        (
            "dotdot",
            layer(vec![raw(b"../../etc/evil", b'0', 0, b"")]),
            Expect::Error,
        ),
        (
            "dotdot-inner",
            layer(vec![raw(
                format!("{PY}/../../../../etc/x").as_bytes(),
                b'0',
                0,
                b"",
            )]),
            Expect::Error,
        ),
        (
            "dotdot-pax",
            layer(vec![pax(&[("path", b"../x")]), raw(b"y", b'0', 0, b"")]),
            Expect::Error,
        ),
        (
            "dotdot-longname",
            layer(vec![
                raw(b"././@LongLink", b'L', 6, b""),
                pad(b"../x\0\0".to_vec()),
                raw(b"y", b'0', 0, b""),
            ]),
            Expect::Error,
        ),
        (
            "nul-in-name",
            layer(vec![pax(&[("path", b"a\0b")]), raw(b"y", b'0', 0, b"")]),
            Expect::Error,
        ),
        // Link escapes.
        (
            "hardlink-dotdot",
            layer(vec![raw(
                py("h").as_bytes(),
                b'1',
                0,
                b"../../../etc/shadow",
            )]),
            Expect::Error,
        ),
        (
            "hardlink-dangling",
            layer(vec![raw(py("h").as_bytes(), b'1', 0, b"nowhere/x")]),
            Expect::Error,
        ),
        (
            "symlink-parent",
            layer(vec![
                raw(py("evil").as_bytes(), b'2', 0, b"/etc"),
                file_entry(&py("evil/passwd"), b"x"),
            ]),
            Expect::Error,
        ),
        (
            "hardlink-through-symlink",
            layer(vec![
                raw(py("evil").as_bytes(), b'2', 0, b"/etc"),
                raw(py("h").as_bytes(), b'1', 0, py("evil/shadow").as_bytes()),
            ]),
            Expect::Error,
        ),
        (
            "symlink-empty-target",
            layer(vec![raw(py("s").as_bytes(), b'2', 0, b"")]),
            Expect::Error,
        ),
        // A symlink pointing out is data: kept as a link, never followed.
        (
            "symlink-outward",
            layer(vec![raw(
                py("out").as_bytes(),
                b'2',
                0,
                b"../../../../etc/shadow",
            )]),
            Expect::Image,
        ),
        // Whiteout abuse.
        (
            "whiteout-empty",
            layer(vec![raw(b"opt/.wh.", b'0', 0, b"")]),
            Expect::Error,
        ),
        (
            "whiteout-dot",
            layer(vec![raw(b"opt/.wh..", b'0', 0, b"")]),
            Expect::Error,
        ),
        (
            "whiteout-dotdot",
            layer(vec![raw(b"opt/.wh...", b'0', 0, b"")]),
            Expect::Error,
        ),
        (
            "whiteout-triton",
            layer(vec![raw(b"opt/.wh.tritonserver", b'0', 0, b"")]),
            Expect::Error,
        ),
        (
            "opaque-root-of-triton",
            layer(vec![raw(b"opt/tritonserver/.wh..wh..opq", b'0', 0, b"")]),
            Expect::Error,
        ),
        (
            "whiteout-aufs",
            layer(vec![raw(
                format!("{PY}/.wh..wh.plnk").as_bytes(),
                b'0',
                0,
                b"",
            )]),
            Expect::Image,
        ),
        // PAX and GNU bombs.
        (
            "longname-bomb",
            layer(vec![
                raw(b"././@LongLink", b'L', 1 << 40, b""),
                vec![0; 1024],
            ]),
            Expect::Error,
        ),
        (
            "longlink-bomb",
            layer(vec![
                raw(b"././@LongLink", b'K', 1 << 33, b""),
                vec![0; 1024],
            ]),
            Expect::Error,
        ),
        (
            "pax-bomb",
            layer(vec![
                raw(b"PaxHeaders/x", b'x', 1 << 40, b""),
                vec![0; 1024],
            ]),
            Expect::Error,
        ),
        (
            "global-pax-bomb",
            layer(vec![
                raw(b"PaxHeaders/g", b'g', 1 << 36, b""),
                vec![0; 1024],
            ]),
            Expect::Error,
        ),
        (
            "pax-bad-length",
            layer(vec![
                raw(b"PaxHeaders/x", b'x', 16, b""),
                pad(b"999 path=abcdef\n".to_vec()),
                raw(b"y", b'0', 0, b""),
            ]),
            Expect::Error,
        ),
        (
            "pax-no-equals",
            layer(vec![
                raw(b"PaxHeaders/x", b'x', 10, b""),
                pad(b"10 pathab\n".to_vec()),
                raw(b"y", b'0', 0, b""),
            ]),
            Expect::Error,
        ),
        (
            "pax-size-garbage",
            layer(vec![
                pax(&[("size", b"12x")]),
                raw(py("f").as_bytes(), b'0', 0, b""),
            ]),
            Expect::Error,
        ),
        (
            "xattr-flood",
            layer(vec![
                pax(&(0..200)
                    .map(|i| {
                        (
                            Box::leak(format!("SCHILY.xattr.user.a{i}").into_boxed_str()) as &str,
                            b"v" as &[u8],
                        )
                    })
                    .collect::<Vec<_>>()),
                raw(py("f").as_bytes(), b'0', 0, b""),
            ]),
            Expect::Error,
        ),
        (
            "gnu-sparse",
            layer(vec![raw(py("sparse").as_bytes(), b'S', 0, b"")]),
            Expect::Error,
        ),
        (
            "pax-sparse",
            layer(vec![
                pax(&[("GNU.sparse.major", b"1")]),
                raw(py("f").as_bytes(), b'0', 0, b""),
            ]),
            Expect::Error,
        ),
        // Boundary disagreements: link and directory headers carry no data.
        (
            "link-with-size",
            layer(vec![
                raw(py("l").as_bytes(), b'2', 1024, b"x"),
                file_entry(&py("after"), b"ok"),
            ]),
            Expect::Image,
        ),
        (
            "dir-with-pax-size",
            layer(vec![
                pax(&[("size", b"4096")]),
                raw(py("d/").as_bytes(), b'5', 0, b""),
                file_entry(&py("d/after"), b"ok"),
            ]),
            Expect::Image,
        ),
        (
            "hardlink-with-size",
            layer(vec![
                file_entry(&py("t"), b"t"),
                raw(py("h").as_bytes(), b'1', 512, py("t").as_bytes()),
                file_entry(&py("after2"), b"ok"),
            ]),
            Expect::Image,
        ),
        // Size overflows and unreadable numbers.
        (
            "size-base256-huge",
            {
                let mut h = raw(py("f").as_bytes(), b'0', 0, b"");
                h[124] = 0x80;
                h[125..136].fill(0xff);
                checksum(&mut h);
                layer(vec![h])
            },
            Expect::Error,
        ),
        (
            "size-negative",
            {
                let mut h = raw(py("f").as_bytes(), b'0', 0, b"");
                h[124..136].fill(0xff);
                checksum(&mut h);
                layer(vec![h])
            },
            Expect::Error,
        ),
        (
            "size-octal-garbage",
            {
                let mut h = raw(py("f").as_bytes(), b'0', 0, b"");
                h[124..135].copy_from_slice(b"00000009zz9");
                checksum(&mut h);
                layer(vec![h])
            },
            Expect::Error,
        ),
        (
            "size-past-end",
            layer(vec![
                raw(py("f").as_bytes(), b'0', 1 << 30, b""),
                vec![0; 512],
            ]),
            Expect::Error,
        ),
        (
            "bad-checksum",
            {
                let mut h = raw(py("f").as_bytes(), b'0', 0, b"");
                h[0] ^= 1;
                layer(vec![h])
            },
            Expect::Error,
        ),
        (
            "unknown-type",
            layer(vec![raw(py("z").as_bytes(), b'Z', 0, b"")]),
            Expect::Error,
        ),
        (
            "truncated-header",
            Change::Layer(raw(py("f").as_bytes(), b'0', 0, b"")[..300].to_vec()),
            Expect::Error,
        ),
        (
            "zero-block-then-more",
            layer(vec![vec![0; 512], raw(py("f").as_bytes(), b'0', 0, b"")]),
            Expect::Error,
        ),
        // Duplicates: the last entry wins, as Docker applies it.
        (
            "duplicate-entries",
            layer(vec![
                file_entry(&py("dup"), b"first"),
                file_entry(&py("dup"), b"second"),
            ]),
            Expect::Image,
        ),
    ];
    // Mismatches between config, manifest and blobs.
    cases.push((
        "diff-id-lies",
        Change::Config(Box::new(|full: &mut TestImage| {
            full.diff_ids_override = Some(vec![
                format!("sha256:{}", "0".repeat(64));
                full.layers.len()
            ]);
        })),
        Expect::Error,
    ));
    cases.push((
        "diff-ids-too-few",
        Change::Config(Box::new(|full: &mut TestImage| {
            let mut ids = full.diff_ids();
            ids.pop();
            full.diff_ids_override = Some(ids);
        })),
        Expect::Error,
    ));
    cases.push((
        "blob-size-lies",
        Change::Layout(Box::new(|dir: &Path| {
            edit_manifest(dir, |m| {
                let size = m["layers"][1]["size"].as_u64().unwrap();
                m["layers"][1]["size"] = (size + 7).into();
            })
        })),
        Expect::Error,
    ));
    cases.push((
        "blob-digest-lies",
        Change::Layout(Box::new(|dir: &Path| {
            let path = layer_blob(dir, 1);
            let mut bytes = std::fs::read(&path).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x20;
            std::fs::write(path, bytes).unwrap();
        })),
        Expect::Error,
    ));
    cases.push((
        "schema-1",
        Change::Layout(Box::new(|dir: &Path| {
            edit_manifest(dir, |m| m["schemaVersion"] = 1.into())
        })),
        Expect::Error,
    ));
    cases.push((
        "layer-typed-manifest",
        Change::Layout(Box::new(|dir: &Path| {
            edit_manifest(dir, |m| {
                m["layers"][0]["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
            })
        })),
        Expect::Error,
    ));
    cases.push((
        "both-layers-and-manifests",
        Change::Layout(Box::new(|dir: &Path| {
            edit_manifest(dir, |m| {
                m["manifests"] = serde_json::json!([]);
            })
        })),
        Expect::Error,
    ));
    cases.push((
        "blob-is-symlink",
        Change::Layout(Box::new(|dir: &Path| {
            let path = layer_blob(dir, 1);
            let moved = dir.join("elsewhere");
            std::fs::rename(&path, &moved).unwrap();
            std::os::unix::fs::symlink(&moved, &path).unwrap();
        })),
        Expect::Error,
    ));
    // Injection through the config.
    for (name, key, value) in [
        (
            "env-newline",
            "NVIDIA_TRITON_SERVER_VERSION",
            "24.10\nRUN touch /pwned",
        ),
        (
            "env-carriage-return",
            "TRITON_SERVER_VERSION",
            "2.51.0\rRUN x",
        ),
    ] {
        cases.push((
            name,
            Change::Config(Box::new(move |full: &mut TestImage| {
                full.env.retain(|e| !e.starts_with(&format!("{key}=")));
                full.env.push(format!("{key}={value}"));
            })),
            Expect::Error,
        ));
    }
    cases.push((
        "label-newline",
        Change::Config(Box::new(|full: &mut TestImage| {
            full.labels
                .insert("com.nvidia.build.ref".into(), "x\nRUN y".into());
        })),
        Expect::Error,
    ));
    cases.push((
        "label-quotes-and-backslash",
        Change::Config(Box::new(|full: &mut TestImage| {
            full.labels
                .insert("com.nvidia.build.ref".into(), "a\" \\ $(b)".into());
        })),
        Expect::Image,
    ));
    cases
}

/// The blob file of layer `index` of an OCI layout's first image.
fn layer_blob(dir: &Path, index: usize) -> std::path::PathBuf {
    let read = |path: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let manifest_digest = read(dir.join("index.json"))["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = read(dir.join("blobs/sha256").join(&manifest_digest[7..]));
    let layer = manifest["layers"][index]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    dir.join("blobs/sha256").join(&layer[7..])
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("blobs/sha256").join(&digest[7..])).unwrap(),
    )
    .unwrap();
    edit(&mut manifest);
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let new = sha256(&bytes);
    std::fs::write(dir.join("blobs/sha256").join(&new[7..]), &bytes).unwrap();
    index["manifests"][0]["digest"] = new.into();
    index["manifests"][0]["size"] = bytes.len().into();
    std::fs::write(index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn a_corpus_of_hostile_images_gives_clear_errors_or_clean_images() {
    let cases = cases();
    let total = cases.len();
    assert!(total >= 40, "the corpus has {total} images");
    let root = tempfile::tempdir().unwrap();
    let min = min_image();
    min.write_oci(&root.path().join("min"), "latest");
    let min_arg = format!("min,oci:{}:latest", root.path().join("min").display());
    let mut failures = Vec::new();
    for (name, change, expect) in cases {
        let dir = root.path().join(name);
        let mut full = full_image(&min);
        match &change {
            Change::Layer(bytes) => full.layers.push(bytes.clone()),
            Change::Config(edit) => edit(&mut full),
            Change::Layout(_) => {}
        }
        full.write_oci(&dir.join("full"), "x");
        if let Change::Layout(edit) = &change {
            edit(&dir.join("full"));
        }
        let out = dir.join("out");
        let full_arg = format!("full,oci:{}:x", dir.join("full").display());
        let output = format!("oci:{}:x", out.display());
        let work = dir.join("work");
        let (ok, stderr, peak_kib) = run_measuring_rss(&[
            "--enable-gpu=false",
            "--backend",
            "python",
            "--image",
            &min_arg,
            "--image",
            &full_arg,
            "--work-dir",
            work.to_str().unwrap(),
            "--output",
            &output,
        ]);
        let mut problems = Vec::new();
        if stderr.contains("panicked") {
            problems.push("panicked".to_string());
        }
        if peak_kib >= 256 << 10 {
            problems.push(format!("peak RSS {} MiB", peak_kib >> 10));
        }
        match (expect, ok) {
            (Expect::Error, false) => {
                if !stderr.contains("error: ") {
                    problems.push("no error message".into());
                }
                if out.exists() {
                    problems.push("output written".into());
                }
            }
            (Expect::Image, true) => {
                let image = read_oci(&out, "x");
                for path in image.tree.keys() {
                    let name = path.rsplit('/').next().unwrap_or("");
                    if path.split('/').any(|c| c == "..") || name.starts_with(".wh.") {
                        problems.push(format!("hostile entry {path} in the output"));
                    }
                }
            }
            (expected, ok) => problems.push(format!("expected {expected:?}, got success={ok}")),
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {}\n{stderr}", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!("{total} hostile or malformed images: each a clear error or a clean image");
}
