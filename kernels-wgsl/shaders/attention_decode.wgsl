// Decode attention: the same operation as attention.wgsl (q [Tq, Hq, D], k and v [Tk, Hkv, D],
// output [Tq, Hq, D], query head h reads kv head g = h / GROUP, launch row i attends its first
// n_i = attend0 + i · attend_step keys) for few query rows per kv head, D = 32, 64 or 128 and
// GROUP = Hq / Hkv <= 8 query heads per kv head (override constants DIM and GROUP).
//
// One workgroup takes one query row i, one kv head g and a run of `walk` chunks of KEYS = 64
// keys, for all GROUP query heads of g together: each K and V vector is loaded once for the
// group (attention.wgsl loads it once per query head), and every load of a chunk is issued
// before any is used — the next chunk's keys while this chunk's weights are formed, its values
// while this chunk's weighted sums are added — so a chunk costs about one memory round trip.
// No trees: each (head, key group) keeps its own running maximum and sum, each invocation its
// weighted sums for them (flash attention), and the key groups' states are merged once at the
// end. Three barriers a chunk, and few exponentials: one per key and one rescale per (head, key
// group) and chunk.
//
// * Scores: eight invocations per key (invocation t takes dimensions 4·(t % 8) + 32u of keys
//   t / 8 + 32r), summed in chunk_scores' order (attention.wgsl), so every score is bit for bit
//   the untiled kernels' score.
// * Weights: invocation x = hh · KG + kg (head hh of the group, key group kg; KG = 1024 / D)
//   scores keys kg + KG·r of its head, raises the group's running maximum m to m' if they exceed
//   it, and writes e_j = exp(s_j - m') and the rescale factor exp(m - m') of what came before;
//   its running sum l becomes l · exp(m - m') + Σ e_j.
// * Weighted sums: invocation t = kg · DV + cv (DV = D / 4) owns dimensions 4cv .. 4cv + 3 of
//   key group kg for every head: acc = acc · exp(m - m') + Σ_j e_j · v_j.
// * End: per head, the key groups' states rescaled onto the head's maximum M and added in
//   key-group order, then per output element either O / L correctly rounded into the output
//   (records == 0: the row's keys in one workgroup) or a record (M, L, O[0..D)) for
//   attention_combine.wgsl, which merges a pair's records (records per pair, `walk` · KEYS keys
//   each).
//
// The result matches cpu-ref within the cross-check tolerance: the scores are the untiled
// kernels', the softmax is reassociated as flash attention's (each weight a rescaling rounding
// or two from exp(s - m)). No subgroup operations.
//
// Non-finite status words as attention.wgsl's: 0 = q (checked by each (row, kv head)'s first
// workgroup), 1 = k, 2 = v (every value loaded is checked), 3 = output (a score beyond f32's
// range at its output row's first element, an output element or a weighted sum at its own).
// Chunking as attention.wgsl's (q and the output bound from q_shift, k and v whole, records the
// launch's own). Dispatch: linear, rows · Hkv · max(records, 1) workgroups
// ((i · Hkv + g) · records + record).

struct Params {
    rows: u32,        // query rows of this launch
    heads: u32,       // Hq
    kv_heads: u32,    // Hkv
    attend0: u32,     // keys attended by launch row 0
    attend_step: u32, // 1 when causal, else 0
    row_base: u32,    // row of the full q holding launch row 0
    q_shift: u32,     // row of q's and the output's bindings holding launch row 0
    records: u32,     // records per (query, head) pair; 0: the output itself
    walk: u32,        // chunks of KEYS keys per workgroup
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v: array<vec4<f32>>;
// The output (rows like q) or the launch's records.
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

override DIM: u32 = 128u;
override GROUP: u32 = 4u;

// Keys per chunk: 32 keys per round of the score loads, two rounds.
const KEYS: u32 = 64u;
// The "no key yet" maximum: the lowest finite f32 (exp of anything minus it underflows to 0).
const NEG: f32 = -3.4028235e38;

// The group's q rows (GROUP · D / 4 vec4).
var<workgroup> qs: array<vec4<f32>, GROUP * DIM / 4u>;
// Score parts (two vec4 per (head, key): the eight invocations' sums), then, at the end, the
// key groups' weighted sums (KG · GROUP · DV = 256 · GROUP vec4).
var<workgroup> scratch: array<vec4<f32>, 256u * GROUP>;
// The chunk's weights e_j per (head, key).
var<workgroup> weights: array<f32, GROUP * KEYS>;
// Per (head, key group): the running maximum and sum, and the chunk's rescale factor of what
// came before (at the end: of the group's state onto the head's maximum).
var<workgroup> run_max: array<f32, 256>;
var<workgroup> run_sum: array<f32, 256>;
var<workgroup> rescale: array<f32, 256>;
// Per head: the maximum over its key groups (the end).
var<workgroup> head_max: array<f32, 8>;

// The k vec4s invocation (p, kk) reads for the chunk starting at key `start` (zero past `len`).
fn load_keys(start: u32, len: u32, g: u32, p: u32, kk: u32) -> array<vec4<f32>, 8> {
    var x: array<vec4<f32>, 8>;
    for (var r = 0u; r < 2u; r += 1u) {
        let j = kk + 32u * r;
        for (var u = 0u; u < DIM / 32u; u += 1u) {
            if (j < len) {
                x[(DIM / 32u) * r + u] = k[((start + j) * params.kv_heads + g) * (DIM / 4u) + p + 8u * u];
            }
        }
    }
    return x;
}

// The v vec4s invocation (cv, kg) reads for the chunk starting at key `start` (zero past `len`).
fn load_values(start: u32, len: u32, g: u32, cv: u32, kg: u32) -> array<vec4<f32>, 8> {
    var x: array<vec4<f32>, 8>;
    for (var r = 0u; r < DIM / 16u; r += 1u) {
        let j = kg + (1024u / DIM) * r;
        if (j < len) {
            x[r] = v[((start + j) * params.kv_heads + g) * (DIM / 4u) + cv];
        }
    }
    return x;
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let dv = DIM / 4u;
    let kgs = 1024u / DIM;
    // Everything up to the chunk loop depends on the workgroup only (uniform exits).
    let wg = wid.x + wid.y * nwg.x;
    let recs = max(params.records, 1u);
    let row_g = wg / recs;
    let rec = wg % recs;
    if (row_g >= params.rows * params.kv_heads) {
        return;
    }
    let i = row_g / params.kv_heads;
    let g = row_g % params.kv_heads;
    let n = params.attend0 + i * params.attend_step;
    let n_chunks = (n + KEYS - 1u) / KEYS;
    let c0 = rec * params.walk;
    if (c0 >= n_chunks) {
        return;
    }
    let c1 = min(c0 + params.walk, n_chunks);
    // Output row of the group's first head in the binding, and in the full tensor.
    let q_row = ((params.q_shift + i) * params.heads + g * GROUP) * dv;
    let flat_row = ((params.row_base + i) * params.heads + g * GROUP) * DIM;

    // Thread maps: score parts (p, kk), weighted sums (cv, kg).
    let p = t % 8u;
    let kk = t / 8u;
    let cv = t % dv;
    let kg = t / dv;

    // The first chunk's loads, in flight while q is staged.
    var start = c0 * KEYS;
    var len = min(KEYS, n - start);
    var kx = load_keys(start, len, g, p, kk);
    var vx = load_values(start, len, g, cv, kg);
    for (var x = t; x < GROUP * dv; x += 256u) {
        let y = q[q_row + x];
        if (rec == 0u && any_non_finite4(y)) {
            flag_first4(0u, y, flat_row + 4u * x);
        }
        qs[x] = y;
    }

    var acc: array<vec4<f32>, 8>;
    for (var c = c0; c < c1; c += 1u) {
        // qs staged (first chunk); the last chunk's reads of scratch and weights done.
        workgroupBarrier();
        // 1. Score parts of this invocation's keys for every head of the group.
        for (var r = 0u; r < 2u; r += 1u) {
            let j = kk + 32u * r;
            if (j < len) {
                for (var u = 0u; u < DIM / 32u; u += 1u) {
                    let x = kx[(DIM / 32u) * r + u];
                    if (any_non_finite4(x)) {
                        let at = ((start + j) * params.kv_heads + g) * DIM + 4u * p + 32u * u;
                        flag_first4(1u, x, at);
                    }
                }
                for (var hh = 0u; hh < GROUP; hh += 1u) {
                    var s4 = vec4<f32>(0.0);
                    for (var u = 0u; u < DIM / 32u; u += 1u) {
                        s4 = s4 + qs[hh * dv + p + 8u * u] * kx[(DIM / 32u) * r + u];
                    }
                    scratch[(hh * KEYS + j) * 2u + p / 4u][p % 4u] = (s4.x + s4.y) + (s4.z + s4.w);
                }
            }
        }
        // The next chunk's keys, in flight from here.
        let next = start + KEYS;
        let next_len = min(KEYS, n - min(n, next));
        if (c + 1u < c1) {
            kx = load_keys(next, next_len, g, p, kk);
        }
        workgroupBarrier();
        // 2. Scores, the key group's running maximum and sum, weights and the rescale factor.
        if (t < GROUP * kgs) {
            let hh = t / kgs;
            let grp = t % kgs;
            var s: array<f32, 8>;
            var m = NEG;
            var l = 0.0;
            if (c > c0) {
                m = run_max[t];
                l = run_sum[t];
            }
            let m_old = m;
            for (var r = 0u; r < DIM / 16u; r += 1u) {
                let j = grp + kgs * r;
                s[r] = NEG;
                if (j < len) {
                    let a = scratch[(hh * KEYS + j) * 2u];
                    let b = scratch[(hh * KEYS + j) * 2u + 1u];
                    let sum = ((((((0.0 + a.x) + a.y) + a.z) + a.w) + b.x) + b.y + b.z) + b.w;
                    s[r] = sum * params.scale;
                    if (is_non_finite(s[r])) {
                        atomicMin(&nonfinite[3], flat_row + hh * DIM);
                    }
                    m = max(m, s[r]);
                }
            }
            let f = exp_nonpos(m_old - m);
            l = l * f;
            for (var r = 0u; r < DIM / 16u; r += 1u) {
                let j = grp + kgs * r;
                var e = 0.0;
                if (j < len) {
                    e = exp_nonpos(s[r] - m);
                }
                weights[hh * KEYS + j] = e;
                l = l + e;
            }
            run_max[t] = m;
            run_sum[t] = l;
            rescale[t] = f;
        }
        workgroupBarrier();
        // 3. Weighted sums, rescaled onto the key groups' new maxima.
        for (var r = 0u; r < DIM / 16u; r += 1u) {
            let j = kg + kgs * r;
            if (j < len && any_non_finite4(vx[r])) {
                flag_first4(2u, vx[r], ((start + j) * params.kv_heads + g) * DIM + 4u * cv);
            }
        }
        for (var hh = 0u; hh < GROUP; hh += 1u) {
            var part = acc[hh] * rescale[hh * kgs + kg];
            for (var r = 0u; r < DIM / 16u; r += 1u) {
                part = part + weights[hh * KEYS + kg + kgs * r] * vx[r];
            }
            acc[hh] = part;
        }
        // The next chunk's values, in flight from here.
        if (c + 1u < c1) {
            vx = load_values(next, next_len, g, cv, kg);
        }
        start = next;
        len = next_len;
    }

    // 4. Merge the key groups' states per head, in key-group order: each (head, key group)
    // rescaled onto the head's maximum, then per output element the weighted sums.
    workgroupBarrier();
    for (var hh = 0u; hh < GROUP; hh += 1u) {
        scratch[(kg * GROUP + hh) * dv + cv] = acc[hh];
    }
    if (t < GROUP * kgs) {
        let hh = t / kgs;
        var m = NEG;
        for (var s = 0u; s < kgs; s += 1u) {
            m = max(m, run_max[hh * kgs + s]);
        }
        let f = exp_nonpos(run_max[t] - m);
        rescale[t] = f;
        run_sum[t] = run_sum[t] * f;
        if (t % kgs == 0u) {
            head_max[hh] = m;
        }
    }
    workgroupBarrier();
    for (var x = t; x < GROUP * DIM; x += 256u) {
        let hh = x / DIM;
        let d = x % DIM;
        var o = 0.0;
        var l = 0.0;
        for (var s = 0u; s < kgs; s += 1u) {
            o = o + scratch[(s * GROUP + hh) * dv + d / 4u][d % 4u] * rescale[hh * kgs + s];
            l = l + run_sum[hh * kgs + s];
        }
        let h = g * GROUP + hh;
        if (params.records == 0u) {
            let y = div_rounded(o, l);
            if (is_non_finite(o) || is_non_finite(y)) {
                atomicMin(&nonfinite[3], flat_row + x);
            }
            dst[4u * q_row + x] = y;
        } else {
            let record = ((i * params.heads + h) * params.records + rec) * (DIM + 2u);
            if (d == 0u) {
                dst[record] = head_max[hh];
                dst[record + 1u] = l;
            }
            dst[record + 2u + d] = o;
        }
    }
}
