// Weight quantization in ONE dispatch, for K % 16 == 0: the canonical absolute-value sum, the
// scale s, and quantize + pack — bit for bit what weight_quant_sum.wgsl (level by level) and
// weight_quant_pack_vec4.wgsl compute.
//
// Why: run as separate dispatches, each level waits behind a pipeline barrier for the whole GPU
// to drain (about 2 µs on the H200, plus the ramp-up of the next), and the pack pass reads w from
// memory a second time. Here the pack workgroups wait, inside the dispatch, only for s, with their
// weights already loaded, and they take the matrix from its end, which the sum read last: for a
// matrix that fits the L2 cache, w likely comes from memory once.
//
// Layout: `blocks` = ceil(len / 4096) sum workgroups, then ceil(blocks / PACK_CHUNKS) pack
// workgroups. Sum workgroup b sums block b in the canonical order and publishes the sum (atomic
// store into packed[b], scratch until the packs overwrite it); the workgroup that finishes the
// last block sums the block sums (`final_total`), writes s to `scale` and publishes its bits.
// Pack workgroup p packs the PACK_CHUNKS chunks q = blocks - 1 - PACK_CHUNKS p, q - 1, ... (a
// chunk: 4096 values, words [256 q, 256 q + 256)), all their loads issued before the wait.
// Four chunks per pack workgroup leave more of the GPU to calls running alongside and to the
// sums (H200, overlapped calls, % of copy bandwidth: 2560 x 2560 61.7 -> 77.1, 640 x 2560
// 55.6 -> 80.0, 6912 x 2560 72.6 -> 82.5) but lengthen a lone small call (640 x 2560 behind a
// barrier 12.2 -> 16.2 µs; 6912 x 2560 51.7 -> 47.9): the engine picks by whether the dispatch
// overlaps earlier work, and by size (ops/bitnet_weight_quant.rs). Several blocks per sum
// workgroup were slower (2 per workgroup: 2560 x 2560 overlapped 59.7 %, 4: 42.6 %).
//
// State: status word STATE, clean (0xFFFFFFFF) at every launch. The sum workgroups count down
// from it; s's bits (below 2^31: s is positive) then replace the count, so a value below 2^31
// means "s is ready, and this is s". Waiting follows bitlinear_chain_subgroup.wgsl: a pack
// workgroup only waits for workgroups with lower indices, which GPUs start first; the wait is
// bounded (SPIN_LIMIT), and a workgroup that runs out flags status word ABORT — the engine then
// reports the run as aborted, a GPU fault. The waiting workgroups pause between polls (see
// wait_for_scale): polled back to back, the one word would slow the sums down.
//
// Status words: 0 = first non-finite w index, 1 = the sum overflowed, 2 = the run aborted,
// 3 = the state (not an error). Needs exact_div.wgsl, weight_quant_sum_common.wgsl and
// weight_quant_pack_common.wgsl (prepended by bitnet.rs).

struct Params {
    // Values of w (N * K, a multiple of 16).
    len: u32,
    // ceil(len / 4096): sum workgroups, and pack workgroups.
    blocks: u32,
    // (N * K) as f32, rounded on the host exactly as Rust's `as` does.
    count: f32,
    // Always 0: the runtime zero of the optimization barriers.
    zero: u32,
}

@group(0) @binding(0) var<storage, read> weights: array<vec4<f32>>;
// The packed codes; its first `blocks` words carry the block sums until the packs run.
@group(0) @binding(1) var<storage, read_write> packed: array<atomic<u32>>;
// The ternary tensor's scale buffer: s, for the dispatches after this one.
@group(0) @binding(2) var<storage, read_write> scale: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

// Bounds the wait (override; engine: SPIN_LIMIT_*): SPIN_LIMIT iterations of 32 polls on CPU
// adapters, 8 SPIN_LIMIT polls with their pauses on GPUs (an estimated 0.2 s on the H200).
override SPIN_LIMIT: u32 = 32768u;
// Poll with read-modify-writes (CPU adapters: lavapipe hoists a relaxed atomicLoad out of a
// wait loop; see bitlinear_chain_subgroup.wgsl).
override POLL_RMW: bool = false;
// Integer steps between two polls on GPUs (see wait_for_scale).
override POLL_DELAY: u32 = 128u;
// Chunks of 4096 values per pack workgroup, 1 to 4 (see the layout above).
override PACK_CHUNKS: u32 = 1u;

const ABORT: u32 = 2u;
const STATE: u32 = 3u;
// State values at or above this are the countdown; below, s's bits.
const COUNTING: u32 = 0x80000000u;

// Thread 0's news for the whole workgroup (read with workgroupUniformLoad).
var<workgroup> news: u32;
// Group bits of each float vec4 of a pack workgroup, index = vec4 - first vec4.
var<workgroup> parts: array<u32, 1024>;

// Four of a lane's values e[i], e[i + 256], e[i + 512], e[i + 768] of w, as |e|.
fn load4(i: u32, bad: ptr<function, u32>) -> vec4<f32> {
    let idx = vec4<u32>(i, i + LANES, i + 2u * LANES, i + 3u * LANES);
    let c = min(idx, vec4<u32>(params.len - 1u));
    let raw = vec4<u32>(
        bitcast<u32>(weights[c.x >> 2u][c.x & 3u]),
        bitcast<u32>(weights[c.y >> 2u][c.y & 3u]),
        bitcast<u32>(weights[c.z >> 2u][c.z & 3u]),
        bitcast<u32>(weights[c.w >> 2u][c.w & 3u]),
    );
    return abs4(raw, idx, params.len, bad);
}

// The last level reads the published block sums (non-negative; zero past the last block).
fn final_block_sum(first: u32, t: u32) -> f32 {
    var v: array<f32, 16>;
    for (var r = 0u; r < 16u; r = r + 1u) {
        let i = first + t + r * LANES;
        v[r] = select(0.0, bitcast<f32>(atomicLoad(&packed[min(i, params.blocks - 1u)])), i < params.blocks);
    }
    let p = lane_sum(
        vec4<f32>(v[0], v[1], v[2], v[3]),
        vec4<f32>(v[4], v[5], v[6], v[7]),
        vec4<f32>(v[8], v[9], v[10], v[11]),
        vec4<f32>(v[12], v[13], v[14], v[15]),
    );
    return lane_tree(p, t);
}

// Sum workgroup b: its block's sum, published; the last one to finish also makes s.
fn sum_block(b: u32, t: u32) {
    var bad = NONE_SEEN;
    let i = b * BLOCK + t;
    let p = lane_sum(
        load4(i, &bad),
        load4(i + 4u * LANES, &bad),
        load4(i + 8u * LANES, &bad),
        load4(i + 12u * LANES, &bad),
    );
    if (bad != NONE_SEEN) {
        atomicMin(&nonfinite[0], bad);
    }
    let sum = lane_tree(p, t);
    if (t == 0u) {
        atomicStore(&packed[b], bitcast<u32>(sum));
    }
    // Publish the sum (device scope) before counting the block.
    storageBarrier();
    if (t == 0u) {
        let before = atomicSub(&nonfinite[STATE], 1u);
        news = u32(before == NONE_SEEN - (params.blocks - 1u));
    }
    if (workgroupUniformLoad(&news) == 0u) {
        return;
    }
    // The last block: every other sum was published before its workgroup counted itself.
    storageBarrier();
    var total = sum;
    if (params.blocks > 1u) {
        total = final_total(params.blocks, t);
    }
    if (t != 0u) {
        return;
    }
    if (sum_overflowed(total)) {
        atomicMin(&nonfinite[1], 0u);
    }
    let s = weight_scale(total);
    scale[0] = s;
    // s > 0 (or a NaN from a NaN input, reported as such): keep its bits below COUNTING.
    atomicStore(&nonfinite[STATE], min(bitcast<u32>(s), 0x7fffffffu));
}

// Up to eight read-modify-write polls in straight-line code (CPU adapters: lavapipe hoists a
// relaxed atomicLoad out of a wait loop and caps a shader's loop iterations in all, see
// bitlinear_chain_subgroup.wgsl); the last value seen.
fn poll8_rmw() -> u32 {
    var v = atomicAdd(&nonfinite[STATE], 0u);
    if (v >= COUNTING) { v = atomicAdd(&nonfinite[STATE], 0u); }
    if (v >= COUNTING) { v = atomicAdd(&nonfinite[STATE], 0u); }
    if (v >= COUNTING) { v = atomicAdd(&nonfinite[STATE], 0u); }
    if (v >= COUNTING) { v = atomicAdd(&nonfinite[STATE], 0u); }
    if (v >= COUNTING) { v = atomicAdd(&nonfinite[STATE], 0u); }
    if (v >= COUNTING) { v = atomicAdd(&nonfinite[STATE], 0u); }
    if (v >= COUNTING) { v = atomicAdd(&nonfinite[STATE], 0u); }
    return v;
}

// s's bits once ready (thread 0), or NONE_SEEN when the run aborted.
//
// GPUs: one poll, then POLL_DELAY dependent integer steps before the next. Up to a thousand pack
// workgroups wait at once, all on one word: polled back to back, that word's L2 slice spends its
// time answering them, and the weights the sum workgroups read through the same slice queue
// behind (H200, 14336 x 4096: 172 µs without the pause, 146 µs with 128 steps, 135 µs if the packs
// did not wait at all; 8, 32, 128, 512 and 2048 steps: 147, 147, 146, 160, 181 µs). The steps
// feed the next poll's index through the runtime zero, so the compiler cannot drop them.
fn wait_for_scale(g: u32) -> u32 {
    if (!POLL_RMW) {
        var x = g;
        for (var i = 0u; i < SPIN_LIMIT * 8u; i = i + 1u) {
            let v = atomicLoad(&nonfinite[STATE + (x & params.zero)]);
            if (v < COUNTING) {
                return v;
            }
            // Another workgroup gave up (checked now and then: polls cost the sums).
            if ((i & 31u) == 31u && atomicLoad(&nonfinite[ABORT]) != NONE_SEEN) {
                return NONE_SEEN;
            }
            for (var d = 0u; d < POLL_DELAY; d = d + 1u) {
                x = x * 1664525u + 1013904223u;
            }
        }
        atomicMin(&nonfinite[ABORT], g);
        return NONE_SEEN;
    }
    for (var i = 0u; i < SPIN_LIMIT; i = i + 1u) {
        let v = min(min(poll8_rmw(), poll8_rmw()), min(poll8_rmw(), poll8_rmw()));
        if (v < COUNTING) {
            return v;
        }
        if (atomicAdd(&nonfinite[ABORT], 0u) != NONE_SEEN) {
            return NONE_SEEN;
        }
    }
    atomicMin(&nonfinite[ABORT], g);
    return NONE_SEEN;
}

// One chunk's four float vec4 per lane (vec4 first + t, + 256, + 512, + 768).
struct Chunk {
    a: vec4<f32>,
    b: vec4<f32>,
    c: vec4<f32>,
    d: vec4<f32>,
}

// Chunk q's values of this lane.
fn load_chunk(q: u32, t: u32) -> Chunk {
    let first_vec = 4u * q * LANES;
    let last = params.len / 4u - 1u;
    return Chunk(
        weights[min(first_vec + t, last)],
        weights[min(first_vec + LANES + t, last)],
        weights[min(first_vec + 2u * LANES + t, last)],
        weights[min(first_vec + 3u * LANES + t, last)],
    );
}

// Packs chunk q (words [256 q, 256 q + 256)) with the factors of s. Uniform control flow; a
// barrier must separate two calls (parts).
fn pack_chunk(c: Chunk, q: u32, t: u32, f: vec2<f32>) {
    let first_word = q * LANES;
    let first_vec = 4u * first_word;
    parts[t] = group_bits(c.a, first_vec + t, f);
    parts[LANES + t] = group_bits(c.b, first_vec + LANES + t, f);
    parts[2u * LANES + t] = group_bits(c.c, first_vec + 2u * LANES + t, f);
    parts[3u * LANES + t] = group_bits(c.d, first_vec + 3u * LANES + t, f);
    workgroupBarrier();
    let word = first_word + t;
    if (word < params.len / 16u) {
        atomicStore(
            &packed[word],
            parts[4u * t] | parts[4u * t + 1u] | parts[4u * t + 2u] | parts[4u * t + 3u],
        );
    }
}

// Pack workgroup p (workgroup g): its chunks' loads first, then the wait for s, then the packs.
fn pack_chunks(p: u32, g: u32, t: u32) {
    let q0 = params.blocks - 1u - p * PACK_CHUNKS;
    let chunks = min(PACK_CHUNKS, q0 + 1u);
    let c0 = load_chunk(q0, t);
    var c1 = Chunk();
    var c2 = Chunk();
    var c3 = Chunk();
    if (PACK_CHUNKS > 1u) {
        c1 = load_chunk(select(q0, q0 - 1u, chunks > 1u), t);
    }
    if (PACK_CHUNKS > 2u) {
        c2 = load_chunk(select(q0, q0 - 2u, chunks > 2u), t);
    }
    if (PACK_CHUNKS > 3u) {
        c3 = load_chunk(select(q0, q0 - 3u, chunks > 3u), t);
    }
    if (t == 0u) {
        news = wait_for_scale(g);
    }
    let s_bits = workgroupUniformLoad(&news);
    if (s_bits == NONE_SEEN) {
        return;
    }
    let f = pack_factors(bitcast<f32>(s_bits));
    // A barrier between chunks: parts is the next chunk's too.
    pack_chunk(c0, q0, t, f);
    if (chunks > 1u) {
        workgroupBarrier();
        pack_chunk(c1, q0 - 1u, t, f);
    }
    if (chunks > 2u) {
        workgroupBarrier();
        pack_chunk(c2, q0 - 2u, t, f);
    }
    if (chunks > 3u) {
        workgroupBarrier();
        pack_chunk(c3, q0 - 3u, t, f);
    }
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let g = wid.x + wid.y * nwg.x;
    let packs = (params.blocks + PACK_CHUNKS - 1u) / PACK_CHUNKS;
    if (g < params.blocks) {
        sum_block(g, t);
    } else if (g < params.blocks + packs) {
        pack_chunks(g - params.blocks, g, t);
    }
}
