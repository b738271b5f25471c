// RoPE on the queries q [S, Hq, D] and the keys k [S, Hk, D] of one attention step in one
// dispatch (bitnet_cpu_ref::ops::rope_pair: rope.wgsl's rotation on each, same positions and
// frequencies): a decode step's two RoPE dispatches per layer become one, behind one barrier.
//
// One invocation per rotated pair: invocations below pairs_q take q's pair t, the others k's pair
// t - pairs_q. Not chunked: the engine runs this kernel only when q, k and their outputs fit a
// binding whole (else rope.wgsl's chunked launches, one tensor at a time).
//
// Non-finite status words: 0 = q, 1 = q's output, 2 = k, 3 = k's output (q's before k's, as
// cpu-ref checks them). Dispatch: linear, ceil((pairs_q + pairs_k) / 256) workgroups.
//
// Needs float_common.wgsl, rope_common.wgsl and rope_pairs_common.wgsl (prepended).

struct Params {
    pairs_q: u32,   // S · Hq · D/2
    pairs_k: u32,   // S · Hk · D/2
    half_dim: u32,  // D/2
    heads_q: u32,   // Hq
    heads_k: u32,   // Hk
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read> freqs: array<f32>;
@group(0) @binding(4) var<storage, read_write> yq: array<f32>;
@group(0) @binding(5) var<storage, read_write> yk: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = (wid.x + wid.y * nwg.x) * 256u + lid;
    let half = params.half_dim;
    if (t < params.pairs_q) {
        rope_q_pair(t);
    } else if (t < params.pairs_q + params.pairs_k) {
        let kp = rope_k_pair(t - params.pairs_q);
        yk[kp.at] = kp.r.x;
        yk[kp.at + half] = kp.r.y;
    }
}
