// Lanes of the few-row matmul (matmul_gemv_common.wgsl), f16: as matmul_gemv_wide_f32.wgsl, but
// 8 k per step (13456 bytes of workgroup memory): with 16 the f16 logits took 972 us against 922
// on an H100.
const LANES: u32 = 1u;
const STEP: u32 = 8u;
