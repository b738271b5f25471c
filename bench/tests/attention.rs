//! The attention section end to end: a `--quick --filter attention` run on the machine's adapter
//! (lavapipe here) fills it with real timings, and `bitnet-bench merge` renders it with PyTorch's
//! figures, or "not measured" where a peers file (or our report) predates the section.

mod common;

use bitnet_bench::attention::{
    self, AttentionCase, AttentionResult, AttentionSpec, LAYOUT_2B4T, LAYOUT_8B,
};
use bitnet_bench::measure::Clock;
use bitnet_bench::report::Report;
use common::{line, ms};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch directory of this test process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bitnet-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bitnet-bench"));
    c.env("RUST_LOG", "off");
    c
}

/// `bitnet-bench merge` of `ours` and `peers` (raw JSON text, if any); returns RESULTS.md.
fn merge(dir: &Path, ours: &Report, peers: Option<&str>) -> String {
    let (o, p, r) = (
        dir.join("ours.json"),
        dir.join("peers.json"),
        dir.join("RESULTS.md"),
    );
    std::fs::write(&o, serde_json::to_string(ours).unwrap()).unwrap();
    let mut cmd = bench();
    cmd.arg("merge")
        .arg("--ours")
        .arg(&o)
        .arg("--results")
        .arg(&r);
    if let Some(text) = peers {
        std::fs::write(&p, text).unwrap();
        cmd.arg("--peers").arg(&p);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&r).unwrap()
}

/// Our report (the shared synthetic one, 1 TB/s roofline) with an attention section: 2B4T
/// decode over 512 positions at 5 µs (2.64 MB → 528 GB/s, 52.8 % of the roofline) with a 4 µs
/// append, an 8B decode whose GPU step failed, and a 2B4T prefill at 1 ms.
fn ours_with_attention() -> Report {
    let mut r = common::ours();
    let mut d2 = AttentionCase::new(&AttentionSpec::decode(LAYOUT_2B4T, 512), 103);
    d2.gpu = Some(ms(0.005, Clock::Timestamp));
    d2.cpu = Some(ms(0.5, Clock::Cpu));
    d2.append = Some(ms(0.004, Clock::Timestamp));
    let mut d8 = AttentionCase::new(&AttentionSpec::decode(LAYOUT_8B, 4096), 8);
    d8.gpu_error = Some("shader | failed".into());
    let prefill = AttentionSpec {
        layout: LAYOUT_2B4T,
        tq: 512,
        tk: 512,
    };
    let mut p = AttentionCase::new(&prefill, 35);
    p.gpu = Some(ms(1.0, Clock::Timestamp));
    r.attention = Some(AttentionResult {
        path: attention::PATH.into(),
        append_path: attention::APPEND_PATH.into(),
        cases: vec![d2, d8, p],
    });
    r
}

/// The peers' side: SDPA fp16 and fp32 on the 2B4T decode (fp32 after a failed `enable_gqa`) and
/// the prefill (fp32 failed), fp16 appends.
const PEERS_WITH_ATTENTION: &str = r#"{"schema": "bitnet-bench-peers/1", "device": "GPU <&>", "cases": [], "stacks": [],
  "attention": [
    {"impl": "torch_sdpa_fp16", "model": "2B4T", "tq": 1, "tk": 512, "hq": 20, "hkv": 5, "d": 128,
     "causal": true, "gqa": "enable_gqa", "backend": "flash_attention",
     "method": "cuda_graph_per_call", "copies": 200, "ms": 0.01, "min_ms": 0.01, "samples": 30},
    {"impl": "torch_sdpa_fp32", "model": "2B4T", "tq": 1, "tk": 512, "hq": 20, "hkv": 5, "d": 128,
     "causal": true, "gqa": "repeat_interleave", "backend": "efficient_attention", "ms": 0.02,
     "note": "enable_gqa failed (RuntimeError: x); K/V expanded instead"},
    {"impl": "torch_sdpa_fp16", "model": "2B4T", "tq": 512, "tk": 512, "hq": 20, "hkv": 5,
     "d": 128, "causal": true, "gqa": "enable_gqa", "ms": 0.25},
    {"impl": "torch_sdpa_fp32", "model": "2B4T", "tq": 512, "tk": 512, "hq": 20, "hkv": 5,
     "d": 128, "causal": true, "error": "RuntimeError: out of memory"},
    {"impl": "torch_kv_append_fp16", "model": "2B4T", "tq": 1, "tk": 512, "hq": 20, "hkv": 5,
     "d": 128, "causal": true, "method": "cuda_graph_per_call", "copies": 16, "ms": 0.002}
  ]}"#;

/// A quick run of the attention cases on the machine's adapter: every case in the JSON with
/// positive GPU, cpu-ref and (decode) append times, and the block in the printed table. The
/// inputs rotate (8 MiB of copies) so that path runs too. No timing assertion beyond "positive".
#[test]
fn quick_attention_run_measures_every_case() {
    let dir = scratch("attention-run");
    let json = dir.join("ours.json");
    let out = bench()
        .args([
            "--quick",
            "--no-progress",
            "--filter",
            "attention",
            "--cold-bytes",
            "8",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("== attention"), "{stdout}");
    let r: Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let a = r.attention.expect("an attention section");
    let ids: Vec<&str> = a.cases.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "attention decode 2B4T Tk=512",
            "attention prefill 2B4T Tq=128 Tk=128"
        ]
    );
    for c in &a.cases {
        let positive = |m: Option<bitnet_bench::measure::Measurement>, what: &str| {
            let m = m.unwrap_or_else(|| panic!("{} {what} missing: {c:?}", c.id));
            assert!(m.median_ms > 0.0 && m.median_ms.is_finite(), "{c:?}");
        };
        positive(c.gpu, "GPU");
        positive(c.cpu, "cpu-ref");
        if c.is_decode() {
            positive(c.append, "append");
        } else {
            assert!(c.append.is_none() && c.append_error.is_none(), "{c:?}");
        }
        assert!(c.copies > 1 && c.bytes > 0 && c.flops > 0, "{c:?}");
    }
    assert!(r.cases.is_empty() && r.stack.is_none() && r.batch.is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Merge with a peers file that has the section: ratios PyTorch ÷ ours per case and per append,
/// "not measured" where either side failed, and the section after the existing ones.
#[test]
fn merge_renders_attention_with_ratios() {
    let dir = scratch("attention-merge");
    let md = merge(&dir, &ours_with_attention(), Some(PEERS_WITH_ATTENTION));
    let title = "## Attention (decode and prefill) and KV append vs PyTorch SDPA";
    assert!(md.contains(title), "{md}");
    assert!(
        md.find("## Weight and activation quantization").unwrap() < md.find(title).unwrap(),
        "{md}"
    );
    // 2B4T decode: 528 GB/s, 52.8 % of 1 TB/s; fp16 0.01 / 0.005 = 2×, fp32 0.02 / 0.005 = 4×.
    let d2 = line(&md, "| decode 2B4T Tk=512 |");
    assert!(
        d2.contains("| 5.00 µs (ts) | 528 | 52.8 |")
            && d2.contains("| 500.0 µs | 10.0 µs | 20.0 µs | 2.00× | 4.00× |"),
        "{d2}"
    );
    // 8B: our GPU step failed and the peers have nothing: no ratio, the reason listed once.
    let d8 = line(&md, "| decode 8B Tk=4096 |");
    assert!(
        d8.contains("| not measured | – | – |") && d8.ends_with("| not measured | – | – |"),
        "{d8}"
    );
    assert!(
        md.contains("- ours: not measured (1×) — GPU: shader / failed"),
        "{md}"
    );
    // Prefill: compute bound; fp16 0.25 / 1 = 0.25×, fp32 failed (its reason listed).
    let p = line(&md, "| prefill 2B4T Tq=512 Tk=512 |");
    assert!(
        p.contains("| compute |") && p.contains("| 250.0 µs | not measured | 0.25× | – |"),
        "{p}"
    );
    assert!(md.contains("RuntimeError: out of memory"), "{md}");
    // Appends: ours 4 µs, fp16 2 µs → 0.50×; fp32 absent; 8B's append not measured.
    let a2 = line(&md, "| 2B4T (5 kv heads × 128) | 512 |");
    assert!(
        a2.contains("| 4.00 µs (ts) | 2.00 µs | not measured | 0.50× | – |"),
        "{a2}"
    );
    let a8 = line(&md, "| 8B (8 kv heads × 128) | 4096 |");
    assert!(a8.contains("| not measured | not measured |"), "{a8}");
    assert!(
        md.contains(
            "- PyTorch torch_sdpa_fp16: grouped heads by enable_gqa, backend flash_attention"
        ),
        "{md}"
    );
    // A workaround of the script names its case.
    assert!(
        md.contains(
            "- PyTorch torch_sdpa_fp32 2B4T Tq 1 Tk 512: grouped heads by repeat_interleave, \
             backend efficient_attention, enable_gqa failed (RuntimeError: x); K/V expanded instead."
        ),
        "{md}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A peers file from before the section (no `attention` key) still merges: the PyTorch cells
/// read "not measured", no ratio; our own figures stay. And a report of ours from before the
/// section (no `attention` key) merges with no attention section at all.
#[test]
fn merge_with_older_files_reads_not_measured() {
    let dir = scratch("attention-old");
    // The shared peers (linear cases and stacks) as a file written before the section existed.
    let mut old_peers = serde_json::to_value(common::peers()).unwrap();
    old_peers.as_object_mut().unwrap().remove("attention");
    let old_peers = &old_peers.to_string();
    let md = merge(&dir, &ours_with_attention(), Some(old_peers));
    assert!(md.contains("## Headline"), "{md}");
    let d2 = line(&md, "| decode 2B4T Tk=512 |");
    assert!(
        d2.contains("| 5.00 µs (ts) |") && d2.ends_with("| not measured | not measured | – | – |"),
        "{d2}"
    );
    let a2 = line(&md, "| 2B4T (5 kv heads × 128) | 512 |");
    assert!(
        a2.ends_with("| not measured | not measured | – | – |"),
        "{a2}"
    );

    // Our report written before the section existed: its JSON has no `attention` key.
    let mut old = serde_json::to_value(common::ours()).unwrap();
    old.as_object_mut().unwrap().remove("attention");
    let ours: Report = serde_json::from_value(old).unwrap();
    assert!(ours.attention.is_none());
    let md = merge(&dir, &ours, Some(PEERS_WITH_ATTENTION));
    assert!(
        md.contains("Our attention cases were not measured in this run"),
        "{md}"
    );
    let md = merge(&dir, &ours, Some(old_peers));
    assert!(!md.contains("Attention (decode"), "{md}");
    std::fs::remove_dir_all(&dir).unwrap();
}
