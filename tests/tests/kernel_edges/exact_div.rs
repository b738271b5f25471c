//! `exact_div_127.wgsl` against `exact_div(127, a)` on the GPU.

use super::rig::Rig;
use super::*;

const EXACT_DIV: &str = include_str!("../../../kernels-wgsl/shaders/exact_div.wgsl");
const EXACT_DIV_127: &str = include_str!("../../../kernels-wgsl/shaders/exact_div_127.wgsl");

/// `sweep`: a = bits `base + i * stride` for i < count, compared on the GPU (mismatch count and
/// the first mismatching i). `list`: a = `inputs[i]`, both results written out.
const DIV_TEST: &str = r"
@compute @workgroup_size(256)
fn sweep(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = rig_index(gid);
    if (i >= rp.count) {
        return;
    }
    let a = bitcast<f32>(rp.base + i * rp.stride);
    let fast = bitcast<u32>(exact_div_127(a));
    let slow = bitcast<u32>(exact_div(127.0, a));
    if (fast != slow) {
        atomicAdd(&stats[0], 1u);
        atomicMin(&stats[1], i);
    }
}

@compute @workgroup_size(256)
fn list(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = rig_index(gid);
    if (i >= rp.count) {
        return;
    }
    let a = bitcast<f32>(inputs[i]);
    results[2u * i] = bitcast<u32>(exact_div_127(a));
    results[2u * i + 1u] = bitcast<u32>(exact_div(127.0, a));
}
";

/// Perturbed copies of `exact_div_127` for `DivRig::perturbed`: a line of it, its replacement,
/// the override constant that replacement adds, and the values it is checked with. The integer
/// correction steps are nearly never needed where f32 division is IEEE (e.g. lavapipe), so they
/// are exercised here: the estimate off by a few units (Vulkan allows 2.5 ulp of division error)
/// or by 100, and the float correction replaced by the exact integer floor one off either way
/// (exactly one off whatever the adapter's division, the most the integer steps must fix).
const PERTURBATIONS: [(&str, &str, &str, &[i32]); 2] = [
    (
        "var q = u32(f32(num) / f32(sig) * 16777216.0);",
        "var q = bitcast<u32>(bitcast<i32>(u32(f32(num) / f32(sig) * 16777216.0)) + DELTA);",
        "override DELTA: i32;",
        &[-7, -1, 1, 7, 100],
    ),
    (
        "let d = i32(floor(f32(r) / f32(sig)));",
        "let d = floor_div(r, bitcast<i32>(sig)) + DELTA;",
        "override DELTA: i32;
fn floor_div(r: i32, s: i32) -> i32 {
    let t = r / s;
    return select(t, t - 1, t * s > r);
}",
        &[-1, 1],
    ),
];

/// The exact_div_127 kernels on a [`Rig`].
struct DivRig {
    rig: Rig,
    sweep: wgpu::ComputePipeline,
    list: wgpu::ComputePipeline,
    /// `sweep` on each perturbed copy of `exact_div_127`, with a description.
    perturbed: Vec<(String, wgpu::ComputePipeline)>,
}

impl DivRig {
    /// A rig on the engine's adapter, and the pipelines.
    fn new() -> DivRig {
        let rig = Rig::new("exact_div_127 check");
        let plain = format!("{EXACT_DIV}\n{EXACT_DIV_127}\n{DIV_TEST}");
        let perturbed = PERTURBATIONS
            .iter()
            .flat_map(|&(line, replacement, decl, deltas)| {
                assert_eq!(
                    EXACT_DIV_127.matches(line).count(),
                    1,
                    "exact_div_127.wgsl no longer has `{line}`: update PERTURBATIONS in this test"
                );
                let copy = EXACT_DIV_127.replace(line, replacement);
                let source = format!("{EXACT_DIV}\n{copy}\n{decl}\n{DIV_TEST}");
                let rig = &rig;
                deltas.iter().map(move |&d| {
                    let p = rig.pipeline(&source, "sweep", &[("DELTA", f64::from(d))]);
                    (format!("`{replacement}` with DELTA = {d}"), p)
                })
            })
            .collect();
        DivRig {
            sweep: rig.pipeline(&plain, "sweep", &[]),
            list: rig.pipeline(&plain, "list", &[]),
            perturbed,
            rig,
        }
    }

    /// Bits `base + i * stride`, i < count: asserts exact_div_127 == exact_div(127, ·) for all.
    fn sweep(&self, base: u32, stride: u32, count: u32, ctx: &str) {
        self.sweep_with(&self.sweep, base, stride, count, ctx);
    }

    fn sweep_with(
        &self,
        pipeline: &wgpu::ComputePipeline,
        base: u32,
        stride: u32,
        count: u32,
        ctx: &str,
    ) {
        let (stats, _) = self.rig.run(pipeline, [base, stride, count], &[], 0);
        assert_eq!(
            stats[0],
            0,
            "{ctx}: {} mismatches, first at a = bits {:#010x}",
            stats[0],
            base.wrapping_add(stats[1].wrapping_mul(stride))
        );
    }

    /// Both results for each input bit pattern: (exact_div_127, exact_div).
    fn list(&self, inputs: &[u32]) -> Vec<(u32, u32)> {
        let n = inputs.len() as u32;
        let (_, r) = self
            .rig
            .run(&self.list, [0, 0, n], inputs, 2 * u64::from(n));
        r.chunks_exact(2).map(|c| (c[0], c[1])).collect()
    }
}

#[test]
fn exact_div_127_matches_exact_div_on_the_gpu() {
    // Kept for the process (never dropped: no device destruction while other tests submit).
    static RIG: OnceLock<DivRig> = OnceLock::new();
    let rig = RIG.get_or_init(DivRig::new);
    // Every significand at the fast path's ends (biased exponent 6: results next to the largest
    // float; 254: the smallest normal results), at 1 <= a < 2 and 127 <= a < 256, and at the
    // fallback's edges (exponent 0: every subnormal; 5: tiny a; 255: infinity and every NaN).
    // The fast path's quotient and remainder depend on the significand only.
    for e in [0u32, 5, 6, 7, 127, 133, 253, 254, 255] {
        rig.sweep(
            e << 23,
            1,
            1 << 23,
            &format!("every significand, exponent {e}"),
        );
    }
    // Every exponent, significands 0, 13, 26, ...
    for e in 0u32..=255 {
        let count = (1 << 23) / 13 + 1;
        rig.sweep(e << 23, 13, count, &format!("exponent {e}, stride 13"));
    }
    // The correction steps (2, 3) on their own (see PERTURBATIONS), over every significand of
    // exponent 6.
    for (what, pipeline) in &rig.perturbed {
        rig.sweep_with(
            pipeline,
            6 << 23,
            1,
            1 << 23,
            &format!("{what}: every significand"),
        );
    }

    // Edge and random significands at every exponent, both signs; subnormals; zeros, 1e-5,
    // infinities and NaNs.
    let mut r = Rng::new(127);
    let mut inputs = Vec::new();
    for e in 0u32..=255 {
        let mut sigs = vec![0u32, 1, 2, 3, 0x7f_fffd, 0x7f_fffe, 0x7f_ffff];
        // Near 127's significand 0x7e0000 (where the doubling of N' switches) and the halves.
        sigs.extend([
            0x7d_ffff, 0x7e_0000, 0x7e_0001, 0x40_0000, 0x3f_ffff, 0x40_0001,
        ]);
        sigs.extend((0..24).map(|_| r.below(1 << 23) as u32));
        for s in sigs {
            let bits = (e << 23) | s;
            inputs.extend([bits, bits | 0x8000_0000]);
        }
    }
    inputs.extend((0..4096).map(|_| r.below(1 << 23) as u32)); // subnormals
    inputs.extend((0..16384).map(|_| r.next_u64() as u32)); // any bit pattern
    for v in [1e-5f32, 1e-5f32.next_up(), 1e-5f32.next_down(), 127.0, 1.0] {
        inputs.extend([v.to_bits(), (-v).to_bits()]);
    }
    inputs.extend([
        0,
        0x8000_0000,
        f32::INFINITY.to_bits(),
        f32::NEG_INFINITY.to_bits(),
        0x7fc0_0000,
        0xffc0_0000,
        0x7f80_0001,
        0x7fbf_ffff,
        0x7fff_ffff,
        0xffff_ffff,
    ]);
    let out = rig.list(&inputs);
    let mut host_checked = 0;
    for (&bits, &(fast, slow)) in inputs.iter().zip(&out) {
        let a = f32::from_bits(bits);
        assert_eq!(
            fast,
            slow,
            "a = {a:e} ({bits:#010x}): exact_div_127 {:e} ({fast:#010x}) vs exact_div {:e} \
             ({slow:#010x})",
            f32::from_bits(fast),
            f32::from_bits(slow)
        );
        // exact_div divides magnitudes; for positive non-NaN a it is IEEE division.
        if a.is_sign_positive() && !a.is_nan() {
            let want = (127.0f32 / a).to_bits();
            assert_eq!(fast, want, "a = {a:e} ({bits:#010x}): vs host 127 / a");
            host_checked += 1;
        }
    }
    assert!(host_checked > 10_000);
}
