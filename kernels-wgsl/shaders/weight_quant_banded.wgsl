// Weight quantization in one dispatch that reads w from memory about once, for K % 16 == 0: the
// canonical absolute-value sum, the scale s, and quantize + pack — bit for bit what
// weight_quant_sum.wgsl (level by level) and weight_quant_pack_vec4.wgsl compute.
//
// Why: a weight's code needs s, and s needs every weight, so a plain kernel reads w twice (the
// second read comes from memory once w outgrows the L2 cache). But the code of most weights is
// already certain from an estimate of s. q = clamp(round(w * (1 / s)), -1, 1) is monotone in
// 1 / s (correctly rounded division and products are monotone), so if q is the same at both
// ends of a band [s_lo, s_hi] that contains s, it is q at s. A sample of w (one vec4 in every
// 64, 1.6 % of the values) gives the band; the weights whose code differs across it — those
// near the rounding threshold s / 2, under 1 % of them for a band of ±1 % — are read again once
// s is known.
//
// Layout: `estimators` E workgroups, then `blocks` = ceil(len / 4096) block workgroups, then
// `fixups` F workgroups.
// - Estimator e samples its E-th of w (contiguous) and publishes the mean |w| of its sample; the
//   last to finish makes the band from their mean and spread (`make_band`).
// - Block workgroup b loads block b as float vec4 (lane t: vec4 t, t + 256, t + 512, t + 768 of
//   the block), waits for the band, sums the block canonically (the values pass through
//   workgroup memory to the canonical layout, lane t adding e[t + 256 r]) and publishes the sum,
//   then packs the block with the codes certain across the band, code 3 where not; it appends
//   the float vec4 that hold a code 3 to a list. The last block workgroup makes s, as
//   weight_quant_fused.wgsl does. (Codes ORed into words through workgroup atomics from the
//   canonical layout were 2x slower than reading w twice on the H200: 16 lanes per word.)
// - Fixup workgroups wait for s. If s lies in the band and the list did not overflow, they
//   re-read the listed vec4 and put their codes in place (an atomicAnd clears the 3s to the
//   right codes, leaving the word's other groups alone); otherwise they pack the whole matrix.
//
// State: status word STATE, clean (0xFFFFFFFF) at every launch, counts down: once per estimator,
// once more when the band is published (READY = clean - E - 1), once per block workgroup, and
// then holds s's bits (below 2^31: s is positive). Waits follow weight_quant_fused.wgsl:
// only for workgroups with lower indices, bounded (SPIN_LIMIT), an abort flags status word ABORT.
//
// Status words: 0 = first non-finite w index, 1 = the sum overflowed, 2 = the run aborted,
// 3 = the state (not an error). Needs exact_div.wgsl, weight_quant_sum_common.wgsl and
// weight_quant_pack_common.wgsl (prepended by bitnet.rs).

struct Params {
    // Values of w (N * K, a multiple of 16).
    len: u32,
    // ceil(len / 4096): block workgroups.
    blocks: u32,
    // (N * K) as f32, rounded on the host exactly as Rust's `as` does.
    count: f32,
    // Always 0: the runtime zero of the optimization barriers.
    zero: u32,
    // Estimator workgroups (1..=256).
    estimators: u32,
    // Main workgroups (each takes blocks m, m + mains, m + 2 mains, ...).
    mains: u32,
    // Fixup workgroups (each takes FIXUP_BLOCKS consecutive blocks).
    fixups: u32,
    // This launch's number (the engine counts launches): band slots carry it in their checks,
    // so a slot left in the working buffer by an earlier launch never reads as this one's.
    run_id: u32,
}

@group(0) @binding(0) var<storage, read> weights: array<vec4<f32>>;
// The packed words (len / 16).
@group(0) @binding(1) var<storage, read_write> packed: array<atomic<u32>>;
// s, written once by the last block workgroup.
@group(0) @binding(2) var<storage, read_write> scale: array<f32>;
// Working words, see the offsets below (no initial value needed: each is written before read).
@group(0) @binding(3) var<storage, read_write> work: array<atomic<u32>>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

// Bounds the waits (override; engine: SPIN_LIMIT_*), as in weight_quant_fused.wgsl.
override SPIN_LIMIT: u32 = 32768u;
// Poll with read-modify-writes (CPU adapters; see weight_quant_fused.wgsl).
override POLL_RMW: bool = false;
// Dependent integer steps between two polls on GPUs (see weight_quant_fused.wgsl).
override POLL_DELAY: u32 = 128u;
override DEBUG_MODE: u32 = 0u;

const ABORT: u32 = 2u;
const STATE: u32 = 3u;
// State values at or above this are the countdown; below, s's bits.
const COUNTING: u32 = 0x80000000u;

// Offsets into `work` (u32 words; 32 words = one 128-byte cache line): the estimators' means,
// the band slots, then per block its sum, its count of listed vec4, and its LIST_ROOM list
// entries (float vec4 indices).
const MEANS: u32 = 0u;
const SLOTS: u32 = 256u;
const SUMS: u32 = 1280u;
// Listed vec4 a block has room for; a block with more is packed whole by its fixup.
const LIST_ROOM: u32 = 64u;
// Blocks per fixup workgroup.
const FIXUP_BLOCKS: u32 = 8u;

fn counts_at() -> u32 {
    return SUMS + params.blocks;
}

fn list_at(b: u32) -> u32 {
    return SUMS + 2u * params.blocks + b * LIST_ROOM;
}

// The band is published in SLOT_COUNT identical slots, one cache line each: block workgroup b
// reads slot b % SLOT_COUNT, so the reads of thousands of workgroups spread over as many L2
// slices instead of queueing at one (which slowed the weights passing through it). A slot:
// s_lo, s_hi, 1 / s_hi, 1 / s_lo (f32 bits; the divisions made once, exact_div is a long loop),
// then two check words over them and the run's number.
const SLOT_COUNT: u32 = 32u;
const SLOT_WORDS: u32 = 32u;

// The band: SIGMAS standard errors of the estimate either side, at least DELTA_MIN and at most
// DELTA_MAX of it (relative).
const SIGMAS: f32 = 4.0;
const DELTA_MIN: f32 = 0.002;
const DELTA_MAX: f32 = 0.05;
// One sampled float vec4 per WINDOW vec4 (1 KiB).
const WINDOW: u32 = 64u;

var<workgroup> news: u32;
// The band's ends and their 1 / s (f32 bits) as thread 0 of a main workgroup read them.
var<workgroup> band: vec4<u32>;
// Half a block's |w| (2048 values, in element order) on its way to the canonical lane sums.
var<workgroup> halves: array<vec4<f32>, 512>;
// Group bits of each float vec4 of a main workgroup's block (index = vec4 - first vec4).
var<workgroup> parts: array<u32, 1024>;
// A main workgroup's count of listed vec4 in its current block.
var<workgroup> listed: atomic<u32>;
// A fixup workgroup's blocks' counts.
var<workgroup> fix_counts: array<u32, 8>;

// ---- waiting -------------------------------------------------------------------------------

// Up to eight read-modify-write polls in straight-line code (CPU adapters, see
// weight_quant_fused.wgsl); the last value seen.
fn poll8_rmw(limit: u32) -> u32 {
    var v = atomicAdd(&nonfinite[STATE], 0u);
    if (v > limit) { v = atomicAdd(&nonfinite[STATE], 0u); }
    if (v > limit) { v = atomicAdd(&nonfinite[STATE], 0u); }
    if (v > limit) { v = atomicAdd(&nonfinite[STATE], 0u); }
    if (v > limit) { v = atomicAdd(&nonfinite[STATE], 0u); }
    if (v > limit) { v = atomicAdd(&nonfinite[STATE], 0u); }
    if (v > limit) { v = atomicAdd(&nonfinite[STATE], 0u); }
    if (v > limit) { v = atomicAdd(&nonfinite[STATE], 0u); }
    return v;
}

// Thread 0 of workgroup g: the state once it is at most `limit`, or NONE_SEEN when the run
// aborted (this workgroup gave up, or another did). Pauses between polls on GPUs.
fn wait_state(limit: u32, g: u32) -> u32 {
    if (!POLL_RMW) {
        var x = g;
        for (var i = 0u; i < SPIN_LIMIT * 8u; i = i + 1u) {
            let v = atomicLoad(&nonfinite[STATE + (x & params.zero)]);
            if (v <= limit) {
                return v;
            }
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
        let v = min(min(poll8_rmw(limit), poll8_rmw(limit)), min(poll8_rmw(limit), poll8_rmw(limit)));
        if (v <= limit) {
            return v;
        }
        if (atomicAdd(&nonfinite[ABORT], 0u) != NONE_SEEN) {
            return NONE_SEEN;
        }
    }
    atomicMin(&nonfinite[ABORT], g);
    return NONE_SEEN;
}

// The state once the band is published.
fn ready() -> u32 {
    return NONE_SEEN - params.estimators - 1u;
}

// ---- estimators ----------------------------------------------------------------------------

// The sum of `v` over the workgroup (any order: the band needs no canonical sum); on every thread.
fn workgroup_total(v: f32, t: u32) -> f32 {
    workgroupBarrier();
    lanes[t] = v;
    workgroupBarrier();
    for (var stride = LANES / 2u; stride > 0u; stride = stride >> 1u) {
        if (t < stride) {
            lanes[t] = lanes[t] + lanes[t + stride];
        }
        workgroupBarrier();
    }
    return lanes[0];
}

// Mixes three words into one (a check word; murmur3's finalizer over a multiply-rotate mix).
fn mix3(a: u32, b: u32, c: u32) -> u32 {
    var x = a * 0x9e3779b1u;
    let y = b * 0x85ebca77u;
    let z = c * 0xc2b2ae3du;
    x = x ^ ((y << 13u) | (y >> 19u)) ^ ((z << 7u) | (z >> 25u));
    x = x ^ (x >> 16u);
    x = x * 0x7feb352du;
    x = x ^ (x >> 15u);
    x = x * 0x846ca68bu;
    return x ^ (x >> 16u);
}

// The two check words of a slot holding `band` for this run.
fn band_checks(band: vec4<u32>) -> vec2<u32> {
    return vec2<u32>(
        mix3(params.run_id, band.x, band.y),
        mix3(band.z, band.w, params.run_id + 0x632be5abu),
    );
}

// Slot `r`'s band, or NONE_SEEN in .x when its checks do not hold this run's band (not yet
// written, an earlier run's, or read part before and part after its writing).
fn read_slot(r: u32) -> vec4<u32> {
    let at = SLOTS + r * SLOT_WORDS;
    let band = vec4<u32>(
        atomicLoad(&work[at]),
        atomicLoad(&work[at + 1u]),
        atomicLoad(&work[at + 2u]),
        atomicLoad(&work[at + 3u]),
    );
    let checks = vec2<u32>(atomicLoad(&work[at + 4u]), atomicLoad(&work[at + 5u]));
    if (any(checks != band_checks(band))) {
        return vec4<u32>(NONE_SEEN);
    }
    return band;
}

// The band from the estimators' means (lane t reads mean t): their mean m (floored at 1e-5 as s
// is), m (1 -/+ delta). The whole last estimator workgroup; thread 0 publishes it: every slot's
// band, then (behind a barrier) every slot's checks.
fn make_band(t: u32) {
    let e = params.estimators;
    var mean_t = 0.0;
    if (t < e) {
        mean_t = bitcast<f32>(atomicLoad(&work[MEANS + t]));
    }
    let m = max(workgroup_total(mean_t, t) / f32(e), 1e-5f);
    let d = select(0.0, mean_t - m, t < e);
    let sq = workgroup_total(d * d, t);
    var delta = DELTA_MAX;
    if (e >= 8u) {
        let std_error = sqrt(sq / f32(e - 1u) / f32(e));
        delta = clamp(SIGMAS * std_error / m, DELTA_MIN, DELTA_MAX);
    }
    let lo = m * (1.0 - delta);
    let hi = m * (1.0 + delta);
    let band = vec4<u32>(
        bitcast<u32>(lo),
        bitcast<u32>(hi),
        bitcast<u32>(exact_div(1.0, hi)),
        bitcast<u32>(exact_div(1.0, lo)),
    );
    if (t == 0u) {
        for (var r = 0u; r < SLOT_COUNT; r = r + 1u) {
            let at = SLOTS + r * SLOT_WORDS;
            atomicStore(&work[at], band.x);
            atomicStore(&work[at + 1u], band.y);
            atomicStore(&work[at + 2u], band.z);
            atomicStore(&work[at + 3u], band.w);
        }
    }
    storageBarrier();
    if (t == 0u) {
        let checks = band_checks(band);
        for (var r = 0u; r < SLOT_COUNT; r = r + 1u) {
            let at = SLOTS + r * SLOT_WORDS;
            atomicStore(&work[at + 4u], checks.x);
            atomicStore(&work[at + 5u], checks.y);
        }
    }
}

// Estimator e: the mean |w| of one float vec4 in every WINDOW of its share, at an offset that
// varies from window to window (so no column is favoured); the last estimator makes the band.
fn estimate(e: u32, t: u32) {
    let vecs = params.len / 4u;
    let est = params.estimators;
    let first = (vecs / est) * e + min(e, vecs % est);
    let end = first + vecs / est + u32(e < vecs % est);
    let windows = max((end - first) / WINDOW, 1u);
    var p = 0.0;
    for (var j = t; j < windows; j = j + LANES) {
        let v = min(first + j * WINDOW + ((j * 37u + e * 11u) & (WINDOW - 1u)), end - 1u);
        let a = abs(weights[v]);
        p = p + (a.x + a.y) + (a.z + a.w);
    }
    let total = lane_tree(p, t);
    if (t == 0u) {
        atomicStore(&work[MEANS + e], bitcast<u32>(total / f32(4u * windows)));
    }
    storageBarrier();
    if (t == 0u) {
        let before = atomicSub(&nonfinite[STATE], 1u);
        news = u32(before == NONE_SEEN - (est - 1u));
    }
    if (workgroupUniformLoad(&news) == 0u) {
        return;
    }
    // The last estimator: every other mean was published before its workgroup counted itself.
    storageBarrier();
    make_band(t);
    storageBarrier();
    if (t == 0u) {
        atomicSub(&nonfinite[STATE], 1u);
    }
}

// ---- main workgroups -----------------------------------------------------------------------

// The last level reads the published block sums (non-negative; zero past the last block).
fn final_block_sum(first: u32, t: u32) -> f32 {
    var v: array<f32, 16>;
    for (var r = 0u; r < 16u; r = r + 1u) {
        let i = first + t + r * LANES;
        v[r] = select(0.0, bitcast<f32>(atomicLoad(&work[SUMS + min(i, params.blocks - 1u)])), i < params.blocks);
    }
    let p = lane_sum(
        vec4<f32>(v[0], v[1], v[2], v[3]),
        vec4<f32>(v[4], v[5], v[6], v[7]),
        vec4<f32>(v[8], v[9], v[10], v[11]),
        vec4<f32>(v[12], v[13], v[14], v[15]),
    );
    return lane_tree(p, t);
}

// Whether the band is usable: positive, ordered, finite, and 1 / s_hi normal (pack_factors'
// plain form at both ends).
fn band_usable(lo: f32, hi: f32) -> bool {
    return lo > 0.0 && lo < hi && hi < 0x1p126f;
}

// group_bits (weight_quant_pack_common.wgsl) with the codes certain across the band, 3 where not.
fn band_group_bits(w: vec4<f32>, v: u32, f_lo: vec2<f32>, f_hi: vec2<f32>) -> u32 {
    let a = codes4(w, f_lo);
    let c = select(a, vec4<u32>(3u), a != codes4(w, f_hi));
    let g = 2u * (v & 3u);
    return (c.x << g) | (c.y << (8u + g)) | (c.z << (16u + g)) | (c.w << (24u + g));
}

// |w| of float vec4 `v` (zero past len), lowering `bad` to its first non-finite index.
fn abs_vec(w: vec4<f32>, v: u32, bad: ptr<function, u32>) -> vec4<f32> {
    let i = 4u * v;
    return abs4(bitcast<vec4<u32>>(w), vec4<u32>(i, i + 1u, i + 2u, i + 3u), params.len, bad);
}

// The lane sum of layout.rs (lane t adds e[t + 256 r], r = 0..16, in order from `p`) over half
// a block: |w| of the float vec4 pair (a, b) of every lane, redistributed through `halves`.
fn half_lane_sum(p: f32, a: vec4<f32>, b: vec4<f32>, t: u32) -> f32 {
    workgroupBarrier();
    halves[t] = a;
    halves[LANES + t] = b;
    workgroupBarrier();
    var sum = p;
    for (var r = 0u; r < 8u; r = r + 1u) {
        let e = t + r * LANES;
        sum = add(sum, halves[e >> 2u][e & 3u]);
    }
    return sum;
}

// The mask of word-group j (float vec4 4 word + j) whose codes hold a 3.
fn groups_with_3(word: u32) -> u32 {
    let three = word & (word >> 1u) & 0x55555555u;
    var m = 0u;
    for (var j = 0u; j < 4u; j = j + 1u) {
        m = m | (u32((three & (0x01010101u << (2u * j))) != 0u) << j);
    }
    return m;
}

// A block's float vec4 of lane t (vec4 t, t + 256, t + 512, t + 768 of the block).
struct Block {
    w0: vec4<f32>,
    w1: vec4<f32>,
    w2: vec4<f32>,
    w3: vec4<f32>,
}

fn load_block(b: u32, t: u32) -> Block {
    let first = b * (BLOCK / 4u) + t;
    let last = params.len / 4u - 1u;
    return Block(
        weights[min(first, last)],
        weights[min(first + LANES, last)],
        weights[min(first + 2u * LANES, last)],
        weights[min(first + 3u * LANES, last)],
    );
}

// Block b: its canonical sum (published), its words with the codes certain across the band
// (`ends`; none when unusable) and its list of vec4 holding a 3 (count published). Uniform. The
// codes are made first, so the weights die early (their |w| go on to the sum).
fn main_block(blk: Block, b: u32, t: u32, ends: vec4<u32>) {
    let first = b * (BLOCK / 4u) + t;
    let v = vec4<u32>(first, first + LANES, first + 2u * LANES, first + 3u * LANES);
    let pack = band_usable(bitcast<f32>(ends.x), bitcast<f32>(ends.y)) && DEBUG_MODE != 3u;
    if (pack) {
        // Codes at 1 / s_hi and 1 / s_lo (the ends of the band of 1 / s; both normal, so
        // pack_factors' plain form).
        let f_lo = vec2<f32>(1.0, bitcast<f32>(ends.z));
        let f_hi = vec2<f32>(1.0, bitcast<f32>(ends.w));
        parts[t] = band_group_bits(blk.w0, v.x, f_lo, f_hi);
        parts[LANES + t] = band_group_bits(blk.w1, v.y, f_lo, f_hi);
        parts[2u * LANES + t] = band_group_bits(blk.w2, v.z, f_lo, f_hi);
        parts[3u * LANES + t] = band_group_bits(blk.w3, v.w, f_lo, f_hi);
    }
    var bad = NONE_SEEN;
    let a0 = abs_vec(blk.w0, v.x, &bad);
    let a1 = abs_vec(blk.w1, v.y, &bad);
    let a2 = abs_vec(blk.w2, v.z, &bad);
    let a3 = abs_vec(blk.w3, v.w, &bad);
    if (bad != NONE_SEEN) {
        atomicMin(&nonfinite[0], bad);
    }
    // The sum's barriers also order the parts before their reads below.
    let sum = lane_tree(half_lane_sum(half_lane_sum(0.0, a0, a1, t), a2, a3, t), t);
    if (t == 0u) {
        atomicStore(&work[SUMS + b], bitcast<u32>(sum));
        atomicStore(&listed, 0u);
    }
    if (!pack) {
        return;
    }
    let word = parts[4u * t] | parts[4u * t + 1u] | parts[4u * t + 2u] | parts[4u * t + 3u];
    let gw = b * LANES + t;
    var unsure = 0u;
    if (gw < params.len / 16u) {
        atomicStore(&packed[gw], word);
        unsure = groups_with_3(word);
    }
    // The reset of `listed` before any lane counts into it.
    workgroupBarrier();
    if (unsure != 0u) {
        var k = atomicAdd(&listed, countOneBits(unsure));
        for (var j = 0u; j < 4u; j = j + 1u) {
            if ((unsure & (1u << j)) != 0u) {
                if (k < LIST_ROOM) {
                    atomicStore(&work[list_at(b) + k], 4u * gw + j);
                }
                k = k + 1u;
            }
        }
    }
    workgroupBarrier();
    if (t == 0u) {
        atomicStore(&work[counts_at() + b], atomicLoad(&listed));
    }
}

// Thread 0 of a main workgroup: the band (slot `r`), read with the first block's weights in
// flight; only the first workgroups find it unwritten and wait (for the state, then read again).
// NONE_SEEN in .x: the run aborted. Zeros: never read whole after its publication (not seen so
// far) — then nothing is packed and every block's count says "pack me whole".
fn main_band(r: u32, g: u32) -> vec4<u32> {
    var got = read_slot(r);
    for (var tries = 0u; got.x == NONE_SEEN && tries < 4u; tries = tries + 1u) {
        if (wait_state(ready(), g) == NONE_SEEN) {
            return vec4<u32>(NONE_SEEN);
        }
        got = read_slot(r);
    }
    return select(got, vec4<u32>(0u), got.x == NONE_SEEN);
}

// Main workgroup m (workgroup g): blocks m, m + mains, ..., each block's loads issued before
// the previous block is worked on (so the memory stays busy through the barriers); then the
// count down, and the last main workgroup makes s.
fn main_group(m: u32, g: u32, t: u32) {
    var blk = load_block(m, t);
    if (t == 0u) {
        band = main_band(m % SLOT_COUNT, g);
    }
    let ends = workgroupUniformLoad(&band);
    if (ends.x == NONE_SEEN) {
        return;
    }
    for (var b = m; b < params.blocks; b = b + params.mains) {
        var next = Block();
        if (b + params.mains < params.blocks) {
            next = load_block(b + params.mains, t);
        }
        main_block(blk, b, t, ends);
        if (ends.x == 0u && t == 0u) {
            atomicStore(&work[counts_at() + b], LIST_ROOM + 1u);
        }
        blk = next;
    }
    // Publish the sums, the words and the lists (device scope) before counting.
    storageBarrier();
    if (t == 0u) {
        let before = atomicSub(&nonfinite[STATE], 1u);
        news = u32(before == ready() - (params.mains - 1u));
    }
    if (workgroupUniformLoad(&news) == 0u) {
        return;
    }
    // The last: every other sum was published before its workgroup counted itself.
    storageBarrier();
    let total = final_total(params.blocks, t);
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

// ---- fixups --------------------------------------------------------------------------------

// Word `word` packed whole with the factors `fs` of s.
fn pack_word(word: u32, fs: vec2<f32>) {
    let v = 4u * word;
    atomicStore(
        &packed[word],
        group_bits(weights[v], v, fs) | group_bits(weights[v + 1u], v + 1u, fs)
            | group_bits(weights[v + 2u], v + 2u, fs) | group_bits(weights[v + 3u], v + 3u, fs),
    );
}

// Fixup workgroup f (workgroup g), blocks FIXUP_BLOCKS f .. + FIXUP_BLOCKS: when s is in the
// band, the listed vec4 of each block whose list held them all, and every word of the others;
// otherwise every word.
fn fixup(f: u32, g: u32, t: u32) {
    if (t == 0u) {
        news = wait_state(COUNTING - 1u, g);
    }
    let s_bits = workgroupUniformLoad(&news);
    if (s_bits == NONE_SEEN || DEBUG_MODE == 3u) {
        return;
    }
    storageBarrier();
    let s = bitcast<f32>(s_bits);
    let fs = pack_factors(s);
    let lo = bitcast<f32>(atomicLoad(&work[SLOTS]));
    let hi = bitcast<f32>(atomicLoad(&work[SLOTS + 1u]));
    let in_band = band_usable(lo, hi) && lo <= s && s <= hi;
    let first = f * FIXUP_BLOCKS;
    if (t < FIXUP_BLOCKS) {
        var c = LIST_ROOM + 1u;
        if (in_band && first + t < params.blocks) {
            c = atomicLoad(&work[counts_at() + first + t]);
        }
        fix_counts[t] = c;
    }
    workgroupBarrier();
    // The listed vec4: slot i of 2 * LANES covers entry i % LIST_ROOM of block i / LIST_ROOM.
    for (var i = t; i < FIXUP_BLOCKS * LIST_ROOM; i = i + LANES) {
        let j = i / LIST_ROOM;
        let c = fix_counts[j];
        if (c <= LIST_ROOM && i % LIST_ROOM < c) {
            let v = atomicLoad(&work[list_at(first + j) + i % LIST_ROOM]);
            let bits = group_bits(weights[v], v, fs);
            let mask = 0x03030303u << (2u * (v & 3u));
            atomicAnd(&packed[v / 4u], ~mask | bits);
        }
    }
    // The blocks packed whole.
    let words = params.len / 16u;
    for (var j = 0u; j < FIXUP_BLOCKS; j = j + 1u) {
        let word = (first + j) * LANES + t;
        if (fix_counts[j] > LIST_ROOM && word < words) {
            pack_word(word, fs);
        }
    }
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let g = wid.x + wid.y * nwg.x;
    let e = params.estimators;
    if (g < e) {
        estimate(g, t);
    } else if (g < e + params.mains) {
        main_group(g - e, g, t);
    } else if (g < e + params.mains + params.fixups) {
        fixup(g - e - params.mains, g, t);
    }
}
