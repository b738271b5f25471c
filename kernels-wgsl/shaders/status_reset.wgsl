// status_reset: marks the bound status slot clean (every word 0xFFFFFFFF; see engine/src/status.rs).
//
// The engine gives every status slot its own buffer, so dispatches that do not depend on each
// other never share a written buffer (wgpu would put a pipeline barrier between them). Resets run
// as one dispatch of this kernel per dirty slot, all in one compute pass at the end of a batch:
// distinct buffers again, so the resets overlap instead of paying a barrier each, as copies would.
// No group-0 buffers; the slot is the engine's own group-1 status binding.

@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

@compute @workgroup_size(4)
fn main(@builtin(local_invocation_index) i: u32) {
    atomicStore(&nonfinite[i], 0xffffffffu);
}
