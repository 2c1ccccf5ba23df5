//! Property tests on the stable toolchain (proptest): everything that reads
//! input from an image or a user takes arbitrary bytes without panicking,
//! and with bounded memory. The number of cases is PROPTEST_CASES (256 by
//! default), so the run in CI is bounded. Crashes found become regression
//! tests below.

use std::io::Write;

use proptest::prelude::*;
use triton_compose::ImageRef;
use triton_compose::{read_layer, LayerItem};

/// A tar header block with the given name, type and size, checksummed.
fn header(name: &[u8], typeflag: u8, size: u64) -> Vec<u8> {
    let mut block = vec![0u8; 512];
    block[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    block[100..107].copy_from_slice(b"0000644");
    block[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    block[156] = typeflag;
    if matches!(typeflag, b'1' | b'2') {
        block[157..163].copy_from_slice(b"target");
    }
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    block[148..156].copy_from_slice(b"        ");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    block
}

fn read_all(data: &[u8]) -> Result<usize, String> {
    let mut count = 0usize;
    read_layer(data, |_, item| {
        if let LayerItem::Entry(entry) = item {
            std::io::copy(entry.content, &mut std::io::sink())?;
        }
        count += 1;
        Ok(())
    })
    .map(|_| count)
    .map_err(|e| e.to_string())
}

fn entry() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(any::<u8>(), 1..40),
        prop::sample::select(vec![
            b'0', b'1', b'2', b'5', b'x', b'L', b'K', b'g', b'S', b'7', 0, b'Z',
        ]),
        0u64..4096,
        prop::collection::vec(any::<u8>(), 0..2048),
    )
        .prop_map(|(name, typeflag, size, data)| {
            let mut out = header(&name, typeflag, size);
            out.extend(data);
            let padded = out.len().div_ceil(512) * 512;
            out.resize(padded, 0);
            out
        })
}

proptest! {
    #[test]
    fn the_layer_reader_takes_any_bytes(data in prop::collection::vec(any::<u8>(), 0..8192)) {
        let _ = read_all(&data);
    }

    #[test]
    fn the_layer_reader_takes_any_sequence_of_headers(entries in prop::collection::vec(entry(), 0..12), tail in 0usize..3) {
        let mut archive: Vec<u8> = entries.concat();
        archive.extend(vec![0u8; 512 * tail]);
        let _ = read_all(&archive);
    }

    #[test]
    fn gzip_of_any_tar_is_read_the_same(entries in prop::collection::vec(entry(), 0..6)) {
        let mut archive: Vec<u8> = entries.concat();
        archive.extend(vec![0u8; 1024]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&archive).unwrap();
        let compressed = gz.finish().unwrap();
        prop_assert_eq!(read_all(&archive).is_ok(), read_all(&compressed).is_ok());
    }

    #[test]
    fn manifests_of_any_shape_are_parsed_or_refused(value in json_value(3)) {
        let bytes = serde_json::to_vec(&value).unwrap();
        let _ = triton_compose::parse_document(&bytes, "fuzzed");
        let _ = triton_compose::parse_document_as(&bytes, "fuzzed", "application/vnd.oci.image.index.v1+json");
    }

    #[test]
    fn manifest_bytes_of_any_kind_are_parsed_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = triton_compose::parse_document(&bytes, "fuzzed");
    }

    #[test]
    fn the_elf_reader_takes_any_bytes(mut bytes in prop::collection::vec(any::<u8>(), 0..4096), elf_head in any::<bool>()) {
        if elf_head && bytes.len() >= 64 {
            bytes[..4].copy_from_slice(b"\x7fELF");
            bytes[4] = 2; // 64-bit
            bytes[5] = 1; // little endian
        }
        let len = bytes.len() as u64;
        let _ = triton_compose::read_elf(&bytes[..], len);
        let _ = triton_compose::read_elf(&bytes[..], len.saturating_mul(3));
    }

    #[test]
    fn image_references_of_any_text_are_parsed_or_refused(text in "\\PC{0,80}") {
        let _ = text.parse::<ImageRef>();
        let _ = format!("docker://{text}").parse::<ImageRef>();
        let _ = triton_compose::RegistryReference::parse(&text);
    }
}

/// Arbitrary JSON, biased toward manifest-like keys.
fn json_value(depth: u32) -> BoxedStrategy<serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.config.v1+json",
            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "sha256:xyz",
            "",
        ])
        .prop_map(serde_json::Value::from),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    let key = prop::sample::select(vec![
        "schemaVersion",
        "mediaType",
        "config",
        "layers",
        "manifests",
        "digest",
        "size",
        "platform",
        "annotations",
        "os",
        "architecture",
        "other",
    ]);
    prop_oneof![
        leaf,
        prop::collection::vec(json_value(depth - 1), 0..4).prop_map(serde_json::Value::from),
        prop::collection::btree_map(key, json_value(depth - 1), 0..6).prop_map(|m| {
            serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        }),
    ]
    .boxed()
}

#[test]
fn regression_a_link_header_claiming_data_does_not_hide_the_next_entry() {
    let mut archive = header(b"link", b'2', 1024);
    archive.extend(header(b"after", b'0', 0));
    archive.extend(vec![0u8; 1024]);
    assert_eq!(read_all(&archive), Ok(2));
}
