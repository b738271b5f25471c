// status_gather: copies up to 16 status slots out to `out` and marks them clean, in one dispatch
// (see engine/src/status_gather.rs).
//
// Why: a read must copy out the status slot of every unresolved checked launch its tensor
// depends on — after a decode step, hundreds. Each slot is its own buffer (so independent
// dispatches share no written buffer, engine/src/status.rs), and a buffer copy per slot pays a
// pipeline barrier per slot in wgpu (H200: about 5 ms to read a tensor after 600 dependent ops).
// One dispatch of this kernel moves 16 slots instead: one barrier per 16.
//
// Slot 0 is the engine's group-1 status binding (the launch binds the first slot's own group 1,
// as status_reset does); slots 1 .. 15 are group-0 bindings 0 .. 14, and `out` (binding 15) is
// bound at this gather's place in the engine's gather buffer. Workgroup i (the grid is the slot
// count) takes slot i, one invocation per status word: the word goes to out[4 i + word] and the
// slot reads CLEAN (0xFFFFFFFF) afterwards. Bindings past the slot count hold placeholder
// buffers that no workgroup touches. No params.

@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;
@group(0) @binding(0) var<storage, read_write> s1: array<atomic<u32>, 4>;
@group(0) @binding(1) var<storage, read_write> s2: array<atomic<u32>, 4>;
@group(0) @binding(2) var<storage, read_write> s3: array<atomic<u32>, 4>;
@group(0) @binding(3) var<storage, read_write> s4: array<atomic<u32>, 4>;
@group(0) @binding(4) var<storage, read_write> s5: array<atomic<u32>, 4>;
@group(0) @binding(5) var<storage, read_write> s6: array<atomic<u32>, 4>;
@group(0) @binding(6) var<storage, read_write> s7: array<atomic<u32>, 4>;
@group(0) @binding(7) var<storage, read_write> s8: array<atomic<u32>, 4>;
@group(0) @binding(8) var<storage, read_write> s9: array<atomic<u32>, 4>;
@group(0) @binding(9) var<storage, read_write> s10: array<atomic<u32>, 4>;
@group(0) @binding(10) var<storage, read_write> s11: array<atomic<u32>, 4>;
@group(0) @binding(11) var<storage, read_write> s12: array<atomic<u32>, 4>;
@group(0) @binding(12) var<storage, read_write> s13: array<atomic<u32>, 4>;
@group(0) @binding(13) var<storage, read_write> s14: array<atomic<u32>, 4>;
@group(0) @binding(14) var<storage, read_write> s15: array<atomic<u32>, 4>;
@group(0) @binding(15) var<storage, read_write> out: array<u32>;

const CLEAN: u32 = 0xffffffffu;

@compute @workgroup_size(4)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) w: u32) {
    var v = CLEAN;
    switch wid.x {
        case 0u: { v = atomicExchange(&nonfinite[w], CLEAN); }
        case 1u: { v = atomicExchange(&s1[w], CLEAN); }
        case 2u: { v = atomicExchange(&s2[w], CLEAN); }
        case 3u: { v = atomicExchange(&s3[w], CLEAN); }
        case 4u: { v = atomicExchange(&s4[w], CLEAN); }
        case 5u: { v = atomicExchange(&s5[w], CLEAN); }
        case 6u: { v = atomicExchange(&s6[w], CLEAN); }
        case 7u: { v = atomicExchange(&s7[w], CLEAN); }
        case 8u: { v = atomicExchange(&s8[w], CLEAN); }
        case 9u: { v = atomicExchange(&s9[w], CLEAN); }
        case 10u: { v = atomicExchange(&s10[w], CLEAN); }
        case 11u: { v = atomicExchange(&s11[w], CLEAN); }
        case 12u: { v = atomicExchange(&s12[w], CLEAN); }
        case 13u: { v = atomicExchange(&s13[w], CLEAN); }
        case 14u: { v = atomicExchange(&s14[w], CLEAN); }
        case 15u: { v = atomicExchange(&s15[w], CLEAN); }
        default: {}
    }
    out[4u * wid.x + w] = v;
}
