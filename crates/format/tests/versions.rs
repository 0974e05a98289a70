//! Version compatibility: a version-1 file written by the version-1 writer (committed as
//! `tests/data/v1-tiny.dcz`, the worked example of `docs/FORMAT.md`) is still read; version 2 adds
//! metadata, layer dtypes and typed tensors; a newer version is refused with a clear message.

use deepcomp_format::{
    ContainerError, DczFile, DenseTensor, Dtype, LayerKind, ModelMeta, SparseLayer, TypedTensor,
    MAX_METADATA_LEN, SUPPORTED_VERSIONS, VERSION,
};

const V1_TINY: &[u8] = include_bytes!("data/v1-tiny.dcz");

fn tiny_layer() -> SparseLayer {
    SparseLayer {
        name: "fc.w".into(),
        kind: LayerKind::Fc,
        shape: vec![2, 10],
        bits: 2,
        index_bits: 3,
        codebook: vec![-1.0, 0.5, 2.0],
        positions: vec![1, 4, 15, 19],
        codes: vec![0, 1, 1, 2],
    }
}

fn v2_file() -> DczFile {
    let meta = ModelMeta {
        arch: Some("resnet20".into()),
        arch_config: Some(serde_json::json!({"num_classes": 10})),
        dataset: Some("cifar10".into()),
        mean: Some(vec![0.485, 0.456, 0.406]),
        std: Some(vec![0.229, 0.224, 0.225]),
        producer: Some("test".into()),
        ..Default::default()
    };
    DczFile {
        model: "tiny".into(),
        channel_scales: Vec::new(),
        recipe_hash: [7; 32],
        layers: vec![tiny_layer()],
        dense: vec![DenseTensor {
            name: "fc.b".into(),
            shape: vec![2],
            data: vec![0.25, -3.0],
        }],
        typed: vec![
            TypedTensor {
                name: "bn.num_batches_tracked".into(),
                dtype: Dtype::I64,
                shape: vec![],
                data: 1234i64.to_le_bytes().to_vec(),
            },
            TypedTensor {
                name: "half.bias".into(),
                dtype: Dtype::F16,
                shape: vec![3],
                data: vec![0x00, 0x3c, 0x00, 0xc0, 0x00, 0x00],
            },
            TypedTensor {
                name: "mask".into(),
                dtype: Dtype::Bool,
                shape: vec![2, 2],
                data: vec![0, 1, 1, 0],
            },
        ],
        layer_dtypes: vec![Dtype::F16],
        metadata: Some(meta.to_json()),
    }
}

#[test]
fn version_1_golden_file_is_still_read() {
    assert_eq!(&V1_TINY[8..10], &[1, 0], "the golden file is version 1");
    let f = DczFile::from_bytes(V1_TINY).unwrap();
    assert_eq!(f.model, "tiny");
    assert_eq!(f.recipe_hash, [7; 32]);
    assert_eq!(f.layers, vec![tiny_layer()]);
    assert_eq!(f.dense.len(), 1);
    assert_eq!(f.dense[0].data, vec![0.25, -3.0]);
    assert!(f.metadata.is_none() && f.typed.is_empty() && f.layer_dtypes.is_empty());
    // Re-written, it becomes a version-2 file with the same content.
    let again = f.to_bytes().unwrap();
    assert_eq!(&again[8..10], &VERSION.to_le_bytes());
    assert_eq!(VERSION, 2);
    assert_eq!(SUPPORTED_VERSIONS, [1, 2]);
    assert_eq!(DczFile::from_bytes(&again).unwrap(), f);
    // v2 header of a file without v2 content: 4 (typed_count) + 1 (one layer dtype) + 4 (meta_len).
    assert_eq!(again.len(), V1_TINY.len() + 9);
    // The version-2 worked example of docs/FORMAT.md.
    assert_eq!(again, include_bytes!("data/v2-tiny.dcz"));
}

#[test]
fn version_2_round_trips_metadata_dtypes_and_typed_tensors() {
    let f = v2_file();
    let bytes = f.to_bytes().unwrap();
    assert_eq!(bytes, f.to_bytes().unwrap(), "deterministic");
    let g = DczFile::from_bytes(&bytes).unwrap();
    assert_eq!(g, f);
    assert_eq!(g.to_bytes().unwrap(), bytes);
    let meta = ModelMeta::from_json(g.metadata.as_deref().unwrap()).unwrap();
    assert_eq!(meta.arch.as_deref(), Some("resnet20"));
    assert_eq!(meta.std.unwrap(), vec![0.229, 0.224, 0.225]);
    // All-F32 layer dtypes read back as "none given".
    let mut h = f.clone();
    h.layer_dtypes = vec![Dtype::F32];
    let back = DczFile::from_bytes(&h.to_bytes().unwrap()).unwrap();
    assert!(back.layer_dtypes.is_empty());
}

#[test]
fn every_truncation_and_flipped_byte_of_a_v2_file_is_an_error() {
    let bytes = v2_file().to_bytes().unwrap();
    for len in 0..bytes.len() {
        assert!(
            DczFile::from_bytes(&bytes[..len]).is_err(),
            "truncated to {len}"
        );
    }
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x41;
        assert!(
            DczFile::from_bytes(&b).is_err(),
            "byte {i} flipped accepted"
        );
    }
}

#[test]
fn newer_version_is_refused_naming_found_and_supported() {
    for bytes in [V1_TINY.to_vec(), v2_file().to_bytes().unwrap()] {
        let mut b = bytes;
        b[8] = 3;
        let e = DczFile::from_bytes(&b).unwrap_err();
        assert!(matches!(e, ContainerError::UnsupportedVersion { found: 3 }));
        let msg = e.to_string();
        assert!(
            msg.contains("version 3") && msg.contains("versions 1 and 2"),
            "{msg}"
        );
    }
}

/// Rewrites the header's metadata field in place (section and file CRCs recomputed).
fn with_raw_metadata(meta: &[u8], declared_len: u32) -> Vec<u8> {
    let mut f = v2_file();
    f.metadata = None;
    f.typed.clear();
    let bytes = f.to_bytes().unwrap();
    // HEAD payload: name (2+4) + hash 32 + 3 counts (12) + 1 dtype + meta_len (4).
    let head_payload_start = 12 + 12;
    let meta_len_pos = head_payload_start + 6 + 32 + 12 + 1;
    let head_end = meta_len_pos + 4;
    let mut out = bytes[..meta_len_pos].to_vec();
    out.extend_from_slice(&declared_len.to_le_bytes());
    out.extend_from_slice(meta);
    let payload_len = (head_end - head_payload_start + meta.len()) as u64;
    out[16..24].copy_from_slice(&payload_len.to_le_bytes());
    let crc = crc32fast::hash(&out[12..]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&bytes[head_end + 4..bytes.len() - 4]);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[test]
fn metadata_block_is_bounded_and_checked() {
    // The surgery itself is right: a valid object is accepted.
    let ok = with_raw_metadata(br#"{"arch":"lenet300"}"#, 19);
    let f = DczFile::from_bytes(&ok).unwrap();
    assert_eq!(f.metadata.as_deref(), Some(r#"{"arch":"lenet300"}"#));
    // A length beyond the bytes that remain, or beyond 1 MiB, is refused before allocation.
    for declared in [1000u32, u32::MAX, (MAX_METADATA_LEN + 1) as u32] {
        let b = with_raw_metadata(br#"{"arch":"lenet300"}"#, declared);
        let e = DczFile::from_bytes(&b).unwrap_err().to_string();
        assert!(e.contains("meta"), "{e}");
    }
    for (bad, why) in [
        (&b"[1,2]"[..], "not an object"),
        (&b"{\"a\":"[..], "not JSON"),
        (&b"\xff\xfe{}"[..], "UTF-8"),
    ] {
        let b = with_raw_metadata(bad, bad.len() as u32);
        let e = DczFile::from_bytes(&b).unwrap_err().to_string();
        assert!(e.contains(why) && e.contains("metadata"), "{e}");
    }
    // The writer refuses the same.
    let mut f = v2_file();
    f.metadata = Some("x".repeat(MAX_METADATA_LEN + 1));
    assert!(f.to_bytes().is_err());
    f.metadata = Some("[]".into());
    assert!(f
        .to_bytes()
        .unwrap_err()
        .to_string()
        .contains("not an object"));
}

#[test]
fn typed_tensors_are_checked_on_write() {
    let mut f = v2_file();
    f.typed[0].data.pop();
    assert!(f
        .to_bytes()
        .unwrap_err()
        .to_string()
        .contains("needs 8 bytes"));
    let mut f = v2_file();
    f.typed[2].data[0] = 2;
    assert!(f.to_bytes().unwrap_err().to_string().contains("BOOL"));
    let mut f = v2_file();
    f.typed[1].name = "fc.w".into();
    assert!(f.to_bytes().unwrap_err().to_string().contains("unique"));
    let mut f = v2_file();
    f.layer_dtypes = vec![Dtype::I64];
    assert!(f
        .to_bytes()
        .unwrap_err()
        .to_string()
        .contains("not a float"));
    let mut f = v2_file();
    f.layer_dtypes = vec![Dtype::F16, Dtype::F16];
    assert!(f.to_bytes().is_err());
}

#[test]
fn typed_floats_convert_to_f32_exactly() {
    let t = |dtype, data: Vec<u8>| TypedTensor {
        name: "t".into(),
        dtype,
        shape: vec![data.len() / dtype.size()],
        data,
    };
    let h: Vec<u8> = [0x3c00u16, 0xc000, 0x7bff, 0x0001, 0x0200, 0x8000]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert_eq!(
        t(Dtype::F16, h).to_f32().unwrap(),
        vec![1.0, -2.0, 65504.0, 2f32.powi(-24), 2f32.powi(-15), -0.0]
    );
    let b: Vec<u8> = [0x3f80u16, 0xbf00]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert_eq!(t(Dtype::BF16, b).to_f32().unwrap(), vec![1.0, -0.5]);
    assert_eq!(
        t(Dtype::F64, 0.25f64.to_le_bytes().to_vec())
            .to_f32()
            .unwrap(),
        vec![0.25]
    );
    assert!(t(Dtype::I64, vec![0; 8]).to_f32().is_none());
}
