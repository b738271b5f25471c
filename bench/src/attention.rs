//! The attention section: scaled-dot-product attention over a KV cache ([`Engine::attention`])
//! and the cache's append ([`KvCache::append`]), in the head layouts of BitNet-2B4T and an
//! 8B-class model, for side-by-side figures with PyTorch's SDPA
//! (`bench/peers/torch_peers.py`). What a case is and what it moves live here; how it is
//! timed in [`crate::attention_measure`].
//!
//! Decode cases attend one query (the newest position) over `Tk` cached positions; the prefill
//! case attends `Tq = Tk` queries causally. Every case is causal with `scale = 1 / sqrt(D)`.
//!
//! [`Engine::attention`]: bitnet_wgpu::Engine::attention
//! [`KvCache::append`]: bitnet_wgpu::KvCache::append

use crate::measure::Measurement;
use crate::report::{Roofline, gbps};
use serde::{Deserialize, Serialize};

/// Word every case id starts with (what `--filter attention` matches).
pub const ATTENTION_ID: &str = "attention";

/// The engine call timed per case.
pub const PATH: &str = "Engine::attention(q [Tq, Hq, D], k and v [Tk, Hkv, D], scale 1/sqrt(D), causal) on resident f32 tensors, output dropped at once (serial)";

/// The engine calls timed per KV append.
pub const APPEND_PATH: &str = "KvCache::append of k and v [1, Hkv, D] f32 on an Engine::kv_cache(Tk + 1, Hkv, D) holding Tk positions, then KvCache::truncate(Tk) (no view alive: no copy on write)";

/// An attention head layout of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLayout {
    /// Model label used in ids and tables.
    pub model: &'static str,
    /// Query heads.
    pub hq: usize,
    /// Key/value heads (grouped-query attention: `hq / hkv` query heads share one).
    pub hkv: usize,
    /// Values per head.
    pub d: usize,
}

/// BitNet b1.58 2B4T: 20 query heads, 5 key/value heads, head dimension 128.
pub const LAYOUT_2B4T: HeadLayout = HeadLayout {
    model: "2B4T",
    hq: 20,
    hkv: 5,
    d: 128,
};

/// An 8B-class model (Llama-3-8B): 32 query heads, 8 key/value heads, head dimension 128.
pub const LAYOUT_8B: HeadLayout = HeadLayout {
    model: "8B",
    hq: 32,
    hkv: 8,
    d: 128,
};

/// Cached positions of the decode cases: a short context (a chat's first turns, where a step's
/// fixed costs dominate), a medium and a long one.
pub const DECODE_TK: [usize; 3] = [64, 512, 4096];

/// Positions of the prefill case (`Tq = Tk`); `--quick` uses [`QUICK_PREFILL`].
pub const PREFILL: usize = 512;

/// The prefill length of `--quick` (a 512-token prefill takes seconds on a software adapter).
pub const QUICK_PREFILL: usize = 128;

/// One attention case: `Tq` queries over `Tk` positions in one head layout, causal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionSpec {
    /// The head layout.
    pub layout: HeadLayout,
    /// Queries (1 for decode).
    pub tq: usize,
    /// Key/value positions.
    pub tk: usize,
}

impl AttentionSpec {
    /// A decode step (one query) over `tk` cached positions.
    pub fn decode(layout: HeadLayout, tk: usize) -> AttentionSpec {
        AttentionSpec { layout, tq: 1, tk }
    }

    /// Whether this is a decode step (one query): memory bound, and its KV append is timed.
    pub fn is_decode(&self) -> bool {
        self.tq == 1
    }

    /// The id `--filter` matches: `attention decode 2B4T Tk=512`,
    /// `attention prefill 2B4T Tq=512 Tk=512`.
    pub fn id(&self) -> String {
        let model = self.layout.model;
        if self.is_decode() {
            format!("{ATTENTION_ID} decode {model} Tk={}", self.tk)
        } else {
            format!(
                "{ATTENTION_ID} prefill {model} Tq={} Tk={}",
                self.tq, self.tk
            )
        }
    }

    /// `1 / sqrt(D)`.
    pub fn scale(&self) -> f32 {
        1.0 / (self.layout.d as f32).sqrt()
    }

    /// `[Tq, Hq, D]`: q and the output.
    pub fn q_shape(&self) -> [usize; 3] {
        [self.tq, self.layout.hq, self.layout.d]
    }

    /// `[Tk, Hkv, D]`: k and v.
    pub fn kv_shape(&self) -> [usize; 3] {
        [self.tk, self.layout.hkv, self.layout.d]
    }

    /// Bytes of one set of f32 inputs (q, k, v): what one rotated copy holds.
    pub fn input_bytes(&self) -> u64 {
        let q: usize = self.q_shape().iter().product();
        let kv: usize = self.kv_shape().iter().product();
        4 * (q + 2 * kv) as u64
    }

    /// Compulsory traffic of one call: k and v read once (`Tk·Hkv·D·4` bytes each), q read and
    /// the output written (`Tq·Hq·D·4` bytes each).
    pub fn bytes(&self) -> u64 {
        let q: usize = self.q_shape().iter().product();
        self.input_bytes() + 4 * q as u64
    }

    /// Floating-point operations of one call: per attended (query, key) pair and query head, a
    /// `D`-long dot product and a `D`-long weighted sum (2 operations per multiply-add each).
    /// Query `i` attends `Tk - Tq + i + 1` keys (causal).
    pub fn flops(&self) -> u64 {
        let (tq, tk) = (self.tq as u64, self.tk as u64);
        let pairs = tq * (tk - tq) + tq * (tq + 1) / 2;
        4 * pairs * (self.layout.hq * self.layout.d) as u64
    }
}

/// The cases of a run: decode for both layouts at every [`DECODE_TK`], and a 2B4T prefill;
/// `--quick` keeps 2B4T only (as its linear shapes), decode at 512 positions and a
/// [`QUICK_PREFILL`]-token prefill.
pub fn specs(quick: bool) -> Vec<AttentionSpec> {
    let (layouts, tks, prefill): (&[HeadLayout], &[usize], usize) = if quick {
        (&[LAYOUT_2B4T], &DECODE_TK[1..2], QUICK_PREFILL)
    } else {
        (&[LAYOUT_2B4T, LAYOUT_8B], &DECODE_TK, PREFILL)
    };
    let mut v: Vec<AttentionSpec> = layouts
        .iter()
        .flat_map(|&l| tks.iter().map(move |&tk| AttentionSpec::decode(l, tk)))
        .collect();
    v.push(AttentionSpec {
        layout: LAYOUT_2B4T,
        tq: prefill,
        tk: prefill,
    });
    v
}

/// One case's figures, or why each is missing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionCase {
    /// Unique id (see [`AttentionSpec::id`]).
    pub id: String,
    /// Model whose head layout this is ("2B4T", "8B").
    pub model: String,
    /// Queries.
    pub tq: usize,
    /// Key/value positions.
    pub tk: usize,
    /// Query heads.
    pub hq: usize,
    /// Key/value heads.
    pub hkv: usize,
    /// Values per head.
    pub d: usize,
    /// Causal (the queries are the last `tq` of the `tk` positions); always true here.
    pub causal: bool,
    /// Score scale (`1 / sqrt(d)`).
    pub scale: f32,
    /// Compulsory bytes per call ([`AttentionSpec::bytes`]).
    pub bytes: u64,
    /// Floating-point operations per call ([`AttentionSpec::flops`]).
    pub flops: u64,
    /// Resident (q, k, v) sets the GPU calls rotate through (working set over `--cold-bytes`).
    pub copies: usize,
    /// GPU time per call (serial), if measured.
    pub gpu: Option<Measurement>,
    /// Why the GPU time is missing, if it is.
    pub gpu_error: Option<String>,
    /// cpu-ref time per call, if measured.
    pub cpu: Option<Measurement>,
    /// Why the cpu-ref time is missing, if it is.
    pub cpu_error: Option<String>,
    /// Decode cases: GPU time of one KV append (k and v of one position) on a cache holding
    /// `tk` positions.
    pub append: Option<Measurement>,
    /// Why the append time is missing, if it is.
    pub append_error: Option<String>,
}

impl AttentionCase {
    /// A case with no figures yet; `copies` is the rotation [`crate::attention_measure`] uses.
    pub fn new(spec: &AttentionSpec, copies: usize) -> AttentionCase {
        AttentionCase {
            id: spec.id(),
            model: spec.layout.model.into(),
            tq: spec.tq,
            tk: spec.tk,
            hq: spec.layout.hq,
            hkv: spec.layout.hkv,
            d: spec.layout.d,
            causal: true,
            scale: spec.scale(),
            bytes: spec.bytes(),
            flops: spec.flops(),
            copies,
            gpu: None,
            gpu_error: None,
            cpu: None,
            cpu_error: None,
            append: None,
            append_error: None,
        }
    }

    /// Whether this is a decode case (one query): memory bound, with a KV append.
    pub fn is_decode(&self) -> bool {
        self.tq == 1
    }

    /// Effective GPU bandwidth in GB/s of the compulsory traffic.
    pub fn gpu_gbps(&self) -> Option<f64> {
        self.gpu.map(|g| gbps(self.bytes, g.median_ms))
    }

    /// Percent of the copy-kernel roofline, for decode (memory-bound) cases only.
    pub fn roofline_pct(&self, roof: Option<&Roofline>) -> Option<f64> {
        let roof = roof.filter(|_| self.is_decode())?;
        Some(100.0 * self.gpu_gbps()? / roof.gbps())
    }

    /// GPU throughput in TFLOP/s.
    pub fn gpu_tflops(&self) -> Option<f64> {
        self.gpu
            .map(|g| self.flops as f64 / (g.median_ms * 1e-3) / 1e12)
    }

    /// `[Tq, Hq, D]` over `[Tk, Hkv, D]` as one short cell (`Tq 1 × Tk 512, 20/5 heads × 128`).
    pub fn dims(&self) -> String {
        format!(
            "Tq {} × Tk {}, {}/{} heads × {}",
            self.tq, self.tk, self.hq, self.hkv, self.d
        )
    }
}

/// The whole section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionResult {
    /// The engine call timed per case ([`PATH`]).
    pub path: String,
    /// The engine calls timed per append ([`APPEND_PATH`]).
    pub append_path: String,
    /// Per case, in [`specs`] order.
    pub cases: Vec<AttentionCase>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_bytes_and_flops() {
        let s = AttentionSpec::decode(LAYOUT_2B4T, 512);
        assert_eq!(s.id(), "attention decode 2B4T Tk=512");
        // k + v: 2 · 512·5·128·4 = 2 621 440; q + out: 2 · 20·128·4 = 20 480.
        assert_eq!(s.bytes(), 2_621_440 + 20_480);
        assert_eq!(s.flops(), 4 * 512 * 20 * 128);
        let p = AttentionSpec {
            layout: LAYOUT_2B4T,
            tq: 4,
            tk: 4,
        };
        assert_eq!(p.id(), "attention prefill 2B4T Tq=4 Tk=4");
        // 1 + 2 + 3 + 4 attended pairs.
        assert_eq!(p.flops(), 4 * 10 * 20 * 128);
        // Two layouts at three cache lengths, and the prefill; --quick: 2B4T at 512 and a prefill.
        let full = specs(false);
        assert_eq!(full.len(), 7);
        let quick = specs(true);
        assert!(quick.iter().all(|s| s.layout == LAYOUT_2B4T));
        assert_eq!((quick.len(), quick[0].tk), (2, 512));
    }
}
