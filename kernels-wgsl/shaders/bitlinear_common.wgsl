// Shared snippet of every BitLinear kernel: parameters, engine bindings and the exact epilogue.
//
// Weights are 2-bit codes w + 1 (layout.rs), so a kernel sums
// dot4I8Packed(x_word, (w_word >> 2 g) & 0x03030303) over the row in i32 and subtracts the
// activation row sum (dot4I8Packed(x_word, 0x01010101) summed): acc = sum(x * w) exactly.
// Then y = f32(acc) * ((s * a_m) * INV_127), multiplications only, in exactly this order.
//
// The kernel's own buffers (group 0) are declared by the kernel, which must declare `out` (the
// output words) and the constant `Y_STATUS` (the status word that flags a non-finite y).

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
    // GEMM only: ceil(n / tile width), to unfold the engine's linear grid into tiles.
    tiles_n: u32,
    // Row of act_absmax holding this dispatch's first activation row (the host chunks M when
    // the output exceeds the storage binding limit; act and out are then bound as sub-ranges,
    // act_absmax from the aligned offset at or before the first row's scale).
    m_base: u32,
    // Always 0: the runtime zero of `bitlinear_pin` (the compiler cannot know its value).
    zero: u32,
    // GEMMs: K slices (the grid's z numbers them), each written as exact accumulators to its own
    // [M, out_stride] plane of `out` (mode 1) and summed by bitlinear_split_sum.wgsl; 1 = no split.
    k_splits: u32,
}

// Offset of this workgroup's output plane (split GEMMs set it from the grid's z; 0 otherwise).
var<private> bl_plane: u32;

@group(1) @binding(0) var<uniform> params: Params;
// Status words, see each kernel's Y_STATUS (and the fused kernel's x check).
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

// The same with the four activation words as one vector.
fn bitlinear_dot_word4(w: u32, x: vec4<u32>) -> i32 {
    return bitlinear_dot_word(w, x.x, x.y, x.z, x.w);
}

// The sum of the 16 signed activations held by four words.
fn bitlinear_sum_words(x0: u32, x1: u32, x2: u32, x3: u32) -> i32 {
    return dot4I8Packed(x0, ONES) + dot4I8Packed(x1, ONES) + dot4I8Packed(x2, ONES)
        + dot4I8Packed(x3, ONES);
}

// The signed weights (-1, 0, +1 as i8 bytes) of group g of a packed word: byte i of the result is
// weight 16 j + 4 g + i. SWAR `code - 1` per byte: setting bit 7 of every byte first stops the
// borrow from crossing bytes (codes 0, 1, 2 -> 0x80..0x82 -> 0x7f..0x81 -> 0xff, 0x00, 0x01).
fn bitlinear_signed_group(w: u32, g: u32) -> u32 {
    let codes = (w >> (2u * g)) & CODE_MASK;
    return ((codes | 0x80808080u) - ONES) ^ 0x80808080u;
}

// An optimization barrier for one float value. Vulkan lets drivers reassociate float
// multiplications that SPIR-V does not decorate NoContraction, and naga cannot emit that
// decoration: Mesa, for one, rewrites (s * a_m) * INV_127 into s * (a_m * INV_127), which changes
// the last bit. XOR with a runtime zero hides how the value was computed, so each product below
// is rounded exactly where layout.rs rounds it.
fn bitlinear_pin(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) ^ params.zero);
}

// An exact accumulator as f32, rounded to nearest even like cpu-ref's `acc as f32`. Vulkan leaves
// the rounding of an integer-to-float conversion to the driver, which matters once |acc| passes
// 2^24 (K above 131,072). Both halves convert exactly (the arithmetic shift keeps the sign), the
// product by 2^16 is exact, and the addition rounds once (a fused multiply-add rounds the same).
fn i32_to_f32(v: i32) -> f32 {
    return f32(v >> 16u) * 65536.0 + f32(v & 0xffff);
}

// The output scale of one activation row: (s * a_m) * INV_127, each product rounded.
fn bitlinear_scale(s: f32, a: f32) -> f32 {
    return bitlinear_pin(bitlinear_pin(s * a) * INV_127);
}

// K slice `z` of a split GEMM in units of `unit` packed words (a kernel's K step): its first unit
// and its unit count (0 for a slice past the end), and this workgroup's output plane. The slices
// divide ceil(words_per_row / unit) units as evenly as whole units allow.
fn bitlinear_k_slice(z: u32, unit: u32) -> vec2<u32> {
    let units = (params.words_per_row + unit - 1u) / unit;
    let splits = max(params.k_splits, 1u);
    let per = (units + splits - 1u) / splits;
    let first = min(z * per, units);
    bl_plane = z * params.m * params.out_stride;
    return vec2<u32>(first, min(per, units - first));
}
