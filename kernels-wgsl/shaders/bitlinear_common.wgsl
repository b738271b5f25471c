// Shared snippet of every BitLinear kernel: parameters, bindings and the exact epilogue.
//
// Weights are 2-bit codes w + 1 (layout.rs), so a kernel sums
// dot4I8Packed(x_word, (w_word >> 2 g) & 0x03030303) over the row in i32 and subtracts the
// activation row sum (dot4I8Packed(x_word, 0x01010101) summed): acc = sum(x * w) exactly.
// Then y = f32(acc) * ((s * a_m) * INV_127), multiplications only, in exactly this order.

struct Params {
    // Activation rows M in this dispatch.
    m: u32,
    // Weight rows (output features) in this dispatch; the host chunks N when the weights exceed
    // the storage binding limit.
    n: u32,
    // ceil(K / 16): packed weight words per row (activation rows hold 4x as many words).
    words_per_row: u32,
    // Output row stride: the full N.
    out_stride: u32,
    // Output column of this dispatch's first weight row.
    out_base: u32,
    // 0: write y (f32 bits); 1: write the exact i32 accumulator acc.
    mode: u32,
    // GEMM only: ceil(n / GEMM_TILE), to unfold the engine's linear grid into tiles.
    tiles_n: u32,
    // Row of act_absmax holding this dispatch's first activation row (the host chunks M when
    // the output exceeds the storage binding limit; act and out are then bound as sub-ranges).
    m_base: u32,
    // Always 0: the runtime zero of `bitlinear_pin` (the compiler cannot know its value).
    zero: u32,
}

@group(0) @binding(0) var<storage, read> weights: array<u32>;
// The weight tensor's scale s.
@group(0) @binding(1) var<storage, read> weight_scale: array<f32>;
@group(0) @binding(2) var<storage, read> act: array<u32>;
// Per activation row: the clamped absmax a_m.
@group(0) @binding(3) var<storage, read> act_absmax: array<f32>;
// [M, out_stride] row-major: f32 bits of y, or i32 bits of acc (see `mode`).
@group(0) @binding(4) var<storage, read_write> out: array<u32>;
@group(1) @binding(0) var<uniform> params: Params;
// Word 0: the smallest flat index (into `out`) of a non-finite y.
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

// Selects the four 2-bit codes of one group, one per byte.
const CODE_MASK: u32 = 0x03030303u;
// dot4I8Packed(x, ONES) is the sum of the four signed bytes of x.
const ONES: u32 = 0x01010101u;
// 1.0f32 / 127.0 rounded once (bits 0x3c010204), layout.rs INV_127.
const INV_127: f32 = 0x1.020408p-7f;

// The code-domain dot product of one packed weight word with the four activation words it pairs
// with (activation word 4 j + g pairs with group g of weight word j).
fn bitlinear_dot_word(w: u32, x0: u32, x1: u32, x2: u32, x3: u32) -> i32 {
    return dot4I8Packed(x0, w & CODE_MASK)
        + dot4I8Packed(x1, (w >> 2u) & CODE_MASK)
        + dot4I8Packed(x2, (w >> 4u) & CODE_MASK)
        + dot4I8Packed(x3, (w >> 6u) & CODE_MASK);
}

// The sum of the 16 signed activations held by four words.
fn bitlinear_sum_words(x0: u32, x1: u32, x2: u32, x3: u32) -> i32 {
    return dot4I8Packed(x0, ONES) + dot4I8Packed(x1, ONES) + dot4I8Packed(x2, ONES)
        + dot4I8Packed(x3, ONES);
}

// An optimization barrier for one float value. Vulkan lets drivers reassociate float
// multiplications that SPIR-V does not decorate NoContraction, and naga cannot emit that
// decoration: Mesa, for one, rewrites (s * a_m) * INV_127 into s * (a_m * INV_127), which changes
// the last bit. XOR with a runtime zero hides how the value was computed, so each product below
// is rounded exactly where layout.rs rounds it.
fn bitlinear_pin(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) ^ params.zero);
}

// Writes output (m, n) of this dispatch from its exact accumulator.
fn bitlinear_store(m: u32, n: u32, acc: i32) {
    let idx = m * params.out_stride + params.out_base + n;
    if (params.mode != 0u) {
        out[idx] = bitcast<u32>(acc);
        return;
    }
    let sa = bitlinear_pin(weight_scale[0] * act_absmax[params.m_base + m]);
    let y = f32(acc) * bitlinear_pin(sa * INV_127);
    let bits = bitcast<u32>(y);
    if ((bits & 0x7f800000u) == 0x7f800000u) {
        atomicMin(&nonfinite[0], idx);
    }
    out[idx] = bits;
}
