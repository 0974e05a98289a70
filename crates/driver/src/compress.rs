//! Post-training compression of any safetensors file, and the way back.
//!
//! `deepcomp compress` needs no data and no architecture: every rank-2 tensor is treated as an fc weight
//! and every rank-4 tensor as a conv weight (both pruned and shared); everything else (biases, BatchNorm,
//! buffers) is stored raw. Pruning is per-layer magnitude by percentile (`q`) or by `s`·std; weight
//! sharing is k-means with the given bits. `deepcomp decompress` writes the decoded tensors back to a
//! safetensors file with the original names, loadable by PyTorch's `safetensors.torch.load_file`.

use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use sha2::{Digest, Sha256};

use crate::container::{DczFile, DenseTensor, LayerKind};
use crate::error::{DriverError, Result};
use crate::fsutil;

/// How to prune and share without data.
#[derive(Debug, Clone)]
pub struct CompressOptions {
    /// Per-layer pruning percentile in [0, 100) (ignored when `std_s` is set).
    pub q: f64,
    /// Han's rule: prune |w| < s·std (per layer).
    pub std_s: Option<f64>,
    /// Bits of fc (rank-2) weights.
    pub fc_bits: u8,
    /// Bits of conv (rank-4) weights.
    pub conv_bits: u8,
    /// Centroid initialization.
    pub init: deepcomp_quant::Init,
    /// Relative-index field width; `None` picks the smallest per layer.
    pub index_bits: Option<u8>,
    /// Model name stored in the header.
    pub model_name: String,
}

impl Default for CompressOptions {
    fn default() -> Self {
        Self {
            q: 90.0,
            std_s: None,
            fc_bits: 5,
            conv_bits: 8,
            init: deepcomp_quant::Init::Linear,
            index_bits: None,
            model_name: "safetensors".into(),
        }
    }
}

/// A tensor read from a safetensors file.
#[derive(Debug, Clone)]
pub struct NamedTensor {
    /// Name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values (f32; f64/f16/bf16 files are converted).
    pub data: Vec<f32>,
}

/// Reads every floating-point tensor of a safetensors file, in file order (sorted by name).
pub fn read_safetensors(path: &Path) -> Result<Vec<NamedTensor>> {
    let bytes = std::fs::read(path).map_err(|e| DriverError::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        DriverError::msg(format!("{}: not a safetensors file: {e}", path.display()))
    })?;
    let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let view = st
            .tensor(&name)
            .map_err(|e| DriverError::msg(format!("{}: tensor `{name}`: {e}", path.display())))?;
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            // Integer tensors (e.g. BatchNorm's num_batches_tracked) carry no weights: skipped.
            _ => continue,
        };
        out.push(NamedTensor {
            name,
            shape: view.shape().to_vec(),
            data,
        });
    }
    Ok(out)
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if frac == 0 => sign,
        0 => {
            // subnormal: normalize
            let mut e = 127 - 15 + 1;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((f & 0x3ff) << 13)
        }
        0x1f => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// Writes named f32 tensors to a safetensors file (atomically).
pub fn write_safetensors(path: &Path, tensors: &[NamedTensor]) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let mut views = Vec::new();
    for (t, b) in tensors.iter().zip(&bytes) {
        let v = TensorView::new(Dtype::F32, t.shape.clone(), b)
            .map_err(|e| DriverError::msg(format!("tensor `{}`: {e}", t.name)))?;
        views.push((t.name.clone(), v));
    }
    let out = safetensors::tensor::serialize(views, None)
        .map_err(|e| DriverError::msg(format!("{}: {e}", path.display())))?;
    fsutil::write_atomic(path, &out)
}

/// Prunes, shares and encodes tensors into a `.dcz` file structure.
pub fn compress_tensors(tensors: &[NamedTensor], opts: &CompressOptions) -> Result<DczFile> {
    if !(0.0..100.0).contains(&opts.q) {
        return Err(DriverError::msg(format!(
            "--q {} is outside [0, 100)",
            opts.q
        )));
    }
    // Every tensor, raw ones included, before anything is pruned or written: a NaN would make the
    // written file differ from itself on read-back, and an infinity has no place in a codebook.
    for t in tensors {
        if let Some((i, v)) = t.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(DriverError::msg(format!(
                "tensor `{}`: element {i} is {v}; compress needs finite values",
                t.name
            )));
        }
    }
    let mut layers = Vec::new();
    let mut dense = Vec::new();
    for t in tensors {
        let kind = match t.shape.len() {
            // An empty weight tensor has nothing to prune or share: stored raw.
            2 | 4 if t.data.is_empty() => {
                dense.push(DenseTensor {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    data: Vec::new(),
                });
                continue;
            }
            2 => LayerKind::Fc,
            4 => LayerKind::Conv,
            _ => {
                dense.push(DenseTensor {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    data: t.data.clone(),
                });
                continue;
            }
        };
        let threshold = match opts.std_s {
            Some(s) => {
                if s.is_nan() || s < 0.0 {
                    return Err(DriverError::msg(format!("--std {s} must be ≥ 0")));
                }
                s as f32 * deepcomp_sparsity::torch_std(&t.data).unwrap_or(0.0)
            }
            None => {
                let abs: Vec<f32> = t.data.iter().map(|v| v.abs()).collect();
                if opts.q == 0.0 {
                    0.0
                } else {
                    deepcomp_sparsity::numpy_percentile(&abs, opts.q).map_err(|e| {
                        DriverError::msg(format!("tensor `{}`: pruning percentile: {e}", t.name))
                    })?
                }
            }
        };
        let keep: Vec<bool> = t
            .data
            .iter()
            .map(|v| v.abs() >= threshold && *v != 0.0)
            .collect();
        let bits = if kind == LayerKind::Conv {
            opts.conv_bits
        } else {
            opts.fc_bits
        };
        let shared = deepcomp_quant::share_weights(&t.data, Some(&keep), bits, opts.init)?;
        layers.push(crate::pipeline::sparse_layer(
            &t.name,
            kind,
            &t.shape,
            &shared,
            opts.index_bits,
        )?);
    }
    let mut hasher = Sha256::new();
    hasher.update(format!("{opts:?}").as_bytes());
    Ok(DczFile {
        model: opts.model_name.clone(),
        recipe_hash: hasher.finalize().into(),
        layers,
        dense,
        ..Default::default()
    })
}

/// The decoded tensors of a `.dcz` file, layers first then raw tensors.
pub fn decoded_tensors(file: &DczFile) -> Vec<NamedTensor> {
    let mut out: Vec<NamedTensor> = file
        .layers
        .iter()
        .map(|l| NamedTensor {
            name: l.name.clone(),
            shape: l.shape.clone(),
            data: l.to_dense(),
        })
        .collect();
    out.extend(file.dense.iter().map(|d| NamedTensor {
        name: d.name.clone(),
        shape: d.shape.clone(),
        data: d.data.clone(),
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors() -> Vec<NamedTensor> {
        let w: Vec<f32> = (0..600).map(|i| ((i as f32) * 0.731).sin() * 0.1).collect();
        let c: Vec<f32> = (0..2 * 3 * 3 * 3)
            .map(|i| ((i as f32) * 1.3).cos() * 0.2)
            .collect();
        vec![
            NamedTensor {
                name: "fc.weight".into(),
                shape: vec![20, 30],
                data: w,
            },
            NamedTensor {
                name: "fc.bias".into(),
                shape: vec![20],
                data: (0..20).map(|i| i as f32 * 0.01).collect(),
            },
            NamedTensor {
                name: "conv.weight".into(),
                shape: vec![2, 3, 3, 3],
                data: c,
            },
        ]
    }

    #[test]
    fn compress_decompress_round_trip_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.safetensors");
        write_safetensors(&input, &tensors()).unwrap();
        let read = read_safetensors(&input).unwrap();
        assert_eq!(read.len(), 3);
        let opts = CompressOptions {
            q: 75.0,
            ..Default::default()
        };
        let file = compress_tensors(&read, &opts).unwrap();
        assert_eq!(file.layers.len(), 2);
        let fc = file.layers.iter().find(|l| l.name == "fc.weight").unwrap();
        assert_eq!(
            fc.positions.len(),
            150,
            "75th percentile keeps a quarter of 600"
        );
        assert!(fc.codebook.len() <= 32);
        let dcz = dir.path().join("m.dcz");
        file.write_atomic(&dcz).unwrap();
        let back = DczFile::read(&dcz).unwrap();
        let out = dir.path().join("out.safetensors");
        write_safetensors(&out, &decoded_tensors(&back)).unwrap();
        let dec = read_safetensors(&out).unwrap();
        let bias = dec.iter().find(|t| t.name == "fc.bias").unwrap();
        assert_eq!(bias.data, tensors()[1].data, "raw tensors are exact");
        let w = dec.iter().find(|t| t.name == "fc.weight").unwrap();
        assert_eq!(w.data.iter().filter(|v| **v != 0.0).count(), 150);
        let orig = &tensors()[0].data;
        let max_err = w
            .data
            .iter()
            .zip(orig)
            .filter(|(d, _)| **d != 0.0)
            .map(|(d, o)| (d - o).abs())
            .fold(0.0f32, f32::max);
        assert!(max_err < 0.2 / 31.0, "5-bit sharing error {max_err}");
    }

    #[test]
    fn not_a_safetensors_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk.safetensors");
        std::fs::write(&p, b"hello world").unwrap();
        let e = read_safetensors(&p).unwrap_err().to_string();
        assert!(
            e.contains("junk.safetensors") && e.contains("not a safetensors"),
            "{e}"
        );
    }

    #[test]
    fn nan_weights_are_rejected_with_the_tensor_name() {
        let mut t = tensors();
        t[0].data[7] = f32::NAN;
        let e = compress_tensors(&t, &CompressOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("fc.weight") && e.contains("element 7"), "{e}");
        assert!(e.contains("NaN"), "{e}");
    }

    #[test]
    fn non_finite_values_in_any_tensor_are_rejected_before_writing() {
        // A raw (rank-1) tensor too: its NaN used to reach the file and fail the read-back check.
        for (i, v) in [
            (1usize, f32::NAN),
            (1, f32::INFINITY),
            (0, f32::NEG_INFINITY),
        ] {
            let mut t = tensors();
            t[i].data[3] = v;
            let e = compress_tensors(&t, &CompressOptions::default())
                .unwrap_err()
                .to_string();
            let name = &t[i].name;
            assert!(
                e.contains(name.as_str()) && e.contains("element 3") && e.contains("finite"),
                "{e}"
            );
        }
    }

    #[test]
    fn empty_weight_tensors_are_stored_raw() {
        let mut t = tensors();
        t.push(NamedTensor {
            name: "empty.weight".into(),
            shape: vec![0, 5],
            data: vec![],
        });
        t.push(NamedTensor {
            name: "empty.conv".into(),
            shape: vec![4, 0, 3, 3],
            data: vec![],
        });
        let file = compress_tensors(&t, &CompressOptions::default()).unwrap();
        assert_eq!(file.layers.len(), 2);
        let e = file
            .dense
            .iter()
            .find(|d| d.name == "empty.weight")
            .unwrap();
        assert_eq!((e.shape.as_slice(), e.data.len()), (&[0usize, 5][..], 0));
        assert!(file.dense.iter().any(|d| d.name == "empty.conv"));
        let back = DczFile::from_bytes(&file.to_bytes().unwrap()).unwrap();
        assert_eq!(back, file);
    }

    #[test]
    fn f16_conversion_matches_known_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0000), 0.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    }
}
