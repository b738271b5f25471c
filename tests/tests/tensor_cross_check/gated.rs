//! `Engine::gated` (`act(gate) · up`, one dispatch) against cpu-ref and against the two ops it
//! fuses: bit for bit `unary` then `binary(Mul)` on the same engine (GPU whole and chunked, and
//! the CPU backend), within `unary`'s tolerance of cpu-ref (exactly for ReLU and ReLU²); and the
//! same errors as cpu-ref, for each status word of the fused launch.

use bitnet_tests::{gpu_engine, gpu_engine_with};
use bitnet_wgpu::cpu_ref::ops as cpu;
use bitnet_wgpu::{BinaryOp, Engine, EngineOptions, UnaryOp};

use super::common::{assert_f32, bits, cpu_error, engine, gpu_error, host, numel, up, values};

const ACTS: [UnaryOp; 5] = [
    UnaryOp::Relu,
    UnaryOp::Relu2,
    UnaryOp::Silu,
    UnaryOp::Gelu,
    UnaryOp::Exp,
];

/// One case on `e`: the fused op equals `unary` then `binary(Mul)` on `e` bit for bit, and
/// cpu-ref's `gated` within `unary`'s tolerance (bit for bit where no `exp` is involved).
fn check(e: &Engine, what: &str, act: UnaryOp, g: &[f32], u: &[f32], shape: &[usize]) {
    let what = format!("{what} {act:?} {shape:?}");
    let (gg, gu) = (up(e, g, shape), up(e, u, shape));
    let got = e.gated(act, &gg, &gu).unwrap();
    assert_eq!(got.shape(), shape, "{what}");
    let got_bits = bits(&got.read_f32().unwrap());
    let two_ops = e
        .binary(BinaryOp::Mul, &e.unary(act, &gg).unwrap(), &gu)
        .unwrap();
    assert_eq!(
        got_bits,
        bits(&two_ops.read_f32().unwrap()),
        "{what}: unary then mul on the same engine"
    );
    let want = cpu::gated(act, &host(g, shape), &host(u, shape)).unwrap();
    if matches!(act, UnaryOp::Relu | UnaryOp::Relu2) {
        assert_eq!(got_bits, bits(want.data()), "{what}: cpu-ref, bit for bit");
    } else {
        // |up| < 1: the product's error is at most the activation's.
        assert_f32("unary", &what, &got, &want);
    }
}

#[test]
fn gated_matches_unary_then_mul_and_cpu_ref() {
    let e = engine();
    let shapes: &[&[usize]] = &[
        &[1],
        &[3, 7],
        &[5, 300],
        &[2, 4096],
        &[2, 3, 64],
        &[1, 6912],
    ];
    for (i, &shape) in shapes.iter().enumerate() {
        // Gates over both sides of GELU's erf split (|x| / √2 = 0.93) and SiLU's sign branch.
        let g = values(200 + i as u64, numel(shape), -4.0, 4.0);
        let u = values(220 + i as u64, numel(shape), -1.0, 1.0);
        for act in ACTS {
            check(e, "whole", act, &g, &u, shape);
        }
    }
    // cpu-ref's gated is exactly its unary then binary Mul, whatever the activation.
    let (g, u) = (values(240, 999, -4.0, 4.0), values(241, 999, -3.0, 3.0));
    for act in ACTS {
        let (hg, hu) = (host(&g, &[999]), host(&u, &[999]));
        let two = cpu::binary(BinaryOp::Mul, &cpu::unary(act, &hg).unwrap(), &hu).unwrap();
        assert_eq!(
            bits(cpu::gated(act, &hg, &hu).unwrap().data()),
            bits(two.data()),
            "{act:?}"
        );
    }
}

#[test]
fn gated_chunks_and_runs_on_the_cpu_backend() {
    let (r, c) = (100, 80);
    let g = values(1, r * c, -4.0, 4.0);
    let u = values(2, r * c, -1.0, 1.0);
    // 32 000 bytes per tensor under a 16 KiB binding limit: three launches.
    let chunked = gpu_engine_with(EngineOptions {
        max_binding_bytes: Some(16 << 10),
        ..EngineOptions::default()
    });
    let cpu_engine = Engine::cpu();
    for act in ACTS {
        check(&chunked, "chunked", act, &g, &u, &[r, c]);
        // The CPU backend runs cpu-ref itself: bit for bit, for every activation.
        let got = cpu_engine
            .gated(
                act,
                &up(&cpu_engine, &g, &[r, c]),
                &up(&cpu_engine, &u, &[r, c]),
            )
            .unwrap();
        let want = cpu::gated(act, &host(&g, &[r, c]), &host(&u, &[r, c])).unwrap();
        assert_eq!(
            bits(&got.read_f32().unwrap()),
            bits(want.data()),
            "CPU {act:?}"
        );
        check(&cpu_engine, "CPU backend", act, &g, &u, &[r, c]);
    }
}

#[test]
fn gated_errors_match_cpu_ref() {
    // Their own engines: the flags raised here must not reach another test's reads.
    let whole = gpu_engine();
    let chunked = gpu_engine_with(EngineOptions {
        max_binding_bytes: Some(16 << 10),
        ..EngineOptions::default()
    });
    let cpu_engine = Engine::cpu();
    let shape = [100, 80];
    let g = values(6, numel(&shape), -2.0, 2.0);
    let u = values(7, numel(&shape), -2.0, 2.0);
    let at = |v: &[f32], bad: &[(usize, f32)]| {
        let mut v = v.to_vec();
        for &(i, x) in bad {
            v[i] = x;
        }
        v
    };
    let cases = [
        (
            "gate",
            UnaryOp::Silu,
            at(&g, &[(7000, f32::NAN)]),
            u.clone(),
        ),
        (
            "up",
            UnaryOp::Gelu,
            g.clone(),
            at(&u, &[(5, f32::INFINITY)]),
        ),
        // Gate before up, whatever the chunks: the gate's NaN is in the last chunk.
        (
            "gate then up",
            UnaryOp::Relu,
            at(&g, &[(7999, f32::NAN)]),
            at(&u, &[(0, f32::NEG_INFINITY)]),
        ),
        // ReLU² of 1e20 overflows: "output", even where up is 0 (inf · 0), never a silent inf.
        (
            "relu² overflow",
            UnaryOp::Relu2,
            at(&g, &[(6500, 1e20)]),
            at(&u, &[(6500, 0.0)]),
        ),
        (
            "exp overflow",
            UnaryOp::Exp,
            at(&g, &[(4100, 89.0), (7000, 100.0)]),
            u.clone(),
        ),
        // A finite activation times a large up; the lowest index wins across chunks.
        (
            "product overflow",
            UnaryOp::Relu,
            at(&g, &[(3000, 2.0), (7000, 1e20)]),
            at(&u, &[(3000, 3e38), (7000, 1e20)]),
        ),
    ];
    for (what, act, vg, vu) in cases {
        let want = cpu_error(cpu::gated(act, &host(&vg, &shape), &host(&vu, &shape)));
        for (name, e) in [
            ("whole", &whole),
            ("chunked", &chunked),
            ("CPU", &cpu_engine),
        ] {
            let got = gpu_error(e.gated(act, &up(e, &vg, &shape), &up(e, &vu, &shape)));
            assert_eq!(got, want, "{what} ({name})");
        }
    }
    // Shapes that differ: no broadcasting, the cpu-ref error.
    let want = cpu_error(cpu::gated(
        UnaryOp::Silu,
        &host(&g, &shape),
        &host(&g, &[80, 100]),
    ));
    for e in [&whole, &cpu_engine] {
        let got = e.gated(UnaryOp::Silu, &up(e, &g, &shape), &up(e, &g, &[80, 100]));
        assert_eq!(got.unwrap_err(), want, "shapes");
    }
}
