//! # deepcomp (Python)
//!
//! The Python face of the `.dcz` reader: a thin PyO3 module over `deepcomp-format`, with no other
//! deepcomp crate and no candle. It hands each decoded tensor to Python as its shape, its original
//! element type, the type of the bytes handed over (`F32` for decoded layers and `DENS` tensors, the
//! stored type for typed raw tensors) and those little-endian bytes; the pure-Python wrapper
//! (`deepcomp/__init__.py`) turns them into numpy arrays of the original type with
//! `numpy.frombuffer`, so the extension needs no numpy headers and builds as one abi3 wheel for every
//! CPython from 3.8. Errors (unreadable file, bad container) become `ValueError`s
//! naming the file and the reason.

use std::path::{Path, PathBuf};

use deepcomp_format::{layer_stats, DczFile};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

fn read(path: &Path) -> PyResult<DczFile> {
    DczFile::read(path).map_err(|e| PyValueError::new_err(format!("{}: {e}", path.display())))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `{name: (shape, dtype, stored_dtype, bytes)}` of every tensor, decoded dense: `dtype` is the
/// tensor's original element type (safetensors names: `F32`, `F16`, `BF16`, `I64`, …), `bytes` are
/// little-endian values of type `stored_dtype` (`F32` for shared layers and `f32` raw tensors, which
/// the wrapper converts to `dtype`; the original type for typed raw tensors, stored as they were).
#[pyfunction]
fn load_raw<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let file = read(&path)?;
    let out = PyDict::new(py);
    for (i, l) in file.layers.iter().enumerate() {
        l.validate()
            .map_err(|e| PyValueError::new_err(format!("{}: {e}", path.display())))?;
        // Scaled per channel where the file has channel scales.
        let dense = file.layer_values(i);
        let dtype = file.layer_dtypes.get(i).copied().unwrap_or_default();
        out.set_item(
            &l.name,
            (
                l.shape.clone(),
                dtype.name(),
                "F32",
                PyBytes::new(py, &f32_bytes(&dense)),
            ),
        )?;
    }
    for d in &file.dense {
        out.set_item(
            &d.name,
            (
                d.shape.clone(),
                "F32",
                "F32",
                PyBytes::new(py, &f32_bytes(&d.data)),
            ),
        )?;
    }
    for t in &file.typed {
        out.set_item(
            &t.name,
            (
                t.shape.clone(),
                t.dtype.name(),
                t.dtype.name(),
                PyBytes::new(py, &t.data),
            ),
        )?;
    }
    Ok(out)
}

/// Model id, recipe hash and per-layer statistics.
#[pyfunction]
fn inspect<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let file = read(&path)?;
    let stats = layer_stats(&file)
        .map_err(|e| PyValueError::new_err(format!("{}: {e}", path.display())))?;
    let out = PyDict::new(py);
    out.set_item("model", &file.model)?;
    out.set_item(
        "recipe_hash",
        file.recipe_hash
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )?;
    let layers = PyDict::new(py);
    for (s, l) in stats.iter().zip(&file.layers) {
        let d = PyDict::new(py);
        d.set_item("shape", l.shape.clone())?;
        d.set_item("params", s.params)?;
        d.set_item("nonzero", s.nonzero)?;
        d.set_item("density", s.nonzero as f64 / (s.params.max(1)) as f64)?;
        d.set_item("bits", s.bits)?;
        d.set_item("index_bits", s.index_bits)?;
        d.set_item("codebook", l.codebook.clone())?;
        d.set_item("bytes", s.bytes)?;
        layers.set_item(&s.name, d)?;
    }
    out.set_item("layers", layers)?;
    let dense = PyDict::new(py);
    for t in &file.dense {
        dense.set_item(&t.name, t.shape.clone())?;
    }
    out.set_item("dense", dense)?;
    let typed = PyDict::new(py);
    for t in &file.typed {
        typed.set_item(&t.name, (t.shape.clone(), t.dtype.name()))?;
    }
    out.set_item("typed", typed)?;
    out.set_item(
        "layer_dtypes",
        file.layer_dtypes
            .iter()
            .map(|d| d.name())
            .collect::<Vec<_>>(),
    )?;
    // The metadata block as JSON text (the wrapper parses it), or None.
    out.set_item("metadata", file.metadata.clone())?;
    Ok(out)
}

/// Writes a small version-2 file for tests: an f16 shared layer, an int64 buffer, a bf16 and an
/// f16 raw tensor, and a metadata block.
#[pyfunction]
fn write_typed_example(path: PathBuf) -> PyResult<()> {
    use deepcomp_format::{Dtype, LayerKind, SparseLayer, TypedTensor};
    let file = DczFile {
        model: "typed".into(),
        channel_scales: Vec::new(),
        recipe_hash: [0; 32],
        layers: vec![SparseLayer {
            name: "fc.weight".into(),
            kind: LayerKind::Fc,
            shape: vec![2, 3],
            bits: 2,
            index_bits: 2,
            // 0.1 is not an f16 value: it reads back as the nearest one.
            codebook: vec![-0.5, 0.1],
            positions: vec![1, 5],
            codes: vec![0, 1],
        }],
        dense: vec![],
        typed: vec![
            TypedTensor {
                name: "bn.num_batches_tracked".into(),
                dtype: Dtype::I64,
                shape: vec![],
                data: (-3i64).to_le_bytes().to_vec(),
            },
            TypedTensor {
                name: "fc.bias".into(),
                dtype: Dtype::F16,
                shape: vec![2],
                // 1.0, -2.0
                data: vec![0x00, 0x3c, 0x00, 0xc0],
            },
            TypedTensor {
                name: "bn.weight".into(),
                dtype: Dtype::BF16,
                shape: vec![2],
                // 1.0, -0.5
                data: vec![0x80, 0x3f, 0x00, 0xbf],
            },
        ],
        layer_dtypes: vec![Dtype::F16],
        metadata: Some(r#"{"arch":"lenet300","dataset":"mnist","mean":[0.5],"std":[0.25]}"#.into()),
    };
    file.write_atomic(&path)
        .map_err(|e| PyValueError::new_err(format!("{}: {e}", path.display())))?;
    Ok(())
}

/// Shape, codebook, positions and codes of a shared layer.
type Parts = (Vec<usize>, Vec<f32>, Vec<u64>, Vec<u32>);

/// The stored parts of a shared layer: `(shape, codebook, positions, codes)` (for tests and tools).
#[pyfunction]
fn sparse_parts(path: PathBuf, name: &str) -> PyResult<Parts> {
    let file = read(&path)?;
    let l = file.layers.iter().find(|l| l.name == name).ok_or_else(|| {
        PyValueError::new_err(format!("{}: no shared layer `{name}`", path.display()))
    })?;
    Ok((
        l.shape.clone(),
        l.codebook.clone(),
        l.positions.clone(),
        l.codes.clone(),
    ))
}

/// Writes a generated file: one shared layer per `(name, shape, density, bits)` and a bias each,
/// from `seed` (for tests).
#[pyfunction]
fn write_example(
    path: PathBuf,
    layers: Vec<(String, Vec<usize>, f64, u8)>,
    seed: u64,
) -> PyResult<()> {
    use deepcomp_format::{DenseTensor, LayerKind, SparseLayer};
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut file = DczFile {
        model: "example".into(),
        recipe_hash: [0; 32],
        layers: vec![],
        dense: vec![],
        ..Default::default()
    };
    for (name, shape, density, bits) in layers {
        let n: usize = shape.iter().product();
        let k = 1usize << bits;
        let codebook: Vec<f32> = (0..k)
            .map(|i| i as f32 / k as f32 - 0.5 + 1.0 / 64.0)
            .collect();
        let positions: Vec<u64> = (0..n as u64).filter(|_| next() < density).collect();
        let codes = positions
            .iter()
            .map(|_| (next() * k as f64) as u32 % k as u32)
            .collect();
        let out = shape.first().copied().unwrap_or(1);
        file.layers.push(SparseLayer {
            name: format!("{name}.weight"),
            kind: if shape.len() == 4 {
                LayerKind::Conv
            } else {
                LayerKind::Fc
            },
            shape,
            bits,
            index_bits: 4,
            codebook,
            positions,
            codes,
        });
        file.dense.push(DenseTensor {
            name: format!("{name}.bias"),
            shape: vec![out],
            data: (0..out).map(|_| next() as f32 - 0.5).collect(),
        });
    }
    file.write_atomic(&path)
        .map_err(|e| PyValueError::new_err(format!("{}: {e}", path.display())))?;
    Ok(())
}

#[pymodule]
fn _deepcomp(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(load_raw, m)?)?;
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    m.add_function(wrap_pyfunction!(sparse_parts, m)?)?;
    m.add_function(wrap_pyfunction!(write_example, m)?)?;
    m.add_function(wrap_pyfunction!(write_typed_example, m)?)?;
    Ok(())
}
