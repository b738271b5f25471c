//! The `decode_step` example (`engine/examples/decode_step.rs`), compiled into the suite and run
//! at a smaller size on the GPU engine against the CPU engine: one decode step of a 2-layer BitNet
//! b1.58 transformer through the public API (RMSNorm, BitLinear, RoPE, attention over a KV cache
//! with `Engine::attention`, ReLU²-gated FFN, residuals), within the suite's float tolerance.

#[path = "../../engine/examples/decode_step.rs"]
#[allow(dead_code)]
mod example;

use bitnet_tests::{gpu_engine, tolerance};
use bitnet_wgpu::Engine;
use example::{Dims, Model, decode_step, random, upload};

#[test]
fn a_decode_step_on_the_gpu_matches_the_cpu_engine() {
    let dims = Dims {
        hidden: 64,
        heads: 2,
        ffn: 128,
        layers: 2,
        past: 3,
    };
    let (gpu, cpu) = (gpu_engine(), Engine::cpu());
    let model = Model::random(&gpu, dims, 5).unwrap();
    let x = random(11, dims.hidden, 1.0);
    let layers = upload(&gpu, &model).unwrap();
    let got = decode_step(&gpu, &layers, &model, &x).unwrap();
    let want = decode_step(&cpu, &upload(&cpu, &model).unwrap(), &model, &x).unwrap();
    // matmul's tolerance, looser than that of every f32 op of the step (attention's included),
    // leaves room for their compounding over two layers.
    let tol = tolerance("matmul_f32");
    tol.assert_close("decode step: hidden out", &got.0, &want.0);
    assert_eq!(got.1.len(), 2 * dims.layers);
    for (i, (g, w)) in got.1.iter().zip(&want.1).enumerate() {
        assert_eq!(g.len(), dims.hidden);
        tol.assert_close(
            &format!("decode step: layer {} new {}", i / 2, ["k", "v"][i % 2]),
            g,
            w,
        );
    }
    // The step is deterministic: a second run on the same resident weights gives the same bits.
    let again = decode_step(&gpu, &layers, &model, &x).unwrap();
    assert_eq!(got, again);
}
