//! Seed 003's Lab 1 as a library: sparse optimization of a linear least-squares model.
//!
//! The objective is `L(w) = Σᵢ (xᵢ·w − yᵢ)²` (a sum, not a mean) over a few data points,
//! minimized by full-batch gradient descent `w ← w − μ·2Xᵀ(Xw − y)` for a fixed number of
//! steps, with one of the [`Method`]s layered on top. The seed's setting is 3 points,
//! 5 unknowns, a ground truth with `‖w‖₀ <= 2`, 200 steps, and (from the hint
//! `thr = μλ` with `λ = 0.2 ↔ thr = 0.004`) `μ = 0.02`. The lab's data are not in the
//! seed, so [`LeastSquares::generated`] draws them from a seeded ChaCha8 stream.

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Result, SparsityError};
use crate::regularize::{l1_subgradient, project_l0, soft_threshold, trimmed_soft_threshold};

/// A least-squares problem `min Σ (xᵢ·w − yᵢ)²` with a known sparse solution.
#[derive(Debug, Clone)]
pub struct LeastSquares {
    /// Data, `rows × cols`, `f64`.
    pub x: Tensor,
    /// Targets, `rows × 1`, `f64`.
    pub y: Tensor,
    /// The sparse ground truth, `cols × 1`, `f64` (`y = X · truth` exactly up to rounding).
    pub truth: Tensor,
    /// A starting point, `cols × 1`, `f64`.
    pub w0: Tensor,
}

/// How each gradient step is modified (seed 003 Lab 1 (b)–(f)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// (b) plain gradient descent on `L`.
    Plain,
    /// (c) projected gradient descent: after each step keep the `k` largest magnitudes.
    Projected {
        /// `‖w‖₀` bound.
        k: usize,
    },
    /// (d) gradient descent on `L + λ‖w‖₁` with the subgradient `λ·sign(w)`.
    L1 {
        /// `λ`.
        lambda: f64,
    },
    /// (e) proximal gradient: a step on `L`, then soft thresholding by `threshold` (= `μλ`).
    Proximal {
        /// Soft-thresholding threshold.
        threshold: f64,
    },
    /// (f) trimmed L1 proximal gradient: soft thresholding of the `trimmed` smallest
    /// magnitudes only.
    TrimmedProximal {
        /// Soft-thresholding threshold (= `μλ`).
        threshold: f64,
        /// How many of the smallest magnitudes are penalized (3 of 5 in the lab).
        trimmed: usize,
    },
}

/// Loss and weights before the first step and after every step.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    /// `L(w)` at step 0..=steps.
    pub losses: Vec<f64>,
    /// `w` at step 0..=steps.
    pub weights: Vec<Vec<f64>>,
}

impl Trajectory {
    /// The last iterate.
    pub fn final_weights(&self) -> &[f64] {
        self.weights.last().map_or(&[], Vec::as_slice)
    }

    /// The last loss (`NaN` for an empty trajectory, which [`descend`] never returns).
    pub fn final_loss(&self) -> f64 {
        self.losses.last().copied().unwrap_or(f64::NAN)
    }

    /// Indices of the last iterate's elements with `|w| > tol` (`tol = 0.0`: exactly nonzero).
    pub fn support(&self, tol: f64) -> Vec<usize> {
        self.final_weights()
            .iter()
            .enumerate()
            .filter(|(_, v)| v.abs() > tol)
            .map(|(i, _)| i)
            .collect()
    }
}

/// A standard normal draw (Box–Muller), to avoid a dependency for one distribution.
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl LeastSquares {
    /// A problem from explicit data: `x` is `rows × cols`, `truth` and `w0` have `cols`
    /// entries; `y = x · truth`.
    pub fn new(x: Vec<Vec<f64>>, truth: Vec<f64>, w0: Vec<f64>) -> Result<Self> {
        let rows = x.len();
        let cols = truth.len();
        if rows == 0 || cols == 0 || x.iter().any(|r| r.len() != cols) || w0.len() != cols {
            return Err(SparsityError::ShapeMismatch {
                name: "LeastSquares::new (x rows must all have truth.len() entries, w0 too)".into(),
                expected: vec![rows, cols],
                got: vec![rows, x.first().map_or(0, Vec::len), w0.len()],
            });
        }
        let flat: Vec<f64> = x.into_iter().flatten().collect();
        let x = Tensor::from_vec(flat, (rows, cols), &Device::Cpu)?;
        let truth = Tensor::from_vec(truth, (cols, 1), &Device::Cpu)?;
        let w0 = Tensor::from_vec(w0, (cols, 1), &Device::Cpu)?;
        let y = x.matmul(&truth)?;
        Ok(Self { x, y, truth, w0 })
    }

    /// A random instance: `X` with i.i.d. standard normal entries, a ground truth with
    /// `support` nonzeros at uniformly chosen positions with magnitudes uniform in
    /// `[1, 2]` and random signs, and `w0` with i.i.d. `N(0, 0.5²)` entries; all from
    /// `ChaCha8Rng::seed_from_u64(seed)`.
    pub fn generated(rows: usize, cols: usize, support: usize, seed: u64) -> Result<Self> {
        if rows == 0 || cols == 0 || support > cols {
            return Err(SparsityError::InvalidParameter {
                field: "LeastSquares::generated (rows, cols, support)",
                value: format!("({rows}, {cols}, {support})"),
                reason: "needs rows >= 1, cols >= 1 and support <= cols",
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x: Vec<Vec<f64>> = (0..rows)
            .map(|_| (0..cols).map(|_| normal(&mut rng)).collect())
            .collect();
        let mut truth = vec![0.0; cols];
        for i in rand::seq::index::sample(&mut rng, cols, support) {
            let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
            truth[i] = sign * (1.0 + rng.random::<f64>());
        }
        let w0 = (0..cols).map(|_| 0.5 * normal(&mut rng)).collect();
        Self::new(x, truth, w0)
    }

    /// Number of unknowns.
    pub fn cols(&self) -> usize {
        self.truth.dims().first().copied().unwrap_or(0)
    }

    /// Indices of the ground truth's nonzeros.
    pub fn true_support(&self) -> Result<Vec<usize>> {
        let t = self.truth.flatten_all()?.to_vec1::<f64>()?;
        Ok(t.iter()
            .enumerate()
            .filter(|(_, v)| **v != 0.0)
            .map(|(i, _)| i)
            .collect())
    }

    /// `L(w) = Σ (X w − y)²` for `w` of shape `cols × 1`.
    pub fn loss(&self, w: &Tensor) -> Result<f64> {
        let r = self.x.matmul(w)?.sub(&self.y)?;
        Ok(r.sqr()?.sum_all()?.to_scalar::<f64>()?)
    }

    /// `∇L(w) = 2 Xᵀ (X w − y)`.
    pub fn grad(&self, w: &Tensor) -> Result<Tensor> {
        let r = self.x.matmul(w)?.sub(&self.y)?;
        Ok(self.x.t()?.matmul(&r)?.affine(2.0, 0.0)?)
    }
}

/// Runs `steps` full-batch gradient steps with learning rate `lr` from `problem.w0`,
/// modified by `method`; returns the loss and weights at every step.
pub fn descend(
    problem: &LeastSquares,
    method: Method,
    lr: f64,
    steps: usize,
) -> Result<Trajectory> {
    if !(lr.is_finite() && lr > 0.0) {
        return Err(SparsityError::InvalidParameter {
            field: "descend lr",
            value: lr.to_string(),
            reason: "must be finite and > 0",
        });
    }
    let mut w = problem.w0.to_dtype(DType::F64)?;
    let mut losses = Vec::with_capacity(steps + 1);
    let mut weights = Vec::with_capacity(steps + 1);
    losses.push(problem.loss(&w)?);
    weights.push(w.flatten_all()?.to_vec1::<f64>()?);
    for _ in 0..steps {
        let g = problem.grad(&w)?;
        let stepped = match method {
            Method::L1 { lambda } => {
                w.sub(&g.add(&l1_subgradient(&w, lambda)?)?.affine(lr, 0.0)?)?
            }
            _ => w.sub(&g.affine(lr, 0.0)?)?,
        };
        w = match method {
            Method::Plain | Method::L1 { .. } => stepped,
            Method::Projected { k } => project_l0(&stepped, k)?,
            Method::Proximal { threshold } => soft_threshold(&stepped, threshold)?,
            Method::TrimmedProximal { threshold, trimmed } => {
                trimmed_soft_threshold(&stepped, threshold, trimmed)?
            }
        };
        losses.push(problem.loss(&w)?);
        weights.push(w.flatten_all()?.to_vec1::<f64>()?);
    }
    Ok(Trajectory { losses, weights })
}

/// Learning rate of seed 003's Lab 1 (from its hint `thr = μλ`, `λ = 0.2 ↔ thr = 0.004`).
pub const LAB_LR: f64 = 0.02;
/// Full-batch steps of seed 003's Lab 1.
pub const LAB_STEPS: usize = 200;

/// One run of seed 003's Lab 1: its part of the lab, a label and the method.
#[derive(Debug, Clone, PartialEq)]
pub struct LabRun {
    /// The lab's part, `'b'` … `'f'`.
    pub part: char,
    /// What the legend and the table show, e.g. `λ = 0.5`.
    pub label: String,
    /// How each step is modified.
    pub method: Method,
}

/// Seed 003's Lab 1 instance: 3 points, 5 unknowns, small integers, the truth supported on
/// {1, 4}, starting from zero. The seed does not give its data; this instance was picked by
/// searching random integer 3×5 matrices (entries in -2..=2, `2μλ_max(XᵀX) < 1.6`) for one where,
/// from w0 = 0, the seed's narrative is visible.
pub fn lab_problem() -> Result<LeastSquares> {
    LeastSquares::new(
        vec![
            vec![-1.0, -2.0, -1.0, 1.0, -1.0],
            vec![-1.0, 2.0, 2.0, 1.0, -2.0],
            vec![1.0, -2.0, 1.0, -1.0, 0.0],
        ],
        vec![0.0, 1.5, 0.0, 0.0, -2.0],
        vec![0.0; 5],
    )
}

/// Every run of seed 003's Lab 1 with the seed's settings: (b) plain, (c) projected onto
/// `‖w‖₀ ≤ 2`, (d) L1 with λ ∈ {0.2, 0.5, 1, 2}, (e) proximal L1 with thresholds {0.004, 0.01,
/// 0.02, 0.04}, (f) trimmed L1 on the 3 smallest with λ ∈ {1, 2, 5, 10} (thresholds μλ).
pub fn lab_runs() -> Vec<LabRun> {
    let run = |part, label: String, method| LabRun {
        part,
        label,
        method,
    };
    let mut runs = vec![
        run('b', "plain".into(), Method::Plain),
        run('c', "projected, k = 2".into(), Method::Projected { k: 2 }),
    ];
    for lambda in [0.2, 0.5, 1.0, 2.0] {
        runs.push(run('d', format!("L1, λ = {lambda}"), Method::L1 { lambda }));
    }
    for threshold in [0.004, 0.01, 0.02, 0.04] {
        runs.push(run(
            'e',
            format!("prox L1, thr = {threshold}"),
            Method::Proximal { threshold },
        ));
    }
    for (lambda, threshold) in [(1.0, 0.02), (2.0, 0.04), (5.0, 0.1), (10.0, 0.2)] {
        runs.push(run(
            'f',
            format!("trimmed L1 (3 smallest), λ = {lambda}"),
            Method::TrimmedProximal {
                threshold,
                trimmed: 3,
            },
        ));
    }
    runs
}

/// Header of the lab's Markdown table (one row per run: [`lab_row`]).
pub const LAB_TABLE_HEADER: &str =
    "| run | final L | log10 L | exact nonzeros | max abs(w − w*) | files |\n|---|---:|---:|---|---:|---|\n";

/// The lab table's row of `run`: final loss, log10 L (an exact zero as the smallest positive
/// `f64`), the exact support, the largest distance to `truth`, and `files`.
pub fn lab_row(run: &LabRun, t: &Trajectory, truth: &[f64], files: &str) -> String {
    let err = t
        .final_weights()
        .iter()
        .zip(truth)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    format!(
        "| ({}) {} | {:.3e} | {:.2} | {:?} | {err:.3e} | {files} |\n",
        run.part,
        run.label,
        t.final_loss(),
        t.final_loss().max(f64::MIN_POSITIVE).log10(),
        t.support(0.0),
    )
}

/// A trajectory as CSV: `step, loss, w0 … w(n−1)`, one line per step.
pub fn trajectory_csv(t: &Trajectory) -> String {
    let n = t.weights.first().map_or(0, Vec::len);
    let mut csv = String::from("step,loss");
    for j in 0..n {
        csv.push_str(&format!(",w{j}"));
    }
    csv.push('\n');
    for (s, (l, w)) in t.losses.iter().zip(&t.weights).enumerate() {
        let ws: Vec<String> = w.iter().map(|v| v.to_string()).collect();
        csv.push_str(&format!("{s},{l},{}\n", ws.join(",")));
    }
    csv
}
