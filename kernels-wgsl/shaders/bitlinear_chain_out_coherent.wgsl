// Output access of bitlinear_chain_subgroup.wgsl on devices with wgpu's
// MEMORY_DECORATION_COHERENT (Vulkan, DX12, Metal 3.2+): `out` is a plain vec4 array declared
// @coherent, so another workgroup's stores, published behind the producer's storage barrier and
// counter, reach a consumer's loads past any non-coherent cache (without the decoration the
// H200 returned stale values to plain loads). A consumer then reads its input as vec4 with four
// loads in flight per step and quantizes it as the chain input is quantized, where 32-bit
// atomic loads needed a load per value and shuffles to pack them. H200, 2B4T chained stack as
// one LinearChain dispatch, three alternating rounds: 835-836 µs with the atomic file, 720 µs
// with this one reading one vec4 early (681 µs with four early, ch_first).
// Defines `out`, ChFirst, ch_store4, ch_first and ch_quantize_output, as
// bitlinear_chain_out_atomic.wgsl does.

@coherent @group(0) @binding(2) var<storage, read_write> out: array<vec4<u32>>;

// Stores words idx .. idx + 3 of the output arena (idx % 4 == 0), as one vec4.
fn ch_store4(idx: u32, bits: vec4<u32>) {
    out[idx >> 2u] = bits;
}

// Thread vt's first four input vec4 — vt, vt + GV_WG, vt + 2 GV_WG, vt + 3 GV_WG, clamped past
// the input's end (not quantized there) — loaded with the producer's published absmax, before
// the input's scale is known. Producers' outputs start on 64-word boundaries. (H200, 2B4T
// chained stack as one LinearChain dispatch, two alternating rounds: one vec4 early 708 µs, four
// 681, eight 737; one early and eight per step after it 750.)
struct ChFirst {
    v0: vec4<u32>,
    v1: vec4<u32>,
    v2: vec4<u32>,
    v3: vec4<u32>,
}

fn ch_first(job: ChainJob, vt: u32) -> ChFirst {
    let last = job.vpr * 16u - 1u;
    let base = job.in_off / 4u;
    return ChFirst(
        out[base + min(vt, last)],
        out[base + min(vt + GV_WG, last)],
        out[base + min(vt + 2u * GV_WG, last)],
        out[base + min(vt + 3u * GV_WG, last)],
    );
}

// A producer's output (the job's input) quantized into gf_x with the row sum returned, as the
// chain input is: thread vt takes vec4 vt, vt + GV_WG, ... — the four of `first`, then four
// loads in flight per step (clamped past the end and not quantized there).
fn ch_quantize_output(job: ChainJob, vt: u32, inv: f32, first: ChFirst) -> i32 {
    let vpr = job.vpr;
    let kv = vpr * 16u;
    let base = job.in_off / 4u;
    var rs = 0i;
    if (vt < kv) {
        rs += gf_pack(bitcast<vec4<f32>>(first.v0), vt, inv, vpr);
    }
    if (vt + GV_WG < kv) {
        rs += gf_pack(bitcast<vec4<f32>>(first.v1), vt + GV_WG, inv, vpr);
    }
    if (vt + 2u * GV_WG < kv) {
        rs += gf_pack(bitcast<vec4<f32>>(first.v2), vt + 2u * GV_WG, inv, vpr);
    }
    if (vt + 3u * GV_WG < kv) {
        rs += gf_pack(bitcast<vec4<f32>>(first.v3), vt + 3u * GV_WG, inv, vpr);
    }
    for (var i = vt + 4u * GV_WG; i < kv; i = i + 4u * GV_WG) {
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
