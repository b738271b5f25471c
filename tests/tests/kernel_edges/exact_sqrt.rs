//! `exact_sqrt.wgsl`'s `sqrt_rounded` against the host's IEEE square root on the GPU: edge and
//! random significands at every exponent, subnormals, perfect squares and their neighbours,
//! zeros, infinity; and, with the shader's root moved off by up to 4 ulp before the correction,
//! the steps an IEEE `sqrt` (lavapipe) never needs. (The moves add to the driver's own error:
//! NVIDIA's root was one ulp off for some inputs, so `SQRT_STEPS` = 6 leaves room for two.)

use super::rig::Rig;
use super::*;

const EXACT_DIV: &str = include_str!("../../../kernels-wgsl/shaders/exact_div.wgsl");
const EXACT_SQRT: &str = include_str!("../../../kernels-wgsl/shaders/exact_sqrt.wgsl");

/// `list`: results[i] = sqrt_rounded(inputs[i]) (bit patterns).
const SQRT_TEST: &str = r"
@compute @workgroup_size(256)
fn list(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = rig_index(gid);
    if (i >= rp.count) {
        return;
    }
    results[i] = bitcast<u32>(sqrt_rounded(bitcast<f32>(inputs[i])));
}
";

/// The shader's root, and what replaces it in the perturbed copies (moved DELTA ulp).
const ROOT: &str = "var s = sqrt(a);";
const ROOT_MOVED: &str = "var s = bitcast<f32>(bitcast<u32>(sqrt(a)) + bitcast<u32>(DELTA));";

/// Non-negative inputs: edge and random significands at every exponent, subnormals, perfect
/// squares and their neighbours, the norms' typical mean squares, zeros and infinity.
fn inputs() -> Vec<u32> {
    let mut r = Rng::new(2);
    let mut bits = Vec::new();
    for e in 0u32..=254 {
        let mut sigs = vec![0u32, 1, 2, 0x40_0000, 0x7f_fffe, 0x7f_ffff];
        sigs.extend((0..40).map(|_| r.below(1 << 23) as u32));
        bits.extend(sigs.into_iter().map(|s| (e << 23) | s));
    }
    bits.extend((0..4096).map(|_| r.below(1 << 23) as u32));
    for k in 1u32..4096 {
        let square = (k as f32) * (k as f32);
        bits.extend([
            square.to_bits(),
            square.next_up().to_bits(),
            square.next_down().to_bits(),
        ]);
    }
    for v in [1e-5f32, 1e-6, 1.0 + 1e-5, 0.25, 2.0] {
        bits.extend([v.to_bits(), v.next_up().to_bits(), v.next_down().to_bits()]);
    }
    bits.extend([0, f32::INFINITY.to_bits()]);
    bits
}

#[test]
fn sqrt_rounded_is_the_ieee_square_root_on_the_gpu() {
    let rig = Rig::new("sqrt_rounded check");
    let plain = format!("{EXACT_DIV}\n{EXACT_SQRT}\n{SQRT_TEST}");
    assert_eq!(
        EXACT_SQRT.matches(ROOT).count(),
        1,
        "exact_sqrt.wgsl no longer has `{ROOT}`: update this test"
    );
    let moved = format!(
        "{EXACT_DIV}\n{}\noverride DELTA: i32;\n{SQRT_TEST}",
        EXACT_SQRT.replace(ROOT, ROOT_MOVED)
    );
    let inputs = inputs();
    let n = inputs.len() as u32;
    let mut runs = vec![(
        "the shader's root".to_string(),
        rig.pipeline(&plain, "list", &[]),
    )];
    // A root off by up to 4 ulp either way, plus the driver's own error, is corrected.
    for delta in [-4, -3, -1, 1, 2, 4] {
        let p = rig.pipeline(&moved, "list", &[("DELTA", f64::from(delta))]);
        runs.push((format!("the root moved {delta} ulp"), p));
    }
    for (what, pipeline) in &runs {
        let (_, got) = rig.run(pipeline, [0, 0, n], &inputs, u64::from(n));
        for (&bits, &g) in inputs.iter().zip(&got) {
            let a = f32::from_bits(bits);
            let want = a.sqrt().to_bits();
            // A moved root of 0 or infinity is not corrected (the shader's own value stands).
            if (a == 0.0 || a.is_infinite()) && what != "the shader's root" {
                continue;
            }
            assert_eq!(
                g,
                want,
                "{what}: sqrt({a:e}) ({bits:#010x}): got {:e} ({g:#010x}), want {:e}",
                f32::from_bits(g),
                f32::from_bits(want)
            );
        }
    }
}
