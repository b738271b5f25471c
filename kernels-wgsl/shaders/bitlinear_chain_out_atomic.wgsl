// Output access of bitlinear_chain_subgroup.wgsl where storage cannot be declared coherent
// (wgpu's MEMORY_DECORATION_COHERENT missing: Metal before 3.2, WebGPU): `out` is an atomic
// array. Other workgroups read a job's outputs while the dispatch runs, and plain loads of a
// plain array were not guaranteed to see them (on the H200 a consumer read part of its input
// stale); atomic accesses are coherent across workgroups, at one 32-bit load per value (H200,
// 2B4T chained stack: 836 µs so against 720 with bitlinear_chain_out_coherent.wgsl as it came).
// Consumers wait on their producer's counter (POLL_DATA is false here) and read its published
// absmax (ch_input_top).
// Defines `out`, ChFirst, ch_store4, ch_first, ch_input_top and ch_quantize_output, as that
// file does.

const POLL_DATA: bool = false;

@group(0) @binding(2) var<storage, read_write> out: array<atomic<u32>>;

// Stores words idx .. idx + 3 of the output arena, a word at a time.
fn ch_store4(idx: u32, bits: vec4<u32>) {
    atomicStore(&out[idx], bits.x);
    atomicStore(&out[idx + 1u], bits.y);
    atomicStore(&out[idx + 2u], bits.z);
    atomicStore(&out[idx + 3u], bits.w);
}

// Thread vt's first four input values (see ch_load4), loaded before the input's scale is known.
alias ChFirst = vec4<u32>;

fn ch_first(job: ChainJob, vt: u32) -> ChFirst {
    return ch_load4(job, vt, 0u);
}

// The absmax bits of the job's input: its producer's published value (main, step 6).
fn ch_input_top(job: ChainJob, vt: u32, g: u32, first: ptr<function, ChFirst>) -> u32 {
    return atomicLoad(&counters[ch_top_slot(job.src)]);
}

// One value of a producer's output, read by lane-consecutive threads: quantized, merged with
// its three neighbours into the packed word (every lane of the subgroup takes part in the
// shuffles), which the first of the four stores into gf_x. Returns the quantized value (0 for
// clamped duplicates at or past k).
fn ch_quantize_value(bits: u32, f: u32, k: u32, inv: f32) -> i32 {
    let q = i32(clamp(round(bitcast<f32>(bits) * inv), -128.0, 127.0));
    let valid = f < k;
    let shift = 8u * (f & 3u);
    let b = select(0u, (u32(q) & 0xffu) << shift, valid);
    var word = b | subgroupShuffleXor(b, 1u);
    word = word | subgroupShuffleXor(word, 2u);
    if (valid && shift == 0u) {
        let i = f >> 2u;
        gf_x[gf_slot(i >> 2u, k / 64u)][i & 3u] = word;
    }
    return select(0, q, valid);
}

// Four values of a producer's output for thread vt from value `base` on: vt, vt + GV_WG, ...
// (lane-consecutive words; past k clamped to the last, values ch_quantize_value drops). Clamping
// beat guarding the loads with a branch on the H200 (chained stack 825 vs 905 µs).
fn ch_load4(job: ChainJob, vt: u32, base: u32) -> vec4<u32> {
    let last = job.in_off + job.vpr * 64u - 1u;
    let f = job.in_off + base + vt;
    return vec4<u32>(
        atomicLoad(&out[min(f, last)]),
        atomicLoad(&out[min(f + GV_WG, last)]),
        atomicLoad(&out[min(f + 2u * GV_WG, last)]),
        atomicLoad(&out[min(f + 3u * GV_WG, last)]),
    );
}

// ch_quantize_value of the four values ch_load4 read at value f (= base + vt).
fn ch_quantize4(b: vec4<u32>, f: u32, k: u32, inv: f32) -> i32 {
    var rs = ch_quantize_value(b.x, f, k, inv);
    rs += ch_quantize_value(b.y, f + GV_WG, k, inv);
    rs += ch_quantize_value(b.z, f + 2u * GV_WG, k, inv);
    rs += ch_quantize_value(b.w, f + 3u * GV_WG, k, inv);
    return rs;
}

// A producer's output (the job's input) quantized into gf_x; `first` holds thread vt's first four
// values, loaded together with the published absmax (before `inv` is known). Then eight loads per
// step in flight: each step's shuffles wait for its loads, so fewer, wider steps mean fewer round
// trips to L2 (H200, 2B4T chained stack: 870 µs with four loads per step and none early, 844
// with the first four early, 825 with both; eight per step without the early four: 970, the
// clamped tail of K = 2560's second step all reading one word). A uniform loop, so every lane
// takes part in every shuffle.
fn ch_quantize_output(job: ChainJob, vt: u32, inv: f32, first: vec4<u32>) -> i32 {
    let k = job.vpr * 64u;
    var rs = ch_quantize4(first, vt, k, inv);
    for (var base = 4u * GV_WG; base < k; base = base + 8u * GV_WG) {
        let b0 = ch_load4(job, vt, base);
        let b1 = ch_load4(job, vt, base + 4u * GV_WG);
        rs += ch_quantize4(b0, base + vt, k, inv);
        rs += ch_quantize4(b1, base + 4u * GV_WG + vt, k, inv);
    }
    return rs;
}
