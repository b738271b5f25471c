// Tile of the tiled matmul (matmul_tiled.wgsl): 16×64 (1×4 per invocation: few rows, as a decode step's logits).
const RM: u32 = 1u;  // rows per invocation (tile rows: 16 RM)
const RN4: u32 = 1u; // groups of 4 columns per invocation (tile columns: 64 RN4)
