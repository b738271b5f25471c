//! Crate-internal GPU tests of the launch helper and pipeline cache: typed errors for broken
//! shaders, misuse, oversized bindings and grids, and both params modes.

use bitnet_kernels_wgsl::KernelSource;

use crate::engine::{Engine, EngineOptions};
use crate::error::Error;
use crate::launch::Launch;
use crate::pipelines::{Access, Kernel};
use crate::tensor::DType;

fn gpu(options: EngineOptions) -> Engine {
    crate::test_gpu::gpu_with(options)
}

const BROKEN: Kernel = Kernel::new(
    KernelSource {
        name: "test_broken",
        source: "@compute @workgroup_size(1) fn main( {",
    },
    "main",
    &[],
);
const FILL: Kernel = Kernel::new(
    bitnet_kernels_wgsl::util::FILL,
    "main",
    &[Access::ReadWrite],
);
const COPY: Kernel = Kernel::new(
    bitnet_kernels_wgsl::util::COPY,
    "main",
    &[Access::Read, Access::ReadWrite],
);

#[test]
fn broken_shader_is_a_pipeline_creation_error() {
    let e = gpu(EngineOptions::default());
    let g = e.gpu_context().unwrap();
    for _ in 0..2 {
        match Launch::new(g, &BROKEN).workgroups(1).run() {
            Err(Error::PipelineCreation {
                kernel: "test_broken",
                entry: "main",
                message,
            }) => {
                assert!(!message.is_empty())
            }
            other => panic!("expected PipelineCreation, got {other:?}"),
        }
    }
    let missing_entry = Kernel {
        entry: "no_such_entry",
        ..FILL
    };
    let t = e
        .empty(e.gpu_raw().unwrap(), "t", &[4], DType::F32)
        .unwrap();
    let r = Launch::new(g, &missing_entry)
        .output(&t)
        .workgroups(1)
        .run();
    assert!(
        matches!(
            r,
            Err(Error::PipelineCreation {
                entry: "no_such_entry",
                ..
            })
        ),
        "{r:?}"
    );
    // The engine is still healthy afterwards.
    e.sync().unwrap();
}

#[test]
fn misuse_is_reported_not_panicked() {
    let e = gpu(EngineOptions::default());
    let g = e.gpu_context().unwrap();
    let t = e
        .empty(e.gpu_raw().unwrap(), "t", &[64], DType::F32)
        .unwrap();
    let r = Launch::new(g, &COPY).input(&t).workgroups(1).run();
    assert!(matches!(r, Err(Error::KernelMisuse { .. })), "{r:?}");
    let r = Launch::new(g, &COPY)
        .output(&t)
        .output(&t)
        .workgroups(1)
        .run();
    assert!(
        matches!(r, Err(Error::KernelMisuse { .. })),
        "written Read slot: {r:?}"
    );
    let r = Launch::new(g, &FILL).output(&t).run();
    assert!(
        matches!(r, Err(Error::KernelMisuse { .. })),
        "no grid: {r:?}"
    );
    let r = Launch::new(g, &FILL)
        .output(&t)
        .params(&[0u32; 40])
        .workgroups(1)
        .run();
    assert!(
        matches!(r, Err(Error::KernelMisuse { .. })),
        "params > 128 bytes: {r:?}"
    );
    let r = Launch::new(g, &FILL)
        .output_range(&t, 4, 16)
        .workgroups(1)
        .run();
    assert!(
        matches!(r, Err(Error::KernelMisuse { .. })),
        "unaligned offset: {r:?}"
    );
    let max = g.caps.limits.max_compute_workgroups_per_dimension;
    let r = Launch::new(g, &FILL).output(&t).grid([max + 1, 1, 1]).run();
    assert!(
        matches!(
            r,
            Err(Error::LimitExceeded {
                limit: "max_compute_workgroups_per_dimension",
                ..
            })
        ),
        "{r:?}"
    );
    let other = gpu(EngineOptions::default());
    let r = Launch::new(other.gpu_context().unwrap(), &FILL)
        .output(&t)
        .workgroups(1)
        .run();
    assert!(matches!(r, Err(Error::EngineMismatch { .. })), "{r:?}");
}

#[test]
fn oversized_binding_names_the_limit() {
    let e = gpu(EngineOptions {
        max_binding_bytes: Some(1024),
        ..EngineOptions::default()
    });
    let g = e.gpu_context().unwrap();
    let t = e
        .empty(e.gpu_raw().unwrap(), "t", &[1000], DType::F32)
        .unwrap();
    match Launch::new(g, &FILL).output(&t).workgroups(4).run() {
        Err(Error::LimitExceeded {
            limit: "max_storage_buffer_binding_size",
            requested: 4000,
            max: 1024,
            ..
        }) => {}
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}

#[test]
fn both_params_modes_run_the_same_kernel() {
    for force_uniform_params in [false, true] {
        let e = gpu(EngineOptions {
            force_uniform_params,
            ..EngineOptions::default()
        });
        let g = e.gpu_context().unwrap();
        let t = e
            .empty(e.gpu_raw().unwrap(), "t", &[300], DType::U32)
            .unwrap();
        Launch::new(g, &FILL)
            .output(&t)
            .params(&[300u32, 0xDEAD_BEEF])
            .workgroups(2)
            .run()
            .unwrap();
        assert_eq!(
            t.read_u32().unwrap(),
            vec![0xDEAD_BEEF; 300],
            "{:?}",
            g.caps.params_mode
        );
    }
}

#[test]
fn outputs_of_a_failed_batch_are_never_read_as_data() {
    // Deterministic batching: y must still be pending when its input is destroyed.
    let e = gpu(EngineOptions {
        idle_flush: None,
        ..EngineOptions::default()
    });
    let x = e.upload_f32(&[1.0; 64], &[64]).unwrap();
    let clean = e.copy(&x).unwrap();
    clean.read_f32().unwrap();
    let y = e.copy(&x).unwrap(); // recorded, not submitted
    // Destroying the input's buffer now makes the pending submission fail validation.
    let crate::tensor::Storage::Device(b) = x.data() else {
        unreachable!()
    };
    b.buffer().destroy();
    let err = y.read_f32().unwrap_err();
    assert!(matches!(err, Error::Validation { .. }), "{err:?}");
    // Reading again, or computing from y, reports the failure instead of stale bytes.
    assert_eq!(y.read_f32().unwrap_err(), err);
    assert_eq!(e.copy(&y).unwrap_err(), err);
    // Unrelated work still runs.
    let z = e.upload_f32(&[2.0; 3], &[3]).unwrap();
    assert_eq!(e.copy(&z).unwrap().read_f32().unwrap(), vec![2.0; 3]);
    // (The destroyed buffer must not go back to a pool that is used again: drop the engine.)
    drop((x, y, clean, z, e));
}

const OVERRIDE: Kernel = Kernel::new(
    KernelSource {
        name: "test_override",
        source: "override VALUE: u32 = 1u;\n\
                 @group(0) @binding(0) var<storage, read_write> out: array<u32>;\n\
                 @compute @workgroup_size(1) fn main() { out[0] = VALUE; }",
    },
    "main",
    &[Access::ReadWrite],
);

#[test]
fn override_constants_are_part_of_the_cache_key() {
    let e = gpu(EngineOptions::default());
    let g = e.gpu_context().unwrap();
    let before = e.pipeline_stats().compiled;
    for v in [7.0, 9.0, 7.0] {
        let t = e
            .empty(e.gpu_raw().unwrap(), "t", &[1], DType::U32)
            .unwrap();
        Launch::new(g, &OVERRIDE)
            .output(&t)
            .constant("VALUE", v)
            .workgroups(1)
            .run()
            .unwrap();
        assert_eq!(t.read_u32().unwrap(), vec![v as u32]);
    }
    assert_eq!(
        e.pipeline_stats().compiled,
        before + 2,
        "one pipeline per constant value"
    );
}

/// `sync` waits for every earlier submission, also when its own flush finds nothing pending (a
/// batch submitted before it — full, idle-flushed or by a read — may still be running).
#[test]
fn sync_waits_for_batches_flushed_before_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    // Sleeping waits (lavapipe's default) and spinning ones (GPUs' default; `wait.rs`).
    for spin_wait in [None, Some(std::time::Duration::from_millis(50))] {
        let e = gpu(EngineOptions {
            idle_flush: None,
            spin_wait,
            ..EngineOptions::default()
        });
        let g = e.gpu_context().unwrap();
        let x = e.upload_f32(&vec![0.5; 512 * 512], &[512, 512]).unwrap();
        e.sync().unwrap();
        // Enough work that lavapipe is still running it when the flush returns.
        let outs: Vec<_> = (0..8).map(|_| e.matmul(&x, &x).unwrap()).collect();
        g.scheduler.call(|b, g| b.flush(g)).unwrap().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        g.queue
            .on_submitted_work_done(move || flag.store(true, Ordering::SeqCst));
        e.sync().unwrap();
        assert!(
            done.load(Ordering::SeqCst),
            "sync returned before the flushed batch finished ({spin_wait:?})"
        );
        assert_eq!(outs[7].read_f32().unwrap()[0], 0.25 * 512.0);
    }
}

/// `Tensor::check` waits for the launches its tensor depends on, unchecked ones included (they
/// resolve when submitted, not when finished).
#[test]
fn check_waits_for_unchecked_launches() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let e = gpu(EngineOptions {
        idle_flush: None,
        ..EngineOptions::default()
    });
    let g = e.gpu_context().unwrap();
    // Long enough on lavapipe that an early return is seen: 16 Mi floats.
    let y = e.fill(&[16 << 20], 1.0).unwrap();
    y.check().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&done);
    g.queue
        .on_submitted_work_done(move || flag.store(true, Ordering::SeqCst));
    // One non-blocking poll: the callback runs now only if the fill already finished.
    let _ = g.device.poll(wgpu::PollType::Poll);
    assert!(
        done.load(Ordering::SeqCst),
        "check returned before the fill finished"
    );
}

/// A kernel that counts the runs of every workgroup of a linear grid.
const COUNT_WORKGROUPS: Kernel = Kernel::new(
    KernelSource {
        name: "test_count_workgroups",
        source: "struct Params { n: u32 }
@group(0) @binding(0) var<storage, read_write> hits: array<atomic<u32>>;
@group(1) @binding(0) var<uniform> params: Params;
@compute @workgroup_size(1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = wid.x + wid.y * nwg.x;
    if (i < params.n) { atomicAdd(&hits[i], 1u); }
}",
    },
    "main",
    &[Access::ReadWrite],
);

/// More workgroups than `max_compute_workgroups_per_dimension`: the launch folds them into x
/// and y, and every workgroup of the linear grid runs exactly once.
#[test]
fn folded_grids_run_every_workgroup_once() {
    let e = gpu(EngineOptions::default());
    let g = e.gpu_context().unwrap();
    let n = g.caps.limits.max_compute_workgroups_per_dimension as usize + 2;
    let hits = e
        .empty(e.gpu_raw().unwrap(), "hits", &[n], DType::U32)
        .unwrap();
    Launch::new(g, &FILL)
        .output(&hits)
        .params(&[n as u32, 0])
        .workgroups(n.div_ceil(1024) as u64)
        .run()
        .unwrap();
    Launch::new(g, &COUNT_WORKGROUPS)
        .output(&hits)
        .params(&[n as u32])
        .workgroups(n as u64)
        .run()
        .unwrap();
    let counts = hits.read_u32().unwrap();
    assert_eq!(counts.iter().position(|&c| c != 1), None);
}

/// A binding range whose end passes u64 is misuse, never wrapped into a range that fits.
#[test]
fn a_binding_range_past_u64_is_misuse() {
    let e = gpu(EngineOptions::default());
    let g = e.gpu_context().unwrap();
    let t = e
        .empty(e.gpu_raw().unwrap(), "t", &[64], DType::F32)
        .unwrap();
    let align = u64::from(g.caps.limits.min_storage_buffer_offset_alignment);
    let offset = u64::MAX - (align - 1);
    let r = Launch::new(g, &FILL)
        .output_range(&t, offset, align)
        .workgroups(1)
        .run();
    assert!(
        matches!(r, Err(Error::KernelMisuse { .. })),
        "range end past u64: {r:?}"
    );
}

/// A binding range ending one word past its buffer is misuse, caught before wgpu sees it.
#[test]
fn a_binding_range_one_word_past_the_buffer_is_misuse() {
    let e = gpu(EngineOptions::default());
    let g = e.gpu_context().unwrap();
    let t = e.empty(g, "t", &[64], DType::F32).unwrap();
    let r = Launch::new(g, &FILL)
        .output_range(&t, 0, 256 + 4)
        .workgroups(1)
        .run();
    assert!(matches!(r, Err(Error::KernelMisuse { .. })), "{r:?}");
}

/// A scratch binding is written but is no output: it takes no lineage node (a long-lived scratch
/// buffer, never read, would otherwise collect one per launch), where an output does.
#[test]
fn a_scratch_binding_takes_no_lineage() {
    let e = gpu(EngineOptions::default());
    let g = e.gpu_context().unwrap();
    let [x, s, y] = ["x", "s", "y"].map(|n| e.empty(g, n, &[64], DType::F32).unwrap());
    let launch = |l: Launch<'_>| l.workgroups(1).run().unwrap();
    launch(Launch::new(g, &COPY).input(&x).scratch(&s));
    assert!(s.lineage().is_settled());
    launch(Launch::new(g, &COPY).input(&x).output(&y));
    assert!(
        !y.lineage().is_settled(),
        "an output takes the launch's fate"
    );
}
