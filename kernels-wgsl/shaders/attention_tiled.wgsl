// Query-tiled attention for prefill (flash-attention style): the same operation as attention.wgsl
// (q [Tq, Hq, D], k and v [Tk, Hkv, D], output [Tq, Hq, D], query head h reads kv head
// h / (Hq / Hkv), launch row i attends its first n_i = attend0 + i · attend_step keys), but one
// workgroup takes BQ query rows of one kv head g and streams that head's keys through workgroup
// memory once for all of them, BK keys at a time, instead of every (query, head) re-reading
// every key. A tile's rows are the (position, head) pairs of g's query heads in order
// f = i · R + (h - g·R), R = Hq / Hkv: grouped heads share their K/V tiles, and consecutive rows
// are contiguous in q (the group's heads are adjacent in a token's row).
//
// Keys are taken in cpu-ref's chunks of 256 (CHUNK), BK = 32 per tile (K and V loaded as
// coalesced vec4, zero past the keys any row attends). Within a chunk each row keeps a running
// maximum m (flash attention): a tile that raises it to m' rescales the chunk's l_c and o_c by
// exp(m - m'), and weighs its keys by p = exp(s - m'); at the chunk's end m is cpu-ref's m_c,
// and the chunks are merged in order with cpu-ref's recurrence (merge_factors), the result
// O / L correctly rounded (exact_div.wgsl). Each weight is thus a rescaling rounding or two
// away from cpu-ref's exp(s - m_c); on lavapipe that was as accurate as a max pass per chunk
// weighing by m_c exactly (the dot products' rounding dominates). Each score is summed in
// chunk_scores' order (attention.wgsl: eight vec4 partial sums over d ≡ 4p (mod 32), added in
// order), the weighted and l sums are reassociated as the untiled kernel's are. No subgroup
// operations.
//
// Causal: a tile's keys end at its last row's n_i (later key tiles are never visited: about half
// the work at Tq = Tk); within a tile, keys past a row's own n_i get weight 0 and no score
// (a row with no key in a chunk merges it with factors 1 and 0: no change).
// Rows are dealt to workgroups last tile first, so the longest causal rows start earliest.
//
// Thread maps (256 invocations, DG = D / 4 vec4 per row): scores and softmax, PR = 256 / BQ
// invocations per row, invocation t taking row t / PR and keys t % PR + PR·c (so eight
// neighbouring invocations read eight consecutive key rows: with rows padded by one vec4 the
// reads hit 32 distinct banks). Weighted sums: invocation t owns RT = BQ·D / 1024 rows × one vec4
// of dimensions, eight dimension vec4 and four rows per 32 lanes (each V vec4 read serves four
// rows, each P vec4 four keys). BQ·D >= 1024, D % 32 == 0, D <= 128 (the engine checks).
//
// Workgroup memory (bytes, `attention_tiled_workgroup_bytes` in src/tensor.rs computes it for
// the engine's choice of BQ): q tile 16·BQ·(DG + 1), K or V tile 16·BK·(DG + 1), weights
// 16·BQ·(BK/4 + 1), 2 · 1 KiB of per-row partials, 8·BQ row factors.
//
// Non-finite status words as attention.wgsl's: 0 = q, 1 = k, 2 = v (every value loaded is
// checked; the tiles of each head's last row load every key), 3 = output (a score beyond f32's
// range at its output row's first element, an output element at its own). Chunking as
// attention.wgsl's whole mode (q and the output bound from q_shift, k and v whole). Dispatch:
// linear, Hkv · ceil(rows · R / BQ) workgroups.

struct Params {
    rows: u32,        // query rows of this launch
    heads: u32,       // Hq
    kv_heads: u32,    // Hkv
    attend0: u32,     // keys attended by launch row 0
    attend_step: u32, // 1 when causal, else 0
    row_base: u32,    // row of the full q holding launch row 0
    q_shift: u32,     // row of q's and the output's bindings holding launch row 0
    scale: f32,
}

@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dst: array<vec4<f32>>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

// Head dimension D (override constant: 32, 64 or 128).
override DIM: u32 = 128u;
// Query rows per tile (override constant: 16, 32 or 64, with BQ · DIM >= 1024).
override BQ: u32 = 32u;
const WG: u32 = 256u;
// Keys per tile.
const BK: u32 = 32u;
override DG: u32 = DIM / 4u;
// Row strides in vec4, one vec4 of padding against bank conflicts.
override QS: u32 = DG + 1u;
const PS: u32 = BK / 4u + 1u;
// Invocations per row and keys per invocation in the score phase.
override PR: u32 = WG / BQ;
override KT: u32 = BK / PR;
// Rows per invocation in the weighted sums, and vec4 of a K / V tile each invocation loads.
override RG: u32 = WG / DG;
override RT: u32 = BQ / RG;
override LPT: u32 = BK * DG / WG;

var<workgroup> q_tile: array<vec4<f32>, BQ * QS>;
var<workgroup> kv_tile: array<vec4<f32>, BK * QS>;
var<workgroup> p_tile: array<vec4<f32>, BQ * PS>;
var<workgroup> red_max: array<f32, 256>;
var<workgroup> red_sum: array<f32, 256>;
// Per row: a tile's rescale of the chunk's sums (at r), the chunk merge's factors (running sums
// at r, the chunk's at BQ + r; each use fenced by barriers), and at the end
// the row's sum l.
var<workgroup> row_factor: array<f32, 2 * BQ>;

// Loads vec4 u of invocation t of the K or V tile at key `kt0` (zeros from key `len` on: a
// masked weight of 0 times a stale value could be NaN), flagging non-finite values in word `w`.
fn load_kv(from_v: bool, kt0: u32, len: u32, g: u32, t: u32, u: u32) -> vec4<f32> {
    let idx = t + WG * u;
    let j = idx / DG;
    let d4 = idx % DG;
    if (j >= len) {
        return vec4<f32>(0.0);
    }
    let at = ((kt0 + j) * params.kv_heads + g) * DG + d4;
    var x: vec4<f32>;
    if (from_v) {
        x = v[at];
        if (any_non_finite4(x)) {
            flag_v4(x, 4u * at, 1u);
        }
    } else {
        x = k[at];
        if (any_non_finite4(x)) {
            flag_first4(1u, x, 4u * at);
        }
    }
    return x;
}

// Stores invocation t's vec4 of a K or V tile (as load_kv dealt them).
fn store_kv(x: array<vec4<f32>, 4>, t: u32) {
    for (var u = 0u; u < LPT; u += 1u) {
        let idx = t + WG * u;
        kv_tile[(idx / DG) * QS + idx % DG] = x[u];
    }
}

// Scores of row r against keys part + PR·c of the K tile, times the scale, in chunk_scores'
// order (attention.wgsl): part p8 sums d = 4·p8 + 32u.. as a vec4 over u, the eight parts are
// added in order — so they are the untiled kernel's scores.
fn tile_scores(r: u32, part: u32) -> array<f32, 8> {
    var s: array<f32, 8>;
    for (var c = 0u; c < KT; c += 1u) {
        s[c] = 0.0;
    }
    for (var p8 = 0u; p8 < 8u; p8 += 1u) {
        var acc: array<vec4<f32>, 8>;
        for (var c = 0u; c < KT; c += 1u) {
            acc[c] = vec4<f32>(0.0);
        }
        for (var u = 0u; u < DIM / 32u; u += 1u) {
            let qv = q_tile[r * QS + p8 + 8u * u];
            for (var c = 0u; c < KT; c += 1u) {
                acc[c] = acc[c] + qv * kv_tile[(part + PR * c) * QS + p8 + 8u * u];
            }
        }
        for (var c = 0u; c < KT; c += 1u) {
            let a = acc[c];
            s[c] = s[c] + ((a.x + a.y) + (a.z + a.w));
        }
    }
    for (var c = 0u; c < KT; c += 1u) {
        s[c] = s[c] * params.scale;
    }
    return s;
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let wg = wid.x + wid.y * nwg.x;
    let group_size = params.heads / params.kv_heads;
    let group_rows = params.rows * group_size;
    let tiles = (group_rows + BQ - 1u) / BQ;
    if (wg >= tiles * params.kv_heads) {
        return;
    }
    // Workgroup-uniform from here to the tile loop: the early exit keeps barriers uniform.
    let g = wg % params.kv_heads;
    let f0 = (tiles - 1u - wg / params.kv_heads) * BQ;
    let tile_rows = min(BQ, group_rows - f0);
    let n_max = params.attend0 + ((f0 + tile_rows - 1u) / group_size) * params.attend_step;

    // The q tile, checked as it is loaded (each q value is in exactly one tile).
    for (var idx = t; idx < BQ * DG; idx += WG) {
        let r = idx / DG;
        let d4 = idx % DG;
        var x = vec4<f32>(0.0);
        if (r < tile_rows) {
            let f = f0 + r;
            let i = f / group_size;
            let h = g * group_size + f % group_size;
            x = q[((params.q_shift + i) * params.heads + h) * DG + d4];
            if (any_non_finite4(x)) {
                let at = 4u * (((params.row_base + i) * params.heads + h) * DG + d4);
                for (var c = 0u; c < 4u; c += 1u) {
                    if (is_non_finite(x[c])) {
                        atomicMin(&nonfinite[0], at + c);
                        break;
                    }
                }
            }
        }
        q_tile[r * QS + d4] = x;
    }

    // Score-phase row of this invocation, its keys attended and its output row's first element.
    let r = t / PR;
    let part = t % PR;
    let row_ok = r < tile_rows;
    let fr = f0 + r;
    let ir = fr / group_size;
    let n_r = params.attend0 + ir * params.attend_step;
    let flat_row = ((params.row_base + ir) * params.heads + g * group_size + fr % group_size) * DIM;
    var m_run = 0.0;
    var l_run = 0.0;

    // Weighted-sum phase: dimension vec4 `dg`, rows rg + RG·u; O (merged) and o_c (this chunk).
    let lane = t % 32u;
    let warp = t / 32u;
    let dg = lane % 8u + 8u * (warp % (DG / 8u));
    let rg = lane / 8u + 4u * (warp / (DG / 8u));
    var o: array<vec4<f32>, 4>;
    var oc: array<vec4<f32>, 4>;

    let chunks = (n_max + CHUNK - 1u) / CHUNK;
    for (var ch = 0u; ch < chunks; ch += 1u) {
        let c0 = ch * CHUNK;
        let c_end = min(n_max, c0 + CHUNK);
        let c_tiles = (c_end - c0 + BK - 1u) / BK;
        // Each row's running maximum over the chunk's tiles so far (sentinel: none yet).
        var m_part = -3.4028235e38;
        // Weights p = exp(s - m), l_c and o_c[d] = Σ p·v over the chunk, rescaled by
        // exp(m_old - m) when a tile raises a row's running maximum m (flash attention).
        var l_part = 0.0;
        for (var u = 0u; u < 4u; u += 1u) {
            oc[u] = vec4<f32>(0.0);
        }
        var m_c = 0.0;
        for (var kt = 0u; kt < c_tiles; kt += 1u) {
            let kt0 = c0 + kt * BK;
            let len = min(BK, c_end - kt0);
            // Both tiles' global loads in flight together; V waits in registers until K is used.
            var kx: array<vec4<f32>, 4>;
            var vx: array<vec4<f32>, 4>;
            for (var u = 0u; u < LPT; u += 1u) {
                kx[u] = load_kv(false, kt0, len, g, t, u);
                vx[u] = load_kv(true, kt0, len, g, t, u);
            }
            store_kv(kx, t);
            workgroupBarrier();
            let s = tile_scores(r, part);
            // Masked keys (past the row's n_i, or rows past the tile's) take no part; the lowest
            // finite f32 is max's identity.
            for (var c = 0u; c < KT; c += 1u) {
                if (row_ok && kt0 + part + PR * c < n_r) {
                    if (is_non_finite(s[c])) {
                        atomicMin(&nonfinite[3], flat_row);
                    }
                    m_part = max(m_part, s[c]);
                }
            }
            red_max[t] = m_part;
            workgroupBarrier();
            // Every invocation is done reading K: V takes its place (read after the next barrier).
            store_kv(vx, t);
            // The row's running maximum, the same in all PR invocations of the row (same values,
            // same order), and the rescale of what the chunk summed so far (1 when unchanged;
            // 0 from the sentinel, when nothing was summed).
            let m_old = m_c;
            m_c = red_max[r * PR];
            for (var i = 1u; i < PR; i += 1u) {
                m_c = max(m_c, red_max[r * PR + i]);
            }
            var a = 1.0;
            if (kt > 0u) {
                a = exp_nonpos(m_old - m_c);
            }
            l_part = l_part * a;
            if (part == 0u) {
                row_factor[r] = a;
            }
            for (var c = 0u; c < KT; c += 1u) {
                let j = part + PR * c;
                var p = 0.0;
                if (row_ok && kt0 + j < n_r) {
                    p = exp_nonpos(s[c] - m_c);
                }
                l_part = l_part + p;
                p_tile[r * PS + j / 4u][j % 4u] = p;
            }
            workgroupBarrier();
            // o_c = o_c·a + Σ_j p_j·v_j over the tile's keys, four keys per step.
            for (var u = 0u; u < RT; u += 1u) {
                oc[u] = oc[u] * row_factor[rg + RG * u];
            }
            for (var jq = 0u; jq < (len + 3u) / 4u; jq += 1u) {
                var pv: array<vec4<f32>, 4>;
                for (var u = 0u; u < RT; u += 1u) {
                    pv[u] = p_tile[(rg + RG * u) * PS + jq];
                }
                for (var c = 0u; c < 4u; c += 1u) {
                    let x = kv_tile[(4u * jq + c) * QS + dg];
                    for (var u = 0u; u < RT; u += 1u) {
                        oc[u] = oc[u] + pv[u][c] * x;
                    }
                }
            }
            // kv_tile, p_tile and red_max are rewritten by the next tile.
            workgroupBarrier();
        }
        // The merge of cpu-ref's step 3 (merge_factors; the first chunk starts the state). A row
        // with no key in this chunk has m_c at the sentinel, l_c = 0 and o_c = 0: factors 1, 0.
        red_sum[t] = l_part;
        workgroupBarrier();
        var l_c = red_sum[r * PR];
        for (var i = 1u; i < PR; i += 1u) {
            l_c = l_c + red_sum[r * PR + i];
        }
        var f = vec3<f32>(0.0, 1.0, m_c);
        if (ch > 0u) {
            f = merge_factors(m_run, m_c);
        }
        l_run = l_run * f.x + l_c * f.y;
        m_run = f.z;
        if (part == 0u) {
            row_factor[r] = f.x;
            row_factor[BQ + r] = f.y;
        }
        workgroupBarrier();
        for (var u = 0u; u < RT; u += 1u) {
            let rr = rg + RG * u;
            if (ch == 0u) {
                o[u] = oc[u];
            } else {
                o[u] = o[u] * row_factor[rr] + oc[u] * row_factor[BQ + rr];
            }
        }
        // red_sum and the row factors are rewritten by the next chunk.
        workgroupBarrier();
    }

    if (part == 0u) {
        row_factor[r] = l_run;
    }
    workgroupBarrier();
    for (var u = 0u; u < RT; u += 1u) {
        let rr = rg + RG * u;
        if (rr < tile_rows) {
            let f = f0 + rr;
            let i = f / group_size;
            let h = g * group_size + f % group_size;
            let l = row_factor[rr];
            let x = o[u];
            let y = vec4<f32>(div_rounded(x.x, l), div_rounded(x.y, l), div_rounded(x.z, l), div_rounded(x.w, l));
            if (any_non_finite4(y)) {
                let at = 4u * (((params.row_base + i) * params.heads + h) * DG + dg);
                for (var c = 0u; c < 4u; c += 1u) {
                    if (is_non_finite(y[c])) {
                        atomicMin(&nonfinite[3], at + c);
                        break;
                    }
                }
            }
            dst[((params.q_shift + i) * params.heads + h) * DG + dg] = y;
        }
    }
}
