//! `LinearChain` (a decode step's linears as one dispatch) against cpu-ref, bit for bit: the
//! fused kernel, repeated runs (the kernel resets its own counters), the linear-by-linear path,
//! an aborted run, the CPU engine's chain from inside and outside rayon's pool; bad input and
//! other errors in `chain/errors.rs`.

use bitnet_tests::{gpu_engine, gpu_engine_with, random_f32, random_normal, until_waits_hold};
use bitnet_wgpu::cpu_ref::{self, TernaryMatrix};
use bitnet_wgpu::{
    ChainInput, DispatchPolicy, Engine, EngineOptions, Error, InjectedFault, Linear,
};
use std::sync::{Mutex, MutexGuard};

#[path = "chain/errors.rs"]
mod errors;

/// One test of this file at a time. On lavapipe a fused chain's workgroups wait for workgroups
/// that another of its worker threads runs; with two tests' devices (each with its own worker
/// threads) sharing CI's two cores, one thread could stay descheduled long enough to exhaust the
/// kernel's bounded wait. That aborts the run — correctly: it re-runs linear by linear and the
/// values still match — but fails the checks that the chain kernel ran (seen once in CI,
/// 2026-12-01, in `fused_chain_at_the_largest_and_odd_k_matches_cpu_ref`).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The fused chain again on 4-lane subgroups (lavapipe, see
/// `bitnet_tests::rerun_on_4_lane_subgroups`): its 32-lane blocks span eight subgroups there.
/// Holds this file's lock while the child runs, so no chain of this process runs beside it.
#[test]
fn fused_chains_on_4_lane_subgroups() {
    let _serial = serial();
    bitnet_tests::rerun_on_4_lane_subgroups(
        "fused_chains_on_4_lane_subgroups",
        &["fused_chain_", "the_atomic_output_chain_kernel"],
    );
}

/// A test of the chain kernel itself on a GPU-policy engine: `body` returns whether the kernel
/// ran every chain it checked (fusing stops when a run's wait gives up, see
/// `bitnet_tests::until_waits_hold`), and is tried again on a fresh engine when it did not.
fn on_fusing_engine(what: &str, make: impl Fn() -> Engine, body: impl Fn(&Engine) -> bool) {
    let make = || {
        let e = make();
        e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
        e
    };
    until_waits_hold(what, make, |e| body(e).then_some(()));
}

fn weights(n: usize, k: usize, seed: u64) -> TernaryMatrix {
    cpu_ref::quantize_weights(&random_normal(seed, n * k, 0.05), n, k).unwrap()
}

/// A two-layer miniature of a BitNet decode step (as the bench's chained stack): q, k, v read the
/// layer input; o reads q; gate and up read o; down reads gate and feeds the next layer. Row
/// counts cover partial workgroups (40, 3) and a single 4-row block.
fn layers(e: &Engine, hidden: usize, ffn: usize) -> Vec<(Linear, ChainInput)> {
    let mut links = Vec::new();
    for layer in 0..2 {
        let input = match layer {
            0 => ChainInput::Input,
            _ => ChainInput::Output(links.len() - 1),
        };
        let first = links.len();
        let seed = 10 * layer as u64;
        let l = |n, k, s| Linear::new(e, weights(n, k, seed + s));
        links.push((l(hidden, hidden, 1), input));
        links.push((l(40, hidden, 2), input));
        links.push((l(3, hidden, 3), input));
        links.push((l(hidden, hidden, 4), ChainInput::Output(first)));
        links.push((l(ffn, hidden, 5), ChainInput::Output(first + 3)));
        links.push((l(ffn, hidden, 6), ChainInput::Output(first + 3)));
        links.push((l(hidden, ffn, 7), ChainInput::Output(first + 4)));
    }
    links
}

/// cpu-ref, linear by linear.
fn reference(links: &[(Linear, ChainInput)], x: &[f32]) -> Vec<Vec<f32>> {
    let mut outs: Vec<Vec<f32>> = Vec::new();
    for (l, input) in links {
        let v = match *input {
            ChainInput::Input => x.to_vec(),
            ChainInput::Output(j) => outs[j].clone(),
        };
        outs.push(cpu_ref::bitlinear(&v, 1, l.weights()).unwrap());
    }
    outs
}

#[test]
fn fused_chain_matches_cpu_ref_run_after_run() {
    let _serial = serial();
    on_fusing_engine("run after run", gpu_engine, |e| {
        let links = layers(e, 128, 256);
        let chain = e.linear_chain(128, links.clone()).unwrap();
        for seed in 0..3 {
            let x = random_f32(100 + seed, 128, -2.0, 2.0);
            let want = reference(&links, &x);
            assert_eq!(chain.forward(&x).unwrap(), want, "run {seed}");
            let xt = e.upload_f32(&x, &[128]).unwrap();
            let outs = chain.forward_tensor(&xt).unwrap();
            assert_eq!(outs.len(), links.len());
            assert_eq!(outs.read(6).unwrap(), want[6]);
            assert_eq!(outs.read_all().unwrap(), want);
        }
        chain.is_fused()
    });
}

/// The CPU engine's chain, with linears large enough to split into rayon tasks (the chain then
/// runs from inside rayon's pool): cpu-ref's values, called from outside the pool and from one
/// of its workers; a NaN input gives cpu-ref's error on both.
#[test]
fn a_cpu_chain_of_split_linears_matches_cpu_ref_inside_and_outside_the_pool() {
    let e = Engine::cpu();
    let links = layers(&e, 512, 1536);
    // The up and down linears split.
    const { assert!(1536 * 512 >= cpu_ref::BITLINEAR_SPLIT_MACS) };
    let chain = e.linear_chain(512, links.clone()).unwrap();
    let x = random_f32(7, 512, -2.0, 2.0);
    let want = reference(&links, &x);
    assert_eq!(chain.forward(&x).unwrap(), want, "outside the pool");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    assert_eq!(
        pool.install(|| chain.forward(&x)).unwrap(),
        want,
        "on a worker"
    );
    let mut bad = x.clone();
    bad[100] = f32::NAN;
    let err = Error::from(cpu_ref::bitlinear(&bad, 1, links[0].0.weights()).unwrap_err());
    assert_eq!(chain.forward(&bad).unwrap_err(), err);
    assert_eq!(pool.install(|| chain.forward(&bad)).unwrap_err(), err);
}

/// The fused kernel at the edges of its staged row (`gf_slot`): the largest K (15360, 240 weight
/// vec4 per row, the row filling all of workgroup memory) read from the chain input and from an
/// earlier output, and an odd number of weight vec4 per row (K = 192: 3), `runs` times; whether
/// the chain kernel ran them all.
fn largest_and_odd_k_match_cpu_ref(e: &Engine, runs: u64) -> bool {
    let l = |n, k, s| Linear::new(e, weights(n, k, s));
    let links = vec![
        (l(192, 15360, 1), ChainInput::Input),
        (l(15360, 192, 2), ChainInput::Output(0)),
        (l(37, 15360, 3), ChainInput::Output(1)),
        (l(9, 192, 4), ChainInput::Output(0)),
    ];
    fused_runs_match_cpu_ref(e, &links, 300..300 + runs, 4.0)
}

/// A chain of `links` run on inputs of the given seeds, uniform in ±`range`: cpu-ref's values;
/// whether the chain kernel gave them all.
fn fused_runs_match_cpu_ref(
    e: &Engine,
    links: &[(Linear, ChainInput)],
    seeds: std::ops::Range<u64>,
    range: f32,
) -> bool {
    let k = links[0].0.weights().k();
    let chain = e.linear_chain(k, links.to_vec()).unwrap();
    for seed in seeds {
        let x = random_f32(seed, k, -range, range);
        assert_eq!(
            chain.forward(&x).unwrap(),
            reference(links, &x),
            "seed {seed}"
        );
    }
    chain.is_fused()
}

#[test]
fn fused_chain_at_the_largest_and_odd_k_matches_cpu_ref() {
    let _serial = serial();
    on_fusing_engine("largest and odd K", gpu_engine, |e| {
        largest_and_odd_k_match_cpu_ref(e, 2)
    });
}

/// The chain kernel with atomic outputs — what devices that cannot declare storage coherent run
/// (Metal before 3.2, WebGPU; elsewhere the outputs are `@coherent` and read as vec4) — forced by
/// disabling `MEMORY_DECORATION_COHERENT`: the decode layers run after run, and the largest and
/// odd K read from an earlier output (its per-value loads, clamped tail and shuffles).
#[test]
fn the_atomic_output_chain_kernel_matches_cpu_ref() {
    let _serial = serial();
    let atomic_outputs = || {
        gpu_engine_with(EngineOptions {
            disabled_features: bitnet_wgpu::wgpu::Features::MEMORY_DECORATION_COHERENT,
            ..EngineOptions::default()
        })
    };
    on_fusing_engine("atomic outputs", atomic_outputs, |e| {
        assert!(
            !e.info()
                .features
                .contains(bitnet_wgpu::wgpu::Features::MEMORY_DECORATION_COHERENT)
        );
        fused_runs_match_cpu_ref(e, &layers(e, 128, 256), 500..502, 2.0)
            && largest_and_odd_k_match_cpu_ref(e, 1)
    });
}

/// The retry of this file's tests of the chain kernel (`on_fusing_engine`): a run whose wait
/// gave up is tried again on a fresh engine, where the kernel runs.
#[test]
fn a_run_whose_wait_gave_up_is_tried_again_on_a_fresh_engine() {
    let _serial = serial();
    let attempts = std::sync::atomic::AtomicUsize::new(0);
    on_fusing_engine("retry", gpu_engine, |e| {
        if attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            e.inject_fault(InjectedFault::WaitAbort);
        }
        fused_runs_match_cpu_ref(e, &layers(e, 64, 128), 0..1, 1.0)
    });
    assert_eq!(attempts.into_inner(), 2);
}

/// ...but a chain kernel that stopped running while every wait held (here: it failed to build)
/// is a failure, not a retry.
#[test]
#[should_panic(expected = "no wait gave up")]
fn a_chain_kernel_off_for_another_reason_fails_the_retry() {
    let _serial = serial();
    on_fusing_engine("no retry", gpu_engine, |e| {
        e.inject_fault(InjectedFault::PipelineCreation);
        fused_runs_match_cpu_ref(e, &layers(e, 64, 128), 0..1, 1.0)
    });
}

/// A fault that ends fusing, injected into a chain's first run through `forward` and through
/// `forward_tensor`: that run still gives cpu-ref's values, the chain kernel is off, and later
/// runs go linear by linear with the same values.
fn turns_fusing_off(e: &Engine, fault: InjectedFault) {
    let links = layers(e, 64, 128);
    let x = random_f32(11, 64, -3.0, 3.0);
    let want = reference(&links, &x);
    let xt = e.upload_f32(&x, &[64]).unwrap();
    for tensor_api in [false, true] {
        let chain = e.linear_chain(64, links.clone()).unwrap();
        let run = || match tensor_api {
            true => chain.forward_tensor(&xt).unwrap().read_all().unwrap(),
            false => chain.forward(&x).unwrap(),
        };
        e.inject_fault(fault);
        assert_eq!(run(), want, "{fault:?}, tensor api {tensor_api}");
        assert!(!chain.is_fused(), "{fault:?} turns the chain kernel off");
        assert_eq!(run(), want, "{fault:?}, tensor api {tensor_api}");
    }
}

/// A chain kernel the driver fails to build (a pipeline-creation error, as a shader compiler
/// bug on a device whose features promise the coherent form would give).
#[test]
fn a_chain_kernel_that_fails_to_build_still_matches_cpu_ref() {
    let _serial = serial();
    let e = gpu_engine();
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    turns_fusing_off(&e, InjectedFault::PipelineCreation);
}

#[test]
fn aborted_run_and_unfusable_chains_still_match_cpu_ref() {
    let _serial = serial();
    let e = gpu_engine();
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    turns_fusing_off(&e, InjectedFault::WaitAbort);
    // K = 48 is not a multiple of 64: linear by linear from the start.
    let odd = vec![
        (Linear::new(&e, weights(48, 48, 1)), ChainInput::Input),
        (Linear::new(&e, weights(5, 48, 2)), ChainInput::Output(0)),
    ];
    let chain = e.linear_chain(48, odd.clone()).unwrap();
    let x = random_f32(12, 48, -1.0, 1.0);
    assert_eq!(chain.forward(&x).unwrap(), reference(&odd, &x));
    assert!(!chain.is_fused());
    // The CPU policy: cpu-ref, and host tensors run where they live.
    e.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
    assert_eq!(chain.forward(&x).unwrap(), reference(&odd, &x));
    let host = e.upload_f32(&x, &[48]).unwrap();
    let outs = chain.forward_tensor(&host).unwrap();
    assert_eq!(outs.read_all().unwrap(), reference(&odd, &x));
}

#[test]
fn chain_overflow_and_device_loss_match_cpu_ref() {
    let _serial = serial();
    on_fusing_engine(
        "overflow and device loss",
        gpu_engine,
        overflow_and_device_loss,
    );
}

/// [`chain_overflow_and_device_loss_match_cpu_ref`] on one engine: whether the chain kernel ran
/// where it should.
fn overflow_and_device_loss(e: &Engine) -> bool {
    // Weight scale s ≈ 40: inputs near f32::MAX overflow the rescale.
    let big = cpu_ref::quantize_weights(&random_normal(1, 64 * 64, 50.0), 64, 64).unwrap();
    let links = vec![
        (Linear::new(e, big), ChainInput::Input),
        (Linear::new(e, weights(8, 64, 2)), ChainInput::Output(0)),
    ];
    let chain = e.linear_chain(64, links.clone()).unwrap();
    // Inputs near f32::MAX: the first linear's rescale overflows; the error names its row.
    let huge: Vec<f32> = (0..64)
        .map(|i| if i % 3 == 0 { -3e38 } else { 3e38 })
        .collect();
    let want = cpu_ref::bitlinear(&huge, 1, links[0].0.weights()).unwrap_err();
    assert_eq!(chain.forward(&huge).unwrap_err(), Error::from(want.clone()));
    if !chain.is_fused() {
        return false;
    }
    // A later linear's overflow takes down neither the linears before it nor those that do not
    // read it: each read fails only where that linear does, as when run linear by linear.
    let normal = |seed| Linear::new(e, weights(8, 64, seed));
    let side = vec![
        (normal(3), ChainInput::Input),
        (links[0].0.clone(), ChainInput::Input),
        (normal(4), ChainInput::Input),
    ];
    let side_chain = e.linear_chain(64, side.clone()).unwrap();
    let outs = side_chain
        .forward_tensor(&e.upload_f32(&huge, &[64]).unwrap())
        .unwrap();
    let finite = |i: usize| cpu_ref::bitlinear(&huge, 1, side[i].0.weights()).unwrap();
    assert_eq!(outs.read(0).unwrap(), finite(0));
    assert_eq!(outs.read(1).unwrap_err(), Error::from(want.clone()));
    assert_eq!(outs.read(2).unwrap(), finite(2));
    assert_eq!(outs.read_all().unwrap_err(), Error::from(want.clone()));
    // An overflow is no reason to stop fusing (`until_waits_hold` fails the test where the
    // kernel stopped while its waits held).
    if !side_chain.is_fused() {
        return false;
    }
    // A lost device: the chain runs on the CPU from the host weights it keeps.
    let x = random_f32(21, 64, -1.0, 1.0);
    assert_eq!(chain.forward(&x).unwrap(), reference(&links, &x));
    e.inject_fault(InjectedFault::DeviceLost);
    assert_eq!(chain.forward(&x).unwrap(), reference(&links, &x));
    assert_eq!(chain.forward(&x).unwrap(), reference(&links, &x));
    true
}

#[test]
fn one_chain_shared_by_threads() {
    let _serial = serial();
    on_fusing_engine("shared by threads", gpu_engine, |e| {
        let links = layers(e, 64, 128);
        let chain = e.linear_chain(64, links.clone()).unwrap();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (chain, links) = (&chain, &links);
                s.spawn(move || {
                    for r in 0..5 {
                        let x = random_f32(1000 + 10 * t + r, 64, -2.0, 2.0);
                        assert_eq!(chain.forward(&x).unwrap(), reference(links, &x));
                    }
                });
            }
        });
        chain.is_fused()
    });
}

/// A long chain: the last workgroup to finish zeroes every counter (a finished count and an
/// output absmax per linear, plus 2) for the next run, and lavapipe ends a shader's loops after
/// 65535 iterations in all, so one thread zeroing 2 * 32802 + 2 counters stopped short and left
/// the absmax of the last linears' outputs standing. A producer near the end: on the next run,
/// with a smaller input, its consumer must take the new absmax. (The producer and its consumer
/// sit inside the last chunk of workgroups a lavapipe thread takes, so nothing waits.)
#[test]
fn long_chain_resets_every_counter_between_runs() {
    let _serial = serial();
    on_fusing_engine("long chain", gpu_engine, |e| {
        let filler = (Linear::new(e, weights(1, 64, 1)), ChainInput::Input);
        let mut links = vec![filler.clone(); 32790];
        let producer = links.len();
        links.push((Linear::new(e, weights(64, 64, 2)), ChainInput::Input));
        links.push((
            Linear::new(e, weights(8, 64, 3)),
            ChainInput::Output(producer),
        ));
        links.extend(std::iter::repeat_n(filler, 10));
        let chain = e.linear_chain(64, links.clone()).unwrap();
        for (run, range) in [100.0f32, 1.0, 0.01].into_iter().enumerate() {
            let x = random_f32(40 + run as u64, 64, -range, range);
            let want = cpu_ref::bitlinear(&x, 1, links[producer].0.weights()).unwrap();
            let want_next = cpu_ref::bitlinear(&want, 1, links[producer + 1].0.weights()).unwrap();
            let got = chain.forward(&x).unwrap();
            if !chain.is_fused() {
                return false;
            }
            assert_eq!(got[producer], want, "run {run}: producer");
            assert_eq!(got[producer + 1], want_next, "run {run}: its consumer");
        }
        true
    });
}
