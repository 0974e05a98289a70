//! The fused linear and conv2d kernels against candle's own ops and against finite differences.
//!
//! Each case builds random inputs from a fixed seed, runs the kernel and the equivalent composition of
//! candle ops (`matmul` + `broadcast_add` + `relu`; `conv2d` + `broadcast_add`), and compares outputs
//! and the gradients of `L = Σ y ⊙ r` for a random `r` with respect to every input. The f64 cases are
//! also checked against central finite differences of `L`.

use candle_core::{DType, Device, Tensor, Var};
use deepcomp_models::kernels::{conv2d, linear, Activation};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(rng: &mut ChaCha8Rng, shape: &[usize], dtype: DType) -> Var {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let t = Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    Var::from_tensor(&t).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Largest |a − b| relative to max(1, |b|).
fn max_rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    values(a)
        .iter()
        .zip(values(b))
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f64::max)
}

/// Output and gradients of `L = Σ f(inputs) ⊙ r` with respect to each input.
fn grads_of(
    f: impl Fn(&[&Tensor]) -> Tensor,
    inputs: &[&Var],
    r: &Tensor,
) -> (Tensor, Vec<Tensor>) {
    let ts: Vec<&Tensor> = inputs.iter().map(|v| v.as_tensor()).collect();
    let y = f(&ts);
    let loss = (&y * r).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = inputs
        .iter()
        .map(|v| grads.get(v.as_tensor()).expect("gradient").clone())
        .collect();
    (y, g)
}

/// Central finite differences of `L` with respect to a few entries of input `which`.
fn finite_diff_check(
    f: &dyn Fn(&[&Tensor]) -> Tensor,
    inputs: &[&Var],
    r: &Tensor,
    which: usize,
    analytic: &Tensor,
    rng: &mut ChaCha8Rng,
) {
    let loss = |ts: &[Tensor]| -> f64 {
        let refs: Vec<&Tensor> = ts.iter().collect();
        (&f(&refs) * r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let base: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().detach()).collect();
    let shape = base[which].dims().to_vec();
    let flat = values(&base[which]);
    let an = values(analytic);
    let eps = 1e-6;
    for _ in 0..12 {
        let i = rng.random_range(0..flat.len());
        let mut plus = flat.clone();
        plus[i] += eps;
        let mut minus = flat.clone();
        minus[i] -= eps;
        let mut tp = base.clone();
        tp[which] = Tensor::from_vec(plus, shape.as_slice(), &Device::Cpu).unwrap();
        let mut tm = base.clone();
        tm[which] = Tensor::from_vec(minus, shape.as_slice(), &Device::Cpu).unwrap();
        let numeric = (loss(&tp) - loss(&tm)) / (2.0 * eps);
        assert!(
            (numeric - an[i]).abs() <= 1e-6 * an[i].abs().max(1.0),
            "input {which} entry {i}: finite difference {numeric} vs analytic {}",
            an[i]
        );
    }
}

fn linear_case(n: usize, fin: usize, fout: usize, bias: bool, act: Activation, dtype: DType) {
    let mut rng = ChaCha8Rng::seed_from_u64((n * 1000 + fin * 10 + fout) as u64);
    let x = random(&mut rng, &[n, fin], dtype);
    let w = random(&mut rng, &[fout, fin], dtype);
    let b = random(&mut rng, &[fout], dtype);
    let r = random(&mut rng, &[n, fout], dtype).as_tensor().detach();
    let inputs: Vec<&Var> = if bias { vec![&x, &w, &b] } else { vec![&x, &w] };
    let ours = |t: &[&Tensor]| linear(t[0], t[1], t.get(2).copied(), act).unwrap();
    let reference = |t: &[&Tensor]| {
        let y = t[0].matmul(&t[1].t().unwrap()).unwrap();
        let y = match t.get(2) {
            Some(b) => y.broadcast_add(b).unwrap(),
            None => y,
        };
        match act {
            Activation::Identity => y,
            Activation::Relu => y.relu().unwrap(),
        }
    };
    let (y1, g1) = grads_of(ours, &inputs, &r);
    let (y2, g2) = grads_of(reference, &inputs, &r);
    let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
    assert!(max_rel_err(&y1, &y2) <= tol, "forward differs");
    for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
        let e = max_rel_err(a, b);
        assert!(e <= tol * 10.0, "gradient of input {i} differs by {e}");
    }
    if dtype == DType::F64 {
        for (i, g) in g1.iter().enumerate() {
            finite_diff_check(&ours, &inputs, &r, i, g, &mut rng);
        }
    }
}

#[test]
fn linear_matches_candle_and_finite_differences() {
    for dtype in [DType::F32, DType::F64] {
        for act in [Activation::Identity, Activation::Relu] {
            for bias in [true, false] {
                linear_case(7, 13, 5, bias, act, dtype);
                linear_case(64, 100, 33, bias, act, dtype);
            }
        }
    }
}

#[test]
fn linear_skips_the_input_gradient_of_a_plain_tensor() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = random(&mut rng, &[9, 6], DType::F32).as_tensor().detach();
    let w = random(&mut rng, &[4, 6], DType::F32);
    let b = random(&mut rng, &[4], DType::F32);
    let y = linear(&x, w.as_tensor(), Some(b.as_tensor()), Activation::Relu).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    // dW = (y > 0)ᵀ · x when r = 1.
    let mask = y.gt(0.0).unwrap().to_dtype(DType::F32).unwrap();
    let expected = mask.t().unwrap().matmul(&x).unwrap();
    assert!(max_rel_err(grads.get(w.as_tensor()).unwrap(), &expected) < 1e-5);
    let expected_b = mask.sum(0).unwrap();
    assert!(max_rel_err(grads.get(b.as_tensor()).unwrap(), &expected_b) < 1e-6);
}

#[test]
fn linear_rejects_mismatched_shapes() {
    let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((4, 5), DType::F32, &Device::Cpu).unwrap();
    let err = linear(&x, &w, None, Activation::Identity).unwrap_err();
    assert!(err.to_string().contains("linear input"), "{err}");
    let w = Tensor::zeros((4, 3), DType::F32, &Device::Cpu).unwrap();
    let b = Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap();
    let err = linear(&x, &w, Some(&b), Activation::Identity).unwrap_err();
    assert!(err.to_string().contains("linear bias"), "{err}");
}

#[allow(clippy::too_many_arguments)]
fn conv_case(
    n: usize,
    c: usize,
    hw: (usize, usize),
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
    bias: bool,
    dtype: DType,
) {
    let mut rng =
        ChaCha8Rng::seed_from_u64((n * 7 + c * 11 + o * 13 + k * 17 + stride + pad) as u64);
    let x = random(&mut rng, &[n, c, hw.0, hw.1], dtype);
    let w = random(&mut rng, &[o, c, k, k], dtype);
    let b = random(&mut rng, &[o], dtype);
    let ho = (hw.0 + 2 * pad - k) / stride + 1;
    let wo = (hw.1 + 2 * pad - k) / stride + 1;
    let r = random(&mut rng, &[n, o, ho, wo], dtype)
        .as_tensor()
        .detach();
    let inputs: Vec<&Var> = if bias { vec![&x, &w, &b] } else { vec![&x, &w] };
    let ours = |t: &[&Tensor]| conv2d(t[0], t[1], t.get(2).copied(), stride, pad).unwrap();
    let reference = |t: &[&Tensor]| {
        let y = t[0].conv2d(t[1], pad, stride, 1, 1).unwrap();
        match t.get(2) {
            Some(b) => y.broadcast_add(&b.reshape((1, o, 1, 1)).unwrap()).unwrap(),
            None => y,
        }
    };
    let (y1, g1) = grads_of(ours, &inputs, &r);
    // f32 rounding in a sum of C·k·k products grows like its square root: the tolerance is set for
    // up to 144 terms (16 channels, 3×3) and widened beyond that (VGG16-half's 1,152).
    let depth = ((c * k * k) as f64 / 144.0).sqrt().max(1.0);
    let tol = if dtype == DType::F32 {
        2e-5 * depth
    } else {
        1e-12
    };
    let y2 = reference(&inputs.iter().map(|v| v.as_tensor()).collect::<Vec<_>>());
    assert_eq!(y1.dims(), [n, o, ho, wo]);
    let e = max_rel_err(&y1, &y2);
    assert!(
        e <= tol,
        "forward differs by {e} (k {k}, stride {stride}, pad {pad})"
    );
    // candle 0.11's conv2d backward returns an input gradient of the wrong shape when the last window
    // does not end on the input's edge ((size + 2·pad − k) not a multiple of the stride); there only
    // the finite differences (f64) judge our gradients.
    let aligned =
        (hw.0 + 2 * pad - k).is_multiple_of(stride) && (hw.1 + 2 * pad - k).is_multiple_of(stride);
    assert!(aligned || dtype == DType::F64, "unaligned cases need f64");
    let g2 = if aligned {
        grads_of(reference, &inputs, &r).1
    } else {
        Vec::new()
    };
    for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
        let e = max_rel_err(a, b);
        assert!(
            e <= tol * 10.0,
            "gradient of input {i} differs by {e} (k {k}, stride {stride}, pad {pad})"
        );
    }
    if dtype == DType::F64 {
        for (i, g) in g1.iter().enumerate() {
            finite_diff_check(&ours, &inputs, &r, i, g, &mut rng);
        }
    }
}

#[test]
fn conv2d_matches_candle_and_finite_differences() {
    for dtype in [DType::F64, DType::F32] {
        for bias in [true, false] {
            // LeNet-5's shapes, scaled down.
            conv_case(3, 1, (12, 12), 4, 5, 1, 0, bias, dtype);
            // VGG / ResNet: 3×3, padding 1, stride 1 and 2; odd and non-square sides.
            conv_case(2, 3, (7, 9), 5, 3, 1, 1, bias, dtype);
            conv_case(2, 3, (9, 7), 4, 3, 2, 1, bias, dtype);
            // 1×1 convolutions: the identity-column path and the strided one.
            conv_case(2, 4, (5, 5), 3, 1, 1, 0, bias, dtype);
            conv_case(2, 4, (7, 5), 3, 1, 2, 0, bias, dtype);
            // Padding wider than the kernel reach, stride larger than the kernel.
            conv_case(2, 2, (4, 4), 3, 2, 3, 2, bias, dtype);
        }
    }
    // Strided windows that stop short of the edge (candle's backward cannot be compared there).
    conv_case(2, 3, (8, 7), 4, 3, 2, 1, true, DType::F64);
    conv_case(2, 2, (5, 5), 3, 2, 3, 2, false, DType::F64);
    conv_case(2, 4, (6, 5), 3, 1, 2, 0, true, DType::F64);
    // More images than threads, so that the per-thread partial sums of dW are exercised.
    conv_case(9, 2, (6, 6), 3, 3, 1, 1, true, DType::F64);
}

/// The im2col path gathers several images of a small plane into one gemm (fewer than 64 output
/// positions per image): whole and partial groups, per-thread chunks of different lengths, a
/// 2 × 2 plane with 3 × 3 taps, the identity columns of a 1×1 convolution, stride 2 with col2im, and
/// channel counts that keep a 3×3 convolution off the direct path (more than 64 in).
#[test]
fn im2col_path_groups_images_of_small_planes() {
    conv_case(7, 72, (4, 4), 9, 3, 1, 1, true, DType::F32);
    conv_case(9, 72, (2, 2), 5, 3, 1, 1, false, DType::F32);
    conv_case(7, 3, (4, 4), 4, 3, 1, 1, true, DType::F64);
    conv_case(7, 4, (5, 5), 3, 1, 1, 0, false, DType::F64);
    conv_case(7, 3, (7, 7), 4, 3, 2, 1, true, DType::F64);
    conv_case(5, 2, (6, 5), 3, 1, 2, 0, true, DType::F64);
}

/// Planes of at most 4 positions take the block path (no multiply-adds on the padding): 2 × 2, 1 × 1
/// (the centre tap only), non-square 2 × 1, 5 × 5 kernels with padding 2, several images per gemm,
/// with and without a bias, against candle and (f64) finite differences.
#[test]
fn tiny_planes_skip_the_padding_and_match_candle() {
    for bias in [true, false] {
        conv_case(5, 3, (2, 2), 4, 3, 1, 1, bias, DType::F64);
        conv_case(5, 3, (1, 1), 4, 3, 1, 1, bias, DType::F64);
        conv_case(4, 2, (2, 1), 3, 3, 1, 1, bias, DType::F64);
        conv_case(3, 2, (2, 2), 3, 5, 1, 2, bias, DType::F64);
        conv_case(11, 40, (2, 2), 9, 3, 1, 1, bias, DType::F32);
    }
}

/// The direct (flat-grid) path at the sizes it is built for, in f32, where the SIMD kernels run
/// (along output rows where the width is a multiple of the vector, over the grid elsewhere):
/// ResNet-20's three stages (whole register blocks, one image per weight-gradient group at 32×32,
/// several at 8×8), output channels that leave a partial block (6, LeNet-5's first layer), a 5×5
/// kernel with padding 2, and more images than threads.
#[test]
fn direct_convolution_matches_candle_at_network_sizes() {
    let isa = deepcomp_models::kernels::direct::isa();
    eprintln!("direct convolution kernels: {isa:?}");
    conv_case(2, 16, (32, 32), 16, 3, 1, 1, false, DType::F32);
    conv_case(3, 32, (16, 16), 32, 3, 1, 1, false, DType::F32);
    conv_case(5, 64, (8, 8), 64, 3, 1, 1, false, DType::F32);
    // VGG16-half's 8×8 stage (128 channels), and rows of 24 (not a multiple of 16: 8-lane vectors
    // along the rows on AVX-512 machines for the forward pass, the whole grid for the gradient).
    conv_case(3, 128, (8, 8), 120, 3, 1, 1, false, DType::F32);
    conv_case(3, 16, (5, 24), 20, 3, 1, 1, true, DType::F32);
    conv_case(3, 3, (28, 28), 6, 5, 1, 0, true, DType::F32);
    conv_case(3, 6, (14, 14), 10, 5, 1, 2, true, DType::F32);
    conv_case(4, 3, (6, 6), 7, 3, 1, 1, true, DType::F64);
}

/// Every number of output channels from 1 to 25 through the direct path, in both of its vector
/// layouts: the forward kernel takes them in register blocks of 6 (AVX2) or 12 (AVX-512) rows and
/// then the rest, up to 11 rows, in smaller blocks. AVX-512 machines once left the rows past the first 7 of that rest unwritten
/// (32 output channels lost channel 31); the other instruction sets run the same counts.
#[test]
fn direct_convolution_computes_every_output_channel() {
    for o in 1..=25 {
        // Width 10: vectors over the whole grid; widths 16 and 8: vectors along the output rows
        // (16 lanes, and on AVX-512 machines the 8-lane kernel for rows of 8).
        conv_case(2, 8, (10, 10), o, 3, 1, 1, o % 2 == 0, DType::F32);
        conv_case(2, 8, (3, 16), o, 3, 1, 1, o % 2 == 1, DType::F32);
        conv_case(2, 8, (4, 8), o, 3, 1, 1, o % 2 == 0, DType::F32);
    }
}

#[test]
fn conv2d_skips_the_input_gradient_of_a_plain_tensor() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = random(&mut rng, &[2, 1, 6, 6], DType::F32)
        .as_tensor()
        .detach();
    let w = random(&mut rng, &[2, 1, 3, 3], DType::F32);
    let y = conv2d(&x, w.as_tensor(), None, 1, 0).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    let reference = x.conv2d(w.as_tensor(), 0, 1, 1, 1).unwrap();
    let rgrads = reference.sum_all().unwrap().backward().unwrap();
    assert!(
        max_rel_err(
            grads.get(w.as_tensor()).unwrap(),
            rgrads.get(w.as_tensor()).unwrap()
        ) < 1e-5
    );
}

#[test]
fn conv2d_rejects_bad_shapes() {
    let x = Tensor::zeros((1, 2, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros((3, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
    assert!(conv2d(&x, &w, None, 1, 0)
        .unwrap_err()
        .to_string()
        .contains("conv2d weight"));
    let w = Tensor::zeros((3, 2, 5, 5), DType::F32, &Device::Cpu).unwrap();
    assert!(conv2d(&x, &w, None, 1, 0)
        .unwrap_err()
        .to_string()
        .contains("conv2d input"));
    let w = Tensor::zeros((3, 2, 3, 3), DType::F32, &Device::Cpu).unwrap();
    assert!(conv2d(&x, &w, None, 0, 0).is_err());
    let b = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
    assert!(conv2d(&x, &w, Some(&b), 1, 0)
        .unwrap_err()
        .to_string()
        .contains("conv2d bias"));
}
