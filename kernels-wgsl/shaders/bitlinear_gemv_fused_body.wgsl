// The body of the fused GEMVs (bitlinear_gemv_fused_subgroup.wgsl and the grouped
// bitlinear_gemv_fused_group_subgroup.wgsl): quantize this workgroup's activation row, run its
// row blocks, reduce. Only the store differs between them, so each entry file defines
// `gf_store(m, n, total, row_sum, a)`: lane 0 of the block of rows n .. n + 3 stores the block's
// code-domain sums `total` (minus the row sum `row_sum`) for activation row m, whose absmax is a.
//
// What the body quantizes comes through three input hooks, from bitlinear_gemv_fused_input.wgsl
// (x as it is) or bitlinear_gemv_fused_norm.wgsl (x's RMSNorm, computed here):
// `gf_prepare(m, kv, t, first) -> f32` once per workgroup (uniform control flow; its value is
// passed on), `gf_input(v, at, col, prep) -> vec4<f32>` for x's vec4 `v` = x[at] of the [M, K]
// rows (column vec4 `col`), and `gf_flag_input(bad)` for the lowest non-finite input index.
// The body loads x itself and the hook only transforms it: with the load inside the hook (the
// plain hook returning x[at]) the H200's driver compiled a kernel 0.35 µs slower per call
// (chained decode stack 854 → 896 µs; the same WGSL otherwise).
//
// The kernel declares `weights` (binding 0), `x: array<vec4<f32>>` (the [M, K] rows) and
// X_STATUS. Needs bitlinear_common.wgsl, bitlinear_gemv_blocks.wgsl,
// bitlinear_gemv_fused_common.wgsl, act_quant_common.wgsl, exact_div.wgsl, exact_div_127.wgsl
// and one of the input hook files.

fn gf_run(wid: vec3<u32>, nwg: vec3<u32>, lane: u32, sg: u32, sg_size: u32, nsg: u32) {
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

    // The input's own pass, if any (the first row block's workgroup of each row stores what
    // the whole launch stores once).
    let prep = gf_prepare(m, kv, ids.vt, wid.y == 0u && wid.z == 0u);

    // 2. absmax, four independent loads per iteration (clamped duplicates change no maximum).
    var top = 0u;
    var bad = NONE;
    for (var i = ids.vt; i < kv; i = i + 4u * GV_WG) {
        let c1 = min(i + GV_WG, kv - 1u);
        let c2 = min(i + 2u * GV_WG, kv - 1u);
        let c3 = min(i + 3u * GV_WG, kv - 1u);
        let t0 = aq_abs_bits(gf_input(x[x0 + i], x0 + i, i, prep), x0 + i, &bad);
        let t1 = aq_abs_bits(gf_input(x[x0 + c1], x0 + c1, c1, prep), x0 + c1, &bad);
        let t2 = aq_abs_bits(gf_input(x[x0 + c2], x0 + c2, c2, prep), x0 + c2, &bad);
        let t3 = aq_abs_bits(gf_input(x[x0 + c3], x0 + c3, c3, prep), x0 + c3, &bad);
        top = max(top, max(max(t0, t1), max(t2, t3)));
    }
    if (bad != NONE) {
        gf_flag_input(bad);
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
        rs += gf_pack(gf_input(x[x0 + i], x0 + i, i, prep), i, inv, vpr);
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
        gf_store(m, ids.n, total, row_sum, a);
    }
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
    gf_run(wid, nwg, lane, sg, sg_size, nsg);
}
