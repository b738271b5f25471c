//! Where `slice` and `concat` run: chained on the device with BitLinear and matmul (no read-back
//! in between), with host operands on a GPU engine, on the CPU engine, and split over a binding
//! limit so small that one run needs several launches and one launch holds many runs, and with
//! params in the uniform arena. Each matches cpu-ref bit for bit.

use bitnet_tests::{gpu_engine_with, random_normal};
use bitnet_wgpu::cpu_ref::ops as cpu;
use bitnet_wgpu::cpu_ref::{self, Tensor as Host};
use bitnet_wgpu::{DispatchPolicy, Engine, EngineOptions, Location};

use super::common::{assert_f32, engine, host, up, values};
use super::values_shape::{check_concats, check_slices, pair, same, words};

/// Bits of a cpu-ref f32 tensor, as a word tensor.
fn as_words(t: &Host<f32>) -> Host<u32> {
    Host::new(t.data().iter().map(|v| v.to_bits()).collect(), t.shape()).unwrap()
}

#[test]
fn slices_of_bitlinear_outputs_feed_matmul_on_the_device() {
    let e = engine();
    // A fused q/k/v projection: [M, K] · [3 · 40, K]ᵀ, split into its three [M, 40] parts.
    let (m, k, n) = (3, 64, 40);
    let x = values(31, m * k, -1.0, 1.0);
    let wq = cpu_ref::quantize_weights(&random_normal(32, 3 * n * k, 0.05), 3 * n, k).unwrap();
    let (gx, gw) = (up(e, &x, &[m, k]), e.upload_ternary(&wq).unwrap());
    let qkv = e.bitlinear_tensor(&gx, &gw).unwrap();
    let hqkv = host(&cpu_ref::bitlinear(&x, m, &wq).unwrap(), &[m, 3 * n]);
    let part = |i: usize| e.slice(&qkv, 1, i * n..(i + 1) * n).unwrap();
    let hpart = |i: usize| cpu::slice(&hqkv, 1, i * n..(i + 1) * n).unwrap();
    let (q, kk, v) = (part(0), part(1), part(2));
    for (i, t) in [&q, &kk, &v].into_iter().enumerate() {
        same("bitlinear part", t, &as_words(&hpart(i)));
    }
    // Scores of q against k, and [q; k] (concat on rows) times vᵀ: concat output into matmul.
    let want = cpu::matmul_bt(&hpart(0), &hpart(1)).unwrap();
    assert_f32("matmul_f32", "q kᵀ", &e.matmul_bt(&q, &kk).unwrap(), &want);
    let rows = e.concat(&[&q, &kk], 0).unwrap();
    let hrows = cpu::concat(&[&hpart(0), &hpart(1)], 0).unwrap();
    let want = cpu::matmul_bt(&hrows, &hpart(2)).unwrap();
    assert_f32(
        "matmul_f32",
        "[q; k] vᵀ",
        &e.matmul_bt(&rows, &v).unwrap(),
        &want,
    );
    // Heads gathered back side by side (concat on columns) in another order, then a matmul.
    let cols = e.concat(&[&v, &q], 1).unwrap();
    let hcols = cpu::concat(&[&hpart(2), &hpart(0)], 1).unwrap();
    same("heads gathered", &cols, &as_words(&hcols));
    let want = cpu::matmul_bt(&hcols, &hcols).unwrap();
    assert_f32(
        "matmul_f32",
        "gathered",
        &e.matmul_bt(&cols, &cols).unwrap(),
        &want,
    );
    // The exact accumulators are U32: rows 1..3 of them.
    let xq = cpu_ref::quantize_activations(&x, m, k).unwrap();
    let acc = e
        .bitlinear_accumulate_tensor(&e.upload_activations(&xq).unwrap(), &gw)
        .unwrap();
    let hacc: Vec<u32> = cpu_ref::bitlinear_accumulate(&xq, &wq)
        .unwrap()
        .iter()
        .map(|&a| a as u32)
        .collect();
    let want = cpu::slice(&Host::new(hacc, &[m, 3 * n]).unwrap(), 0, 1..3).unwrap();
    same("accumulator rows", &e.slice(&acc, 0, 1..3).unwrap(), &want);
}

#[test]
fn host_operands_run_through_cpu_ref_and_land_on_the_device() {
    let e = bitnet_tests::gpu_engine();
    e.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
    let (h, hh) = pair(&e, true, &words(41, 4 * 9), &[4, 9]);
    assert_eq!(h.location(), Location::Host);
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    let (d, hd) = pair(&e, true, &words(42, 4 * 5), &[4, 5]);
    assert_eq!(d.location(), Location::Device);
    let s = e.slice(&h, 1, 2..7).unwrap();
    same(
        "slice of a host tensor",
        &s,
        &cpu::slice(&hh, 1, 2..7).unwrap(),
    );
    let c = e.concat(&[&d, &h, &s], 1).unwrap();
    same(
        "concat of host and device tensors",
        &c,
        &cpu::concat(&[&hd, &hh, &cpu::slice(&hh, 1, 2..7).unwrap()], 1).unwrap(),
    );
    // Outputs of CPU runs are device tensors when the engine takes GPU work.
    assert_eq!(
        (s.location(), c.location()),
        (Location::Device, Location::Device)
    );
}

#[test]
fn the_cpu_engine_runs_both_through_cpu_ref() {
    let e = Engine::cpu();
    check_slices(&e, "cpu engine");
    check_concats(&e, "cpu engine");
}

#[test]
fn a_small_binding_limit_splits_runs_and_groups_runs() {
    // 1 KiB bindings: at most 256 words each, less the slack of aligning a start down.
    let cap = 1024u64;
    let e = gpu_engine_with(EngineOptions {
        max_binding_bytes: Some(cap),
        ..EngineOptions::default()
    });
    let launches = |e: &Engine| e.pipeline_stats().compiled + e.pipeline_stats().hits;
    // Runs of 1000 words (longer than any binding), starting at word 3 of each 1100-word row.
    let (x, hx) = pair(&e, true, &words(51, 6 * 1100), &[6, 1100]);
    let before = launches(&e);
    let got = e.slice(&x, 1, 3..1003).unwrap();
    let used = launches(&e) - before;
    same("long runs", &got, &cpu::slice(&hx, 1, 3..1003).unwrap());
    assert!(used >= 6 * 1000u64.div_ceil(cap / 4), "{used} launches");
    // Runs of 3 words, 7 apart: many per binding, so far fewer launches than runs, but several.
    let (y, hy) = pair(&e, false, &words(52, 600 * 7), &[600, 7]);
    let before = launches(&e);
    let got = e.slice(&y, 1, 2..5).unwrap();
    let used = launches(&e) - before;
    same("short runs", &got, &cpu::slice(&hy, 1, 2..5).unwrap());
    assert!(used > 1 && used < 600 / 4, "{used} launches for 600 runs");
    // Concat: each input's runs split or grouped the same way, into one output.
    let (z, hz) = pair(&e, true, &words(53, 6 * 301), &[6, 301]);
    let before = launches(&e);
    let got = e.concat(&[&x, &z, &x], 1).unwrap();
    let used = launches(&e) - before;
    same(
        "split concat",
        &got,
        &cpu::concat(&[&hx, &hz, &hx], 1).unwrap(),
    );
    assert!(
        used >= 6 * (2 * 1100u64.div_ceil(cap / 4) + 2),
        "{used} launches"
    );
    let rows = e.concat(&[&y, &y, &y], 0).unwrap();
    same("rows", &rows, &cpu::concat(&[&hy, &hy, &hy], 0).unwrap());
    // The whole value suite under the limit too.
    check_slices(&e, "1 KiB bindings");
    check_concats(&e, "1 KiB bindings");
}

#[test]
fn both_run_with_params_in_the_uniform_arena() {
    // Devices without immediates pass the copy's params through the engine's uniform arena.
    let e = gpu_engine_with(EngineOptions {
        force_uniform_params: true,
        ..EngineOptions::default()
    });
    check_slices(&e, "uniform params");
    check_concats(&e, "uniform params");
}
