//! The JSON that `bench/peers/torch_peers.py` writes (PyTorch on the same shapes), and look-ups
//! that pair each of our cases with the matching peer figure.
//!
//! Parsing is lenient: every field but the schema tag is optional, so a partial or older peers
//! file still merges and whatever it lacks shows up as "not measured".

use serde::{Deserialize, Serialize};

/// Schema tag the peers script writes.
pub const SCHEMA: &str = "bitnet-bench-peers/1";

/// Peer implementation names used by the script.
pub mod impls {
    /// fp16 `torch.nn.functional.linear` (cuBLAS).
    pub const FP16_LINEAR: &str = "torch_fp16_linear";
    /// `torch._int_mm`, int8 × int8 → int32 (M padded to its constraints).
    pub const INT8_INT_MM: &str = "torch_int8_int_mm";
    /// Eager PyTorch absmean weight quantization (BitNet reference formula).
    pub const WEIGHT_QUANT: &str = "torch_weight_quant_eager";
    /// Eager PyTorch absmax activation quantization (BitNet reference formula).
    pub const ACT_QUANT: &str = "torch_act_quant_eager";
    /// `F.scaled_dot_product_attention` on fp16 q, k, v (`[1, H, T, D]`).
    pub const SDPA_FP16: &str = "torch_sdpa_fp16";
    /// `F.scaled_dot_product_attention` on fp32 q, k, v.
    pub const SDPA_FP32: &str = "torch_sdpa_fp32";
    /// In-place `index_copy_` of one position's k and v into preallocated fp16 caches.
    pub const KV_APPEND_FP16: &str = "torch_kv_append_fp16";
    /// The same into fp32 caches (our cache's dtype).
    pub const KV_APPEND_FP32: &str = "torch_kv_append_fp32";
}

/// One timed peer case.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerCase {
    /// Implementation, one of [`impls`].
    #[serde(rename = "impl")]
    pub imp: String,
    /// Rows (tokens) as requested; 0 for weight quantization.
    pub m: usize,
    /// Output features.
    pub n: usize,
    /// Input features.
    pub k: usize,
    /// Rows actually computed when the implementation needed padding (`_int_mm`).
    pub padded_m: Option<usize>,
    /// Median time in milliseconds (CUDA events).
    pub ms: Option<f64>,
    /// Fastest sample.
    pub min_ms: Option<f64>,
    /// Samples behind the median.
    pub samples: Option<usize>,
    /// Why it was not measured, if it was not.
    pub error: Option<String>,
}

/// The peer's version of the decode layer stack.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerStack {
    /// Implementation, one of [`impls`].
    #[serde(rename = "impl")]
    pub imp: String,
    /// Replayed as a CUDA graph (true) or launched eagerly (false).
    pub cuda_graph: bool,
    /// The chained data flow of a real decode (each linear reads its producer's output), not
    /// every linear reading the layer input.
    #[serde(default)]
    pub chained: bool,
    /// Transformer layers.
    pub layers: usize,
    /// Tokens.
    pub m: usize,
    /// Rows actually computed, if padded.
    pub padded_m: Option<usize>,
    /// Bytes of weights the peer streams per step.
    pub weight_bytes: Option<u64>,
    /// Median time in milliseconds.
    pub ms: Option<f64>,
    /// Fastest sample.
    pub min_ms: Option<f64>,
    /// Samples behind the median.
    pub samples: Option<usize>,
    /// Why it was not measured, if it was not.
    pub error: Option<String>,
}

/// One timed attention or KV-append case of the peer (the `attention` list of the file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerAttention {
    /// Implementation: [`impls::SDPA_FP16`], [`impls::SDPA_FP32`], [`impls::KV_APPEND_FP16`]
    /// or [`impls::KV_APPEND_FP32`].
    #[serde(rename = "impl")]
    pub imp: String,
    /// Model whose head layout this is ("2B4T", "8B").
    pub model: String,
    /// Queries (1 for decode and for appends).
    pub tq: usize,
    /// Key/value positions (appends: positions the cache held).
    pub tk: usize,
    /// Query heads.
    pub hq: usize,
    /// Key/value heads.
    pub hkv: usize,
    /// Values per head.
    pub d: usize,
    /// Causal masking as ours (decode needs no mask; prefill `is_causal=True`).
    pub causal: bool,
    /// How grouped-query heads were handled: `"enable_gqa"` or `"repeat_interleave"` (K/V
    /// expanded to the query heads outside the timed region).
    pub gqa: Option<String>,
    /// The SDPA backend torch chose, where it could tell (`flash_attention`, `math`, …).
    pub backend: Option<String>,
    /// Timing method (`cuda_graph_per_call`, eager fallbacks).
    pub method: Option<String>,
    /// Calls per timed graph replay (rotated input copies, or appends).
    pub copies: Option<usize>,
    /// What the script had to work around (a failed graph capture, a failed `enable_gqa`).
    pub note: Option<String>,
    /// Median time in milliseconds per call.
    pub ms: Option<f64>,
    /// Fastest sample.
    pub min_ms: Option<f64>,
    /// Samples behind the median.
    pub samples: Option<usize>,
    /// Why it was not measured, if it was not.
    pub error: Option<String>,
}

/// The whole peers file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeersReport {
    /// Should be [`SCHEMA`].
    pub schema: String,
    /// The exact command that produced the file.
    pub command: String,
    /// UTC time of the run.
    pub date_utc: String,
    /// `torch.__version__`.
    pub torch: String,
    /// `torch.version.cuda`.
    pub cuda: String,
    /// `torch.cuda.get_device_name()`.
    pub device: String,
    /// NVIDIA driver version (from `nvidia-smi`), if it could be read.
    pub driver: String,
    /// Host CPU threads (`os.cpu_count()`).
    pub host_threads: usize,
    /// Per shape and implementation.
    pub cases: Vec<PeerCase>,
    /// Decode stacks (eager and CUDA-graph variants).
    pub stacks: Vec<PeerStack>,
    /// Attention and KV appends (absent from files written before the section existed).
    pub attention: Vec<PeerAttention>,
    /// Free-form remarks from the script (padding, skipped parts).
    pub notes: Vec<String>,
}

impl PeersReport {
    /// Parses the script's JSON. Fields are optional, but the file must carry the script's
    /// [`SCHEMA`] tag: any other JSON object (or `[]`) would otherwise parse as an empty report
    /// and merge as "PyTorch: not measured" everywhere.
    pub fn from_json(text: &str) -> Result<PeersReport, serde_json::Error> {
        let p: PeersReport = serde_json::from_str(text)?;
        if p.schema != SCHEMA {
            return Err(serde::de::Error::custom(format!(
                "not a peers file of bench/peers/torch_peers.py: schema {:?}, expected {SCHEMA:?}",
                p.schema
            )));
        }
        Ok(p)
    }

    /// The report with every time that measures nothing (zero, negative, not finite; see
    /// [`crate::measure::valid_ms`]) taken out, its reason kept in the entry's `error` and one
    /// note added: such an entry reads "not measured", never a ratio or a verdict.
    pub fn without_invalid_times(mut self) -> PeersReport {
        let times = self.cases.iter_mut().map(|c| (&mut c.ms, &mut c.error));
        let times = times.chain(self.stacks.iter_mut().map(|s| (&mut s.ms, &mut s.error)));
        let times = times.chain(self.attention.iter_mut().map(|a| (&mut a.ms, &mut a.error)));
        let mut dropped = 0;
        for (ms, error) in times {
            if let Some(v) = *ms
                && !crate::measure::valid_ms(v)
            {
                *ms = None;
                error.get_or_insert_with(|| format!("invalid time {v} ms"));
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.notes.push(format!(
                "{dropped} time(s) of zero or below (or not finite) in the peers file: not measured"
            ));
        }
        self
    }

    /// The peer case for `imp` on `(m, n, k)`; `m` is ignored for weight quantization and `n` for
    /// activation quantization, which do not depend on them.
    pub fn case(&self, imp: &str, m: usize, n: usize, k: usize) -> Option<&PeerCase> {
        self.cases.iter().find(|c| {
            c.imp == imp
                && c.k == k
                && (imp == impls::WEIGHT_QUANT || c.m == m)
                && (imp == impls::ACT_QUANT || c.n == n)
        })
    }

    /// The peer's independent stack for `imp` with or without CUDA graph, for the given layer
    /// and token count.
    pub fn stack(&self, imp: &str, graph: bool, layers: usize, m: usize) -> Option<&PeerStack> {
        self.find_stack(imp, graph, false, layers, m)
    }

    /// [`PeersReport::stack`] for the chained data flow.
    pub fn stack_chained(
        &self,
        imp: &str,
        graph: bool,
        layers: usize,
        m: usize,
    ) -> Option<&PeerStack> {
        self.find_stack(imp, graph, true, layers, m)
    }

    /// The peer's attention or append entry `imp` for a case of ours. Appends match on the
    /// cache (`tk`, `hkv`, `d`) alone: they neither read q nor depend on the query count.
    pub fn attention_case(
        &self,
        imp: &str,
        c: &crate::attention::AttentionCase,
    ) -> Option<&PeerAttention> {
        let append = imp == impls::KV_APPEND_FP16 || imp == impls::KV_APPEND_FP32;
        self.attention.iter().find(|a| {
            a.imp == imp
                && (a.tk, a.hkv, a.d) == (c.tk, c.hkv, c.d)
                && (append || (a.tq, a.hq) == (c.tq, c.hq))
        })
    }

    fn find_stack(
        &self,
        imp: &str,
        graph: bool,
        chained: bool,
        layers: usize,
        m: usize,
    ) -> Option<&PeerStack> {
        self.stacks.iter().find(|s| {
            s.imp == imp
                && s.cuda_graph == graph
                && s.chained == chained
                && s.layers == layers
                && s.m == m
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that is not the script's (no or another schema tag: `{}`, `[]`, our own report)
    /// is refused: parsing is lenient, so it used to merge as a peers file with nothing in it.
    #[test]
    fn other_files_are_refused() {
        for text in [
            "{}",
            "[]",
            r#"{"cases": []}"#,
            r#"{"schema": "bitnet-bench/1"}"#,
        ] {
            let e = PeersReport::from_json(text).unwrap_err();
            assert!(e.to_string().contains(SCHEMA), "{text}: {e}");
        }
        assert!(PeersReport::from_json(r#"{"schema": "bitnet-bench-peers/1"}"#).is_ok());
    }

    #[test]
    fn lenient_parse_and_lookup() {
        let text = r#"{"schema":"bitnet-bench-peers/1","device":"X","cases":[
            {"impl":"torch_fp16_linear","m":1,"n":2560,"k":2560,"ms":0.01},
            {"impl":"torch_act_quant_eager","m":8,"n":0,"k":2560,"ms":0.02},
            {"impl":"torch_int8_int_mm","m":1,"n":640,"k":2560,"error":"boom"}],
            "stacks":[{"impl":"torch_fp16_linear","cuda_graph":true,"layers":30,"m":1,"ms":2.2}],
            "unknown_field": 3}"#;
        let p = PeersReport::from_json(text).unwrap();
        assert_eq!(
            p.case(impls::FP16_LINEAR, 1, 2560, 2560).unwrap().ms,
            Some(0.01)
        );
        assert_eq!(
            p.case(impls::ACT_QUANT, 8, 6912, 2560).unwrap().ms,
            Some(0.02)
        );
        assert!(
            p.case(impls::INT8_INT_MM, 1, 640, 2560)
                .unwrap()
                .ms
                .is_none()
        );
        assert!(p.case(impls::FP16_LINEAR, 8, 2560, 2560).is_none());
        assert_eq!(
            p.stack(impls::FP16_LINEAR, true, 30, 1).unwrap().ms,
            Some(2.2)
        );
        assert!(p.stack(impls::FP16_LINEAR, false, 30, 1).is_none());
    }
}
