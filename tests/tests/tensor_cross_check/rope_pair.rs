//! `Engine::rope_pair` (RoPE on a step's queries and keys, one dispatch) against cpu-ref's
//! `rope_pair` and against two `Engine::rope` calls (bit for bit: the same rotation), fused and
//! on the fallback paths (a head dim that differs between q and k, chunked launches, the CPU
//! backend); and the same errors as cpu-ref, q's before k's.

use bitnet_tests::{gpu_engine, gpu_engine_with};
use bitnet_wgpu::cpu_ref::ops as cpu;
use bitnet_wgpu::{Engine, EngineOptions, Error, Tensor};

use super::common::{assert_f32, cpu_error, engine, host, up, values};

/// One case on `e`: q `[s, hq, d]`, k `[s, hk, dk]` at `pos`.
fn check(
    e: &Engine,
    what: &str,
    (s, hq, hk, d, dk): (usize, usize, usize, usize, usize),
    pos: &[u32],
) {
    let theta = 10_000.0;
    let q = values(300 + hq as u64, s * hq * d, -2.0, 2.0);
    let k = values(310 + hk as u64, s * hk * dk, -2.0, 2.0);
    let (qs, ks) = ([s, hq, d], [s, hk, dk]);
    let (want_q, want_k) = cpu::rope_pair(&host(&q, &qs), &host(&k, &ks), pos, theta).unwrap();
    let gp = e.upload_u32(pos, &[s]).unwrap();
    let (gq, gk) = (up(e, &q, &qs), up(e, &k, &ks));
    let (yq, yk) = e.rope_pair(&gq, &gk, &gp, theta).unwrap();
    assert_f32("rope", &format!("{what}: q"), &yq, &want_q);
    assert_f32("rope", &format!("{what}: k"), &yk, &want_k);
    let apart = |x: &Tensor| e.rope(x, &gp, theta).unwrap().read_f32().unwrap();
    assert_eq!(
        yq.read_f32().unwrap(),
        apart(&gq),
        "{what}: q as rope alone"
    );
    assert_eq!(
        yk.read_f32().unwrap(),
        apart(&gk),
        "{what}: k as rope alone"
    );
}

#[test]
fn rope_pair_matches_cpu_ref_and_rope_alone() {
    let e = engine();
    // Fused: grouped-query heads (20 / 5 of 128 as BitNet-2B4T, 4 / 2 of 64), one position (a
    // decode step) and several (a prefill) up to positions past 2^19.
    check(e, "2B4T decode", (1, 20, 5, 128, 128), &[37]);
    check(e, "prefill", (6, 4, 2, 64, 64), &[0, 1, 2, 700_000, 4, 9]);
    check(e, "one head each", (3, 1, 1, 2, 2), &[5, 6, 7]);
    // Fallback: different head dims take one launch set each.
    check(e, "q and k head dims differ", (2, 2, 3, 64, 32), &[3, 4]);
    let chunked = gpu_engine_with(EngineOptions {
        max_binding_bytes: Some(16 << 10),
        ..EngineOptions::default()
    });
    check(
        &chunked,
        "chunked",
        (40, 4, 2, 64, 64),
        &(0..40).collect::<Vec<_>>(),
    );
    check(&Engine::cpu(), "CPU backend", (2, 4, 2, 64, 64), &[1, 2]);
}

/// The error of a pair of results (fused, both fail together; apart, each its own).
fn pair_error(r: bitnet_wgpu::Result<(Tensor, Tensor)>) -> Error {
    match r {
        Err(e) => e,
        Ok((q, k)) => match (q.read_f32(), k.read_f32()) {
            (Err(e), _) | (Ok(_), Err(e)) => e,
            (Ok(_), Ok(_)) => panic!("expected an error, rope_pair succeeded"),
        },
    }
}

#[test]
fn rope_pair_errors_match_cpu_ref() {
    // Its own engine: the flags raised here must not reach another test's reads.
    let e = gpu_engine();
    let q = values(7, 2 * 4 * 8, -2.0, 2.0);
    let k = values(8, 2 * 2 * 8, -2.0, 2.0);
    let at = |mut v: Vec<f32>, i: usize, bad: f32| {
        v[i] = bad;
        v
    };
    let pos = [3u32, 9];
    let gp = e.upload_u32(&pos, &[2]).unwrap();
    let cases = [
        ("q", at(q.clone(), 13, f32::NAN), k.clone()),
        ("k", q.clone(), at(k.clone(), 5, f32::INFINITY)),
        (
            "both: q's first",
            at(q.clone(), 60, f32::NAN),
            at(k.clone(), 0, f32::NAN),
        ),
        // |x| near f32's maximum: the rotated pair overflows.
        (
            "q output",
            at(at(q.clone(), 8, 3.3e38), 12, 3.3e38),
            k.clone(),
        ),
        (
            "k output",
            q.clone(),
            at(at(k.clone(), 16, -3.3e38), 20, 3.3e38),
        ),
    ];
    for (what, vq, vk) in cases {
        let want = cpu_error(cpu::rope_pair(
            &host(&vq, &[2, 4, 8]),
            &host(&vk, &[2, 2, 8]),
            &pos,
            10_000.0,
        ));
        let got = pair_error(e.rope_pair(
            &up(&e, &vq, &[2, 4, 8]),
            &up(&e, &vk, &[2, 2, 8]),
            &gp,
            10_000.0,
        ));
        assert_eq!(got, want, "{what}");
    }
    // Shapes: k of rank 2, k's S not the positions'.
    for (what, ks) in [("k rank", vec![4, 8]), ("k positions", vec![1, 4, 8])] {
        let n: usize = ks.iter().product();
        let vk = values(9, n, -1.0, 1.0);
        let want = cpu_error(cpu::rope_pair(
            &host(&q, &[2, 4, 8]),
            &host(&vk, &ks),
            &pos,
            10_000.0,
        ));
        let got =
            pair_error(e.rope_pair(&up(&e, &q, &[2, 4, 8]), &up(&e, &vk, &ks), &gp, 10_000.0));
        assert_eq!(got, want, "{what}");
    }
}
