//! What the benchmark measures: the op kinds, the BitNet shapes, and the decode layer stack.
//!
//! Every workload knows how many bytes it must move and how many integer operations it performs,
//! so that throughput and roofline figures are computed in one place, the same way for every backend
//! and for the PyTorch peers (the merge step reuses these formulas).

use serde::{Deserialize, Serialize};

/// One weight-matrix shape `[N, K]` (out features × in features) with a human-readable label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MatShape {
    /// Short label, e.g. `"2B q/o"`.
    pub label: &'static str,
    /// Output features (rows of the weight matrix).
    pub n: usize,
    /// Input features (columns of the weight matrix, the reduction length).
    pub k: usize,
}

/// BitNet b1.58 2B4T (hidden 2560, FFN 6912, KV 640) and 8B-class shapes, as in issue 5.
pub const SHAPES: &[MatShape] = &[
    MatShape {
        label: "2B q/o",
        n: 2560,
        k: 2560,
    },
    MatShape {
        label: "2B k/v",
        n: 640,
        k: 2560,
    },
    MatShape {
        label: "2B gate/up",
        n: 6912,
        k: 2560,
    },
    MatShape {
        label: "2B down",
        n: 2560,
        k: 6912,
    },
    MatShape {
        label: "8B gate/up",
        n: 14336,
        k: 4096,
    },
    MatShape {
        label: "8B down",
        n: 4096,
        k: 14336,
    },
];

/// Token counts (rows of the activation matrix): decode (1), small batch (8), prefill (64, 512).
pub const TOKEN_COUNTS: &[usize] = &[1, 8, 64, 512];

/// The op families the benchmark times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// BitLinear from float activations: activation quant + ternary GEMV/GEMM + rescale.
    Bitlinear,
    /// Weight quantization (absmean) of an `[N, K]` f32 matrix to packed ternary.
    WeightQuant,
    /// Activation quantization (absmax per row) of an `[M, K]` f32 matrix to int8.
    ActQuant,
}

impl OpKind {
    /// Stable name used in tables, JSON and `--filter`.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Bitlinear => "bitlinear",
            OpKind::WeightQuant => "weight_quant",
            OpKind::ActQuant => "act_quant",
        }
    }
}

/// One benchmark case: an op on concrete sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// The op.
    pub op: OpKind,
    /// Label of the weight shape this case comes from.
    pub shape: &'static str,
    /// Activation rows (tokens); `0` for weight quantization, which has no activations.
    pub m: usize,
    /// Output features.
    pub n: usize,
    /// Input features.
    pub k: usize,
}

impl Workload {
    /// A unique, filterable id, e.g. `"bitlinear 2B q/o M=1 2560x2560"`.
    pub fn id(&self) -> String {
        match self.op {
            OpKind::WeightQuant => {
                format!("{} {} {}x{}", self.op.name(), self.shape, self.n, self.k)
            }
            OpKind::ActQuant => format!(
                "{} {} M={} K={}",
                self.op.name(),
                self.shape,
                self.m,
                self.k
            ),
            OpKind::Bitlinear => {
                format!(
                    "{} {} M={} {}x{}",
                    self.op.name(),
                    self.shape,
                    self.m,
                    self.n,
                    self.k
                )
            }
        }
    }

    /// Compulsory memory traffic in bytes, counted once per pass the math requires.
    ///
    /// * BitLinear: packed 2-bit weights + f32 activations in + f32 outputs (+ one f32 scale).
    /// * Weight quant: the f32 input once and the packed output, the least any kernel moves. The
    ///   math reads the input twice (the global absmean must be known before any weight is
    ///   rounded); a kernel serves the second read from cache where the matrix fits there, and
    ///   from memory where it does not ([`Workload::two_pass_bytes`] counts it, for those).
    /// * Activation quant: one pass per row (a row fits on chip): f32 in, i8 out, one f32 scale/row.
    pub fn bytes(&self) -> u64 {
        let (m, n, k) = (self.m as u64, self.n as u64, self.k as u64);
        let packed_weights = n * k.div_ceil(16) * 4;
        match self.op {
            OpKind::Bitlinear => packed_weights + m * k * 4 + m * n * 4 + 4,
            OpKind::WeightQuant => n * k * 4 + packed_weights + 4,
            OpKind::ActQuant => m * k * 4 + m * k + m * 4,
        }
    }

    /// Weight quant's traffic with both reads of the input counted (the math's two passes, as a
    /// matrix larger than the cache needs); [`Workload::bytes`] for the other ops.
    pub fn two_pass_bytes(&self) -> u64 {
        match self.op {
            OpKind::WeightQuant => self.bytes() + self.n as u64 * self.k as u64 * 4,
            _ => self.bytes(),
        }
    }

    /// Integer operations (multiply + add = 2) for BitLinear; element count for quantization.
    pub fn ops(&self) -> u64 {
        let (m, n, k) = (self.m as u64, self.n as u64, self.k as u64);
        match self.op {
            OpKind::Bitlinear => 2 * m * n * k,
            OpKind::WeightQuant => n * k,
            OpKind::ActQuant => m * k,
        }
    }

    /// Whether the op is bound by memory bandwidth on any current GPU (GEMV and quantization);
    /// larger BitLinear batches are compute bound and the copy kernel is no roofline for them.
    pub fn memory_bound(&self) -> bool {
        match self.op {
            OpKind::Bitlinear => self.m <= 8,
            OpKind::WeightQuant | OpKind::ActQuant => true,
        }
    }
}

/// Every case for the given shapes and token counts, in table order (per shape: weight quant,
/// then activation quant and BitLinear per M). Activation quant depends on `[M, K]` only, so it
/// appears once per distinct `K` (under the first shape that has it).
pub fn workloads(shapes: &[MatShape], tokens: &[usize]) -> Vec<Workload> {
    let mut out = Vec::new();
    let mut seen_k = Vec::new();
    for s in shapes {
        let base = |op, m| Workload {
            op,
            shape: s.label,
            m,
            n: s.n,
            k: s.k,
        };
        out.push(base(OpKind::WeightQuant, 0));
        if !seen_k.contains(&s.k) {
            seen_k.push(s.k);
            for &m in tokens {
                out.push(base(OpKind::ActQuant, m));
            }
        }
        for &m in tokens {
            out.push(base(OpKind::Bitlinear, m));
        }
    }
    out
}

/// One transformer layer's linear layers in BitNet-2B4T order: (name, N, K).
pub const LAYER_2B4T: &[(&str, usize, usize)] = &[
    ("q", 2560, 2560),
    ("k", 640, 2560),
    ("v", 640, 2560),
    ("o", 2560, 2560),
    ("gate", 6912, 2560),
    ("up", 6912, 2560),
    ("down", 2560, 6912),
];

/// What each linear of a [`LAYER_2B4T`] layer reads in the data flow of a real decode (the
/// chained stack): q, k and v the layer input, o the output of q (standing in for attention),
/// gate and up the output of o, down the output of gate; down's output is the next layer's input.
pub const LAYER_2B4T_READS: [LinearInput; 7] = [
    LinearInput::LayerInput,
    LinearInput::LayerInput,
    LinearInput::LayerInput,
    LinearInput::Output(0),
    LinearInput::Output(3),
    LinearInput::Output(3),
    LinearInput::Output(4),
];

/// The input of one linear of a layer in the chained stack (see [`LAYER_2B4T_READS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearInput {
    /// The layer's input (the previous layer's down output).
    LayerInput,
    /// The output of the layer's linear with this index in [`LAYER_2B4T`].
    Output(usize),
}

/// Weight scale of the stack's matrices with `k` inputs: keeps activations of the chained stack
/// near their magnitude from layer to layer (max |y| ≈ 0.8 · √K · s · max |x| for random ternary
/// weights), so 120 dependent linears neither overflow nor flush to zero.
pub fn stack_weight_scale(k: usize) -> f32 {
    1.25 / (k as f32).sqrt()
}

/// The headline workload: one decode token through every linear layer of a BitNet-2B4T stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackSpec {
    /// Transformer layers (30 for BitNet-2B4T).
    pub layers: usize,
    /// Tokens per step (1 for decode).
    pub m: usize,
}

impl StackSpec {
    /// The real model: 30 layers, one token.
    pub const DECODE_2B4T: StackSpec = StackSpec { layers: 30, m: 1 };

    /// Every distinct weight matrix of the stack as `(N, K)`, layer by layer.
    pub fn matrices(&self) -> Vec<(usize, usize)> {
        (0..self.layers)
            .flat_map(|_| LAYER_2B4T.iter().map(|&(_, n, k)| (n, k)))
            .collect()
    }

    /// Bytes of packed ternary weights in the stack (≈ 521 MB for the real model).
    pub fn packed_weight_bytes(&self) -> u64 {
        self.matrices()
            .iter()
            .map(|&(n, k)| (n * k.div_ceil(16) * 4) as u64)
            .sum()
    }

    /// Bytes the same stack occupies in fp16 (what the PyTorch fp16 peer streams).
    pub fn fp16_weight_bytes(&self) -> u64 {
        self.matrices()
            .iter()
            .map(|&(n, k)| (n * k * 2) as u64)
            .sum()
    }

    /// Compulsory traffic of one step: packed weights + f32 activations in and out per layer.
    pub fn bytes(&self) -> u64 {
        let io: u64 = self
            .matrices()
            .iter()
            .map(|&(n, k)| (self.m * (n + k) * 4) as u64)
            .sum();
        self.packed_weight_bytes() + io
    }

    /// Integer operations of one step.
    pub fn ops(&self) -> u64 {
        self.matrices()
            .iter()
            .map(|&(n, k)| (2 * self.m * n * k) as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_stack_matches_the_issue() {
        let s = StackSpec::DECODE_2B4T;
        assert_eq!(s.matrices().len(), 210);
        let mb = s.packed_weight_bytes() as f64 / 1e6;
        assert!((515.0..525.0).contains(&mb), "{mb} MB");
        // The shared GPU notes quote 4.17 GB for the fp16 stack.
        let gb = s.fp16_weight_bytes() as f64 / 1e9;
        assert!((4.16..4.18).contains(&gb), "{gb} GB");
    }

    /// Weight quant counts its input once (the judged figure) and twice (the two-pass context);
    /// the other ops' two counts agree.
    #[test]
    fn weight_quant_counts_its_input_once() {
        let w = workloads(SHAPES, TOKEN_COUNTS);
        let q = w.iter().find(|w| w.op == OpKind::WeightQuant).unwrap();
        let (n, k) = (q.n as u64, q.k as u64);
        let packed = n * k.div_ceil(16) * 4;
        assert_eq!(q.bytes(), n * k * 4 + packed + 4);
        assert_eq!(q.two_pass_bytes(), 2 * n * k * 4 + packed + 4);
        let b = w.iter().find(|w| w.op == OpKind::Bitlinear).unwrap();
        assert_eq!(b.two_pass_bytes(), b.bytes());
    }

    #[test]
    fn workload_ids_are_unique() {
        let w = workloads(SHAPES, TOKEN_COUNTS);
        let mut ids: Vec<_> = w.iter().map(|w| w.id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), w.len());
        // 6 weight quants, 6 × 4 BitLinears, activation quant for K ∈ {2560, 6912, 4096, 14336} × 4 M.
        assert_eq!(w.len(), 6 + 6 * 4 + 4 * 4);
    }
}
