// Lanes of the few-row matmul (matmul_gemv_common.wgsl): 16 invocations share each of 16 columns,
// a chunk each, so a workgroup walks 16 chunks of k side by side.
const LANES: u32 = 16u;
