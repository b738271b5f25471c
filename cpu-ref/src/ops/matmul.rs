//! Dense matmul in f32 and f16 (f16 storage, f32 accumulation).

use half::f16;
use rayon::prelude::*;

use super::{input, output};
use crate::alloc;
use crate::check;
use crate::error::{Error, Result};
use crate::kernels::Isa;
use crate::kernels::multiversion::multiversion;
use crate::tensor::{Tensor, TensorRef};

/// Output columns per rayon task, so a single-row product (decode) still uses every core.
const COLS_PER_TASK: usize = 512;

/// The k chunk of the matmul's summation order ([`matmul`]): each output sums its products in
/// chunks of this many k, then the chunks' sums in order. The GPU kernels
/// (`matmul_common.wgsl`'s `MM_CHUNK`) use the same value, so they give the same bits; it lets
/// them split one output's k walk over many invocations, which a single in-order walk of all of
/// k did not allow (a decode step's logits ran at half the copy bandwidth with it).
pub const MATMUL_CHUNK: usize = 64;

/// `C[M, N] = A[M, K] · B[K, N]` in f32. Each `C[i, j]` is summed in chunks of
/// [`MATMUL_CHUNK`] k: every chunk's sum starts at `0.0` and adds `a[i, k] * b[k, j]` for its `k`
/// ascending (product rounded, then the sum; no FMA), and `C[i, j]` starts at `0.0` and adds the
/// chunks' sums in order. For `K <= MATMUL_CHUNK` that is the plain in-order sum.
///
/// Errors: either operand not rank 2, inner dimensions differ, non-finite inputs or outputs, an
/// output the host cannot allocate ([`Error::OutOfMemory`]).
pub fn matmul<'a>(
    a: impl Into<TensorRef<'a, f32>>,
    b: impl Into<TensorRef<'a, f32>>,
) -> Result<Tensor<f32>> {
    matmul_ref(a.into(), b.into())
}

/// [`matmul`] on borrowed operands: its body, compiled in this crate (not per caller).
fn matmul_ref(a: TensorRef<'_, f32>, b: TensorRef<'_, f32>) -> Result<Tensor<f32>> {
    const OP: &str = "matmul";
    let (m, k, n) = dims(OP, a.shape(), b.shape(), false)?;
    input(OP, "a", a)?;
    input(OP, "b", b)?;
    output(OP, gemm(OP, a.data(), b.data(), m, k, n)?, vec![m, n])
}

/// `C[M, N] = A[M, K] · B[N, K]^T` in f32 (both operands K-contiguous, as for `x · W^T` or
/// `Q · K^T`), with exactly [`matmul`]'s accumulation order.
///
/// Errors: either operand not rank 2, `K` differs, non-finite inputs or outputs, an output the
/// host cannot allocate ([`Error::OutOfMemory`]).
pub fn matmul_bt<'a>(
    a: impl Into<TensorRef<'a, f32>>,
    b: impl Into<TensorRef<'a, f32>>,
) -> Result<Tensor<f32>> {
    matmul_bt_ref(a.into(), b.into())
}

/// [`matmul_bt`] on borrowed operands: its body, compiled in this crate (not per caller).
fn matmul_bt_ref(a: TensorRef<'_, f32>, b: TensorRef<'_, f32>) -> Result<Tensor<f32>> {
    const OP: &str = "matmul_bt";
    let (m, k, n) = dims(OP, a.shape(), b.shape(), true)?;
    input(OP, "a", a)?;
    input(OP, "b", b)?;
    let bt = transpose(b.data(), n, k);
    output(OP, gemm(OP, a.data(), &bt, m, k, n)?, vec![m, n])
}

/// [`matmul`] on f16 tensors: inputs widened to f32 (exact), f32 accumulation as in `matmul`,
/// each output rounded once to f16 (nearest, ties to even). An output beyond the f16 range
/// (`|c| > 65504` after rounding) is a non-finite output error.
pub fn matmul_f16(a: &Tensor<f16>, b: &Tensor<f16>) -> Result<Tensor<f16>> {
    const OP: &str = "matmul_f16";
    let (m, k, n) = dims(OP, a.shape(), b.shape(), false)?;
    let (af, bf) = (widen(OP, "a", a)?, widen(OP, "b", b)?);
    narrow(OP, gemm(OP, &af, &bf, m, k, n)?, vec![m, n])
}

/// [`matmul_bt`] on f16 tensors, with [`matmul_f16`]'s conventions.
pub fn matmul_bt_f16(a: &Tensor<f16>, b: &Tensor<f16>) -> Result<Tensor<f16>> {
    const OP: &str = "matmul_bt_f16";
    let (m, k, n) = dims(OP, a.shape(), b.shape(), true)?;
    let (af, bf) = (widen(OP, "a", a)?, widen(OP, "b", b)?);
    narrow(
        OP,
        gemm(OP, &af, &transpose(&bf, n, k), m, k, n)?,
        vec![m, n],
    )
}

/// `(M, K, N)` of a product, checking ranks and the shared `K` (`b` is `[N, K]` if `bt`).
fn dims(op: &'static str, a: &[usize], b: &[usize], bt: bool) -> Result<(usize, usize, usize)> {
    let (&[m, k], &[b0, b1]) = (a, b) else {
        let (tensor, got) = if a.len() != 2 { ("a", a) } else { ("b", b) };
        return Err(Error::RankMismatch {
            op,
            tensor,
            expected: 2,
            got: got.to_vec(),
        });
    };
    let (bk, n) = if bt { (b1, b0) } else { (b0, b1) };
    if bk != k {
        // The shape b needs — a's K with b's own N — against b's shape.
        return Err(Error::ShapeMismatch {
            op,
            what: if bt {
                "a is [M, K], b must be [N, K]"
            } else {
                "a is [M, K], b must be [K, N]"
            },
            expected: if bt { vec![n, k] } else { vec![k, n] },
            got: b.to_vec(),
        });
    }
    check::mul(op, "M * N", m, n)?;
    Ok((m, k, n))
}

/// Row-major `[rows, cols]` → `[cols, rows]`.
fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut dst = alloc::zeros::<f32>(src.len());
    dst.par_chunks_mut(rows).enumerate().for_each(|(c, col)| {
        for (r, v) in col.iter_mut().enumerate() {
            *v = src[r * cols + c];
        }
    });
    dst
}

/// f16 → f32 (exact), rejecting non-finite elements.
fn widen(op: &'static str, name: &'static str, t: &Tensor<f16>) -> Result<Vec<f32>> {
    if let Some(index) = t.data().iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            op,
            tensor: name,
            index,
        });
    }
    Ok(t.data().iter().map(|v| v.to_f32()).collect())
}

/// f32 → f16 (round to nearest even), rejecting results beyond the f16 range.
fn narrow(op: &'static str, c: Vec<f32>, shape: Vec<usize>) -> Result<Tensor<f16>> {
    let out: Vec<f16> = c.iter().map(|&v| f16::from_f32(v)).collect();
    if let Some(index) = out.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            op,
            tensor: "output",
            index,
        });
    }
    Ok(Tensor::from_valid(out, shape))
}

/// The shared kernel: `C = A · B`, `B` row-major `[K, N]`; parallel over output rows and blocks
/// of `COLS_PER_TASK` columns. Each block sums every chunk of [`MATMUL_CHUNK`] k into a zeroed
/// partial, `p += a[i, k] * b[k, cols]` for `k` ascending (a vectorized axpy per `k`), then adds
/// the partial into its outputs. `C` is allocated fallibly: a small `[M, 1] · [1, N]` can ask
/// for more than the host has.
fn gemm(op: &'static str, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Result<Vec<f32>> {
    let isa = Isa::best();
    let mut c = alloc::zeroed::<f32>(op, "output", m * n)?;
    c.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        let a_row = &a[i * k..(i + 1) * k];
        row.par_chunks_mut(COLS_PER_TASK)
            .enumerate()
            .for_each(|(blk, out)| {
                let j0 = blk * COLS_PER_TASK;
                let mut partial = [0.0f32; COLS_PER_TASK];
                let partial = &mut partial[..out.len()];
                for (chunk, a_chunk) in a_row.chunks(MATMUL_CHUNK).enumerate() {
                    partial.fill(0.0);
                    for (kk, &av) in a_chunk.iter().enumerate() {
                        let row = (chunk * MATMUL_CHUNK + kk) * n + j0;
                        axpy(partial, av, &b[row..row + out.len()], isa);
                    }
                    add_into(out, partial, isa);
                }
            });
    });
    Ok(c)
}

multiversion! {
    /// `y[j] += a * x[j]` (product rounded, then the sum).
    fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y += a * x;
        }
    }
}

multiversion! {
    /// `y[j] += x[j]`.
    fn add_into(y: &mut [f32], x: &[f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y += x;
        }
    }
}
