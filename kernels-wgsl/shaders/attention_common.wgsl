// Shared by attention.wgsl and attention_combine.wgsl (concatenated with them, float_common.wgsl
// and exact_div.wgsl): the exponential and the chunk-merge step of `bitnet_cpu_ref::ops::attention`.

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
