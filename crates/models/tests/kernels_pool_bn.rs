//! Our max-pooling and batch-norm kernels (`deepcomp_models::kernels::{pool, bn}`) against PyTorch
//! golden values, naive references, candle's composite ops and finite differences.

use candle_core::{DType, Device, Tensor, Var};
use deepcomp_models::kernels::bn::{batch_norm_train, BatchStats};
use deepcomp_models::kernels::pool::{max_pool2d, max_pool2d_reduce};
use deepcomp_models::layers::BatchNorm;
use deepcomp_models::{ModelError, ParamStore};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------------------------------------
// Max pooling
// ---------------------------------------------------------------------------------------------

/// One PyTorch golden case: input `x[i] = (i·mul mod modulo) − ⌊modulo/2⌋`, output gradient
/// `g[j] = (5·j mod 7) − 2.5`, loss `Σ y·g`.
struct PoolCase {
    dims: [usize; 4],
    k: usize,
    s: usize,
    p: usize,
    mul: usize,
    modulo: usize,
    out: [usize; 4],
    y: &'static [f32],
    dx: &'static [f32],
}

// Made with torch 2.x (CPU) by:
//
// import torch, torch.nn.functional as F
// def inp(shape, mul, mod):
//     n = 1
//     for d in shape: n *= d
//     return torch.tensor([float((i * mul) % mod - mod // 2) for i in range(n)]).reshape(shape)
// cases = [((2,3,7,9),3,2,1,37,23), ((1,2,5,7),2,2,0,17,11), ((1,1,6,5),3,1,0,7,5),
//          ((1,2,8,8),2,3,1,29,13), ((1,1,9,6),4,2,2,41,19), ((1,1,5,5),3,2,1,0,1)]
// for shape, k, s, p, mul, mod in cases:
//     x = inp(shape, mul, mod).requires_grad_()
//     y = F.max_pool2d(x, k, s, p)
//     g = torch.tensor([float((j * 5) % 7) - 2.5 for j in range(y.numel())]).reshape(y.shape)
//     (y * g).sum().backward()
//     print(shape, k, s, p, mul, mod, list(y.shape), y.flatten().tolist(), x.grad.flatten().tolist())
//
// The last case is a constant image: every window is a tie, and PyTorch sends each window's gradient
// to its first element (the padded first row/column windows start at the first real element).
const POOL_CASES: &[PoolCase] = &[
    PoolCase {
        dims: [2, 3, 7, 9],
        k: 3,
        s: 2,
        p: 1,
        mul: 37,
        modulo: 23,
        out: [2, 3, 4, 5],
        y: &[
            3.0, 8.0, 10.0, 6.0, 9.0, 11.0, 7.0, 10.0, 6.0, 8.0, 10.0, 6.0, 11.0, 11.0, 7.0, 9.0,
            5.0, 10.0, 10.0, 6.0, 11.0, 11.0, 9.0, 9.0, 5.0, 10.0, 10.0, 9.0, 11.0, 5.0, 9.0, 11.0,
            8.0, 10.0, 4.0, 8.0, 11.0, 7.0, 9.0, 3.0, 7.0, 10.0, 6.0, 11.0, 11.0, 7.0, 11.0, 11.0,
            10.0, 10.0, 6.0, 11.0, 11.0, 9.0, 11.0, 5.0, 10.0, 10.0, 8.0, 11.0, 4.0, 9.0, 11.0,
            7.0, 10.0, 3.0, 8.0, 11.0, 7.0, 9.0, 11.0, 7.0, 10.0, 6.0, 8.0, 10.0, 6.0, 11.0, 11.0,
            7.0, 9.0, 5.0, 10.0, 10.0, 6.0, 11.0, 11.0, 10.0, 10.0, 6.0, 10.0, 10.0, 9.0, 11.0,
            5.0, 9.0, 9.0, 8.0, 10.0, 4.0, 8.0, 11.0, 7.0, 9.0, 3.0, 8.0, 10.0, 6.0, 11.0, 11.0,
            7.0, 11.0, 11.0, 10.0, 10.0, 6.0, 11.0, 11.0, 9.0, 9.0,
        ],
        dx: &[
            0.0, -2.5, 0.0, 2.5, 0.0, 0.0, 0.0, 0.0, 3.5, 0.0, 0.0, 0.0, 0.0, -2.0, 0.0, 0.0, 1.0,
            0.0, 1.5, 0.0, 0.0, -0.5, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, -1.5, 0.0, 0.0, 3.5, 0.0, 1.0, 0.0, 0.0, -2.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 2.5, 0.0, 0.0, 0.5, 0.0, 2.0, 0.0, 0.0, 1.5, 0.0, -3.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.5, 0.0, 0.0, 1.0, 0.0, 5.0, 0.0, 0.0,
            0.0, 0.0, -2.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.5, 0.0, 0.0, -0.5, 0.0, 0.5, 0.0,
            0.0, 0.0, 0.0, 1.5, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.0, 0.0, 3.5, 0.0, -2.5,
            0.0, 0.0, 0.0, 0.0, -1.5, 0.0, 0.0, 0.0, 0.0, -0.5, 0.0, 0.0, -2.5, 0.0, 3.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -3.0, 0.0,
            0.0, 2.5, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.5,
            0.0, 0.0, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.5, 0.0, 0.0, 3.5, 0.0, 1.5, 0.0, 0.0, 0.0, 0.0, 2.5, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0,
            0.0, -1.0, 0.0, 0.0, 0.5, 0.0, -1.5, 0.0, 0.0, 0.0, 0.0, -0.5, 0.0, 0.0, 0.0, 0.0, 0.5,
            0.0, 0.0, -1.5, 0.0, -2.5, 0.0, 0.0, 2.5, 0.0, 0.0, 0.0, 0.0, 3.5, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 1.5, 0.0, 0.0, -0.5, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.5, 0.0, 0.0, 3.5, 0.0, 3.0, 0.0, 0.0, -1.0, 0.0, 3.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.5, 0.0, 0.0, -1.5, 0.0,
            -3.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.5, 0.0, 0.0, 2.5,
            0.0, 5.0, 0.0, 0.0, 0.0, 0.0, -2.5, 0.0, 0.0, 0.0, 0.0, -1.5, 0.0, 0.0, 3.5, 0.0, 0.0,
            -0.5, 0.0, -2.0, 0.0, 0.0, 0.0, 0.0, 1.5, 0.0, 0.0, 0.0, 0.0, 2.5, 0.0, 0.0, 0.5, 0.0,
            2.0, 0.0, 0.0, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 3.0, 0.0, 0.0, -1.5, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, -3.0, 0.0,
        ],
    },
    PoolCase {
        dims: [1, 2, 5, 7],
        k: 2,
        s: 2,
        p: 0,
        mul: 17,
        modulo: 11,
        out: [1, 2, 2, 3],
        y: &[4.0, 5.0, 3.0, 2.0, 3.0, 4.0, 5.0, 3.0, 4.0, 3.0, 4.0, 5.0],
        dx: &[
            0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, -2.5, 0.0, 2.5, 0.0, 0.0, 0.0, 0.0, -1.5, 0.0, 3.5,
            0.0, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, -2.5, 0.0, 2.5, 0.0, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0,
            -1.5, 0.0, 3.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0,
        ],
    },
    PoolCase {
        dims: [1, 1, 6, 5],
        k: 3,
        s: 1,
        p: 0,
        mul: 7,
        modulo: 5,
        out: [1, 1, 4, 3],
        y: &[2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0],
        dx: &[
            0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 3.5, 0.0, 0.0, 0.0, 0.0, -0.5, 0.0, 0.0, 0.0, 0.0,
            2.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ],
    },
    PoolCase {
        dims: [1, 2, 8, 8],
        k: 2,
        s: 3,
        p: 1,
        mul: 29,
        modulo: 13,
        out: [1, 2, 3, 3],
        y: &[
            -6.0, 3.0, -1.0, 3.0, -1.0, 6.0, -3.0, 6.0, 2.0, 4.0, 0.0, 6.0, 0.0, 6.0, 5.0, 5.0,
            3.0, -1.0,
        ],
        dx: &[
            -2.5, 0.0, 0.0, 2.5, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.5,
            0.0, 0.0, 3.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.5, 0.0, 0.0, -2.5, 0.0, 0.0, 2.5, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, -1.5,
            0.0, 3.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5, 0.0, -0.5, 0.0, 0.0,
            0.0, -2.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, -1.5, 0.0, 2.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ],
    },
    PoolCase {
        dims: [1, 1, 9, 6],
        k: 4,
        s: 2,
        p: 2,
        mul: 41,
        modulo: 19,
        out: [1, 1, 5, 4],
        y: &[
            9.0, 9.0, 6.0, 6.0, 9.0, 9.0, 6.0, 6.0, 9.0, 9.0, 4.0, 4.0, 9.0, 9.0, 9.0, 2.0, 7.0,
            9.0, 9.0, 0.0,
        ],
        dx: &[
            0.0, 0.0, 0.0, 0.0, 0.0, -4.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 2.5, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 1.5, 0.0, 0.0, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0,
        ],
    },
    PoolCase {
        dims: [1, 1, 5, 5],
        k: 3,
        s: 2,
        p: 1,
        mul: 0,
        modulo: 1,
        out: [1, 1, 3, 3],
        y: &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        dx: &[
            -2.5, 2.5, 0.0, 0.5, 0.0, -1.5, 3.5, 0.0, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.5,
            -2.5, 0.0, 2.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ],
    },
];

fn golden_input(c: &PoolCase) -> Vec<f64> {
    let n: usize = c.dims.iter().product();
    (0..n)
        .map(|i| ((i * c.mul) % c.modulo) as f64 - (c.modulo / 2) as f64)
        .collect()
}

fn golden_grad(len: usize) -> Vec<f64> {
    (0..len).map(|j| ((j * 5) % 7) as f64 - 2.5).collect()
}

/// Runs the pool on `x` (as `dtype`) and returns (output, dL/dx for L = Σ y·g), as f64.
fn pool_with_grad(
    x: &[f64],
    dims: [usize; 4],
    (k, s, p): (usize, usize, usize),
    g: &dyn Fn(usize) -> Vec<f64>,
    dtype: DType,
) -> (Vec<usize>, Vec<f64>, Vec<f64>) {
    let xt = Tensor::from_slice(x, dims.as_slice(), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let x = Var::from_tensor(&xt).unwrap();
    let y = max_pool2d(x.as_tensor(), k, s, p).unwrap();
    let gt = Tensor::from_vec(g(y.elem_count()), y.dims(), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let grads = (&y * &gt).unwrap().sum_all().unwrap().backward().unwrap();
    let dx = grads.get(x.as_tensor()).unwrap();
    let flat = |t: &Tensor| {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    };
    (y.dims().to_vec(), flat(&y), flat(dx))
}

#[test]
fn pool_forward_and_backward_match_pytorch() {
    for (i, c) in POOL_CASES.iter().enumerate() {
        for dtype in [DType::F32, DType::F64] {
            let (dims, y, dx) = pool_with_grad(
                &golden_input(c),
                c.dims,
                (c.k, c.s, c.p),
                &golden_grad,
                dtype,
            );
            assert_eq!(dims, c.out, "case {i} output shape");
            let want_y: Vec<f64> = c.y.iter().map(|&v| v as f64).collect();
            let want_dx: Vec<f64> = c.dx.iter().map(|&v| v as f64).collect();
            assert_eq!(y, want_y, "case {i} ({dtype:?}) output");
            assert_eq!(dx, want_dx, "case {i} ({dtype:?}) input gradient");
        }
    }
}

// import torch, torch.nn.functional as F
// nan = float('nan')
// x = torch.tensor([[[[1., nan, 3.], [nan, 5., 0.], [2., 2., 2.]]]], requires_grad=True)
// y = F.max_pool2d(x, 2, 1, 0); y.sum().backward()
// y    -> [[nan, nan], [nan, 5.]]
// grad -> [[0., 1., 0.], [2., 1., 0.], [0., 0., 0.]]
// (the window holding two NaNs sends its gradient to the last one)
#[test]
fn pool_nan_wins_like_pytorch() {
    let nan = f64::NAN;
    let x = [1., nan, 3., nan, 5., 0., 2., 2., 2.];
    for dtype in [DType::F32, DType::F64] {
        let (dims, y, dx) = pool_with_grad(&x, [1, 1, 3, 3], (2, 1, 0), &|n| vec![1.0; n], dtype);
        assert_eq!(dims, [1, 1, 2, 2]);
        assert!(y[0].is_nan() && y[1].is_nan() && y[2].is_nan(), "{y:?}");
        assert_eq!(y[3], 5.0);
        assert_eq!(dx, [0., 1., 0., 2., 1., 0., 0., 0., 0.], "{dtype:?}");
    }
}

/// The naive definition: pad with −∞, scan every window in row-major order, keep the first strict
/// maximum (or the latest NaN).
fn naive_pool(
    x: &[f64],
    [n, c, h, w]: [usize; 4],
    (k, s, p): (usize, usize, usize),
    g: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let ho = (h + 2 * p - k) / s + 1;
    let wo = (w + 2 * p - k) / s + 1;
    let mut y = vec![0.0; n * c * ho * wo];
    let mut dx = vec![0.0; x.len()];
    for plane in 0..n * c {
        for oy in 0..ho {
            for ox in 0..wo {
                let (mut best, mut m) = (None, f64::NEG_INFINITY);
                for ky in 0..k {
                    for kx in 0..k {
                        let (iy, ix) = (
                            (oy * s + ky) as isize - p as isize,
                            (ox * s + kx) as isize - p as isize,
                        );
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let idx = plane * h * w + iy as usize * w + ix as usize;
                        if best.is_none() || x[idx] > m || x[idx].is_nan() {
                            best = Some(idx);
                            m = x[idx];
                        }
                    }
                }
                let o = plane * ho * wo + oy * wo + ox;
                y[o] = m;
                dx[best.unwrap()] += g[o];
            }
        }
    }
    (y, dx)
}

#[test]
fn pool_matches_a_naive_reference_on_random_inputs() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    // (dims, (k, s, p)); the last two are large enough to run on several threads.
    let cases: [([usize; 4], (usize, usize, usize)); 8] = [
        ([2, 3, 7, 9], (3, 2, 1)),
        ([1, 2, 10, 11], (2, 2, 0)),
        ([2, 2, 6, 5], (3, 1, 1)),
        ([1, 3, 9, 8], (5, 2, 2)),
        ([3, 1, 8, 8], (2, 3, 1)),
        ([1, 1, 4, 4], (1, 1, 0)),
        ([4, 8, 33, 31], (3, 2, 1)),
        ([8, 16, 32, 32], (2, 2, 0)),
    ];
    for (dims, ksp) in cases {
        let len: usize = dims.iter().product();
        // Small integers: many ties, so the tie rule is exercised too.
        let x: Vec<f64> = (0..len)
            .map(|_| rng.random_range(-4i32..5) as f64)
            .collect();
        let gy: std::cell::RefCell<Vec<f64>> = Default::default();
        let g = |n: usize| {
            let v: Vec<f64> = (0..n).map(|j| ((j * 7) % 13) as f64 - 6.0).collect();
            *gy.borrow_mut() = v.clone();
            v
        };
        for dtype in [DType::F32, DType::F64] {
            let (_, y, dx) = pool_with_grad(&x, dims, ksp, &g, dtype);
            let (want_y, want_dx) = naive_pool(&x, dims, ksp, &gy.borrow());
            assert_eq!(y, want_y, "{dims:?} {ksp:?} {dtype:?} output");
            assert_eq!(dx, want_dx, "{dims:?} {ksp:?} {dtype:?} gradient");
        }
    }
}

/// Windows of −0.0, +0.0 and −1.0: the 2×2 fast path finds the winner by bit equality with the window's
/// maximum, so signed zeros (equal as floats, different in bits) must still give the first maximum.
#[test]
fn pool_signed_zero_ties_follow_the_first_maximum_rule() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for (dims, ksp) in [([4, 3, 12, 10], (2, 2, 0)), ([2, 3, 9, 9], (3, 2, 1))] {
        let len: usize = dims.iter().product();
        let x: Vec<f64> = (0..len)
            .map(|_| [-0.0, 0.0, -1.0][rng.random_range(0..3usize)])
            .collect();
        let gy: std::cell::RefCell<Vec<f64>> = Default::default();
        let g = |n: usize| {
            let v: Vec<f64> = (0..n).map(|j| (j % 5) as f64 + 1.0).collect();
            *gy.borrow_mut() = v.clone();
            v
        };
        for dtype in [DType::F32, DType::F64] {
            let (_, y, dx) = pool_with_grad(&x, dims, ksp, &g, dtype);
            let (want_y, want_dx) = naive_pool(&x, dims, ksp, &gy.borrow());
            let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y), bits(&want_y), "{dims:?} {ksp:?} {dtype:?} output");
            assert_eq!(dx, want_dx, "{dims:?} {ksp:?} {dtype:?} gradient");
        }
    }
}

#[test]
fn pool_gradient_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (dims, ksp) in [
        ([1, 2, 7, 6], (3, 2, 1)),
        ([2, 1, 6, 6], (2, 2, 0)),
        ([1, 1, 5, 7], (3, 1, 0)),
    ] {
        let len: usize = dims.iter().product();
        // Distinct continuous values: no ties, so the loss is differentiable at x.
        let x: Vec<f64> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
        let w: Vec<f64> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
        let g = |n: usize| w[..n].to_vec();
        let (_, _, dx) = pool_with_grad(&x, dims, ksp, &g, DType::F64);
        let loss = |x: &[f64]| -> f64 {
            let (_, y, _) = pool_with_grad(x, dims, ksp, &g, DType::F64);
            y.iter().zip(&w).map(|(a, b)| a * b).sum()
        };
        let h = 1e-6;
        for i in 0..len {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            let fd = (loss(&xp) - loss(&xm)) / (2.0 * h);
            assert!(
                (fd - dx[i]).abs() < 1e-6,
                "{dims:?} {ksp:?} element {i}: {fd} vs {}",
                dx[i]
            );
        }
    }
}

#[test]
fn pool_rejects_bad_configurations() {
    let x = Tensor::zeros((1, 2, 5, 5), DType::F32, &Device::Cpu).unwrap();
    let field = |r: deepcomp_models::Result<Tensor>| match r {
        Err(ModelError::Config { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    };
    assert_eq!(field(max_pool2d(&x, 0, 1, 0)), "kernel");
    assert_eq!(field(max_pool2d(&x, 2, 0, 0)), "stride");
    assert_eq!(field(max_pool2d(&x, 3, 1, 2)), "padding");
    assert_eq!(field(max_pool2d(&x, 2, 2, 2)), "padding");
    let ints = Tensor::zeros((1, 2, 5, 5), DType::U32, &Device::Cpu).unwrap();
    assert_eq!(field(max_pool2d(&ints, 2, 2, 0)), "dtype");
    // A window larger than the (padded) input, and inputs that are not 4-D.
    let small = Tensor::zeros((1, 1, 2, 6), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        max_pool2d(&small, 3, 1, 0),
        Err(ModelError::Shape { .. })
    ));
    assert!(
        max_pool2d(&small, 3, 1, 1).is_ok(),
        "padding makes the window fit"
    );
    let empty = Tensor::zeros((1, 1, 0, 3), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        max_pool2d(&empty, 2, 1, 1),
        Err(ModelError::Shape { .. })
    ));
    let flat = Tensor::zeros((2, 5, 5), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        max_pool2d(&flat, 2, 2, 0),
        Err(ModelError::Shape { .. })
    ));
    assert!(matches!(
        max_pool2d_reduce(&x, 2),
        Err(ModelError::Shape { .. })
    ));
    assert!(matches!(
        max_pool2d_reduce(&flat, 2),
        Err(ModelError::Shape { .. })
    ));
    assert!(matches!(
        max_pool2d_reduce(&x, 0),
        Err(ModelError::Config { .. })
    ));
}

#[test]
fn pool_reduce_fallback_agrees_with_the_kernel() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x: Vec<f32> = (0..2 * 3 * 8 * 12)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let x = Var::from_vec(x, (2, 3, 8, 12), &Device::Cpu).unwrap();
    let ours = max_pool2d(x.as_tensor(), 2, 2, 0).unwrap();
    let reduce = max_pool2d_reduce(x.as_tensor(), 2).unwrap();
    let wrapper = deepcomp_models::layers::max_pool2d(x.as_tensor(), 2).unwrap();
    let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(v(&ours), v(&reduce));
    assert_eq!(v(&ours), v(&wrapper));
    // Without ties both backward passes agree too.
    let g1 = ours.sum_all().unwrap().backward().unwrap();
    let g2 = reduce.sum_all().unwrap().backward().unwrap();
    assert_eq!(
        v(g1.get(x.as_tensor()).unwrap()),
        v(g2.get(x.as_tensor()).unwrap())
    );
}

// ---------------------------------------------------------------------------------------------
// Batch normalization
// ---------------------------------------------------------------------------------------------

/// Train-mode batch norm composed of candle ops (the layer's non-CPU path), with the batch mean and
/// biased variance.
fn composite_bn(xs: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> (Tensor, Tensor, Tensor) {
    let dims = xs.dims();
    let c = dims[1];
    let (bshape, reduce): (Vec<usize>, Vec<usize>) = if dims.len() == 2 {
        (vec![1, c], vec![0])
    } else {
        (vec![1, c, 1, 1], vec![0, 2, 3])
    };
    let count: usize = reduce.iter().map(|&d| dims[d]).product();
    let inv_n = 1.0 / count as f64;
    let mean = (xs.sum_keepdim(reduce.as_slice()).unwrap() * inv_n).unwrap();
    let centered = xs.broadcast_sub(&mean).unwrap();
    let var = (centered
        .sqr()
        .unwrap()
        .sum_keepdim(reduce.as_slice())
        .unwrap()
        * inv_n)
        .unwrap();
    let scale = gamma
        .reshape(bshape.as_slice())
        .unwrap()
        .broadcast_div(&(var.clone() + eps).unwrap().sqrt().unwrap())
        .unwrap();
    let ys = centered
        .broadcast_mul(&scale)
        .unwrap()
        .broadcast_add(&beta.reshape(bshape.as_slice()).unwrap())
        .unwrap();
    (ys, mean.flatten_all().unwrap(), var.flatten_all().unwrap())
}

fn randn(rng: &mut ChaCha8Rng, n: usize, offset: f64, scale: f64) -> Vec<f64> {
    (0..n)
        .map(|_| offset + scale * (rng.random_range(-1.0..1.0) + rng.random_range(-1.0..1.0)))
        .collect()
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// Output and gradients (x, γ, β) of `L = Σ y·w` for the fused op or the composite.
fn bn_run(
    x: &[f64],
    dims: &[usize],
    gamma: &[f64],
    beta: &[f64],
    w: &[f64],
    dtype: DType,
    fused: bool,
) -> [Vec<f64>; 4] {
    let t = |v: &[f64], d: &[usize]| {
        Var::from_tensor(
            &Tensor::from_slice(v, d, &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
        .unwrap()
    };
    let c = gamma.len();
    let (xv, gv, bv) = (t(x, dims), t(gamma, &[c]), t(beta, &[c]));
    let y = if fused {
        batch_norm_train(xv.as_tensor(), gv.as_tensor(), bv.as_tensor(), 1e-5)
            .unwrap()
            .0
    } else {
        composite_bn(xv.as_tensor(), gv.as_tensor(), bv.as_tensor(), 1e-5).0
    };
    let wt = t(w, dims);
    let grads = (&y * wt.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = |v: &Var| to_f64(grads.get(v.as_tensor()).unwrap());
    [to_f64(&y), g(&xv), g(&gv), g(&bv)]
}

/// Largest |a − b| relative to the largest |b| (at least 1).
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

const BN_SHAPES: [&[usize]; 4] = [&[8, 5, 6, 7], &[16, 12], &[3, 4, 1, 1], &[16, 8, 16, 16]];

#[test]
fn bn_matches_the_candle_composite() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for dims in BN_SHAPES {
        let len: usize = dims.iter().product();
        let c = dims[1];
        // A large mean offset relative to the spread checks the accuracy of the statistics.
        let x = randn(&mut rng, len, 3.0, 2.0);
        let gamma = randn(&mut rng, c, 1.0, 0.5);
        let beta = randn(&mut rng, c, 0.0, 0.5);
        let w = randn(&mut rng, len, 0.0, 1.0);
        for (dtype, tol) in [(DType::F32, 1e-4), (DType::F64, 1e-10)] {
            let ours = bn_run(&x, dims, &gamma, &beta, &w, dtype, true);
            let want = bn_run(&x, dims, &gamma, &beta, &w, dtype, false);
            for (what, (a, b)) in ["y", "dx", "dgamma", "dbeta"]
                .iter()
                .zip(ours.iter().zip(&want))
            {
                let e = rel_err(a, b);
                assert!(e < tol, "{dims:?} {dtype:?} {what}: relative error {e:e}");
            }
        }
    }
}

#[test]
fn bn_gradients_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for dims in [&[3usize, 2, 2, 3][..], &[5, 3]] {
        let len: usize = dims.iter().product();
        let c = dims[1];
        let x = randn(&mut rng, len, 0.5, 1.0);
        let gamma = randn(&mut rng, c, 1.0, 0.5);
        let beta = randn(&mut rng, c, 0.0, 0.5);
        let w = randn(&mut rng, len, 0.0, 1.0);
        let [_, dx, dg, db] = bn_run(&x, dims, &gamma, &beta, &w, DType::F64, true);
        let loss = |x: &[f64], g: &[f64], b: &[f64]| -> f64 {
            let [y, ..] = bn_run(x, dims, g, b, &w, DType::F64, true);
            y.iter().zip(&w).map(|(a, b)| a * b).sum()
        };
        let h = 1e-6;
        let fd = |which: usize, i: usize| {
            let mut args = [x.clone(), gamma.clone(), beta.clone()];
            args[which][i] += h;
            let up = loss(&args[0], &args[1], &args[2]);
            args[which][i] -= 2.0 * h;
            let down = loss(&args[0], &args[1], &args[2]);
            (up - down) / (2.0 * h)
        };
        for (which, (name, grad)) in [("x", &dx), ("gamma", &dg), ("beta", &db)]
            .into_iter()
            .enumerate()
        {
            for (i, &g) in grad.iter().enumerate() {
                let f = fd(which, i);
                assert!(
                    (f - g).abs() < 1e-6 * (1.0 + g.abs()),
                    "{dims:?} d{name}[{i}]: {f} vs {g}"
                );
            }
        }
    }
}

#[test]
fn bn_returns_the_batch_statistics() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (n, c, h, w) = (6, 3, 4, 5);
    let x = randn(&mut rng, n * c * h * w, -2.0, 1.5);
    let xt = Tensor::from_slice(&x, (n, c, h, w), &Device::Cpu).unwrap();
    let ones = Tensor::ones(c, DType::F64, &Device::Cpu).unwrap();
    let zeros = Tensor::zeros(c, DType::F64, &Device::Cpu).unwrap();
    let (_, stats) = batch_norm_train(&xt, &ones, &zeros, 1e-5).unwrap();
    assert_eq!(stats.count, n * h * w);
    for ch in 0..c {
        let vals: Vec<f64> = (0..n)
            .flat_map(|i| x[(i * c + ch) * h * w..(i * c + ch + 1) * h * w].to_vec())
            .collect();
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        let v = vals.iter().map(|x| (x - m).powi(2)).sum::<f64>() / vals.len() as f64;
        assert!((stats.mean[ch] - m).abs() < 1e-12);
        assert!((stats.var[ch] - v).abs() < 1e-12);
        let unbiased = stats.unbiased_var()[ch];
        assert!((unbiased - v * vals.len() as f64 / (vals.len() - 1) as f64).abs() < 1e-12);
    }
    let one = BatchStats {
        mean: vec![0.0],
        var: vec![2.0],
        count: 1,
    };
    assert_eq!(one.unbiased_var(), [2.0]);
}

#[test]
fn bn_layer_running_stats_match_the_composite_path() {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for dims in [&[8usize, 4, 5, 5][..], &[10, 6]] {
        let c = dims[1];
        let mut store = ParamStore::new();
        let bn = BatchNorm::new(&mut store, "bn", c, &Device::Cpu).unwrap();
        let get = |name: &str| to_f64(store.get(name).unwrap().var.as_tensor());
        let (mut rm, mut rv) = (vec![0.0f64; c], vec![1.0f64; c]);
        for _ in 0..2 {
            let len: usize = dims.iter().product();
            let x = randn(&mut rng, len, 1.0, 3.0);
            let xt = Tensor::from_slice(&x, dims, &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            let ys = bn.forward_t(&xt, true).unwrap();
            let gamma = store.get("bn.weight").unwrap().var.as_tensor().clone();
            let beta = store.get("bn.bias").unwrap().var.as_tensor().clone();
            let (want, mean, var) = composite_bn(&xt, &gamma, &beta, BatchNorm::EPS);
            assert!(rel_err(&to_f64(&ys), &to_f64(&want)) < 1e-5);
            let count = (len / c) as f64;
            for (ch, (m, v)) in to_f64(&mean).iter().zip(to_f64(&var)).enumerate() {
                rm[ch] = 0.9 * rm[ch] + 0.1 * m;
                rv[ch] = 0.9 * rv[ch] + 0.1 * v * count / (count - 1.0);
            }
            assert!(rel_err(&get("bn.running_mean"), &rm) < 1e-5, "{dims:?}");
            assert!(rel_err(&get("bn.running_var"), &rv) < 1e-5, "{dims:?}");
        }
    }
}

#[test]
fn bn_rejects_bad_inputs() {
    let dev = &Device::Cpu;
    let g = Tensor::ones(3, DType::F32, dev).unwrap();
    let field = |r: deepcomp_models::Result<(Tensor, BatchStats)>| match r {
        Err(ModelError::Config { field, .. }) => field,
        Err(e) => panic!("expected a config error, got {e}"),
        Ok(_) => panic!("expected a config error"),
    };
    let x = Tensor::zeros((4, 3, 2, 2), DType::F32, dev).unwrap();
    let one = Tensor::zeros((1, 3), DType::F32, dev).unwrap();
    assert_eq!(field(batch_norm_train(&one, &g, &g, 1e-5)), "batch");
    assert_eq!(field(batch_norm_train(&x, &g, &g, -1.0)), "eps");
    assert_eq!(field(batch_norm_train(&x, &g, &g, f64::NAN)), "eps");
    let g64 = g.to_dtype(DType::F64).unwrap();
    assert_eq!(field(batch_norm_train(&x, &g64, &g, 1e-5)), "dtype");
    let shape_err = |r: deepcomp_models::Result<(Tensor, BatchStats)>| {
        matches!(r, Err(ModelError::Shape { .. }))
    };
    let x3 = Tensor::zeros((4, 3, 2), DType::F32, dev).unwrap();
    assert!(shape_err(batch_norm_train(&x3, &g, &g, 1e-5)));
    let g4 = Tensor::ones(4, DType::F32, dev).unwrap();
    assert!(shape_err(batch_norm_train(&x, &g4, &g, 1e-5)));
    assert!(shape_err(batch_norm_train(&x, &g, &g4, 1e-5)));
}
