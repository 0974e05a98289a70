//! Operations on splits beyond reading and batching: the seeded validation hold-out, the
//! class-interleaved order that makes a prefix class-balanced, and the validation of
//! normalization statistics.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::DatasetError;
use crate::Split;

/// Checks normalization statistics for `channels` channels: exactly one `mean` and one `std`
/// value per channel, every mean finite, every std finite and `> 0`. The error names the
/// field (`mean` or `std`), the channel and the value.
pub fn check_normalization(channels: usize, mean: &[f32], std: &[f32]) -> Result<(), DatasetError> {
    for (field, values) in [("mean", mean), ("std", std)] {
        if values.len() != channels {
            return Err(DatasetError::Config {
                field,
                message: format!(
                    "{} value(s) for {channels} channel(s); give one per channel",
                    values.len()
                ),
            });
        }
    }
    if let Some((ch, m)) = mean.iter().enumerate().find(|(_, m)| !m.is_finite()) {
        return Err(DatasetError::Config {
            field: "mean",
            message: format!("channel {ch}: {m} is not finite"),
        });
    }
    if let Some((ch, s)) = std
        .iter()
        .enumerate()
        .find(|(_, s)| !(s.is_finite() && **s > 0.0))
    {
        return Err(DatasetError::Config {
            field: "std",
            message: format!("channel {ch}: {s} is not a positive finite number"),
        });
    }
    Ok(())
}

impl Split {
    /// A seeded, stratified hold-out: returns `(rest, validation)` where `validation` holds
    /// `n` examples and `rest` the other `len() − n`, both in their original order.
    ///
    /// Stratified: each class contributes `n × (its count) / len()` examples, rounded down,
    /// and the examples still missing go to the classes with the largest remainders (ties:
    /// lower label first); within a class the examples are drawn uniformly (ChaCha8 seeded
    /// with `seed`, one shuffle per class in label order). The result depends only on the
    /// labels, `n` and `seed`. Errors: `n == 0` or `n >= len()` (field `validation`).
    pub fn split_off_validation(
        &self,
        n: usize,
        seed: u64,
    ) -> Result<(Split, Split), DatasetError> {
        self.check_consistent()?;
        if n == 0 || n >= self.n {
            return Err(DatasetError::Config {
                field: "validation",
                message: format!(
                    "{n} validation examples out of {}: need at least 1 and fewer than the split holds",
                    self.n
                ),
            });
        }
        let mut by_class = self.indices_by_class();
        // Quotas by largest remainder (exact integer arithmetic).
        let total = self.n as u128;
        let mut quota: Vec<usize> = Vec::with_capacity(by_class.len());
        let mut rem: Vec<(u128, usize)> = Vec::with_capacity(by_class.len());
        for (k, members) in by_class.iter().enumerate() {
            let num = n as u128 * members.len() as u128;
            quota.push((num / total) as usize);
            rem.push((num % total, k));
        }
        let mut missing = n - quota.iter().sum::<usize>();
        rem.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, k) in &rem {
            if missing == 0 {
                break;
            }
            if quota[k] < by_class[k].len() {
                quota[k] += 1;
                missing -= 1;
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut in_val = vec![false; self.n];
        for (members, &q) in by_class.iter_mut().zip(&quota) {
            members.shuffle(&mut rng);
            for &i in &members[..q] {
                in_val[i] = true;
            }
        }
        let size = self.c * self.h * self.w;
        let mut rest = Split::empty(self.c, self.h, self.w);
        let mut val = Split::empty(self.c, self.h, self.w);
        rest.images.reserve((self.n - n) * size);
        val.images.reserve(n * size);
        for (i, &v) in in_val.iter().enumerate() {
            let dst = if v { &mut val } else { &mut rest };
            dst.images
                .extend_from_slice(&self.images[i * size..(i + 1) * size]);
            dst.labels.push(self.labels[i]);
            dst.n += 1;
        }
        Ok((rest, val))
    }

    /// The example indices of every class, in split order, one list per label from 0 to the largest.
    fn indices_by_class(&self) -> Vec<Vec<usize>> {
        let classes = self
            .labels
            .iter()
            .map(|&l| l as usize + 1)
            .max()
            .unwrap_or(0);
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        by_class
    }

    /// Reorders the examples so that the classes take turns: the first example of every class
    /// (in label order), then the second of every class, and so on; a class that runs out drops
    /// out of the turn. Within a class the order is kept. A prefix of the result (what a batch
    /// `limit` takes) then holds every class in proportion, also when the split was stored
    /// class by class (an image folder). Deterministic: no seed, the labels alone decide.
    /// Errors: a split whose sizes disagree (see [`Split::check_consistent`]).
    pub fn interleave_classes(&mut self) -> Result<(), DatasetError> {
        self.check_consistent()?;
        let by_class = self.indices_by_class();
        let longest = by_class.iter().map(Vec::len).max().unwrap_or(0);
        let mut order = Vec::with_capacity(self.labels.len());
        for turn in 0..longest {
            for members in &by_class {
                if let Some(&i) = members.get(turn) {
                    order.push(i);
                }
            }
        }
        if order.iter().enumerate().all(|(k, &i)| k == i) {
            return Ok(());
        }
        let size = self.c * self.h * self.w;
        let mut images = Vec::with_capacity(self.images.len());
        let mut labels = Vec::with_capacity(self.labels.len());
        for &i in &order {
            images.extend_from_slice(&self.images[i * size..(i + 1) * size]);
            labels.push(self.labels[i]);
        }
        self.images = images;
        self.labels = labels;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_makes_every_prefix_balanced_and_keeps_class_order() {
        // Class by class, as an image folder stores it: 3 × class 0, 2 × class 1, 3 × class 2;
        // each image is one byte holding its original index.
        let labels = vec![0u32, 0, 0, 1, 1, 2, 2, 2];
        let mut s = Split {
            images: (0..8u8).collect(),
            labels: labels.clone(),
            n: 8,
            c: 1,
            h: 1,
            w: 1,
        };
        s.interleave_classes().unwrap();
        assert_eq!(s.images, [0, 3, 5, 1, 4, 6, 2, 7]);
        assert_eq!(s.labels, [0, 1, 2, 0, 1, 2, 0, 2]);
        assert_eq!(s.n, 8);
        // Already interleaved: unchanged.
        let before = s.clone();
        s.interleave_classes().unwrap();
        assert_eq!(s, before);
        let mut empty = Split::empty(1, 2, 2);
        empty.interleave_classes().unwrap();
        assert_eq!(empty.n, 0);
        // Sizes that disagree are an error, not a panic.
        let mut bad = before.clone();
        bad.images.pop();
        assert!(bad.interleave_classes().is_err());
    }

    #[test]
    fn normalization_errors_name_the_field() {
        assert!(check_normalization(3, &[0.5; 3], &[0.2; 3]).is_ok());
        let e = check_normalization(3, &[0.5], &[0.2; 3]).unwrap_err();
        assert!(
            matches!(e, DatasetError::Config { field: "mean", .. }),
            "{e}"
        );
        let e = check_normalization(1, &[0.5], &[0.2, 0.3]).unwrap_err();
        assert!(
            matches!(e, DatasetError::Config { field: "std", .. }),
            "{e}"
        );
        let e = check_normalization(1, &[f32::INFINITY], &[0.2]).unwrap_err();
        assert!(
            e.to_string().contains("mean") && e.to_string().contains("inf"),
            "{e}"
        );
        for bad in [0.0, -1.0, f32::NAN] {
            let e = check_normalization(2, &[0.5, 0.5], &[0.2, bad]).unwrap_err();
            assert!(
                e.to_string().contains("std") && e.to_string().contains("channel 1"),
                "{e}"
            );
        }
    }
}
