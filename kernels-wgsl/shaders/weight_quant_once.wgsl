// Weight quantization reading w once, dispatch 2 of 3, for K % 16 == 0: the canonical |w| sum,
// every code that is the same across the band of weight_quant_band.wgsl packed at once, a list
// of the words holding a code that is not, and (by the last workgroup) s.
//
// Why: s = mean |w| must be known before any weight rounds, so quantizing reads w twice — from
// memory twice for a matrix larger than the L2 cache (weight_quant_fused.wgsl). But a code is
// q = clamp(round(w * (1 / s)), -1, 1), monotone in s, so a code that is the same at both ends of
// a band [s_lo, s_hi] is the code at every s inside it. With the band from a sample, nearly every
// code is known on the first read; dispatch 3 (weight_quant_fixup.wgsl) re-reads only the listed
// words once s is known, or every word if s left the band. Unlike the sampled-band kernel of
// docs/perf/not-kept.md, nothing waits inside a dispatch and no workgroup holds its values
// through the sum: each lane turns its values into codes as they arrive, then sums them.
//
// Layout: workgroup b takes block b (4096 values) exactly as weight_quant_sum.wgsl: lane t loads
// e[t + 256 r], r = 0..16 (a coalesced 1 KiB per r), sums them in the canonical order
// (weight_quant_sum_common.wgsl) and publishes the block sum (atomic, scratch); the workgroup
// that counts the last block down (status word 3, clean at every launch) makes s, writes it to
// the scale buffer, and picks the fixup mode. Codes: value t + 256 r is word t / 16 + 16 r of the
// block, at offset t % 16, so lane t keeps its 16 codes (2 bits each, 3 = not certain) in one
// word, and after the sum's barriers lane t gathers word t of the block from lanes 16 (t % 16) +
// o, o = 0..16 (workgroup memory, padded against bank conflicts).
//
// Status words: 0 = first non-finite w index, 1 = the sum overflowed, 3 = the countdown (not an
// error). Needs exact_div.wgsl, weight_quant_sum_common.wgsl, weight_quant_pack_common.wgsl and
// weight_quant_once_common.wgsl (prepended by bitnet.rs).

struct Params {
    // Values of w (N * K, a multiple of 16).
    len: u32,
    // ceil(len / 4096): the workgroups, one per block.
    blocks: u32,
    // (N * K) as f32, rounded on the host exactly as Rust's `as` does.
    count: f32,
    // Room in the uncertain-word list.
    capacity: u32,
    // Always 0: the runtime zero of the optimization barriers.
    zero: u32,
}

@group(0) @binding(0) var<storage, read> weights: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> packed: array<u32>;
@group(0) @binding(2) var<storage, read_write> scale: array<f32>;
@group(0) @binding(3) var<storage, read_write> scratch: array<atomic<u32>>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

const STATE: u32 = 3u;
override VARIANT: u32 = 0u;
// A code that differs across the band.
const UNCERTAIN: u32 = 3u;

// Lane 16 x + o's codes at index 17 x + o.
var<workgroup> lane_codes: array<u32, 272>;
var<workgroup> uncertain_words: atomic<u32>;
// Thread 0's news for the whole workgroup: the list position, then whether this is the last block.
var<workgroup> list_base: u32;
var<workgroup> last_block: u32;

// Four of a lane's values e[i], e[i + 256], e[i + 512], e[i + 768] of w, as raw bits.
fn load_raw4(i: u32) -> vec4<u32> {
    let idx = vec4<u32>(i, i + LANES, i + 2u * LANES, i + 3u * LANES);
    let c = min(idx, vec4<u32>(params.len - 1u));
    return vec4<u32>(
        bitcast<u32>(weights[c.x >> 2u][c.x & 3u]),
        bitcast<u32>(weights[c.y >> 2u][c.y & 3u]),
        bitcast<u32>(weights[c.z >> 2u][c.z & 3u]),
        bitcast<u32>(weights[c.w >> 2u][c.w & 3u]),
    );
}

// The codes (q + 1, or UNCERTAIN) of four values with magnitudes `a` and raw bits `raw`, as
// 2-bit fields at bits 2 r0, 2 r0 + 2, ... of the result. |q| = 1 exactly when
// w * (1 / s) > 0.5 (round to even takes 0.5 to 0), computed as pack_factors prescribes.
fn band_codes(a: vec4<f32>, raw: vec4<u32>, lo: vec2<f32>, hi: vec2<f32>, r0: u32) -> u32 {
    let one_lo = (pin4(a * lo.x) * lo.y) > vec4<f32>(0.5);
    let one_hi = (pin4(a * hi.x) * hi.y) > vec4<f32>(0.5);
    let signed = select(vec4<u32>(2u), vec4<u32>(0u), (raw & vec4<u32>(0x80000000u)) != vec4<u32>(0u));
    let code = select(select(vec4<u32>(1u), signed, one_lo), vec4<u32>(UNCERTAIN), one_lo != one_hi);
    return (code.x << (2u * r0)) | (code.y << (2u * r0 + 2u)) | (code.z << (2u * r0 + 4u))
        | (code.w << (2u * r0 + 6u));
}

// The last block: s from the block sums, and the fixup mode.
fn finish(t: u32) {
    var total = 0.0;
    if (params.blocks > 1u) {
        total = final_total(params.blocks, t);
    } else {
        total = bitcast<f32>(atomicLoad(&scratch[SCRATCH_SUMS]));
    }
    if (t != 0u) {
        return;
    }
    if (sum_overflowed(total)) {
        atomicMin(&nonfinite[1], 0u);
    }
    let s = weight_scale(total);
    scale[0] = s;
    let s_lo = bitcast<f32>(atomicLoad(&scratch[SCRATCH_BAND]));
    let s_hi = bitcast<f32>(atomicLoad(&scratch[SCRATCH_BAND + 1u]));
    let listed = atomicLoad(&scratch[SCRATCH_UNCERTAIN]) <= params.capacity;
    // A NaN s (a NaN input, reported) fails the comparison: every word is re-packed.
    let in_band = s >= s_lo && s <= s_hi;
    atomicStore(&scratch[SCRATCH_MODE], select(MODE_ALL, MODE_LIST, in_band && listed));
}

// The last level reads the published block sums (non-negative; zero past the last block).
fn final_block_sum(first: u32, t: u32) -> f32 {
    var v: array<f32, 16>;
    for (var r = 0u; r < 16u; r = r + 1u) {
        let i = first + t + r * LANES;
        let at = SCRATCH_SUMS + min(i, params.blocks - 1u);
        v[r] = select(0.0, bitcast<f32>(atomicLoad(&scratch[at])), i < params.blocks);
    }
    let p = lane_sum(
        vec4<f32>(v[0], v[1], v[2], v[3]),
        vec4<f32>(v[4], v[5], v[6], v[7]),
        vec4<f32>(v[8], v[9], v[10], v[11]),
        vec4<f32>(v[12], v[13], v[14], v[15]),
    );
    return lane_tree(p, t);
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let b = wid.x + wid.y * nwg.x;
    if (b >= params.blocks) {
        return;
    }
    if (VARIANT == 4u) {
        // Timing only: the block summed from four float vec4 per lane (not the canonical order).
        let v0 = b * 1024u + t;
        let last_vec = params.len / 4u - 1u;
        let p4 = lane_sum(abs(weights[min(v0, last_vec)]), abs(weights[min(v0 + 256u, last_vec)]),
            abs(weights[min(v0 + 512u, last_vec)]), abs(weights[min(v0 + 768u, last_vec)]));
        let s4 = lane_tree(p4, t);
        if (t == 0u) {
            atomicStore(&scratch[SCRATCH_SUMS + b], bitcast<u32>(s4));
        }
        storageBarrier();
        if (t == 0u) {
            let before = atomicSub(&nonfinite[STATE], 1u);
            last_block = u32(before == NONE_SEEN - (params.blocks - 1u));
        }
        if (workgroupUniformLoad(&last_block) == 0u) {
            return;
        }
        storageBarrier();
        finish(t);
        return;
    }
    let i = b * BLOCK + t;
    let r0 = load_raw4(i);
    let r1 = load_raw4(i + 4u * LANES);
    let r2 = load_raw4(i + 8u * LANES);
    let r3 = load_raw4(i + 12u * LANES);
    let lo = vec2<f32>(
        bitcast<f32>(atomicLoad(&scratch[SCRATCH_FACTORS])),
        bitcast<f32>(atomicLoad(&scratch[SCRATCH_FACTORS + 1u])),
    );
    let hi = vec2<f32>(
        bitcast<f32>(atomicLoad(&scratch[SCRATCH_FACTORS + 2u])),
        bitcast<f32>(atomicLoad(&scratch[SCRATCH_FACTORS + 3u])),
    );
    var bad = NONE_SEEN;
    let a0 = abs4(r0, vec4<u32>(i, i + LANES, i + 2u * LANES, i + 3u * LANES), params.len, &bad);
    let j1 = i + 4u * LANES;
    let a1 = abs4(r1, vec4<u32>(j1, j1 + LANES, j1 + 2u * LANES, j1 + 3u * LANES), params.len, &bad);
    let j2 = i + 8u * LANES;
    let a2 = abs4(r2, vec4<u32>(j2, j2 + LANES, j2 + 2u * LANES, j2 + 3u * LANES), params.len, &bad);
    let j3 = i + 12u * LANES;
    let a3 = abs4(r3, vec4<u32>(j3, j3 + LANES, j3 + 2u * LANES, j3 + 3u * LANES), params.len, &bad);
    if (bad != NONE_SEEN) {
        atomicMin(&nonfinite[0], bad);
    }
    if (t == 0u) {
        atomicStore(&uncertain_words, 0u);
    }
    if (VARIANT != 2u) {
    lane_codes[t + t / 16u] = band_codes(a0, r0, lo, hi, 0u) | band_codes(a1, r1, lo, hi, 4u)
        | band_codes(a2, r2, lo, hi, 8u) | band_codes(a3, r3, lo, hi, 12u);
    }
    // lane_tree's barriers also publish lane_codes.
    let sum = lane_tree(lane_sum(a0, a1, a2, a3), t);

    // Word t of the block: offset o from lane 16 (t % 16) + o, code number t / 16.
    let x = 17u * (t % 16u);
    let shift = 2u * (t / 16u);
    var word = 0u;
    var uncertain = false;
    for (var o = 0u; o < 16u; o = o + 1u) {
        let c = (lane_codes[x + o] >> shift) & 3u;
        uncertain = uncertain || c == UNCERTAIN;
        word = word | (c << (8u * (o & 3u) + 2u * (o >> 2u)));
    }
    let w = b * LANES + t;
    let words = params.len / 16u;
    uncertain = uncertain && w < words && VARIANT != 3u;
    if (w < words && VARIANT != 2u) {
        packed[w] = word;
    }
    var rank = 0u;
    if (uncertain) {
        rank = atomicAdd(&uncertain_words, 1u);
    }
    workgroupBarrier();
    if (t == 0u) {
        let n = atomicLoad(&uncertain_words);
        list_base = 0u;
        if (n > 0u) {
            list_base = atomicAdd(&scratch[SCRATCH_UNCERTAIN], n);
        }
        atomicStore(&scratch[SCRATCH_SUMS + b], bitcast<u32>(sum));
    }
    let base = workgroupUniformLoad(&list_base);
    if (uncertain && base + rank < params.capacity) {
        atomicStore(&scratch[SCRATCH_SUMS + params.blocks + base + rank], w);
    }
    // Publish the block sum and the list entries (device scope) before counting the block.
    storageBarrier();
    if (t == 0u) {
        let before = atomicSub(&nonfinite[STATE], 1u);
        last_block = u32(before == NONE_SEEN - (params.blocks - 1u));
    }
    if (workgroupUniformLoad(&last_block) == 0u) {
        return;
    }
    storageBarrier();
    finish(t);
}
