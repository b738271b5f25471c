//! One decode step of a tiny BitNet b1.58 transformer, run on the best adapter with resident
//! tensors (as an inference server would) and on the CPU engine, and compared.
//!
//! `cargo run --release -p bitnet-wgpu --example decode_step`
//!
//! Two layers, hidden 256, 4 heads of 64, FFN 512, and a KV cache of 6 earlier positions; the
//! weights are random (fixed seed) and quantized to ternary by the engine. Per layer:
//! RMSNorm → q/k/v BitLinear → RoPE on q and k → attention over the cache → o BitLinear →
//! residual → RMSNorm → gate/up BitLinear → ReLU²(gate)·up → down BitLinear → residual.
//! Prints the backend, the largest GPU−CPU difference and the time per step.
//!
//! The tensor ops have no slice, concat or write-into: the KV cache is kept on the host (the new
//! k and v are read back once per layer) and uploaded per step as `[T, heads, head_dim]` tensors
//! for `Engine::attention` (see `attention`).

use std::time::Instant;

use bitnet_wgpu::{BinaryOp, Engine, Result, Tensor, TernaryMatrix, UnaryOp};

/// Model and cache sizes.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub hidden: usize,
    pub heads: usize,
    pub ffn: usize,
    pub layers: usize,
    /// KV-cache positions before the decoded token (which sits at position `past`).
    pub past: usize,
}

const EPS: f32 = 1e-5;
const THETA: f32 = 10_000.0;

/// `n` deterministic (splitmix64) values, uniform with mean 0 and standard deviation `scale`.
pub fn random(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed;
    let mut unit = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|_| (2.0 * unit() - 1.0) * 3f32.sqrt() * scale)
        .collect()
}

/// One layer's weights on the host: ternary matrices (`[N, K]`, quantized once) and norm weights.
pub struct HostLayer {
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    /// q, k, v, o, gate, up, down.
    w: Vec<TernaryMatrix>,
}

/// The model and its KV cache on the host; the same for every engine.
pub struct Model {
    pub dims: Dims,
    layers: Vec<HostLayer>,
    /// Per layer, the cached keys (after RoPE) and values of the `past` positions, `[past, hidden]`.
    cache: Vec<(Vec<f32>, Vec<f32>)>,
}

impl Model {
    /// Random weights and cache from `seed`, quantized with `engine` (bit-identical on every
    /// backend, so the CPU run below uses the same ternary weights).
    pub fn random(engine: &Engine, dims: Dims, seed: u64) -> Result<Model> {
        let (h, f) = (dims.hidden, dims.ffn);
        let mut seed = seed;
        let mut next = |n, scale| {
            seed += 1;
            random(seed, n, scale)
        };
        let mut layers = Vec::new();
        let mut cache = Vec::new();
        for _ in 0..dims.layers {
            // (N, K) of q, k, v, o, gate, up, down.
            let shapes = [(h, h), (h, h), (h, h), (h, h), (f, h), (f, h), (h, f)];
            let mut quantized = |(n, k)| engine.quantize_weights(&next(n * k, 0.02), n, k);
            let w = shapes
                .into_iter()
                .map(&mut quantized)
                .collect::<Result<_>>()?;
            layers.push(HostLayer {
                attn_norm: next(h, 0.1).iter().map(|v| 1.0 + v).collect(),
                ffn_norm: next(h, 0.1).iter().map(|v| 1.0 + v).collect(),
                w,
            });
            cache.push((next(dims.past * h, 1.0), next(dims.past * h, 1.0)));
        }
        Ok(Model {
            dims,
            layers,
            cache,
        })
    }
}

/// A layer resident on one engine: what a server uploads once at start-up.
pub struct Layer {
    attn_norm: Tensor,
    ffn_norm: Tensor,
    w: Vec<Tensor>,
}

/// The model's weights uploaded to `engine` (device tensors on a GPU engine, host tensors on the
/// CPU engine).
pub fn upload(engine: &Engine, model: &Model) -> Result<Vec<Layer>> {
    let h = model.dims.hidden;
    let up = |l: &HostLayer| -> Result<Layer> {
        Ok(Layer {
            attn_norm: engine.upload_f32(&l.attn_norm, &[h])?,
            ffn_norm: engine.upload_f32(&l.ffn_norm, &[h])?,
            w: l.w
                .iter()
                .map(|w| engine.upload_ternary(w))
                .collect::<Result<_>>()?,
        })
    };
    model.layers.iter().map(up).collect()
}

/// Attention of one query over the cache plus the current key/value: softmax(q·Kᵀ / √d)·V per
/// head, on the device. `q` is `[1, heads, head_dim]` (RoPE's output); `keys` and `values` are
/// `[T, hidden]` on the host, i.e. `[T, heads, head_dim]` token-major, uploaded as such. The
/// query is the last of the `T` positions (causal; with one query it attends every key). Returns
/// `[1, hidden]`.
fn attention(e: &Engine, d: Dims, q: &Tensor, keys: &[f32], values: &[f32]) -> Result<Tensor> {
    let (t, hd) = (keys.len() / d.hidden, d.hidden / d.heads);
    let k = e.upload_f32(keys, &[t, d.heads, hd])?;
    let v = e.upload_f32(values, &[t, d.heads, hd])?;
    let scale = 1.0 / (hd as f32).sqrt();
    e.attention(q, &k, &v, scale, true)?.reshape(&[1, d.hidden])
}

/// One decode step: the hidden state `x` (`[1, hidden]`) of the token at position `past` through
/// every layer. Returns the output hidden state (read back) and each layer's new k and v (after
/// RoPE), which a server would append to its cache.
pub fn decode_step(
    e: &Engine,
    layers: &[Layer],
    model: &Model,
    x: &[f32],
) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    let d = model.dims;
    let (hd, nh) = (d.hidden / d.heads, d.heads);
    let pos = e.upload_u32(&[d.past as u32], &[1])?;
    let mut x = e.upload_f32(x, &[1, d.hidden])?;
    let mut new_kv = Vec::new();
    for (l, (past_k, past_v)) in layers.iter().zip(&model.cache) {
        let [wq, wk, wv, wo, wgate, wup, wdown] = &l.w[..] else {
            unreachable!("seven matrices per layer")
        };
        // Attention block: RMSNorm, then the q/k/v projections (int8 activations, exact).
        let xn = e.rms_norm(&x, &l.attn_norm, EPS)?;
        let q = e.bitlinear_tensor(&xn, wq)?;
        let k = e.bitlinear_tensor(&xn, wk)?;
        let v = e.bitlinear_tensor(&xn, wv)?;
        // RoPE wants [S, H, D]: the same bytes viewed per head (no copy).
        let q = e.rope(&q.reshape(&[1, nh, hd])?, &pos, THETA)?;
        let k = e.rope(&k.reshape(&[1, nh, hd])?, &pos, THETA)?;
        // The new k and v join the cache. With no concat or write-into op this is a read-back
        // (the step's sync point per layer) and the cache is re-uploaded below.
        let (k, v) = (k.read_f32()?, v.read_f32()?);
        let keys = [past_k.as_slice(), &k].concat();
        let values = [past_v.as_slice(), &v].concat();
        let attn = attention(e, d, &q, &keys, &values)?;
        // Output projection and residual.
        x = e.binary(BinaryOp::Add, &x, &e.bitlinear_tensor(&attn, wo)?)?;
        // Feed-forward block: RMSNorm, gate/up, ReLU²(gate) · up, down, residual.
        let xn = e.rms_norm(&x, &l.ffn_norm, EPS)?;
        let gate = e.unary(UnaryOp::Relu2, &e.bitlinear_tensor(&xn, wgate)?)?;
        let act = e.binary(BinaryOp::Mul, &gate, &e.bitlinear_tensor(&xn, wup)?)?;
        x = e.binary(BinaryOp::Add, &x, &e.bitlinear_tensor(&act, wdown)?)?;
        new_kv.extend([k, v]);
    }
    Ok((x.read_f32()?, new_kv))
}

/// Largest `|a - b|`, and whether every pair is within `abs + rel·|b|`.
pub fn compare(a: &[f32], b: &[f32], abs: f32, rel: f32) -> (f32, bool) {
    let pairs = || a.iter().zip(b).map(|(x, y)| ((x - y).abs(), y.abs()));
    let max = pairs().fold(0.0, |m, (diff, _)| f32::max(m, diff));
    (
        max,
        a.len() == b.len() && pairs().all(|(diff, y)| diff <= abs + rel * y),
    )
}

#[allow(dead_code)] // the test suite includes this file as a module
fn main() -> Result<()> {
    let dims = Dims {
        hidden: 256,
        heads: 4,
        ffn: 512,
        layers: 2,
        past: 6,
    };
    let (gpu, cpu) = (Engine::new(), Engine::cpu());
    print!("{}", gpu.info());
    let model = Model::random(&gpu, dims, 42)?;
    let x = random(7, dims.hidden, 1.0);

    // Weights go to each engine once; the timed steps move only the token and the cache.
    let (on_gpu, on_cpu) = (upload(&gpu, &model)?, upload(&cpu, &model)?);
    // info() names the adapter; the tensor ops run where the tensors live (on the host under
    // the Cpu policy, e.g. BITNET_DISPATCH=cpu, and on the CPU engine).
    let at = on_gpu[0].attn_norm.location();
    println!(
        "dispatch:  {:?}, weights on the {at:?}",
        gpu.dispatch_policy()
    );
    let time = |e: &Engine, layers: &[Layer]| -> Result<_> {
        let mut out = decode_step(e, layers, &model, &x)?; // warm-up: pipelines, buffer pool
        let (steps, t) = (10, Instant::now());
        for _ in 0..steps {
            out = decode_step(e, layers, &model, &x)?;
        }
        Ok((out, t.elapsed().as_secs_f64() * 1e3 / steps as f64))
    };
    let (got, gpu_ms) = time(&gpu, &on_gpu)?;
    let (want, cpu_ms) = time(&cpu, &on_cpu)?;

    // The matmul_f32 tolerance of the cross-check suite, looser than that of every f32 op used
    // here (attention's included): room for their compounding over two layers.
    let (abs, rel) = (1e-5, 1e-4);
    let (dx, ok_x) = compare(&got.0, &want.0, abs, rel);
    let (dkv, ok_kv) = compare(&got.1.concat(), &want.1.concat(), abs, rel);
    println!("step:      {gpu_ms:.2} ms on this engine, {cpu_ms:.2} ms on the CPU engine");
    println!(
        "max |GPU - CPU|: hidden out {dx:.3e}, new k/v {dkv:.3e} (tolerance {abs:e} + {rel:e}·|x|)"
    );
    assert!(
        ok_x && ok_kv,
        "the engine's step is out of tolerance of the CPU engine's"
    );
    Ok(())
}
