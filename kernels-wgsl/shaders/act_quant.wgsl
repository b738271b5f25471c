// Activation quantization: one workgroup per row (the generic variant: any K; K % 4 == 0 takes
// act_quant_vec4.wgsl).
//
// 1. absmax of the row (any order: max is exact), taken as the max of the sign-cleared bit
//    patterns, which order like the values for non-negative floats; NaN/Inf set status word 0 to
//    the smallest offending flat index (bit test: `x != x` may be optimized away).
// 2. a = max(absmax, 1e-5), inv = 127 / a correctly rounded (exact_div_127).
// 3. xq = clamp(round(x * inv), -128, 127) (round = ties to even), packed 4 per u32
//    little-endian, the row padded with zero bytes to 4 * ceil(K / 16) words.
//
// In a decode every op waits on the previous one, so latency counts: rows of up to XR_WORDS
// packed words (K <= 16384) are loaded once, each thread issuing all its loads (the 4 values of
// words t + 256 u, u < XR) before using any, into registers (constant-trip loops over a
// function-scope array, which the compiler unrolls); absmax and quantization both come from the
// registers. Longer rows take the fallback loops (x read twice). The maximum is combined through
// workgroup memory in two levels (two barriers).
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
    // absmax as a whole).
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
const NONE: u32 = 0xffffffffu;
// Packed words (4 values each) per thread kept in registers.
const XR: u32 = 16u;
// Longest row (packed words, padding included) quantized from registers: K <= 16384.
const XR_WORDS: u32 = XR * WORKGROUP;

var<workgroup> scratch: array<u32, 256>;
var<workgroup> scratch16: array<u32, 16>;

// Index of the first true component (the vector has one).
fn first_true(v: vec4<bool>) -> u32 {
    return select(select(select(3u, 2u, v.z), 1u, v.y), 0u, v.x);
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
    let k_len = params.k;
    let wpr = params.words_per_row;
    let base = row * k_len;
    // Uniform: the whole row (padding words included) fits the registers.
    let in_regs = wpr <= XR_WORDS;

    // 1. absmax over the row's sign-cleared bit patterns.
    var top = 0u;
    var bad = NONE;
    // The 4 values of word t + 256 u; zero (finite, no maximum, quantizes to 0) past the row.
    var xr: array<vec4<f32>, XR>;
    if (live && in_regs) {
        for (var u = 0u; u < XR; u = u + 1u) {
            let k = 4u * (t + u * WORKGROUP);
            if (k < k_len) {
                xr[u].x = x[base + k];
            }
            if (k + 1u < k_len) {
                xr[u].y = x[base + k + 1u];
            }
            if (k + 2u < k_len) {
                xr[u].z = x[base + k + 2u];
            }
            if (k + 3u < k_len) {
                xr[u].w = x[base + k + 3u];
            }
        }
        for (var u = 0u; u < XR; u = u + 1u) {
            let b = bitcast<vec4<u32>>(xr[u]) & vec4<u32>(0x7fffffffu);
            let inf = (b & vec4<u32>(EXP_MASK)) == vec4<u32>(EXP_MASK);
            if (any(inf)) {
                bad = min(bad, base + 4u * (t + u * WORKGROUP) + first_true(inf));
            }
            top = max(top, max(max(b.x, b.y), max(b.z, b.w)));
        }
    } else if (live) {
        for (var k = t; k < k_len; k = k + WORKGROUP) {
            let bits = bitcast<u32>(x[base + k]) & 0x7fffffffu;
            if ((bits & EXP_MASK) == EXP_MASK) {
                bad = min(bad, base + k);
            }
            top = max(top, bits);
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

    // 2. The row's scale; every thread derives the same inv (cheap, and no extra barrier).
    let a = max(bitcast<f32>(top), 1e-5f);
    let inv = exact_div_127(a);
    if (!live) {
        return;
    }
    if (t == 0u) {
        absmax[params.row_base + row] = a;
    }

    // 3. Quantize and pack, one output word (4 values) per step.
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
    for (var w = t; w < wpr; w = w + WORKGROUP) {
        var word = 0u;
        for (var i = 0u; i < 4u; i = i + 1u) {
            let k = 4u * w + i;
            if (k < k_len) {
                let q = i32(clamp(round(x[base + k] * inv), -128.0, 127.0));
                word = word | ((u32(q) & 0xffu) << (8u * i));
            }
        }
        packed[out_base + w] = word;
    }
}
