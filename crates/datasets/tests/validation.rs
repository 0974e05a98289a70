//! The seeded, stratified validation hold-out.

use deepcomp_datasets::{DatasetError, Split};

/// `n` one-pixel images whose pixel is the example index (mod 256), labels from `label`.
fn split(n: usize, label: impl Fn(usize) -> u32) -> Split {
    Split {
        images: (0..n).map(|i| (i % 256) as u8).collect(),
        labels: (0..n).map(label).collect(),
        n,
        c: 1,
        h: 1,
        w: 1,
    }
}

/// Pairs (pixel, label) to identify examples (n ≤ 256 keeps pixels unique).
fn ids(s: &Split) -> Vec<(u8, u32)> {
    s.images
        .iter()
        .copied()
        .zip(s.labels.iter().copied())
        .collect()
}

#[test]
fn deterministic_disjoint_and_complete() {
    let s = split(200, |i| (i % 7) as u32);
    let (rest, val) = s.split_off_validation(30, 42).unwrap();
    rest.check_consistent().unwrap();
    val.check_consistent().unwrap();
    assert_eq!((rest.n, val.n), (170, 30));
    // Same seed, same result; another seed, another draw.
    let (rest2, val2) = s.split_off_validation(30, 42).unwrap();
    assert_eq!((&rest, &val), (&rest2, &val2));
    let (_, val3) = s.split_off_validation(30, 43).unwrap();
    assert_ne!(val, val3);
    // Disjoint, and together exactly the original examples; both keep the original order.
    let (r, v) = (ids(&rest), ids(&val));
    assert!(r.iter().all(|x| !v.contains(x)));
    let mut all: Vec<_> = r.iter().chain(&v).copied().collect();
    all.sort_unstable();
    assert_eq!(all, ids(&s));
    assert!(r.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(v.windows(2).all(|w| w[0].0 < w[1].0));
}

#[test]
fn stratified_by_largest_remainder() {
    // 10 classes of 50: 50 validation examples → 5 per class.
    let s = split(500, |i| (i % 10) as u32);
    let (_, val) = s.split_off_validation(50, 1).unwrap();
    let mut hist = [0; 10];
    for &l in &val.labels {
        hist[l as usize] += 1;
    }
    assert_eq!(hist, [5; 10]);
    // Unbalanced: 60 of class 0, 30 of class 1, 10 of class 2; 15 → 9, 4.5, 1.5 → 9, 5, 1
    // (the remainders tie; the lower label gets the extra one).
    let s = split(100, |i| {
        if i < 60 {
            0
        } else if i < 90 {
            1
        } else {
            2
        }
    });
    let (rest, val) = s.split_off_validation(15, 3).unwrap();
    let count = |s: &Split, k| s.labels.iter().filter(|&&l| l == k).count();
    assert_eq!([count(&val, 0), count(&val, 1), count(&val, 2)], [9, 5, 1]);
    assert_eq!(rest.n, 85);
}

#[test]
fn bad_sizes_are_errors() {
    let s = split(10, |i| (i % 2) as u32);
    for n in [0, 10, 11] {
        let e = s.split_off_validation(n, 0).unwrap_err();
        assert!(
            matches!(
                e,
                DatasetError::Config {
                    field: "validation",
                    ..
                }
            ),
            "{e}"
        );
    }
    assert_eq!(s.split_off_validation(9, 0).unwrap().0.n, 1);
}
