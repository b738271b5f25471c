// BitLinear GEMV on quantized activations for 1 <= M <= 8 and K % 64 == 0, with the activation
// rows staged in workgroup memory: the batched GEMV of bitlinear_gemv_batch_subgroup.wgsl for
// activations an act_quant dispatch already quantized (so no workgroup reads f32 rows, twice,
// to quantize them itself). Subgroup reductions.
//
// Each thread loads each weight vec4 of its row block once and applies it to all MR rows, which
// are copied tile by tile (ST weight steps per row, GS_TILE vec4 = 14 KiB for all rows) from the
// packed activations into workgroup memory in the batched GEMV's layout: vec4 (4 m + c) * ST + jj
// holds the 4 activation words that pair with word c of weight vec4 jj of the tile. The copying
// threads also sum the values they copy per row (dot4I8Packed with ones); the workgroup's row sums
// are subtracted from the code-domain sums (bitlinear_common.wgsl). MR = M is an override
// constant, so the per-row loops unroll and the MR x 4 partial sums stay in registers.
//
// Needs bitlinear_common.wgsl and bitlinear_gemv_blocks.wgsl.

// Activation rows of this dispatch (override constant, 1..=GS_MAX_M; the engine sets params.m).
override MR: u32 = 1u;
const GS_MAX_M: u32 = 8u;
// Vec4 of activation words staged per tile (all rows): 14 KiB, + gv_red's 1 KiB + 32 bytes.
const GS_TILE: u32 = 896u;

// The staged tile (layout above) and the per-row sums of the activations.
var<workgroup> gs_x: array<vec4<u32>, GS_TILE>;
var<workgroup> gs_sum: array<atomic<i32>, GS_MAX_M>;

// Weight vec4 j of the block's rows if j < end (zero words otherwise, never used).
fn gs_load(n: u32, j: u32, end: u32, vpr: u32) -> GvRows {
    if (j >= end) {
        return GvRows();
    }
    return gv_load(n, j, vpr);
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
    // Weight vec4 per row (K / 64); an activation row is words_per_row vec4.
    let vpr = params.words_per_row / 4u;
    let xvr = params.words_per_row;
    // Weight steps per tile.
    let st = GS_TILE / (4u * MR);

    // The first tile's first step, in flight during the first copy.
    var w = gs_load(ids.n, ids.l, min(st, vpr), vpr);
    if (ids.vt < GS_MAX_M) {
        atomicStore(&gs_sum[ids.vt], 0i);
    }

    var acc: array<vec4<i32>, GS_MAX_M>;
    var rsum: array<i32, GS_MAX_M>;
    for (var t0 = 0u; t0 < vpr; t0 = t0 + st) {
        let steps = min(st, vpr - t0);
        // The previous tile is consumed (and, on the first, gs_sum is cleared).
        workgroupBarrier();
        // The same vec4 of every row per iteration: MR independent loads in flight.
        let vecs = 4u * steps;
        for (var v = ids.vt; v < vecs; v = v + GV_WG) {
            let dst = (v & 3u) * st + (v >> 2u);
            for (var m = 0u; m < MR; m = m + 1u) {
                let a = act[m * xvr + 4u * t0 + v];
                rsum[m] += bitlinear_sum_words(a.x, a.y, a.z, a.w);
                gs_x[4u * m * st + dst] = a;
            }
        }
        workgroupBarrier();
        for (var jj = ids.l; jj < steps; jj = jj + TPR) {
            // Issue the next step's loads before this step's arithmetic.
            let next = gs_load(ids.n, t0 + jj + TPR, t0 + steps, vpr);
            for (var m = 0u; m < MR; m = m + 1u) {
                let b = 4u * m * st + jj;
                acc[m] += gv_dot(w, gs_x[b], gs_x[b + st], gs_x[b + 2u * st], gs_x[b + 3u * st]);
            }
            w = next;
        }
        // The next tile's first step, in flight during its copy.
        let next = t0 + st;
        w = gs_load(ids.n, next + ids.l, min(next + st, vpr), vpr);
    }

    // Row sums, reduce over the lanes, rescale, store.
    for (var m = 0u; m < MR; m = m + 1u) {
        let s = subgroupAdd(rsum[m]);
        if (lane == 0u) {
            atomicAdd(&gs_sum[m], s);
        }
    }
    workgroupBarrier();
    let ws = weight_scale[0];
    for (var m = 0u; m < MR; m = m + 1u) {
        let total = gv_reduce(acc[m], ids);
        if (ids.l == 0u) {
            let row_sum = atomicLoad(&gs_sum[m]);
            let scale = bitlinear_scale(ws, act_absmax[params.m_base + m]);
            let base = m * params.out_stride + params.out_base + ids.n;
            for (var r = 0u; r < 4u; r = r + 1u) {
                if (ids.n + r < params.n) {
                    bitlinear_write(base + r, total[r] - row_sum, scale);
                }
            }
        }
    }
}
