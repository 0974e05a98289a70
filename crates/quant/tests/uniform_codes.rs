//! The range quantizer as integer codes ([`range_codes`]): golden values computed by hand, agreement with
//! seed 002's formula, per-channel scales and kept-only quantization.

use deepcomp_quant::uniform::range_quantize_slice;
use deepcomp_quant::{range_codes, QuantError, RangeScale};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// q = 1, l = 3: Δ = 2/8 = 0.25, grid -1, -0.75, …, 0.75; values beyond q - Δ clip to 0.75, below -q to
/// -1; half-way cases round to even (0.125/0.25 = 0.5 → 0, 0.375/0.25 = 1.5 → 2).
#[test]
fn fixed_range_golden_q1_l3() {
    let w = [
        -1.3f32, -1.0, -0.6, -0.1, 0.0, 0.125, 0.3, 0.375, 0.74, 0.8, 2.0,
    ];
    let c = range_codes(&w, None, 1, 3, RangeScale::Fixed(1.0)).unwrap();
    assert_eq!(c.steps, vec![0.25]);
    assert_eq!(c.levels, vec![-4, -4, -2, 0, 0, 0, 1, 2, 3, 3, 3]);
    assert_eq!(
        c.values,
        vec![-1.0, -1.0, -0.5, 0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 0.75, 0.75]
    );
    assert_eq!(
        c.grid(0.25),
        vec![-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75]
    );
    // The codebook index of each element points at its value.
    let grid = c.grid(c.steps[0]);
    for i in 0..w.len() {
        assert_eq!(grid[c.code(i) as usize], c.values[i]);
    }
    // Zeros are +0.0, never -0.0 (a decoded zero is +0.0).
    assert!(c.values.iter().all(|v| *v != 0.0 || v.to_bits() == 0));
}

/// The codes reproduce seed 002's `clip(Δ·round(w/Δ), -q, q-Δ)` value for value, for odd q and bits.
#[test]
fn values_equal_seed_002_formula() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let w: Vec<f32> = (0..5000).map(|_| rng.random_range(-1.5f32..1.5)).collect();
    for (q, bits) in [
        (1.0f32, 3u8),
        (0.8, 4),
        (0.3137, 6),
        (1.234_567, 8),
        (0.05, 2),
    ] {
        let want = range_quantize_slice(&w, q, bits).unwrap();
        let got = range_codes(&w, None, 1, bits, RangeScale::Fixed(q)).unwrap();
        for (i, (a, b)) in want.iter().zip(&got.values).enumerate() {
            assert!(a == b, "q {q} bits {bits} element {i}: {a} vs {b}");
        }
        let distinct: std::collections::BTreeSet<u32> =
            got.values.iter().map(|v| v.to_bits()).collect();
        assert!(distinct.len() <= 1 << bits);
    }
}

/// Per channel, max scaling: each row gets q = its max |w| over kept weights, Δ = 2q/2^l.
#[test]
fn per_channel_max_scale() {
    // 2 channels × 4: row 0 max |w| = 2 (Δ = 0.5 at 3 bits), row 1 max |w| = 0.4 (Δ = 0.1); the pruned
    // 9.0 in row 1 does not count and stays zero.
    let w = [2.0f32, -2.0, 0.3, 0.6, 0.4, -0.25, 9.0, 0.05];
    let keep = [true, true, true, true, true, true, false, true];
    let c = range_codes(&w, Some(&keep), 2, 3, RangeScale::MaxAbs).unwrap();
    assert_eq!(c.steps, vec![0.5, 0.1]);
    // 2.0 / 0.5 = 4 clips to 3 (q - Δ = 1.5); 0.3/0.5 = 0.6 → 1; 0.6/0.5 = 1.2 → 1.
    assert_eq!(&c.levels[..4], &[3, -4, 1, 1]);
    assert_eq!(&c.values[..4], &[1.5, -2.0, 0.5, 0.5]);
    // 0.4/0.1 = 4 → clipped to 3; -0.25/0.1 = -2.5 → -2 (ties to even); 0.05/0.1 = 0.5 → 0.
    assert_eq!(&c.levels[4..], &[3, -2, 0, 0]);
    assert_eq!(c.values[6].to_bits(), 0, "pruned stays +0.0");
    assert_eq!(c.values[4], 3.0f32 * 0.1f32);
    // Per tensor, the same weights share Δ = 2·2/8 = 0.5.
    let t = range_codes(&w, Some(&keep), 1, 3, RangeScale::MaxAbs).unwrap();
    assert_eq!(t.steps, vec![0.5]);
    assert_eq!(&t.levels[4..], &[1, 0, 0, 0]);
}

#[test]
fn bad_arguments_are_errors() {
    let w = [0.1f32, 0.2, 0.3];
    assert!(matches!(
        range_codes(&w, None, 1, 0, RangeScale::MaxAbs),
        Err(QuantError::InvalidBits { .. })
    ));
    assert!(matches!(
        range_codes(&w, None, 1, 3, RangeScale::Fixed(-1.0)),
        Err(QuantError::InvalidParam { name: "q", .. })
    ));
    assert!(matches!(
        range_codes(&w, None, 2, 3, RangeScale::MaxAbs),
        Err(QuantError::InvalidParam { name: "groups", .. })
    ));
    assert!(matches!(
        range_codes(&[f32::NAN], None, 1, 3, RangeScale::MaxAbs),
        Err(QuantError::NonFinite { .. })
    ));
    assert!(matches!(
        range_codes(&w, Some(&[true]), 1, 3, RangeScale::MaxAbs),
        Err(QuantError::LengthMismatch { .. })
    ));
}
