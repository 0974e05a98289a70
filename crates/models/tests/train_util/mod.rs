//! Shared fixtures of the training tests: a tiny seeded MLP implementing [`Model`] and a generated,
//! linearly separable classification problem with a per-epoch reproducible shuffle.

#![allow(dead_code)]

use candle_core::{DType, Device, Tensor, Var};
use deepcomp_models::{LayerKind, Model, ParamRole, ParamStore, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A fully-connected ReLU network `in → hidden… → classes`, parameters named `fc{i}.weight/bias`.
#[derive(Debug)]
pub struct Mlp {
    store: ParamStore,
    layers: Vec<(Var, Var)>,
    input: [usize; 3],
    classes: usize,
}

impl Mlp {
    /// PyTorch-style init (uniform ±1/√fan_in) from a ChaCha8 stream seeded by `seed`.
    pub fn new(input: [usize; 3], hidden: &[usize], classes: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut dims = vec![input.iter().product::<usize>()];
        dims.extend_from_slice(hidden);
        dims.push(classes);
        let mut store = ParamStore::new();
        let mut layers = Vec::new();
        for (i, pair) in dims.windows(2).enumerate() {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            let bound = 1.0 / (fan_in as f32).sqrt();
            let w: Vec<f32> = (0..fan_in * fan_out)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let b: Vec<f32> = (0..fan_out)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let w =
                Var::from_tensor(&Tensor::from_vec(w, (fan_out, fan_in), &Device::Cpu).unwrap())
                    .unwrap();
            let b = Var::from_tensor(&Tensor::from_vec(b, fan_out, &Device::Cpu).unwrap()).unwrap();
            store
                .push(
                    format!("fc{}.weight", i + 1),
                    ParamRole::Weight(LayerKind::Fc),
                    w.clone(),
                )
                .unwrap();
            store
                .push(format!("fc{}.bias", i + 1), ParamRole::Bias, b.clone())
                .unwrap();
            layers.push((w, b));
        }
        Self {
            store,
            layers,
            input,
            classes,
        }
    }
}

impl Model for Mlp {
    fn arch(&self) -> &str {
        "test_mlp"
    }

    fn forward_t(&self, xs: &Tensor, _train: bool) -> Result<Tensor> {
        let mut h = xs.flatten_from(1)?;
        let last = self.layers.len() - 1;
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h
                .matmul(&w.as_tensor().t()?)?
                .broadcast_add(b.as_tensor())?;
            if i < last {
                h = h.relu()?;
            }
        }
        Ok(h)
    }

    fn params(&self) -> &ParamStore {
        &self.store
    }

    fn input_shape(&self) -> [usize; 3] {
        self.input
    }

    fn num_classes(&self) -> usize {
        self.classes
    }
}

/// A generated problem: `classes` Gaussian blobs in `dim` dimensions (shaped (1, 1, dim) images).
#[derive(Debug, Clone)]
pub struct Blobs {
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    pub dim: usize,
    pub classes: usize,
}

impl Blobs {
    /// `n` points around `classes` random centres (coordinates ±2, drawn from `seed`), noise σ = `noise`
    /// drawn from (`seed`, `draw`): the same `seed` with another `draw` gives a test set of the same problem.
    pub fn new(n: usize, dim: usize, classes: usize, noise: f32, seed: u64, draw: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let centres: Vec<f32> = (0..classes * dim)
            .map(|_| rng.random_range(-2.0f32..2.0))
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(
            seed.wrapping_add(draw.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        );
        let mut images = Vec::with_capacity(n * dim);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let c = i % classes;
            for d in 0..dim {
                // Box–Muller normal noise.
                let u1: f32 = rng.random_range(1e-7f32..1.0);
                let u2: f32 = rng.random_range(0.0f32..1.0);
                let z = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
                images.push(centres[c * dim + d] + noise * z);
            }
            labels.push(c as u32);
        }
        Self {
            images,
            labels,
            dim,
            classes,
        }
    }

    /// Batches of epoch `epoch`, shuffled from (seed, epoch) so every epoch is reproducible on its own.
    pub fn batches(
        &self,
        batch: usize,
        seed: u64,
        epoch: usize,
    ) -> Vec<candle_core::Result<(Tensor, Tensor)>> {
        let mut order: Vec<usize> = (0..self.labels.len()).collect();
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        order.shuffle(&mut rng);
        order
            .chunks(batch)
            .map(|idx| {
                let mut x = Vec::with_capacity(idx.len() * self.dim);
                let mut y = Vec::with_capacity(idx.len());
                for &i in idx {
                    x.extend_from_slice(&self.images[i * self.dim..(i + 1) * self.dim]);
                    y.push(self.labels[i]);
                }
                let x = Tensor::from_vec(x, (idx.len(), 1, 1, self.dim), &Device::Cpu)?;
                let y = Tensor::from_vec(y, idx.len(), &Device::Cpu)?;
                Ok((x, y))
            })
            .collect()
    }

    /// Unshuffled batches (for evaluation).
    pub fn eval_batches(&self, batch: usize) -> Vec<candle_core::Result<(Tensor, Tensor)>> {
        self.labels
            .chunks(batch)
            .enumerate()
            .map(|(k, y)| {
                let start = k * batch;
                let x = self.images[start * self.dim..(start + y.len()) * self.dim].to_vec();
                let x = Tensor::from_vec(x, (y.len(), 1, 1, self.dim), &Device::Cpu)?;
                let y = Tensor::from_vec(y.to_vec(), y.len(), &Device::Cpu)?;
                Ok((x, y))
            })
            .collect()
    }
}

/// Host copies of every model tensor, by name.
pub fn snapshot(model: &dyn Model) -> Vec<(String, Vec<f32>)> {
    model
        .params()
        .iter()
        .map(|p| {
            let v = p
                .var
                .as_tensor()
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (p.name.clone(), v)
        })
        .collect()
}

/// Flattened f32 values of a tensor.
pub fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Asserts `got` and `want` agree to `tol` (absolute + relative).
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w} (err {err:e})"
        );
    }
}
