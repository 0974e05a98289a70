//! Uniform quantizers against the seeds' formulas, and the STE.

use candle_core::{DType, Device, Tensor, Var};
use deepcomp_quant::uniform::{
    channel_max_abs, minmax_quantize, minmax_quantize_per_channel, minmax_quantize_slice,
    range_quantize, range_quantize_per_channel, range_quantize_slice, ste, ste_range,
};
use deepcomp_quant::QuantError;

const W: [f32; 21] = [
    -1.3, -0.8, -0.51, -0.5, -0.26, -0.25, -0.125, -0.0625, 0.0, 0.0625, 0.1, 0.125, 0.24, 0.25,
    0.375, 0.49, 0.5, 0.74, 0.75, 0.99, 1.2,
];

fn bits_eq(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        // == rather than to_bits: numpy's -0.0 and our 0.0 are the same value.
        assert!(x == y, "element {i}: {x} vs {y}");
    }
}

/// Seed 002's formula in numpy (float32, numpy 2.4):
/// ```python
/// w = np.array(W, dtype=np.float32); f = lambda a: [np.format_float_positional(v, unique=True) for v in a]
/// for q, l in [(np.float32(1.0), 3), (np.float32(0.8), 4)]:
///     N = 2**l; delta = 2*q/N
///     print(f(np.clip(delta*np.round(w/delta), -q, q-delta)))
/// # [-1.0, -0.75, -0.5, -0.5, -0.25, -0.25, -0.0, -0.0, 0.0, 0.0, 0.0, 0.0, 0.25, 0.25, 0.5, 0.5, 0.5, 0.75, 0.75, 0.75, 0.75]
/// # [-0.8, -0.8, -0.5, -0.5, -0.3, -0.2, -0.1, -0.1, 0.0, 0.1, 0.1, 0.1, 0.2, 0.2, 0.4, 0.5, 0.5, 0.7, 0.7, 0.7, 0.7]
/// ```
/// (Half-way cases such as 0.125/0.25 = 0.5 round to even, like torch.round.)
#[test]
fn range_quantize_matches_seed_002() {
    let want_1_3 = [
        -1.0f32, -0.75, -0.5, -0.5, -0.25, -0.25, -0.0, -0.0, 0.0, 0.0, 0.0, 0.0, 0.25, 0.25, 0.5,
        0.5, 0.5, 0.75, 0.75, 0.75, 0.75,
    ];
    let want_08_4 = [
        -0.8f32, -0.8, -0.5, -0.5, -0.3, -0.2, -0.1, -0.1, 0.0, 0.1, 0.1, 0.1, 0.2, 0.2, 0.4, 0.5,
        0.5, 0.7, 0.7, 0.7, 0.7,
    ];
    bits_eq(&range_quantize_slice(&W, 1.0, 3).unwrap(), &want_1_3);
    bits_eq(&range_quantize_slice(&W, 0.8, 4).unwrap(), &want_08_4);
    let t = Tensor::from_slice(&W, (3, 7), &Device::Cpu).unwrap();
    let qt = range_quantize(&t, 0.8, 4).unwrap();
    assert_eq!(qt.dims(), &[3, 7]);
    bits_eq(
        &qt.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        &want_08_4,
    );
}

#[test]
fn range_quantize_levels_and_clipping() {
    let w: Vec<f32> = (0..2000).map(|i| (i as f32 - 1000.0) * 0.0017).collect();
    for bits in [1u8, 2, 5, 8] {
        let q = 0.9f32;
        let out = range_quantize_slice(&w, q, bits).unwrap();
        let delta = 2.0 * q / (1u32 << bits) as f32;
        let mut levels: Vec<f32> = out.clone();
        levels.sort_by(f32::total_cmp);
        levels.dedup_by(|a, b| a == b);
        assert!(levels.len() <= 1 << bits);
        assert!(out.iter().all(|&x| x >= -q && x <= q - delta + 1e-6));
        // Every level is an integer multiple of delta.
        assert!(levels
            .iter()
            .all(|&x| ((x / delta) - (x / delta).round()).abs() < 1e-3));
    }
}

#[test]
fn range_quantize_per_channel_uses_each_rows_q() {
    let dev = Device::Cpu;
    let rows: Vec<f32> = W
        .iter()
        .chain(W.iter().map(|x| x * 0.5).collect::<Vec<_>>().iter())
        .copied()
        .collect();
    let t = Tensor::from_vec(rows.clone(), (2, 21), &dev).unwrap();
    let qs = channel_max_abs(&t).unwrap();
    assert_eq!(qs, vec![1.3, 0.65]);
    let out = range_quantize_per_channel(&t, &qs, 4).unwrap();
    let out = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    bits_eq(
        &out[..21],
        &range_quantize_slice(&rows[..21], 1.3, 4).unwrap(),
    );
    bits_eq(
        &out[21..],
        &range_quantize_slice(&rows[21..], 0.65, 4).unwrap(),
    );
    assert!(matches!(
        range_quantize_per_channel(&t, &[1.0], 4),
        Err(QuantError::LengthMismatch {
            what: "per-channel q",
            ..
        })
    ));
    let scalar = Tensor::new(1.0f32, &dev).unwrap();
    assert!(matches!(
        channel_max_abs(&scalar),
        Err(QuantError::InvalidShape { .. })
    ));
}

#[test]
fn range_quantize_rejects_bad_input() {
    assert!(matches!(
        range_quantize_slice(&W, 0.0, 4),
        Err(QuantError::InvalidParam { name: "q", .. })
    ));
    assert!(matches!(
        range_quantize_slice(&W, f32::NAN, 4),
        Err(QuantError::InvalidParam { name: "q", .. })
    ));
    assert!(matches!(
        range_quantize_slice(&W, 1.0, 0),
        Err(QuantError::InvalidBits { bits: 0, .. })
    ));
    assert!(matches!(
        range_quantize_slice(&[0.1, f32::INFINITY], 1.0, 4),
        Err(QuantError::NonFinite { index: 1, .. })
    ));
}

/// Seed 003's STE forward in numpy (float32):
/// ```python
/// alpha = w.max() - w.min(); beta = w.min(); ws = (w - beta) / alpha
/// step = 2**bit - 1; R = np.round(ws * step) / step; wq = R * alpha + beta
/// wq_keep = wq * (w != 0)          # the bonus variant
/// # bit=2: [-1.3, -0.46666658 (x7), 0.3666668 (x11), 1.2, 1.2]
/// # bit=3: [-1.3, -0.9428571, -0.5857142, -0.5857142, -0.22857141 (x4),
/// #         0.12857151 (x6), 0.48571444 (x3), 0.8428571 (x3), 1.2]
/// # keep-zeros variants: the same with element 8 (w = 0.0) replaced by 0.0
/// ```
#[test]
fn minmax_quantize_matches_seed_003() {
    let mut want2 = vec![-1.3f32];
    want2.extend([-0.466_666_58f32; 7]);
    want2.extend([0.366_666_8f32; 11]);
    want2.extend([1.2f32, 1.2]);
    let mut want3 = vec![-1.3f32, -0.942_857_1, -0.585_714_2, -0.585_714_2];
    want3.extend([-0.228_571_41f32; 4]);
    want3.extend([0.128_571_51f32; 6]);
    want3.extend([0.485_714_44f32; 3]);
    want3.extend([0.842_857_1f32; 3]);
    want3.push(1.2);
    for (bits, want) in [(2u8, want2), (3, want3)] {
        bits_eq(&minmax_quantize_slice(&W, bits, false).unwrap(), &want);
        let mut keep = want.clone();
        keep[8] = 0.0;
        let got = minmax_quantize_slice(&W, bits, true).unwrap();
        bits_eq(&got, &keep);
        assert_eq!(got[8].to_bits(), 0, "restored zero is +0.0");
    }
}

#[test]
fn minmax_edge_cases() {
    assert_eq!(minmax_quantize_slice(&W, 0, false).unwrap(), vec![0.0; 21]);
    assert_eq!(
        minmax_quantize_slice(&[0.3; 5], 4, false).unwrap(),
        vec![0.3; 5]
    );
    assert!(minmax_quantize_slice(&[], 4, true).unwrap().is_empty());
    assert!(matches!(
        minmax_quantize_slice(&W, 17, false),
        Err(QuantError::InvalidBits { bits: 17, .. })
    ));
    assert!(matches!(
        minmax_quantize_slice(&[f32::NAN], 4, false),
        Err(QuantError::NonFinite { .. })
    ));
    // Per channel: each row gets its own alpha/beta.
    let dev = Device::Cpu;
    let rows: Vec<f32> = W
        .iter()
        .chain(W.iter().map(|x| x * 3.0).collect::<Vec<_>>().iter())
        .copied()
        .collect();
    let t = Tensor::from_vec(rows.clone(), (2, 21), &dev).unwrap();
    let out = minmax_quantize_per_channel(&t, 3, true)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    bits_eq(
        &out[..21],
        &minmax_quantize_slice(&rows[..21], 3, true).unwrap(),
    );
    bits_eq(
        &out[21..],
        &minmax_quantize_slice(&rows[21..], 3, true).unwrap(),
    );
    // dtype and shape are preserved.
    let t64 = t.to_dtype(DType::F64).unwrap();
    let q64 = minmax_quantize(&t64, 3, false).unwrap();
    assert_eq!((q64.dtype(), q64.dims()), (DType::F64, &[2usize, 21][..]));
}

/// The STE's forward value is the quantized tensor and its gradient is the
/// identity: for loss = Σ c ⊙ ste(w), dloss/dw = c (candle backprop).
#[test]
fn ste_forward_is_quantized_and_gradient_is_identity() {
    let dev = Device::Cpu;
    let w = Var::from_tensor(&Tensor::from_slice(&W, (3, 7), &dev).unwrap()).unwrap();
    let c = Tensor::from_vec(
        (0..21).map(|i| i as f32 - 7.5).collect::<Vec<_>>(),
        (3, 7),
        &dev,
    )
    .unwrap();
    for keep_zeros in [false, true] {
        let q = ste(w.as_tensor(), 3, keep_zeros).unwrap();
        let fwd = q.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        bits_eq(&fwd, &minmax_quantize_slice(&W, 3, keep_zeros).unwrap());
        if keep_zeros {
            assert_eq!(fwd[8], 0.0);
        }
        let loss = (&q * &c).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(w.as_tensor()).expect("gradient reaches w");
        assert_eq!(
            g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            c.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
    let q = ste_range(w.as_tensor(), 1.0, 3).unwrap();
    bits_eq(
        &q.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        &range_quantize_slice(&W, 1.0, 3).unwrap(),
    );
    let grads = q.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    // d/dw Σ ste(w)² = 2 · ste(w) (straight through the quantizer).
    let g = grads
        .get(w.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let want: Vec<f32> = range_quantize_slice(&W, 1.0, 3)
        .unwrap()
        .iter()
        .map(|x| 2.0 * x)
        .collect();
    bits_eq(&g, &want);
}
