//! The decode example's model on the host (`decode_step.rs`): sizes, deterministic random
//! weights (ternary codes and norm weights), the same for every engine.

use bitnet_wgpu::{Result, TernaryMatrix};

/// Model and sequence sizes.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub hidden: usize,
    pub heads: usize,
    /// Key/value heads (grouped-query attention: `heads` is a multiple of it).
    pub kv_heads: usize,
    pub ffn: usize,
    pub layers: usize,
    /// Positions of the prompt (the prefill).
    pub prompt: usize,
    /// Decode steps after the prompt.
    pub steps: usize,
    /// BitNet b1.58 2B4T's sub-norms: an RMSNorm in front of the o projection (over the attention
    /// output) and one in front of the down projection (over the gated activation).
    pub sub_norms: bool,
}

impl Dims {
    /// Dimension of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Positions of a whole sequence: the prompt and the decode steps.
    pub fn positions(&self) -> usize {
        self.prompt + self.steps
    }
}

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

/// A random ternary `[n, k]` matrix (codes -1, 0, 1 about a third each, scale 0.016: what
/// absmean quantization makes of weights with standard deviation 0.02), generated as codes so
/// that a 2B4T-sized model takes seconds, not the minutes of quantizing gigabytes of floats.
pub fn ternary(seed: u64, n: usize, k: usize) -> Result<TernaryMatrix> {
    let mut s = seed;
    let codes: Vec<i8> = (0..n * k)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let z = (s ^ (s >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            ((z >> 40) % 3) as i8 - 1
        })
        .collect();
    Ok(TernaryMatrix::from_i8(&codes, n, k, 0.016)?)
}

/// One layer's weights on the host: ternary matrices (`[N, K]`, quantized once) and norm weights.
pub struct HostLayer {
    pub attn_norm: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    /// q, k, v, o, gate, up, down.
    pub w: Vec<TernaryMatrix>,
    /// The sub-norms' weights (over hidden, then over FFN), where the model has them.
    pub sub_norms: Option<[Vec<f32>; 2]>,
}

/// The model on the host; the same for every engine.
pub struct Model {
    pub dims: Dims,
    pub layers: Vec<HostLayer>,
}

impl Model {
    /// Random weights from `seed` (host data: every engine gets the same ternary weights).
    pub fn random(dims: Dims, seed: u64) -> Result<Model> {
        let (h, f, kv) = (dims.hidden, dims.ffn, dims.kv_heads * dims.head_dim());
        let mut seed = seed;
        let mut next_seed = || {
            seed += 1;
            seed
        };
        let mut layers = Vec::new();
        for _ in 0..dims.layers {
            // (N, K) of q, k, v, o, gate, up, down.
            let shapes = [(h, h), (kv, h), (kv, h), (h, h), (f, h), (f, h), (h, f)];
            let w = shapes
                .into_iter()
                .map(|(n, k)| ternary(next_seed(), n, k))
                .collect::<Result<_>>()?;
            let mut norm = |len| -> Vec<f32> {
                random(next_seed(), len, 0.1)
                    .iter()
                    .map(|v| 1.0 + v)
                    .collect()
            };
            // Drawn after the others: the weights without sub-norms stay what they were.
            let (attn_norm, ffn_norm) = (norm(h), norm(h));
            let sub_norms = dims.sub_norms.then(|| [norm(h), norm(f)]);
            layers.push(HostLayer {
                attn_norm,
                ffn_norm,
                w,
                sub_norms,
            });
        }
        Ok(Model { dims, layers })
    }
}
