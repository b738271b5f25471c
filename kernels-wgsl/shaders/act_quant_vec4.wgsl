// Activation quantization for K % 4 == 0: TPR threads per row (256 / TPR rows per workgroup),
// vec4 loads.
//
// The same arithmetic as act_quant.wgsl (the generic variant) — absmax of the sign-cleared bits
// (any order: max is exact), a = max(absmax, 1e-5), inv = 127 / a correctly rounded,
// xq = clamp(round(x * inv), -128, 127) packed 4 per u32 — with one float vec4 per packed word:
// each thread issues its first REGS vec4 loads at once and keeps them in registers (clamped
// duplicates change no maximum), so rows up to 4 * TPR * REGS values are read once; longer
// rows continue in steps of four loads and are read again for the quantization. Each quantized
// vec4 is exactly one output word. A row's maximum is combined through workgroup memory in two
// levels (no subgroup operations, so every adapter runs it).
//
// Needs the exact_div.wgsl, exact_div_127.wgsl and act_quant_common.wgsl snippets (prepended by
// bitnet.rs).

struct Params {
    // Rows in this dispatch (the host chunks large inputs over rows).
    rows: u32,
    // K: values per row (a multiple of 4).
    k: u32,
    // 4 * ceil(K / 16): packed words per row (K / 4 of them hold values, the rest are padding).
    words_per_row: u32,
    // Index in `absmax` of this dispatch's first row (x and packed are bound as row ranges,
    // absmax from the aligned offset at or before the first row's scale).
    row_base: u32,
}

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> packed: array<u32>;
// Per row: the clamped absmax a (the quantized tensor's scale buffer).
@group(0) @binding(2) var<storage, read_write> absmax: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

const WORKGROUP: u32 = 256u;
// Threads per row (override constant): a power of two from 16 to 256.
override TPR: u32 = 256u;
// Vec4 each thread loads up front and keeps for the quantization (override constant, 1..=16).
override REGS: u32 = 4u;
// Threads per row that combine its maximum in the first level.
const LEVEL1: u32 = 16u;

var<workgroup> scratch: array<u32, 256>;
var<workgroup> scratch16: array<u32, 256>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // Uniform per row group; rows past the end exist for the last workgroup, and when the
    // engine folds the grid into 2D.
    let row = (wid.x + wid.y * nwg.x) * (WORKGROUP / TPR) + t / TPR;
    let lt = t % TPR;
    let group = t - lt;
    let live = row < params.rows;
    let kv = params.k / 4u;
    let base = row * kv;
    let last = base + kv - 1u;

    // The first REGS vec4 of this thread's share, all loads issued before any is used.
    var v: array<vec4<f32>, 16>;
    var top = 0u;
    var bad = AQ_NONE;
    if (live) {
        for (var s = 0u; s < REGS; s = s + 1u) {
            v[s] = x[min(base + lt + s * TPR, last)];
        }
        for (var s = 0u; s < REGS; s = s + 1u) {
            let i = min(base + lt + s * TPR, last);
            top = max(top, aq_abs_bits(v[s], i, &bad));
        }
        // The rest of a long row, four independent loads per step.
        let step = 4u * TPR;
        for (var i = base + lt + REGS * TPR; i <= last; i = i + step) {
            let j1 = min(i + TPR, last);
            let j2 = min(i + 2u * TPR, last);
            let j3 = min(i + 3u * TPR, last);
            let t0 = aq_abs_bits(x[i], i, &bad);
            let t1 = aq_abs_bits(x[j1], j1, &bad);
            let t2 = aq_abs_bits(x[j2], j2, &bad);
            let t3 = aq_abs_bits(x[j3], j3, &bad);
            top = max(top, max(max(t0, t1), max(t2, t3)));
        }
    }
    if (bad != AQ_NONE) {
        atomicMin(&nonfinite[0], bad);
    }
    // Two-level maximum per row: LEVEL1 threads take TPR / LEVEL1 values each, then every thread
    // of the row reads the LEVEL1 results.
    scratch[t] = top;
    workgroupBarrier();
    let share = TPR / LEVEL1;
    if (lt < LEVEL1) {
        var m = 0u;
        for (var i = 0u; i < share; i = i + 1u) {
            m = max(m, scratch[group + share * lt + i]);
        }
        scratch16[group + lt] = m;
    }
    workgroupBarrier();
    top = 0u;
    for (var i = 0u; i < LEVEL1; i = i + 1u) {
        top = max(top, scratch16[group + i]);
    }

    // Every thread derives the same inv (cheap, and no extra barrier).
    let a = max(bitcast<f32>(top), 1e-5f);
    let inv = exact_div_127(a);
    if (!live) {
        return;
    }
    if (lt == 0u) {
        absmax[params.row_base + row] = a;
    }
    let out_base = row * params.words_per_row;
    let wpr = params.words_per_row;
    // Words lt + TPR s from the registers; padding words (K rounded up to 16) are zero.
    for (var s = 0u; s < REGS; s = s + 1u) {
        let w = lt + s * TPR;
        if (w < wpr) {
            packed[out_base + w] = select(0u, aq_pack(aq_round(v[s], inv)), w < kv);
        }
    }
    // Words past the registers (long rows and their padding), x read again.
    for (var w = lt + REGS * TPR; w < wpr; w = w + TPR) {
        var word = 0u;
        if (w < kv) {
            word = aq_pack(aq_round(x[base + w], inv));
        }
        packed[out_base + w] = word;
    }
}
