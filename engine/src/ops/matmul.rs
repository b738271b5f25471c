//! Dense matmul on resident tensors: `matmul` / `matmul_bt` in f32, and their f16 forms (f16 in
//! and out, f32 accumulation; need `SHADER_F16` on the GPU). Same results and errors as
//! `bitnet_cpu_ref::ops::{matmul, matmul_bt, matmul_f16, matmul_bt_f16}`: the GPU accumulates
//! in the same order (k in chunks of `MATMUL_CHUNK`, each chunk k ascending, then the chunks in
//! order), each product rounded before its sum (pinned, so no driver can contract it into a fused
//! multiply-add), so f32 results are the same bits; an f16 result may differ by one f16 ulp,
//! since WGSL lets the final f32 → f16 conversion round either way.
//!
//! The tile (outputs per workgroup) follows the output's size and B's layout ([`tile_for`]):
//! 64 × 64 for large outputs, 16 × 64 where 64 × 64 tiles would leave the GPU idle, and for few
//! rows 4 × 16, whose invocations share each output's k chunks (`matmul_gemv_direct.wgsl` for B
//! stored `[K,N]`, `matmul_gemv_staged.wgsl` for `[N,K]`), or 4 × 256 for `matmul_bt` against
//! very many columns (a decode step's logits against a large vocabulary's embedding).
//! Every tile sums in the same order, so the same bits; the measurements behind the choice are
//! in `docs/perf/float-matmul.md`.

use bitnet_cpu_ref::ops as cpu;

use super::float_args::{self, host_f16, host_f32, row_chunks, store_f16, store_f32};
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::launch::{Launch, check_binding};
use crate::status::NonFiniteCheck;
use crate::tensor::{DType, Tensor};

#[path = "matmul_tiles.rs"]
mod tiles;
#[cfg(test)]
use tiles::TILES;
pub(crate) use tiles::{Tile, tile_for};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    b_trans: u32,
    row_base: u32,
    a_shift: u32,
    c_shift: u32,
    /// Always 0: the kernel's runtime zero, which pins each product against fma contraction.
    zero: u32,
}

/// Which of the four products.
#[derive(Clone, Copy)]
pub(crate) struct Variant {
    pub op: &'static str,
    pub dtype: DType,
    /// `b` is stored `[N, K]` and used transposed.
    pub bt: bool,
}

impl Engine {
    /// `C[M, N] = A[M, K] · B[K, N]` for `F32` tensors; same as `bitnet_cpu_ref::ops::matmul`.
    /// Errors: operands not rank 2 or inner dimensions differ (as cpu-ref reports them), wrong
    /// dtype, non-finite inputs or outputs (`Error::NonFinite`; on the GPU by reading or checking
    /// the output, or a tensor computed from it).
    pub fn matmul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.matmul_variant(
            Variant {
                op: "matmul",
                dtype: DType::F32,
                bt: false,
            },
            a,
            b,
        )
    }

    /// `C[M, N] = A[M, K] · B[N, K]ᵀ` for `F32` tensors (`x · Wᵀ`, `Q · Kᵀ`); same as
    /// `bitnet_cpu_ref::ops::matmul_bt`, errors as [`Engine::matmul`].
    pub fn matmul_bt(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.matmul_variant(
            Variant {
                op: "matmul_bt",
                dtype: DType::F32,
                bt: true,
            },
            a,
            b,
        )
    }

    /// [`Engine::matmul`] on `F16` tensors: f32 accumulation, each output rounded once to f16; an
    /// output beyond the f16 range is a non-finite output error. Needs `SHADER_F16` on the GPU
    /// (`Error::Unsupported` naming it otherwise). Same as `bitnet_cpu_ref::ops::matmul_f16`.
    pub fn matmul_f16(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.matmul_variant(
            Variant {
                op: "matmul_f16",
                dtype: DType::F16,
                bt: false,
            },
            a,
            b,
        )
    }

    /// [`Engine::matmul_bt`] on `F16` tensors, with [`Engine::matmul_f16`]'s conventions. Same as
    /// `bitnet_cpu_ref::ops::matmul_bt_f16`.
    pub fn matmul_bt_f16(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.matmul_variant(
            Variant {
                op: "matmul_bt_f16",
                dtype: DType::F16,
                bt: true,
            },
            a,
            b,
        )
    }

    fn matmul_variant(&self, v: Variant, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        float_args::operand(self, v.op, a, v.dtype)?;
        float_args::operand(self, v.op, b, v.dtype)?;
        let (m, k, n) = dims(v, a.shape(), b.shape())?;
        // Without a GPU the tile only sizes the loop estimate, which no CPU adapter asks for.
        let storage = self.gpu_context().map_or(u32::MAX, |g| {
            g.caps.limits.max_compute_workgroup_storage_size
        });
        let tile = tile_for(m as u64, n as u64, v.bt, storage);
        let on_host = || -> Result<Tensor> {
            match (v.dtype, v.bt) {
                (DType::F32, false) => store_f32(
                    self,
                    cpu::matmul(host_f32(a)?.view()?, host_f32(b)?.view()?)?,
                ),
                (DType::F32, true) => store_f32(
                    self,
                    cpu::matmul_bt(host_f32(a)?.view()?, host_f32(b)?.view()?)?,
                ),
                (_, false) => store_f16(self, cpu::matmul_f16(&host_f16(a)?, &host_f16(b)?)?),
                (_, true) => store_f16(self, cpu::matmul_bt_f16(&host_f16(a)?, &host_f16(b)?)?),
            }
        };
        self.tensor_op(
            &[a, b],
            tile.loops(k as u64),
            |gpu| {
                let (m, k, n) = (m as u64, k as u64, n as u64);
                self.matmul_tiled(gpu, v, a, b, (m, k, n), tile)
            },
            on_host,
        )
    }

    /// [`Engine::matmul_variant`] on the GPU with `tile`.
    pub(crate) fn matmul_tiled(
        &self,
        gpu: &Gpu,
        v: Variant,
        a: &Tensor,
        b: &Tensor,
        (m, k, n): (u64, u64, u64),
        tile: &Tile,
    ) -> Result<Tensor> {
        let kernel = tile.kernel(v);
        if !gpu.caps.has(kernel.requires) {
            return Err(Error::Unsupported(format!(
                "{}: the GPU lacks wgpu::Features::SHADER_F16 (f16 shader arithmetic and storage)",
                v.op
            )));
        }
        // tile_for never picks such a tile there; a forced one (kernel-override) reports it.
        let storage = gpu.caps.limits.max_compute_workgroup_storage_size;
        if tile.workgroup_bytes > storage {
            return Err(Error::LimitExceeded {
                limit: "max_compute_workgroup_storage_size",
                requested: u64::from(tile.workgroup_bytes),
                max: u64::from(storage),
                what: format!("{}: the {} × {} tile's kernel", v.op, tile.rows, tile.cols),
            });
        }
        // Saturating: a and b exist, but an output of m × n can pass u64 (then past u32 too).
        for (what, count) in [("a", m * k), ("b", k * n), ("output", m.saturating_mul(n))] {
            float_args::u32_indexable(v.op, what, count)?;
        }
        let es = if v.dtype == DType::F32 { 4 } else { 2 };
        check_binding(
            gpu,
            &format!("{}: b", v.op),
            (k * n * es).next_multiple_of(4),
        )?;
        let out = self.empty(gpu, v.op, &[m as usize, n as usize], v.dtype)?;
        // Column tiles fold into grid x and z (the kernel's tile is wg.x + wg.z * nwg.x), so
        // N is not capped at max_compute_workgroups_per_dimension tiles.
        let max_dim = gpu.caps.limits.max_compute_workgroups_per_dimension;
        let col_tiles = crate::chunk::fold(n.div_ceil(tile.cols), max_dim)?;
        let max_rows = u64::from(gpu.caps.limits.max_compute_workgroups_per_dimension) * tile.rows;
        let split = row_chunks(gpu, v.op, m, &[k * es, n * es], max_rows)?;
        let group = gpu.next_seq();
        for r in &split.chunks {
            let (a_off, a_size, a_row) = split.binding(0, r);
            let (c_off, c_size, c_row) = split.binding(1, r);
            let rows = r.end - r.start;
            Launch::new(gpu, kernel)
                .input_range(a, a_off, a_size)
                .input(b)
                .output_range(&out, c_off, c_size)
                .params(&Params {
                    m: rows as u32,
                    n: n as u32,
                    k: k as u32,
                    b_trans: u32::from(v.bt),
                    row_base: r.start as u32,
                    a_shift: (r.start - a_row) as u32,
                    c_shift: (r.start - c_row) as u32,
                    zero: 0,
                })
                .chunk_of(group)
                .check_finite(NonFiniteCheck::tensors(v.op, ["a", "b", "output", ""]))
                .grid([col_tiles[0], rows.div_ceil(tile.rows) as u32, col_tiles[1]])
                .run()?;
        }
        Ok(out)
    }
}

/// `(M, K, N)`, with cpu-ref's shape errors (rank 2 each, shared `K`).
fn dims(v: Variant, a: &[usize], b: &[usize]) -> Result<(usize, usize, usize)> {
    let mismatch = |what, expected: Vec<usize>| {
        Error::from(bitnet_cpu_ref::Error::ShapeMismatch {
            op: v.op,
            what,
            expected,
            got: b.to_vec(),
        })
    };
    let (&[m, k], &[b0, b1]) = (a, b) else {
        let (tensor, got) = if a.len() != 2 { ("a", a) } else { ("b", b) };
        return Err(Error::from(bitnet_cpu_ref::Error::RankMismatch {
            op: v.op,
            tensor,
            expected: 2,
            got: got.to_vec(),
        }));
    };
    let (bk, n) = if v.bt { (b1, b0) } else { (b0, b1) };
    if bk != k {
        // As cpu-ref: the shape b needs (a's K, b's own N) against b's shape.
        return Err(if v.bt {
            mismatch("a is [M, K], b must be [N, K]", vec![n, k])
        } else {
            mismatch("a is [M, K], b must be [K, N]", vec![k, n])
        });
    }
    Ok((m, k, n))
}

#[cfg(test)]
#[path = "matmul_tests.rs"]
mod tests;
