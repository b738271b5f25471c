// Scaled-dot-product attention (grouped-query, optionally causal) on token-major tensors, in the
// order of operations of `bitnet_cpu_ref::ops::attention`: q [Tq, Hq, D], k and v [Tk, Hkv, D],
// output [Tq, Hq, D]; query head h reads kv head h / (Hq / Hkv); query row i (of the full q)
// attends its first n_i = attend0 + i · attend_step keys (Tk, or Tk - Tq + i + 1 when causal).
//
// A (query, head) pair's keys are taken in chunks of 256 (CHUNK). Per chunk, invocation t scores
// key 256c + t (s = (Σ_d q[d]·k[d]) · scale, d ascending, as cpu-ref), the chunk's max m_c and the
// sum l_c of e_j = exp(s_j - m_c) are 256-lane trees in workgroup memory (softmax_last's order),
// and invocation t sums o_c[d] = Σ_j e_j · v_j[d] over the chunk's keys in order for d = t,
// t + 256, ... (any D, no vector loads: D = 3 or 5 is as valid as 128). Chunks are merged in
// order by the flash-attention recurrence (`merge_factors`, attention_common.wgsl) and the result
// is O[d] / L, correctly rounded (exact_div.wgsl). Only exp and fused multiply-adds a driver may
// form differ from the CPU reference. No subgroup operations: any subgroup size works.
//
// Two modes, one kernel, the same arithmetic:
// * whole (params.chunks == 0): one workgroup per pair walks all its chunks, keeping the running
//   weighted sums in the output itself (each invocation owns its d's), then divides in place. For
//   prefill: Tq · Hq pairs already fill the GPU.
// * split (params.chunks = ceil(Tk / 256) > 0), flash-decoding: one workgroup per (pair, chunk)
//   writes the chunk's record (m_c, l_c, o_c[0..D)) to scratch, and attention_combine.wgsl merges
//   each pair's records in chunk order. Decode has one query per sequence: Hq pairs (32 for a
//   32-head model) against thousands of keys, so a workgroup per pair would leave most of a
//   large GPU idle (132 SMs on an H200) while each walked thousands of keys; split, Tk = 4096
//   gives 32 · 16 = 512 workgroups. Chunks past a causal row's last key exit at once.
//
// Chunking over the binding limit: the launch covers query rows row_base .. row_base + rows; q and
// the output are bound whole or from row_base (q_shift = row of the binding holding launch row 0),
// k and v whole; the scratch records are the launch's own (pair-major, D + 2 floats each).
// Flat indices reported are those of the full tensors.
//
// Non-finite status words: 0 = q, 1 = k, 2 = v, 3 = output (a score beyond f32's range, reported
// at the first element of its output row as cpu-ref does; in whole mode also a weighted sum that
// overflows, at its element). Dispatch: linear; whole mode rows · Hq workgroups (pair = i · Hq +
// h), split mode rows · Hq · chunks (pair-major).

struct Params {
    rows: u32,        // query rows of this launch
    heads: u32,       // Hq
    kv_heads: u32,    // Hkv
    dim: u32,         // D
    attend0: u32,     // keys attended by launch row 0
    attend_step: u32, // 1 when causal (launch row i attends attend0 + i keys), else 0
    row_base: u32,    // row of the full q holding launch row 0
    q_shift: u32,     // row of q's and the output's bindings holding launch row 0
    chunks: u32,      // split mode: records per pair (ceil(Tk / 256)); 0: whole mode
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
// Whole mode: the output (rows like q). Split mode: the launch's scratch records.
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

var<workgroup> partial: array<f32, 256>;
var<workgroup> weights: array<f32, 256>;

// Tree over the 256 partials (strides 128, ..., 1): max when `is_max`, sum otherwise. Ends with a
// barrier, so the caller may read partial[0] and then overwrite partial[t].
fn tree(t: u32, is_max: bool) -> f32 {
    for (var stride = CHUNK / 2u; stride > 0u; stride /= 2u) {
        if (t < stride) {
            let u = partial[t];
            let w = partial[t + stride];
            partial[t] = select(u + w, max(u, w), is_max);
        }
        workgroupBarrier();
    }
    let r = partial[0];
    workgroupBarrier();
    return r;
}

// Invocation t's score of key `key` (of kv head g) against the q row at `q_row`; flags non-finite
// k values, and a non-finite score on the output row starting at `flat_row`.
fn score(key: u32, g: u32, q_row: u32, flat_row: u32) -> f32 {
    let dim = params.dim;
    let kb = (key * params.kv_heads + g) * dim;
    var acc = 0.0;
    for (var d = 0u; d < dim; d += 1u) {
        let x = k[kb + d];
        if (is_non_finite(x)) {
            atomicMin(&nonfinite[1], kb + d);
        }
        acc = acc + q[q_row + d] * x;
    }
    let s = acc * params.scale;
    if (is_non_finite(s)) {
        atomicMin(&nonfinite[3], flat_row);
    }
    return s;
}

// o_c[d] = Σ_j weights[j] · v[start + j][d] over the chunk's `len` keys in order; flags non-finite v.
fn weighted_sum(start: u32, len: u32, g: u32, d: u32) -> f32 {
    let dim = params.dim;
    var acc = 0.0;
    for (var j = 0u; j < len; j += 1u) {
        let vi = ((start + j) * params.kv_heads + g) * dim + d;
        let x = v[vi];
        if (is_non_finite(x)) {
            atomicMin(&nonfinite[2], vi);
        }
        acc = acc + weights[j] * x;
    }
    return acc;
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // Everything up to the chunk loop depends on the workgroup only, so the early exits keep the
    // barriers in uniform control flow.
    let wg = wid.x + wid.y * nwg.x;
    let split = params.chunks > 0u;
    var pair = wg;
    var first = 0u;
    if (split) {
        pair = wg / params.chunks;
        first = wg % params.chunks;
    }
    if (pair >= params.rows * params.heads) {
        return;
    }
    let i = pair / params.heads;
    let h = pair % params.heads;
    let g = h / (params.heads / params.kv_heads);
    let n = params.attend0 + i * params.attend_step;
    let n_chunks = (n + CHUNK - 1u) / CHUNK;
    if (first >= n_chunks) {
        return;
    }
    let dim = params.dim;
    let q_row = ((params.q_shift + i) * params.heads + h) * dim;
    let flat_row = ((params.row_base + i) * params.heads + h) * dim;
    if (first == 0u) {
        for (var d = t; d < dim; d += CHUNK) {
            if (is_non_finite(q[q_row + d])) {
                atomicMin(&nonfinite[0], flat_row + d);
            }
        }
    }
    var last = first + 1u;
    if (!split) {
        last = n_chunks;
    }
    var m_run = 0.0;
    var l_run = 0.0;
    for (var c = first; c < last; c += 1u) {
        let start = c * CHUNK;
        let len = min(CHUNK, n - start);
        // The lowest finite f32 is max's identity: lanes past the chunk's keys never win.
        var s = -3.4028235e38;
        if (t < len) {
            s = score(start + t, g, q_row, flat_row);
        }
        partial[t] = s;
        workgroupBarrier();
        let m = tree(t, true);
        var e = 0.0;
        if (t < len) {
            e = exp_nonpos(s - m);
        }
        weights[t] = e;
        partial[t] = e;
        workgroupBarrier();
        let l = tree(t, false);
        if (split) {
            let record = (pair * params.chunks + c) * (dim + 2u);
            if (t == 0u) {
                dst[record] = m;
                dst[record + 1u] = l;
            }
            for (var d = t; d < dim; d += CHUNK) {
                dst[record + 2u + d] = weighted_sum(start, len, g, d);
            }
        } else {
            // The merge of cpu-ref's step 3, the running sums of dimension d in dst[q_row + d].
            var f = vec3<f32>(0.0, 1.0, m);
            if (c == 0u) {
                l_run = l;
            } else {
                f = merge_factors(m_run, m);
                l_run = l_run * f.x + l * f.y;
            }
            m_run = f.z;
            for (var d = t; d < dim; d += CHUNK) {
                let oc = weighted_sum(start, len, g, d);
                var o = oc;
                if (c > 0u) {
                    o = dst[q_row + d] * f.x + oc * f.y;
                }
                if (is_non_finite(oc) || is_non_finite(o)) {
                    atomicMin(&nonfinite[3], flat_row + d);
                }
                dst[q_row + d] = o;
            }
        }
        // `weights` and `partial` are rewritten by the next chunk.
        workgroupBarrier();
    }
    if (!split) {
        for (var d = t; d < dim; d += CHUNK) {
            let y = div_rounded(dst[q_row + d], l_run);
            if (is_non_finite(y)) {
                atomicMin(&nonfinite[3], flat_row + d);
            }
            dst[q_row + d] = y;
        }
    }
}
