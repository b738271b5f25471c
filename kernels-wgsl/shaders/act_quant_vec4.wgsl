// Activation quantization for K % 4 == 0: one workgroup per row, vec4 loads.
//
// The same arithmetic as act_quant.wgsl (the generic variant) — absmax of the sign-cleared bits
// (any order: max is exact), a = max(absmax, 1e-5), inv = 127 / a correctly rounded,
// xq = clamp(round(x * inv), -128, 127) packed 4 per u32 — with one float vec4 per packed word:
// the absmax pass issues four independent vec4 loads per thread and step (clamped duplicates
// change no maximum), rows up to K = 4096 stay in registers for the quantization, and each
// quantized vec4 is exactly one output word. The maximum is combined through workgroup memory in
// two levels (no subgroup operations, so every adapter runs it).
//
// Needs the exact_div.wgsl and exact_div_127.wgsl snippets (prepended by bitnet.rs).

struct Params {
    // Rows in this dispatch (the host chunks large inputs over rows).
    rows: u32,
    // K: values per row (a multiple of 4).
    k: u32,
    // 4 * ceil(K / 16): packed words per row (K / 4 of them hold values, the rest are padding).
    words_per_row: u32,
    // Index in `absmax` of this dispatch's first row (x and packed are bound as row ranges,
    // absmax as a whole).
    row_base: u32,
}

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> packed: array<u32>;
// Per row: the clamped absmax a (the quantized tensor's scale buffer).
@group(0) @binding(2) var<storage, read_write> absmax: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

const WORKGROUP: u32 = 256u;
const EXP_MASK: u32 = 0x7f800000u;
const NONE: u32 = 0xffffffffu;
// Vec4 per thread and step of the absmax pass (4 per thread).
const STEP: u32 = 1024u;

var<workgroup> scratch: array<u32, 256>;
var<workgroup> scratch16: array<u32, 16>;

// Index of the first true component (the vector has one).
fn first_true(v: vec4<bool>) -> u32 {
    return select(select(select(3u, 2u, v.z), 1u, v.y), 0u, v.x);
}

// Largest sign-cleared bit pattern of x[i] (vec4 i of the binding); flags the first non-finite
// value of it in `bad`.
fn abs_bits(v: vec4<f32>, i: u32, bad: ptr<function, u32>) -> u32 {
    let b = bitcast<vec4<u32>>(v) & vec4<u32>(0x7fffffffu);
    let inf = (b & vec4<u32>(EXP_MASK)) == vec4<u32>(EXP_MASK);
    if (any(inf)) {
        *bad = min(*bad, 4u * i + first_true(inf));
    }
    return max(max(b.x, b.y), max(b.z, b.w));
}

// The packed word of 4 values.
fn quantize(v: vec4<f32>, inv: f32) -> u32 {
    let q = vec4<i32>(clamp(round(v * inv), vec4<f32>(-128.0), vec4<f32>(127.0)));
    return (u32(q.x) & 0xffu) | ((u32(q.y) & 0xffu) << 8u) | ((u32(q.z) & 0xffu) << 16u)
        | (u32(q.w) << 24u);
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // Uniform per workgroup; rows past the end exist only when the engine folds the grid into 2D.
    let row = wid.x + wid.y * nwg.x;
    let live = row < params.rows;
    let kv = params.k / 4u;
    let base = row * kv;
    let last = base + kv - 1u;

    // The first STEP vec4 of the row (4 per thread) stay in registers: rows up to K = 4096 are
    // quantized without reading x twice. Clamped duplicates change no maximum.
    var top = 0u;
    var bad = NONE;
    var v0 = vec4<f32>();
    var v1 = vec4<f32>();
    var v2 = vec4<f32>();
    var v3 = vec4<f32>();
    if (live) {
        let i0 = base + t;
        let i1 = min(i0 + WORKGROUP, last);
        let i2 = min(i0 + 2u * WORKGROUP, last);
        let i3 = min(i0 + 3u * WORKGROUP, last);
        v0 = x[min(i0, last)];
        v1 = x[i1];
        v2 = x[i2];
        v3 = x[i3];
        top = max(max(abs_bits(v0, min(i0, last), &bad), abs_bits(v1, i1, &bad)),
            max(abs_bits(v2, i2, &bad), abs_bits(v3, i3, &bad)));
        for (var i = i0 + STEP; i <= last; i = i + STEP) {
            let j1 = min(i + WORKGROUP, last);
            let j2 = min(i + 2u * WORKGROUP, last);
            let j3 = min(i + 3u * WORKGROUP, last);
            let t0 = abs_bits(x[i], i, &bad);
            let t1 = abs_bits(x[j1], j1, &bad);
            let t2 = abs_bits(x[j2], j2, &bad);
            let t3 = abs_bits(x[j3], j3, &bad);
            top = max(top, max(max(t0, t1), max(t2, t3)));
        }
    }
    if (bad != NONE) {
        atomicMin(&nonfinite[0], bad);
    }
    // Two-level maximum: 16 threads take 16 values each, then everyone reads the 16 results.
    scratch[t] = top;
    workgroupBarrier();
    if (t < 16u) {
        var m = 0u;
        for (var i = 0u; i < 16u; i = i + 1u) {
            m = max(m, scratch[16u * t + i]);
        }
        scratch16[t] = m;
    }
    workgroupBarrier();
    top = 0u;
    for (var i = 0u; i < 16u; i = i + 1u) {
        top = max(top, scratch16[i]);
    }

    // Every thread derives the same inv (cheap, and no extra barrier).
    let a = max(bitcast<f32>(top), 1e-5f);
    let inv = exact_div_127(a);
    if (!live) {
        return;
    }
    if (t == 0u) {
        absmax[params.row_base + row] = a;
    }
    let out_base = row * params.words_per_row;
    if (kv <= STEP && params.words_per_row <= STEP) {
        // Words t + 256 u from the registers; padding words (K rounded up to 16) are zero.
        let wpr = params.words_per_row;
        if (t < wpr) {
            packed[out_base + t] = select(0u, quantize(v0, inv), t < kv);
        }
        if (t + WORKGROUP < wpr) {
            packed[out_base + t + WORKGROUP] = select(0u, quantize(v1, inv), t + WORKGROUP < kv);
        }
        if (t + 2u * WORKGROUP < wpr) {
            packed[out_base + t + 2u * WORKGROUP] = select(0u, quantize(v2, inv), t + 2u * WORKGROUP < kv);
        }
        if (t + 3u * WORKGROUP < wpr) {
            packed[out_base + t + 3u * WORKGROUP] = select(0u, quantize(v3, inv), t + 3u * WORKGROUP < kv);
        }
        return;
    }
    for (var w = t; w < params.words_per_row; w = w + WORKGROUP) {
        var word = 0u;
        if (w < kv) {
            word = quantize(x[base + w], inv);
        }
        packed[out_base + w] = word;
    }
}
