//! Rotary position embedding (HF / GPT-NeoX "rotate half" pairing) on resident `F32` tensors
//! `[S, H, D]`. The frequency table comes from `bitnet_cpu_ref::ops::rope_freqs` (f64, rounded once),
//! so the angle `f32(pos) · freq_i` is the same correctly rounded product on both backends; the
//! kernel reduces it modulo 2π (exactly enough for any position: integer arithmetic above 2^19)
//! and evaluates sin / cos by polynomials (the CPU reference uses f64).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bitnet_cpu_ref::ops as cpu;
use bitnet_kernels_wgsl::tensor as kernels;

use super::float_args::{self, host_f32, row_chunks, store_f32};
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::launch::Launch;
use crate::pipelines::{Access, Kernel};
use crate::status::NonFiniteCheck;
use crate::tensor::{DType, Storage, Tensor};

const ROPE: Kernel = Kernel::new(
    kernels::ROPE,
    "main",
    &[Access::Read, Access::Read, Access::Read, Access::ReadWrite],
);
const ROPE_PAIR: Kernel = Kernel::new(
    kernels::ROPE_PAIR,
    "main",
    &[
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
    ],
);
/// Invocations per workgroup (one per rotated pair).
const WG: u64 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    pairs: u32,
    half_dim: u32,
    heads: u32,
    s_base: u32,
    pos_shift: u32,
    pad: [u32; 3],
}

/// `rope_pair.wgsl`'s params.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PairParams {
    pairs_q: u32,
    pairs_k: u32,
    half_dim: u32,
    heads_q: u32,
    heads_k: u32,
    pad: [u32; 3],
}

impl Engine {
    /// RoPE on an `F32` tensor `x` of shape `[S, H, D]` (`D` even) with one position per sequence
    /// index (`positions`: a `U32` tensor of `S` elements): for `i < D/2`,
    /// `angle = f32(positions[s]) · theta^(-2i/D)`, and the pair `(x[i], x[i + D/2])` becomes
    /// `(x[i]·cos − x[i+D/2]·sin, x[i+D/2]·cos + x[i]·sin)`. Same as `bitnet_cpu_ref::ops::rope`.
    /// Errors (as cpu-ref reports them): rank not 3, `positions` length not `S`, `D` odd,
    /// `theta` non-finite or `<= 0`, non-finite `x`.
    pub fn rope(&self, x: &Tensor, positions: &Tensor, theta: f32) -> Result<Tensor> {
        const OP: &str = "rope";
        float_args::operand(self, OP, x, DType::F32)?;
        float_args::operand(self, OP, positions, DType::U32)?;
        let dims = rope_dims(OP, "x", x, positions, theta)?;
        let on_host = || -> Result<Tensor> {
            store_f32(
                self,
                cpu::rope(host_f32(x)?.view()?, &positions.read_u32()?, theta)?,
            )
        };
        self.tensor_op(
            &[x, positions],
            0,
            |gpu| {
                let check = NonFiniteCheck::tensors(OP, ["x", "output", "", ""]);
                self.rope_launches(gpu, x, positions, theta, dims, check)
            },
            on_host,
        )
    }

    /// RoPE on a step's queries `q` `[S, Hq, D]` and keys `k` `[S, Hk, D']` at the same
    /// `positions`, as [`Engine::rope`] on each — one GPU dispatch for both where they fit a
    /// binding whole and share `D` (a decode step's two RoPE dispatches per layer become one),
    /// else one call's launches after the other. Same as `bitnet_cpu_ref::ops::rope_pair`, whose
    /// errors it reports (op `"rope_pair"`, tensors `"q"`, `"q output"`, `"k"`, `"k output"`),
    /// except that shape and argument errors of either tensor come before non-finite values.
    /// Fused, both outputs fail together (one launch).
    pub fn rope_pair(
        &self,
        q: &Tensor,
        k: &Tensor,
        positions: &Tensor,
        theta: f32,
    ) -> Result<(Tensor, Tensor)> {
        const OP: &str = "rope_pair";
        let (dq, dk) = self.rope_pair_dims(q, k, positions, theta)?;
        let on_host = || -> Result<(Tensor, Tensor)> {
            let (yq, yk) = cpu::rope_pair(
                host_f32(q)?.view()?,
                host_f32(k)?.view()?,
                &positions.read_u32()?,
                theta,
            )?;
            Ok((store_f32(self, yq)?, store_f32(self, yk)?))
        };
        self.tensor_op(
            &[q, k, positions],
            0,
            |gpu| {
                let whole = |d: RopeDims| 4 * d.s * d.h * 2 * d.half <= gpu.caps.max_binding;
                if dq.half != dk.half || !whole(dq) || !whole(dk) || 4 * dq.s > gpu.caps.max_binding
                {
                    let names = |x, out| NonFiniteCheck::tensors(OP, [x, out, "", ""]);
                    return Ok((
                        self.rope_launches(gpu, q, positions, theta, dq, names("q", "q output"))?,
                        self.rope_launches(gpu, k, positions, theta, dk, names("k", "k output"))?,
                    ));
                }
                let (pairs_q, pairs_k) = (dq.s * dq.h * dq.half, dk.s * dk.h * dk.half);
                float_args::u32_indexable(OP, "q", 2 * pairs_q)?;
                float_args::u32_indexable(OP, "k", 2 * pairs_k)?;
                float_args::u32_indexable(OP, "q and k", pairs_q + pairs_k)?;
                let freqs = self.rope_table(gpu, (2 * dq.half) as usize, theta)?;
                let yq = self.empty(gpu, OP, q.shape(), DType::F32)?;
                let yk = self.empty(gpu, OP, k.shape(), DType::F32)?;
                Launch::new(gpu, &ROPE_PAIR)
                    .input(q)
                    .input(k)
                    .input(positions)
                    .input(&freqs)
                    .output(&yq)
                    .output(&yk)
                    .params(&PairParams {
                        pairs_q: pairs_q as u32,
                        pairs_k: pairs_k as u32,
                        half_dim: dq.half as u32,
                        heads_q: dq.h as u32,
                        heads_k: dk.h as u32,
                        pad: [0; 3],
                    })
                    .check_finite(NonFiniteCheck::tensors(
                        OP,
                        ["q", "q output", "k", "k output"],
                    ))
                    .workgroups((pairs_q + pairs_k).div_ceil(WG))
                    .run()?;
                Ok((yq, yk))
            },
            on_host,
        )
    }

    /// [`Engine::rope_pair`]'s operand, shape and argument checks (its errors, in its order):
    /// the dimensions of `q` and `k`.
    pub(crate) fn rope_pair_dims(
        &self,
        q: &Tensor,
        k: &Tensor,
        positions: &Tensor,
        theta: f32,
    ) -> Result<(RopeDims, RopeDims)> {
        const OP: &str = "rope_pair";
        float_args::operand(self, OP, q, DType::F32)?;
        float_args::operand(self, OP, k, DType::F32)?;
        float_args::operand(self, OP, positions, DType::U32)?;
        Ok((
            rope_dims(OP, "q", q, positions, theta)?,
            rope_dims(OP, "k", k, positions, theta)?,
        ))
    }

    /// `rope.wgsl`'s launches for `x` (chunked over the binding limit), flagging under `check`.
    fn rope_launches(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        positions: &Tensor,
        theta: f32,
        RopeDims { s, h, half }: RopeDims,
        check: NonFiniteCheck,
    ) -> Result<Tensor> {
        float_args::u32_indexable(check.op, check.tensors[0], s * h * 2 * half)?;
        // The table is tiny (D/2 values) and goes through the pool like any upload.
        let freqs = self.rope_table(gpu, (2 * half) as usize, theta)?;
        let out = self.empty(gpu, check.op, x.shape(), DType::F32)?;
        let row_bytes = 4 * h * 2 * half;
        // x and the output have the same rows: both are bound whole, or both chunk by chunk; the
        // positions (one word per row) likewise, bound whole when they fit.
        let split = row_chunks(gpu, check.op, s, &[row_bytes, 4], u64::MAX)?;
        let group = gpu.next_seq();
        for r in &split.chunks {
            let (off, size, _) = split.binding(0, r);
            let (p_off, p_size, p_row) = split.binding(1, r);
            let pairs = (r.end - r.start) * h * half;
            Launch::new(gpu, &ROPE)
                .input_range(x, off, size)
                .input_range(positions, p_off, p_size)
                .input(&freqs)
                .output_range(&out, off, size)
                .params(&Params {
                    pairs: pairs as u32,
                    half_dim: half as u32,
                    heads: h as u32,
                    s_base: r.start as u32,
                    pos_shift: p_row as u32,
                    pad: [0; 3],
                })
                .chunk_of(group)
                .check_finite(check)
                .workgroups(pairs.div_ceil(WG))
                .run()?;
        }
        Ok(out)
    }
}

/// A RoPE operand's `[S, H, D]` as `(S, H, D / 2)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RopeDims {
    /// Positions S, heads H, and D / 2.
    pub s: u64,
    pub h: u64,
    pub half: u64,
}

/// cpu-ref's shape and argument checks of one RoPE operand `x` (named `name`): rank 3, `D` and
/// `theta` ([`check_args`]), `positions` of `S` elements.
fn rope_dims(
    op: &'static str,
    name: &'static str,
    x: &Tensor,
    positions: &Tensor,
    theta: f32,
) -> Result<RopeDims> {
    let &[s, h, d] = x.shape() else {
        return Err(Error::from(bitnet_cpu_ref::Error::RankMismatch {
            op,
            tensor: name,
            expected: 3,
            got: x.shape().to_vec(),
        }));
    };
    check_args(op, d, theta)?;
    if positions.len() != s {
        return Err(Error::from(bitnet_cpu_ref::Error::LengthMismatch {
            op,
            what: "positions (S)",
            expected: s,
            got: positions.len(),
        }));
    }
    Ok(RopeDims {
        s: s as u64,
        h: h as u64,
        half: (d / 2) as u64,
    })
}

/// RoPE's frequency tables on the device by (head dim, theta bits): each uploaded once. An upload
/// is a sync point (it submits what was recorded, and waits for the submission thread), so a
/// table uploaded per call made every `rope` a round trip: two per layer of a decode step.
#[derive(Debug, Default)]
pub(crate) struct RopeTables(Mutex<HashMap<(usize, u32), Arc<Storage>>>);

impl RopeTables {
    /// Forgets every table (`Engine::trim_pool`); tensors holding one keep it alive.
    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Tables kept at most (distinct head dims and thetas; a model uses one or two).
const MAX_TABLES: usize = 64;

impl Engine {
    /// The `[d / 2]` table of `rope_freqs(d, theta)` on `gpu`, uploaded on first use. Shared
    /// storage that is never written, so every call may bind it.
    pub(super) fn rope_table(&self, gpu: &Gpu, d: usize, theta: f32) -> Result<Tensor> {
        let key = (d, theta.to_bits());
        let mut tables = gpu.rope_tables.0.lock().unwrap_or_else(|e| e.into_inner());
        let data = match tables.get(&key) {
            Some(data) => Arc::clone(data),
            None => {
                // On `gpu` even if the policy was set to Cpu meanwhile (the caller binds it
                // there); a device lost meanwhile fails the upload.
                let freqs = cpu::rope_freqs(d, theta)?;
                let t = self.upload_on(gpu, "rope_freqs", &freqs, &[d / 2], DType::F32)?;
                if tables.len() >= MAX_TABLES {
                    tables.clear();
                }
                // A fresh upload is its storage's only holder; were it not, it goes uncached.
                let data = match t.into_shared_storage() {
                    Ok(data) => data,
                    Err(t) => return Ok(t),
                };
                tables.insert(key, Arc::clone(&data));
                data
            }
        };
        Ok(Tensor::from_shared(
            self.clone(),
            &[d / 2],
            DType::F32,
            data,
        ))
    }
}

/// cpu-ref's argument checks of `rope`: `D` even (and nonzero), `theta` finite and positive.
fn check_args(op: &'static str, d: usize, theta: f32) -> Result<()> {
    let invalid =
        |what, reason| Error::from(bitnet_cpu_ref::Error::InvalidArgument { op, what, reason });
    if d == 0 {
        return Err(Error::from(bitnet_cpu_ref::Error::ZeroDimension {
            op,
            dim: "D",
        }));
    }
    if !d.is_multiple_of(2) {
        return Err(invalid("D", "the head dimension must be even"));
    }
    if !theta.is_finite() {
        return Err(Error::NonFinite {
            op,
            tensor: "theta",
            index: 0,
        });
    }
    if theta <= 0.0 {
        return Err(invalid("theta", "must be > 0"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table is uploaded once per (D, theta) and shared by later calls: an upload per call
    /// was a sync point in every `rope` of a decode step.
    #[test]
    fn frequency_tables_are_uploaded_once() {
        let e = crate::test_gpu::gpu();
        let g = e.gpu_context().expect("a GPU engine");
        let a = e.rope_table(g, 8, 10_000.0).unwrap();
        let b = e.rope_table(g, 8, 10_000.0).unwrap();
        assert!(std::ptr::eq(a.data(), b.data()));
        let c = e.rope_table(g, 8, 500_000.0).unwrap();
        assert!(!std::ptr::eq(a.data(), c.data()));
        assert_eq!(
            c.read_f32().unwrap(),
            cpu::rope_freqs(8, 500_000.0).unwrap()
        );
        let x = e.upload_f32(&[1.0; 16], &[1, 2, 8]).unwrap();
        let p = e.upload_u32(&[3], &[1]).unwrap();
        let want = cpu::rope(host_f32(&x).unwrap().view().unwrap(), &[3], 10_000.0).unwrap();
        for _ in 0..2 {
            let y = e.rope(&x, &p, 10_000.0).unwrap().read_f32().unwrap();
            assert_eq!(y.len(), want.data().len());
        }
        assert_eq!(g.rope_tables.0.lock().unwrap().len(), 2);
    }
}
