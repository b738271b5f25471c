// Lanes of the few-row matmul (matmul_gemv_common.wgsl): 16 invocations share each of 16 columns,
// a chunk each, so a workgroup walks 16 chunks of k side by side. Staged (matmul_gemv_staged.wgsl),
// 8 k per chunk and step: 15616 bytes of workgroup memory (16 k per step was slower on an H100).
const LANES: u32 = 16u;
const STEP: u32 = 8u;
