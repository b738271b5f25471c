//! The fuzzer's random steps: which call, on which variables, with which shapes and values.
//! Shapes are small (lavapipe runs them) but cross every kernel family's paths: K % 64 == 0 and
//! not (fused and generic GEMVs), M up to 12 (batched GEMV and tiled GEMM), rows of 1..640.

use bitnet_wgpu::{BinaryOp, DType, DispatchPolicy, ReduceOp, Tensor, UnaryOp};

use super::draw::{Fuzz, MAX_VARS, WIDTHS};
use super::program::Mismatch;

/// One step kind and its weight in the draw.
const STEPS: &[(Step, u64)] = &[
    (Step::Upload, 8),
    (Step::UploadU32, 1),
    (Step::Fill, 2),
    (Step::Copy, 3),
    (Step::Binary, 8),
    (Step::Scalar, 3),
    (Step::Unary, 2),
    (Step::Reduce, 2),
    (Step::RmsNorm, 3),
    (Step::AddRmsNorm, 2),
    (Step::Slice, 4),
    (Step::Concat, 3),
    (Step::Reshape, 3),
    (Step::QuantizeActivations, 3),
    (Step::QuantizeWeights, 3),
    (Step::Bitlinear, 7),
    (Step::Accumulate, 2),
    (Step::HostBitlinear, 2),
    (Step::KvAppend, 3),
    (Step::KvView, 2),
    (Step::KvTruncate, 1),
    (Step::Drop, 6),
    (Step::Read, 5),
    (Step::ReadLater, 3),
    (Step::FinishRead, 3),
    (Step::Check, 2),
    (Step::Sync, 2),
    (Step::Policy, 1),
    (Step::Pool, 1),
    (Step::ToHost, 2),
    (Step::ToDevice, 2),
    (Step::LayerForward, 3),
    (Step::LayerTensor, 4),
    (Step::LayerNormed, 2),
    (Step::Matmul, 2),
    (Step::Softmax, 2),
    (Step::Rope, 2),
    (Step::Attention, 2),
    (Step::Fault, 2),
];

#[derive(Debug, Clone, Copy)]
enum Step {
    Upload,
    UploadU32,
    Fill,
    Copy,
    Binary,
    Scalar,
    Unary,
    Reduce,
    RmsNorm,
    AddRmsNorm,
    Slice,
    Concat,
    Reshape,
    QuantizeActivations,
    QuantizeWeights,
    Bitlinear,
    Accumulate,
    HostBitlinear,
    KvAppend,
    KvView,
    KvTruncate,
    Drop,
    Read,
    ReadLater,
    FinishRead,
    Check,
    Sync,
    Policy,
    Pool,
    ToHost,
    ToDevice,
    LayerForward,
    LayerTensor,
    LayerNormed,
    Matmul,
    Softmax,
    Rope,
    Attention,
    Fault,
}

impl Fuzz {
    /// Runs `steps` random steps, then reads everything.
    pub fn run(&mut self, steps: usize) -> Result<(), Mismatch> {
        let total: u64 = STEPS.iter().map(|s| s.1).sum();
        for step in 0..steps {
            self.p.step = step;
            while self.p.vars.len() > MAX_VARS {
                self.drop_one()?;
            }
            let mut draw = self.r.below(total);
            let kind = STEPS
                .iter()
                .find(|s| {
                    let hit = draw < s.1;
                    draw = draw.saturating_sub(s.1);
                    hit
                })
                .unwrap()
                .0;
            self.step(kind)?;
        }
        self.p.read_all()
    }

    fn step(&mut self, kind: Step) -> Result<(), Mismatch> {
        match kind {
            Step::Upload => {
                let shape = match self.below(4) {
                    0 => vec![self.one_of(WIDTHS)],
                    1 => vec![self.rows(), 2, self.one_of(WIDTHS)],
                    _ => vec![self.rows(), self.one_of(WIDTHS)],
                };
                self.upload(&shape).map(|_| ())
            }
            Step::UploadU32 => {
                let (rows, width) = (self.rows(), self.one_of(WIDTHS));
                let v: Vec<u32> = (0..rows * width)
                    .map(|_| self.r.next_u64() as u32)
                    .collect();
                self.p.run("upload_u32", &[], |e, _| {
                    Ok(vec![e.upload_u32(&v, &[rows, width])?])
                })
            }
            Step::Fill => {
                let shape = [self.rows(), self.one_of(WIDTHS)];
                let value = self.r.range_f32(-2.0, 2.0);
                self.p
                    .run("fill", &[], |e, _| Ok(vec![e.fill(&shape, value)?]))
            }
            Step::Copy => {
                let a = self.float()?;
                self.p.run("copy", &[a], |e, t| Ok(vec![e.copy(t[0])?]))
            }
            Step::Binary => {
                let op = self.one_of(&[BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div]);
                let a = self.float()?;
                let shape = self.p.vars[a].gpu.shape().to_vec();
                let last = shape.last().copied().unwrap_or(1);
                let b = match self.below(4) {
                    0 => self.upload(&[last])?,
                    1 => self.upload(&[1, last])?,
                    _ => self.like(a)?,
                };
                let (x, y) = if self.below(2) == 0 { (a, b) } else { (b, a) };
                self.p.run("binary", &[x, y], |e, t| {
                    Ok(vec![e.binary(op, t[0], t[1])?])
                })
            }
            Step::Scalar => {
                let op = self.one_of(&[BinaryOp::Add, BinaryOp::Mul, BinaryOp::Div]);
                let (a, s) = (self.float()?, self.one_of(&[0.5, -3.0, 0.0, 1e30]));
                self.p.run("binary_scalar", &[a], |e, t| {
                    Ok(vec![e.binary_scalar(op, t[0], s)?])
                })
            }
            Step::Unary => {
                let op = self.one_of(&[UnaryOp::Relu, UnaryOp::Relu2]);
                let a = self.float()?;
                self.p
                    .run("unary", &[a], |e, t| Ok(vec![e.unary(op, t[0])?]))
            }
            Step::Reduce => {
                let op = self.one_of(&[ReduceOp::Max, ReduceOp::AbsMax]);
                let a = self.float()?;
                self.p.run("reduce_last", &[a], |e, t| {
                    Ok(vec![e.reduce_last(op, t[0])?])
                })
            }
            Step::RmsNorm | Step::AddRmsNorm => {
                let x = self.float()?;
                let last = self.p.vars[x].gpu.shape().last().copied().unwrap_or(1);
                let len = if self.below(15) == 0 { last + 1 } else { last };
                let w = self.upload(&[len])?;
                let eps = self.one_of(&[1e-5, 1e-6, 0.0, -1.0]);
                if let Step::RmsNorm = kind {
                    return self.p.run("rms_norm", &[x, w], |e, t| {
                        Ok(vec![e.rms_norm(t[0], t[1], eps)?])
                    });
                }
                let res = self.like(x)?;
                self.p.run("add_rms_norm", &[x, res, w], |e, t| {
                    let (sum, normed) = e.add_rms_norm(t[0], t[1], t[2], eps)?;
                    Ok(vec![sum, normed])
                })
            }
            Step::Slice => {
                let Some(a) = self.pick(|t| matches!(t.dtype(), DType::F32 | DType::U32)) else {
                    return self.matrix(None).map(|_| ());
                };
                let shape = self.p.vars[a].gpu.shape().to_vec();
                let past = usize::from(self.below(20) == 0);
                let axis = self.below((shape.len() + past).max(1));
                let dim = shape.get(axis).copied().unwrap_or(1);
                let start = self.below(dim + 1);
                let end = start + self.below(dim + 2 - start);
                self.p.run("slice", &[a], |e, t| {
                    Ok(vec![e.slice(t[0], axis, start..end)?])
                })
            }
            Step::Concat => {
                let a = self.float()?;
                let mut shape = self.p.vars[a].gpu.shape().to_vec();
                let axis = self.below(shape.len().max(1));
                if let Some(dim) = shape.get_mut(axis) {
                    *dim = 1 + self.r.below(3) as usize;
                }
                let b = if shape.is_empty() || self.below(10) == 0 {
                    self.float()?
                } else {
                    self.upload(&shape)?
                };
                self.p.run("concat", &[a, b], |e, t| {
                    Ok(vec![e.concat(&[t[0], t[1]], axis)?])
                })
            }
            Step::Reshape => {
                let a = self.float()?;
                let shape = self.p.vars[a].gpu.shape().to_vec();
                let len: usize = shape.iter().product();
                let to = match self.below(4) {
                    0 => vec![len],
                    1 => vec![1, len],
                    2 if len.is_multiple_of(2) => vec![2, len / 2],
                    _ => vec![len + 1],
                };
                self.p
                    .run("reshape", &[a], |_, t| Ok(vec![t[0].reshape(&to)?]))
            }
            Step::QuantizeActivations => {
                let x = self.matrix(None)?;
                self.p.run("quantize_activations_tensor", &[x], |e, t| {
                    Ok(vec![e.quantize_activations_tensor(t[0])?])
                })
            }
            Step::QuantizeWeights => self.weights(None).map(|_| ()),
            Step::Bitlinear | Step::Accumulate => {
                let Some(w) = self.weights(None)? else {
                    return Ok(());
                };
                let k = self.p.vars[w].gpu.shape()[1];
                let k = if self.below(20) == 0 { k + 1 } else { k };
                let quantized = |t: &Tensor| t.dtype() == DType::QuantizedI8 && t.shape()[1] == k;
                let x = match self.pick(quantized) {
                    Some(i) if matches!(kind, Step::Accumulate) || self.below(3) == 0 => i,
                    _ if matches!(kind, Step::Accumulate) => {
                        let x = self.matrix(Some(k))?;
                        let xq = self
                            .p
                            .run_new("quantize_activations_tensor", &[x], |e, t| {
                                Ok(vec![e.quantize_activations_tensor(t[0])?])
                            })?;
                        let Some(xq) = xq else {
                            return Ok(());
                        };
                        xq
                    }
                    _ => self.matrix(Some(k))?,
                };
                if let Step::Accumulate = kind {
                    return self.p.run("bitlinear_accumulate_tensor", &[x, w], |e, t| {
                        Ok(vec![e.bitlinear_accumulate_tensor(t[0], t[1])?])
                    });
                }
                self.p.run("bitlinear_tensor", &[x, w], |e, t| {
                    Ok(vec![e.bitlinear_tensor(t[0], t[1])?])
                })
            }
            Step::HostBitlinear => self.host_bitlinear(),
            Step::KvAppend => self.kv_append(),
            Step::KvView => {
                let (g, c) = if self.below(2) == 0 {
                    (self.layers.kv.0.keys(), self.layers.kv.1.keys())
                } else {
                    (self.layers.kv.0.values(), self.layers.kv.1.values())
                };
                let must_fail = c.is_err();
                let (g, c) = (g.map(|t| vec![t]), c.map(|t| vec![t]).map_err(|e| vec![e]));
                self.p.settle("kv view", g, c, must_fail, false)
            }
            Step::KvTruncate => {
                let len = self.below(self.layers.kv.0.len() + 1);
                self.layers.kv.0.truncate(len);
                self.layers.kv.1.truncate(len);
                Ok(())
            }
            Step::Drop => self.drop_one(),
            Step::Read | Step::ReadLater | Step::Check if self.p.vars.is_empty() => Ok(()),
            Step::Read => {
                let i = self.below(self.p.vars.len());
                self.p.read(i)
            }
            Step::ReadLater => {
                let i = self.below(self.p.vars.len());
                self.p.read_later(i);
                Ok(())
            }
            Step::FinishRead if self.p.pending.is_empty() => Ok(()),
            Step::FinishRead => {
                let i = self.below(self.p.pending.len());
                self.p.finish_read(i)
            }
            Step::Check => {
                let i = self.below(self.p.vars.len());
                self.p.check(i)
            }
            Step::Sync => match self.p.gpu.sync() {
                Ok(()) => Ok(()),
                Err(e) if self.p.faults.excuses(&e, false) => Ok(()),
                Err(e) => Err(format!(
                    "seed {} step {}: sync: {e:?}",
                    self.p.seed, self.p.step
                )),
            },
            Step::Policy if self.policy.is_none() => Ok(()),
            Step::Policy => {
                let policy = self.one_of(&[
                    DispatchPolicy::Gpu,
                    DispatchPolicy::Cpu,
                    DispatchPolicy::Auto,
                ]);
                self.p.gpu.set_dispatch_policy(policy).unwrap();
                if policy == DispatchPolicy::Auto {
                    let model = self.cost_model();
                    self.p.gpu.set_calibration(model).unwrap();
                }
                self.policy = Some(policy);
                Ok(())
            }
            Step::Pool => {
                if self.below(2) == 0 {
                    self.p.gpu.trim_pool();
                } else {
                    let cap = self.one_of(&[0, 1 << 16, u64::MAX]);
                    self.p.gpu.set_pool_free_cap(cap);
                }
                Ok(())
            }
            Step::ToHost => {
                let Some(a) = self.pick(|_| true) else {
                    return Ok(());
                };
                self.p
                    .run("to_host", &[a], |_, t| Ok(vec![t[0].to_host()?]))
            }
            Step::ToDevice => self.move_to_device(),
            Step::LayerForward => self.layer_forward(),
            Step::LayerTensor => self.layer_tensor(),
            Step::LayerNormed => self.layer_normed(),
            Step::Matmul => self.matmul(),
            Step::Softmax => self.softmax(),
            Step::Rope => self.rope(),
            Step::Attention => self.attention(),
            Step::Fault if !self.inject => Ok(()),
            Step::Fault => self.inject_fault(),
        }
    }
}
