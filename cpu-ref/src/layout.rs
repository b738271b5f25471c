//! The one place where every bit layout and every rounding rule of bitnet-wgpu is defined.
//!
//! The CPU reference, the WGSL kernels and the MSL kernels all read and write these layouts, and all
//! follow the arithmetic below operation for operation, so that integer results (quantized weights,
//! quantized activations, BitLinear accumulators) agree bit for bit between every backend.
//!
//! # Ternary weights (`TernaryMatrix`), shape `[N, K]`
//!
//! * Each weight `w ∈ {-1, 0, +1}` is stored as a 2-bit **code** `c = w + 1` (`0 → -1`, `1 → 0`,
//!   `2 → +1`; code `3` never appears and decoders treat it as corrupt input).
//! * A row holds [`words_per_row`]`(K) = ceil(K / 16)` `u32` words; row `n` occupies words
//!   `[n * words_per_row, (n + 1) * words_per_row)`. Positions `k >= K` in the last word are
//!   padding and hold weight `0` (code `1`).
//! * Word `j` of a row holds the 16 weights `k = 16 j .. 16 j + 15`, **interleaved**: weight
//!   `k = 16 j + 4 g + i` (group `g ∈ 0..4`, lane `i ∈ 0..4`) sits at bits `[8 i + 2 g, 8 i + 2 g + 2)`.
//!   So `(word >> 2 g) & 0x0303_0303` yields four bytes whose byte `i` is the code of weight
//!   `16 j + 4 g + i` — lined up with packed activation word `4 j + g` (below), ready for
//!   `dot4I8Packed` / `maddubs` with no further shuffling.
//! * Since codes are `w + 1`, `Σ x·w = Σ dot4(x, codes) − Σ x`: kernels subtract the activation row
//!   sum once instead of decoding signs per weight. Padded activations are zero, so padding codes
//!   never contribute.
//!
//! # Quantized activations (`QuantizedActivations`), shape `[M, K]`
//!
//! * `i8` values, row-major, `M * K` of them (the unpadded view, [`QuantizedActivations::values`]).
//! * Packed view: 4 values per `u32`, little-endian — word `t` holds `x[4t + i]` in byte `i` (two's
//!   complement). A packed row holds [`activation_words_per_row`]`(K) = 4 * ceil(K / 16)` words
//!   (K rounded up to the weight word size), padding bytes are `0`. Activation word `4 j + g` pairs
//!   with group `g` of weight word `j`.
//! * One `f32` per row: `a_m = max(max_k |x[m,k]|, 1e-5)` (the clamped absmax).
//!
//! # Arithmetic (identical, operation for operation, on every backend)
//!
//! `round` is round-half-to-even (`f32::round_ties_even`, WGSL `round`, MSL `rint`). All arithmetic
//! is `f32` unless stated; multiplications are IEEE correctly rounded on every backend, and the one
//! division per scale must be correctly rounded too (GPU kernels use an exact integer division
//! routine, since shader `/` is only accurate to a few ulp).
//!
//! * **Activation quantization** (as the BitNet reference code does it):
//!   `a = max(absmax, 1e-5)`, `inv = 127.0 / a` (one correctly rounded division per row),
//!   `xq = clamp(round(x * inv), -128, 127)`.
//! * **Weight quantization** (as the BitNet reference code does it): `sum = canonical_abs_sum(W)`
//!   (order below), `count = (N*K) as f32` (round to nearest), `s = max(sum / count, 1e-5)`,
//!   `inv_s = 1.0 / s`, `wq = clamp(round(w * inv_s), -1, 1)`. The stored scale is `s`. Note
//!   `w * inv_s` is not `w / s`: the two can differ in the last bit and so resolve a tie at `±0.5`
//!   differently (likewise `x * inv` versus `x * 127 / a` for activations). The reciprocal form
//!   is the reference code's own, which is what BitNet checkpoints were trained and are checked
//!   against (PyTorch, the BitNet b1.58 training recipe):
//!   `scale = 127.0 / x.abs().max(dim=-1, keepdim=True).values.clamp_(min=1e-5)`,
//!   `(x * scale).round().clamp_(-128, 127)`, and `scale = 1.0 / w.abs().mean().clamp_(min=1e-5)`,
//!   `(w * scale).round().clamp_(-1, 1)`. A reviewer's counterexamples (2026-12-04): `W = [w,
//!   2s - w]` with `s = 0x3fa7e520`, `w = 0x3f27e521` quantizes `w` to 0 here and in PyTorch
//!   (`w * (1/s)` rounds to exactly 0.5, a tie to even) where the exact `w / s` (just above 0.5)
//!   gives 1; the activation `x = 0x3fc72013` in a row of absmax `a = 0x40410b8e` gives 65 here
//!   and in PyTorch, 66 as `(x * 127) / a` in `f32`. Only the sum behind `mean` differs from
//!   PyTorch: its order is fixed below, where PyTorch's depends on its kernels.
//! * **BitLinear**: `acc = Σ_k xq[m,k] * wq[n,k]` exactly in `i32` (|acc| ≤ 128·K, exact for
//!   K < 2^24), `y[m,n] = (acc as f32) * ((s * a_m) * INV_127)` with [`INV_127`]` = 1.0f32 / 127.0`,
//!   evaluated in exactly that order (multiplications only, so every backend agrees bit for bit).
//!
//! # Canonical order of the absolute-value sum ([`canonical_abs_sum`])
//!
//! A float sum's value depends on its order, and the weight scale feeds every quantized weight, so all
//! backends sum in this one GPU-friendly order:
//!
//! 1. Split the values into blocks of [`SUM_BLOCK`]` = 4096` (the last block is padded with `0.0`).
//! 2. In a block, lane `t ∈ 0..256` sums `e[t + 256 r]` for `r = 0..16` sequentially, starting from
//!    `0.0`: `p_t = (((0 + e_t) + e_{t+256}) + e_{t+512}) + …`.
//! 3. Tree over the 256 lanes: for `stride` in `128, 64, …, 1`: `p_t = p_t + p_{t+stride}` for
//!    `t < stride`. `p_0` is the block's sum.
//! 4. If there is more than one block, apply 1–3 to the vector of block sums, until one value remains.

/// Weights per packed `u32` word of a [`TernaryMatrix`](crate::TernaryMatrix) row.
pub const WEIGHTS_PER_WORD: usize = 16;
/// `i8` activations per packed `u32` word.
pub const ACTIVATIONS_PER_WORD: usize = 4;
/// Lower clamp of both the weight absmean and the activation absmax.
pub const SCALE_EPS: f32 = 1e-5;
/// The rescale constant of BitLinear outputs: `1.0f32 / 127.0`, rounded once.
pub const INV_127: f32 = 1.0 / 127.0;
/// Values per block of the canonical absolute-value sum.
pub const SUM_BLOCK: usize = 4096;
/// Lanes (GPU threads) per block of the canonical sum.
pub const SUM_LANES: usize = 256;

/// `u32` words per packed ternary row of length `k`: `ceil(k / 16)`.
pub const fn words_per_row(k: usize) -> usize {
    k.div_ceil(WEIGHTS_PER_WORD)
}

/// `u32` words per packed activation row of length `k`: `4 * ceil(k / 16)`.
pub const fn activation_words_per_row(k: usize) -> usize {
    words_per_row(k) * (WEIGHTS_PER_WORD / ACTIVATIONS_PER_WORD)
}

/// Bit offset of weight `k_in_word ∈ 0..16` inside its word (the interleaved order above).
pub const fn code_shift(k_in_word: usize) -> u32 {
    let group = k_in_word / 4;
    let lane = k_in_word % 4;
    (8 * lane + 2 * group) as u32
}

/// The 2-bit code of a ternary weight: `w + 1`. Values outside `-1..=1` are clamped first, as
/// [`pack_word`] does (`w + 1` overflowed at 127 and gave no 2-bit code below -1).
pub const fn encode_ternary(w: i8) -> u32 {
    let w = if w < -1 {
        -1
    } else if w > 1 {
        1
    } else {
        w
    };
    (w + 1) as u32
}

/// The ternary weight of a 2-bit code (`code - 1`), or `None` for the invalid code 3.
pub const fn decode_ternary(code: u32) -> Option<i8> {
    match code {
        0..=2 => Some(code as i8 - 1),
        _ => None,
    }
}

/// Packs 16 consecutive weights `w[16 j .. 16 j + 16]` (each in `-1..=1`) into word `j`'s
/// interleaved layout. Panics-free: values outside `-1..=1` are clamped (callers validate first).
pub const fn pack_word(weights: [i8; WEIGHTS_PER_WORD]) -> u32 {
    let mut word = 0u32;
    let mut k = 0;
    while k < WEIGHTS_PER_WORD {
        word |= encode_ternary(weights[k]) << code_shift(k);
        k += 1;
    }
    word
}

/// The 16 codes of a packed word in `k` order (inverse of the interleaving; codes may be 3 if the
/// word is corrupt — see [`decode_ternary`]).
pub const fn unpack_codes(word: u32) -> [u32; WEIGHTS_PER_WORD] {
    let mut codes = [0u32; WEIGHTS_PER_WORD];
    let mut k = 0;
    while k < WEIGHTS_PER_WORD {
        codes[k] = (word >> code_shift(k)) & 3;
        k += 1;
    }
    codes
}

/// Packs `k` activations of one row into [`activation_words_per_row`]`(k)` little-endian words
/// (byte `i` of word `t` is `x[4t + i]`), zero-padded.
pub fn pack_activation_row(row: &[i8], out: &mut [u32]) {
    for (t, word) in out.iter_mut().enumerate() {
        let byte = |i: usize| row.get(4 * t + i).copied().unwrap_or(0) as u8;
        *word = u32::from_le_bytes([byte(0), byte(1), byte(2), byte(3)]);
    }
}

#[cfg(doc)]
use crate::QuantizedActivations;
pub use crate::canonical_sum::canonical_abs_sum;
