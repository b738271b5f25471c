// Activation quantization for K % 4 == 0: one workgroup per row, vec4 loads.
//
// The same arithmetic as act_quant.wgsl (the generic variant) — absmax of the sign-cleared bits
// (any order: max is exact), a = max(absmax, 1e-5), inv = 127 / a correctly rounded,
// xq = clamp(round(x * inv), -128, 127) packed 4 per u32 — with one float vec4 per packed word:
// the absmax pass issues four independent vec4 loads per thread and step (clamped duplicates
// change no maximum), and each quantized vec4 is exactly one output word. The maximum is combined
// through workgroup memory (no subgroup operations, so every adapter runs it).
//
// Needs the exact_div.wgsl snippet (prepended by bitnet.rs).

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

var<workgroup> scratch: array<u32, 256>;

// Index of the first true component (the vector has one).
fn first_true(v: vec4<bool>) -> u32 {
    return select(select(select(3u, 2u, v.z), 1u, v.y), 0u, v.x);
}

// Largest sign-cleared bit pattern of vec4 i; flags the first non-finite value of it in `bad`.
fn abs_bits(i: u32, bad: ptr<function, u32>) -> u32 {
    let b = bitcast<vec4<u32>>(x[i]) & vec4<u32>(0x7fffffffu);
    let inf = (b & vec4<u32>(EXP_MASK)) == vec4<u32>(EXP_MASK);
    if (any(inf)) {
        *bad = min(*bad, 4u * i + first_true(inf));
    }
    return max(max(b.x, b.y), max(b.z, b.w));
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

    var top = 0u;
    var bad = NONE;
    if (live) {
        for (var i = base + t; i <= last; i = i + 4u * WORKGROUP) {
            let t0 = abs_bits(i, &bad);
            let t1 = abs_bits(min(i + WORKGROUP, last), &bad);
            let t2 = abs_bits(min(i + 2u * WORKGROUP, last), &bad);
            let t3 = abs_bits(min(i + 3u * WORKGROUP, last), &bad);
            top = max(top, max(max(t0, t1), max(t2, t3)));
        }
    }
    if (bad != NONE) {
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

    // Every thread derives the same inv (cheap, and no extra barrier).
    let a = max(bitcast<f32>(scratch[0]), 1e-5f);
    let inv = exact_div(127.0, a);
    if (!live) {
        return;
    }
    if (t == 0u) {
        absmax[params.row_base + row] = a;
    }
    let out_base = row * params.words_per_row;
    for (var w = t; w < params.words_per_row; w = w + WORKGROUP) {
        var word = 0u;
        if (w < kv) {
            let q = vec4<i32>(clamp(round(x[base + w] * inv), vec4<f32>(-128.0), vec4<f32>(127.0)));
            word = (u32(q.x) & 0xffu) | ((u32(q.y) & 0xffu) << 8u) | ((u32(q.z) & 0xffu) << 16u)
                | (u32(q.w) << 24u);
        }
        packed[out_base + w] = word;
    }
}
