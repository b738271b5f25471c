// util_copy: copies `n` f32 values from `src` to `dst` and flags the first non-finite input.
//
// Non-finite convention: the engine binds a fresh status word per launch (initialised to
// 0xFFFFFFFF); a kernel that sees NaN/Inf at flat input index i does `atomicMin(&nonfinite, i)`,
// so the smallest offending index wins. The engine reports it at the next read-back.

struct Params {
    n: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: atomic<u32>;

// Exponent bits all ones <=> NaN or Inf. Bit test, because `x != x` may be optimised away.
fn is_non_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}

// Each invocation copies PER_THREAD values, 256 apart (coalesced; the loads are independent, so
// they are in flight together): a workgroup covers 1024 values (ELEMENTWISE_GROUP_VALUES in
// src/tensor.rs). Dispatch: ceil(n / 1024) workgroups, folded into x and y.
const PER_THREAD: u32 = 4u;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let first = (wid.x + wid.y * nwg.x) * (256u * PER_THREAD) + lid;
    // Every load before any store: a load may not move above a store to another binding (they
    // could alias), so interleaved each load waited on the store before it (H200: 3044 against
    // 4159 GB/s loads first).
    var x = vec4<f32>();
    for (var r = 0u; r < PER_THREAD; r++) {
        let i = first + r * 256u;
        if i < params.n {
            x[r] = src[i];
        }
    }
    for (var r = 0u; r < PER_THREAD; r++) {
        let i = first + r * 256u;
        if i < params.n {
            if is_non_finite(x[r]) {
                atomicMin(&nonfinite, i);
            }
            dst[i] = x[r];
        }
    }
}
