// The chain input's absmax for bitlinear_chain_subgroup.wgsl (concatenated after it, which
// declares the chain's bindings and ChainJob). A producer's output is read and quantized by the
// output-access file (bitlinear_chain_out_coherent.wgsl or bitlinear_chain_out_atomic.wgsl).

// The absmax bits of the job's input, computed by the whole workgroup (four independent loads
// per iteration, as the fused GEMV); flags a non-finite chain input. Call from uniform control
// flow (a barrier).
fn ch_absmax(job: ChainJob, ids: GvIds, lane: u32, sg: u32, nsg: u32) -> u32 {
    let kv = job.vpr * 16u;
    let x4 = job.in_off / 4u;
    var top = 0u;
    var bad = NONE;
    for (var i = ids.vt; i < kv; i = i + 4u * GV_WG) {
        let i1 = min(i + GV_WG, kv - 1u);
        let i2 = min(i + 2u * GV_WG, kv - 1u);
        let i3 = min(i + 3u * GV_WG, kv - 1u);
        let t0 = aq_abs_bits(ch_in(job, i), x4 + i, &bad);
        let t1 = aq_abs_bits(ch_in(job, i1), x4 + i1, &bad);
        let t2 = aq_abs_bits(ch_in(job, i2), x4 + i2, &bad);
        let t3 = aq_abs_bits(ch_in(job, i3), x4 + i3, &bad);
        top = max(top, max(max(t0, t1), max(t2, t3)));
    }
    // A producer's non-finite output was flagged by the producer (Y_STATUS).
    if (bad != NONE && job.src == NONE) {
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
    return top;
}
