// util_fill: writes one 32-bit pattern into `n` consecutive words of `dst`.
//
// Engine conventions (see engine/src/launch.rs):
//  * group 0 = the kernel's buffers in declaration order; group 1 = engine resources
//    (binding 0: per-call params, binding 1: the non-finite status word).
//  * the grid is linear: workgroup index = wid.x + wid.y * nwg.x (the engine folds counts above
//    max_compute_workgroups_per_dimension into y), so every thread bounds-checks against `n`.

struct Params {
    n: u32,
    value: u32,
}

@group(0) @binding(0) var<storage, read_write> dst: array<u32>;
@group(1) @binding(0) var<uniform> params: Params;

// Words per invocation, 256 apart (coalesced): a workgroup covers 1024 words, as util_copy.wgsl.
const PER_THREAD: u32 = 4u;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let first = (wid.x + wid.y * nwg.x) * (256u * PER_THREAD) + lid;
    for (var r = 0u; r < PER_THREAD; r++) {
        let i = first + r * 256u;
        if i < params.n {
            dst[i] = params.value;
        }
    }
}
