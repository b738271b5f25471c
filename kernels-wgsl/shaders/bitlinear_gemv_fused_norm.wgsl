// Input hooks of the fused GEMVs' body (bitlinear_gemv_fused_body.wgsl) for a normed row: the row
// the body quantizes is RMSNorm(x + res) with weight nw (RMSNorm(x) where RESIDUAL is false) —
// what norm_rms_add.wgsl (norm_rms.wgsl) would have written for it — computed by every
// workgroup for its own activation row instead of by a dispatch of its own behind a barrier.
// A decode step's q/k/v and gate/up projections are the only readers of their norms, so the
// norms' dispatches go.
//
// Bit for bit the norm kernels' values (and cpu-ref's): each of the 256 invocations t folds
// elements t, t + 256, ... four at a time (norm_rms_common.wgsl's rms_lanes), each square
// rounded before it is added (rms_fold); the same stride-128 .. 1 tree, over gf_x's first 256
// words (the quantization overwrites them only after the body's next barrier); rms_inv's
// correctly rounded divisions and root; and y = (h · inv) · nw[k] (rms_scale, products pinned).
// The body reads the row twice (absmax, quantization) and each read recomputes y from x, res and
// nw, the same bits each time: K floats of workgroup memory would not fit beside gf_x.
//
// The first row block's workgroup of each row (`first`) checks x and res, stores that row of
// h = x + res, and (row 0's) checks nw: once per launch, as the norm kernels do.
//
// Status word 0 holds the norm's errors tagged with their kind in bits 30-31 (the index below,
// flat over [M, K] but where noted): with RESIDUAL (add_rms_norm's words) 0 x, 1 residual,
// 2 weight (index k), 3 output (a row whose sum of squares overflowed, at its first element, or a
// non-finite y); without (rms_norm's) 0 x, 1 weight (index k), 2 a sum of squares that overflowed
// (index: the row), 3 output. atomicMin keeps the lowest kind, then the lowest index: how the norm
// op's own four words decode. The consumer's words 1-3 are its outputs'. A row with no finite
// norm is quantized as zeros (inv = 0), its outputs ignored behind word 0.
//
// The entry declares res: array<vec4<f32>> (one vec4 of scratch where RESIDUAL is false),
// nw: array<vec4<f32>> and h_out: array<f32> (the [M, K] rows; 4 floats of scratch without
// RESIDUAL).
// Needs float_common.wgsl, norm_rms_common.wgsl, exact_div.wgsl and exact_sqrt.wgsl.

// Whether a residual is added first (add_rms_norm) or not (rms_norm).
override RESIDUAL: bool = true;
// The norm's epsilon, added to the mean square (a model has one: one pipeline per value).
override EPS: f32 = 0.0;

const GN_TAG_SHIFT: u32 = 30u;
const GN_X: u32 = 0u;
const GN_OUTPUT: u32 = 3u;

// Flags kind `kind` at index `i` in word 0.
fn gn_flag(kind: u32, i: u32) {
    atomicMin(&nonfinite[0], (kind << GN_TAG_SHIFT) | i);
}

// Scalar element e of a vec4 array's rows.
fn gn_x(e: u32) -> f32 {
    return x[e >> 2u][e & 3u];
}

fn gn_res(e: u32) -> f32 {
    return res[e >> 2u][e & 3u];
}

fn gn_w(e: u32) -> f32 {
    return nw[e >> 2u][e & 3u];
}

// rms_sum_sq's tree over the 256 partials, held in gf_x's words 0..255 (word t: vec4 t / 4,
// component t % 4). Call from uniform control flow.
fn gn_sum_sq(acc: f32, t: u32) -> f32 {
    gf_x[t >> 2u][t & 3u] = bitcast<u32>(acc);
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (t < stride) {
            let u = t + stride;
            let s = bitcast<f32>(gf_x[t >> 2u][t & 3u]) + bitcast<f32>(gf_x[u >> 2u][u & 3u]);
            gf_x[t >> 2u][t & 3u] = bitcast<u32>(s);
        }
        workgroupBarrier();
    }
    return bitcast<f32>(gf_x[0].x);
}

// Row m's inv = 1 / sqrt(Σ h² / K + eps) (K = 4 kv), from invocation t's share of it.
fn gf_prepare(m: u32, kv: u32, t: u32, first: bool) -> f32 {
    let len = 4u * kv;
    let base = m * len;
    let check_w = first && m == 0u;
    var acc = 0.0;
    for (var i = t; i < len; i += 4u * WG) {
        let k = rms_lanes(i, len);
        let valid = rms_valid(i, len);
        let a = vec4<f32>(gn_x(base + k.x), gn_x(base + k.y), gn_x(base + k.z), gn_x(base + k.w));
        var v = a;
        if (RESIDUAL) {
            v = a + vec4<f32>(
                gn_res(base + k.x), gn_res(base + k.y), gn_res(base + k.z), gn_res(base + k.w)
            );
        }
        if (first) {
            // Clamped lanes repeat the last element: its own index, so flagging it again is
            // harmless.
            for (var c = 0u; c < 4u; c++) {
                if (is_non_finite(a[c])) {
                    gn_flag(GN_X, base + k[c]);
                }
                if (RESIDUAL) {
                    if (is_non_finite(gn_res(base + k[c]))) {
                        gn_flag(1u, base + k[c]);
                    }
                    if (valid[c]) {
                        h_out[base + k[c]] = v[c];
                    }
                }
                if (check_w && is_non_finite(gn_w(k[c]))) {
                    gn_flag(select(1u, 2u, RESIDUAL), k[c]);
                }
            }
        }
        acc = rms_fold(acc, v, valid);
    }
    let sum_sq = gn_sum_sq(acc, t);
    if (is_non_finite(sum_sq)) {
        if (first && t == 0u) {
            if (RESIDUAL) {
                gn_flag(GN_OUTPUT, base);
            } else {
                gn_flag(2u, m);
            }
        }
        return 0.0;
    }
    return rms_inv(sum_sq, len, EPS);
}

// y for x's vec4 `xv` (vec4 `at` of the rows, column vec4 `col`), with the row's inv.
fn gf_input(xv: vec4<f32>, at: u32, col: u32, inv: f32) -> vec4<f32> {
    var v = xv;
    if (RESIDUAL) {
        v = v + res[at];
    }
    return rms_scale(v, inv, nw[col]);
}

// A non-finite y: the norm's output.
fn gf_flag_input(bad: u32) {
    gn_flag(GN_OUTPUT, bad);
}
