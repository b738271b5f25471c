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
    output(
        OP,
        gemm(OP, (a.data(), b.data()), (m, k, n), Layout::KN)?,
        vec![m, n],
    )
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
    output(
        OP,
        gemm(OP, (a.data(), b.data()), (m, k, n), Layout::NK)?,
        vec![m, n],
    )
}

/// [`matmul`] on f16 tensors: inputs widened to f32 (exact), f32 accumulation as in `matmul`,
/// each output rounded once to f16 (nearest, ties to even). An output beyond the f16 range
/// (`|c| > 65504` after rounding) is a non-finite output error.
pub fn matmul_f16(a: &Tensor<f16>, b: &Tensor<f16>) -> Result<Tensor<f16>> {
    const OP: &str = "matmul_f16";
    let (m, k, n) = dims(OP, a.shape(), b.shape(), false)?;
    let (af, bf) = (widen(OP, "a", a)?, widen(OP, "b", b)?);
    narrow(OP, gemm(OP, (&af, &bf), (m, k, n), Layout::KN)?, vec![m, n])
}

/// [`matmul_bt`] on f16 tensors, with [`matmul_f16`]'s conventions.
pub fn matmul_bt_f16(a: &Tensor<f16>, b: &Tensor<f16>) -> Result<Tensor<f16>> {
    const OP: &str = "matmul_bt_f16";
    let (m, k, n) = dims(OP, a.shape(), b.shape(), true)?;
    let (af, bf) = (widen(OP, "a", a)?, widen(OP, "b", b)?);
    narrow(OP, gemm(OP, (&af, &bf), (m, k, n), Layout::NK)?, vec![m, n])
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

/// How `B` is stored.
#[derive(Clone, Copy)]
enum Layout {
    /// Row-major `[K, N]` (`matmul`).
    KN,
    /// Row-major `[N, K]`, used transposed (`matmul_bt`).
    NK,
}

/// Rows of one task of [`gemm`]: enough that a `[N, K]` block's transposed chunk serves many
/// rows, few enough that `[64, 2560] · [2560, 2560]` still makes 20 tasks.
const ROW_BLOCK: usize = 16;

impl Layout {
    /// Columns of one task of [`gemm`]. `[K, N]`: 512, wide enough that a single row (decode)
    /// runs long vectorized axpys, few enough that a 2560-column output still feeds 5 cores
    /// per row. `[N, K]`: 64, since each k chunk of the block's columns is transposed into a
    /// buffer first (`[1, 2560] · [32000, 2560]ᵀ` on 2 cores: 55-75 ms with 64, 115 with 256).
    fn col_block(self) -> usize {
        match self {
            Layout::KN => 512,
            Layout::NK => 64,
        }
    }
}

/// The shared kernel: `C = A · B`, `C` allocated fallibly (a small `[M, 1] · [1, N]` can ask
/// for more than the host has). Parallel over blocks of [`ROW_BLOCK`] rows and, within them, of
/// [`Layout::col_block`] columns ([`gemm_block`]), each writing its own part of `C`. `B` is never copied whole: a transposed copy for `matmul_bt` cost
/// more than the product (450 of 475 ms for `[1, 2560] · [32000, 2560]ᵀ`, 16 cores).
fn gemm(
    op: &'static str,
    (a, b): (&[f32], &[f32]),
    (m, k, n): (usize, usize, usize),
    layout: Layout,
) -> Result<Vec<f32>> {
    let isa = Isa::best();
    let mut c = alloc::zeroed::<f32>(op, "output", m * n)?;
    if n == 0 || k == 0 {
        return Ok(c); // no output, or sums of nothing: zeros
    }
    let col_block = layout.col_block();
    c.par_chunks_mut(ROW_BLOCK * n)
        .enumerate()
        .for_each(|(row_block, c_rows)| {
            let a_rows = &a[row_block * ROW_BLOCK * k..][..c_rows.len() / n * k];
            // Each column block's part of every row of this block.
            let mut blocks: Vec<Vec<&mut [f32]>> = Vec::new();
            blocks.resize_with(n.div_ceil(col_block), Vec::new);
            for c_row in c_rows.chunks_mut(n) {
                for (parts, part) in blocks.iter_mut().zip(c_row.chunks_mut(col_block)) {
                    parts.push(part);
                }
            }
            blocks.into_par_iter().enumerate().for_each(|(j, mut out)| {
                let cols = j * col_block..((j + 1) * col_block).min(n);
                gemm_block(a_rows, b, (k, n), cols, layout, &mut out, isa);
            });
        });
    Ok(c)
}

/// One block of [`gemm`]: `a_rows` (`[rows, k]`) times columns `cols` of `B`, into `out` (one
/// zeroed part of `C` per row).
/// Per k chunk and row: a zeroed partial, `p += a[i, k] * b[k, cols]` for the chunk's `k`
/// ascending (a vectorized axpy per `k`), then the partial added into the row's outputs. `B`
/// stored `[N, K]` has each chunk of the block's columns copied k-major into a small buffer
/// first, which every row reuses; stored `[K, N]` its rows are read in place.
fn gemm_block(
    a_rows: &[f32],
    b: &[f32],
    (k, n): (usize, usize),
    cols: std::ops::Range<usize>,
    layout: Layout,
    out: &mut [&mut [f32]],
    isa: Isa,
) {
    let width = cols.len();
    let mut chunk = match layout {
        Layout::KN => Vec::new(),
        Layout::NK => vec![0.0f32; MATMUL_CHUNK * width], // [kk][j]
    };
    let mut partial = vec![0.0f32; width];
    for k0 in (0..k).step_by(MATMUL_CHUNK) {
        let len = MATMUL_CHUNK.min(k - k0);
        if let Layout::NK = layout {
            for (j, col) in b[cols.start * k..cols.end * k].chunks(k).enumerate() {
                for (kk, &v) in col[k0..k0 + len].iter().enumerate() {
                    chunk[kk * width + j] = v;
                }
            }
        }
        // B's values for columns `cols` at k0 + kk.
        let b_row = |kk: usize| match layout {
            Layout::KN => &b[(k0 + kk) * n + cols.start..(k0 + kk) * n + cols.end],
            Layout::NK => &chunk[kk * width..(kk + 1) * width],
        };
        for (a_row, out_row) in a_rows.chunks(k).zip(out.iter_mut()) {
            partial.fill(0.0);
            for (kk, &av) in a_row[k0..k0 + len].iter().enumerate() {
                axpy(&mut partial, av, b_row(kk), isa);
            }
            add_into(out_row, &partial, isa);
        }
    }
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
