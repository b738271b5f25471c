//! The `decode_step` example (`engine/examples/decode_step.rs`), compiled into the suite and run
//! at a smaller size on the GPU engine against the CPU engine: a prefill and decode steps of a
//! 2-layer BitNet b1.58 transformer through the public API (RMSNorm, BitLinear, RoPE, a device
//! `KvCache` per layer, grouped-query causal `Engine::attention`, ReLU²-gated FFN, residuals;
//! with and without 2B4T's sub-norms in front of o and down), within the suite's float tolerance.

#[path = "../../engine/examples/decode_step.rs"]
#[allow(dead_code)]
mod example;

use bitnet_tests::{Tolerance, gpu_engine};
use bitnet_wgpu::Engine;
use example::{Dims, Model, generate, random, upload};

#[test]
fn prefill_and_decode_on_the_gpu_match_the_cpu_engine() {
    for sub_norms in [false, true] {
        check(Dims {
            hidden: 64,
            heads: 4,
            kv_heads: 2,
            ffn: 128,
            layers: 2,
            prompt: 3,
            steps: 3,
            sub_norms,
        });
    }
}

/// The GPU engine's states against the CPU engine's, deterministic and without new bind groups
/// on a repeated sequence.
fn check(dims: Dims) {
    let (gpu, cpu) = (gpu_engine(), Engine::cpu());
    let model = Model::random(dims, 5).unwrap();
    let prompt = random(11, dims.prompt * dims.hidden, 1.0);
    let layers = upload(&gpu, &model).unwrap();
    let (got, _) = generate(&gpu, &layers, dims, &prompt, None).unwrap();
    let (want, _) = generate(&cpu, &upload(&cpu, &model).unwrap(), dims, &prompt, None).unwrap();
    // Attention's, RoPE's and the activations' errors compound over the layers and steps: a
    // bound looser than each op's own (the one matmul had before it became exact).
    let tol = Tolerance {
        abs: 1e-5,
        rel: 1e-4,
    };
    assert_eq!(got.len(), dims.steps + 1);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.len(), dims.hidden);
        tol.assert_close(&format!("hidden state after step {i}"), g, w);
    }
    // Deterministic: a second sequence on the same resident weights gives the same bits, and
    // its steps get the same pooled buffers as the first's, so every launch finds its bind
    // group in the cache (a bind group created costs the caller several µs per launch).
    let (again, times) = generate(&gpu, &layers, dims, &prompt, None).unwrap();
    assert_eq!(got, again);
    assert_eq!(
        times.bind_groups_created, 0,
        "a repeated sequence's launches"
    );
}
