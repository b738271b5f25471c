//! Helpers of the cross-check suite: deterministic random data, the GPU engine every GPU test
//! uses (panicking loudly without an adapter, so CI cannot silently skip), and the one table of
//! per-op float tolerances; the re-run of subgroup-sensitive cases on 4-lane subgroups; the
//! retry of tests of in-dispatch waits on fresh engines; and an inline-polled task (futures run on the engine's own threads).
#![warn(missing_docs)]

use bitnet_kernels_wgsl::bitnet;
use bitnet_wgpu::{BackendKind, Engine, EngineOptions, wgpu};

mod child_process;
mod inline_task;
mod subgroup_rerun;
mod waits;
pub use child_process::in_child_process;
pub use inline_task::{spawn_inline, thread_name};
pub use subgroup_rerun::{rerun_on_4_lane_subgroups, rerun_where_the_subgroup_layout_is_broken};
pub use waits::{WAIT_ATTEMPTS, until_waits_hold};

/// Deterministic splitmix64 generator (no external crate; the same stream on every machine).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits (splitmix64).
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 24 random bits (exactly representable).
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[lo, hi)`.
    pub fn range_f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit_f32()
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Approximately normal (sum of 4 uniforms, centred, unit variance), times `scale`.
    pub fn normal_f32(&mut self, scale: f32) -> f32 {
        let s: f32 = (0..4).map(|_| self.unit_f32()).sum::<f32>() - 2.0;
        s * 3.0f32.sqrt() / 2.0f32.sqrt() * scale
    }
}

/// `n` values uniform in `[lo, hi)` from `seed`.
pub fn random_f32(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.range_f32(lo, hi)).collect()
}

/// `n` approximately normal values with standard deviation `scale` from `seed` (weight-like).
pub fn random_normal(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.normal_f32(scale)).collect()
}

/// `n` ternary values in `{-1, 0, 1}` from `seed`.
pub fn random_ternary(seed: u64, n: usize) -> Vec<i8> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.below(3) as i8 - 1).collect()
}

/// `n` random `i8` values from `seed`.
pub fn random_i8(seed: u64, n: usize) -> Vec<i8> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.next_u64() as i8).collect()
}

/// The GPU engine of the suite. Panics with a clear message when no GPU adapter exists: GPU tests
/// must fail loudly, never skip (CI has Mesa lavapipe).
pub fn gpu_engine() -> Engine {
    gpu_engine_with(EngineOptions::default())
}

/// Like [`gpu_engine`], with options.
pub fn gpu_engine_with(options: EngineOptions) -> Engine {
    // The variable overrides every engine's policy: `cpu` moved most of the suite's GPU ops onto
    // cpu-ref, where they match it trivially, and the suite still passed 73 of 87 tests.
    if let Ok(v) = std::env::var(bitnet_wgpu::DISPATCH_ENV)
        && !v.trim().is_empty()
    {
        panic!(
            "{}={v:?} is set: it would choose the backend of the cross-check suite's ops; unset it",
            bitnet_wgpu::DISPATCH_ENV
        );
    }
    match Engine::gpu_with(options) {
        Ok(e) => {
            assert_eq!(e.backend_kind(), BackendKind::Gpu);
            e
        }
        Err(e) => panic!(
            "no GPU adapter for the cross-check suite ({e}). GPU tests fail rather than skip: \
             install a Vulkan driver (CI: mesa-vulkan-drivers / lavapipe) or set WGPU_BACKEND / \
             WGPU_ADAPTER_NAME to a working adapter"
        ),
    }
}

/// A device of its own on the default engine's adapter, with the features and limits `pick`
/// gives for it: the adapter, device and queue an application would hand to
/// `Engine::from_device`.
pub fn own_device(
    label: &'static str,
    pick: impl Fn(&wgpu::Adapter) -> (wgpu::Features, wgpu::Limits),
) -> (wgpu::Adapter, wgpu::Device, wgpu::Queue) {
    let info = gpu_engine().info();
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    // The name and the backend: one driver may offer the same device through two backends.
    let adapter = adapters
        .into_iter()
        .find(|a| {
            let i = a.get_info();
            i.name == info.adapter_name && format!("{:?}", i.backend) == info.backend
        })
        .expect("the default engine's adapter is enumerable");
    let (features, limits) = pick(&adapter);
    let desc = wgpu::DeviceDescriptor {
        label: Some(label),
        required_features: features,
        required_limits: limits,
        ..Default::default()
    };
    let (device, queue) = block_on(adapter.request_device(&desc)).expect(label);
    assert_eq!(device.features(), features, "{label}");
    (adapter, device, queue)
}

/// An engine on a device of its own ([`own_device`]).
pub fn engine_on_own_device(
    label: &'static str,
    pick: impl Fn(&wgpu::Adapter) -> (wgpu::Features, wgpu::Limits),
) -> Engine {
    let (adapter, device, queue) = own_device(label, pick);
    Engine::from_device(&adapter, device, queue).expect(label)
}

/// Destroys `e`'s device (fault injection) and returns once the engine has seen the loss: wgpu
/// runs the lost callback from a later poll, so on a loaded machine a call right after the
/// injection could still find the device healthy.
pub fn lose_device(e: &Engine) {
    e.inject_fault(bitnet_wgpu::InjectedFault::DeviceLost);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !e.info().device_lost && std::time::Instant::now() < deadline {
        let _ = e.sync();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(
        e.info().device_lost,
        "the injected device loss was never seen"
    );
}

/// Puts `e` under `Auto` dispatch with a cost model in which the GPU always wins (free on the
/// GPU, a second per call and per unit on the CPU): tests of what `Auto` does with a GPU route.
pub fn auto_preferring_gpu(e: &Engine, key: &str) {
    use bitnet_wgpu::{Calibration, Cost, DispatchPolicy};
    e.set_dispatch_policy(DispatchPolicy::Auto)
        .expect("a GPU engine takes every policy");
    let (fast, slow) = (
        Cost {
            fixed_s: 0.0,
            per_unit_s: 0.0,
        },
        Cost {
            fixed_s: 1.0,
            per_unit_s: 1.0,
        },
    );
    e.set_calibration(Calibration {
        key: key.into(),
        upload_bytes_per_s: 1e12,
        download_bytes_per_s: 1e12,
        cpu: [slow; 4],
        gpu: [fast; 4],
    })
    .expect("a valid model");
}

/// Whether `e`'s device can run the cooperative-matrix GEMM (`coop_ok` in the engine): the
/// features, a subgroup size of exactly 32, and room for its workgroups (threads and bytes that
/// the kernels' naga test pins to the module). Forced coop plans run exactly then.
pub fn has_coop(e: &Engine) -> bool {
    let info = e.info();
    let f = bitnet_wgpu::wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
        | bitnet_wgpu::wgpu::Features::SHADER_F16;
    info.features.contains(f)
        && info.subgroup_min_size == 32
        && info.subgroup_max_size == 32
        && info.limits.is_some_and(|l| {
            l.max_compute_invocations_per_workgroup >= bitnet::GEMM_COOP_THREADS
                && l.max_compute_workgroup_storage_size >= bitnet::GEMM_COOP_WORKGROUP_BYTES
        })
}

/// Whether `e`'s device can run the int8 cooperative-matrix GEMMs (`coop_i8_ok` in the engine):
/// [`has_coop`], passthrough shaders, and a driver that lists int8 cooperative matrices. Forced
/// int8 coop plans run exactly then.
pub fn has_coop_i8(e: &Engine) -> bool {
    let info = e.info();
    has_coop(e)
        && info.int8_cooperative_matrices
        && info
            .features
            .contains(bitnet_wgpu::wgpu::Features::PASSTHROUGH_SHADERS)
}

/// Runs a future to completion on this thread (parks between wake-ups): the suite's executor
/// for the engine's `*_async` reads, which are woken by the engine's completion thread.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// A float tolerance: `|got - want| <= abs + rel * |want|`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute part.
    pub abs: f32,
    /// Relative part.
    pub rel: f32,
}

impl Tolerance {
    /// Bit-exact (integer outputs, and float outputs computed in the same order on both sides).
    pub const EXACT: Tolerance = Tolerance { abs: 0.0, rel: 0.0 };

    /// Whether `got` is within tolerance of `want` (NaN never is; equal infinities are).
    pub fn accepts(&self, got: f32, want: f32) -> bool {
        if got == want {
            return true;
        }
        (got - want).abs() <= self.abs + self.rel * want.abs()
    }

    /// Panics naming the first element out of tolerance (and the op) if any.
    pub fn assert_close(&self, op: &str, got: &[f32], want: &[f32]) {
        assert_eq!(
            got.len(),
            want.len(),
            "{op}: length {} vs {}",
            got.len(),
            want.len()
        );
        if let Some(i) = (0..got.len()).find(|&i| !self.accepts(got[i], want[i])) {
            panic!(
                "{op}: element {i}: got {} want {} (|diff| {} > tolerance {self:?})",
                got[i],
                want[i],
                (got[i] - want[i]).abs()
            );
        }
    }
}

/// The one table of per-op float tolerances of the cross-check suite (GPU vs cpu-ref). Integer
/// outputs (quantized weights/activations, BitLinear accumulators) are always compared exactly.
/// An op missing here is a test bug: [`tolerance`] panics.
pub const TOLERANCES: &[(&str, Tolerance)] = &[
    // Infrastructure: pure data movement.
    ("copy", Tolerance::EXACT),
    ("fill", Tolerance::EXACT),
    // BitLinear: exact i32 accumulation, then the multiplication-only epilogue of layout.rs.
    ("bitlinear", Tolerance::EXACT),
    ("quantize_weights", Tolerance::EXACT),
    ("quantize_activations", Tolerance::EXACT),
    // Matmul: cpu-ref's order (chunks of 64 k, each k ascending, then the chunks' sums in
    // order), each product rounded before its sum (pinned against fma contraction), so the f32
    // results are exact. The f16 form rounds each f32 result once
    // to f16, and WGSL lets that conversion take either neighbour: one f16 ulp (measured on
    // lavapipe: bit-exact, K up to 100 000, subnormal and 65504-boundary results included).
    ("matmul_f32", Tolerance::EXACT),
    (
        "matmul_f16",
        Tolerance {
            abs: 6e-8,
            rel: 9.8e-4,
        },
    ),
    ("elementwise", Tolerance::EXACT),
    (
        "unary",
        Tolerance {
            abs: 1e-6,
            rel: 2e-6,
        },
    ),
    // Sums: cpu-ref's lane folds and tree, additions only (nothing a driver may contract), and
    // Mean's division correctly rounded: exact (measured on lavapipe, rows to 100 000 values).
    ("reduce_sum", Tolerance::EXACT),
    ("reduce_max", Tolerance::EXACT),
    // RMSNorm: cpu-ref's lane order and tree, correctly rounded divisions and square root.
    ("rms_norm", Tolerance::EXACT),
    (
        "softmax",
        Tolerance {
            abs: 1e-7,
            rel: 1e-5,
        },
    ),
    // RoPE: the GPU's cos/sin (angle reduced mod 2π to ~1.3e-7, then polynomials within 8e-8) vs
    // cpu-ref's f64 cos/sin rounded to f32: each output is off by at most ~2.5e-7 · max|x|, an
    // absolute error that does not shrink with the output (x0·c − x1·s cancels). The suite feeds
    // |x| ≤ 4, hence abs 2e-6 (measured on lavapipe: 1.2e-6 at positions up to 1e5; cos and sin
    // within 1.8e-7 of cpu-ref's at any u32 position).
    (
        "rope",
        Tolerance {
            abs: 2e-6,
            rel: 1e-5,
        },
    ),
    // Attention: the GPU follows cpu-ref's order of operations (chunks of 256 keys, lane-tree
    // sums, in-order merge, correctly rounded division) except for reassociated dot products and
    // weighted sums, and the decode and tiled kernels' running maxima (a weight rescaled once or
    // twice), so exp (range-reduced, ~1 ulp vs libm), those roundings and fused multiply-adds a
    // driver may form differ: each weight is off by a few parts in 1e7, and the output, a weighted average of
    // values, by that times max|v|, an absolute error that does not shrink with the output (it
    // may cancel to near 0). The suite feeds |v| <= 4, hence abs 3e-6 (measured on lavapipe:
    // 7.2e-7 at most, over decode to 4096 keys, prefill to 512, D from 1 to 300).
    (
        "attention",
        Tolerance {
            abs: 3e-6,
            rel: 1e-5,
        },
    ),
];

/// The tolerance of `op` from [`TOLERANCES`]; panics for an unknown op.
pub fn tolerance(op: &str) -> Tolerance {
    TOLERANCES
        .iter()
        .find(|(name, _)| *name == op)
        .map(|&(_, t)| t)
        .unwrap_or_else(|| panic!("no tolerance stated for op `{op}`: add it to TOLERANCES"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_stream() {
        // Reference values of splitmix64 seeded with 0 (Vigna's splitmix64.c).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn generators_are_deterministic_and_in_range() {
        assert_eq!(random_f32(7, 100, -1.0, 1.0), random_f32(7, 100, -1.0, 1.0));
        assert!(
            random_f32(7, 1000, -1.0, 1.0)
                .iter()
                .all(|v| (-1.0..1.0).contains(v))
        );
        let t = random_ternary(3, 3000);
        for v in [-1, 0, 1] {
            assert!(t.iter().filter(|&&x| x == v).count() > 800);
        }
    }

    #[test]
    fn tolerance_table_is_consulted() {
        assert!(tolerance("copy").accepts(1.0, 1.0));
        assert!(!tolerance("copy").accepts(1.0, 1.0 + f32::EPSILON));
        assert!(tolerance("softmax").accepts(1.000005, 1.0));
        assert!(!tolerance("matmul_f32").accepts(1.0 + f32::EPSILON, 1.0));
    }
}

/// The README's embedding example, compiled and run as a doctest so it cannot rot.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
