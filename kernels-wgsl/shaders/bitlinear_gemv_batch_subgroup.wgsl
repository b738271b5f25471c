// BitLinear GEMV for 1 <= M <= 8 f32 activation rows (batched decode: M requests against the same
// weights) with the activation quantization fused in; K % 64 == 0, any K. Subgroup reductions.
//
// A GEMV is bound by the weight stream, so M rows should cost little more than one: every thread
// loads each weight vec4 of its row block once and applies it to all MR rows, whose quantized
// activations sit in workgroup memory. MR = M is an override constant, and the per-row state (the
// MR x 4 exact i32 partial sums, absmax, row sums) sits in named registers (see gb_absmax).
//
// 1. absmax of every row (sign-cleared bits, as act_quant.wgsl), a = max(absmax, 1e-5) and
//    inv = 127 / a correctly rounded (exact_div_127), once per row by one thread each. The per-row
//    loops are the inner ones (over MR, a constant), so a thread has a load of every row in
//    flight at once, here and in the quantization.
// 2. The rows are quantized in K tiles of ST weight steps (ST * 64 values per row; the tile of all
//    MR rows fills GB_TILE vec4 = 14 KiB of workgroup memory), xq = clamp(round(x * inv), -128,
//    127) packed 4 per u32, and the row blocks of bitlinear_gemv_blocks.wgsl run over the tile.
//    A lane's first weight step of each tile is loaded before the tile is quantized, so the loads
//    are in flight meanwhile, and each later step is loaded one step ahead. Tile layout: vec4 (4 m + c) * ST + jj holds the 4 activation words
//    that pair with word c of weight vec4 jj of the tile, so a block's lanes read consecutive
//    vec4 (no bank conflicts).
// 3. Each thread sums the quantized values it wrote per row; the workgroup's row sums are
//    subtracted from the code-domain sums (bitlinear_common.wgsl), then rescale and store.
//
// Status words: 0 = the first non-finite x index (flat over [M, K]; cpu-ref checks x first),
// 1 = the first non-finite y index (flat over [M, out_stride]). The engine binds all M rows in one
// dispatch. Needs exact_div.wgsl, exact_div_127.wgsl, bitlinear_common.wgsl,
// bitlinear_gemv_blocks.wgsl, act_quant_common.wgsl.

// Activation rows of this dispatch (override constant, 1..=GB_MAX_M; the engine sets params.m).
override MR: u32 = 1u;
const GB_MAX_M: u32 = 8u;
// Vec4 of quantized activations staged per tile (all rows): 14 KiB, + gv_red's 1 KiB + 96 bytes.
const GB_TILE: u32 = 896u;

@group(0) @binding(0) var<storage, read> weights: array<vec4<u32>>;
// The weight tensor's scale s.
@group(0) @binding(1) var<storage, read> weight_scale: array<f32>;
// The activation rows, [M, K] floats.
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
// [M, out_stride] f32 bits of y, or i32 bits of acc (see `mode`).
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const X_STATUS: u32 = 0u;
const Y_STATUS: u32 = 1u;

// The quantized tile (layout above).
var<workgroup> gb_x: array<vec4<u32>, GB_TILE>;
// Per row: the absmax bits, the sum of the quantized values, 127 / a.
var<workgroup> gb_top: array<atomic<u32>, GB_MAX_M>;
var<workgroup> gb_sum: array<atomic<i32>, GB_MAX_M>;
var<workgroup> gb_inv: array<f32, GB_MAX_M>;

// Weight vec4 j of the block's rows if j < end (zero words otherwise, never used).
fn gb_load(n: u32, j: u32, end: u32, vpr: u32) -> GvRows {
    if (j >= end) {
        return GvRows();
    }
    return gv_load(n, j, vpr);
}

// Per-row state lives in named variables (r0 .. r7), each updated by a helper called once per
// row with a constant m: WGSL cannot unroll the row loops, and an array indexed by a loop
// variable is kept in local memory (the H200 driver gave this kernel 192 bytes of it per thread
// for MR >= 2; bench/examples/kernel_stats.rs). Rows m >= MR cost nothing: MR is a constant.

// absmax of row m at positions i and i2 into *top.
fn gb_absmax(top: ptr<function, u32>, bad: ptr<function, u32>, m: u32, i: u32, i2: u32, kv: u32) {
    if (m < MR) {
        let a = m * kv + i;
        let b = m * kv + i2;
        *top = max(*top, max(aq_abs_bits(x[a], a, bad), aq_abs_bits(x[b], b, bad)));
    }
}

// Row m's workgroup absmax (uniform control flow: m and MR are constants).
fn gb_publish_top(top: u32, m: u32, lane: u32) {
    if (m < MR) {
        let t = subgroupMax(top);
        if (lane == 0u) {
            atomicMax(&gb_top[m], t);
        }
    }
}

// Quantizes word r of row m's tile (x vec4 xi) into gb_x; its values are added to *rsum.
fn gb_quant(rsum: ptr<function, i32>, m: u32, xi: u32, slot: u32, lane4: u32) {
    if (m < MR) {
        let q = aq_round(x[m * (params.words_per_row * 4u) + xi], gb_inv[m]);
        *rsum += q.x + q.y + q.z + q.w;
        gb_x[slot][lane4] = aq_pack(q);
    }
}

// Row m's products for weight step w at tile column jj.
fn gb_dot(acc: ptr<function, vec4<i32>>, w: GvRows, m: u32, jj: u32, st: u32) {
    if (m < MR) {
        let b = 4u * m * st + jj;
        *acc += gv_dot(w, gb_x[b], gb_x[b + st], gb_x[b + 2u * st], gb_x[b + 3u * st]);
    }
}

// Row m's quantized-value sum into the workgroup total.
fn gb_publish_sum(rsum: i32, m: u32, lane: u32) {
    if (m < MR) {
        let s = subgroupAdd(rsum);
        if (lane == 0u) {
            atomicAdd(&gb_sum[m], s);
        }
    }
}

// Reduces row m's sums over the lanes, rescales and stores them (uniform control flow).
fn gb_store(acc: vec4<i32>, m: u32, ids: GvIds, ws: f32) {
    if (m < MR) {
        let total = gv_reduce(acc, ids);
        if (ids.l == 0u) {
            let row_sum = atomicLoad(&gb_sum[m]);
            let a = max(bitcast<f32>(atomicLoad(&gb_top[m])), 1e-5f);
            let scale = bitlinear_scale(ws, a);
            let base = m * params.out_stride + params.out_base + ids.n;
            for (var r = 0u; r < 4u; r = r + 1u) {
                if (ids.n + r < params.n) {
                    bitlinear_write(base + r, total[r] - row_sum, scale);
                }
            }
        }
    }
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_size) sg_size: u32,
) {
    let ids = gv_ids(wid, nwg, lane, sg, sg_size);
    // Weight vec4 per row (K / 64) and float vec4 per x row (K / 4 = packed words per row).
    let vpr = params.words_per_row / 4u;
    let kv = params.words_per_row * 4u;
    // Weight steps per tile.
    let st = GB_TILE / (4u * MR);

    // The first tile's first step, in flight during the absmax pass.
    var w = gb_load(ids.n, ids.l, min(st, vpr), vpr);
    if (ids.vt < GB_MAX_M) {
        atomicStore(&gb_top[ids.vt], 0u);
        atomicStore(&gb_sum[ids.vt], 0i);
    }
    workgroupBarrier();

    // 1. absmax per row: two positions of every row per iteration (2 MR independent loads in
    // flight; a clamped duplicate changes no maximum), then 127 / a.
    var bad = AQ_NONE;
    var t0 = 0u;
    var t1 = 0u;
    var t2 = 0u;
    var t3 = 0u;
    var t4 = 0u;
    var t5 = 0u;
    var t6 = 0u;
    var t7 = 0u;
    for (var i = ids.vt; i < kv; i = i + 2u * GV_WG) {
        let i2 = min(i + GV_WG, kv - 1u);
        gb_absmax(&t0, &bad, 0u, i, i2, kv);
        gb_absmax(&t1, &bad, 1u, i, i2, kv);
        gb_absmax(&t2, &bad, 2u, i, i2, kv);
        gb_absmax(&t3, &bad, 3u, i, i2, kv);
        gb_absmax(&t4, &bad, 4u, i, i2, kv);
        gb_absmax(&t5, &bad, 5u, i, i2, kv);
        gb_absmax(&t6, &bad, 6u, i, i2, kv);
        gb_absmax(&t7, &bad, 7u, i, i2, kv);
    }
    gb_publish_top(t0, 0u, lane);
    gb_publish_top(t1, 1u, lane);
    gb_publish_top(t2, 2u, lane);
    gb_publish_top(t3, 3u, lane);
    gb_publish_top(t4, 4u, lane);
    gb_publish_top(t5, 5u, lane);
    gb_publish_top(t6, 6u, lane);
    gb_publish_top(t7, 7u, lane);
    if (bad != AQ_NONE) {
        atomicMin(&nonfinite[X_STATUS], bad);
    }
    workgroupBarrier();
    if (ids.vt < MR) {
        gb_inv[ids.vt] = exact_div_127(max(bitcast<f32>(atomicLoad(&gb_top[ids.vt])), 1e-5f));
    }

    // 2. Tiles: quantize, then the row blocks over the tile.
    var a0 = vec4<i32>();
    var a1 = vec4<i32>();
    var a2 = vec4<i32>();
    var a3 = vec4<i32>();
    var a4 = vec4<i32>();
    var a5 = vec4<i32>();
    var a6 = vec4<i32>();
    var a7 = vec4<i32>();
    var s0 = 0i;
    var s1 = 0i;
    var s2 = 0i;
    var s3 = 0i;
    var s4 = 0i;
    var s5 = 0i;
    var s6 = 0i;
    var s7 = 0i;
    for (var t = 0u; t < vpr; t = t + st) {
        let steps = min(st, vpr - t);
        // The previous tile is consumed (and, on the first, gb_inv is written).
        workgroupBarrier();
        // The same word of every row per iteration: MR independent loads in flight.
        let words = 16u * steps;
        for (var r = ids.vt; r < words; r = r + GV_WG) {
            let dst = ((r >> 2u) & 3u) * st + (r >> 4u);
            let xi = 16u * t + r;
            let l4 = r & 3u;
            gb_quant(&s0, 0u, xi, dst, l4);
            gb_quant(&s1, 1u, xi, 4u * st + dst, l4);
            gb_quant(&s2, 2u, xi, 8u * st + dst, l4);
            gb_quant(&s3, 3u, xi, 12u * st + dst, l4);
            gb_quant(&s4, 4u, xi, 16u * st + dst, l4);
            gb_quant(&s5, 5u, xi, 20u * st + dst, l4);
            gb_quant(&s6, 6u, xi, 24u * st + dst, l4);
            gb_quant(&s7, 7u, xi, 28u * st + dst, l4);
        }
        workgroupBarrier();
        for (var jj = ids.l; jj < steps; jj = jj + TPR) {
            // Issue the next step's loads before this step's arithmetic.
            let next = gb_load(ids.n, t + jj + TPR, t + steps, vpr);
            gb_dot(&a0, w, 0u, jj, st);
            gb_dot(&a1, w, 1u, jj, st);
            gb_dot(&a2, w, 2u, jj, st);
            gb_dot(&a3, w, 3u, jj, st);
            gb_dot(&a4, w, 4u, jj, st);
            gb_dot(&a5, w, 5u, jj, st);
            gb_dot(&a6, w, 6u, jj, st);
            gb_dot(&a7, w, 7u, jj, st);
            w = next;
        }
        // The next tile's first step, in flight during its quantization.
        let nt = t + st;
        w = gb_load(ids.n, nt + ids.l, min(nt + st, vpr), vpr);
    }

    // 3. Row sums, reduce over the lanes, rescale, store.
    gb_publish_sum(s0, 0u, lane);
    gb_publish_sum(s1, 1u, lane);
    gb_publish_sum(s2, 2u, lane);
    gb_publish_sum(s3, 3u, lane);
    gb_publish_sum(s4, 4u, lane);
    gb_publish_sum(s5, 5u, lane);
    gb_publish_sum(s6, 6u, lane);
    gb_publish_sum(s7, 7u, lane);
    workgroupBarrier();
    let ws = weight_scale[0];
    gb_store(a0, 0u, ids, ws);
    gb_store(a1, 1u, ids, ws);
    gb_store(a2, 2u, ids, ws);
    gb_store(a3, 3u, ids, ws);
    gb_store(a4, 4u, ids, ws);
    gb_store(a5, 5u, ids, ws);
    gb_store(a6, 6u, ids, ws);
    gb_store(a7, 7u, ids, ws);
}
