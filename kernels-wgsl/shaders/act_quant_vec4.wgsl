// Activation quantization for K % 4 == 0: one workgroup per row, vec4 loads.
//
// The same arithmetic as act_quant.wgsl (the generic variant) — absmax of the sign-cleared bits
// (any order: max is exact), a = max(absmax, 1e-5), inv = 127 / a correctly rounded,
// xq = clamp(round(x * inv), -128, 127) packed 4 per u32 — with one float vec4 per packed word.
//
// In a decode every op waits on the previous one, so latency counts: rows of up to XR_VEC4
// packed words (K <= 16384) are loaded once, each thread issuing all its loads (XR vec4, words
// t + 256 u) before using any, into registers (a constant-trip loop over a function-scope
// array, which the compiler unrolls); the absmax and the quantization both come from the
// registers. Longer rows take the fallback loops: four independent vec4 loads per thread and
// step (clamped duplicates change no maximum, and are never stored), x read twice. The maximum
// is combined through workgroup memory in two levels (no subgroup operations, so every adapter
// runs it).
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
// Packed words (float vec4) per thread kept in registers.
const XR: u32 = 16u;
// Longest row (packed words, padding included) quantized from registers: K <= 16384.
const XR_VEC4: u32 = XR * WORKGROUP;

var<workgroup> scratch: array<u32, 256>;
var<workgroup> scratch16: array<u32, 16>;

// Index of the first true component (the vector has one).
fn first_true(v: vec4<bool>) -> u32 {
    return select(select(select(3u, 2u, v.z), 1u, v.y), 0u, v.x);
}

// Largest sign-cleared bit pattern of v = x vec4 i (index into the binding); flags the first
// non-finite value of it in `bad`.
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
    let wpr = params.words_per_row;
    let base = row * kv;
    let last = base + kv - 1u;
    // Uniform: the whole row (padding words included) fits the registers.
    let in_regs = wpr <= XR_VEC4;

    // 1. absmax (and the non-finite check) over the row.
    var top = 0u;
    var bad = NONE;
    // Vec4 t + 256 u of the row; zero (finite, no maximum, quantizes to the padding word 0) past
    // its end.
    var xr: array<vec4<f32>, XR>;
    if (live && in_regs) {
        for (var u = 0u; u < XR; u = u + 1u) {
            let i = t + u * WORKGROUP;
            if (i < kv) {
                xr[u] = x[base + i];
            }
        }
        for (var u = 0u; u < XR; u = u + 1u) {
            top = max(top, abs_bits(xr[u], base + t + u * WORKGROUP, &bad));
        }
    } else if (live) {
        for (var i = base + t; i <= last; i = i + 4u * WORKGROUP) {
            let i1 = min(i + WORKGROUP, last);
            let i2 = min(i + 2u * WORKGROUP, last);
            let i3 = min(i + 3u * WORKGROUP, last);
            let v0 = x[i];
            let v1 = x[i1];
            let v2 = x[i2];
            let v3 = x[i3];
            let t01 = max(abs_bits(v0, i, &bad), abs_bits(v1, i1, &bad));
            let t23 = max(abs_bits(v2, i2, &bad), abs_bits(v3, i3, &bad));
            top = max(top, max(t01, t23));
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

    // 2. Every thread derives the same inv (cheap, and no extra barrier).
    let a = max(bitcast<f32>(top), 1e-5f);
    let inv = exact_div_127(a);
    if (!live) {
        return;
    }
    if (t == 0u) {
        absmax[params.row_base + row] = a;
    }

    // 3. Quantize and pack; padding words (K rounded up to 16) are zero.
    let out_base = row * wpr;
    if (in_regs) {
        for (var u = 0u; u < XR; u = u + 1u) {
            let w = t + u * WORKGROUP;
            if (w < wpr) {
                packed[out_base + w] = quantize(xr[u], inv);
            }
        }
        return;
    }
    for (var w = t; w < wpr; w = w + 4u * WORKGROUP) {
        // Four independent loads (clamped into the row; a clamped one is never stored).
        let w1 = w + WORKGROUP;
        let w2 = w + 2u * WORKGROUP;
        let w3 = w + 3u * WORKGROUP;
        let v0 = x[base + min(w, kv - 1u)];
        let v1 = x[base + min(w1, kv - 1u)];
        let v2 = x[base + min(w2, kv - 1u)];
        let v3 = x[base + min(w3, kv - 1u)];
        packed[out_base + w] = select(0u, quantize(v0, inv), w < kv);
        if (w1 < wpr) {
            packed[out_base + w1] = select(0u, quantize(v1, inv), w1 < kv);
        }
        if (w2 < wpr) {
            packed[out_base + w2] = select(0u, quantize(v2, inv), w2 < kv);
        }
        if (w3 < wpr) {
            packed[out_base + w3] = select(0u, quantize(v3, inv), w3 < kv);
        }
    }
}
