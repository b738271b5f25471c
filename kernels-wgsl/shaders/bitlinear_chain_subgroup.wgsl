// A chain of M = 1 BitLinears on f32 vectors — the linear layers of one decode step, where each
// linear reads the chain input or an earlier linear's output — in ONE dispatch. K % 64 == 0 and
// K <= GF_MAX_K for every linear. Subgroup reductions.
//
// Why: between dependent dispatches the GPU drains (H200: about 2 µs of barrier and ramp-up per
// dependent dispatch, bench/src/dispatch_floor.rs), and a decode step of BitNet-2B4T has 120
// dependent steps; the host also encodes and submits one dispatch instead of 210. Here a
// workgroup of a later linear instead waits, inside the dispatch, only for the workgroups that
// produce its input, and loads its first weights while it waits. Measured on the H200 (2B4T
// chained stack): GPU time about that of the 120 barriers (each step's critical path — see the
// wait, read and quantize the input, reduce, publish — costs what the barrier did), one-token
// wall time 2.3-2.9 ms -> about 1.0 ms.
//
// Layout: the host lists the linears (jobs) in an order where every producer precedes its
// consumers and gives each a contiguous range of workgroups, in that order; `wg_job` maps a
// workgroup to its job. Each workgroup does exactly the fused GEMV's work for its row blocks
// (bitlinear_gemv_fused_subgroup.wgsl: quantize the input into workgroup memory, exact sums,
// rescale) with the job's offsets into the weight arena and the output arena.
//
// Waiting, two ways, by output-access file (its POLL_DATA):
// - On the data (the coherent file): the engine fills the output arena with CH_UNWRITTEN before
//   the run; each invocation of a consumer polls its own input words until they are written and
//   the workgroup takes their absmax (ch_input_top). Producers only store.
// - On counters (the atomic file): `counters[j]` counts the finished workgroups of job j. A
//   consumer's first invocation polls its producer's counter until all of the producer's
//   workgroups are done; every workgroup publishes its outputs and their absmax with a
//   device-scope storage barrier before it counts itself.
// A workgroup only ever waits for workgroups with lower indices. GPUs start workgroups in index
// order, so those are running or done and the wait ends; WGSL does not promise that order,
// so the wait is bounded: after SPIN_LIMIT iterations of polls a workgroup raises
// `counters[abort]` and flags status word ABORT_STATUS, every waiting workgroup gives up when it
// sees the flag, and the engine discards the run and computes the chain another way. The last
// workgroup to finish (counted in `counters[finished]`) zeroes all counters for the next run.
//
// Blocks of TPR lanes, 4 <= TPR <= 256 (see step 6).
//
// Params (bitlinear_common.wgsl): n = the number of jobs, tiles_n = the number of workgroups
// (the folded grid may have a few more, which do nothing), mode = 0, zero = 0.
//
// Status words: 0 = the first non-finite x index (the chain input), 1 = the run aborted (a
// workgroup's wait ran out), 2 = the first non-finite output index (flat over the output arena).
// Needs bitlinear_common.wgsl, bitlinear_gemv_blocks.wgsl, bitlinear_gemv_fused_common.wgsl,
// act_quant_common.wgsl, exact_div.wgsl, exact_div_127.wgsl, bitlinear_chain_quantize.wgsl and
// one output-access file: bitlinear_chain_out_coherent.wgsl (`out` declared @coherent, read as
// vec4) where the device allows it, bitlinear_chain_out_atomic.wgsl (`out` atomic) elsewhere.
// Each defines the `out` binding, the type ChFirst, ch_store4(idx, bits), ch_first(job, vt) and
// ch_quantize_output(job, vt, inv, first).

// One linear of the chain (host: engine/src/ops/bitnet_chain.rs, `ChainJob`).
struct ChainJob {
    // First vec4 of the job's weight rows in `weights` (rows of vpr vec4 each).
    w_off: u32,
    // Weight rows (output features).
    n: u32,
    // Vec4 per weight row: K / 64.
    vpr: u32,
    // The job whose output is the input, or NONE for the chain input x.
    src: u32,
    // First word of the input: in x (src == NONE, a multiple of 4) or in `out`.
    in_off: u32,
    // First word of the job's output in `out`.
    out_off: u32,
    // The job's first workgroup and its workgroup count.
    wg_first: u32,
    wgs: u32,
    // The weight scale s.
    scale: f32,
}

@group(0) @binding(0) var<storage, read> weights: array<vec4<u32>>;
// The chain input (f32).
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
// Binding 2, `out`: every job's output (f32 bits), at its out_off — declared by the output-access
// file (bitlinear_chain_out_coherent.wgsl or bitlinear_chain_out_atomic.wgsl, see the header).
@group(0) @binding(3) var<storage, read> jobs: array<ChainJob>;
// Per workgroup: its job.
@group(0) @binding(4) var<storage, read> wg_job: array<u32>;
// [0, n): finished workgroups per job; n: finished workgroups in all; n + 1: the abort flag;
// [n + 2, 2 n + 2): each job's output absmax bits (see main, step 6).
@group(0) @binding(5) var<storage, read_write> counters: array<atomic<u32>>;

// The abort word comes before the outputs' word: an aborted run's flags are not cpu-ref's.
const X_STATUS: u32 = 0u;
const ABORT_STATUS: u32 = 1u;
const Y_STATUS: u32 = 2u;

// Iterations of 32 polls of a producer's counter before a workgroup gives up (override constant,
// set per adapter; lavapipe stops at 65535, see ch_wait).
override SPIN_LIMIT: u32 = 32768u;
// Poll with read-modify-writes (see ch_done): the engine sets it on CPU adapters only.
override POLL_RMW: bool = true;

// vec4 i of the chain input (a job with src == NONE; producers' outputs are read by
// ch_quantize_output, bitlinear_chain_quantize.wgsl).
fn ch_in(job: ChainJob, i: u32) -> vec4<f32> {
    return x[job.in_off / 4u + i];
}

// Vec4 word j of the job's rows n .. n + 3 (rows past the end read the last row, never stored);
// zero words past the row's end.
fn ch_load(job: ChainJob, n: u32, j: u32) -> GvRows {
    if (j >= job.vpr) {
        return GvRows();
    }
    let last = job.n - 1u;
    let base = job.w_off + j;
    return GvRows(
        weights[base + min(n, last) * job.vpr],
        weights[base + min(n + 1u, last) * job.vpr],
        weights[base + min(n + 2u, last) * job.vpr],
        weights[base + min(n + 3u, last) * job.vpr],
    );
}

// One poll of the producer's counter. On CPU adapters a read-modify-write (adding 0): Mesa's
// lavapipe treats the relaxed atomicLoad as a plain load it may hoist out of the wait loop, so
// the wait never sees the producer finish. On GPUs a load: hundreds of workgroups polling one
// word with read-modify-writes queue at the L2 atomic unit, with the producers' increments.
fn ch_done(src: u32, need: u32) -> bool {
    if (POLL_RMW) {
        return atomicAdd(&counters[src], 0u) >= need;
    }
    return atomicLoad(&counters[src]) >= need;
}

// Eight polls in straight-line code (see ch_wait).
fn ch_polls(src: u32, need: u32) -> bool {
    return ch_done(src, need) || ch_done(src, need) || ch_done(src, need) || ch_done(src, need)
        || ch_done(src, need) || ch_done(src, need) || ch_done(src, need) || ch_done(src, need);
}

// Waits (first invocation) until the job's producer is done; 1 when the run was aborted.
// lavapipe ends a shader's loops after 65535 iterations in all (llvmpipe's loop limiter), so
// each iteration polls 32 times without a loop of its own; SPIN_LIMIT iterations at most.
fn ch_wait(job: ChainJob, g: u32) -> u32 {
    if (job.src == NONE) {
        return 0u;
    }
    let need = jobs[job.src].wgs;
    let abort = params.n + 1u;
    for (var i = 0u; i < SPIN_LIMIT; i = i + 1u) {
        if (ch_polls(job.src, need) || ch_polls(job.src, need) || ch_polls(job.src, need)
            || ch_polls(job.src, need)) {
            return 0u;
        }
        if (atomicAdd(&counters[abort], 0u) != 0u) {
            return 1u;
        }
    }
    atomicStore(&counters[abort], 1u);
    atomicMin(&nonfinite[ABORT_STATUS], g);
    return 1u;
}

// bitlinear_write.wgsl's value (mode 0) for output word idx, as f32 bits; flags a non-finite one.
fn ch_value(idx: u32, acc: i32, scale: f32) -> u32 {
    var bits = bitcast<u32>(i32_to_f32(acc) * scale);
    if ((bits & 0x7f800000u) == 0x7f800000u) {
        atomicMin(&nonfinite[Y_STATUS], idx);
        // One NaN, so that no output is the arena's unwritten word (POLL_DATA).
        if ((bits & 0x007fffffu) != 0u) {
            bits = 0x7fc00000u;
        }
    }
    return bits;
}

// The counter slot holding job j's output absmax bits (see main, step 6).
fn ch_top_slot(j: u32) -> u32 {
    return params.n + 2u + j;
}

// Counts the workgroup as finished; the last one zeroes every counter for the next run. Call
// from uniform control flow.
//
// On CPU adapters every invocation of the last workgroup takes every GV_WG-th counter: one
// invocation looping over all 2 n + 2 counters ran out of lavapipe's 65535 loop iterations on
// long chains, or after a long wait, leaving counters standing for the next run (gv_red[0].x
// carries the verdict). On GPUs, which have no such cap, thread 0 alone: no barriers after the
// workgroup was counted.
fn ch_finish(lid: u32) {
    if (POLL_RMW) {
        workgroupBarrier();
        if (lid == 0u) {
            let done = atomicAdd(&counters[params.n], 1u) + 1u;
            gv_red[0].x = i32(done == params.tiles_n);
        }
        if (workgroupUniformLoad(&gv_red[0]).x == 0) {
            return;
        }
        for (var j = lid; j < 2u * params.n + 2u; j = j + GV_WG) {
            atomicStore(&counters[j], 0u);
        }
        return;
    }
    if (lid != 0u) {
        return;
    }
    let done = atomicAdd(&counters[params.n], 1u) + 1u;
    if (done == params.tiles_n) {
        for (var j = 0u; j < 2u * params.n + 2u; j = j + 1u) {
            atomicStore(&counters[j], 0u);
        }
    }
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(num_subgroups) nsg: u32,
) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= params.tiles_n) {
        return;
    }
    let jid = wg_job[g];
    let job = jobs[jid];
    let ids = gv_ids(vec3<u32>(g - job.wg_first, 0u, 0u), vec3<u32>(1u), lane, sg, sg_size);
    let vpr = job.vpr;
    // K / 4 float vec4.
    let kv = vpr * 16u;

    // 1. The first DEPTH weight steps: loaded while the producer still runs.
    let j0 = ids.l;
    var w0 = ch_load(job, ids.n, j0);
    var w1 = GvRows();
    var w2 = GvRows();
    var w3 = GvRows();
    if (DEPTH > 1u) {
        w1 = ch_load(job, ids.n, j0 + TPR);
    }
    if (DEPTH > 2u) {
        w2 = ch_load(job, ids.n, j0 + 2u * TPR);
    }
    if (DEPTH > 3u) {
        w3 = ch_load(job, ids.n, j0 + 3u * TPR);
    }

    // 2. On counters: wait for the input; the storage barrier makes the producer's outputs
    // visible. (gv_red[0].x carries the verdict: 0 = go, 1 = the run was aborted; the row fills
    // 16 KiB.) On the data step 3 waits, and these barriers would only delay it (H200, 2B4T
    // chained stack, two rounds: 618.9-619.4 µs without them, 626.5-626.7 with).
    if (!POLL_DATA) {
        if (lid == 0u) {
            gv_red[0].x = i32(ch_wait(job, g));
        }
        storageBarrier();
        if (workgroupUniformLoad(&gv_red[0]).x != 0) {
            ch_finish(lid);
            return;
        }
    }

    // 3. absmax of the input: the chain input's from a pass over it; a producer's output's from
    // the words each invocation polled (on the data) or as the producer published it (on
    // counters, step 6: its load issued with the thread's first input values, ch_first, which
    // need not wait for it).
    var top: u32;
    var first = ChFirst();
    if (job.src == NONE) {
        top = ch_absmax(job, ids, lane, sg, nsg);
    } else {
        first = ch_first(job, ids.vt);
        top = ch_input_top(job, ids.vt, g, &first);
        if (POLL_DATA) {
            // Each thread polled its own words: the workgroup's largest. A wait that ran out
            // gives CH_UNWRITTEN, and the workgroup runs on with garbage: the run is discarded
            // (its abort flag reads before its outputs' flag), and not leaving here keeps this
            // step at one barrier (H200, 2B4T chained stack, two rounds: 624 µs against 631 µs
            // with a uniform verdict and an early return). Written out as in ch_absmax: one
            // shared helper for it was slower (docs/perf/decode-chain.md, "Waiting on the data").
            top = subgroupMax(top);
            if (lane == 0u) {
                gv_red[sg].x = bitcast<i32>(top);
            }
            workgroupBarrier();
            for (var s = 0u; s < nsg; s = s + 1u) {
                top = max(top, bitcast<u32>(gv_red[s].x));
            }
        }
    }
    let a = max(bitcast<f32>(top), 1e-5f);
    let inv = exact_div_127(a);

    // 4. Quantize into workgroup memory; the row sum on the way. A producer's output through
    // the output-access file's coherent loads; the chain input as vec4.
    var rs = 0i;
    if (job.src != NONE) {
        rs = ch_quantize_output(job, ids.vt, inv, first);
    } else {
        for (var i = ids.vt; i < kv; i = i + GV_WG) {
            rs += gf_pack(ch_in(job, i), i, inv, vpr);
        }
    }
    rs = subgroupAdd(rs);
    if (lane == 0u) {
        gv_red[sg].y = rs;
    }
    workgroupBarrier();
    var row_sum = 0i;
    for (var s = 0u; s < nsg; s = s + 1u) {
        row_sum += gv_red[s].y;
    }

    // 5. The row blocks, DEPTH steps of loads in flight.
    var acc = GfAcc();
    var j = j0;
    loop {
        if (j >= vpr) {
            break;
        }
        let jn = j + DEPTH * TPR;
        gf_step(w0, j, vpr, &acc);
        w0 = ch_load(job, ids.n, jn);
        if (DEPTH > 1u) {
            gf_step(w1, j + TPR, vpr, &acc);
            w1 = ch_load(job, ids.n, jn + TPR);
        }
        if (DEPTH > 2u) {
            gf_step(w2, j + 2u * TPR, vpr, &acc);
            w2 = ch_load(job, ids.n, jn + 2u * TPR);
        }
        if (DEPTH > 3u) {
            gf_step(w3, j + 3u * TPR, vpr, &acc);
            w3 = ch_load(job, ids.n, jn + 3u * TPR);
        }
        j = jn;
    }

    // 6. Reduce, rescale, store the block's four words at once. The block holding the job's last
    // row stores zeros for the rows past it, into the arena's padding; blocks wholly past the end
    // store nothing (below 16 lanes a workgroup's rows reach past the 64-row padding, and their
    // zeros landed in later jobs' outputs — over values already written, once consumers polled
    // the data; lavapipe at 4 lanes, one run in four). On counters, publish the outputs and
    // their absmax (the largest sign-cleared bits, as ch_absmax computes it) with one atomic per
    // workgroup, then count the workgroup. (H200, 2B4T chained stack as one LinearChain
    // dispatch, two alternating rounds: an atomicMax per 4-row block and a store per word 696
    // µs, the four words stored at once 692, and the absmax reduced in the workgroup first 681.)
    let total = gv_reduce(gf_total(acc), ids);
    var top_out = 0u;
    if (ids.l == 0u && ids.n < job.n) {
        let scale = bitlinear_scale(job.scale, a);
        let base = job.out_off + ids.n;
        var bits = vec4<u32>();
        for (var r = 0u; r < 4u; r = r + 1u) {
            if (ids.n + r < job.n) {
                bits[r] = ch_value(base + r, total[r] - row_sum, scale);
                top_out = max(top_out, bits[r] & 0x7fffffffu);
            }
        }
        ch_store4(base, bits);
    }
    if (POLL_DATA) {
        // Consumers poll the words themselves: nothing to publish.
        ch_finish(lid);
        return;
    }
    // gv_reduce's last readers of gv_red are done after this barrier.
    workgroupBarrier();
    // One slot per 4-row block, written by its first lane: where a block has fewer lanes than a
    // subgroup (TPR 32 on 64-lane AMD or Adreno subgroups) a subgroup holds several blocks, and
    // a slot per subgroup (its lane 0's value) dropped the others' — consumers then quantized
    // with too small a scale. GV_WG / TPR <= GV_MAX_SUBGROUPS slots (TPR >= 4). H200 (a block
    // per subgroup), 2B4T chained stack, three alternating rounds: a slot per subgroup 684 µs,
    // a subgroupMax before it 691-692, a slot per block 678-680.
    if (ids.l == 0u) {
        gv_red[ids.vt / TPR].x = bitcast<i32>(top_out);
    }
    workgroupBarrier();
    if (lid == 0u) {
        for (var b = 0u; b < GV_WG / TPR; b = b + 1u) {
            top_out = max(top_out, bitcast<u32>(gv_red[b].x));
        }
        atomicMax(&counters[ch_top_slot(jid)], top_out);
    }
    storageBarrier();
    if (lid == 0u) {
        atomicAdd(&counters[jid], 1u);
    }
    ch_finish(lid);
}
