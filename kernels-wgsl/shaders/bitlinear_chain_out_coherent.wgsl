// Output access of bitlinear_chain_subgroup.wgsl on devices with wgpu's
// MEMORY_DECORATION_COHERENT (Vulkan, DX12, Metal 3.2+): `out` is a plain vec4 array declared
// @coherent, so another workgroup's stores, published behind the producer's storage barrier and
// counter, reach a consumer's loads past any non-coherent cache (without the decoration the
// H200 returned stale values to plain loads). A consumer then reads its input as vec4 with four
// loads in flight per step and quantizes it as the chain input is quantized, where 32-bit
// atomic loads needed a load per value and shuffles to pack them. H200, 2B4T chained stack as
// one LinearChain dispatch, three alternating rounds: 837-838 µs with the atomic file, 722 µs
// with this one.
// Defines `out`, ch_store, ch_first and ch_quantize_output, as bitlinear_chain_out_atomic.wgsl
// does.

@coherent @group(0) @binding(2) var<storage, read_write> out: array<vec4<u32>>;

// Stores word idx of the output arena.
fn ch_store(idx: u32, bits: u32) {
    out[idx >> 2u][idx & 3u] = bits;
}

// Thread vt's first input vec4 (clamped: a thread past the input's end quantizes nothing),
// loaded before the input's scale is known. Producers' outputs start on 64-word boundaries.
fn ch_first(job: ChainJob, vt: u32) -> vec4<u32> {
    return out[job.in_off / 4u + min(vt, job.vpr * 16u - 1u)];
}

// A producer's output (the job's input) quantized into gf_x with the row sum returned, as the
// chain input is: thread vt takes vec4 vt, vt + GV_WG, ... — `first` (from ch_first) and then
// four loads in flight per step, clamped past the end and not quantized there.
fn ch_quantize_output(job: ChainJob, vt: u32, inv: f32, first: vec4<u32>) -> i32 {
    let vpr = job.vpr;
    let kv = vpr * 16u;
    let base = job.in_off / 4u;
    var rs = 0i;
    if (vt < kv) {
        rs += gf_pack(bitcast<vec4<f32>>(first), vt, inv, vpr);
    }
    for (var i = vt + GV_WG; i < kv; i = i + 4u * GV_WG) {
        let i1 = i + GV_WG;
        let i2 = i + 2u * GV_WG;
        let i3 = i + 3u * GV_WG;
        let v0 = out[base + i];
        let v1 = out[base + min(i1, kv - 1u)];
        let v2 = out[base + min(i2, kv - 1u)];
        let v3 = out[base + min(i3, kv - 1u)];
        rs += gf_pack(bitcast<vec4<f32>>(v0), i, inv, vpr);
        if (i1 < kv) {
            rs += gf_pack(bitcast<vec4<f32>>(v1), i1, inv, vpr);
        }
        if (i2 < kv) {
            rs += gf_pack(bitcast<vec4<f32>>(v2), i2, inv, vpr);
        }
        if (i3 < kv) {
            rs += gf_pack(bitcast<vec4<f32>>(v3), i3, inv, vpr);
        }
    }
    return rs;
}
