// Shared by elementwise_binary.wgsl and elementwise_scalar.wgsl (concatenated with them, after
// exact_div.wgsl): the four binary operations, each rounded exactly as the CPU reference rounds.

// One IEEE f32 operation, as `BinaryOp::apply` in the CPU reference.
fn apply(op: u32, x: f32, y: f32) -> f32 {
    switch op {
        case 0u: { return x + y; }
        case 1u: { return x - y; }
        case 2u: { return x * y; }
        default: { return div_rounded(x, y); }
    }
}
