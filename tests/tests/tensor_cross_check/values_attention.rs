//! Attention against cpu-ref: decode (Tq = 1) over caches of 1 to 4096 keys, GQA ratios 1, 3 and
//! 4, causal and not, head dimensions from 3 to 300, prefill (Tq = Tk) in whole mode with several
//! chunks, rows whose causal key counts straddle a chunk boundary; the query-tiled prefill kernel
//! (GQA 1, 4, 5, D 32 / 64 / 128, ragged last tiles, Tk > Tq causal, Tq > Tk without the mask);
//! a hand-computed case; host operands and the CPU engine.

use bitnet_wgpu::cpu_ref::ops as cpu;
use bitnet_wgpu::{DispatchPolicy, Engine, Location};

use super::common::{assert_f32, engine, host, up, values};

/// One attention case: `(Tq, Tk, Hq, Hkv, D, causal)`.
type Case = (usize, usize, usize, usize, usize, bool);

/// Runs `case` on the suite's GPU engine and on cpu-ref with `scale_mul / sqrt(D)`, q and k in
/// `[-1, 1)`, v in `[-4, 4)`, and compares.
pub(super) fn check(seed: u64, case: Case, scale_mul: f32) {
    let (tq, tk, hq, hkv, d, causal) = case;
    let e = engine();
    let (qs, ks) = ([tq, hq, d], [tk, hkv, d]);
    let q = values(seed, tq * hq * d, -1.0, 1.0);
    let k = values(seed + 1, tk * hkv * d, -1.0, 1.0);
    let v = values(seed + 2, tk * hkv * d, -4.0, 4.0);
    let scale = scale_mul / (d as f32).sqrt();
    let want = cpu::attention(
        &host(&q, &qs),
        &host(&k, &ks),
        &host(&v, &ks),
        scale,
        causal,
    );
    let got = e.attention(
        &up(e, &q, &qs),
        &up(e, &k, &ks),
        &up(e, &v, &ks),
        scale,
        causal,
    );
    assert_f32(
        "attention",
        &format!("attention {case:?} scale ×{scale_mul}"),
        &got.unwrap(),
        &want.unwrap(),
    );
}

#[test]
fn decode_attention_matches_cpu_ref() {
    // Split mode (flash-decoding) from Tk = 257 on; one chunk below.
    let cases: [Case; 9] = [
        (1, 1, 4, 4, 64, true),
        (1, 7, 32, 8, 128, true),
        (1, 7, 4, 4, 3, false),
        (1, 256, 8, 2, 64, true),
        (1, 257, 8, 2, 64, true),
        (1, 300, 32, 8, 128, true),
        (1, 300, 32, 8, 128, false),
        (1, 300, 4, 2, 256, false),
        (1, 700, 3, 1, 5, true),
    ];
    for (i, &case) in cases.iter().enumerate() {
        check(10 + 3 * i as u64, case, 1.0);
    }
    // Sharp scores (a spread of tens): most weights underflow, the merge rescales hard.
    check(50, (1, 600, 4, 1, 64, true), 8.0);
}

#[test]
fn long_cache_decode_matches_cpu_ref() {
    // The motivating shape: 32 query heads over 8 kv heads of 128, a cache of 4096 positions
    // (16 chunks per head: 512 workgroups, then the combine).
    check(60, (1, 4096, 32, 8, 128, true), 1.0);
}

#[test]
fn prefill_and_multi_query_attention_match_cpu_ref() {
    let cases: [Case; 10] = [
        (2, 2, 1, 1, 1, true),
        (5, 3, 2, 1, 8, false), // more queries than keys, no mask
        (9, 9, 3, 1, 5, true),
        (20, 270, 4, 2, 16, true), // causal rows of 251 .. 270 keys: 1 or 2 chunks
        (64, 64, 4, 4, 64, true),
        (300, 300, 4, 2, 32, false), // 1200 pairs (the tiled kernel takes D = 32)
        (512, 512, 4, 1, 64, true),  // causal, 2 chunks for the later rows (tiled)
        (3, 260, 2, 1, 300, false),  // D above the workgroup: two dimensions per invocation
        // Whole mode (1024 pairs or more, a D the tiled kernel does not take) over two chunks:
        // the running sums merged in registers, four dimensions per invocation in the sums.
        (300, 300, 4, 2, 16, true),
        (260, 270, 4, 4, 96, false),
    ];
    for (i, &case) in cases.iter().enumerate() {
        check(100 + 3 * i as u64, case, 1.0);
    }
}

#[test]
fn tiled_prefill_attention_matches_cpu_ref() {
    // 64 or more query rows per kv head (Tq · Hq / Hkv): the tiled kernel on any adapter (the
    // engine's unit test `attention_plans_tiles_for_prefill_only` pins that down).
    let cases: [Case; 9] = [
        (96, 96, 4, 1, 64, true),   // GQA 4, causal, 384 rows per kv head
        (70, 70, 5, 1, 128, true),  // GQA 5: 350 rows, a ragged last tile
        (67, 90, 2, 2, 64, true),   // GQA 1, Tk > Tq causal (rows attend 24 .. 90 keys)
        (80, 45, 8, 2, 128, false), // Tq > Tk, no mask
        (13, 96, 10, 2, 32, false), // GQA 5, D = 32: 65 rows, one row in the last tile
        (64, 64, 1, 1, 128, true),  // exactly one 64-row (or two / four smaller) tile
        (50, 96, 20, 5, 128, true), // 2B4T's heads, a KV prefix of 46 positions
        (65, 65, 4, 4, 64, false),  // GQA 1, one row past a multiple of every tile size
        (64, 300, 16, 4, 64, true), // 237 .. 300 keys: one chunk, or two merged
    ];
    for (i, &case) in cases.iter().enumerate() {
        check(300 + 3 * i as u64, case, 1.0);
    }
    // Sharper scores (a spread of tens), in one chunk and over two. Not ×8: there the dot
    // products' reassociation alone (shared with the untiled kernels) reaches the tolerance —
    // on lavapipe whole mode's worst error on the first shape is 0.97 of it, split mode's on
    // (16, 300, 8, 2, 128) 1.02; at ×4 the tiled kernel's worst on the first shape is 0.46 of
    // it (whole mode's 0.56).
    check(340, (96, 96, 4, 1, 64, true), 4.0);
    check(343, (64, 300, 16, 4, 128, true), 4.0);
}

/// Attention of the given operands (`[Tq, Tk, Hq, Hkv, D]`) on the suite's GPU engine against
/// cpu-ref, under the attention tolerance.
fn check_operands(what: &str, dims: [usize; 5], [q, k, v]: [&[f32]; 3], scale: f32, causal: bool) {
    let [tq, tk, hq, hkv, d] = dims;
    let e = engine();
    let (qs, ks) = ([tq, hq, d], [tk, hkv, d]);
    let want = cpu::attention(&host(q, &qs), &host(k, &ks), &host(v, &ks), scale, causal);
    let got = e.attention(
        &up(e, q, &qs),
        &up(e, k, &ks),
        &up(e, v, &ks),
        scale,
        causal,
    );
    assert_f32("attention", what, &got.unwrap(), &want.unwrap());
}

/// The tiled kernel's causal mask keeps a masked key out of the running maximum too: query `i`
/// (q = e₀) scores `100·j` against key `j` (k = 100·j·e₀), so the first key past the diagonal
/// scores 100 above the last attended one. Had it raised the maximum, every attended weight
/// would be scaled by `exp(-100)` (0 in f32) and the row would lose its values.
#[test]
fn tiled_prefill_masks_keys_out_of_the_running_max() {
    let (t, d) = (64, 64);
    let (mut q, mut k) = (vec![0.0; t * d], vec![0.0; t * d]);
    for i in 0..t {
        q[i * d] = 1.0;
        k[i * d] = 100.0 * i as f32;
    }
    let v = values(350, t * d, -4.0, 4.0);
    let what = "tiled, masked keys scoring above the row";
    check_operands(what, [t, t, 1, 1, d], [&q, &k, &v], 1.0, true);
}

/// A row's last chunk ends in the middle of the chunk's scoring lanes: only its keys score. Two
/// keys (scores -100 and -101 at D = 96) and a padding slot past them that must stay masked —
/// scored as a zero key it would hold the maximum (0) and push both real weights to `exp(-100)`.
#[test]
fn attention_masks_the_scoring_slots_past_the_last_key() {
    let d = 96;
    let mut q = vec![0.0; d];
    q[0] = 1.0;
    let mut k = vec![0.0; 2 * d];
    k[0] = -100.0;
    k[d] = -101.0;
    let v = values(360, 2 * d, -4.0, 4.0);
    let what = "two keys, scores -100 and -101";
    check_operands(what, [1, 2, 1, 1, d], [&q, &k, &v], 1.0, false);
}

#[test]
fn attention_hand_computed() {
    let e = engine();
    let q = up(e, &[1.0, 1.0], &[2, 1, 1]);
    let k = up(e, &[0.5, 0.5], &[2, 1, 1]);
    let v = up(e, &[4.0, 8.0], &[2, 1, 1]);
    // Causal prefill: query 0 sees key 0 (its value), query 1 both keys with equal weights.
    let y = e.attention(&q, &k, &v, 1.0, true).unwrap();
    assert_eq!(y.read_f32().unwrap(), [4.0, 6.0]);
    let y = e.attention(&q, &k, &v, 1.0, false).unwrap();
    assert_eq!(y.read_f32().unwrap(), [6.0, 6.0]);
    // Scores 0 and ln 3: weights 1/4 and 3/4, so 4/4 + 3·8/4 = 7.
    let k = up(e, &[0.0, 3f32.ln()], &[2, 1, 1]);
    let y = e.attention(&up(e, &[1.0], &[1, 1, 1]), &k, &v, 1.0, false);
    let y = y.unwrap().read_f32().unwrap();
    assert!((y[0] - 7.0).abs() < 1e-6, "{y:?}");
    // GQA: heads 0, 1 read kv head 0 and heads 2, 3 kv head 1.
    let q = up(e, &[1.0; 4], &[1, 4, 1]);
    let (k, v) = (
        up(e, &[0.0; 2], &[1, 2, 1]),
        up(e, &[3.0, -5.0], &[1, 2, 1]),
    );
    let y = e.attention(&q, &k, &v, 1.0, false).unwrap();
    assert_eq!(y.read_f32().unwrap(), [3.0, 3.0, -5.0, -5.0]);
}

#[test]
fn host_operands_and_the_cpu_engine_run_cpu_ref() {
    let (tq, tk, hq, hkv, d) = (2, 300, 4, 2, 8);
    let (qs, ks) = ([tq, hq, d], [tk, hkv, d]);
    let q = values(200, tq * hq * d, -1.0, 1.0);
    let k = values(201, tk * hkv * d, -1.0, 1.0);
    let v = values(202, tk * hkv * d, -4.0, 4.0);
    let want = cpu::attention(&host(&q, &qs), &host(&k, &ks), &host(&v, &ks), 0.3, true).unwrap();
    // The CPU engine: cpu-ref's bits.
    let c = Engine::cpu();
    let got = c.attention(
        &up(&c, &q, &qs),
        &up(&c, &k, &ks),
        &up(&c, &v, &ks),
        0.3,
        true,
    );
    assert_eq!(got.unwrap().read_f32().unwrap(), want.data());
    // A GPU engine with one host operand runs on the CPU too (same bits); under the Cpu policy,
    // device operands are read back and the result is a host tensor.
    let e = bitnet_tests::gpu_engine();
    let (gq, gk, gv) = (up(&e, &q, &qs), up(&e, &k, &ks), up(&e, &v, &ks));
    let hk = gk.to_host().unwrap();
    assert_eq!(hk.location(), Location::Host);
    let got = e.attention(&gq, &hk, &gv, 0.3, true).unwrap();
    assert_eq!(got.read_f32().unwrap(), want.data());
    e.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
    let got = e.attention(&gq, &gk, &gv, 0.3, true).unwrap();
    assert_eq!(got.location(), Location::Host);
    assert_eq!(got.read_f32().unwrap(), want.data());
}
