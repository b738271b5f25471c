//! Prefill and decode of a tiny BitNet b1.58 transformer with a device KV cache, run on the best
//! adapter with resident tensors (as an inference server would) and on the CPU engine, and
//! compared.
//!
//! `cargo run --release -p bitnet-wgpu --example decode_step`
//!
//! Two layers, hidden 256, 4 query heads and 2 key/value heads of 64 (grouped-query), FFN 512 —
//! or BitNet b1.58 2B4T's shapes with `--2b4t`; random ternary weights (fixed seed). Per layer:
//! residual add and RMSNorm with the q/k/v BitLinear (one grouped dispatch, `Engine::linear_group`,
//! the norm inside it: `LinearGroup::forward_normed`) → RoPE on q and k with k and v appended to
//! the layer's `KvCache` (one op, `KvCache::append_rope`) → causal attention over the cache → o
//! BitLinear → residual add and RMSNorm with the gate/up BitLinear and ReLU²(gate)·up (one op,
//! `Engine::gated_linear`, the norm inside it: `GatedLinear::forward_normed`) → down BitLinear
//! (added by the next layer's norm).
//! A 6-position prompt runs as one prefill (M = 6), then each decode step runs one position,
//! fed the previous step's last hidden state (there is no embedding or LM head). Only each
//! step's output is read back (as a server reads the logits to sample): positions are sliced
//! from one resident table, the next input is the last output as it is on the device, and the
//! caches grow in place. Prints the backend, the largest GPU−CPU difference and the time per
//! decode step. `--cpu-only` or `--gpu-only` times one engine alone; `--prompt=N`, `--steps=N`
//! and `--layers=N` resize the run (`--prompt=4096`: decode at a long context); `--sub-norms`
//! adds 2B4T's sub-norms in front of o and down (each inside its projection's dispatch,
//! `Linear::forward_normed`).

use std::time::Instant;

use bitnet_wgpu::{
    BinaryOp, Engine, GatedLinear, KvCache, Linear, LinearGroup, NormedInput, ProfileGranularity,
    ProfileReport, Result, Tensor, TernaryMatrix, UnaryOp,
};

#[path = "decode_step/model.rs"]
mod model;
use model::HostLayer;
pub use model::{Dims, Model, random};

const EPS: f32 = 1e-5;
const THETA: f32 = 10_000.0;

/// A layer resident on one engine: what a server uploads once at start-up. The projections that
/// read one input are grouped (q/k/v; gate/up with the gated activation: one dispatch each where
/// the fused GEMV applies).
pub struct Layer {
    attn_norm: Tensor,
    ffn_norm: Tensor,
    qkv: LinearGroup,
    wo: Linear,
    gate_up: GatedLinear,
    wdown: Linear,
    /// `wo`'s and `wdown`'s device weights, where no sub-norm runs in front of them.
    wo_w: Tensor,
    wdown_w: Tensor,
    /// The sub-norms' weights (in front of o and down), where the model has them.
    sub_norms: Option<[Tensor; 2]>,
}

/// The model's weights uploaded to `engine` (device tensors on a GPU engine, host tensors on the
/// CPU engine).
pub fn upload(engine: &Engine, model: &Model) -> Result<Vec<Layer>> {
    let h = model.dims.hidden;
    let up = |l: &HostLayer| -> Result<Layer> {
        let [wq, wk, wv, wo, wgate, wup, wdown] = &l.w[..] else {
            unreachable!("seven matrices per layer")
        };
        let linear = |w: &TernaryMatrix| Linear::new(engine, w.clone());
        let (q, k, v) = (linear(wq), linear(wk), linear(wv));
        let (gate, upm) = (linear(wgate), linear(wup));
        let (wo, wdown) = (linear(wo), linear(wdown));
        let sub_norms = match &l.sub_norms {
            Some([attn, ffn]) => Some([
                engine.upload_f32(attn, &[attn.len()])?,
                engine.upload_f32(ffn, &[ffn.len()])?,
            ]),
            None => None,
        };
        Ok(Layer {
            attn_norm: engine.upload_f32(&l.attn_norm, &[h])?,
            ffn_norm: engine.upload_f32(&l.ffn_norm, &[h])?,
            qkv: engine.linear_group(&[&q, &k, &v])?,
            wo_w: wo.device_weights()?,
            wdown_w: wdown.device_weights()?,
            wo,
            gate_up: engine.gated_linear(&gate, &upm, UnaryOp::Relu2)?,
            wdown,
            sub_norms,
        })
    };
    model.layers.iter().map(up).collect()
}

/// One sequence's state: a KV cache per layer, the next position, and every position's index
/// resident once (RoPE's positions are slices of it).
pub struct Session {
    caches: Vec<KvCache>,
    pos: usize,
    positions: Tensor,
}

impl Session {
    /// An empty sequence with room for the prompt and every decode step.
    pub fn new(e: &Engine, d: Dims) -> Result<Session> {
        let n = d.positions();
        Ok(Session {
            caches: (0..d.layers)
                .map(|_| e.kv_cache(n, d.kv_heads, d.head_dim()))
                .collect::<Result<_>>()?,
            pos: 0,
            positions: e.upload_u32(&(0..n as u32).collect::<Vec<_>>(), &[n])?,
        })
    }
}

/// Runs the `T` positions `x` (`[T, hidden]`) that follow what `s` holds through every layer,
/// appending their keys and values to the caches; returns their output hidden states
/// (`[T, hidden]`, not read back).
pub fn forward(
    e: &Engine,
    layers: &[Layer],
    d: Dims,
    s: &mut Session,
    x: &Tensor,
) -> Result<Tensor> {
    let (t, hd) = (x.shape()[0], d.head_dim());
    let pos = e.slice(&s.positions, 0, s.pos..s.pos + t)?;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut x = x.clone();
    // The last sublayer's output, added to the residual stream `x` by the next norm (the norm,
    // with its add, runs inside the projections that read it: `forward_normed`).
    let mut pending: Option<Tensor> = None;
    for (l, cache) in layers.iter().zip(&mut s.caches) {
        // Attention block: (residual add and) RMSNorm, then the q/k/v projections (int8
        // activations, exact) — one grouped dispatch for decode, the norm in it.
        let (h, qkv) = l.qkv.forward_normed(NormedInput {
            x: &x,
            residual: pending.take().as_ref(),
            weight: &l.attn_norm,
            eps: EPS,
        })?;
        x = h;
        let [q, k, v] = &qkv[..] else {
            unreachable!("a group of three")
        };
        // RoPE wants [T, H, D]: the projections' bytes viewed per head (no copy).
        let per_head = |y: Tensor, heads| y.reshape(&[t, heads, hd]);
        // RoPE on q and k at the step's positions, and the rotated keys with the values joining
        // the cache in place: one op (one dispatch). The query attends to every earlier
        // position and to itself (causal: the queries are the cache's last T positions).
        let q = cache.append_rope(
            &per_head(q.clone(), d.heads)?,
            &per_head(k.clone(), d.kv_heads)?,
            &per_head(v.clone(), d.kv_heads)?,
            &pos,
            THETA,
        )?;
        let attn = e.attention(&q, &cache.keys()?, &cache.values()?, scale, true)?;
        let attn = attn.reshape(&[t, d.hidden])?;
        // Output projection; then the residual add, the feed-forward block's RMSNorm and
        // ReLU²(gate) · up (gate/up and the activation: one op, the norm in it); down (added by
        // the next norm).
        let o = project(&l.wo, &l.wo_w, &attn, l.sub_norms.as_ref().map(|[a, _]| a))?;
        let (h, act) = l.gate_up.forward_normed(NormedInput {
            x: &x,
            residual: Some(&o),
            weight: &l.ffn_norm,
            eps: EPS,
        })?;
        x = h;
        let down = project(
            &l.wdown,
            &l.wdown_w,
            &act,
            l.sub_norms.as_ref().map(|[_, f]| f),
        )?;
        pending = Some(down);
    }
    if let Some(down) = pending {
        x = e.binary(BinaryOp::Add, &x, &down)?;
    }
    s.pos += t;
    Ok(x)
}

/// A projection (`w`'s device weights `weights`) of `x`, behind its sub-norm (weight `norm`)
/// where the model has one: then one op, the norm inside the projection's dispatch.
fn project(w: &Linear, weights: &Tensor, x: &Tensor, norm: Option<&Tensor>) -> Result<Tensor> {
    match norm {
        Some(weight) => Ok(w
            .forward_normed(NormedInput {
                x,
                residual: None,
                weight,
                eps: EPS,
            })?
            .1),
        None => w.engine().bitlinear_tensor(x, weights),
    }
}

/// Wall times of [`generate`]'s decode steps, in milliseconds.
#[derive(Debug, Clone)]
pub struct StepTimes {
    /// Every step recorded, run and its output read back.
    pub total_ms: f64,
    /// The caller's thread recording the steps (until each step's last op call returned, the
    /// reads not included): where it comes close to `total_ms`, the host, not the GPU, sets
    /// the pace.
    pub record_ms: f64,
    /// The decode steps' GPU time, when profiled (see [`generate`]).
    pub gpu: Option<ProfileReport>,
    /// Bind groups the decode steps created (misses of the engine's bind-group cache: each
    /// costs the caller's thread a few µs).
    pub bind_groups_created: u64,
}

/// The prompt (`[prompt, hidden]` host values) as one prefill, then `steps` decode steps, each
/// fed the last hidden state before it and read back when it is done (as a server reads each
/// step's logits to sample the next token). Returns the prefill's last hidden state and every
/// step's, and the decode steps' wall times — with `profile`, also their
/// GPU time at that granularity (the engine's profiler: `Batch` spans are unperturbed,
/// `Dispatch` times every kernel and slows the steps).
pub fn generate(
    e: &Engine,
    layers: &[Layer],
    d: Dims,
    prompt: &[f32],
    profile: Option<ProfileGranularity>,
) -> Result<(Vec<Vec<f32>>, StepTimes)> {
    let mut s = Session::new(e, d)?;
    let x = e.upload_f32(prompt, &[d.prompt, d.hidden])?;
    let out = forward(e, layers, d, &mut s, &x)?;
    let mut last = e.slice(&out, 0, d.prompt - 1..d.prompt)?;
    let mut states = vec![last.read_f32()?];
    if let Some(g) = profile {
        e.set_profiling_granularity(g)?;
        e.set_profiling(true)?;
        e.reset_profile();
    }
    e.sync()?;
    let created = e.pool_stats().bind_groups_created;
    let t = Instant::now();
    let mut record = std::time::Duration::ZERO;
    for _ in 0..d.steps {
        let step = Instant::now();
        last = forward(e, layers, d, &mut s, &last)?;
        record += step.elapsed();
        states.push(last.read_f32()?);
    }
    let total_ms = t.elapsed().as_secs_f64() * 1e3;
    let record_ms = record.as_secs_f64() * 1e3;
    let bind_groups_created = e.pool_stats().bind_groups_created - created;
    let gpu = match profile {
        Some(_) => {
            let report = e.profile_report()?;
            e.set_profiling(false)?;
            Some(report)
        }
        None => None,
    };
    Ok((
        states,
        StepTimes {
            total_ms,
            record_ms,
            gpu,
            bind_groups_created,
        },
    ))
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
    // `--2b4t`: BitNet b1.58 2B4T's shapes (30 layers, hidden 2560, 20 / 5 heads of 128, FFN
    // 6912; 521 MB of packed weights), a 32-position prompt and 16 steps.
    let full = std::env::args().any(|a| a == "--2b4t");
    let dims = if full {
        Dims {
            hidden: 2560,
            heads: 20,
            kv_heads: 5,
            ffn: 6912,
            layers: 30,
            prompt: 32,
            steps: 16,
            sub_norms: false,
        }
    } else {
        Dims {
            hidden: 256,
            heads: 4,
            kv_heads: 2,
            ffn: 512,
            layers: 2,
            prompt: 6,
            steps: 8,
            sub_norms: false,
        }
    };
    // `--layers=N` overrides the layer count (how differences grow with depth), `--steps=N` the
    // decode steps (steadier timings), `--prompt=N` the prompt (decode at a longer context).
    let flag =
        |name: &str| std::env::args().find_map(|a| a.strip_prefix(name)?.parse::<usize>().ok());
    let dims = Dims {
        layers: flag("--layers=").unwrap_or(dims.layers),
        steps: flag("--steps=").unwrap_or(dims.steps).max(1),
        prompt: flag("--prompt=").unwrap_or(dims.prompt).max(1),
        // `--sub-norms`: with 2B4T's sub-norms in front of o and down.
        sub_norms: std::env::args().any(|a| a == "--sub-norms"),
        ..dims
    };
    let per_step = |ms: f64| ms / dims.steps as f64;
    // `--cpu-only` / `--gpu-only`: one engine alone (its decode time; no comparison).
    let only = ["--cpu-only", "--gpu-only"]
        .into_iter()
        .find(|f| std::env::args().any(|a| a == *f));
    if let Some(flag) = only {
        let on_gpu = flag == "--gpu-only";
        let e = if on_gpu { Engine::new() } else { Engine::cpu() };
        print!("{}", e.info());
        let model = Model::random(dims, 42)?;
        let prompt = random(7, dims.prompt * dims.hidden, 1.0);
        let layers = upload(&e, &model)?;
        if on_gpu {
            generate(&e, &layers, dims, &prompt, None)?; // warm-up: pipelines, buffer pool
        }
        let (_, t) = if on_gpu {
            generate(&e, &layers, dims, &prompt, None)?
        } else {
            rayon::scope(|_| generate(&e, &layers, dims, &prompt, None))?
        };
        println!(
            "decode:    {:.2} ms per step (its caller's thread recording {:.2} ms, {:.1} bind groups created; {} steps after a {}-position prefill)",
            per_step(t.total_ms),
            per_step(t.record_ms),
            t.bind_groups_created as f64 / dims.steps as f64,
            dims.steps,
            dims.prompt
        );
        return Ok(());
    }
    let (gpu, cpu) = (Engine::new(), Engine::cpu());
    // The adapter, and where ops run (the dispatch line).
    print!("{}", gpu.info());
    let model = Model::random(dims, 42)?;
    let prompt = random(7, dims.prompt * dims.hidden, 1.0);

    // Weights go to each engine once; a sequence moves only the prompt in and the states out.
    let (on_gpu, on_cpu) = (upload(&gpu, &model)?, upload(&cpu, &model)?);
    generate(&gpu, &on_gpu, dims, &prompt, None)?; // warm-up: pipelines, buffer pool
    let (got, gpu_ms) = generate(&gpu, &on_gpu, dims, &prompt, None)?;
    // The CPU engine's steps from inside rayon's pool: its BitLinears' task splits then skip
    // the hand-off from an outside thread (see the crate docs, "CPU threads").
    let (want, cpu_ms) = rayon::scope(|_| generate(&cpu, &on_cpu, dims, &prompt, None))?;

    // The matmul_f32 tolerance of the cross-check suite, looser than that of every f32 op used
    // here (attention's included): room for their compounding over the layers and steps.
    let (abs, rel) = (1e-5, 1e-4);
    let (diff, ok) = compare(&got.concat(), &want.concat(), abs, rel);
    println!(
        "decode:    {:.2} ms per step on this engine (its caller's thread recording {:.2} ms, {:.1} bind groups created), {:.2} ms on the CPU engine ({} steps after a {}-position prefill)",
        per_step(gpu_ms.total_ms),
        per_step(gpu_ms.record_ms),
        gpu_ms.bind_groups_created as f64 / dims.steps as f64,
        per_step(cpu_ms.total_ms),
        dims.steps,
        dims.prompt
    );
    let largest = want.concat().iter().fold(0f32, |m, v| m.max(v.abs()));
    let first = compare(&got[0], &want[0], abs, rel).0;
    println!(
        "max |GPU - CPU| over the hidden states: {diff:.3e} (largest |x| {largest:.3e}; after the prefill {first:.3e}; tolerance {abs:e} + {rel:e}·|x|)"
    );
    // At the small size the states must agree; at 2B4T's, or with more layers or steps, int8
    // activation quantization can round a value across a step where the backends' floats differ
    // in the last bit, and the states drift apart from there: reported, not asserted.
    // `--profile`: the decode steps again, timed on the GPU: their batches' spans (the GPU's
    // busy time), then every kernel (perturbed by the timestamps around each).
    if std::env::args().any(|a| a == "--profile") {
        for g in [ProfileGranularity::Batch, ProfileGranularity::Dispatch] {
            match generate(&gpu, &on_gpu, dims, &prompt, Some(g)) {
                Ok((_, StepTimes { gpu: Some(r), .. })) => println!(
                    "GPU time per decode step ({g:?} timestamps): {:.3} ms\n{r}",
                    r.total_ns() as f64 / 1e6 / dims.steps as f64
                ),
                Ok(_) => {}
                Err(e) => println!("no GPU profile ({g:?}): {e}"),
            }
        }
    }
    let resized = ["--layers=", "--steps=", "--prompt="]
        .iter()
        .any(|f| flag(f).is_some());
    assert!(
        ok || full || resized,
        "the engine's states are out of tolerance of the CPU engine's"
    );
    Ok(())
}
