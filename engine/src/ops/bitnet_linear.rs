//! BitLinear on resident tensors: `y[M, N] = x[M, K] · W[N, K]ᵀ` with int8 activations and
//! ternary weights, exact i32 accumulation and the multiplication-only epilogue of `layout.rs`
//! (bit-identical to [`bitnet_cpu_ref::bitlinear_quantized`]).
//!
//! Kernel choice: M ≤ [`kernels::GEMV_MAX_M`] runs the GEMV (subgroup reduction when the device has
//! `SUBGROUP`, whatever its subgroup size; workgroup-memory reduction otherwise), larger M the
//! tiled GEMM. Weights above the storage-binding limit are processed in chunks of rows (N), and
//! outputs / activations above it in chunks of M.

use bitnet_cpu_ref::layout::{activation_words_per_row, words_per_row};
use bitnet_kernels_wgsl::bitnet as kernels;

use super::bitnet::{check_k, matrix_shape, row_chunks, same_engine};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::launch::Launch;
use crate::pipelines::{Access, Kernel};
use crate::status::NonFiniteCheck;
use crate::tensor::{DType, Tensor};

use Access::{Read, ReadWrite};

/// weights, weight scale, activations, activation absmax, output.
const BINDINGS: &[Access] = &[Read, Read, Read, Read, ReadWrite];
const GEMV_SUBGROUP: Kernel = Kernel::new(kernels::BITLINEAR_GEMV_SUBGROUP, "main", BINDINGS)
    .requiring(wgpu::Features::SUBGROUP);
const GEMV_WORKGROUP: Kernel = Kernel::new(kernels::BITLINEAR_GEMV_WORKGROUP, "main", BINDINGS);
const GEMM: Kernel = Kernel::new(kernels::BITLINEAR_GEMM, "main", BINDINGS);

/// cpu-ref's name for an output that overflowed in the rescale.
const OUTPUT: &str = "output (rescale overflowed f32)";

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LinearParams {
    m: u32,
    n: u32,
    words_per_row: u32,
    out_stride: u32,
    out_base: u32,
    mode: u32,
    tiles_n: u32,
    m_base: u32,
    /// Always 0 (the kernels' runtime zero for their optimization barrier).
    zero: u32,
}

/// What a BitLinear launch writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// `y` as `F32`.
    Y,
    /// The exact accumulators as `U32` words holding `i32` bits.
    Acc,
}

impl Engine {
    /// BitLinear: `y = x · Wᵀ` for `x` `[M, K]` (`F32`, quantized per row first — fused into the
    /// same batch — or already `QuantizedI8`) and ternary `w` `[N, K]`; returns `F32` `[M, N]`,
    /// bit-identical to [`bitnet_cpu_ref::bitlinear`] / [`bitnet_cpu_ref::bitlinear_quantized`].
    /// Errors: dtypes, ranks, K mismatch, NaN/Inf in `x` or an overflowing output
    /// (`Error::NonFinite`, at the next sync point on the GPU).
    pub fn bitlinear_tensor(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        const OP: &str = "bitlinear";
        w.expect_dtype(OP, DType::Ternary)?;
        let xq = match x.dtype() {
            DType::F32 => {
                // Shape errors first, as cpu-ref reports them before quantizing.
                let shape = self.linear_shapes(OP, x, w)?;
                if let Some(y) = self.msl_bitlinear_fused(OP, x, w, shape)? {
                    return Ok(y);
                }
                self.quantize_activations_as(OP, x)?
            }
            DType::QuantizedI8 => x.clone(),
            got => {
                return Err(Error::DTypeMismatch {
                    op: OP,
                    expected: DType::QuantizedI8,
                    got,
                });
            }
        };
        self.bitlinear_run(OP, &xq, w, Output::Y)
    }

    /// The exact BitLinear accumulators `acc[m, n] = Σ_k xq[m, k] · wq[n, k]` for `QuantizedI8`
    /// `xq` `[M, K]` and ternary `w` `[N, K]`: a `U32` tensor `[M, N]` whose words are the `i32`
    /// bit patterns (same values as [`bitnet_cpu_ref::bitlinear_accumulate`]).
    pub fn bitlinear_accumulate_tensor(&self, xq: &Tensor, w: &Tensor) -> Result<Tensor> {
        const OP: &str = "bitlinear_accumulate";
        xq.expect_dtype(OP, DType::QuantizedI8)?;
        w.expect_dtype(OP, DType::Ternary)?;
        self.bitlinear_run(OP, xq, w, Output::Acc)
    }

    /// `(M, N, K)` after checking ranks, K agreement, `K < 2^24` and engine ownership.
    fn linear_shapes(
        &self,
        op: &'static str,
        x: &Tensor,
        w: &Tensor,
    ) -> Result<(usize, usize, usize)> {
        let (m, k) = matrix_shape(op, x)?;
        let (n, wk) = matrix_shape(op, w)?;
        if k != wk {
            return Err(Error::ShapeMismatch {
                op,
                detail: format!("activations [{m}, {k}] vs weights [{n}, {wk}]: K must agree"),
            });
        }
        check_k(op, k)?;
        same_engine(self, op, x)?;
        same_engine(self, op, w)?;
        Ok((m, n, k))
    }

    /// Records BitLinear of quantized `xq` and ternary `w` (or runs cpu-ref on the CPU engine).
    fn bitlinear_run(
        &self,
        op: &'static str,
        xq: &Tensor,
        w: &Tensor,
        mode: Output,
    ) -> Result<Tensor> {
        let (m, n, k) = self.linear_shapes(op, xq, w)?;
        let Some(gpu) = self.gpu_context() else {
            let (xq, w) = (xq.read_activations()?, w.read_ternary()?);
            return match mode {
                Output::Y => {
                    self.upload_f32(&bitnet_cpu_ref::bitlinear_quantized(&xq, &w)?, &[m, n])
                }
                Output::Acc => {
                    let acc = bitnet_cpu_ref::bitlinear_accumulate(&xq, &w)?;
                    self.upload_u32(bytemuck::cast_slice(&acc), &[m, n])
                }
            };
        };
        let acc = mode == Output::Acc;
        if let Some(out) = self.msl_bitlinear_quantized(gpu, op, xq, w, (m, n, k), acc)? {
            return Ok(out);
        }
        let dtype = if mode == Output::Y {
            DType::F32
        } else {
            DType::U32
        };
        let out = self.empty(op, &[m, n], dtype)?;
        let gemv = m as u64 <= u64::from(kernels::GEMV_MAX_M);
        let kernel = match (gemv, gpu.caps.has(wgpu::Features::SUBGROUP)) {
            (true, true) => &GEMV_SUBGROUP,
            (true, false) => &GEMV_WORKGROUP,
            (false, _) => &GEMM,
        };
        let wpr = words_per_row(k) as u64;
        let xpr = activation_words_per_row(k) as u64;
        let (m64, n64) = (m as u64, n as u64);
        let tile = u64::from(kernels::GEMM_TILE);
        for mr in row_chunks(gpu, op, m64, &[4 * xpr, 4 * n64])? {
            for nr in row_chunks(gpu, op, n64, &[4 * wpr])? {
                let (rows_m, rows_n) = (mr.end - mr.start, nr.end - nr.start);
                let tiles_n = rows_n.div_ceil(tile);
                let groups = if gemv {
                    rows_n.div_ceil(u64::from(kernels::GEMV_ROWS))
                } else {
                    tiles_n * rows_m.div_ceil(tile)
                };
                let params = LinearParams {
                    m: rows_m as u32,
                    n: rows_n as u32,
                    words_per_row: wpr as u32,
                    out_stride: n as u32,
                    out_base: nr.start as u32,
                    mode: u32::from(mode == Output::Acc),
                    tiles_n: tiles_n as u32,
                    m_base: mr.start as u32,
                    zero: 0,
                };
                let mut launch = Launch::new(gpu, kernel)
                    .input_range(w, 4 * wpr * nr.start, 4 * wpr * rows_n)
                    .input_scales(w)
                    .input_range(xq, 4 * xpr * mr.start, 4 * xpr * rows_m)
                    .input_scales(xq)
                    .output_range(&out, 4 * n64 * mr.start, 4 * n64 * rows_m)
                    .params(&params)
                    .workgroups(groups);
                if mode == Output::Y {
                    launch =
                        launch.check_finite(NonFiniteCheck::new(op, OUTPUT).at(mr.start * n64));
                }
                launch.run()?;
            }
        }
        Ok(out)
    }
}
