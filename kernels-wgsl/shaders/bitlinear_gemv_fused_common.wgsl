// Shared snippet of the fused-quantization GEMVs (bitlinear_gemv_fused_subgroup.wgsl and the
// chain kernel bitlinear_chain_subgroup.wgsl): the quantized activation row in workgroup memory,
// the quantization steps, and the 4-row block's exact sums in three scales.
//
// Needs bitlinear_common.wgsl, bitlinear_gemv_blocks.wgsl and act_quant_common.wgsl.

// Largest K: 960 vec4 of packed activations (15360 bytes) + gv_red fill 16 KiB of workgroup memory.
const GF_MAX_K: u32 = 15360u;
const NONE: u32 = 0xffffffffu;

// The quantized row: one vec4 per weight word q = 4 j + t (weight vec4 j, component t), holding
// the 4 activation words that pair with it, at gf_slot(q). Component-major (the t = 0 vec4 of
// every j first, then t = 1, ...), so the TPR lanes of a block, which read weight vec4 j, j + 1,
// ... in one step, read consecutive activation vec4: one shared-memory wavefront per 8 lanes.
// In j-major order (vec4 q at q) they were 64 bytes apart and every wavefront served 2 lanes.
var<workgroup> gf_x: array<vec4<u32>, 960>;

// Where the activation vec4 of weight word q lives in gf_x (vpr = weight vec4 per row).
fn gf_slot(q: u32, vpr: u32) -> u32 {
    return (q & 3u) * vpr + (q >> 2u);
}

// Groups 1 and 2 of a packed weight word masked in place (codes times 4 and 16).
const GF_MASK_1: u32 = 0x0c0c0c0cu;
const GF_MASK_2: u32 = 0x30303030u;

// A thread's exact partial sums for its 4-row block in three scales: groups 0 and 3 of every
// weight word (codes as they are), group 1 (codes masked in place: 4 c) and group 2 (16 c).
// Masking in place saves the shift of groups 1 and 2 (9 instead of 11 integer instructions per
// word); group 3 in place would be 64 c, which a signed byte reads as negative for c = 2, so it
// is shifted. s4 and s16 stay multiples of 4 and 16, so gf_total divides them exactly. (The
// other vec4 GEMVs apply each decoded word to all M rows, which amortizes the shifts; here every
// workgroup decodes for its one activation row.)
struct GfAcc {
    s1: vec4<i32>,
    s4: vec4<i32>,
    s16: vec4<i32>,
}

// One weight word against its 4 activation words: (scale-1, scale-4, scale-16) sums.
fn gf_word(w: u32, x: vec4<u32>) -> vec3<i32> {
    return vec3<i32>(
        dot4I8Packed(x.x, w & CODE_MASK) + dot4I8Packed(x.w, (w >> 6u) & CODE_MASK),
        dot4I8Packed(x.y, w & GF_MASK_1),
        dot4I8Packed(x.z, w & GF_MASK_2),
    );
}

// One row's weight vec4 (words 4 j .. 4 j + 3) against its 16 activation words.
fn gf_row(w: vec4<u32>, xa: vec4<u32>, xb: vec4<u32>, xc: vec4<u32>, xd: vec4<u32>) -> vec3<i32> {
    return gf_word(w.x, xa) + gf_word(w.y, xb) + gf_word(w.z, xc) + gf_word(w.w, xd);
}

// Adds the block's products for weight step j against the staged row (nothing past its end).
fn gf_step(w: GvRows, j: u32, vpr: u32, acc: ptr<function, GfAcc>) {
    if (j >= vpr) {
        return;
    }
    let xa = gf_x[j];
    let xb = gf_x[vpr + j];
    let xc = gf_x[2u * vpr + j];
    let xd = gf_x[3u * vpr + j];
    let r0 = gf_row(w.r0, xa, xb, xc, xd);
    let r1 = gf_row(w.r1, xa, xb, xc, xd);
    let r2 = gf_row(w.r2, xa, xb, xc, xd);
    let r3 = gf_row(w.r3, xa, xb, xc, xd);
    (*acc).s1 += vec4<i32>(r0.x, r1.x, r2.x, r3.x);
    (*acc).s4 += vec4<i32>(r0.y, r1.y, r2.y, r3.y);
    (*acc).s16 += vec4<i32>(r0.z, r1.z, r2.z, r3.z);
}

// The code-domain sums of the block: s1 + s4 / 4 + s16 / 16, exact.
fn gf_total(acc: GfAcc) -> vec4<i32> {
    return acc.s1 + (acc.s4 >> vec4<u32>(2u)) + (acc.s16 >> vec4<u32>(4u));
}

// Quantizes activation vec4 i (value v, scale inv = 127 / a) into its word of gf_x (component
// i % 4 of weight word i / 4's slot) and returns the sum of its four quantized values (for the
// row sum).
fn gf_pack(v: vec4<f32>, i: u32, inv: f32, vpr: u32) -> i32 {
    let q = aq_round(v, inv);
    gf_x[gf_slot(i >> 2u, vpr)][i & 3u] = aq_pack(q);
    return q.x + q.y + q.z + q.w;
}
