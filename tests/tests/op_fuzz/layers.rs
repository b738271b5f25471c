//! Steps on what each engine has its own of: the layer objects, the KV cache, host-facing
//! BitLinear, and moves to the device.

use std::time::Duration;

use bitnet_tests::random_normal;
use bitnet_wgpu::cpu_ref;
use bitnet_wgpu::{
    BatchingLinear, ChainInput, DType, DispatchPolicy, Engine, Error, GatedLinear, KvCache, Linear,
    LinearChain, LinearGroup, NormedInput, UnaryOp,
};

use super::draw::{Fuzz, WIDTHS};
use super::program::{Mismatch, Side};
use super::values::f32_bits;

/// The KV caches' shape: positions of `[KV_HEADS, HEAD_DIM]`.
pub const KV_HEADS: usize = 2;
pub const HEAD_DIM: usize = 4;
const KV_CAPACITY: usize = 24;
/// The layers' K (the fused GEMVs' K % 64 == 0) and their Ns: q-like, k-like, v-like, gate, up.
pub const LAYER_K: usize = 64;
const LAYER_NS: [usize; 5] = [64, 16, 16, 32, 32];

/// What each engine has its own of, built alike: (the GPU engine's, the CPU engine's).
pub struct Layers {
    pub kv: (KvCache, KvCache),
    linears: Vec<(Linear, Linear)>,
    /// linears 0, 1, 2 (q, k, v: one grouped dispatch on the GPU).
    group: (LinearGroup, LinearGroup),
    /// relu²(linears 3) · linears 4.
    gated: (GatedLinear, GatedLinear),
    /// linears 0 on the input, then two links of K 64 each reading the one before: one dispatch
    /// on the GPU.
    chain: (LinearChain, LinearChain),
    /// Over the GPU engine's linears 0 (requests merged within 50 µs).
    batching: BatchingLinear,
}

impl Layers {
    pub fn new(gpu: &Engine, cpu: &Engine, seed: u64) -> Layers {
        let linears: Vec<(Linear, Linear)> = LAYER_NS
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let wf = random_normal(seed * 16 + i as u64, n * LAYER_K, 0.05);
                let w = cpu_ref::quantize_weights(&wf, n, LAYER_K).unwrap();
                (Linear::new(gpu, w.clone()), Linear::new(cpu, w))
            })
            .collect();
        let side =
            |s: Side| -> Vec<Linear> { linears.iter().map(|l| pick(s, l).clone()).collect() };
        let build = |e: &Engine, l: &[Linear]| {
            let group = e.linear_group(&[&l[0], &l[1], &l[2]]).unwrap();
            let gated = e.gated_linear(&l[3], &l[4], UnaryOp::Relu2).unwrap();
            // Each link reads the one before: K 64 throughout (linears 0, then two of their own).
            let links = vec![
                (l[0].clone(), ChainInput::Input),
                (
                    Linear::new(e, chain_matrix(seed, 64)),
                    ChainInput::Output(0),
                ),
                (
                    Linear::new(e, chain_matrix(seed + 1, 16)),
                    ChainInput::Output(1),
                ),
            ];
            let chain = e.linear_chain(LAYER_K, links).unwrap();
            (group, gated, chain)
        };
        let (g, c) = (build(gpu, &side(Side::Gpu)), build(cpu, &side(Side::Cpu)));
        let batching =
            BatchingLinear::new(linears[0].0.clone(), Duration::from_micros(50), 16).unwrap();
        Layers {
            kv: (
                gpu.kv_cache(KV_CAPACITY, KV_HEADS, HEAD_DIM).unwrap(),
                cpu.kv_cache(KV_CAPACITY, KV_HEADS, HEAD_DIM).unwrap(),
            ),
            linears,
            group: (g.0, c.0),
            gated: (g.1, c.1),
            chain: (g.2, c.2),
            batching,
        }
    }
}

/// The object of `side`'s engine.
fn pick<T>(side: Side, pair: &(T, T)) -> &T {
    match side {
        Side::Gpu => &pair.0,
        Side::Cpu => &pair.1,
    }
}

/// A chain link's `[n, LAYER_K]` weights (the same on both engines for one seed).
fn chain_matrix(seed: u64, n: usize) -> cpu_ref::TernaryMatrix {
    let wf = random_normal(seed * 31 + 7, n * LAYER_K, 0.05);
    cpu_ref::quantize_weights(&wf, n, LAYER_K).unwrap()
}

impl Fuzz {
    /// `Engine::bitlinear` (host in, host out) on both engines.
    pub(super) fn host_bitlinear(&mut self) -> Result<(), Mismatch> {
        let (m, k, n) = (
            self.rows(),
            self.one_of(WIDTHS),
            self.one_of(&[1, 4, 8, 64]),
        );
        let wf: Vec<f32> = (0..n * k).map(|_| self.r.range_f32(-1.0, 1.0)).collect();
        let w = cpu_ref::quantize_weights(&wf, n, k).unwrap();
        let x = self.values(m * k);
        let got = self.p.gpu.bitlinear(&x, m, &w);
        let want = self.p.cpu.bitlinear(&x, m, &w);
        self.same_host(&format!("Engine::bitlinear M {m} K {k} N {n}"), got, want)
    }

    /// A layer's host-facing forward on both engines: a `Linear` (linears 0 on the GPU side
    /// sometimes through the batching server) or the chain.
    pub(super) fn layer_forward(&mut self) -> Result<(), Mismatch> {
        let (i, batched, m) = (
            self.below(LAYER_NS.len() + 1),
            self.below(2) == 0,
            self.rows(),
        );
        let x = self.values(m * LAYER_K);
        let l = &self.layers;
        let (what, got, want) = match l.linears.get(i) {
            None => {
                let x = &x[..LAYER_K];
                let (g, c) = (l.chain.0.forward(x), l.chain.1.forward(x));
                (
                    "LinearChain::forward",
                    g.map(|v| v.concat()),
                    c.map(|v| v.concat()),
                )
            }
            Some((_, c)) if i == 0 && batched => {
                let g = l.batching.forward(&x, m);
                ("BatchingLinear::forward", g, c.forward(&x, m))
            }
            Some((g, c)) => ("Linear::forward", g.forward(&x, m), c.forward(&x, m)),
        };
        self.same_host(&format!("{what} (linears {i}, M {m})"), got, want)
    }

    /// A layer on a resident input on both engines: BitLinear on a `Linear`'s device weights,
    /// the group (q, k, v), the gated pair, or the chain (its outputs read at once, as one
    /// uploaded vector, so errors compare as the chain reports them).
    pub(super) fn layer_tensor(&mut self) -> Result<(), Mismatch> {
        let x = self.matrix(Some(LAYER_K))?;
        let (which, i) = (self.below(4), self.below(LAYER_NS.len()));
        let (p, l) = (&mut self.p, &self.layers);
        match which {
            0 => p.run_sided(
                "bitlinear_tensor on Linear::device_weights",
                &[x],
                |s, e, t| {
                    let w = pick(s, &l.linears[i]).device_weights()?;
                    Ok(vec![e.bitlinear_tensor(t[0], &w)?])
                },
            ),
            1 => p.run_sided("LinearGroup::forward_tensor", &[x], |s, _, t| {
                pick(s, &l.group).forward_tensor(t[0])
            }),
            2 => p.run_sided("GatedLinear::forward_tensor", &[x], |s, _, t| {
                Ok(vec![pick(s, &l.gated).forward_tensor(t[0])?])
            }),
            _ => p.run_sided("LinearChain::forward_tensor", &[x], |s, e, t| {
                let outputs = pick(s, &l.chain).forward_tensor(t[0])?.read_all()?.concat();
                Ok(vec![e.upload_f32(&outputs, &[outputs.len()])?])
            }),
        }
    }

    /// A layer on the RMSNorm of its input (`NormedInput`: a residual added or not): a `Linear`,
    /// the group or the gated pair, bit for bit `add_rms_norm` / `rms_norm` and the layer's
    /// `forward_tensor`. The layer's outputs are kept, not the residual stream after the add:
    /// where the norm or the layer fails, the CPU engine fails the whole call, while on the GPU
    /// side that stream may stay readable (it is `x` itself without a residual, and comes from
    /// the norm's launch where the fused kernel cannot run: errors follow the data). The
    /// `AddRmsNorm` step checks that stream.
    pub(super) fn layer_normed(&mut self) -> Result<(), Mismatch> {
        let x = self.matrix(Some(LAYER_K))?;
        let residual = if self.below(2) == 0 {
            Some(self.like(x)?)
        } else {
            None
        };
        let len = if self.below(15) == 0 {
            LAYER_K + 1
        } else {
            LAYER_K
        };
        let weight = self.upload(&[len])?;
        let eps = self.one_of(&[1e-5, 1e-6, 0.0, -1.0]);
        let (which, i) = (self.below(3), self.below(LAYER_NS.len()));
        let ids: Vec<usize> = [Some(x), Some(weight), residual]
            .into_iter()
            .flatten()
            .collect();
        let (p, l) = (&mut self.p, &self.layers);
        p.run_sided("forward_normed", &ids, |s, _, t| {
            let input = NormedInput {
                x: t[0],
                residual: t.get(2).copied(),
                weight: t[1],
                eps,
            };
            Ok(match which {
                0 => {
                    let (h, y) = pick(s, &l.linears[i]).forward_normed(input)?;
                    vec![h, y]
                }
                1 => {
                    let (h, ys) = pick(s, &l.group).forward_normed(input)?;
                    [vec![h], ys].concat()
                }
                _ => {
                    let (h, y) = pick(s, &l.gated).forward_normed(input)?;
                    vec![h, y]
                }
            }
            .split_off(1))
        })
    }

    /// Compares two host-facing results bit for bit (errors equal; NaN payloads aside, as reads).
    fn same_host(
        &self,
        what: &str,
        got: Result<Vec<f32>, Error>,
        want: Result<Vec<f32>, Error>,
    ) -> Result<(), Mismatch> {
        let bits = |r: &Result<Vec<f32>, Error>| r.clone().map(f32_bits);
        // Under `Auto` a device limit re-runs the op on the CPU: no refusal then.
        let refused = |e: &Error| self.p.refused(e) && self.policy != Some(DispatchPolicy::Auto);
        if bits(&got) == bits(&want) || got.as_ref().is_err_and(refused) {
            return Ok(());
        }
        Err(format!(
            "seed {} step {}: {what}: GPU {:?} CPU {:?}",
            self.p.seed,
            self.p.step,
            got.map(|v| v.len()),
            want.map(|v| v.len())
        ))
    }

    /// Appends `[t, KV_HEADS, HEAD_DIM]` keys and values (the CPU side's must be values, not
    /// errors: a CPU cache cannot hold a failed append that the GPU cache holds poisoned).
    pub(super) fn kv_append(&mut self) -> Result<(), Mismatch> {
        let t = 1 + self.below(3);
        let shape = [t, KV_HEADS, HEAD_DIM];
        let k = self.upload(&shape)?;
        let v = match self.pick(|x| x.dtype() == DType::F32 && x.shape() == shape) {
            Some(i) if self.below(2) == 0 => i,
            _ => self.upload(&shape)?,
        };
        let (k, v) = (&self.p.vars[k], &self.p.vars[v]);
        let (Ok(ck), Ok(cv)) = (&k.cpu, &v.cpu) else {
            return Ok(());
        };
        let got = self.layers.kv.0.append(&k.gpu, &v.gpu);
        let want = self.layers.kv.1.append(ck, cv);
        if let (Err(e), Ok(())) = (&got, &want)
            && self.p.faults.excuses(e, false)
        {
            // A fault failed the GPU append (its cache unchanged): the CPU cache follows.
            let len = self.layers.kv.0.len();
            self.layers.kv.1.truncate(len);
            return Ok(());
        }
        if got != want || self.layers.kv.0.len() != self.layers.kv.1.len() {
            return Err(format!(
                "seed {} step {}: KvCache::append: GPU {got:?} (len {}), CPU {want:?} (len {})",
                self.p.seed,
                self.p.step,
                self.layers.kv.0.len(),
                self.layers.kv.1.len()
            ));
        }
        Ok(())
    }

    /// `Engine::to_device` on the GPU engine; the CPU engine keeps its tensor (it has no
    /// device). Under the `Cpu` policy the GPU engine must refuse.
    pub(super) fn move_to_device(&mut self) -> Result<(), Mismatch> {
        let Some(a) = self.pick(|_| true) else {
            return Ok(());
        };
        let got = self.p.gpu.to_device(&self.p.vars[a].gpu);
        if self.policy == Some(DispatchPolicy::Cpu) {
            // No device to copy to: `Unsupported`, or `DeviceLost` once the device is lost.
            return match got {
                Err(Error::Unsupported(_)) => Ok(()),
                Err(Error::DeviceLost(_)) if self.p.faults.device_lost => Ok(()),
                other => Err(format!(
                    "seed {} step {}: to_device under the Cpu policy gave {other:?}",
                    self.p.seed, self.p.step
                )),
            };
        }
        let (cpu, tiny) = (self.p.vars[a].cpu.clone(), self.p.vars[a].tiny);
        self.p.settle(
            "to_device",
            got.map(|t| vec![t]),
            cpu.map(|t| vec![t]),
            false,
            tiny,
        )
    }
}
