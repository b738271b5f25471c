// Weight quantization reading w once, dispatch 1 of 3: estimate s = mean |w| from a sample and
// publish a band [s_lo, s_hi] that contains s with near certainty (weight_quant_once.wgsl says
// why; whether it really does is checked once s is known, and nothing depends on luck: a missed
// band costs a second read of w, never a wrong code).
//
// Sample: float vec4 number 64 j + h(j) for j = 0, 1, ..., with h a hash into 0..63, so that no
// column of a row-major matrix is favoured. Workgroup g sums |w| and w^2 over its lanes' samples
// (any order: an estimate), publishes them, and the last workgroup to finish (a countdown in
// status word 3, clean at every launch) makes the band: mean m, standard error e, the band
// m +- max(5 e, m / 256), its ends clamped to 1e-5 as s is, and their pack factors. It also zeroes
// the uncertain-word count for dispatch 2. Needs exact_div.wgsl, weight_quant_pack_common.wgsl and
// weight_quant_once_common.wgsl (prepended by bitnet.rs).

struct Params {
    // Float vec4 of w (N * K / 4).
    vecs: u32,
    // Samples: ceil(vecs / 64).
    samples: u32,
    // Estimator workgroups (at most BAND_MAX_GROUPS).
    groups: u32,
    // Always 0: the runtime zero of pack_factors' optimization barrier.
    zero: u32,
}

@group(0) @binding(0) var<storage, read> weights: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> scratch: array<atomic<u32>>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

const STATE: u32 = 3u;
const CLEAN: u32 = 0xffffffffu;

var<workgroup> acc: array<vec3<f32>, 256>;
var<workgroup> last: u32;

fn hash(j: u32) -> u32 {
    var x = j * 0x9e3779b9u;
    x = x ^ (x >> 16u);
    x = x * 0x85ebca6bu;
    return x ^ (x >> 13u);
}

// (sum |w|, sum w^2, values) of the samples j = first, first + stride, ...
fn sample_sums(first: u32, stride: u32) -> vec3<f32> {
    var r = vec3<f32>(0.0);
    for (var j = first; j < params.samples; j = j + stride) {
        let v = 64u * j + (hash(j) & 63u);
        if (v < params.vecs) {
            let w = weights[v];
            // Non-finite samples are left out: dispatch 2 reports them, and s with them.
            let finite = (bitcast<vec4<u32>>(w) & vec4<u32>(0x7f800000u)) != vec4<u32>(0x7f800000u);
            let a = select(vec4<f32>(0.0), abs(w), finite);
            r = r + vec3<f32>(a.x + a.y + a.z + a.w, dot(a, a), 4.0);
        }
    }
    return r;
}

// The workgroup's total of one vec3 per lane, on every lane.
fn workgroup_total(v: vec3<f32>, t: u32) -> vec3<f32> {
    workgroupBarrier();
    acc[t] = v;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride = stride >> 1u) {
        if (t < stride) {
            acc[t] = acc[t] + acc[t + stride];
        }
        workgroupBarrier();
    }
    return acc[0];
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let g = wid.x;
    let mine = workgroup_total(sample_sums(g * 256u + t, params.groups * 256u), t);
    if (t == 0u) {
        atomicStore(&scratch[SCRATCH_PARTIALS + 3u * g], bitcast<u32>(mine.x));
        atomicStore(&scratch[SCRATCH_PARTIALS + 3u * g + 1u], bitcast<u32>(mine.y));
        atomicStore(&scratch[SCRATCH_PARTIALS + 3u * g + 2u], bitcast<u32>(mine.z));
    }
    // Publish the partials (device scope) before counting the workgroup.
    storageBarrier();
    if (t == 0u) {
        let before = atomicSub(&nonfinite[STATE], 1u);
        last = u32(before == CLEAN - (params.groups - 1u));
    }
    if (workgroupUniformLoad(&last) == 0u) {
        return;
    }
    storageBarrier();
    var p = vec3<f32>(0.0);
    if (t < params.groups) {
        p = vec3<f32>(
            bitcast<f32>(atomicLoad(&scratch[SCRATCH_PARTIALS + 3u * t])),
            bitcast<f32>(atomicLoad(&scratch[SCRATCH_PARTIALS + 3u * t + 1u])),
            bitcast<f32>(atomicLoad(&scratch[SCRATCH_PARTIALS + 3u * t + 2u])),
        );
    }
    let total = workgroup_total(p, t);
    if (t != 0u) {
        return;
    }
    let n = max(total.z, 1.0);
    let m = total.x / n;
    let variance = max(total.y / n - m * m, 0.0);
    let margin = max(5.0 * sqrt(variance / n), m / 256.0);
    let s_lo = max(m - margin, 1e-5f);
    let s_hi = max(m + margin, 1e-5f);
    let f_lo = pack_factors(s_lo);
    let f_hi = pack_factors(s_hi);
    atomicStore(&scratch[SCRATCH_FACTORS], bitcast<u32>(f_lo.x));
    atomicStore(&scratch[SCRATCH_FACTORS + 1u], bitcast<u32>(f_lo.y));
    atomicStore(&scratch[SCRATCH_FACTORS + 2u], bitcast<u32>(f_hi.x));
    atomicStore(&scratch[SCRATCH_FACTORS + 3u], bitcast<u32>(f_hi.y));
    atomicStore(&scratch[SCRATCH_BAND], bitcast<u32>(s_lo));
    atomicStore(&scratch[SCRATCH_BAND + 1u], bitcast<u32>(s_hi));
    atomicStore(&scratch[SCRATCH_UNCERTAIN], 0u);
}
