// Shared by attention.wgsl, attention_tiled.wgsl, attention_decode.wgsl and
// attention_combine.wgsl (concatenated with them, float_common.wgsl and exact_div.wgsl): the
// exponential and the chunk-merge step of `bitnet_cpu_ref::ops::attention`, and the vec4
// non-finite flags (status words 0 = q, 1 = k, 2 = v of the `nonfinite` slots each of them
// declares).

// Keys per chunk (`ATTENTION_CHUNK` in cpu-ref): one per invocation of attention.wgsl's workgroup.
const CHUNK: u32 = 256u;

// e^x for x <= 0 (float_common.wgsl's `exp_reduced`), exactly 1 at 0 as on the CPU, so the
// maximum's weight and the merge's unit factor are exact whatever the driver's `exp(0)`.
fn exp_nonpos(x: f32) -> f32 {
    if (x == 0.0) {
        return 1.0;
    }
    return exp_reduced(x);
}

// One step of the chunk merge (cpu-ref's step 3): from the running maximum `m_run` and the next
// chunk's maximum `m`, the factors of the running sums (x) and of the chunk's sums (y) — the side
// holding the larger maximum gets exactly 1 — and the new running maximum (z).
fn merge_factors(m_run: f32, m: f32) -> vec3<f32> {
    if (m > m_run) {
        return vec3<f32>(exp_nonpos(m_run - m), 1.0, m);
    }
    return vec3<f32>(1.0, exp_nonpos(m - m_run), m_run);
}

// Whether any of the four values is NaN or infinite.
fn any_non_finite4(x: vec4<f32>) -> bool {
    return any((bitcast<vec4<u32>>(x) & vec4<u32>(0x7f800000u)) == vec4<u32>(0x7f800000u));
}

// Flags the first non-finite of four consecutive values at flat index `at` in status word `word`
// (0 = q, 1 = k, 2 = v).
fn flag_first4(word: u32, x: vec4<f32>, at: u32) {
    for (var c = 0u; c < 4u; c += 1u) {
        if (is_non_finite(x[c])) {
            atomicMin(&nonfinite[word], at + c);
            return;
        }
    }
}

// Flags every non-finite of four v values at flat indices at, at + step, at + 2 step, at + 3 step.
fn flag_v4(x: vec4<f32>, at: u32, step: u32) {
    for (var i = 0u; i < 4u; i += 1u) {
        if (is_non_finite(x[i])) {
            atomicMin(&nonfinite[2], at + i * step);
        }
    }
}
