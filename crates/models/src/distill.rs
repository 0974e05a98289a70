//! Knowledge distillation (Hinton, Vinyals, Dean 2015): the model being finetuned learns from a teacher's
//! softened outputs as well as from the labels.
//!
//! After pruning, the finetuned network is asked to recover the dense network it came from. The labels
//! alone only say which class is right; the dense model's logits also say how it ranks the wrong ones,
//! which is the function the compressed model should keep. [`Distill`] is a [`TrainHook`] whose
//! [`TrainHook::loss`] replaces the cross-entropy `CE` by
//!
//! `(1 − α)·CE(s, y) + α·T²·KL(softmax(t/T) ‖ softmax(s/T))`,
//!
//! with `s` the student's logits, `t` the teacher's (inference mode, no gradient), `T` the temperature and
//! the KL divergence averaged over the batch — PyTorch's
//! `F.kl_div(F.log_softmax(s/T), F.softmax(t/T), reduction="batchmean") * T*T`. The `T²` keeps the soft
//! term's gradients on the scale of the hard term's as `T` grows.

use candle_core::{Tensor, D};

use crate::error::{ModelError, Result};
use crate::hook::TrainHook;
use crate::model::Model;

/// `T² · KL(softmax(teacher/T) ‖ softmax(student/T))`, averaged over the batch (dimension 0). The
/// teacher's logits are detached: no gradient flows into them.
pub fn kd_loss(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    if student.dims() != teacher.dims() || student.rank() != 2 {
        return Err(ModelError::Shape {
            name: "teacher logits".into(),
            expected: student.dims().to_vec(),
            found: teacher.dims().to_vec(),
        });
    }
    let batch = student.dim(0)?.max(1) as f64;
    let log_ps = candle_nn::ops::log_softmax(&(student / temperature)?, D::Minus1)?;
    let log_pt = candle_nn::ops::log_softmax(&(teacher.detach() / temperature)?, D::Minus1)?;
    let pt = log_pt.exp()?;
    let kl = (pt * (log_pt - log_ps)?)?.sum_all()?;
    Ok((kl * (temperature * temperature / batch))?)
}

/// The mixed loss `(1 − alpha)·ce + alpha·kd_loss(student, teacher, temperature)`.
pub fn mix(
    ce: Tensor,
    student: &Tensor,
    teacher: &Tensor,
    alpha: f64,
    temperature: f64,
) -> Result<Tensor> {
    if alpha == 0.0 {
        return Ok(ce);
    }
    let kd = kd_loss(student, teacher, temperature)?;
    Ok(((ce * (1.0 - alpha))? + (kd * alpha)?)?)
}

/// Distillation from a fixed teacher, as a training hook (chain it with the mask or centroid hooks).
pub struct Distill<'t> {
    teacher: &'t dyn Model,
    alpha: f64,
    temperature: f64,
}

impl std::fmt::Debug for Distill<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distill")
            .field("alpha", &self.alpha)
            .field("temperature", &self.temperature)
            .finish_non_exhaustive()
    }
}

impl<'t> Distill<'t> {
    /// `alpha` in [0, 1] (the weight of the soft term), `temperature` > 0. The teacher runs in inference
    /// mode (`forward_t(train = false)`: BatchNorm uses its running statistics).
    pub fn new(teacher: &'t dyn Model, alpha: f64, temperature: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&alpha) {
            return Err(ModelError::Config {
                field: "distill.alpha".into(),
                reason: format!("must be in [0, 1], got {alpha}"),
            });
        }
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(ModelError::Config {
                field: "distill.temperature".into(),
                reason: format!("must be a positive number, got {temperature}"),
            });
        }
        Ok(Self {
            teacher,
            alpha,
            temperature,
        })
    }
}

impl TrainHook for Distill<'_> {
    fn loss(&mut self, images: &Tensor, logits: &Tensor, loss: Tensor) -> Result<Tensor> {
        if self.alpha == 0.0 {
            return Ok(loss);
        }
        let teacher = self.teacher.forward_t(images, false)?.detach();
        mix(loss, logits, &teacher, self.alpha, self.temperature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    const STUDENT: [f32; 12] = [
        1.0, -0.5, 2.0, 0.25, 0.1, 0.2, -1.3, 0.7, 3.0, -2.0, 0.0, 0.5,
    ];
    const TEACHER: [f32; 12] = [
        0.8, 0.1, 1.5, -0.2, -0.4, 0.9, -1.0, 0.3, 2.5, -1.0, 0.2, 1.0,
    ];
    const LABELS: [u32; 3] = [2, 3, 0];

    /// PyTorch 2.15: `L = (1-a)*F.cross_entropy(s, y) + a*F.kl_div(F.log_softmax(s/T, 1),
    /// F.softmax(t/T, 1), reduction="batchmean")*T*T`, then `L.backward()`; (T, a, L, kd, s.grad).
    #[allow(clippy::type_complexity)]
    const GOLDEN: [(f64, f64, f64, f64, [f32; 12]); 3] = [
        (
            1.0,
            0.5,
            0.286_776_483_058_929_44,
            0.092_423_923_313_617_7,
            [
                0.032_546_006,
                -0.004_489_761,
                -0.047_920_26,
                0.019_863_99,
                0.056_815_46,
                0.003_697_518_3,
                0.007_045_627_6,
                -0.067_558_6,
                0.002_958_247_4,
                -0.001_745_629_7,
                0.002_230_553_4,
                -0.003_443_184_3,
            ],
        ),
        (
            4.0,
            0.5,
            0.302_193_343_639_373_8,
            0.123_257_637_023_925_78,
            [
                0.038_182_367,
                -0.017_914_062,
                -0.047_244_795,
                0.026_976_528,
                0.060_943_46,
                0.011_765_003,
                0.001_206_561,
                -0.073_915_01,
                0.020_324_796,
                -0.019_964_566,
                0.003_889_491_8,
                -0.004_249_708_7,
            ],
        ),
        (
            4.0,
            0.9,
            0.159_044_772_386_550_9,
            0.123_257_637_023_925_78,
            [
                0.008_311_393,
                -0.045_726_12,
                0.017_395_977,
                0.020_018_838,
                0.045_808_934,
                -0.049_431_577,
                -0.013_583_095,
                0.017_205_786,
                0.069_047_585,
                -0.037_514_26,
                -0.004_659_223_4,
                -0.026_874_086,
            ],
        ),
    ];

    #[test]
    fn matches_pytorch_loss_and_gradient() {
        let dev = Device::Cpu;
        for (t, a, want_loss, want_kd, want_grad) in GOLDEN {
            let s = Var::from_vec(STUDENT.to_vec(), (3, 4), &dev).unwrap();
            let teacher = Tensor::from_vec(TEACHER.to_vec(), (3, 4), &dev).unwrap();
            let labels = Tensor::from_vec(LABELS.to_vec(), 3, &dev).unwrap();
            let kd = kd_loss(s.as_tensor(), &teacher, t).unwrap();
            let kd = kd.to_scalar::<f32>().unwrap() as f64;
            assert!((kd - want_kd).abs() < 1e-6, "T {t}: kd {kd} vs {want_kd}");
            let ce = candle_nn::loss::cross_entropy(s.as_tensor(), &labels).unwrap();
            let loss = mix(ce, s.as_tensor(), &teacher, a, t).unwrap();
            let got = loss.to_scalar::<f32>().unwrap() as f64;
            assert!(
                (got - want_loss).abs() < 1e-6,
                "T {t} a {a}: {got} vs {want_loss}"
            );
            let grads = loss.backward().unwrap();
            let g = grads.get(s.as_tensor()).unwrap().flatten_all().unwrap();
            let g = g.to_vec1::<f32>().unwrap();
            for (i, (x, y)) in g.iter().zip(want_grad).enumerate() {
                assert!((x - y).abs() < 1e-6, "T {t} a {a}: grad[{i}] {x} vs {y}");
            }
            // No gradient reaches the teacher's logits.
            assert!(grads.get(&teacher).is_none());
        }
    }

    #[test]
    fn alpha_zero_is_plain_cross_entropy_and_bad_settings_are_refused() {
        let dev = Device::Cpu;
        let s = Tensor::from_vec(STUDENT.to_vec(), (3, 4), &dev).unwrap();
        let t = Tensor::from_vec(TEACHER.to_vec(), (3, 4), &dev).unwrap();
        let labels = Tensor::from_vec(LABELS.to_vec(), 3, &dev).unwrap();
        let ce = candle_nn::loss::cross_entropy(&s, &labels).unwrap();
        let want = ce.to_scalar::<f32>().unwrap();
        let got = mix(ce, &s, &t, 0.0, 4.0).unwrap();
        assert_eq!(got.to_scalar::<f32>().unwrap(), want);
        // Identical logits: the soft term is zero.
        let kd = kd_loss(&s, &s, 3.0).unwrap().to_scalar::<f32>().unwrap();
        assert!(kd.abs() < 1e-7, "{kd}");
        // Shapes must agree.
        let wrong = Tensor::zeros((3, 5), candle_core::DType::F32, &dev).unwrap();
        assert!(kd_loss(&s, &wrong, 1.0).is_err());
        let model = crate::arch::build("lenet300", &crate::ArchConfig::default(), 1, &dev).unwrap();
        for (a, t) in [(-0.1, 1.0), (1.5, 1.0), (0.5, 0.0), (0.5, f64::NAN)] {
            let err = Distill::new(model.as_ref(), a, t).unwrap_err().to_string();
            assert!(err.contains("distill."), "{err}");
        }
    }
}
