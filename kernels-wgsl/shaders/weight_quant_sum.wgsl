// Weight quantization, pass (a): one level of the canonical absolute-value sum of layout.rs, with
// NaN/Inf detection; on the last level also the scale `s = max(sum / count, 1e-5)`.
//
// One workgroup sums one 4096-value block in the canonical order (weight_quant_sum_common.wgsl).
// The host runs this kernel level by level (values -> block sums -> ...); levels after the first
// read non-negative block sums, for which the absolute value is the identity. The last level
// (`finalize = 1`, one workgroup) takes up to FINAL_BLOCKS blocks and sums them as
// `final_total` does — the two last levels of the order in one dispatch. Then s.
//
// Status words: 0 = first non-finite input index (first level only), 1 = the final sum
// overflowed (index 0). Needs exact_div.wgsl and weight_quant_sum_common.wgsl (prepended by
// bitnet.rs).

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

// Four of a lane's values, e[i], e[i + 256], e[i + 512], e[i + 768], as |e| (zero past the end),
// loaded together (the sequential sum must not wait for one load at a time).
fn load4(i: u32, bad: ptr<function, u32>) -> vec4<f32> {
    let idx = vec4<u32>(i, i + LANES, i + 2u * LANES, i + 3u * LANES);
    let last = max(params.len, 1u) - 1u;
    let raw = vec4<u32>(
        bitcast<u32>(input[min(idx.x, last)]),
        bitcast<u32>(input[min(idx.y, last)]),
        bitcast<u32>(input[min(idx.z, last)]),
        bitcast<u32>(input[min(idx.w, last)]),
    );
    return abs4(raw, idx, params.len, bad);
}

// The sum of the block starting at `first_value`, on every thread.
fn block_sum(first_value: u32, t: u32) -> f32 {
    var bad = NONE_SEEN;
    let i = first_value + t;
    let a = load4(i, &bad);
    let b = load4(i + 4u * LANES, &bad);
    let c = load4(i + 8u * LANES, &bad);
    let d = load4(i + 12u * LANES, &bad);
    let p = lane_sum(a, b, c, d);
    if (bad != NONE_SEEN && params.check_input != 0u) {
        atomicMin(&nonfinite[0], bad);
    }
    return lane_tree(p, t);
}

// The last level reads this dispatch's input.
fn final_block_sum(first: u32, t: u32) -> f32 {
    return block_sum(first, t);
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

    let total = final_total(params.len, t);
    if (t != 0u) {
        return;
    }
    if (sum_overflowed(total)) {
        atomicMin(&nonfinite[1], 0u);
    }
    output[0] = weight_scale(total);
}
