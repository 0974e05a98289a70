//! Architectures: built from the file's model id and tensor shapes, run on the compressed layers.

use rayon::prelude::*;

use deepcomp_format::{DczFile, DenseTensor};

use crate::error::{Result, RuntimeError};
use crate::ops::{max_pool, to_feature_major, to_sample_major, Conv, Fc};
use crate::sparse::SparseRows;
use crate::LayerSummary;

/// PyTorch's BatchNorm epsilon (as `deepcomp-models`).
const BN_EPS: f32 = 1e-5;

#[derive(Debug, Clone)]
pub(crate) struct Block {
    conv1: Conv,
    conv2: Conv,
    /// Option-A shortcut: subsample by 2 and zero-pad this many channels on each side.
    shortcut_pad: Option<usize>,
}

/// One network, built once per load (so the size difference of the variants does not matter).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Net {
    /// `fc1 → ReLU → … → fcN` on flattened input.
    Mlp { features: usize, fcs: Vec<Fc> },
    /// Conv stack (each conv followed by max pool `pool`), flatten (NCHW order), FC chain.
    Plain {
        cin: usize,
        side: usize,
        convs: Vec<(Conv, usize)>,
        fcs: Vec<Fc>,
    },
    /// CIFAR ResNet: stem conv + BN + ReLU, basic blocks, global average pool, `linear`.
    Residual {
        cin: usize,
        side: usize,
        stem: Conv,
        blocks: Vec<Block>,
        linear: Fc,
    },
}

/// Tensor look-up in a file.
struct Tensors<'a> {
    file: &'a DczFile,
}

impl<'a> Tensors<'a> {
    fn missing(&self, name: &str) -> RuntimeError {
        RuntimeError::MissingTensor {
            model: self.file.model.clone(),
            name: name.to_string(),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.file.layers.iter().any(|l| l.name == name)
            || self.file.dense.iter().any(|d| d.name == name)
    }

    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        if let Some(l) = self.file.layers.iter().find(|l| l.name == name) {
            return Ok(l.shape.clone());
        }
        self.file
            .dense
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.shape.clone())
            .ok_or_else(|| self.missing(name))
    }

    fn dense(&self, name: &str) -> Result<&'a DenseTensor> {
        self.file
            .dense
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| self.missing(name))
    }

    /// A vector of length `n`.
    fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let d = self.dense(name)?;
        if d.shape != [n] || d.data.len() != n {
            return Err(RuntimeError::Shape {
                name: name.to_string(),
                found: d.shape.clone(),
                reason: format!("expected [{n}]"),
            });
        }
        Ok(d.data.clone())
    }

    fn optional_vector(&self, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
        if self.has(name) {
            self.vector(name, n).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A weight as `rows × (numel / rows)` compressed rows, from a shared layer or a raw tensor.
    fn weight(&self, name: &str, shape: &[usize]) -> Result<SparseRows> {
        let rows = shape[0];
        let row_len: usize = shape[1..].iter().product();
        if let Some(i) = self.file.layers.iter().position(|l| l.name == name) {
            let l = &self.file.layers[i];
            if self.file.channel_scales_of(name).is_some() {
                // One step per output channel: decode, and let the rows take their distinct values as
                // the codebook.
                return SparseRows::from_dense(name, rows, row_len, &self.file.layer_values(i));
            }
            return SparseRows::new(name, rows, row_len, &l.codebook, &l.positions, &l.codes);
        }
        let d = self.dense(name)?;
        if d.data.len() != rows * row_len {
            return Err(RuntimeError::Shape {
                name: name.to_string(),
                found: d.shape.clone(),
                reason: format!("{} values", d.data.len()),
            });
        }
        SparseRows::from_dense(name, rows, row_len, &d.data)
    }

    fn fc(&self, prefix: &str, in_features: Option<usize>, relu: bool) -> Result<Fc> {
        let name = format!("{prefix}.weight");
        let shape = self.shape(&name)?;
        if shape.len() != 2 || shape[0] == 0 || in_features.is_some_and(|i| shape[1] != i) {
            return Err(RuntimeError::Shape {
                name,
                found: shape,
                reason: match in_features {
                    Some(i) => format!("expected a [out, {i}] matrix"),
                    None => "expected a non-empty [out, in] matrix".into(),
                },
            });
        }
        Ok(Fc {
            name: name.clone(),
            w: self.weight(&name, &shape)?,
            bias: self.optional_vector(&format!("{prefix}.bias"), shape[0])?,
            relu,
        })
    }

    /// Conv `prefix.weight` `[cout, cin, k, k]`, with `prefix.bias` if present and batch norm `bn`.
    fn conv(
        &self,
        prefix: &str,
        cin: usize,
        stride: usize,
        pad: usize,
        bn: Option<&str>,
        relu: bool,
    ) -> Result<Conv> {
        let name = format!("{prefix}.weight");
        let shape = self.shape(&name)?;
        if shape.len() != 4
            || shape[1] != cin
            || shape[2] != shape[3]
            || shape[0] == 0
            || shape[2] == 0
        {
            return Err(RuntimeError::Shape {
                name,
                found: shape,
                reason: format!("expected a [cout, {cin}, k, k] convolution"),
            });
        }
        let cout = shape[0];
        let affine = match bn {
            None => None,
            Some(b) => {
                let g = self.vector(&format!("{b}.weight"), cout)?;
                let beta = self.vector(&format!("{b}.bias"), cout)?;
                let mean = self.vector(&format!("{b}.running_mean"), cout)?;
                let var = self.vector(&format!("{b}.running_var"), cout)?;
                let scale: Vec<f32> = g
                    .iter()
                    .zip(&var)
                    .map(|(g, v)| g / (v + BN_EPS).sqrt())
                    .collect();
                let shift = beta
                    .iter()
                    .zip(&mean)
                    .zip(&scale)
                    .map(|((b, m), s)| b - m * s)
                    .collect();
                Some((scale, shift))
            }
        };
        Ok(Conv {
            name: name.clone(),
            w: self.weight(&name, &shape)?,
            cin,
            k: shape[2],
            stride,
            pad,
            bias: self.optional_vector(&format!("{prefix}.bias"), cout)?,
            affine,
            relu,
        })
    }

    /// `fc1`, `fc2`, … while present; ReLU on all but the last.
    fn fc_chain(&self, mut in_features: usize) -> Result<Vec<Fc>> {
        let mut fcs = Vec::new();
        let mut i = 1;
        while self.has(&format!("fc{i}.weight")) {
            let last = !self.has(&format!("fc{}.weight", i + 1));
            let fc = self.fc(&format!("fc{i}"), Some(in_features), !last)?;
            in_features = fc.w.rows;
            fcs.push(fc);
            i += 1;
        }
        if fcs.is_empty() {
            return Err(self.missing("fc1.weight"));
        }
        Ok(fcs)
    }
}

fn isqrt(n: usize) -> usize {
    let mut r = (n as f64).sqrt() as usize;
    while r * r > n {
        r -= 1;
    }
    while (r + 1) * (r + 1) <= n {
        r += 1;
    }
    r
}

impl Net {
    pub fn build(file: &DczFile) -> Result<Self> {
        // Raw float tensors of another type (a f16 / bf16 / f64 model, format version 2) are read as
        // f32 raw tensors; integer buffers are not weights.
        let widened;
        let file = if file.typed.iter().any(|t| t.dtype.is_float()) {
            let mut f = file.clone();
            for t in &file.typed {
                if let Some(data) = t.to_f32() {
                    f.dense.push(deepcomp_format::DenseTensor {
                        name: t.name.clone(),
                        shape: t.shape.clone(),
                        data,
                    });
                }
            }
            widened = f;
            &widened
        } else {
            file
        };
        let t = Tensors { file };
        match file.model.as_str() {
            "lenet300" | "mlp" => {
                let features = t.shape("fc1.weight")?.get(1).copied().unwrap_or(0);
                let fcs = t.fc_chain(features)?;
                Ok(Net::Mlp { features, fcs })
            }
            "lenet5" | "cifar_lenet" => {
                let relu = file.model == "cifar_lenet";
                let cin = t.shape("conv1.weight")?.get(1).copied().unwrap_or(0);
                let conv1 = t.conv("conv1", cin, 1, 0, None, relu)?;
                let conv2 = t.conv("conv2", conv1.w.rows, 1, 0, None, relu)?;
                let f = t.shape("fc1.weight")?.get(1).copied().unwrap_or(0);
                let c2 = conv2.w.rows;
                let p2 = isqrt(f / c2);
                if p2 == 0 || p2 * p2 * c2 != f {
                    return Err(RuntimeError::Shape {
                        name: "fc1.weight".into(),
                        found: t.shape("fc1.weight")?,
                        reason: format!("{f} input features are not {c2}·s·s"),
                    });
                }
                let side = 2 * (2 * p2 + conv2.k - 1) + conv1.k - 1;
                let fcs = t.fc_chain(f)?;
                Ok(Net::Plain {
                    cin,
                    side,
                    convs: vec![(conv1, 2), (conv2, 2)],
                    fcs,
                })
            }
            "resnet20" => {
                let cin = t.shape("conv1.weight")?.get(1).copied().unwrap_or(0);
                let stem = t.conv("conv1", cin, 1, 1, Some("bn1"), true)?;
                let mut c = stem.w.rows;
                let mut blocks = Vec::new();
                for stage in 1.. {
                    if !t.has(&format!("layer{stage}.0.conv1.weight")) {
                        break;
                    }
                    for b in 0.. {
                        let p = format!("layer{stage}.{b}");
                        if !t.has(&format!("{p}.conv1.weight")) {
                            break;
                        }
                        let stride = if b == 0 && stage > 1 { 2 } else { 1 };
                        let conv1 = t.conv(
                            &format!("{p}.conv1"),
                            c,
                            stride,
                            1,
                            Some(&format!("{p}.bn1")),
                            true,
                        )?;
                        let planes = conv1.w.rows;
                        let conv2 = t.conv(
                            &format!("{p}.conv2"),
                            planes,
                            1,
                            1,
                            Some(&format!("{p}.bn2")),
                            false,
                        )?;
                        if conv2.w.rows != planes {
                            return Err(RuntimeError::Shape {
                                name: format!("{p}.conv2.weight"),
                                found: t.shape(&format!("{p}.conv2.weight"))?,
                                reason: format!("expected {planes} output channels"),
                            });
                        }
                        let shortcut_pad = if stride != 1 || c != planes {
                            if c + 2 * (planes / 4) != planes {
                                return Err(RuntimeError::Shape {
                                    name: format!("{p}.conv1.weight"),
                                    found: t.shape(&format!("{p}.conv1.weight"))?,
                                    reason: format!(
                                        "an option-A shortcut cannot take {c} channels to {planes}"
                                    ),
                                });
                            }
                            Some(planes / 4)
                        } else {
                            None
                        };
                        blocks.push(Block {
                            conv1,
                            conv2,
                            shortcut_pad,
                        });
                        c = planes;
                    }
                }
                let linear = t.fc("linear", Some(c), false)?;
                Ok(Net::Residual {
                    cin,
                    side: 32,
                    stem,
                    blocks,
                    linear,
                })
            }
            other => Err(RuntimeError::UnknownModel {
                model: other.to_string(),
            }),
        }
    }

    pub fn input_shape(&self) -> [usize; 3] {
        match self {
            Net::Mlp { features, .. } => {
                let s = isqrt(*features);
                if s * s == *features {
                    [1, s, s]
                } else {
                    [1, 1, *features]
                }
            }
            Net::Plain { cin, side, .. } | Net::Residual { cin, side, .. } => [*cin, *side, *side],
        }
    }

    pub fn num_classes(&self) -> usize {
        match self {
            Net::Mlp { fcs, .. } | Net::Plain { fcs, .. } => fcs.last().map_or(0, |f| f.w.rows),
            Net::Residual { linear, .. } => linear.w.rows,
        }
    }

    pub fn set_input_side(&mut self, s: usize) -> Result<()> {
        match self {
            Net::Residual { side, .. } if s >= 4 && s.is_multiple_of(4) => {
                *side = s;
                Ok(())
            }
            _ if self.input_shape()[1] == s => Ok(()),
            _ => Err(RuntimeError::Input {
                reason: format!(
                    "input side {s} does not fit this model ({:?})",
                    self.input_shape()
                ),
            }),
        }
    }

    pub fn layers(&self) -> Vec<LayerSummary> {
        let fc = |f: &Fc| LayerSummary {
            name: f.name.clone(),
            params: f.w.rows * f.w.row_len,
            nonzero: f.w.nonzero,
            bytes: f.bytes(),
        };
        let conv = |c: &Conv| LayerSummary {
            name: c.name.clone(),
            params: c.w.rows * c.w.row_len,
            nonzero: c.w.nonzero,
            bytes: c.bytes(),
        };
        match self {
            Net::Mlp { fcs, .. } => fcs.iter().map(fc).collect(),
            Net::Plain { convs, fcs, .. } => convs
                .iter()
                .map(|(c, _)| conv(c))
                .chain(fcs.iter().map(fc))
                .collect(),
            Net::Residual {
                stem,
                blocks,
                linear,
                ..
            } => std::iter::once(conv(stem))
                .chain(blocks.iter().flat_map(|b| [conv(&b.conv1), conv(&b.conv2)]))
                .chain(std::iter::once(fc(linear)))
                .collect(),
        }
    }

    /// Every weight matrix, mutably.
    pub fn weights_mut(&mut self) -> Vec<&mut SparseRows> {
        match self {
            Net::Mlp { fcs, .. } => fcs.iter_mut().map(|f| &mut f.w).collect(),
            Net::Plain { convs, fcs, .. } => convs
                .iter_mut()
                .map(|(c, _)| &mut c.w)
                .chain(fcs.iter_mut().map(|f| &mut f.w))
                .collect(),
            Net::Residual {
                stem,
                blocks,
                linear,
                ..
            } => std::iter::once(&mut stem.w)
                .chain(
                    blocks
                        .iter_mut()
                        .flat_map(|b| [&mut b.conv1.w, &mut b.conv2.w]),
                )
                .chain(std::iter::once(&mut linear.w))
                .collect(),
        }
    }

    pub fn dense_bytes(&self) -> usize {
        let fc = |f: &Fc| (f.w.rows * f.w.row_len + f.bias.as_ref().map_or(0, Vec::len)) * 4;
        let conv = |c: &Conv| {
            (c.w.rows * c.w.row_len
                + c.bias.as_ref().map_or(0, Vec::len)
                + c.affine.as_ref().map_or(0, |(a, b)| a.len() + b.len()))
                * 4
        };
        match self {
            Net::Mlp { fcs, .. } => fcs.iter().map(fc).sum(),
            Net::Plain { convs, fcs, .. } => {
                convs.iter().map(|(c, _)| conv(c)).sum::<usize>()
                    + fcs.iter().map(fc).sum::<usize>()
            }
            Net::Residual {
                stem,
                blocks,
                linear,
                ..
            } => {
                conv(stem)
                    + blocks
                        .iter()
                        .map(|b| conv(&b.conv1) + conv(&b.conv2))
                        .sum::<usize>()
                    + fc(linear)
            }
        }
    }

    /// `input`: `batch` samples, NCHW; checked by the caller.
    pub fn forward(&self, input: &[f32], batch: usize) -> Vec<f32> {
        let per: usize = self.input_shape().iter().product();
        let (features, fcs): (Vec<f32>, Vec<&Fc>) = match self {
            Net::Mlp { fcs, .. } => (input.to_vec(), fcs.iter().collect()),
            Net::Plain { fcs, .. } => (self.trunk(input, batch, per), fcs.iter().collect()),
            Net::Residual { linear, .. } => (self.trunk(input, batch, per), vec![linear]),
        };
        let f = features.len() / batch;
        let mut x = to_feature_major(&features, batch, f);
        for fc in &fcs {
            x = fc.forward_fm(&x, batch);
        }
        let classes = fcs.last().map_or(0, |fc| fc.w.rows);
        to_sample_major(&x, batch, classes)
    }

    /// The convolutional part of each sample, flattened: `[batch][features]`.
    fn trunk(&self, input: &[f32], batch: usize, per: usize) -> Vec<f32> {
        let one = |x: &[f32], par: bool| self.trunk_one(x, par);
        let outs: Vec<Vec<f32>> = if batch == 1 {
            vec![one(input, true)]
        } else {
            input.par_chunks(per).map(|x| one(x, false)).collect()
        };
        outs.concat()
    }

    fn trunk_one(&self, x: &[f32], par: bool) -> Vec<f32> {
        match self {
            Net::Mlp { .. } => x.to_vec(),
            Net::Plain { side, convs, .. } => {
                let mut h = *side;
                let mut cur = x.to_vec();
                for (conv, pool) in convs {
                    let (y, ho) = conv.forward(&cur, h, par);
                    let (p, hp) = max_pool(&y, conv.w.rows, ho, *pool);
                    cur = p;
                    h = hp;
                }
                cur
            }
            Net::Residual {
                side, stem, blocks, ..
            } => {
                let (mut cur, mut h) = stem.forward(x, *side, par);
                for b in blocks {
                    let (mid, ho) = b.conv1.forward(&cur, h, par);
                    let (mut out, _) = b.conv2.forward(&mid, ho, par);
                    let plane = ho * ho;
                    match b.shortcut_pad {
                        None => out.iter_mut().zip(&cur).for_each(|(o, s)| *o += s),
                        Some(pad) => {
                            let cin = b.conv1.cin;
                            for c in 0..cin {
                                let dst = &mut out[(c + pad) * plane..(c + pad + 1) * plane];
                                for oy in 0..ho {
                                    for ox in 0..ho {
                                        dst[oy * ho + ox] += cur[c * h * h + 2 * oy * h + 2 * ox];
                                    }
                                }
                            }
                        }
                    }
                    out.iter_mut().for_each(|v| *v = v.max(0.0));
                    cur = out;
                    h = ho;
                }
                let plane = h * h;
                cur.chunks(plane)
                    .map(|ch| ch.iter().sum::<f32>() / plane as f32)
                    .collect()
            }
        }
    }
}
