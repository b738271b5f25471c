// Lanes of the few-row matmul (matmul_gemv_common.wgsl), f32: one invocation per column, 256
// columns, each walking all of k chunk by chunk (a logits row against a large vocabulary's
// embedding, where fewer, wider workgroups staged B faster). Staged 16 k per step, so more bytes
// are in flight per barrier (H100: the logits 936 -> 862 us; 32 k per step: 1233): 21776 bytes
// of workgroup memory, past WebGPU's default 16384 (MATMUL_GEMV_WIDE_WORKGROUP_BYTES; the engine
// checks the device's limit first).
const LANES: u32 = 1u;
const STEP: u32 = 16u;
