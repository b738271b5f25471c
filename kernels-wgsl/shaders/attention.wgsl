// Scaled-dot-product attention (grouped-query, optionally causal) on token-major tensors, in the
// order of operations of `bitnet_cpu_ref::ops::attention`: q [Tq, Hq, D], k and v [Tk, Hkv, D],
// output [Tq, Hq, D]; query head h reads kv head h / (Hq / Hkv); query row i (of the full q)
// attends its first n_i = attend0 + i · attend_step keys (Tk, or Tk - Tq + i + 1 when causal).
//
// A (query, head) pair's keys are taken in chunks of 256 (CHUNK). Per chunk, invocation t scores
// key 256c + t (s = (Σ_d q[d]·k[d]) · scale, as four partial sums over d mod 4), the chunk's max
// m_c and the sum l_c of e_j = exp(s_j - m_c) are 256-lane trees in workgroup memory
// (softmax_last's order), and o_c[d] = Σ_j e_j · v_j[d] is summed by all 256 invocations at once
// for D <= 256 (`chunk_sums` in attention_sums.wgsl: keys dealt to 256 / D groups, four
// accumulators each), by one invocation per d beyond. Any D works (q, k and v are bound as f32:
// D = 3 or 5 is as valid as 128; k is bound once more as vec4, read only where D % 32 == 0).
// Chunks are merged in order by the flash-attention recurrence (`merge_factors`,
// attention_common.wgsl) and the result is O[d] / L, correctly rounded (exact_div.wgsl). The CPU
// reference sums the dot products and weighted sums serially (cpu-ref's documented order); here
// they are reassociated into independent chains — serial chains of 128-256 dependent loads were
// most of a decode call's time on the H200 — so results match within the cross-check tolerance,
// not bit for bit. No subgroup operations: any subgroup size works.
//
// The engine runs this kernel where the other two do not apply (attention_decode.wgsl: few query
// rows per kv head at D = 32, 64, 128 and up to 8 query heads per kv head; attention_tiled.wgsl:
// prefill at those sizes): other head sizes, wider groups, too little workgroup memory.
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
// k again, bound as vec4 (the engine binds the same buffer twice): the scores of D % 32 == 0
// read each key's 16-byte pieces with one load instead of four (H200, 2B4T decode: about 1.3 µs
// a call).
@group(0) @binding(3) var<storage, read> k4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

// Head dimension D (override constant): 0 takes it from params (any D). The engine compiles the
// common head sizes (32, 64, 128) with D constant, so the driver drops the paths they never take
// and resolves the loops over D: the 2B4T decode's attention went from a 90.6 to a 76.4 KB binary
// and about 2-3 µs faster a call on the H200.
override DIM: u32 = 0u;

fn head_dim() -> u32 {
    if (DIM != 0u) {
        return DIM;
    }
    return params.dim;
}

var<workgroup> partial: array<f32, 256>;
var<workgroup> weights: array<f32, 256>;
// The chunk's weighted sums (chunk_sums).
var<workgroup> sums: array<f32, 256>;
// Eight partial scores per key of the chunk (chunk_scores).
var<workgroup> key_parts: array<f32, 2048>;

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
// k values, and a non-finite score on the output row starting at `flat_row`. Four partial sums
// (d mod 4) added pairwise at the end: four independent load-multiply-add chains instead of one
// serial chain of D (H200 decode: the serial chain was most of a 130 µs call at 512 keys).
fn score(key: u32, g: u32, q_row: u32, flat_row: u32) -> f32 {
    let dim = head_dim();
    let kb = (key * params.kv_heads + g) * dim;
    var acc = vec4<f32>(0.0);
    var d = 0u;
    // Sixteen values per step, all loaded before any is used: a lane's loads are one round trip
    // per step, not per value (each step waits for memory; D = 128 takes 8 steps, not 32).
    for (; d + 16u <= dim; d += 16u) {
        var x: array<vec4<f32>, 4>;
        for (var u = 0u; u < 4u; u += 1u) {
            let o = kb + d + 4u * u;
            x[u] = vec4<f32>(k[o], k[o + 1u], k[o + 2u], k[o + 3u]);
        }
        for (var u = 0u; u < 4u; u += 1u) {
            let o = q_row + d + 4u * u;
            let y = vec4<f32>(q[o], q[o + 1u], q[o + 2u], q[o + 3u]);
            if (any_non_finite4(x[u])) {
                flag_first4(1u, x[u], kb + d + 4u * u);
            }
            acc = acc + y * x[u];
        }
    }
    for (; d + 4u <= dim; d += 4u) {
        let x = vec4<f32>(k[kb + d], k[kb + d + 1u], k[kb + d + 2u], k[kb + d + 3u]);
        let y = vec4<f32>(q[q_row + d], q[q_row + d + 1u], q[q_row + d + 2u], q[q_row + d + 3u]);
        if (any_non_finite4(x)) {
            flag_first4(1u, x, kb + d);
        }
        acc = acc + y * x;
    }
    for (; d < dim; d += 1u) {
        let x = k[kb + d];
        if (is_non_finite(x)) {
            atomicMin(&nonfinite[1], kb + d);
        }
        acc.x = acc.x + q[q_row + d] * x;
    }
    let s = ((acc.x + acc.y) + (acc.z + acc.w)) * params.scale;
    if (is_non_finite(s)) {
        atomicMin(&nonfinite[3], flat_row);
    }
    return s;
}

// Scores of a chunk for D % 32 == 0 and D <= 128, the common head sizes: eight invocations per
// key, invocation t taking dimensions 4·(t % 8) + 32u of keys t / 8 + 32r, so each group of
// eight reads one contiguous 128-byte piece of a key row per load (one key row per invocation,
// as `score` reads it, touches a cache line per invocation and load: on the H200 that
// serialization was most of a decode call). Sixteen vec4 loads in flight per invocation, two
// rounds per chunk; the eight partial sums of a key are added in order. Returns invocation t's
// score, as `score` would; every invocation must call it (barriers).
fn chunk_scores(start: u32, len: u32, g: u32, q_row: u32, flat_row: u32, t: u32) -> f32 {
    let dim = head_dim();
    let steps = dim / 32u;
    let p = t % 8u;
    let kk = t / 8u;
    var qv: array<vec4<f32>, 4>;
    for (var u = 0u; u < 4u; u += 1u) {
        if (u < steps) {
            let o = q_row + 4u * p + 32u * u;
            qv[u] = vec4<f32>(q[o], q[o + 1u], q[o + 2u], q[o + 3u]);
        }
    }
    for (var round = 0u; round < 2u; round += 1u) {
        var x: array<vec4<f32>, 16>;
        for (var r = 0u; r < 4u; r += 1u) {
            let j = kk + 32u * (4u * round + r);
            for (var u = 0u; u < 4u; u += 1u) {
                if (j < len && u < steps) {
                    // A multiple of 4: D % 32 == 0.
                    let o = ((start + j) * params.kv_heads + g) * dim + 4u * p + 32u * u;
                    x[4u * r + u] = k4[o / 4u];
                }
            }
        }
        for (var r = 0u; r < 4u; r += 1u) {
            let j = kk + 32u * (4u * round + r);
            var acc = vec4<f32>(0.0);
            for (var u = 0u; u < 4u; u += 1u) {
                if (j < len && u < steps) {
                    let xv = x[4u * r + u];
                    if (any_non_finite4(xv)) {
                        flag_first4(1u, xv, ((start + j) * params.kv_heads + g) * dim + 4u * p + 32u * u);
                    }
                    acc = acc + qv[u] * xv;
                }
            }
            key_parts[j * 8u + p] = (acc.x + acc.y) + (acc.z + acc.w);
        }
    }
    workgroupBarrier();
    var s = -3.4028235e38;
    if (t < len) {
        var sum = 0.0;
        for (var i = 0u; i < 8u; i += 1u) {
            sum = sum + key_parts[t * 8u + i];
        }
        s = sum * params.scale;
        if (is_non_finite(s)) {
            atomicMin(&nonfinite[3], flat_row);
        }
    }
    // key_parts is rewritten by the next chunk.
    workgroupBarrier();
    return s;
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
    let dim = head_dim();
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
        if (dim % 32u == 0u && dim <= 128u) {
            s = chunk_scores(start, len, g, q_row, flat_row, t);
        } else if (t < len) {
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
        let small = dim <= CHUNK;
        if (small) {
            chunk_sums(start, len, g, t);
        }
        if (split) {
            let record = (pair * params.chunks + c) * (dim + 2u);
            if (t == 0u) {
                dst[record] = m;
                dst[record + 1u] = l;
            }
            for (var d = t; d < dim; d += CHUNK) {
                dst[record + 2u + d] = chunk_sum(small, start, len, g, d);
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
                let oc = chunk_sum(small, start, len, g, d);
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
