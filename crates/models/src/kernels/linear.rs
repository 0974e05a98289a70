//! Fully-connected layer `y = act(x·Wᵀ + b)` as one custom op.
//!
//! Forward: the output rows are preloaded with the bias, one gemm accumulates `x·Wᵀ` into them, and the
//! ReLU (when asked) clamps in place: one output buffer, no broadcast pass. Backward masks the incoming
//! gradient by `y > 0` once, then `dW = gᵀ·x` and `dx = g·W` are two gemms reading the transposes as
//! strided views, and `db` is a column sum. `dx` is skipped when the input carries no gradient (the
//! first layer of a network), which saves a third of that layer's backward work.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::{buffer, contiguous, gemm, tensor, with_cpu, Elem, MatRef};
use crate::error::{ModelError, Result};

/// What follows the affine map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Nothing: `y = x·Wᵀ + b`.
    Identity,
    /// `y = max(x·Wᵀ + b, 0)`; the gradient is passed where `y > 0` (PyTorch's ReLU rule at 0).
    Relu,
}

/// `act(xs·weightᵀ + bias)` for `xs` (N, in), `weight` (out, in), `bias` (out).
///
/// On the CPU with f32/f64 tensors this is one custom op (see the module docs); elsewhere it is the same
/// computation in candle ops.
pub fn linear(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    act: Activation,
) -> Result<Tensor> {
    let (n, fin) = xs.dims2()?;
    let (fout, win) = weight.dims2()?;
    if win != fin {
        return Err(ModelError::Shape {
            name: "linear input".into(),
            expected: vec![n, win],
            found: vec![n, fin],
        });
    }
    if let Some(b) = bias {
        if b.dims() != [fout] {
            return Err(ModelError::Shape {
                name: "linear bias".into(),
                expected: vec![fout],
                found: b.dims().to_vec(),
            });
        }
    }
    let fused = xs.device().is_cpu()
        && matches!(
            xs.dtype(),
            candle_core::DType::F32 | candle_core::DType::F64
        )
        && weight.dtype() == xs.dtype()
        && bias.is_none_or(|b| b.dtype() == xs.dtype());
    if !fused {
        let ys = xs.matmul(&weight.t()?)?;
        let ys = match bias {
            Some(b) => ys.broadcast_add(b)?,
            None => ys,
        };
        return Ok(match act {
            Activation::Identity => ys,
            Activation::Relu => ys.relu()?,
        });
    }
    let op = LinearOp {
        act,
        input_grad: xs.track_op(),
    };
    let xs = xs.contiguous()?;
    let weight = weight.contiguous()?;
    Ok(match bias {
        Some(b) => xs.apply_op3(&weight, &b.contiguous()?, op)?,
        None => xs.apply_op2(&weight, op)?,
    })
}

/// The op; `input_grad` is false when `x` needs no gradient.
#[derive(Debug, Clone, Copy)]
struct LinearOp {
    act: Activation,
    input_grad: bool,
}

const NAME: &str = "deepcomp-linear";

impl LinearOp {
    fn forward<T: Elem>(
        &self,
        x: &[T],
        w: &[T],
        b: Option<&[T]>,
        n: usize,
        fin: usize,
        fout: usize,
    ) -> candle_core::Result<Vec<T>> {
        let mut y = buffer::<T>(n * fout);
        let accumulate = match b {
            Some(b) => {
                for row in y.chunks_exact_mut(fout) {
                    row.copy_from_slice(b);
                }
                true
            }
            None => false,
        };
        gemm(
            &mut y,
            fout,
            MatRef::rows(x, n, fin),
            MatRef::rows(w, fout, fin).t(),
            accumulate,
            true,
        )?;
        if self.act == Activation::Relu {
            relu_in_place(&mut y);
        }
        Ok(y)
    }

    /// Gradients (dx, dW, db) from the output `y` and its gradient `dy`.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn backward<T: Elem>(
        &self,
        x: &[T],
        w: &[T],
        y: &[T],
        dy: &[T],
        n: usize,
        fin: usize,
        fout: usize,
        want_bias: bool,
    ) -> candle_core::Result<(Option<Vec<T>>, Vec<T>, Option<Vec<T>>)> {
        let masked;
        let g: &[T] = match self.act {
            Activation::Identity => dy,
            Activation::Relu => {
                masked = dy
                    .iter()
                    .zip(y)
                    .map(|(&d, &v)| if v > T::ZERO { d } else { T::ZERO })
                    .collect::<Vec<T>>();
                &masked
            }
        };
        let mut dw = buffer::<T>(fout * fin);
        gemm(
            &mut dw,
            fin,
            MatRef::rows(g, n, fout).t(),
            MatRef::rows(x, n, fin),
            false,
            true,
        )?;
        let dx = if self.input_grad {
            let mut dx = buffer::<T>(n * fin);
            gemm(
                &mut dx,
                fin,
                MatRef::rows(g, n, fout),
                MatRef::rows(w, fout, fin),
                false,
                true,
            )?;
            Some(dx)
        } else {
            None
        };
        let db = want_bias.then(|| {
            let mut db = vec![T::ZERO; fout];
            for row in g.chunks_exact(fout) {
                for (s, &v) in db.iter_mut().zip(row) {
                    *s += v;
                }
            }
            db
        });
        Ok((dx, dw, db))
    }
}

/// `v ← max(v, 0)`; NaN stays NaN, as `torch.relu`.
fn relu_in_place<T: Elem>(v: &mut [T]) {
    for e in v {
        // A select rather than a conditional store, so that the loop vectorizes.
        *e = if *e < T::ZERO { T::ZERO } else { *e };
    }
}

/// Shapes (n, in, out) from the input and weight layouts.
fn dims(l1: &Layout, l2: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let (n, fin) = l1.shape().dims2()?;
    let (fout, win) = l2.shape().dims2()?;
    if win != fin {
        candle_core::bail!("{NAME}: input has {fin} features, weight expects {win}");
    }
    Ok((n, fin, fout))
}

impl LinearOp {
    /// Forward on CPU storages, for both the biased (`CustomOp3`) and the unbiased (`CustomOp2`) op.
    fn fwd_storage(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, fin, fout) = dims(l1, l2)?;
        fn run<T: Elem>(
            op: &LinearOp,
            (n, fin, fout): (usize, usize, usize),
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            bias: Option<(&CpuStorage, &Layout)>,
        ) -> candle_core::Result<Vec<T>> {
            let b = bias
                .map(|(s, l)| contiguous::<T>(NAME, "bias", s, l))
                .transpose()?;
            op.forward(
                contiguous::<T>(NAME, "input", s1, l1)?,
                contiguous::<T>(NAME, "weight", s2, l2)?,
                b,
                n,
                fin,
                fout,
            )
        }
        let d = (n, fin, fout);
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(run(self, d, s1, l1, s2, l2, bias)?),
            CpuStorage::F64(_) => CpuStorage::F64(run(self, d, s1, l1, s2, l2, bias)?),
            s => candle_core::bail!("{NAME}: unsupported dtype {:?}", s.dtype()),
        };
        Ok((out, Shape::from((n, fout))))
    }
}

/// Backward shared by the biased and unbiased ops: (dx, dW, db) as tensors.
#[allow(clippy::type_complexity)]
fn backward_tensors(
    op: &LinearOp,
    x: &Tensor,
    w: &Tensor,
    y: &Tensor,
    dy: &Tensor,
    want_bias: bool,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let (n, fin) = x.dims2()?;
    let (fout, _) = w.dims2()?;
    fn run<T: Elem>(
        op: &LinearOp,
        x: &Tensor,
        w: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        (n, fin, fout): (usize, usize, usize),
        want_bias: bool,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = with_cpu::<T, _>(NAME, "input", x, |x| {
            with_cpu::<T, _>(NAME, "weight", w, |w| {
                with_cpu::<T, _>(NAME, "output", y, |y| {
                    with_cpu::<T, _>(NAME, "output gradient", dy, |dy| {
                        op.backward(x, w, y, dy, n, fin, fout, want_bias)
                    })
                })
            })
        })?;
        Ok((
            dx.map(|v| tensor(v, &[n, fin])).transpose()?,
            Some(tensor(dw, &[fout, fin])?),
            db.map(|v| tensor(v, &[fout])).transpose()?,
        ))
    }
    match x.dtype() {
        candle_core::DType::F32 => run::<f32>(op, x, w, y, dy, (n, fin, fout), want_bias),
        candle_core::DType::F64 => run::<f64>(op, x, w, y, dy, (n, fin, fout), want_bias),
        d => candle_core::bail!("{NAME}: unsupported dtype {d:?}"),
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd_storage(s1, l1, s2, l2, Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        backward_tensors(self, x, w, y, dy, true)
    }
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd_storage(s1, l1, s2, l2, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = backward_tensors(self, x, w, y, dy, false)?;
        Ok((dx, dw))
    }
}
