// The canonical absolute-value sum of layout.rs, the pieces shared by weight_quant_sum.wgsl (one
// level per dispatch) and weight_quant_fused.wgsl (the whole quantization in one dispatch).
//
// One workgroup of 256 lanes sums one 4096-value block: lane t adds e[t + 256 r] for r = 0..16
// sequentially from 0.0 (`lane_sum`), then the explicit lane tree with strides 128, 64, ..., 1 in
// workgroup memory (`lane_tree`; never subgroupAdd: its order is unspecified). The last level
// (`final_total`) sums up to FINAL_BLOCKS blocks one after the other and, if there was more than
// one, those block sums as one more block. Each kernel supplies `final_block_sum(first, t)`, the
// sum of the block of the last level's values starting at `first`, and a `Params` with
// `zero: u32` (always 0) and `count: f32` ((N * K) as f32). Needs exact_div.wgsl.

const LANES: u32 = 256u;
const BLOCK: u32 = 4096u;
// Most blocks the finalizing workgroup sums (engine: kernels::SUM_FINAL_BLOCKS).
const FINAL_BLOCKS: u32 = 64u;
const EXP_MASK: u32 = 0x7f800000u;
// No non-finite value seen (the status words' clean value).
const NONE_SEEN: u32 = 0xffffffffu;

var<workgroup> lanes: array<f32, 256>;
// The block sums of the finalizing workgroup.
var<workgroup> finals: array<f32, 64>;

// p + v, rounded here: XOR with a runtime zero hides the sum from the optimizer, so a driver
// allowed to reassociate float additions (Vulkan does not forbid it) keeps the canonical order.
fn add(p: f32, v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(p + v) ^ params.zero);
}

// |e| of four values from their raw bits `raw` at flat indices `idx` (zero at or past `len`: the
// block's zero padding). |x| clears the sign bit (exact, no float op); the NaN/Inf test is a bit
// test because `x != x` may be optimized away. Lowers `bad` to the first non-finite index.
fn abs4(raw: vec4<u32>, idx: vec4<u32>, len: u32, bad: ptr<function, u32>) -> vec4<f32> {
    let bits = select(vec4<u32>(0u), raw & vec4<u32>(0x7fffffffu), idx < vec4<u32>(len));
    let inf = (bits & vec4<u32>(EXP_MASK)) == vec4<u32>(EXP_MASK);
    if (any(inf)) {
        *bad = min(*bad, select(select(select(idx.w, idx.z, inf.z), idx.y, inf.y), idx.x, inf.x));
    }
    return bitcast<vec4<f32>>(bits);
}

// A lane's 16 values (a.x = r 0, a.y = r 1, ..., d.w = r 15) added sequentially from 0.0.
fn lane_sum(a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) -> f32 {
    var p = 0.0;
    p = add(add(add(add(p, a.x), a.y), a.z), a.w);
    p = add(add(add(add(p, b.x), b.y), b.z), b.w);
    p = add(add(add(add(p, c.x), c.y), c.z), c.w);
    p = add(add(add(add(p, d.x), d.y), d.z), d.w);
    return p;
}

// The explicit pairwise tree over the 256 lane sums; the total on every thread.
fn lane_tree(p: f32, t: u32) -> f32 {
    workgroupBarrier();
    lanes[t] = p;
    workgroupBarrier();
    for (var stride = LANES / 2u; stride > 0u; stride = stride >> 1u) {
        if (t < stride) {
            lanes[t] = add(lanes[t], lanes[t + stride]);
        }
        workgroupBarrier();
    }
    return lanes[0];
}

// The last level(s) over `values` values (at most FINAL_BLOCKS blocks), by one workgroup; the
// total on every thread.
fn final_total(values: u32, t: u32) -> f32 {
    let count = min((values + BLOCK - 1u) / BLOCK, FINAL_BLOCKS);
    for (var b = 0u; b < count; b = b + 1u) {
        let sum = final_block_sum(b * BLOCK, t);
        if (t == 0u) {
            finals[b] = sum;
        }
    }
    workgroupBarrier();
    var total = finals[0];
    if (count > 1u) {
        // One more level over the block sums: lane t holds value t (t < count <= 256) plus the
        // block's zero padding, which adds exactly nothing to a non-negative value.
        var p = 0.0;
        if (t < count) {
            p = add(p, finals[t]);
        }
        total = lane_tree(p, t);
    }
    return total;
}

// Whether the total overflowed (finite inputs can still), and the scale s = max(total / count,
// 1e-5) with the correctly rounded division cpu-ref uses.
fn sum_overflowed(total: f32) -> bool {
    return (bitcast<u32>(total) & EXP_MASK) == EXP_MASK;
}

fn weight_scale(total: f32) -> f32 {
    return max(exact_div(total, params.count), 1e-5f);
}
