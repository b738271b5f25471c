// RoPE on a step's queries and keys with the rotated keys and the values written straight into a
// KV cache (bitnet_cpu_ref::ops::rope_pair's rotation, then an append): q [S, Hq, D] → yq;
// k [S, Hk, D] rotated, and v [S, Hk, D] as it is, into the cache's key and value buffers at word
// `cache_base` of their bindings. A decode step's RoPE and KV append per layer, two dispatches
// behind two barriers, become one; the bits written are those of rope_pair.wgsl and the copy.
//
// One invocation per rotated pair, as rope_pair.wgsl: invocations below pairs_q take q's pair t;
// the others k's pair t - pairs_q, and with it the same two places of v. Not chunked: the engine
// runs this kernel only when every operand fits a binding whole and the cache's new rows fit one.
//
// Non-finite status words, as rope_pair.wgsl's: 0 = q, 1 = q's output, 2 = k, 3 = k's output
// (v is moved, not checked, as an append moves it). Dispatch: linear,
// ceil((pairs_q + pairs_k) / 256) workgroups.
//
// Needs float_common.wgsl, rope_common.wgsl and rope_pairs_common.wgsl (prepended).

struct Params {
    pairs_q: u32,    // S · Hq · D/2
    pairs_k: u32,    // S · Hk · D/2
    half_dim: u32,   // D/2
    heads_q: u32,    // Hq
    heads_k: u32,    // Hk
    cache_base: u32, // word of the key and value bindings where the new rows start
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> positions: array<u32>;
@group(0) @binding(4) var<storage, read> freqs: array<f32>;
@group(0) @binding(5) var<storage, read_write> yq: array<f32>;
@group(0) @binding(6) var<storage, read_write> cache_k: array<f32>;
@group(0) @binding(7) var<storage, read_write> cache_v: array<f32>;
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
        // The values move with their keys' pair: the same two places, unchanged.
        let at = params.cache_base + kp.at;
        cache_k[at] = kp.r.x;
        cache_k[at + half] = kp.r.y;
        cache_v[at] = v[kp.at];
        cache_v[at + half] = v[kp.at + half];
    }
}
