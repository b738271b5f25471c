// Tile of the tiled matmul (matmul_tiled.wgsl): 64×64 (the default: 4×4 per invocation).
const RM: u32 = 4u;  // rows per invocation (tile rows: 16 RM)
const RN4: u32 = 1u; // groups of 4 columns per invocation (tile columns: 64 RN4)
