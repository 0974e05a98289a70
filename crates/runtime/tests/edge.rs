//! Hand-built files: long gaps (filler entries), wide codebooks, errors.

use deepcomp_format::{DczFile, DenseTensor, LayerKind, SparseLayer};
use deepcomp_runtime::{CompressedModel, RuntimeError};

fn fc_file(
    model: &str,
    out: usize,
    inp: usize,
    codebook: Vec<f32>,
    entries: &[(u64, u32)],
) -> DczFile {
    DczFile {
        model: model.into(),
        recipe_hash: [0; 32],
        layers: vec![SparseLayer {
            name: "fc1.weight".into(),
            kind: LayerKind::Fc,
            shape: vec![out, inp],
            bits: 16,
            index_bits: 8,
            codebook,
            positions: entries.iter().map(|e| e.0).collect(),
            codes: entries.iter().map(|e| e.1).collect(),
        }],
        dense: vec![DenseTensor {
            name: "fc1.bias".into(),
            shape: vec![out],
            data: (0..out).map(|i| i as f32 * 0.25).collect(),
        }],
        ..Default::default()
    }
}

fn dense_forward(file: &DczFile, x: &[f32]) -> Vec<f32> {
    let l = &file.layers[0];
    let (out, inp) = (l.shape[0], l.shape[1]);
    let w = l.to_dense();
    (0..out)
        .map(|o| file.dense[0].data[o] + (0..inp).map(|i| w[o * inp + i] * x[i]).sum::<f32>())
        .collect()
}

#[test]
fn long_gaps_use_fillers() {
    // Rows of 2000 with kept weights 600 and 1900 apart: gaps over 255 need filler entries.
    let entries = [
        (0, 1),
        (1900, 2),
        (2000 + 600, 0),
        (2000 + 1999, 1),
        (3 * 2000 + 1000, 2),
    ];
    let file = fc_file("lenet300", 4, 2000, vec![-1.5, 0.5, 2.0], &entries);
    let model = CompressedModel::from_file(&file).unwrap();
    let x: Vec<f32> = (0..2000).map(|i| (i % 17) as f32 - 8.0).collect();
    let y = model.forward(&x, 1).unwrap();
    assert_eq!(y, dense_forward(&file, &x));
    // Batched path.
    let x2: Vec<f32> = x.iter().chain(x.iter().rev()).copied().collect();
    let y2 = model.forward(&x2, 2).unwrap();
    let rev: Vec<f32> = x.iter().rev().copied().collect();
    assert_eq!(&y2[..4], &dense_forward(&file, &x)[..]);
    assert_eq!(&y2[4..], &dense_forward(&file, &rev)[..]);
}

#[test]
fn wide_codebook_uses_wider_codes() {
    let codebook: Vec<f32> = (0..300).map(|i| i as f32 / 100.0 - 1.0).collect();
    let entries: Vec<(u64, u32)> = (0..300).map(|i| (i as u64 * 3, i as u32)).collect();
    let file = fc_file("mlp", 3, 300, codebook, &entries);
    let model = CompressedModel::from_file(&file).unwrap();
    let x: Vec<f32> = (0..300).map(|i| (i as f32 * 0.37).sin()).collect();
    let y = model.forward(&x, 1).unwrap();
    let r = dense_forward(&file, &x);
    for (a, b) in y.iter().zip(&r) {
        assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "{a} vs {b}");
    }
}

#[test]
fn unknown_model_is_named() {
    let file = fc_file("vgg42", 2, 4, vec![1.0], &[(0, 0)]);
    let err = CompressedModel::from_file(&file).unwrap_err();
    assert!(matches!(err, RuntimeError::UnknownModel { .. }));
    assert!(err.to_string().contains("vgg42"), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let mut file = fc_file("lenet5", 2, 4, vec![1.0], &[(0, 0)]);
    file.layers[0].name = "conv9.weight".into();
    let err = CompressedModel::from_file(&file).unwrap_err();
    assert!(err.to_string().contains("conv1.weight"), "{err}");
}

#[test]
fn bad_shapes_and_inputs_are_errors() {
    let mut file = fc_file("lenet300", 2, 4, vec![1.0], &[(0, 0)]);
    file.dense[0].shape = vec![3];
    file.dense[0].data = vec![0.0; 3];
    let err = CompressedModel::from_file(&file).unwrap_err();
    assert!(err.to_string().contains("fc1.bias"), "{err}");

    let file = fc_file("lenet300", 2, 4, vec![1.0], &[(0, 0)]);
    let model = CompressedModel::from_file(&file).unwrap();
    assert!(model.forward(&[0.0; 5], 1).is_err());
    assert!(model.forward(&[], 0).is_err());
    assert_eq!(
        model.forward(&[1.0; 8], 2).unwrap(),
        vec![1.0, 0.25, 1.0, 0.25]
    );
}

#[test]
fn unreadable_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.dcz");
    std::fs::write(&path, b"not a dcz").unwrap();
    let err = CompressedModel::load(&path).unwrap_err();
    assert!(err.to_string().contains("broken.dcz"), "{err}");
    let ok = dir.path().join("ok.dcz");
    fc_file("lenet300", 2, 4, vec![1.0], &[(0, 0)])
        .write_atomic(&ok)
        .unwrap();
    assert_eq!(CompressedModel::load(&ok).unwrap().model_id(), "lenet300");
}

/// A model whose raw tensors were not f32 (format version 2 `TYPD`): the bias as f16 (values exact in
/// f16) runs as if it were the f32 raw tensor; an integer buffer is ignored.
#[test]
fn typed_float_raw_tensors_are_widened_and_integer_buffers_ignored() {
    use deepcomp_format::{Dtype, TypedTensor};
    let entries = [(0u64, 0u32), (2001, 1), (3 * 2000 + 5, 2)];
    let file = fc_file("lenet300", 4, 2000, vec![-1.5, 0.5, 2.0], &entries);
    let mut typed = file.clone();
    let bias = typed.dense.remove(0);
    // 0, 0.25, 0.5, 0.75 as IEEE half.
    let half: Vec<u8> = [0x0000u16, 0x3400, 0x3800, 0x3a00]
        .iter()
        .flat_map(|h| h.to_le_bytes())
        .collect();
    typed.typed = vec![
        TypedTensor {
            name: bias.name.clone(),
            dtype: Dtype::F16,
            shape: bias.shape.clone(),
            data: half,
        },
        TypedTensor {
            name: "fc1.num_batches_tracked".into(),
            dtype: Dtype::I64,
            shape: vec![],
            data: 5i64.to_le_bytes().to_vec(),
        },
    ];
    let typed = DczFile::from_bytes(&typed.to_bytes().unwrap()).unwrap();
    let x: Vec<f32> = (0..2000).map(|i| (i % 13) as f32 - 6.0).collect();
    let a = CompressedModel::from_file(&file)
        .unwrap()
        .forward(&x, 1)
        .unwrap();
    let b = CompressedModel::from_file(&typed)
        .unwrap()
        .forward(&x, 1)
        .unwrap();
    assert_eq!(a, b);
}
