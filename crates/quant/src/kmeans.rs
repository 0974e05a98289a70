//! One-dimensional k-means: Lloyd's algorithm on sorted data, and an exact
//! dynamic-programming solver.
//!
//! Weight sharing clusters scalars, so the general d-dimensional k-means
//! machinery is unnecessary. In one dimension the points of a cluster of an
//! optimal (or Lloyd-stable) solution form a contiguous run of the *sorted*
//! values, and the boundary between two consecutive centroids is their
//! midpoint. This module therefore
//!
//! 1. sorts the input once (an LSD radix sort on the order-preserving bit
//!    pattern of `f32`, `O(n)`),
//! 2. builds prefix sums of the values (in `f64`, shifted by the mean to avoid
//!    cancellation),
//! 3. runs Lloyd steps in `O(k log n)` each: the boundaries are found by
//!    searching for the midpoints (exponential search from the previous
//!    step's boundary, so usually far fewer than `log n` probes), and the new
//!    centroids are segment means taken from the prefix sums.
//!
//! The only `O(n)` work after sorting is the final report: the SSE (summed
//! directly in `f64` over the sorted segments, which is more accurate than
//! `S2 - 2cS1 + c²n` from prefix sums and costs one pass) and the assignment
//! of each input value to its nearest centroid (binary search among the
//! `k - 1` midpoints).
//!
//! **Ties.** A value exactly at the midpoint of two centroids goes to the lower
//! centroid, both inside Lloyd and in the final assignment, so results are
//! fully deterministic. `-0.0` and `0.0` count as the same value.
//!
//! **Empty clusters.** During Lloyd an empty cluster keeps its centroid (this
//! keeps the centroids strictly increasing). When Lloyd stops with empty
//! clusters (linear init leaves them in the thin tails of a weight
//! distribution: 6 of 8 codes used in a 3-bit layer), each empty centroid is
//! *reseeded*: the cluster with the largest SSE is split at its mean into two,
//! and Lloyd runs again; this repeats (at most `k` times) until every cluster
//! is used or no cluster can be split. Only then are centroids whose cluster is
//! still empty dropped, so `centroids.len() <= k`, with `< k` only when the
//! data leave no cluster to split.
//!
//! **Few distinct values.** If the input has at most `k` distinct values, the
//! result is exact: one centroid per distinct value, SSE 0, no iterations.
//!
//! **Exact solver** ([`KMeansConfig::exact`]): the classic
//! `D[j][i] = min_m D[j-1][m] + cost(m, i)` dynamic programme over the sorted
//! distinct values (with multiplicities), using the divide-and-conquer
//! optimisation that the quadrangle inequality of the 1-D SSE allows:
//! `O(k · d log d)` time for `d` distinct values, and a `k × (d + 1)` table of
//! `u32` back-pointers, capped at [`EXACT_MAX_CELLS`] cells (128 MiB); above the
//! cap it returns [`QuantError::ExactTooLarge`] rather than exhausting memory.

use crate::error::{QuantError, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Largest `k × (distinct + 1)` back-pointer table the exact solver builds
/// (`2^25` cells of 4 bytes = 128 MiB). With `k = 32` this admits about one
/// million distinct values.
pub const EXACT_MAX_CELLS: usize = 1 << 25;

/// How the initial centroids are chosen (Han et al. 2016, §3.1 and Fig. 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Init {
    /// Centroids evenly spaced on `[min, max]` of the values: the paper's
    /// default, which keeps the rare large-magnitude weights represented.
    #[default]
    Linear,
    /// Density-based: evenly spaced on the CDF's y axis, i.e. the
    /// `(i + 0.5) / k` quantiles of the values. Coinciding quantiles (heavily
    /// repeated values) collapse into one centroid.
    Density,
    /// Forgy: `k` distinct observations drawn uniformly at random
    /// (ChaCha8 seeded with `seed`). Coinciding values collapse into one
    /// centroid.
    Random {
        /// RNG seed.
        seed: u64,
    },
    /// k-means++ (Arthur & Vassilvitskii 2007): first centroid uniform, each
    /// next one drawn with probability proportional to the squared distance
    /// to the nearest chosen centroid. `O(n k)`.
    KMeansPlusPlus {
        /// RNG seed.
        seed: u64,
    },
}

/// Parameters of [`kmeans_1d`].
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansConfig {
    /// Number of clusters (at least 1).
    pub k: usize,
    /// Centroid initialisation (ignored by the exact solver).
    pub init: Init,
    /// Maximum number of Lloyd steps (0: initial centroids only).
    pub max_iter: usize,
    /// Lloyd stops once the sum of squared centroid moves in a step is at most
    /// `tol × variance(values)` (scikit-learn's convention). With `tol = 0`
    /// Lloyd runs until the partition no longer changes (exact convergence)
    /// or `max_iter` steps.
    pub tol: f64,
    /// Use the exact dynamic-programming solver instead of Lloyd.
    pub exact: bool,
}

impl KMeansConfig {
    /// Default step budget for Lloyd. A step costs `O(k log n)`, so even the
    /// full budget is cheap next to sorting for `k <= 256`.
    pub const DEFAULT_MAX_ITER: usize = 1000;

    /// `k` clusters, the given initialisation, Lloyd until exact convergence
    /// (at most [`Self::DEFAULT_MAX_ITER`] steps).
    pub fn new(k: usize, init: Init) -> Self {
        Self {
            k,
            init,
            max_iter: Self::DEFAULT_MAX_ITER,
            tol: 0.0,
            exact: false,
        }
    }

    /// `k = 2^bits` clusters; `bits` must be in `1..=16`.
    pub fn for_bits(bits: u8, init: Init) -> Result<Self> {
        check_bits(bits)?;
        Ok(Self::new(1usize << bits, init))
    }

    /// Builder: set [`Self::max_iter`].
    pub fn with_max_iter(mut self, max_iter: usize) -> Self {
        self.max_iter = max_iter;
        self
    }

    /// Builder: set [`Self::tol`].
    pub fn with_tol(mut self, tol: f64) -> Self {
        self.tol = tol;
        self
    }

    /// Builder: set [`Self::exact`].
    pub fn with_exact(mut self, exact: bool) -> Self {
        self.exact = exact;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.k == 0 {
            return Err(QuantError::InvalidK { k: self.k });
        }
        if !(self.tol.is_finite() && self.tol >= 0.0) {
            return Err(QuantError::InvalidParam {
                name: "tol",
                value: self.tol.to_string(),
                reason: "must be finite and non-negative",
            });
        }
        Ok(())
    }
}

/// Smallest and largest bit width accepted for weight sharing.
pub const BITS_RANGE: std::ops::RangeInclusive<u8> = 1..=16;

/// Checks that `bits` lies in [`BITS_RANGE`].
pub(crate) fn check_bits(bits: u8) -> Result<()> {
    if BITS_RANGE.contains(&bits) {
        Ok(())
    } else {
        Err(QuantError::InvalidBits {
            what: "weight-sharing bits",
            bits,
            min: *BITS_RANGE.start(),
            max: *BITS_RANGE.end(),
        })
    }
}

/// Result of [`kmeans_1d`].
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans1d {
    /// Centroids, strictly ascending; at most `k` (empty clusters dropped).
    pub centroids: Vec<f32>,
    /// For each input value (input order), the index of its centroid: the
    /// nearest one, the lower one on an exact tie.
    pub assignments: Vec<u32>,
    /// Sum of squared errors `Σ (x - centroid(x))²` with the `f32` centroids,
    /// accumulated in `f64`.
    pub sse: f64,
    /// Lloyd steps performed (0 for the exact solver and for inputs with at
    /// most `k` distinct values).
    pub iterations: usize,
    /// Whether Lloyd reached its stopping criterion before `max_iter`
    /// (always true for the exact and few-distinct-values paths).
    pub converged: bool,
}

/// Clusters `values` into at most `cfg.k` groups.
///
/// Errors: `k = 0`, invalid `tol`, a NaN/infinite value (the first one is
/// reported), or an exact problem above [`EXACT_MAX_CELLS`]. An empty input
/// yields empty centroids and assignments with SSE 0.
pub fn kmeans_1d(values: &[f32], cfg: &KMeansConfig) -> Result<KMeans1d> {
    cfg.validate()?;
    check_finite("values", values)?;
    if values.is_empty() {
        return Ok(KMeans1d {
            centroids: Vec::new(),
            assignments: Vec::new(),
            sse: 0.0,
            iterations: 0,
            converged: true,
        });
    }
    let data = Prepared::new(sort_f32(values));
    let distinct = data.distinct_values();
    let (centroids, iterations, converged) = if distinct.len() <= cfg.k {
        (distinct.iter().map(|&v| f64::from(v)).collect(), 0, true)
    } else if cfg.exact {
        (exact_centroids(&data, cfg.k)?, 0, true)
    } else {
        let init = initial_centroids(&data, cfg.k, cfg.init);
        let tol_abs = cfg.tol * data.variance();
        let (mut c, mut iterations, mut converged) = lloyd(&data, init, cfg.max_iter, tol_abs);
        for _ in 0..cfg.k {
            let Some(split) = reseed_empty(&data, &c) else {
                break;
            };
            let (c2, it, conv) = lloyd(&data, split, cfg.max_iter, tol_abs);
            c = c2;
            iterations += it;
            converged = conv;
        }
        (c, iterations, converged)
    };
    let (centroids, sse) = data.finalize(&centroids);
    let assignments = assign(values, &centroids);
    Ok(KMeans1d {
        centroids,
        assignments,
        sse,
        iterations,
        converged,
    })
}

/// Index of the nearest centroid for each value (`centroids` must be sorted
/// ascending); exact ties go to the lower centroid. Empty `centroids` give
/// code 0 for every value.
pub fn assign(values: &[f32], centroids: &[f32]) -> Vec<u32> {
    // x <= (c_j + c_{j+1}) / 2 (exact in f64) is, for an f32 x, the same as
    // x <= the largest f32 not above that midpoint: compare in f32.
    let thresholds: Vec<f32> = centroids
        .windows(2)
        .map(|w| f32_at_or_below((f64::from(w[0]) + f64::from(w[1])) * 0.5))
        .collect();
    values
        .iter()
        .map(|&x| thresholds.partition_point(|&t| t < x) as u32)
        .collect()
}

/// The largest `f32` that is `<= m` (`m` finite and within the `f32` range).
fn f32_at_or_below(m: f64) -> f32 {
    let t = m as f32;
    if f64::from(t) <= m {
        t
    } else if t > 0.0 {
        f32::from_bits(t.to_bits() - 1)
    } else if t == 0.0 {
        -f32::from_bits(1)
    } else {
        f32::from_bits(t.to_bits() + 1)
    }
}

/// Returns the first non-finite element as an error.
pub(crate) fn check_finite(what: &'static str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(QuantError::NonFinite {
            what,
            index,
            value: values[index],
        }),
    }
}

/// Sorts a copy of `values` (all finite) ascending: radix sort for large
/// inputs, comparison sort for small ones. `-0.0` sorts before `0.0`.
pub(crate) fn sort_f32(values: &[f32]) -> Vec<f32> {
    const RADIX_MIN: usize = 4096;
    if values.len() < RADIX_MIN {
        let mut v = values.to_vec();
        v.sort_unstable_by(f32::total_cmp);
        return v;
    }
    // Order-preserving map of f32 bit patterns to u32.
    fn key(b: u32) -> u32 {
        if b & 0x8000_0000 != 0 {
            !b
        } else {
            b | 0x8000_0000
        }
    }
    fn unkey(k: u32) -> u32 {
        if k & 0x8000_0000 != 0 {
            k & 0x7FFF_FFFF
        } else {
            !k
        }
    }
    const BITS: usize = 11;
    const BUCKETS: usize = 1 << BITS;
    const MASK: u32 = (BUCKETS - 1) as u32;
    let n = values.len();
    let mut keys: Vec<u32> = values.iter().map(|v| key(v.to_bits())).collect();
    // Three passes of 11, 11 and 10 bits.
    let mut hist = vec![[0usize; BUCKETS]; 3];
    for &k in &keys {
        for (pass, h) in hist.iter_mut().enumerate() {
            h[((k >> (BITS * pass)) & MASK) as usize] += 1;
        }
    }
    let mut buf = vec![0u32; n];
    let mut offsets = vec![0usize; BUCKETS];
    for (pass, h) in hist.iter().enumerate() {
        if h.contains(&n) {
            continue; // every key has the same digit here
        }
        let mut acc = 0;
        for (o, &c) in offsets.iter_mut().zip(h.iter()) {
            *o = acc;
            acc += c;
        }
        let shift = BITS * pass;
        for &k in &keys {
            let b = ((k >> shift) & MASK) as usize;
            buf[offsets[b]] = k;
            offsets[b] += 1;
        }
        std::mem::swap(&mut keys, &mut buf);
    }
    keys.into_iter().map(|k| f32::from_bits(unkey(k))).collect()
}

/// Sorted values with shifted prefix sums.
struct Prepared {
    xs: Vec<f32>,
    /// Mean of the values; prefix sums are of `x - shift`.
    shift: f64,
    /// `p1[i] = Σ_{t<i} (x_t - shift)`.
    p1: Vec<f64>,
    /// `Σ (x - shift)²` over all values.
    total_sq: f64,
}

impl Prepared {
    fn new(xs: Vec<f32>) -> Self {
        let n = xs.len();
        let shift = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / n.max(1) as f64;
        let mut p1 = Vec::with_capacity(n + 1);
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        p1.push(0.0);
        for &x in &xs {
            let y = f64::from(x) - shift;
            s1 += y;
            s2 += y * y;
            p1.push(s1);
        }
        Self {
            xs,
            shift,
            p1,
            total_sq: s2,
        }
    }

    fn len(&self) -> usize {
        self.xs.len()
    }

    fn variance(&self) -> f64 {
        let n = self.len() as f64;
        let s1 = self.p1[self.len()];
        ((self.total_sq - s1 * s1 / n) / n).max(0.0)
    }

    /// Sorted distinct values (`-0.0 == 0.0`; the first of a run is kept).
    fn distinct_values(&self) -> Vec<f32> {
        let mut out: Vec<f32> = Vec::new();
        for &x in &self.xs {
            if out.last() != Some(&x) {
                out.push(x);
            }
        }
        out
    }

    /// Mean of `xs[a..b]` (non-empty) in original coordinates.
    fn mean(&self, a: usize, b: usize) -> f64 {
        (self.p1[b] - self.p1[a]) / (b - a) as f64 + self.shift
    }

    /// `Σ_{a<=t<b} (x_t - c)²`, summed directly in `f64` (one pass over the
    /// segment; only used once, for the final report).
    fn seg_sse(&self, a: usize, b: usize, c: f64) -> f64 {
        self.xs[a..b]
            .iter()
            .map(|&x| {
                let d = f64::from(x) - c;
                d * d
            })
            .sum()
    }

    /// Segment boundaries for ascending centroids `c`: `bounds[0] = 0`,
    /// `bounds[k] = n`, cluster `j` is `xs[bounds[j]..bounds[j+1]]`, and a
    /// value at a midpoint goes to the lower cluster.
    ///
    /// `hint` (the previous step's boundaries, same `k`) makes each search an
    /// exponential search starting at the old boundary: `O(log shift)` reads
    /// near a position that is usually still in cache, instead of a cold
    /// `O(log n)` binary search.
    fn bounds(&self, c: &[f64], hint: Option<&[usize]>, bounds: &mut Vec<usize>) {
        bounds.clear();
        bounds.push(0);
        let mut lo = 0;
        for (j, w) in c.windows(2).enumerate() {
            let m = (w[0] + w[1]) * 0.5;
            let start = hint.and_then(|h| h.get(j + 1)).copied();
            lo = match start {
                Some(s) => gallop(&self.xs, s.max(lo), m),
                None => lo + self.xs[lo..].partition_point(|&x| f64::from(x) <= m),
            };
            bounds.push(lo);
        }
        bounds.push(self.len());
    }

    /// Rounds the centroids to `f32`, drops duplicates and empty clusters,
    /// and returns them with the SSE of the nearest-centroid assignment.
    fn finalize(&self, c: &[f64]) -> (Vec<f32>, f64) {
        // `+ 0.0` turns -0.0 into 0.0.
        let mut cf: Vec<f32> = c.iter().map(|&v| (v as f32) + 0.0).collect();
        cf.sort_unstable_by(f32::total_cmp);
        cf.dedup();
        let mut bounds = Vec::with_capacity(cf.len() + 1);
        let as64 = |cf: &[f32]| cf.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>();
        self.bounds(&as64(&cf), None, &mut bounds);
        let keep: Vec<f32> = cf
            .iter()
            .enumerate()
            .filter(|&(j, _)| bounds[j + 1] > bounds[j])
            .map(|(_, &v)| v)
            .collect();
        if keep.len() != cf.len() {
            cf = keep;
            self.bounds(&as64(&cf), None, &mut bounds);
        }
        let sse = cf
            .iter()
            .enumerate()
            .map(|(j, &v)| self.seg_sse(bounds[j], bounds[j + 1], f64::from(v)))
            .sum();
        (cf, sse)
    }
}

/// First index `i` of the sorted `xs` with `xs[i] > m` (the partition point of
/// `x <= m`), found by exponential search outward from `start`.
fn gallop(xs: &[f32], start: usize, m: f64) -> usize {
    let n = xs.len();
    let le = |i: usize| f64::from(xs[i]) <= m;
    let start = start.min(n);
    if start < n && le(start) {
        // Answer in (start, n]: grow the step until xs[start + step] > m.
        let mut lo = start + 1; // known: all of xs[..lo] are <= m
        let mut step = 1;
        loop {
            let probe = start + step;
            if probe >= n {
                return lo + xs[lo..n].partition_point(|&x| f64::from(x) <= m);
            }
            if !le(probe) {
                return lo + xs[lo..probe].partition_point(|&x| f64::from(x) <= m);
            }
            lo = probe + 1;
            step *= 2;
        }
    } else {
        // Answer in [0, start]: everything from `hi` on is > m.
        let mut hi = start;
        let mut step = 1;
        loop {
            if step > hi {
                return xs[..hi].partition_point(|&x| f64::from(x) <= m);
            }
            let probe = hi - step;
            if le(probe) {
                return probe + 1 + xs[probe + 1..hi].partition_point(|&x| f64::from(x) <= m);
            }
            hi = probe;
            step *= 2;
        }
    }
}

/// Initial centroids, ascending and without duplicates. Requires more than
/// `k` distinct values (so `min < max`).
fn initial_centroids(data: &Prepared, k: usize, init: Init) -> Vec<f64> {
    let xs = &data.xs;
    let n = xs.len();
    let lo = f64::from(xs[0]);
    let hi = f64::from(xs[n - 1]);
    let mut c: Vec<f64> = match init {
        Init::Linear => {
            if k == 1 {
                vec![(lo + hi) * 0.5]
            } else {
                (0..k)
                    .map(|i| lo + (hi - lo) * i as f64 / (k - 1) as f64)
                    .collect()
            }
        }
        Init::Density => (0..k)
            .map(|i| {
                let p = (i as f64 + 0.5) / k as f64;
                let idx = ((p * n as f64) as usize).min(n - 1);
                f64::from(xs[idx])
            })
            .collect(),
        Init::Random { seed } => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rand::seq::index::sample(&mut rng, n, k.min(n))
                .into_iter()
                .map(|i| f64::from(xs[i]))
                .collect()
        }
        Init::KMeansPlusPlus { seed } => kmeans_pp(xs, k, seed),
    };
    c.sort_unstable_by(f64::total_cmp);
    c.dedup();
    c
}

/// k-means++ seeding on sorted values (plain D² sampling, one candidate per
/// step). `O(n k)`.
fn kmeans_pp(xs: &[f32], k: usize, seed: u64) -> Vec<f64> {
    let n = xs.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let first = f64::from(xs[rng.random_range(0..n)]);
    let mut centers = vec![first];
    let mut d2: Vec<f64> = xs
        .iter()
        .map(|&x| {
            let d = f64::from(x) - first;
            d * d
        })
        .collect();
    while centers.len() < k {
        let total: f64 = d2.iter().sum();
        if total <= 0.0 {
            break; // every value coincides with a centre
        }
        let r = rng.random::<f64>() * total;
        let mut acc = 0.0;
        let mut pick = None;
        for (i, &d) in d2.iter().enumerate() {
            acc += d;
            if acc > r && d > 0.0 {
                pick = Some(i);
                break;
            }
        }
        // Rounding can leave r >= the running sum: take the last candidate.
        let pick = match pick.or_else(|| d2.iter().rposition(|&d| d > 0.0)) {
            Some(p) => p,
            None => break,
        };
        let c = f64::from(xs[pick]);
        centers.push(c);
        for (d, &x) in d2.iter_mut().zip(xs) {
            let e = f64::from(x) - c;
            *d = d.min(e * e);
        }
    }
    centers
}

/// Lloyd's algorithm on sorted data. `c` ascending, strictly increasing.
/// Returns the centroids, the number of steps and whether it converged.
fn lloyd(
    data: &Prepared,
    mut c: Vec<f64>,
    max_iter: usize,
    tol_abs: f64,
) -> (Vec<f64>, usize, bool) {
    let k = c.len();
    let mut bounds = Vec::with_capacity(k + 1);
    let mut prev: Vec<usize> = Vec::with_capacity(k + 1);
    for it in 0..max_iter {
        let hint = (prev.len() == k + 1).then_some(prev.as_slice());
        data.bounds(&c, hint, &mut bounds);
        if bounds == prev {
            // The centroids are already the means of this partition.
            return (c, it, true);
        }
        let mut moved = 0.0;
        for j in 0..k {
            let (a, b) = (bounds[j], bounds[j + 1]);
            if b > a {
                let m = data.mean(a, b);
                moved += (m - c[j]) * (m - c[j]);
                c[j] = m;
            }
        }
        std::mem::swap(&mut prev, &mut bounds);
        if moved <= tol_abs {
            return (c, it + 1, true);
        }
    }
    (c, max_iter, false)
}

/// When some clusters of the ascending centroids `c` are empty: the non-empty
/// centroids plus, for each empty one, a split of the cluster with the largest
/// SSE into its two halves below and above its mean (both halves' means become
/// centroids). `None` when no cluster is empty or none can be split.
fn reseed_empty(data: &Prepared, c: &[f64]) -> Option<Vec<f64>> {
    let mut bounds = Vec::with_capacity(c.len() + 1);
    data.bounds(c, None, &mut bounds);
    let empty = (0..c.len()).filter(|&j| bounds[j + 1] == bounds[j]).count();
    if empty == 0 {
        return None;
    }
    // (a, b, sse) of every non-empty cluster.
    let mut clusters: Vec<(usize, usize, f64)> = (0..c.len())
        .filter(|&j| bounds[j + 1] > bounds[j])
        .map(|j| {
            let (a, b) = (bounds[j], bounds[j + 1]);
            (a, b, data.seg_sse(a, b, data.mean(a, b)))
        })
        .collect();
    let before = clusters.len();
    for _ in 0..empty {
        // The largest-SSE cluster holding at least two distinct values (ties: the lowest).
        let Some(i) = clusters
            .iter()
            .enumerate()
            .filter(|(_, &(a, b, _))| data.xs[a] < data.xs[b - 1])
            .max_by(|x, y| x.1 .2.total_cmp(&y.1 .2).then(y.0.cmp(&x.0)))
            .map(|(i, _)| i)
        else {
            break;
        };
        let (a, b, _) = clusters[i];
        let m = data.mean(a, b);
        // Values equal to the mean go to the lower half, as at a midpoint.
        let p = a + data.xs[a..b].partition_point(|&x| f64::from(x) <= m);
        if p == a || p == b {
            break;
        }
        let lo = (a, p, data.seg_sse(a, p, data.mean(a, p)));
        let hi = (p, b, data.seg_sse(p, b, data.mean(p, b)));
        clusters.splice(i..=i, [lo, hi]);
    }
    if clusters.len() == before {
        return None;
    }
    let mut out: Vec<f64> = clusters.iter().map(|&(a, b, _)| data.mean(a, b)).collect();
    out.dedup();
    Some(out)
}

/// Optimal centroids (k < number of distinct values) by dynamic programming
/// with the divide-and-conquer optimisation.
fn exact_centroids(data: &Prepared, k: usize) -> Result<Vec<f64>> {
    // Distinct values (shifted) with multiplicities.
    let mut vals: Vec<f64> = Vec::new();
    let mut cnt: Vec<f64> = Vec::new();
    let mut last: Option<f32> = None;
    for &x in &data.xs {
        if last == Some(x) {
            if let Some(c) = cnt.last_mut() {
                *c += 1.0;
            }
        } else {
            vals.push(f64::from(x) - data.shift);
            cnt.push(1.0);
            last = Some(x);
        }
    }
    let d = vals.len();
    let cells = k.saturating_mul(d + 1);
    if cells > EXACT_MAX_CELLS {
        return Err(QuantError::ExactTooLarge {
            distinct: d,
            k,
            cells,
            limit: EXACT_MAX_CELLS,
        });
    }
    let mut pw = vec![0.0f64; d + 1];
    let mut p1 = vec![0.0f64; d + 1];
    let mut p2 = vec![0.0f64; d + 1];
    for i in 0..d {
        pw[i + 1] = pw[i] + cnt[i];
        p1[i + 1] = p1[i] + cnt[i] * vals[i];
        p2[i + 1] = p2[i] + cnt[i] * vals[i] * vals[i];
    }
    // Weighted SSE of distinct values [a, b) around their mean.
    let cost = |a: usize, b: usize| -> f64 {
        let w = pw[b] - pw[a];
        let s1 = p1[b] - p1[a];
        (p2[b] - p2[a] - s1 * s1 / w).max(0.0)
    };
    let stride = d + 1;
    let mut arg = vec![0u32; k * stride];
    let mut prev: Vec<f64> = (0..=d)
        .map(|i| if i == 0 { f64::INFINITY } else { cost(0, i) })
        .collect();
    let mut cur = vec![f64::INFINITY; stride];
    let mut stack: Vec<(usize, usize, usize, usize)> = Vec::new();
    // Layer j (0-based) = j + 1 clusters; prefix length i >= j + 1.
    for j in 1..k {
        cur.iter_mut().for_each(|v| *v = f64::INFINITY);
        let row = &mut arg[j * stride..(j + 1) * stride];
        stack.push((j + 1, d, j, d - 1));
        while let Some((lo, hi, optlo, opthi)) = stack.pop() {
            let mid = lo + (hi - lo) / 2;
            let mut best = f64::INFINITY;
            let mut best_m = optlo;
            for m in optlo..=opthi.min(mid - 1) {
                let v = prev[m] + cost(m, mid);
                if v < best {
                    best = v;
                    best_m = m;
                }
            }
            cur[mid] = best;
            row[mid] = best_m as u32;
            if mid > lo {
                stack.push((lo, mid - 1, optlo, best_m));
            }
            if mid < hi {
                stack.push((mid + 1, hi, best_m, opthi));
            }
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    // Backtrack.
    let mut centroids = vec![0.0f64; k];
    let mut i = d;
    for j in (0..k).rev() {
        let m = if j == 0 {
            0
        } else {
            arg[j * stride + i] as usize
        };
        let w = pw[i] - pw[m];
        centroids[j] = (p1[i] - p1[m]) / w + data.shift;
        i = m;
    }
    Ok(centroids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radix_sort_matches_comparison_sort() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut v: Vec<f32> = (0..10_000)
            .map(|_| (rng.random::<f32>() - 0.5) * 10f32.powi(rng.random_range(-6..6)))
            .collect();
        v.extend_from_slice(&[0.0, -0.0, f32::MAX, f32::MIN, 1e-42, -1e-42]);
        let got = sort_f32(&v);
        let mut want = v.clone();
        want.sort_unstable_by(f32::total_cmp);
        assert_eq!(
            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn f32_threshold_is_exact() {
        let cs = [
            -3.0f32, -1e-30, -1e-45, 0.0, 1e-45, 0.1, 0.1000001, 7.5, 1e30,
        ];
        for w in cs.windows(2) {
            let m = (f64::from(w[0]) + f64::from(w[1])) * 0.5;
            let t = f32_at_or_below(m);
            assert!(f64::from(t) <= m);
            let up = if t >= 0.0 {
                f32::from_bits(t.to_bits() + 1)
            } else if t.to_bits() == 0x8000_0001 {
                0.0
            } else {
                f32::from_bits(t.to_bits() - 1)
            };
            assert!(f64::from(up) > m, "{t} {up} {m}");
        }
    }

    #[test]
    fn gallop_equals_partition_point() {
        let xs: Vec<f32> = (0..300).map(|i| (i / 3) as f32 * 0.5).collect();
        for start in [0usize, 1, 2, 7, 150, 298, 299, 300, 500] {
            for m in [-1.0f64, 0.0, 0.25, 0.5, 10.0, 10.2, 49.5, 49.6, 100.0] {
                let want = xs.partition_point(|&x| f64::from(x) <= m);
                assert_eq!(gallop(&xs, start, m), want, "start {start} m {m}");
            }
        }
        assert_eq!(gallop(&[], 0, 1.0), 0);
    }

    #[test]
    fn prefix_means_and_variance() {
        let xs: Vec<f32> = (0..1000)
            .map(|i| ((i * 37) % 101) as f32 * 0.013 - 0.4)
            .collect();
        let data = Prepared::new(sort_f32(&xs));
        let direct_mean = |a: usize, b: usize| {
            data.xs[a..b].iter().map(|&x| f64::from(x)).sum::<f64>() / (b - a) as f64
        };
        for &(a, b) in &[(0usize, 1000usize), (10, 500), (999, 1000)] {
            assert!((data.mean(a, b) - direct_mean(a, b)).abs() <= 1e-12);
        }
        let m = direct_mean(0, 1000);
        let var = data
            .xs
            .iter()
            .map(|&x| (f64::from(x) - m).powi(2))
            .sum::<f64>()
            / 1000.0;
        assert!((data.variance() - var).abs() <= 1e-12 * var.max(1.0));
    }
}
