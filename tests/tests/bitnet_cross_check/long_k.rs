//! BitNet ops whose invocations loop tens of thousands of times over K. lavapipe (llvmpipe)
//! silently ends a shader's loops after 65 535 iterations in all (every traversal of every loop,
//! a WGSL loop's exit test included), so these sizes returned truncated results as `Ok` there
//! until the engine ran them on cpu-ref on CPU adapters; on other adapters they run on the GPU.
//! Either way they must match cpu-ref bit for bit.

use bitnet_tests::random_normal;
use bitnet_wgpu::cpu_ref;

use crate::support::{assert_acts_eq, engine};

/// `act_quant.wgsl` (K % 4 != 0): one workgroup per row, whose threads take K / 256 values for
/// the absmax and K / 1024 words to pack — past 65 535 from K of about 13.4M.
#[test]
fn activation_quantization_of_a_very_long_row_matches_cpu_ref() {
    let (m, k) = (1, 14_000_001);
    let x = random_normal(61, m * k, 1.0);
    let want = cpu_ref::quantize_activations(&x, m, k).unwrap();
    let got = engine().quantize_activations(&x, m, k).unwrap();
    assert_acts_eq(&got, &want, "activations [1, 14 000 001]");
}
