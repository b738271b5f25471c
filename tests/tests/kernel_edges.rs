//! Edge cases of the register-resident WGSL kernels against cpu-ref, through the public API:
//! - `act_quant.wgsl` (K % 4 != 0) and `act_quant_vec4.wgsl` (K % 4 == 0), on both sides of
//!   the register limit (rows of up to 16384 values are quantized from registers, longer rows
//!   take the fallback loops): NaN / +Inf / -Inf at late indices (the last element, the last
//!   register slot of a thread, the first value past the register limit) give cpu-ref's error
//!   (same op, tensor and flat index, also in row 2 of 3 rows); finite rows give bit-identical
//!   values and scales.
//! - `bitlinear_gemv_batch_subgroup.wgsl` (the default plan for M = 2..8 f32 rows, K % 64 == 0)
//!   with x in one K tile and in several: non-finite values in later rows / K positions give
//!   cpu-ref's error, finite rows bit-identical outputs.
//! - `exact_div_127.wgsl`: bit-identical to `exact_div(127.0, a)` (`exact_div.wgsl`) on the GPU,
//!   through a small compute kernel built from the two snippet files: every significand at the
//!   fast path's edge exponents (6, 254), at 1 <= a < 2 and in the fallback (exponents 0, 5,
//!   255: subnormals, tiny a, infinity and NaNs), every 13th significand at every exponent, edge
//!   and random significands at every exponent with both signs, 1e-5 (the activation floor),
//!   zeros and random bit patterns (for positive non-NaN `a` also equal to the host's IEEE
//!   `127.0 / a`); and, with the f32 estimate or the float correction step perturbed, the
//!   integer correction steps that IEEE division (lavapipe) never needs.

use std::sync::OnceLock;

use bitnet_tests::{Rng, block_on, gpu_engine, random_normal};
use bitnet_wgpu::cpu_ref::{self, QuantizedActivations, TernaryMatrix};
use bitnet_wgpu::{BitnetTuning, Engine, Error, LinearPlan, wgpu};

const BADS: [f32; 3] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];

/// The error of a call that must fail, else a panic (without printing the result).
fn err_of<T>(r: Result<T, Error>, who: &str, ctx: &str) -> Error {
    match r {
        Err(e) => e,
        Ok(_) => panic!("{ctx}: {who} gave a result, not an error"),
    }
}

/// The engine in `cell`, made once with `tuning` and autotune off (the untuned plans on every
/// adapter).
fn tuned(cell: &'static OnceLock<Engine>, tuning: BitnetTuning) -> &'static Engine {
    cell.get_or_init(|| {
        let e = gpu_engine();
        e.set_bitnet_tuning(BitnetTuning {
            autotune: Some(false),
            ..tuning
        });
        e
    })
}

/// The default GPU engine, autotune off (the untuned default plans on every adapter).
fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    tuned(&E, BitnetTuning::default())
}

fn has_subgroups() -> bool {
    engine().info().features.contains(wgpu::Features::SUBGROUP)
}

// ---------------------------------------------------------------------------------------------
// Activation quantization.

/// Values and absmax bits equal, else a panic naming the first difference.
fn assert_acts_eq(got: &QuantizedActivations, want: &QuantizedActivations, ctx: &str) {
    assert_eq!((got.m(), got.k()), (want.m(), want.k()), "{ctx}: shape");
    for (r, (g, w)) in got.absmax().iter().zip(want.absmax()).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{ctx}: row {r} absmax {g:e} vs cpu-ref {w:e}"
        );
    }
    if let Some(i) = (0..want.values().len()).find(|&i| got.values()[i] != want.values()[i]) {
        panic!(
            "{ctx}: value {i} (row {}, k {}) is {} vs cpu-ref {}",
            i / want.k(),
            i % want.k(),
            got.values()[i],
            want.values()[i]
        );
    }
}

/// Late indices of a row of `k` values for the act_quant kernels: the last element and its
/// neighbours, the first and last value of thread 0's last register slot (word 256 u of the row,
/// u the last slot holding values), a value in slot 15 (words 3840..4095), the last value held
/// in registers (16383) and the first one past them (16384, fallback rows only).
fn late_positions(k: usize) -> Vec<usize> {
    let words = k.div_ceil(4);
    let last_slot_word = 256 * ((words - 1) / 256);
    let mut p = vec![
        k - 1,
        k - 2,
        k - 5,
        4 * last_slot_word,
        4 * last_slot_word + 3,
        4 * (3840 + 129) + 2,
        16383,
        16384,
        k / 2 + 1,
    ];
    p.retain(|&i| i < k);
    p.sort_unstable();
    p.dedup();
    p
}

/// One row length through one act_quant kernel: every late position with every bad value, at
/// M = 1 and in row 2 of M = 3 (plus two bad values, the first one in row 1); then finite rows
/// with the maximum at late positions, and one row below the 1e-5 floor.
fn check_act_quant_row_length(k: usize) {
    let e = engine();
    let quant = |x: &[f32], m: usize| {
        (
            e.quantize_activations(x, m, k),
            cpu_ref::quantize_activations(x, m, k).map_err(Error::from),
        )
    };
    for (pi, &pos) in late_positions(k).iter().enumerate() {
        for (bi, &bad) in BADS.iter().enumerate() {
            let seed = (k * 100 + pi * 3 + bi) as u64;
            for m in [1usize, 3] {
                let ctx = format!("act_quant K {k} M {m}: {bad} at row {} k {pos}", m - 1);
                let mut x = random_normal(seed, m * k, 1.0);
                x[(m - 1) * k + pos] = bad;
                let (got, want) = quant(&x, m);
                let want = err_of(want, "cpu-ref", &ctx);
                assert_eq!(err_of(got, "the GPU", &ctx), want, "{ctx}");
            }
        }
    }
    // Two bad values: row 1's last element comes first in flat order.
    let mut x = random_normal(k as u64, 3 * k, 1.0);
    x[2 * k] = f32::NAN;
    x[k + k - 1] = f32::INFINITY;
    let ctx = format!("act_quant K {k}: two bad values");
    let (got, want) = quant(&x, 3);
    let want = err_of(want, "cpu-ref", &ctx);
    assert!(
        matches!(want, Error::NonFinite { index, .. } if index == 2 * k - 1),
        "{ctx}: {want:?}"
    );
    assert_eq!(err_of(got, "the GPU", &ctx), want, "{ctx}");

    // Finite rows, bit-identical: the maximum at each late position (negative in even rows, so
    // the sign is cleared, positive in odd ones), the rest random; one row entirely below the
    // 1e-5 floor.
    let positions = late_positions(k);
    let m = positions.len() + 1;
    let mut x = random_normal(k as u64 + 7, m * k, 1.0);
    for (r, &pos) in positions.iter().enumerate() {
        x[r * k + pos] = if r % 2 == 0 { -9.75 } else { 9.75 } - r as f32 * 0.5;
    }
    for v in &mut x[(m - 1) * k..] {
        *v *= 1e-7;
    }
    let ctx = format!("act_quant K {k} M {m}: finite");
    let (got, want) = quant(&x, m);
    assert_acts_eq(
        &got.unwrap_or_else(|err| panic!("{ctx}: {err}")),
        &want.unwrap(),
        &ctx,
    );
    // The engine stays usable after the errors: a plain random row.
    let x = random_normal(k as u64 + 9, k, 3.0);
    let (got, want) = quant(&x, 1);
    assert_acts_eq(
        &got.unwrap(),
        &want.unwrap(),
        &format!("act_quant K {k}: after"),
    );
}

#[test]
fn act_quant_generic_late_indices_and_register_limit() {
    // K % 4 != 0: act_quant.wgsl. Registers hold rows of up to 4096 packed words (K <= 16383
    // here); 16385 and 20003 take the fallback loops.
    for k in [5003, 16381, 16383, 16385, 20003] {
        check_act_quant_row_length(k);
    }
}

#[test]
fn act_quant_vec4_late_indices_and_register_limit() {
    // K % 4 == 0: act_quant_vec4.wgsl. 16384 fills the registers exactly; 16388 (one padded
    // word group past them) and 20000 take the fallback loops.
    for k in [5004, 16384, 16388, 20000] {
        check_act_quant_row_length(k);
    }
}

// ---------------------------------------------------------------------------------------------
// Batched fused GEMV.

/// Values per K tile of the batched GEMV for `m` rows (`GEMV_BATCH_TILE_VEC4 / (4 m)` steps of 64).
fn batch_tile(m: usize) -> usize {
    64 * (896 / (4 * m))
}

/// Shapes (M, K) with x in one K tile, and with x over several.
const ONE_TILE: [(usize, usize); 5] = [(2, 256), (3, 2560), (4, 2560), (4, 3584), (2, 7168)];
const MULTI_TILE: [(usize, usize); 4] = [(8, 6912), (3, 6912), (6, 6912), (8, 1856)];
const BATCH_N: usize = 37;

fn batch_weights(k: usize) -> TernaryMatrix {
    cpu_ref::quantize_weights(&random_normal(k as u64, BATCH_N * k, 0.02), BATCH_N, k).unwrap()
}

/// The engine with the batched GEMV forced for M ≤ 8 (the default runs the fused GEMV).
fn batch_engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    let batch = BitnetTuning {
        batch_gemv: Some(true),
        ..Default::default()
    };
    tuned(&E, batch)
}

/// The GPU results of one call.
type GpuRuns = Vec<(&'static str, Result<Vec<f32>, Error>)>;

/// BitLinear on f32 x through both M ≤ 8 GEMVs that quantize in the kernel — the fused GEMV (one
/// workgroup per row block and row, the default plan) and the batched GEMV (forced) — asserting
/// each ran (on adapters with subgroups; they need them), and cpu-ref's result.
fn batch_run(x: &[f32], m: usize, w: &TernaryMatrix) -> (GpuRuns, Result<Vec<f32>, Error>) {
    let mut runs = Vec::new();
    for (name, e) in [("fused GEMV", engine()), ("batched GEMV", batch_engine())] {
        runs.push((name, e.bitlinear(x, m, w)));
        if has_subgroups() {
            let plan = e.bitlinear_plan(m, w.n(), w.k(), true);
            let ran = match name {
                "fused GEMV" => matches!(plan, Some(LinearPlan::Fused { .. })),
                _ => matches!(plan, Some(LinearPlan::Batch { .. })),
            };
            assert!(ran, "M {m} K {}: plan {plan:?}, want the {name}", w.k());
        }
    }
    (runs, cpu_ref::bitlinear(x, m, w).map_err(Error::from))
}

/// Late K positions of a row for the batched GEMV: the last element and the first element of
/// the last vec4, the last x word of a thread's last register slot (words 256 u), the first
/// value of the last tile and one inside it.
fn batch_positions(m: usize, k: usize) -> Vec<usize> {
    let words = k / 4;
    let tile = batch_tile(m);
    let last_tile = tile * ((k - 1) / tile);
    let mut p = vec![
        k - 1,
        k - 4,
        k - 3,
        4 * (256 * ((words - 1) / 256)) + 1,
        last_tile,
        last_tile + (k - last_tile) / 2 + 2,
    ];
    p.retain(|&i| i < k);
    p.sort_unstable();
    p.dedup();
    p
}

fn batch_non_finite(shapes: &[(usize, usize)], one_tile: bool) {
    for &(m, k) in shapes {
        assert_eq!(k <= batch_tile(m), one_tile, "M {m} K {k}: tile count");
        let w = batch_weights(k);
        for (pi, &pos) in batch_positions(m, k).iter().enumerate() {
            for (bi, &bad) in BADS.iter().enumerate() {
                // The last row, and (rotating) row 1: a bad value in a later row.
                let row = if (pi + bi) % 2 == 0 { m - 1 } else { 1 };
                let ctx = format!("batch M {m} K {k}: {bad} at row {row} k {pos}");
                let mut x = random_normal((m * k + pi * 3 + bi) as u64, m * k, 1.0);
                x[row * k + pos] = bad;
                let (runs, want) = batch_run(&x, m, &w);
                let want = err_of(want, "cpu-ref", &ctx);
                for (name, got) in runs {
                    assert_eq!(err_of(got, name, &ctx), want, "{ctx}: {name}");
                }
            }
        }
        // Two bad values: the last row's first element, and before it (reported) the last
        // element of the row above.
        let mut x = random_normal((m * k) as u64, m * k, 1.0);
        x[(m - 1) * k] = f32::NEG_INFINITY;
        x[(m - 1) * k - 1] = f32::NAN;
        let ctx = format!("batch M {m} K {k}: two bad values");
        let (runs, want) = batch_run(&x, m, &w);
        let want = err_of(want, "cpu-ref", &ctx);
        assert!(
            matches!(want, Error::NonFinite { index, .. } if index == (m - 1) * k - 1),
            "{ctx}: {want:?}"
        );
        for (name, got) in runs {
            assert_eq!(err_of(got, name, &ctx), want, "{ctx}: {name}");
        }
    }
}

fn batch_finite(shapes: &[(usize, usize)]) {
    for &(m, k) in shapes {
        let w = batch_weights(k);
        let positions = batch_positions(m, k);
        let mut x = random_normal((m * k) as u64 + 1, m * k, 1.5);
        // Row r's maximum (negative in even rows, positive in odd ones) at a late position, the
        // latest in row 0; from M = 3 on, the last row below the 1e-5 floor.
        for r in 0..m {
            let top = if r % 2 == 0 { -11.5 } else { 11.5 } + r as f32;
            x[r * k + positions[positions.len() - 1 - r % positions.len()]] = top;
        }
        if m >= 3 {
            for v in &mut x[(m - 1) * k..] {
                *v *= 1e-7;
            }
        }
        let ctx = format!("batch M {m} K {k}: finite");
        let (runs, want) = batch_run(&x, m, &w);
        let want = want.unwrap();
        for (name, got) in runs {
            let got = got.unwrap_or_else(|e| panic!("{ctx}: {name}: {e}"));
            assert_eq!(got.len(), want.len(), "{ctx}: {name}");
            if let Some(i) = (0..want.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
                panic!(
                    "{ctx}: {name}: y[{i}] is {:e} vs cpu-ref {:e}",
                    got[i], want[i]
                );
            }
        }
    }
}

#[test]
fn batch_gemv_one_tile_non_finite() {
    batch_non_finite(&ONE_TILE, true);
}

#[test]
fn batch_gemv_multi_tile_non_finite() {
    batch_non_finite(&MULTI_TILE, false);
}

#[test]
fn batch_gemv_finite_bit_exact() {
    batch_finite(&ONE_TILE);
    batch_finite(&MULTI_TILE);
}

// ---------------------------------------------------------------------------------------------
// exact_div_127 vs exact_div(127, a), on the GPU.

const EXACT_DIV: &str = include_str!("../../kernels-wgsl/shaders/exact_div.wgsl");
const EXACT_DIV_127: &str = include_str!("../../kernels-wgsl/shaders/exact_div_127.wgsl");

/// `sweep`: a = bits `base + i * stride` for i < count, compared on the GPU (mismatch count and
/// the first mismatching i). `list`: a = `inputs[i]`, both results written out.
const DIV_TEST: &str = r"
struct DivParams {
    base: u32,
    stride: u32,
    count: u32,
    row: u32,
}

@group(0) @binding(0) var<uniform> dp: DivParams;
@group(0) @binding(1) var<storage, read> inputs: array<u32>;
@group(0) @binding(2) var<storage, read_write> results: array<u32>;
@group(0) @binding(3) var<storage, read_write> stats: array<atomic<u32>, 2>;

fn div_index(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * dp.row;
}

@compute @workgroup_size(256)
fn sweep(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = div_index(gid);
    if (i >= dp.count) {
        return;
    }
    let a = bitcast<f32>(dp.base + i * dp.stride);
    let fast = bitcast<u32>(exact_div_127(a));
    let slow = bitcast<u32>(exact_div(127.0, a));
    if (fast != slow) {
        atomicAdd(&stats[0], 1u);
        atomicMin(&stats[1], i);
    }
}

@compute @workgroup_size(256)
fn list(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = div_index(gid);
    if (i >= dp.count) {
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

struct DivRig {
    device: wgpu::Device,
    queue: wgpu::Queue,
    layout: wgpu::BindGroupLayout,
    sweep: wgpu::ComputePipeline,
    list: wgpu::ComputePipeline,
    /// `sweep` on each perturbed copy of `exact_div_127`, with a description.
    perturbed: Vec<(String, wgpu::ComputePipeline)>,
}

const WG: u32 = 256;
/// Workgroups per grid row (the grid folds into y past this).
const ROW_GROUPS: u32 = 32768;

impl DivRig {
    /// A plain device on the engine's adapter, and the two pipelines.
    fn new() -> DivRig {
        let name = engine().info().adapter_name;
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = block_on(instance.enumerate_adapters(wgpu::Backends::all()))
            .into_iter()
            .find(|a| a.get_info().name == name)
            .expect("the engine's adapter is enumerable");
        let (device, queue) = block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("exact_div_127 check"),
            ..Default::default()
        }))
        .expect("device");
        let module = |source: String| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("exact_div_127 check"),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            })
        };
        let plain = module(format!("{EXACT_DIV}\n{EXACT_DIV_127}\n{DIV_TEST}"));
        let perturbed: Vec<_> = PERTURBATIONS
            .iter()
            .map(|&(line, replacement, decl, deltas)| {
                assert_eq!(
                    EXACT_DIV_127.matches(line).count(),
                    1,
                    "exact_div_127.wgsl no longer has `{line}`: update PERTURBATIONS in this test"
                );
                let copy = EXACT_DIV_127.replace(line, replacement);
                let m = module(format!("{EXACT_DIV}\n{copy}\n{decl}\n{DIV_TEST}"));
                (m, replacement, deltas)
            })
            .collect();
        let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let storage = |read_only| wgpu::BufferBindingType::Storage { read_only };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: None,
            entries: &[
                entry(0, wgpu::BufferBindingType::Uniform),
                entry(1, storage(true)),
                entry(2, storage(false)),
                entry(3, storage(false)),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: None,
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = |module: &wgpu::ShaderModule, entry_point, constants: &[(&str, f64)]| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry_point),
                layout: Some(&pipeline_layout),
                module,
                entry_point: Some(entry_point),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    ..Default::default()
                },
                cache: None,
            })
        };
        let (sweep, list) = (
            pipeline(&plain, "sweep", &[]),
            pipeline(&plain, "list", &[]),
        );
        let perturbed = perturbed
            .iter()
            .flat_map(|(m, replacement, deltas)| {
                deltas.iter().map(move |&d| {
                    let p = pipeline(m, "sweep", &[("DELTA", f64::from(d))]);
                    (format!("`{replacement}` with DELTA = {d}"), p)
                })
            })
            .collect();
        DivRig {
            device,
            queue,
            layout,
            sweep,
            list,
            perturbed,
        }
    }

    fn buffer(&self, bytes: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes.max(16),
            usage,
            mapped_at_creation: false,
        })
    }

    /// Runs `pipeline` over `count` invocations; returns the stats words and `results_words`
    /// words of results.
    fn run(
        &self,
        pipeline: &wgpu::ComputePipeline,
        params: [u32; 3],
        inputs: &[u32],
        results_words: u64,
    ) -> (Vec<u32>, Vec<u32>) {
        use wgpu::BufferUsages as U;
        let count = params[2];
        let groups = count.div_ceil(WG);
        let (gx, gy) = (groups.min(ROW_GROUPS), groups.div_ceil(ROW_GROUPS));
        let uniform: Vec<u8> = [params[0], params[1], count, gx * WG]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let p = self.buffer(16, U::UNIFORM | U::COPY_DST);
        self.queue.write_buffer(&p, 0, &uniform);
        let input = self.buffer(4 * inputs.len() as u64, U::STORAGE | U::COPY_DST);
        if !inputs.is_empty() {
            let bytes: Vec<u8> = inputs.iter().flat_map(|w| w.to_le_bytes()).collect();
            self.queue.write_buffer(&input, 0, &bytes);
        }
        let results = self.buffer(4 * results_words, U::STORAGE | U::COPY_SRC);
        let stats = self.buffer(8, U::STORAGE | U::COPY_DST | U::COPY_SRC);
        self.queue
            .write_buffer(&stats, 0, &[0u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        let read = self.buffer(4 * (2 + results_words), U::MAP_READ | U::COPY_DST);
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: p.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: input.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: results.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: stats.as_entire_binding(),
                },
            ],
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(gx, gy, 1);
        }
        encoder.copy_buffer_to_buffer(&stats, 0, &read, 0, 8);
        if results_words > 0 {
            encoder.copy_buffer_to_buffer(&results, 0, &read, 8, 4 * results_words);
        }
        self.queue.submit([encoder.finish()]);
        let slice = read.slice(..);
        slice.map_async(wgpu::MapMode::Read, |r| r.expect("map"));
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("poll");
        let words: Vec<u32> = slice
            .get_mapped_range()
            .expect("mapped range")
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (words[..2].to_vec(), words[2..].to_vec())
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
        let (stats, _) = self.run(pipeline, [base, stride, count], &[], 0);
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
        let (_, r) = self.run(&self.list, [0, 0, n], inputs, 2 * u64::from(n));
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
