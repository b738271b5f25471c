//! Rotary position embedding (RoPE), HF / GPT-NeoX "rotate half" pairing.

use rayon::prelude::*;

use super::{input, scalar};
use crate::alloc;
use crate::check;
use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorRef};

/// The RoPE frequencies `freq_i = theta^(-2i / D)` for `i < D/2` (HF's `inv_freq`), each
/// computed in f64 and rounded once to f32 — the table GPU kernels receive from the host, so both
/// sides start from the same bits. Errors: `D` zero or odd, `theta` non-finite or `<= 0`, a table
/// whose bytes exceed `isize::MAX` (`SizeOverflow`) or that the host cannot hold (`OutOfMemory`).
pub fn rope_freqs(d: usize, theta: f32) -> Result<Vec<f32>> {
    const OP: &str = "rope_freqs";
    check_args(OP, d, theta)?;
    let theta = f64::from(theta);
    // `D` is a bare number, not the size of data the caller holds: allocate fallibly.
    let mut freqs = alloc::zeroed::<f32>(OP, "frequency table", d / 2)?;
    for (i, f) in freqs.iter_mut().enumerate() {
        *f = theta.powf(-((2 * i) as f64) / d as f64) as f32;
    }
    Ok(freqs)
}

/// RoPE on `x` of shape `[S, H, D]` (`D` even) with one position per sequence index `s`:
/// for `i < D/2`, `angle = (positions[s] as f32) · freq_i` (one f32 product, [`rope_freqs`]),
/// `c, sn = cos(angle), sin(angle)` (computed in f64, rounded to f32), and the pair
/// `(x[i], x[i + D/2])` becomes `(x[i]·c − x[i+D/2]·sn, x[i+D/2]·c + x[i]·sn)`.
///
/// Pairing: this is the "rotate half" (half-split) convention of HF transformers' Llama / BitNet
/// models and GPT-NeoX — `x · cos + rotate_half(x) · sin` with `rotate_half(x) = [-x_hi, x_lo]`
/// and each frequency used for both `i` and `i + D/2` — not the interleaved pairing
/// `(x[2i], x[2i+1])` of GPT-J, Meta's original Llama code and llama.cpp's default RoPE. Weights
/// exported for the interleaved convention (e.g. GGUF `q_proj` / `k_proj`) must have their rows
/// permuted back before use with this op. There is no RoPE scaling (linear, NTK, YaRN, Llama 3):
/// positions are used as given.
///
/// Precision: the angle is rounded to f32 exactly as HF's f32 `inv_freq @ position_ids` does, so
/// it is off `pos · freq_i` by up to half an f32 ulp of the angle (at most `|angle| · 2^-24` rad:
/// 0.004 rad near angle 1e5), and positions above 2^24 are first rounded to the nearest f32. The
/// cos and sin of that f32 angle are then accurate to f32 rounding for every angle.
///
/// Errors: rank not 3, `positions.len() != S`, `D` odd, bad `theta`, non-finite `x`.
pub fn rope<'a>(
    x: impl Into<TensorRef<'a, f32>>,
    positions: &[u32],
    theta: f32,
) -> Result<Tensor<f32>> {
    rope_as(RopeNames::ROPE, x.into(), positions, theta)
}

/// RoPE on queries `q` `[S, Hq, D]` and keys `k` `[S, Hk, D']` at the same positions: exactly
/// [`rope`] on each (the GPU engine's one dispatch for both), with errors named for the pair —
/// op `"rope_pair"`, tensors `"q"` / `"q output"` / `"k"` / `"k output"` (and `"q"` / `"k"` in
/// rank errors) — all of q's checks before k's, as the two calls in that order.
pub fn rope_pair<'a>(
    q: impl Into<TensorRef<'a, f32>>,
    k: impl Into<TensorRef<'a, f32>>,
    positions: &[u32],
    theta: f32,
) -> Result<(Tensor<f32>, Tensor<f32>)> {
    rope_pair_ref(q.into(), k.into(), positions, theta)
}

/// [`rope_pair`] on borrowed operands: its body, compiled in this crate (not per caller).
fn rope_pair_ref(
    q: TensorRef<'_, f32>,
    k: TensorRef<'_, f32>,
    positions: &[u32],
    theta: f32,
) -> Result<(Tensor<f32>, Tensor<f32>)> {
    let names = |x, output| RopeNames {
        op: "rope_pair",
        x,
        output,
    };
    Ok((
        rope_as(names("q", "q output"), q, positions, theta)?,
        rope_as(names("k", "k output"), k, positions, theta)?,
    ))
}

/// What a RoPE call's errors name: the op, its input tensor and its output.
#[derive(Debug, Clone, Copy)]
struct RopeNames {
    op: &'static str,
    x: &'static str,
    output: &'static str,
}

impl RopeNames {
    const ROPE: RopeNames = RopeNames {
        op: "rope",
        x: "x",
        output: "output",
    };
}

/// [`rope`] reporting its errors under `names`.
fn rope_as(
    names: RopeNames,
    x: TensorRef<'_, f32>,
    positions: &[u32],
    theta: f32,
) -> Result<Tensor<f32>> {
    let op = names.op;
    let &[s, h, d] = x.shape() else {
        return Err(Error::RankMismatch {
            op,
            tensor: names.x,
            expected: 3,
            got: x.shape().to_vec(),
        });
    };
    check_args(op, d, theta)?;
    check::len(op, "positions (S)", s, positions.len())?;
    input(op, names.x, x)?;
    let freqs = rope_freqs(d, theta)?;
    let half = d / 2;
    let mut out = alloc::zeros::<f32>(x.numel());
    out.par_chunks_mut(h * d)
        .zip(x.data().par_chunks(h * d))
        .zip(positions)
        .for_each(|((o, xs), &pos)| {
            let rot: Vec<(f32, f32)> = freqs
                .iter()
                .map(|&f| {
                    let angle = f64::from(pos as f32 * f);
                    (angle.cos() as f32, angle.sin() as f32)
                })
                .collect();
            for (oh, xh) in o.chunks_exact_mut(d).zip(xs.chunks_exact(d)) {
                let (olo, ohi) = oh.split_at_mut(half);
                for (i, &(c, sn)) in rot.iter().enumerate() {
                    let (x0, x1) = (xh[i], xh[i + half]);
                    olo[i] = x0 * c - x1 * sn;
                    ohi[i] = x1 * c + x0 * sn;
                }
            }
        });
    check::finite(op, names.output, &out)?;
    Ok(Tensor::from_valid(out, x.shape().to_vec()))
}

/// `D` even and nonzero, `theta` finite and positive.
fn check_args(op: &'static str, d: usize, theta: f32) -> Result<()> {
    check::nonzero(op, "D", d)?;
    if !d.is_multiple_of(2) {
        return Err(Error::InvalidArgument {
            op,
            what: "D",
            reason: "the head dimension must be even",
        });
    }
    scalar(op, "theta", theta)?;
    if theta <= 0.0 {
        return Err(Error::InvalidArgument {
            op,
            what: "theta",
            reason: "must be > 0",
        });
    }
    Ok(())
}
