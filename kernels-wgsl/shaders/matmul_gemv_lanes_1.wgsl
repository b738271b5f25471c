// Lanes of the few-row matmul (matmul_gemv_common.wgsl): one invocation per column, 256 columns,
// each walking all of k chunk by chunk (a logits row against a large vocabulary's embedding,
// where fewer, wider workgroups staged B faster).
const LANES: u32 = 1u;
