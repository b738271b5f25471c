//! `LinearChain`'s errors: bad input and construction, a tensor of another engine, and an
//! overflow that fails only its own linears, on every backend.

use bitnet_tests::{gpu_engine, random_f32, random_normal};
use bitnet_wgpu::cpu_ref;
use bitnet_wgpu::{ChainInput, DispatchPolicy, Engine, Error, Linear};

use super::{layers, serial, weights};

#[test]
fn chain_input_errors_match_cpu_ref() {
    let _serial = serial();
    let e = gpu_engine();
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    let links = layers(&e, 64, 128);
    let chain = e.linear_chain(64, links.clone()).unwrap();
    let mut x = random_f32(7, 64, -1.0, 1.0);
    x[37] = f32::NAN;
    let want = cpu_ref::bitlinear(&x, 1, links[0].0.weights()).unwrap_err();
    assert_eq!(chain.forward(&x).unwrap_err(), Error::from(want));
    assert!(chain.forward(&x[..63]).is_err());
    let wrong = e.upload_f32(&x[..32], &[32]).unwrap();
    assert!(matches!(
        chain.forward_tensor(&wrong).unwrap_err(),
        Error::ShapeMismatch { .. }
    ));
    // Construction: K must match what the linear reads, and only earlier outputs can be read.
    let l = |n, k| Linear::new(&e, weights(n, k, 3));
    let bad_k = vec![
        (l(8, 64), ChainInput::Input),
        (l(8, 64), ChainInput::Output(0)),
    ];
    assert!(matches!(
        e.linear_chain(64, bad_k).unwrap_err(),
        Error::ShapeMismatch { .. }
    ));
    let forward_ref = vec![(l(64, 64), ChainInput::Output(0))];
    assert!(e.linear_chain(64, forward_ref).is_err());
    assert!(e.linear_chain(64, Vec::new()).is_err());
}

/// A tensor of another engine is `EngineMismatch` named for the chain, fused or not, whether it
/// lives on another GPU context or on the host of a CPU engine.
#[test]
fn forward_tensor_rejects_a_tensor_of_another_engine() {
    let _serial = serial();
    let e = gpu_engine();
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    let x = random_f32(5, 64, -1.0, 1.0);
    let fused = e
        .linear_chain(
            64,
            vec![(Linear::new(&e, weights(8, 64, 1)), ChainInput::Input)],
        )
        .unwrap();
    let unfused = e
        .linear_chain(
            48,
            vec![(Linear::new(&e, weights(8, 48, 2)), ChainInput::Input)],
        )
        .unwrap();
    let (other, cpu) = (gpu_engine(), Engine::cpu());
    for chain in [&fused, &unfused] {
        let n = chain.input_len();
        for t in [
            other.upload_f32(&x[..n], &[n]),
            cpu.upload_f32(&x[..n], &[n]),
        ] {
            let err = chain.forward_tensor(&t.unwrap()).unwrap_err();
            assert_eq!(err, Error::EngineMismatch { op: "linear_chain" }, "K = {n}");
        }
    }
    assert!(fused.is_fused());
}

/// Each read of a run fails only where its linear does under every policy and on the CPU engine,
/// not only on the GPU: a linear-by-linear run on the host found the overflow at once and failed
/// the whole `forward_tensor`, so the sound linears' outputs were lost there.
#[test]
fn an_overflow_fails_only_its_linears_on_every_backend() {
    let _serial = serial();
    let gpu = gpu_engine();
    let cpu = Engine::cpu();
    let huge: Vec<f32> = (0..64)
        .map(|i| if i % 3 == 0 { -3e38 } else { 3e38 })
        .collect();
    let big = cpu_ref::quantize_weights(&random_normal(1, 64 * 64, 50.0), 64, 64).unwrap();
    let overflow = Error::from(cpu_ref::bitlinear(&huge, 1, &big).unwrap_err());
    for (e, policy) in [
        (&gpu, DispatchPolicy::Gpu),
        (&gpu, DispatchPolicy::Cpu),
        (&gpu, DispatchPolicy::Auto),
        (&cpu, DispatchPolicy::Cpu),
    ] {
        e.set_dispatch_policy(policy).unwrap();
        // Linear 1 overflows; linear 3 reads it; linears 0 and 2 read only the input.
        let links = vec![
            (Linear::new(e, weights(8, 64, 3)), ChainInput::Input),
            (Linear::new(e, big.clone()), ChainInput::Input),
            (Linear::new(e, weights(8, 64, 4)), ChainInput::Input),
            (Linear::new(e, weights(8, 64, 5)), ChainInput::Output(1)),
        ];
        let chain = e.linear_chain(64, links.clone()).unwrap();
        let outs = chain
            .forward_tensor(&e.upload_f32(&huge, &[64]).unwrap())
            .unwrap();
        let ctx = format!("{:?} engine, {policy:?}", e.backend_kind());
        for i in [0, 2] {
            let want = cpu_ref::bitlinear(&huge, 1, links[i].0.weights()).unwrap();
            assert_eq!(outs.read(i).unwrap(), want, "{ctx}: linear {i}");
        }
        for i in [1, 3] {
            assert_eq!(outs.read(i).unwrap_err(), overflow, "{ctx}: linear {i}");
        }
        assert_eq!(outs.read_all().unwrap_err(), overflow, "{ctx}: read_all");
        assert_eq!(
            chain.forward(&huge).unwrap_err(),
            overflow,
            "{ctx}: forward"
        );
    }
}
