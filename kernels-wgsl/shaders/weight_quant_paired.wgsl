// Weight quantization in one dispatch that reads w from memory about once, for K % 16 == 0: the
// canonical absolute-value sum, the scale s, and quantize + pack — bit for bit what
// weight_quant_sum.wgsl (level by level) and weight_quant_pack_vec4.wgsl compute.
//
// Why: a weight's code needs s, and s needs every weight, so a plain kernel reads w twice (the
// second read comes from memory once w outgrows the L2 cache). But the code of most weights is
// already certain from an estimate of s. q = clamp(round(w * (1 / s)), -1, 1) is monotone in
// 1 / s, so if q is the same at both ends of a band [s_lo, s_hi] that contains s, it is q at s.
// A sample of w gives the band; the weights whose code differs across it are read again once s
// is known.
//
// Pairs: each block of 4096 values has two workgroups side by side in the grid, one summing it
// (as weight_quant_fused.wgsl's sum workgroups: it holds nothing once summed) and one packing the
// codes certain across the band (a plain map: nothing waits on it). They run at the same time, so
// the pack's loads of the block's lines meet the sum's in the L2 cache, and w crosses from memory
// once. (One workgroup doing both — weight_quant_banded in ff021c8 — had to hold the block
// through the canonical sum, kept too few bytes in flight and was 1.4-2.2x slower than reading w
// twice.)
//
// Layout: E estimators, then for each block b its sum workgroup and its pack workgroup, then F
// fixups.
// - Estimator e samples its E-th of w and publishes the mean |w| of its sample; the last makes the
//   band (`make_band`).
// - Sum workgroup b sums block b canonically and publishes the sum; the last to finish makes s.
// - Pack workgroup b loads block b, waits for the band, packs the codes certain across it (3
//   where not), lists the float vec4 holding a 3, and publishes its count tagged with the run.
// - Fixups wait for s and for their blocks' counts; if s lies in the band and the list did not
//   overflow they re-read the listed vec4 (an atomicAnd puts their codes in place), otherwise
//   they pack the whole block.
//
// State: status word STATE, clean (0xFFFFFFFF) at every launch, holds two countdowns: its top 12
// bits once per estimator and once more when the band is published, its low 20 bits once per sum
// workgroup and once more when s is published (in `work`). Waits only ever wait for workgroups
// with lower indices, bounded (SPIN_LIMIT); an abort flags status word ABORT.
//
// Status words: 0 = first non-finite w index, 1 = the sum overflowed, 2 = the run aborted,
// 3 = the state (not an error). Needs exact_div.wgsl, weight_quant_sum_common.wgsl and
// weight_quant_pack_common.wgsl (prepended by bitnet.rs).

struct Params {
    // Values of w (N * K, a multiple of 16).
    len: u32,
    // ceil(len / 4096): sum workgroups, and pack workgroups (below 2^20 - 1).
    blocks: u32,
    // (N * K) as f32, rounded on the host exactly as Rust's `as` does.
    count: f32,
    // Always 0: the runtime zero of the optimization barriers.
    zero: u32,
    // Estimator workgroups (1..=256).
    estimators: u32,
    // Fixup workgroups (each takes FIXUP_BLOCKS consecutive blocks).
    fixups: u32,
    // This launch's number (the engine counts launches; 24 bits are compared): band slots and
    // block counts carry it, so a word left in the working buffer by an earlier launch never
    // reads as this one's.
    run_id: u32,
    pad: u32,
}

@group(0) @binding(0) var<storage, read> weights: array<vec4<f32>>;
// The packed words (len / 16).
@group(0) @binding(1) var<storage, read_write> packed: array<atomic<u32>>;
// s, written once by the last sum workgroup.
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
// Timing diagnostics (wrong results): 1 = packs return at once, 2 = sums skip their loads.
override DIAG: u32 = 0u;

const ABORT: u32 = 2u;
const STATE: u32 = 3u;
// The state's two fields.
const LOW_MASK: u32 = 0xfffffu;
const HIGH_SHIFT: u32 = 20u;

// Offsets into `work` (u32 words; 32 words = one 128-byte cache line): the estimators' means,
// the band slots, s, then per block its sum, its tagged count of listed vec4, and its LIST_ROOM
// list entries (float vec4 indices).
const MEANS: u32 = 0u;
const SLOTS: u32 = 256u;
const S_AT: u32 = 1280u;
const SUMS: u32 = 1312u;
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

// The run's tag in a block's count word (count in the low 8 bits).
fn tag() -> u32 {
    return params.run_id & 0xffffffu;
}

// The band is published in SLOT_COUNT identical slots, one cache line each: pack workgroup b
// reads slot b % SLOT_COUNT, so the reads of thousands of workgroups spread over as many L2
// slices. A slot: s_lo, s_hi, 1 / s_hi, 1 / s_lo (f32 bits), then two check words over them and
// the run's number.
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
// The band's ends and their 1 / s (f32 bits) as thread 0 of a pack workgroup read them.
var<workgroup> band: vec4<u32>;
// Group bits of each float vec4 of a pack workgroup's block (index = vec4 - first vec4).
var<workgroup> parts: array<u32, 1024>;
// A pack workgroup's count of listed vec4.
var<workgroup> listed: atomic<u32>;
// A fixup workgroup's blocks' counts.
var<workgroup> fix_counts: array<u32, 8>;

// ---- waiting -------------------------------------------------------------------------------

// Whether `v` (a word of `at`) is what the waiter waits for: the state's high field at most
// `limit` (kind 0), its low field at most `limit` (kind 1), or a count word tagged `limit` (2).
fn arrived(v: u32, kind: u32, limit: u32) -> bool {
    if (kind == 0u) {
        return (v >> HIGH_SHIFT) <= limit;
    }
    if (kind == 1u) {
        return (v & LOW_MASK) <= limit;
    }
    return (v >> 8u) == limit;
}

// Up to eight read-modify-write polls of word `at` in straight-line code (CPU adapters, see
// weight_quant_fused.wgsl); the last value seen.
fn poll8_rmw(at: u32, kind: u32, limit: u32) -> u32 {
    var v = atomicAdd(&work[at], 0u);
    if (!arrived(v, kind, limit)) { v = atomicAdd(&work[at], 0u); }
    if (!arrived(v, kind, limit)) { v = atomicAdd(&work[at], 0u); }
    if (!arrived(v, kind, limit)) { v = atomicAdd(&work[at], 0u); }
    if (!arrived(v, kind, limit)) { v = atomicAdd(&work[at], 0u); }
    if (!arrived(v, kind, limit)) { v = atomicAdd(&work[at], 0u); }
    if (!arrived(v, kind, limit)) { v = atomicAdd(&work[at], 0u); }
    if (!arrived(v, kind, limit)) { v = atomicAdd(&work[at], 0u); }
    return v;
}

fn poll8_state_rmw(kind: u32, limit: u32) -> u32 {
    var v = atomicAdd(&nonfinite[STATE], 0u);
    if (!arrived(v, kind, limit)) { v = atomicAdd(&nonfinite[STATE], 0u); }
    if (!arrived(v, kind, limit)) { v = atomicAdd(&nonfinite[STATE], 0u); }
    if (!arrived(v, kind, limit)) { v = atomicAdd(&nonfinite[STATE], 0u); }
    if (!arrived(v, kind, limit)) { v = atomicAdd(&nonfinite[STATE], 0u); }
    if (!arrived(v, kind, limit)) { v = atomicAdd(&nonfinite[STATE], 0u); }
    if (!arrived(v, kind, limit)) { v = atomicAdd(&nonfinite[STATE], 0u); }
    if (!arrived(v, kind, limit)) { v = atomicAdd(&nonfinite[STATE], 0u); }
    return v;
}

// One poll: the state word (kinds 0 and 1) or work word `at` (kind 2).
fn poll(at: u32, kind: u32, x: u32) -> u32 {
    if (kind == 2u) {
        return atomicLoad(&work[at + (x & params.zero)]);
    }
    return atomicLoad(&nonfinite[STATE + (x & params.zero)]);
}

// Thread 0 of workgroup g: whether what it waits for arrived (false: the run aborted, this
// workgroup gave up or another did). Pauses between polls on GPUs.
fn wait_for(at: u32, kind: u32, limit: u32, g: u32) -> bool {
    if (!POLL_RMW) {
        var x = g;
        for (var i = 0u; i < SPIN_LIMIT * 8u; i = i + 1u) {
            if (arrived(poll(at, kind, x), kind, limit)) {
                return true;
            }
            if ((i & 31u) == 31u && atomicLoad(&nonfinite[ABORT]) != NONE_SEEN) {
                return false;
            }
            for (var d = 0u; d < POLL_DELAY; d = d + 1u) {
                x = x * 1664525u + 1013904223u;
            }
        }
        atomicMin(&nonfinite[ABORT], g);
        return false;
    }
    for (var i = 0u; i < SPIN_LIMIT; i = i + 1u) {
        var v = 0u;
        if (kind == 2u) {
            v = poll8_rmw(at, kind, limit);
        } else {
            v = poll8_state_rmw(kind, limit);
        }
        if (arrived(v, kind, limit)) {
            return true;
        }
        if (atomicAdd(&nonfinite[ABORT], 0u) != NONE_SEEN) {
            return false;
        }
    }
    atomicMin(&nonfinite[ABORT], g);
    return false;
}

// The high field once the band is published, and the low field once s is.
fn band_ready() -> u32 {
    return (NONE_SEEN >> HIGH_SHIFT) - params.estimators - 1u;
}

fn scale_ready() -> u32 {
    return LOW_MASK - params.blocks - 1u;
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

// Slot `r`'s band, or NONE_SEEN in .x when its checks do not hold this run's band.
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

// The band from the estimators' means: their mean m (floored at 1e-5 as s is), m (1 -/+ delta).
// The whole last estimator workgroup; thread 0 publishes every slot's band, then (behind a
// barrier) every slot's checks.
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
// varies from window to window; the last estimator makes the band.
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
        let before = atomicSub(&nonfinite[STATE], 1u << HIGH_SHIFT);
        news = u32((before >> HIGH_SHIFT) == (NONE_SEEN >> HIGH_SHIFT) - (est - 1u));
    }
    if (workgroupUniformLoad(&news) == 0u) {
        return;
    }
    // The last estimator: every other mean was published before its workgroup counted itself.
    storageBarrier();
    make_band(t);
    storageBarrier();
    if (t == 0u) {
        atomicSub(&nonfinite[STATE], 1u << HIGH_SHIFT);
    }
}

// ---- sum workgroups ------------------------------------------------------------------------

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

// Sum workgroup b: its block's sum, published; the last one to finish also makes s.
fn sum_block(b: u32, t: u32) {
    var bad = NONE_SEEN;
    let i = select(b * BLOCK + t, t, DIAG == 2u);
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
        atomicStore(&work[SUMS + b], bitcast<u32>(sum));
    }
    // Publish the sum (device scope) before counting the block.
    storageBarrier();
    if (t == 0u) {
        let before = atomicSub(&nonfinite[STATE], 1u);
        news = u32((before & LOW_MASK) == LOW_MASK - (params.blocks - 1u));
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
    atomicStore(&work[S_AT], bitcast<u32>(s));
    storageBarrier();
    atomicSub(&nonfinite[STATE], 1u);
}

// ---- pack workgroups -----------------------------------------------------------------------

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

// The mask of word-group j (float vec4 4 word + j) whose codes hold a 3.
fn groups_with_3(word: u32) -> u32 {
    let three = word & (word >> 1u) & 0x55555555u;
    var m = 0u;
    for (var j = 0u; j < 4u; j = j + 1u) {
        m = m | (u32((three & (0x01010101u << (2u * j))) != 0u) << j);
    }
    return m;
}

// Thread 0 of a pack workgroup: the band (slot `r`); only the first workgroups find it unwritten
// and wait. NONE_SEEN in .x: the run aborted. Zeros: never read whole after its publication —
// then nothing is packed and the block's count says "pack me whole".
fn pack_band(r: u32, g: u32) -> vec4<u32> {
    var got = read_slot(r);
    for (var tries = 0u; got.x == NONE_SEEN && tries < 4u; tries = tries + 1u) {
        if (!wait_for(0u, 0u, band_ready(), g)) {
            return vec4<u32>(NONE_SEEN);
        }
        got = read_slot(r);
    }
    return select(got, vec4<u32>(0u), got.x == NONE_SEEN);
}

// Pack workgroup b (workgroup g): block b's words with the codes certain across the band, its
// list of vec4 holding a 3 and its tagged count.
fn pack_block(b: u32, g: u32, t: u32) {
    let first = b * (BLOCK / 4u) + t;
    let last = params.len / 4u - 1u;
    let v = vec4<u32>(first, first + LANES, first + 2u * LANES, first + 3u * LANES);
    let w0 = weights[min(v.x, last)];
    let w1 = weights[min(v.y, last)];
    let w2 = weights[min(v.z, last)];
    let w3 = weights[min(v.w, last)];
    if (t == 0u) {
        band = pack_band(b % SLOT_COUNT, g);
        atomicStore(&listed, 0u);
    }
    let ends = workgroupUniformLoad(&band);
    if (ends.x == NONE_SEEN) {
        return;
    }
    if (!band_usable(bitcast<f32>(ends.x), bitcast<f32>(ends.y))) {
        if (t == 0u) {
            atomicStore(&work[counts_at() + b], (tag() << 8u) | (LIST_ROOM + 1u));
        }
        return;
    }
    // Codes at 1 / s_hi and 1 / s_lo (both normal, so pack_factors' plain form).
    let f_lo = vec2<f32>(1.0, bitcast<f32>(ends.z));
    let f_hi = vec2<f32>(1.0, bitcast<f32>(ends.w));
    parts[t] = band_group_bits(w0, v.x, f_lo, f_hi);
    parts[LANES + t] = band_group_bits(w1, v.y, f_lo, f_hi);
    parts[2u * LANES + t] = band_group_bits(w2, v.z, f_lo, f_hi);
    parts[3u * LANES + t] = band_group_bits(w3, v.w, f_lo, f_hi);
    workgroupBarrier();
    let word = parts[4u * t] | parts[4u * t + 1u] | parts[4u * t + 2u] | parts[4u * t + 3u];
    let gw = b * LANES + t;
    var unsure = 0u;
    if (gw < params.len / 16u) {
        atomicStore(&packed[gw], word);
        unsure = groups_with_3(word);
    }
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
    // Publish the words and the list (device scope) before the count.
    storageBarrier();
    workgroupBarrier();
    if (t == 0u) {
        atomicStore(&work[counts_at() + b], (tag() << 8u) | min(atomicLoad(&listed), LIST_ROOM + 1u));
    }
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

// Fixup workgroup f (workgroup g), blocks FIXUP_BLOCKS f .. + FIXUP_BLOCKS: once s and their
// counts are published, the listed vec4 of each block whose list held them all when s is in the
// band, and every word of the others.
fn fixup(f: u32, g: u32, t: u32) {
    let first = f * FIXUP_BLOCKS;
    if (t == 0u) {
        var ok = wait_for(0u, 1u, scale_ready(), g);
        for (var j = 0u; ok && j < FIXUP_BLOCKS && first + j < params.blocks; j = j + 1u) {
            ok = wait_for(counts_at() + first + j, 2u, tag(), g);
        }
        news = u32(ok);
    }
    if (workgroupUniformLoad(&news) == 0u) {
        return;
    }
    storageBarrier();
    let s = bitcast<f32>(atomicLoad(&work[S_AT]));
    let fs = pack_factors(s);
    let lo = bitcast<f32>(atomicLoad(&work[SLOTS]));
    let hi = bitcast<f32>(atomicLoad(&work[SLOTS + 1u]));
    let in_band = band_usable(lo, hi) && lo <= s && s <= hi;
    if (t < FIXUP_BLOCKS) {
        var c = LIST_ROOM + 1u;
        if (in_band && first + t < params.blocks) {
            c = atomicLoad(&work[counts_at() + first + t]) & 0xffu;
        }
        fix_counts[t] = c;
    }
    workgroupBarrier();
    // The listed vec4: slot i covers entry i % LIST_ROOM of block first + i / LIST_ROOM.
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
    let pairs = 2u * params.blocks;
    if (g < e) {
        estimate(g, t);
    } else if (g < e + pairs) {
        let b = (g - e) >> 1u;
        if (((g - e) & 1u) == 0u) {
            sum_block(b, t);
        } else if (DIAG != 1u) {
            pack_block(b, g, t);
        } else if (t == 0u) {
            atomicStore(&work[counts_at() + b], (tag() << 8u) | (LIST_ROOM + 1u));
        }
    } else if (g < e + pairs + params.fixups) {
        fixup(g - e - pairs, g, t);
    }
}
