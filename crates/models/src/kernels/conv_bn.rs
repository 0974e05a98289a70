//! A convolution and the train-mode BatchNorm after it (with its residual and ReLU epilogue) as one
//! candle custom op.
//!
//! As two ops, the convolution's output `z` is a node of candle's graph: in backward, candle
//! allocates a zero gradient for it and adds BatchNorm's input gradient into it (`zeros_like` +
//! `add`, on one thread, over N·O·Ho·Wo values) before the convolution's backward reads it. As one op,
//! BatchNorm's input gradient goes straight into the convolution's backward. `z` and the batch
//! statistics are kept inside the op for the backward pass; the forward pass and both gradients are
//! those of [`super::conv`] and [`super::bn`], unchanged, so the results are the same as the two ops'
//! to the bit.

use std::sync::{Arc, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};

use super::bn::{self, BatchNormTrain, BatchStats, Epilogue, Stats};
use super::conv::{self, ConvOp, Epi};
use super::{contiguous, tensor, with_cpu, Elem};
use crate::error::{ModelError, Result};

const NAME: &str = "deepcomp-conv2d-batch-norm";

/// `act(BN(conv2d(xs, weight)) [+ residual])` in train mode: batch statistics, `gamma` and `beta` of
/// shape (O), no convolution bias (BatchNorm's mean subtraction would cancel it). Returns the output
/// and the batch statistics for the running averages, as [`bn::batch_norm_train_act`] does.
///
/// CPU only, f32 or f64, every tensor of one dtype; the caller checks devices and dtypes (see
/// [`crate::layers::Conv2d::forward_bn_act`]).
///
/// # Errors
/// [`ModelError::Shape`] for a weight, parameters or a residual that do not fit the input;
/// [`ModelError::Config`] when a channel has fewer than two values or `eps` is negative.
pub fn conv2d_batch_norm_train(
    xs: &Tensor,
    weight: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    stride: usize,
    padding: usize,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<(Tensor, BatchStats)> {
    let (n, c, h, w) = xs.dims4()?;
    let (o, wc, k, k2) = weight.dims4()?;
    let out = |size: usize| crate::layers::conv_out_size(size, k, stride, padding);
    let (Some(ho), Some(wo)) = (out(h), out(w)) else {
        return Err(ModelError::Shape {
            name: format!("conv2d input (kernel {k}, stride {stride}, padding {padding})"),
            expected: vec![k, k],
            found: vec![h + 2 * padding, w + 2 * padding],
        });
    };
    if wc != c || k != k2 {
        return Err(ModelError::Shape {
            name: "conv2d weight".into(),
            expected: vec![o, c, k, k],
            found: weight.dims().to_vec(),
        });
    }
    for (name, t) in [("batch norm weight", gamma), ("batch norm bias", beta)] {
        if t.dims() != [o] {
            return Err(ModelError::Shape {
                name: name.into(),
                expected: vec![o],
                found: t.dims().to_vec(),
            });
        }
    }
    if let Some(r) = residual {
        if r.dims() != [n, o, ho, wo] {
            return Err(ModelError::Shape {
                name: "batch norm residual".into(),
                expected: vec![n, o, ho, wo],
                found: r.dims().to_vec(),
            });
        }
    }
    if n * ho * wo < 2 {
        return Err(ModelError::Config {
            field: "batch".into(),
            reason: format!(
                "batch norm in train mode needs more than one value per channel, got output shape {:?}",
                [n, o, ho, wo]
            ),
        });
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(ModelError::Config {
            field: "eps".into(),
            reason: format!("must be finite and non-negative, got {eps}"),
        });
    }
    let op = ConvBnTrain {
        conv: ConvOp {
            stride,
            pad: padding,
            input_grad: xs.track_op(),
        },
        k,
        o,
        eps,
        epilogue: Epilogue {
            residual: residual.is_some(),
            relu,
        },
        saved: Arc::new(OnceLock::new()),
    };
    let saved = op.saved.clone();
    let params = Tensor::cat(&[&weight.flatten_all()?, gamma, beta], 0)?;
    let xs = xs.contiguous()?;
    let ys = match residual {
        Some(r) => xs.apply_op3(&params, &r.contiguous()?, op)?,
        None => xs.apply_op2(&params, op)?,
    };
    let stats = &saved
        .get()
        .ok_or_else(|| {
            candle_core::Error::Msg(format!("{NAME}: the forward pass kept no statistics"))
        })?
        .1;
    Ok((
        ys,
        BatchStats {
            mean: stats.mean.clone(),
            var: stats.var.clone(),
            count: n * ho * wo,
        },
    ))
}

/// The op: inputs `x`, the parameters `[W (flattened) ; γ ; β]` and the residual when there is one.
#[derive(Debug)]
struct ConvBnTrain {
    conv: ConvOp,
    k: usize,
    o: usize,
    eps: f64,
    epilogue: Epilogue,
    /// The convolution's output and its batch statistics, set by the forward pass.
    saved: Arc<OnceLock<(Tensor, Arc<Stats>)>>,
}

impl ConvBnTrain {
    /// The convolution's geometry from the input's dimensions and the parameters' length.
    fn geom(&self, x: &[usize], params: usize) -> candle_core::Result<conv::Geom> {
        let c = x.get(1).copied().unwrap_or(0);
        if params != self.o * (c * self.k * self.k + 2) {
            candle_core::bail!("{NAME}: {params} parameters do not fit input {x:?}");
        }
        conv::Geom::new(
            x,
            &[self.o, c, self.k, self.k],
            self.conv.stride,
            self.conv.pad,
        )
    }

    /// BatchNorm's view of the convolution's output.
    fn bn(&self, g: conv::Geom, stats: Arc<Stats>) -> BatchNormTrain {
        BatchNormTrain {
            g: bn::Geom {
                n: g.n,
                c: g.o,
                s: g.ho * g.wo,
            },
            stats,
            epilogue: self.epilogue,
        }
    }

    fn fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        r: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geom(l1.dims(), l2.shape().elem_count())?;
        let shape = Shape::from((g.n, g.o, g.ho, g.wo));
        if r.is_some_and(|(_, l)| l.dims() != shape.dims()) {
            candle_core::bail!("{NAME}: the residual does not have the output's shape");
        }
        fn run<T: Elem>(
            op: &ConvBnTrain,
            g: conv::Geom,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            r: Option<(&CpuStorage, &Layout)>,
        ) -> candle_core::Result<(Vec<T>, Tensor, Arc<Stats>)> {
            let x = contiguous::<T>(NAME, "input", s1, l1)?;
            let p = contiguous::<T>(NAME, "parameters", s2, l2)?;
            let (w, gb) = p.split_at(g.o * g.kdim());
            let z = op.conv.forward(g, x, w, None, Epi::default())?;
            let bg = bn::Geom {
                n: g.n,
                c: g.o,
                s: g.ho * g.wo,
            };
            let stats = Arc::new(bn::channel_stats(&z, bg, op.eps));
            let bn = op.bn(g, stats.clone());
            let y = match r {
                Some((s, l)) => bn.run(&z, gb, contiguous::<T>(NAME, "residual", s, l)?),
                None => bn.run(&z, &gb[..g.o], &gb[g.o..]),
            };
            let z = tensor(z, &[g.n, g.o, g.ho, g.wo])?;
            Ok((y, z, stats))
        }
        let (out, z, stats) = match s1 {
            CpuStorage::F32(_) => {
                let (y, z, st) = run::<f32>(self, g, s1, l1, s2, l2, r)?;
                (CpuStorage::F32(y), z, st)
            }
            CpuStorage::F64(_) => {
                let (y, z, st) = run::<f64>(self, g, s1, l1, s2, l2, r)?;
                (CpuStorage::F64(y), z, st)
            }
            s => candle_core::bail!("{NAME}: unsupported dtype {:?}", s.dtype()),
        };
        if self.saved.set((z, stats)).is_err() {
            candle_core::bail!("{NAME}: the op ran forward twice");
        }
        Ok((out, shape))
    }

    /// (dx, d[W ; γ ; β], dr).
    #[allow(clippy::type_complexity)]
    fn grads(
        &self,
        x: &Tensor,
        params: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
        let g = self.geom(x.dims(), params.elem_count())?;
        let (z, stats) = self
            .saved
            .get()
            .ok_or_else(|| candle_core::Error::Msg(format!("{NAME}: backward before forward")))?;
        if dy.dims() != [g.n, g.o, g.ho, g.wo] || y.dims() != dy.dims() {
            candle_core::bail!("{NAME}: output gradient {:?} does not fit", dy.dims());
        }
        let bn = self.bn(g, stats.clone());
        fn run<T: Elem>(
            op: &ConvBnTrain,
            g: conv::Geom,
            bn: &BatchNormTrain,
            tensors: [&Tensor; 5],
        ) -> candle_core::Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
            let [x, params, y, dy, z] = tensors;
            let kd = g.kdim();
            let (dz, dgamma, dbeta, dr) = with_cpu::<T, _>(NAME, "output", y, |y| {
                with_cpu::<T, _>(NAME, "output gradient", dy, |dy| {
                    with_cpu::<T, _>(NAME, "convolution output", z, |z| {
                        with_cpu::<T, _>(NAME, "parameters", params, |p| {
                            bn.grads(z, y, dy, &p[g.o * kd..g.o * (kd + 1)])
                        })
                    })
                })
            })?;
            let (dx, dw, _) = with_cpu::<T, _>(NAME, "input", x, |x| {
                with_cpu::<T, _>(NAME, "parameters", params, |p| {
                    op.conv.backward(g, x, &p[..g.o * kd], &dz, false)
                })
            })?;
            let mut dp = dw;
            dp.extend(bn::cast::<T>(dgamma.into_iter().chain(dbeta)));
            let shape = [g.n, g.o, g.ho, g.wo];
            Ok((
                dx.map(|v| tensor(v, &[g.n, g.c, g.h, g.w])).transpose()?,
                tensor(dp, &[g.o * (kd + 2)])?,
                dr.map(|v| tensor(v, &shape)).transpose()?,
            ))
        }
        let tensors = [x, params, y, dy, z];
        match x.dtype() {
            DType::F32 => run::<f32>(self, g, &bn, tensors),
            DType::F64 => run::<f64>(self, g, &bn, tensors),
            d => candle_core::bail!("{NAME}: unsupported dtype {d:?}"),
        }
    }
}

impl CustomOp2 for ConvBnTrain {
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
        self.fwd(s1, l1, s2, l2, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dp, _) = self.grads(x, params, y, dy)?;
        Ok((dx, Some(dp)))
    }
}

impl CustomOp3 for ConvBnTrain {
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
        self.fwd(s1, l1, s2, l2, Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _r: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dp, dr) = self.grads(x, params, y, dy)?;
        Ok((dx, Some(dp), dr))
    }
}
