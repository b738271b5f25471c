// Output access of bitlinear_chain_subgroup.wgsl on devices with wgpu's
// MEMORY_DECORATION_COHERENT (Vulkan, DX12, Metal 3.2+): `out` is a plain vec4 array declared
// @coherent, so another workgroup's stores reach a consumer's loads past any non-coherent cache
// (without the decoration the H200 returned stale values to plain loads, when consumers still
// waited on counters). A consumer then reads its input as vec4 with four
// loads in flight per step and quantizes it as the chain input is quantized, where 32-bit
// atomic loads needed a load per value and shuffles to pack them. H200, 2B4T chained stack as
// one LinearChain dispatch, three alternating rounds: 835-836 µs with the atomic file, 720 µs
// with this one reading one vec4 early (681 µs with four early, ch_first).
// Defines `out`, ChFirst, ch_store4, ch_first, ch_input_top and ch_quantize_output, as
// bitlinear_chain_out_atomic.wgsl does.
//
// Waiting on the data (POLL_DATA): the engine fills the arena with CH_UNWRITTEN before each run,
// and a consumer polls its input words themselves until every one is written, then takes their
// absmax — no counter, no published absmax, no storage barrier on the producer's side. Each word
// is written once per run, so a word read as written holds its final value, whatever the order
// in which the producer's stores land (a vec4 is checked word by word, so even a torn load is
// safe). H200, 2B4T chained stack as one LinearChain dispatch, three alternating rounds: 694-696
// µs waiting on counters, 633-634 µs polling the data; 16 runs back to back 700-710 against
// 644-649 µs per run (the fill included). About 619 µs after the follow-ups in
// docs/perf/decode-chain.md ("Waiting on the data").

@coherent @group(0) @binding(2) var<storage, read_write> out: array<vec4<u32>>;

// Consumers poll their input words (above) instead of their producer's counter.
const POLL_DATA: bool = true;

// An output word before its producer writes it (the engine's fill); ch_value never stores it.
const CH_UNWRITTEN: u32 = 0xffffffffu;

fn ch_written(v: vec4<u32>) -> bool {
    return all(v != vec4<u32>(CH_UNWRITTEN));
}

// Stores words idx .. idx + 3 of the output arena (idx % 4 == 0), as one vec4.
fn ch_store4(idx: u32, bits: vec4<u32>) {
    out[idx >> 2u] = bits;
}

// Thread vt's first four input vec4 — vt, vt + GV_WG, vt + 2 GV_WG, vt + 3 GV_WG, clamped past
// the input's end (not quantized there) — loaded before the input's scale is known: the first
// loads of ch_input_top's polls. Producers' outputs start on 64-word boundaries. (Measured when
// consumers waited on counters and loaded these with the published absmax — H200, 2B4T chained
// stack as one LinearChain dispatch, two alternating rounds: one vec4 early 708 µs, four 681,
// eight 737; one early and eight per step after it 750.)
struct ChFirst {
    v0: vec4<u32>,
    v1: vec4<u32>,
    v2: vec4<u32>,
    v3: vec4<u32>,
}

fn ch_first(job: ChainJob, vt: u32) -> ChFirst {
    let last = job.vpr * 16u - 1u;
    let base = job.in_off / 4u;
    return ChFirst(
        out[base + min(vt, last)],
        out[base + min(vt + GV_WG, last)],
        out[base + min(vt + 2u * GV_WG, last)],
        out[base + min(vt + 3u * GV_WG, last)],
    );
}

// Whether the run was aborted (another workgroup's wait ran out).
fn ch_run_aborted() -> bool {
    if (POLL_RMW) {
        return atomicAdd(&counters[params.n + 1u], 0u) != 0u;
    }
    return atomicLoad(&counters[params.n + 1u]) != 0u;
}

// One poll of input vec4 idx into *w: 1 when its words are written; 2 when the run was aborted,
// checked after every load on CPU adapters (a read-modify-write: lavapipe then cannot merge the
// loads of one ch_poll4 iteration, so an iteration polls eight times); else 0.
fn ch_poll_once(w: ptr<function, vec4<u32>>, idx: u32) -> u32 {
    *w = out[idx];
    if (ch_written(*w)) {
        return 1u;
    }
    if (POLL_RMW && ch_run_aborted()) {
        return 2u;
    }
    return 0u;
}

// Eight polls of input vec4 idx into *w: true when its words are written or the run was
// aborted (then they are not).
fn ch_poll8(w: ptr<function, vec4<u32>>, idx: u32) -> bool {
    return ch_poll_once(w, idx) != 0u || ch_poll_once(w, idx) != 0u
        || ch_poll_once(w, idx) != 0u || ch_poll_once(w, idx) != 0u
        || ch_poll_once(w, idx) != 0u || ch_poll_once(w, idx) != 0u
        || ch_poll_once(w, idx) != 0u || ch_poll_once(w, idx) != 0u;
}

// Flags the run aborted (this workgroup's wait ran out); returns the unwritten vec4.
fn ch_give_up(g: u32) -> vec4<u32> {
    atomicStore(&counters[params.n + 1u], 1u);
    atomicMin(&nonfinite[ABORT_STATUS], g);
    return vec4<u32>(CH_UNWRITTEN);
}

// Input vec4 idx once its four words are written, `v` its last load: polls it, eight loads per
// iteration; CH_UNWRITTEN words when the run was aborted, here (the wait ran out: flagged) or
// elsewhere. At most SPIN_LIMIT iterations, or on CPU adapters (POLL_RMW) what is left of
// `budget`, see ch_poll4_shared.
fn ch_poll4(v: vec4<u32>, idx: u32, g: u32, budget: ptr<function, u32>) -> vec4<u32> {
    if (POLL_RMW) {
        return ch_poll4_shared(v, idx, g, budget);
    }
    // Written out, load by load: the same polls through ch_poll8 (a pointer and short-circuits)
    // took the H200's 2B4T chained stack from 624-634 to 670-688 µs.
    var w = v;
    for (var i = 0u; i < SPIN_LIMIT; i = i + 1u) {
        if (ch_written(w)) {
            return w;
        }
        w = out[idx];
        if (ch_written(w)) {
            return w;
        }
        w = out[idx];
        if (ch_written(w)) {
            return w;
        }
        w = out[idx];
        if (ch_written(w)) {
            return w;
        }
        w = out[idx];
        if (ch_written(w)) {
            return w;
        }
        w = out[idx];
        if (ch_written(w)) {
            return w;
        }
        w = out[idx];
        if (ch_written(w)) {
            return w;
        }
        w = out[idx];
        if (ch_written(w)) {
            return w;
        }
        w = out[idx];
        if (ch_run_aborted()) {
            return vec4<u32>(CH_UNWRITTEN);
        }
    }
    return ch_give_up(g);
}

// ch_poll4 on CPU adapters. lavapipe counts the loop iterations of a shader invocation in all
// (per SIMD group, which is its subgroup) and, past 65535, ends every loop after one iteration —
// silently, so a later loop (the reductions, the weight steps) would compute wrong values: with a
// SPIN_LIMIT per wait, a thread that waited long for two of its words did (the chain tests at
// K = 15360 failed about every other run). So a thread's waits share one budget of SPIN_LIMIT
// iterations (65000), and each takes from it what the slowest active lane of its subgroup spent.
// (A subgroup's first lane makes every one of its polls, so its budget sees every iteration.)
// On the H200 the shared budget cost 40 µs of the 2B4T chained stack (710 against 670 µs), so
// GPUs, which have no such cap, give every wait SPIN_LIMIT iterations.
fn ch_poll4_shared(v: vec4<u32>, idx: u32, g: u32, budget: ptr<function, u32>) -> vec4<u32> {
    var w = v;
    var i = 0u;
    loop {
        if (i >= *budget) {
            w = ch_give_up(g);
            break;
        }
        if (ch_written(w)) {
            break;
        }
        i = i + 1u;
        if (ch_poll8(&w, idx)) {
            break;
        }
    }
    // The loop ran i + 1 times.
    *budget = *budget - min(subgroupMax(i) + 1u, *budget);
    return w;
}

fn ch_abs4(v: vec4<u32>) -> u32 {
    let b = v & vec4<u32>(0x7fffffffu);
    return max(max(b.x, b.y), max(b.z, b.w));
}

// Thread vt's share of the absmax bits of the job's input (the workgroup reduces them), or
// CH_UNWRITTEN when the run was aborted: waits for each of its input vec4 — the four of `first`
// (loaded before, updated here) and every GV_WG-th after them — to be written. (The later ones
// polled one at a time: four loads in flight at once were no faster on the H200, 639 against
// 634 µs for the 2B4T chained stack, in runs a machine apart.)
fn ch_input_top(job: ChainJob, vt: u32, g: u32, first: ptr<function, ChFirst>) -> u32 {
    let kv = job.vpr * 16u;
    let last = kv - 1u;
    let base = job.in_off / 4u;
    var budget = SPIN_LIMIT;
    (*first).v0 = ch_poll4((*first).v0, base + min(vt, last), g, &budget);
    (*first).v1 = ch_poll4((*first).v1, base + min(vt + GV_WG, last), g, &budget);
    (*first).v2 = ch_poll4((*first).v2, base + min(vt + 2u * GV_WG, last), g, &budget);
    (*first).v3 = ch_poll4((*first).v3, base + min(vt + 3u * GV_WG, last), g, &budget);
    let f = *first;
    if (!(ch_written(f.v0) && ch_written(f.v1) && ch_written(f.v2) && ch_written(f.v3))) {
        return CH_UNWRITTEN;
    }
    var top = max(max(ch_abs4(f.v0), ch_abs4(f.v1)), max(ch_abs4(f.v2), ch_abs4(f.v3)));
    for (var i = vt + 4u * GV_WG; i < kv; i = i + GV_WG) {
        let w = ch_poll4(out[base + i], base + i, g, &budget);
        if (!ch_written(w)) {
            return CH_UNWRITTEN;
        }
        top = max(top, ch_abs4(w));
    }
    return top;
}

// A producer's output (the job's input) quantized into gf_x with the row sum returned, as the
// chain input is: thread vt takes vec4 vt, vt + GV_WG, ... — the four of `first`, then four
// loads in flight per step (clamped past the end and not quantized there).
fn ch_quantize_output(job: ChainJob, vt: u32, inv: f32, first: ChFirst) -> i32 {
    let vpr = job.vpr;
    let kv = vpr * 16u;
    let base = job.in_off / 4u;
    var rs = 0i;
    if (vt < kv) {
        rs += gf_pack(bitcast<vec4<f32>>(first.v0), vt, inv, vpr);
    }
    if (vt + GV_WG < kv) {
        rs += gf_pack(bitcast<vec4<f32>>(first.v1), vt + GV_WG, inv, vpr);
    }
    if (vt + 2u * GV_WG < kv) {
        rs += gf_pack(bitcast<vec4<f32>>(first.v2), vt + 2u * GV_WG, inv, vpr);
    }
    if (vt + 3u * GV_WG < kv) {
        rs += gf_pack(bitcast<vec4<f32>>(first.v3), vt + 3u * GV_WG, inv, vpr);
    }
    for (var i = vt + 4u * GV_WG; i < kv; i = i + 4u * GV_WG) {
        let i1 = i + GV_WG;
        let i2 = i + 2u * GV_WG;
        let i3 = i + 3u * GV_WG;
        let v0 = out[base + i];
        let v1 = out[base + min(i1, kv - 1u)];
        let v2 = out[base + min(i2, kv - 1u)];
        let v3 = out[base + min(i3, kv - 1u)];
        rs += gf_pack(bitcast<vec4<f32>>(v0), i, inv, vpr);
        if (i1 < kv) {
            rs += gf_pack(bitcast<vec4<f32>>(v1), i1, inv, vpr);
        }
        if (i2 < kv) {
            rs += gf_pack(bitcast<vec4<f32>>(v2), i2, inv, vpr);
        }
        if (i3 < kv) {
            rs += gf_pack(bitcast<vec4<f32>>(v3), i3, inv, vpr);
        }
    }
    return rs;
}
