// BitLinear GEMV for 1 <= M <= 8 f32 activation rows (batched decode) with the activation
// quantization fused in, laid out for a short critical path; K % 64 == 0, any K. Subgroup
// reductions; needs a subgroup size of at least 8 and 30 KiB of workgroup memory (more than the
// WebGPU default: the engine checks the device's limits).
//
// Same arithmetic as bitlinear_gemv_batch_subgroup.wgsl (absmax of the sign-cleared bits,
// a = max(absmax, 1e-5), inv = 127 / a correctly rounded, xq = clamp(round(x * inv), -128, 127),
// code-domain dot products minus the activation row sum, the exact epilogue of
// bitlinear_common.wgsl), but the phases are arranged so that a dispatch waits on as few serial
// steps as possible:
//
// 1. absmax of every row, the row loop innermost (a load of every row in flight), one
//    subgroupMax per row, each subgroup's maxima to workgroup memory; ONE barrier.
// 2. Every subgroup derives a and 127 / a itself: lane r computes row r (exact_div, all rows in
//    parallel), subgroupShuffle hands them to every lane. No barrier, no one-thread serial pass.
// 3. The rows are quantized into workgroup memory in K tiles (GL_TILE vec4, 28 KiB: one tile
//    for K <= 3584 at M = 8, K <= 14336 at M = 2); one barrier per tile (two from the second
//    tile on). Tile layout as the batched GEMV: vec4 (4 m + c) * ST + jj
//    holds the 4 activation words that pair with word c of weight vec4 jj, so a block's lanes
//    read consecutive vec4.
// 4. Each lane keeps exact i32 sums per (row, weight row) and its own partial activation row
//    sums, subtracted from its partials (integer sums distribute, so the total is exact; no
//    workgroup-wide row sum, no barrier for it).
// 5. Epilogue with no barrier when a 4-row block fits in a subgroup (TPR <= subgroup size): a
//    butterfly of subgroupShuffleXor leaves every lane of the block with all 4 M totals, and the
//    lanes write them in parallel (one output each). Wider blocks combine their subgroups'
//    totals through workgroup memory (the tile's, two barriers).
//
// Status words: 0 = the first non-finite x index (flat over [M, K]; cpu-ref checks x first),
// 1 = the first non-finite y index (flat over [M, out_stride]). The engine binds all M rows in one
// dispatch. Needs exact_div.wgsl, exact_div_127.wgsl,
// bitlinear_common.wgsl, bitlinear_gemv_blocks.wgsl, act_quant_common.wgsl.

// Activation rows of this dispatch (override constant, 1..=GL_MAX_M; the engine sets params.m).
override MR: u32 = 1u;
const GL_MAX_M: u32 = 8u;
// Vec4 of quantized activations staged per tile (all rows): 28 KiB, so that the kernel's
// 30 KiB fit a 32 KiB device.
const GL_TILE: u32 = 1792u;
// Subgroups per workgroup at the smallest supported subgroup size (8).
const GL_MAX_SUBGROUPS: u32 = 32u;

@group(0) @binding(0) var<storage, read> weights: array<vec4<u32>>;
// The weight tensor's scale s.
@group(0) @binding(1) var<storage, read> weight_scale: array<f32>;
// The activation rows, [M, K] floats.
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
// [M, out_stride] f32 bits of y, or i32 bits of acc (see `mode`).
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const X_STATUS: u32 = 0u;
const Y_STATUS: u32 = 1u;

// The quantized tile (layout above); wide blocks then put each subgroup's totals (i32 bits) at
// index subgroup * MR + m.
var<workgroup> gl_x: array<vec4<u32>, GL_TILE>;
// Absmax bits per subgroup and row: index subgroup * GL_MAX_M + m.
var<workgroup> gl_top: array<u32, 256>;

// Weight vec4 j of the block's rows if j < end (zero words otherwise, never used).
fn gl_load(n: u32, j: u32, end: u32, vpr: u32) -> GvRows {
    if (j >= end) {
        return GvRows();
    }
    return gv_load(n, j, vpr);
}

// The sum of the 16 signed activations of one vec4.
fn gl_sum4(v: vec4<u32>) -> i32 {
    return bitlinear_sum_words(v.x, v.y, v.z, v.w);
}

// The absmax of row r over the subgroups' maxima (r < MR).
fn gl_row_top(r: u32, nsg: u32) -> u32 {
    var t = 0u;
    for (var s = 0u; s < nsg; s = s + 1u) {
        t = max(t, gl_top[s * GL_MAX_M + r]);
    }
    return t;
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(num_subgroups) nsg: u32,
) {
    let ids = gv_ids(wid, nwg, lane, sg, sg_size);
    // Weight vec4 per row (K / 64) and float vec4 per x row (K / 4 = packed words per row).
    let vpr = params.words_per_row / 4u;
    let kv = params.words_per_row * 4u;
    // Weight steps per tile.
    let st = GL_TILE / (4u * MR);

    // The first tile's first step, in flight during the absmax pass.
    var w = gl_load(ids.n, ids.l, min(st, vpr), vpr);

    // 1. absmax per row: two positions of every row per iteration (2 MR independent loads in
    // flight; the m loops unroll; a clamped duplicate changes no maximum).
    var bad = AQ_NONE;
    var top: array<u32, GL_MAX_M>;
    for (var i = ids.vt; i < kv; i = i + 2u * GV_WG) {
        let i2 = min(i + GV_WG, kv - 1u);
        for (var m = 0u; m < MR; m = m + 1u) {
            let a = m * kv + i;
            let b = m * kv + i2;
            let t = max(aq_abs_bits(x[a], a, &bad), aq_abs_bits(x[b], b, &bad));
            top[m] = max(top[m], t);
        }
    }
    for (var m = 0u; m < MR; m = m + 1u) {
        let t = subgroupMax(top[m]);
        if (lane == 0u) {
            gl_top[sg * GL_MAX_M + m] = t;
        }
    }
    if (bad != AQ_NONE) {
        atomicMin(&nonfinite[X_STATUS], bad);
    }
    workgroupBarrier();

    // 2. a and 127 / a of row r on lane r (and r + subgroup size when the subgroup has fewer
    // lanes than rows), then broadcast: every lane holds every row's values.
    let a0 = max(bitcast<f32>(gl_row_top(min(lane, MR - 1u), nsg)), 1e-5f);
    let inv0 = exact_div_127(a0);
    var a1 = a0;
    var inv1 = inv0;
    if (sg_size < MR) {
        a1 = max(bitcast<f32>(gl_row_top(min(lane + sg_size, MR - 1u), nsg)), 1e-5f);
        inv1 = exact_div_127(a1);
    }
    var inv: array<f32, GL_MAX_M>;
    var amax: array<f32, GL_MAX_M>;
    for (var m = 0u; m < MR; m = m + 1u) {
        let second = m >= sg_size;
        inv[m] = subgroupShuffle(select(inv0, inv1, second), m % sg_size);
        amax[m] = subgroupShuffle(select(a0, a1, second), m % sg_size);
    }

    // 3-4. Tiles: quantize, then the row blocks over the tile.
    var acc: array<vec4<i32>, GL_MAX_M>;
    var rs: array<i32, GL_MAX_M>;
    for (var t0 = 0u; t0 < vpr; t0 = t0 + st) {
        let steps = min(st, vpr - t0);
        if (t0 > 0u) {
            // The previous tile is consumed.
            workgroupBarrier();
        }
        // The same word of every row per iteration: MR independent loads in flight.
        let words = 16u * steps;
        for (var r = ids.vt; r < words; r = r + GV_WG) {
            let dst = ((r >> 2u) & 3u) * st + (r >> 4u);
            for (var m = 0u; m < MR; m = m + 1u) {
                let v = x[m * kv + 16u * t0 + r];
                let q = aq_round(v, inv[m]);
                gl_x[4u * m * st + dst][r & 3u] = aq_pack(q);
            }
        }
        workgroupBarrier();
        for (var jj = ids.l; jj < steps; jj = jj + TPR) {
            // Issue the next step's loads before this step's arithmetic.
            let next = gl_load(ids.n, t0 + jj + TPR, t0 + steps, vpr);
            for (var m = 0u; m < MR; m = m + 1u) {
                let b = 4u * m * st + jj;
                let xa = gl_x[b];
                let xb = gl_x[b + st];
                let xc = gl_x[b + 2u * st];
                let xd = gl_x[b + 3u * st];
                acc[m] += gv_dot(w, xa, xb, xc, xd);
                rs[m] += gl_sum4(xa) + gl_sum4(xb) + gl_sum4(xc) + gl_sum4(xd);
            }
            w = next;
        }
        // The next tile's first step, in flight during its quantization.
        let next = t0 + st;
        w = gl_load(ids.n, next + ids.l, min(next + st, vpr), vpr);
    }

    // 5. Reduce over the block's lanes: butterfly within the subgroup (every lane ends with the
    // totals), then, for blocks wider than a subgroup, through workgroup memory.
    let seg = min(TPR, sg_size);
    for (var m = 0u; m < MR; m = m + 1u) {
        acc[m] -= vec4<i32>(rs[m]);
    }
    for (var o = seg >> 1u; o > 0u; o = o >> 1u) {
        for (var m = 0u; m < MR; m = m + 1u) {
            acc[m] += subgroupShuffleXor(acc[m], o);
        }
    }
    let wide = TPR > sg_size;
    if (wide) {
        // Every lane is done reading the tile.
        workgroupBarrier();
        if (lane == 0u) {
            for (var m = 0u; m < MR; m = m + 1u) {
                gl_x[sg * MR + m] = bitcast<vec4<u32>>(acc[m]);
            }
        }
        workgroupBarrier();
    }
    // The block's first `seg` lanes write its 4 MR outputs, one each per round.
    let first = (ids.vt / TPR) * max(TPR / sg_size, 1u);
    if (ids.l < seg) {
        let ws = weight_scale[0];
        for (var o = ids.l; o < 4u * MR; o = o + seg) {
            let mo = o >> 2u;
            let r = o & 3u;
            var total = 0i;
            var a = 1.0;
            for (var m = 0u; m < MR; m = m + 1u) {
                if (m == mo) {
                    total = acc[m][r];
                    a = amax[m];
                }
            }
            if (wide) {
                total = 0i;
                for (var s = 0u; s < TPR / sg_size; s = s + 1u) {
                    total += bitcast<i32>(gl_x[(first + s) * MR + mo][r]);
                }
            }
            if (ids.n + r < params.n) {
                let idx = mo * params.out_stride + params.out_base + ids.n + r;
                bitlinear_write(idx, total, bitlinear_scale(ws, a));
            }
        }
    }
}
