// Weight quantization, pass (a): one level of the canonical absolute-value sum of layout.rs, with
// NaN/Inf detection; on the last level also the scale `s = max(sum / count, 1e-5)`.
//
// One workgroup sums one 4096-value block exactly in the canonical order: lane t adds
// e[t + 256 r] for r = 0..16 sequentially from 0.0, then the explicit lane tree with strides
// 128, 64, ..., 1 in workgroup memory (never subgroupAdd: its order is unspecified). The host runs
// this kernel level by level (values -> block sums -> ...); levels after the first read
// non-negative block sums, for which the absolute value is the identity.
//
// The last level (`finalize = 1`, one workgroup) takes up to FINAL_BLOCKS blocks: it sums them one
// after the other (the next level's values, kept in workgroup memory) and, if there was more
// than one, sums those values as one more block — the two last levels of the order in one
// dispatch. Then s.
//
// Status words: 0 = first non-finite input index (first level only), 1 = the final sum
// overflowed (index 0). Needs the exact_div.wgsl snippet (prepended by bitnet.rs).

struct Params {
    // Values in this dispatch's `input` binding.
    len: u32,
    // Index in `output` of this dispatch's first block (the host chunks large inputs).
    block_base: u32,
    // 1 on the first level: report non-finite inputs (later levels read block sums).
    check_input: u32,
    // 1 on the last level: one workgroup sums all `len` values (at most FINAL_BLOCKS blocks) and
    // thread 0 writes s to output[0].
    finalize: u32,
    // (N * K) as f32, rounded on the host exactly as Rust's `as` does.
    count: f32,
    // Always 0: the runtime zero of `add` (the compiler cannot know its value).
    zero: u32,
}

@group(0) @binding(0) var<storage, read> input: array<f32>;
// Block sums (one per workgroup), or the scale s when `finalize` is set.
@group(0) @binding(1) var<storage, read_write> output: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

const LANES: u32 = 256u;
const BLOCK: u32 = 4096u;
// Most blocks the finalizing workgroup sums (engine: kernels::SUM_FINAL_BLOCKS).
const FINAL_BLOCKS: u32 = 64u;
const EXP_MASK: u32 = 0x7f800000u;

var<workgroup> lanes: array<f32, 256>;
// The block sums of the finalizing workgroup.
var<workgroup> finals: array<f32, 64>;

// p + v, rounded here: XOR with a runtime zero hides the sum from the optimizer, so a driver
// allowed to reassociate float additions (Vulkan does not forbid it) keeps the canonical order.
fn add(p: f32, v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(p + v) ^ params.zero);
}

// Four of a lane's values, e[i], e[i + 256], e[i + 512], e[i + 768], as |e| (zero past the end),
// loaded together (the sequential sum below must not wait for one load at a time). Flags the
// first non-finite one in `bad`.
fn load4(i: u32, bad: ptr<function, u32>) -> vec4<f32> {
    let idx = vec4<u32>(i, i + LANES, i + 2u * LANES, i + 3u * LANES);
    let last = max(params.len, 1u) - 1u;
    let raw = vec4<u32>(
        bitcast<u32>(input[min(idx.x, last)]),
        bitcast<u32>(input[min(idx.y, last)]),
        bitcast<u32>(input[min(idx.z, last)]),
        bitcast<u32>(input[min(idx.w, last)]),
    );
    // |x| clears the sign bit (exact, no float op); the NaN/Inf test is a bit test because
    // `x != x` may be optimized away. Out-of-range positions are the block's zero padding.
    let bits = select(vec4<u32>(0u), raw & vec4<u32>(0x7fffffffu), idx < vec4<u32>(params.len));
    let inf = (bits & vec4<u32>(EXP_MASK)) == vec4<u32>(EXP_MASK);
    if (any(inf)) {
        *bad = min(*bad, select(select(select(idx.w, idx.z, inf.z), idx.y, inf.y), idx.x, inf.x));
    }
    return bitcast<vec4<f32>>(bits);
}

// Steps 2 and 3 of the order for the block starting at `first_value`: returns the block's sum on
// every thread (the tree's result, read after the last barrier).
fn block_sum(first_value: u32, t: u32) -> f32 {
    // Lane t's 16 values e[t + 256 r], all loads issued first, then added sequentially from 0.0
    // in r order (the canonical order).
    var bad = 0xffffffffu;
    let i = first_value + t;
    let a = load4(i, &bad);
    let b = load4(i + 4u * LANES, &bad);
    let c = load4(i + 8u * LANES, &bad);
    let d = load4(i + 12u * LANES, &bad);
    var p = 0.0;
    p = add(add(add(add(p, a.x), a.y), a.z), a.w);
    p = add(add(add(add(p, b.x), b.y), b.z), b.w);
    p = add(add(add(add(p, c.x), c.y), c.z), c.w);
    p = add(add(add(add(p, d.x), d.y), d.z), d.w);
    if (bad != 0xffffffffu && params.check_input != 0u) {
        atomicMin(&nonfinite[0], bad);
    }
    return lane_tree(p, t);
}

// Step 3: the explicit pairwise tree over the 256 lane sums; the total on every thread.
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

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let block = wid.x + wid.y * nwg.x;
    let blocks = (params.len + BLOCK - 1u) / BLOCK;
    if (params.finalize == 0u) {
        let sum = block_sum(block * BLOCK, t);
        // Workgroups past the last block exist only when the engine folds the grid into 2D.
        if (t == 0u && block < blocks) {
            output[params.block_base + block] = sum;
        }
        return;
    }

    // The last level(s), one workgroup.
    let count = min(blocks, FINAL_BLOCKS);
    for (var b = 0u; b < count; b = b + 1u) {
        let sum = block_sum(b * BLOCK, t);
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
    if (t != 0u) {
        return;
    }
    // Finite inputs can still overflow the sum.
    if ((bitcast<u32>(total) & EXP_MASK) == EXP_MASK) {
        atomicMin(&nonfinite[1], 0u);
    }
    output[0] = max(exact_div(total, params.count), 1e-5f);
}
