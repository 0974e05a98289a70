//! Shared test helpers: `.dcz` files generated from freshly initialized `deepcomp-models` networks,
//! pruned by magnitude and weight-shared with `deepcomp-quant`, plus a plain dense reference forward.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use deepcomp_format::{DczFile, DenseTensor, LayerKind, SparseLayer};
use deepcomp_models::{ArchConfig, Model, ParamRole};
use deepcomp_quant::{share_weights, Init};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Builds a `.dcz` for `arch` (weights from `seed`), keeping the `1 − sparsity` largest weights of
/// every prunable tensor and sharing them with `bits`-bit codebooks; biases and batch-norm tensors get
/// random values (running variances positive) so that they matter. Round-trips through bytes.
pub fn make_dcz(arch: &str, cfg: &ArchConfig, seed: u64, sparsity: f64, bits: u8) -> DczFile {
    let model = deepcomp_models::build(arch, cfg, seed, &Device::Cpu).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xD0C);
    let mut layers = Vec::new();
    let mut dense = Vec::new();
    for p in model.params().iter() {
        let t = p.var.as_tensor();
        let shape = t.dims().to_vec();
        let data = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        match p.role {
            ParamRole::Weight(kind) => {
                let mut mags: Vec<f32> = data.iter().map(|v| v.abs()).collect();
                mags.sort_by(f32::total_cmp);
                let cut = mags[((mags.len() as f64 * sparsity) as usize).min(mags.len() - 1)];
                let pruned: Vec<f32> = data
                    .iter()
                    .map(|&v| if v.abs() > cut { v } else { 0.0 })
                    .collect();
                let s = share_weights(&pruned, None, bits, Init::Linear).unwrap();
                layers.push(SparseLayer {
                    name: p.name.clone(),
                    kind: match kind {
                        deepcomp_models::LayerKind::Conv => LayerKind::Conv,
                        deepcomp_models::LayerKind::Fc => LayerKind::Fc,
                    },
                    shape,
                    bits: s.bits(),
                    index_bits: 5,
                    codebook: s.codebook().to_vec(),
                    positions: s.positions().to_vec(),
                    codes: s.codes().to_vec(),
                });
            }
            _ => {
                let var = p.name.ends_with("running_var");
                let data = data
                    .iter()
                    .map(|_| {
                        if var {
                            rng.random_range(0.5f32..2.0)
                        } else {
                            rng.random_range(-0.5f32..0.5)
                        }
                    })
                    .collect();
                dense.push(DenseTensor {
                    name: p.name.clone(),
                    shape,
                    data,
                });
            }
        }
    }
    let file = DczFile {
        model: arch.to_string(),
        recipe_hash: [7; 32],
        layers,
        dense,
        ..Default::default()
    };
    DczFile::from_bytes(&file.to_bytes().unwrap()).unwrap()
}

/// Every tensor of `file`, decoded dense with `SparseLayer::to_dense`: `(name, shape, data)`.
pub fn decoded(file: &DczFile) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    file.layers
        .iter()
        .map(|l| (l.name.clone(), l.shape.clone(), l.to_dense()))
        .chain(
            file.dense
                .iter()
                .map(|d| (d.name.clone(), d.shape.clone(), d.data.clone())),
        )
        .collect()
}

/// The candle model of `arch` with the decoded tensors of `file` loaded.
pub fn candle_model(arch: &str, cfg: &ArchConfig, file: &DczFile) -> Box<dyn Model> {
    let model = deepcomp_models::build(arch, cfg, 0, &Device::Cpu).unwrap();
    let named: Vec<(String, Tensor)> = decoded(file)
        .into_iter()
        .map(|(n, s, d)| (n, Tensor::from_vec(d, s, &Device::Cpu).unwrap()))
        .collect();
    deepcomp_models::io::assign_tensors(model.as_ref(), &named, std::path::Path::new("test.dcz"))
        .unwrap();
    model
}

/// Eval-mode candle logits of `input` (`[n, c, h, w]`).
pub fn candle_logits(model: &dyn Model, input: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let xs = Tensor::from_vec(input.to_vec(), shape.to_vec(), &Device::Cpu).unwrap();
    model
        .forward_t(&xs, false)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Normal-ish random input.
pub fn random_input(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..4).map(|_| rng.random_range(-1.0f32..1.0)).sum::<f32>())
        .collect()
}

/// Largest |a − b| over the largest |b| (at least 1).
pub fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

// ---- the plain dense reference: decoded tensors, textbook loops ----

/// Tensor `name` of the decoded list.
pub fn get<'a>(t: &'a [(String, Vec<usize>, Vec<f32>)], name: &str) -> &'a [f32] {
    &t.iter().find(|(n, _, _)| n == name).unwrap().2
}

fn shape_of(t: &[(String, Vec<usize>, Vec<f32>)], name: &str) -> Vec<usize> {
    t.iter().find(|(n, _, _)| n == name).unwrap().1.clone()
}

/// `y = W x + b` for one sample.
pub fn linear(t: &[(String, Vec<usize>, Vec<f32>)], p: &str, x: &[f32]) -> Vec<f32> {
    let s = shape_of(t, &format!("{p}.weight"));
    let (w, b) = (get(t, &format!("{p}.weight")), get(t, &format!("{p}.bias")));
    (0..s[0])
        .map(|o| b[o] + (0..s[1]).map(|i| w[o * s[1] + i] * x[i]).sum::<f32>())
        .collect()
}

/// Direct convolution of one sample `[cin][h][h]`; returns the output and its side.
pub fn conv(
    t: &[(String, Vec<usize>, Vec<f32>)],
    p: &str,
    x: &[f32],
    h: usize,
    stride: usize,
    pad: usize,
) -> (Vec<f32>, usize) {
    let s = shape_of(t, &format!("{p}.weight"));
    let w = get(t, &format!("{p}.weight"));
    let bias = t
        .iter()
        .find(|(n, _, _)| *n == format!("{p}.bias"))
        .map(|(_, _, d)| d.clone());
    let (co, ci, k) = (s[0], s[1], s[2]);
    let ho = (h + 2 * pad - k) / stride + 1;
    let mut y = vec![0f32; co * ho * ho];
    for o in 0..co {
        for oy in 0..ho {
            for ox in 0..ho {
                let mut acc = bias.as_ref().map_or(0.0, |b| b[o]);
                for c in 0..ci {
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * stride + ky) as isize - pad as isize;
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < h {
                                acc += w[((o * ci + c) * k + ky) * k + kx]
                                    * x[(c * h + iy as usize) * h + ix as usize];
                            }
                        }
                    }
                }
                y[(o * ho + oy) * ho + ox] = acc;
            }
        }
    }
    (y, ho)
}

/// Eval-mode batch norm of `[c][plane]`.
pub fn bn(t: &[(String, Vec<usize>, Vec<f32>)], p: &str, x: &mut [f32], plane: usize) {
    let (g, b) = (get(t, &format!("{p}.weight")), get(t, &format!("{p}.bias")));
    let (m, v) = (
        get(t, &format!("{p}.running_mean")),
        get(t, &format!("{p}.running_var")),
    );
    for (c, ch) in x.chunks_mut(plane).enumerate() {
        for val in ch {
            *val = (*val - m[c]) / (v[c] + 1e-5).sqrt() * g[c] + b[c];
        }
    }
}

pub fn relu(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = v.max(0.0));
}

pub fn pool2(x: &[f32], c: usize, h: usize) -> (Vec<f32>, usize) {
    let ho = h / 2;
    let mut y = vec![0f32; c * ho * ho];
    for ch in 0..c {
        for oy in 0..ho {
            for ox in 0..ho {
                let at = |dy: usize, dx: usize| x[(ch * h + 2 * oy + dy) * h + 2 * ox + dx];
                y[(ch * ho + oy) * ho + ox] = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
            }
        }
    }
    (y, ho)
}

/// Dense reference logits of one sample for `arch`.
pub fn reference(
    arch: &str,
    t: &[(String, Vec<usize>, Vec<f32>)],
    x: &[f32],
    side: usize,
) -> Vec<f32> {
    match arch {
        "lenet300" | "mlp" => {
            let mut h = x.to_vec();
            let mut i = 1;
            loop {
                h = linear(t, &format!("fc{i}"), &h);
                if !t
                    .iter()
                    .any(|(n, _, _)| *n == format!("fc{}.weight", i + 1))
                {
                    return h;
                }
                relu(&mut h);
                i += 1;
            }
        }
        "lenet5" => {
            let (y, s) = conv(t, "conv1", x, side, 1, 0);
            let (y, s) = pool2(&y, 20, s);
            let (y, s) = conv(t, "conv2", &y, s, 1, 0);
            let (y, _) = pool2(&y, 50, s);
            let mut h = linear(t, "fc1", &y);
            relu(&mut h);
            linear(t, "fc2", &h)
        }
        "cifar_lenet" => {
            let (mut y, s) = conv(t, "conv1", x, side, 1, 0);
            relu(&mut y);
            let (y, s) = pool2(&y, 6, s);
            let (mut y, s) = conv(t, "conv2", &y, s, 1, 0);
            relu(&mut y);
            let (y, _) = pool2(&y, 16, s);
            let mut h = linear(t, "fc1", &y);
            relu(&mut h);
            let mut h = linear(t, "fc2", &h);
            relu(&mut h);
            linear(t, "fc3", &h)
        }
        "resnet20" => {
            let (mut y, mut s) = conv(t, "conv1", x, side, 1, 1);
            bn(t, "bn1", &mut y, s * s);
            relu(&mut y);
            let mut c = 16;
            for stage in 1..=3 {
                let planes = 16 << (stage - 1);
                for b in 0..3 {
                    let p = format!("layer{stage}.{b}");
                    let stride = if b == 0 && stage > 1 { 2 } else { 1 };
                    let (mut o, so) = conv(t, &format!("{p}.conv1"), &y, s, stride, 1);
                    bn(t, &format!("{p}.bn1"), &mut o, so * so);
                    relu(&mut o);
                    let (mut o, _) = conv(t, &format!("{p}.conv2"), &o, so, 1, 1);
                    bn(t, &format!("{p}.bn2"), &mut o, so * so);
                    if stride == 1 && c == planes {
                        for (a, v) in o.iter_mut().zip(&y) {
                            *a += v;
                        }
                    } else {
                        let pad = planes / 4;
                        for ch in 0..c {
                            for oy in 0..so {
                                for ox in 0..so {
                                    o[((ch + pad) * so + oy) * so + ox] +=
                                        y[(ch * s + 2 * oy) * s + 2 * ox];
                                }
                            }
                        }
                    }
                    relu(&mut o);
                    y = o;
                    s = so;
                    c = planes;
                }
            }
            let gap: Vec<f32> = y
                .chunks(s * s)
                .map(|ch| ch.iter().sum::<f32>() / (s * s) as f32)
                .collect();
            linear(t, "linear", &gap)
        }
        other => panic!("no reference for {other}"),
    }
}
