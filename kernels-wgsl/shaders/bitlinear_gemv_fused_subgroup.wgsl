// BitLinear GEMV for f32 activation rows (decode: M = 1, or M <= 8 requests batched) with the
// activation quantization fused in; K % 64 == 0 and K <= GF_MAX_K. Subgroup reductions.
//
// The grid's x index is the activation row (y and z number the row blocks): each workgroup
// quantizes one row and runs its row blocks against it, exactly as for M = 1. The M workgroups
// of a row block are adjacent in dispatch order, so they read the same weights at about the same
// time (one DRAM read, L2 hits for the rest): M rows cost one weight stream and M times the
// (parallel) per-workgroup work, where a kernel that applied each weight load to all M rows had
// every workgroup quantize all M rows.
//
// Every workgroup quantizes the (small, cache-resident) row itself, exactly as act_quant.wgsl
// does — absmax of the sign-cleared bits, a = max(absmax, 1e-5), inv = 127 / a correctly
// rounded (exact_div_127: 1.347 vs 1.424 ms for the H200 decode stack against the 25-step
// exact_div), xq = clamp(round(x * inv), -128, 127) — into workgroup memory, then runs the row
// blocks of bitlinear_gemv_blocks.wgsl against it. So BitLinear on f32 activations is one
// dispatch instead of two, and the quantized row never goes through memory. The first DEPTH
// steps of weight loads are issued before the quantization, so they are in flight while it
// runs. The activation row sum (for the code-domain trick of bitlinear_common.wgsl) falls out of
// the quantization.
//
// Status words: 0 = the first non-finite x index (flat over [M, K]; cpu-ref checks x first),
// 1 = the first non-finite y index (flat over [M, out_stride]); the engine binds all M rows in one
// dispatch. Needs bitlinear_common.wgsl, bitlinear_gemv_blocks.wgsl,
// bitlinear_gemv_fused_common.wgsl, act_quant_common.wgsl, exact_div.wgsl, exact_div_127.wgsl.

@group(0) @binding(0) var<storage, read> weights: array<vec4<u32>>;
// The weight tensor's scale s.
@group(0) @binding(1) var<storage, read> weight_scale: array<f32>;
// The activation rows, [M, K] floats.
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
// [out_stride] f32 bits of y, or i32 bits of acc (see `mode`).
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const X_STATUS: u32 = 0u;
const Y_STATUS: u32 = 1u;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(num_subgroups) nsg: u32,
) {
    let ids = gv_ids(vec3<u32>(wid.y, wid.z, 0u), vec3<u32>(nwg.y, nwg.z, 1u), lane, sg, sg_size);
    let vpr = params.words_per_row / 4u;
    // K / 4 float vec4 (K % 64 == 0, so no padding words).
    let kv = params.words_per_row * 4u;
    // This workgroup's activation row, and the offset of its first vec4.
    let m = wid.x;
    let x0 = m * kv;

    // 1. The first DEPTH weight steps, in flight during the quantization.
    let j0 = ids.l;
    var w0 = gv_load_if(ids.n, j0, vpr);
    var w1 = GvRows();
    var w2 = GvRows();
    var w3 = GvRows();
    if (DEPTH > 1u) {
        w1 = gv_load_if(ids.n, j0 + TPR, vpr);
    }
    if (DEPTH > 2u) {
        w2 = gv_load_if(ids.n, j0 + 2u * TPR, vpr);
    }
    if (DEPTH > 3u) {
        w3 = gv_load_if(ids.n, j0 + 3u * TPR, vpr);
    }

    // 2. absmax, four independent loads per iteration (clamped duplicates change no maximum).
    var top = 0u;
    var bad = NONE;
    for (var i = ids.vt; i < kv; i = i + 4u * GV_WG) {
        let i1 = x0 + min(i + GV_WG, kv - 1u);
        let i2 = x0 + min(i + 2u * GV_WG, kv - 1u);
        let i3 = x0 + min(i + 3u * GV_WG, kv - 1u);
        let t0 = aq_abs_bits(x[x0 + i], x0 + i, &bad);
        let t1 = aq_abs_bits(x[i1], i1, &bad);
        let t2 = aq_abs_bits(x[i2], i2, &bad);
        let t3 = aq_abs_bits(x[i3], i3, &bad);
        top = max(top, max(max(t0, t1), max(t2, t3)));
    }
    if (bad != NONE) {
        atomicMin(&nonfinite[X_STATUS], bad);
    }
    top = subgroupMax(top);
    if (lane == 0u) {
        gv_red[sg].x = bitcast<i32>(top);
    }
    workgroupBarrier();
    for (var s = 0u; s < nsg; s = s + 1u) {
        top = max(top, bitcast<u32>(gv_red[s].x));
    }
    let a = max(bitcast<f32>(top), 1e-5f);
    let inv = exact_div_127(a);

    // 3. Quantize and pack into workgroup memory; the row sum on the way.
    var rs = 0i;
    for (var i = ids.vt; i < kv; i = i + GV_WG) {
        rs += gf_pack(x[x0 + i], i, inv, vpr);
    }
    rs = subgroupAdd(rs);
    if (lane == 0u) {
        gv_red[sg].y = rs;
    }
    workgroupBarrier();
    var row_sum = 0i;
    for (var s = 0u; s < nsg; s = s + 1u) {
        row_sum += gv_red[s].y;
    }

    // 4. The row blocks: use each step's registers, then reload them DEPTH steps ahead.
    var acc = GfAcc();
    var j = j0;
    loop {
        if (j >= vpr) {
            break;
        }
        let jn = j + DEPTH * TPR;
        gf_step(w0, j, vpr, &acc);
        w0 = gv_load_if(ids.n, jn, vpr);
        if (DEPTH > 1u) {
            gf_step(w1, j + TPR, vpr, &acc);
            w1 = gv_load_if(ids.n, jn + TPR, vpr);
        }
        if (DEPTH > 2u) {
            gf_step(w2, j + 2u * TPR, vpr, &acc);
            w2 = gv_load_if(ids.n, jn + 2u * TPR, vpr);
        }
        if (DEPTH > 3u) {
            gf_step(w3, j + 3u * TPR, vpr, &acc);
            w3 = gv_load_if(ids.n, jn + 3u * TPR, vpr);
        }
        j = jn;
    }

    // 5. Reduce over the lanes, rescale, store.
    let total = gv_reduce(gf_total(acc), ids);
    if (ids.l == 0u) {
        let scale = bitlinear_scale(weight_scale[0], a);
        let base = m * params.out_stride + params.out_base + ids.n;
        for (var r = 0u; r < 4u; r = r + 1u) {
            if (ids.n + r < params.n) {
                bitlinear_write(base + r, total[r] - row_sum, scale);
            }
        }
    }
}
