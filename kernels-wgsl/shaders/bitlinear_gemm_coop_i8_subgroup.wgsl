enable f16;
enable wgpu_cooperative_matrix;

// The int8 cooperative-matrix BitLinear GEMM with 128 x 128 tiles (512 threads); the kernel is
// bitlinear_gemm_coop_i8.wgsl. The enable directives must come first, so this file is first in
// its kernel! list.

// Subgroups along N: tiles of 128 x 32 CI_SGN outputs.
const CI_SGN: u32 = 4u;
