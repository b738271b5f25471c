// Activation quantization: one workgroup per row.
//
// 1. absmax of the row (any order: max is exact), taken as the max of the sign-cleared bit
//    patterns, which order like the values for non-negative floats; NaN/Inf set status word 0 to
//    the smallest offending flat index (bit test: `x != x` may be optimized away).
// 2. a = max(absmax, 1e-5), inv = 127 / a correctly rounded (exact_div_127).
// 3. xq = clamp(round(x * inv), -128, 127) (round = ties to even), packed 4 per u32
//    little-endian, the row padded with zero bytes to 4 * ceil(K / 16) words.
//
// Needs the exact_div.wgsl and exact_div_127.wgsl snippets (prepended by bitnet.rs).

struct Params {
    // Rows in this dispatch (the host chunks large inputs over rows).
    rows: u32,
    // K: values per row.
    k: u32,
    // 4 * ceil(K / 16): packed words per row.
    words_per_row: u32,
    // Index in `absmax` of this dispatch's first row (x and packed are bound as row ranges,
    // absmax from the aligned offset at or before the first row's scale).
    row_base: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> packed: array<u32>;
// Per row: the clamped absmax a (the quantized tensor's scale buffer).
@group(0) @binding(2) var<storage, read_write> absmax: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

const WORKGROUP: u32 = 256u;
const EXP_MASK: u32 = 0x7f800000u;

var<workgroup> scratch: array<u32, 256>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // Uniform per workgroup; rows past the end exist only when the engine folds the grid into 2D.
    let row = wid.x + wid.y * nwg.x;
    let live = row < params.rows;
    let base = row * params.k;

    // 1. absmax over the row's sign-cleared bit patterns.
    var top = 0u;
    var bad = 0xffffffffu;
    if (live) {
        for (var k = t; k < params.k; k = k + WORKGROUP) {
            let bits = bitcast<u32>(x[base + k]) & 0x7fffffffu;
            if ((bits & EXP_MASK) == EXP_MASK) {
                bad = min(bad, base + k);
            }
            top = max(top, bits);
        }
    }
    if (bad != 0xffffffffu) {
        atomicMin(&nonfinite[0], bad);
    }
    scratch[t] = top;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride = stride >> 1u) {
        if (t < stride) {
            scratch[t] = max(scratch[t], scratch[t + stride]);
        }
        workgroupBarrier();
    }

    // 2. The row's scale; every thread derives the same inv (cheap, and no extra barrier).
    let a = max(bitcast<f32>(scratch[0]), 1e-5f);
    let inv = exact_div_127(a);
    if (!live) {
        return;
    }
    if (t == 0u) {
        absmax[params.row_base + row] = a;
    }

    // 3. Quantize and pack, one output word (4 values) per step.
    for (var w = t; w < params.words_per_row; w = w + WORKGROUP) {
        var word = 0u;
        for (var i = 0u; i < 4u; i = i + 1u) {
            let k = 4u * w + i;
            if (k < params.k) {
                let q = i32(clamp(round(x[base + k] * inv), -128.0, 127.0));
                word = word | ((u32(q) & 0xffu) << (8u * i));
            }
        }
        packed[row * params.words_per_row + w] = word;
    }
}
