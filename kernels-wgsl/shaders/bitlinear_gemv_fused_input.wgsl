// Input hooks of the fused GEMVs' body (bitlinear_gemv_fused_body.wgsl): the row it quantizes is
// the kernel's x as it is, and a non-finite x element flags the kernel's X_STATUS word.

// Nothing to prepare.
fn gf_prepare(m: u32, kv: u32, t: u32, first: bool) -> f32 {
    return 0.0;
}

// x's vec4 `v` (vec4 `at` of the [M, K] rows) as it is.
fn gf_input(v: vec4<f32>, at: u32, col: u32, prep: f32) -> vec4<f32> {
    return v;
}

fn gf_flag_input(bad: u32) {
    atomicMin(&nonfinite[X_STATUS], bad);
}
