//! The attention section of `bench/RESULTS.md`: our `Engine::attention` and `KvCache::append`
//! against PyTorch's SDPA and an in-place cache write, case by case, with the method notes
//! that say what the figures count.

use crate::attention::AttentionCase;
use crate::fmt::{NOT_MEASURED as NM, opt_num, opt_ratio, opt_sig, opt_time, time_ms};
use crate::measure::Measurement;
use crate::peers::{PeersReport, impls};
use crate::report::Report;

/// Title of the section.
pub(super) const TITLE: &str = "Attention (decode and prefill) and KV append vs PyTorch SDPA";

/// Appends the section: nothing when neither input has attention figures (older files), else
/// one table of attention calls, one of KV appends, and the method notes.
pub(super) fn attention(s: &mut String, ours: &Report, peers: Option<&PeersReport>) {
    let peer_rows = peers.map_or(0, |p| p.attention.len());
    let Some(a) = &ours.attention else {
        if peer_rows > 0 {
            s.push_str(&format!(
                "\n## {TITLE}\n\nOur attention cases were not measured in this run ({peer_rows} \
                 PyTorch figures in the peers file have nothing to pair with).\n"
            ));
        }
        return;
    };
    s.push_str(&format!("\n## {TITLE}\n\n"));
    s.push_str(&format!(
        "Ours: `{}`. PyTorch: `F.scaled_dot_product_attention` on `[1, H, T, D]` tensors. Ratios \
         are PyTorch ÷ ours (above 1: ours is faster).\n\n",
        a.path
    ));
    s.push_str("| case | shape | ours GPU (serial) | GB/s | % roofline | TFLOP/s | cpu-ref | PyTorch fp16 SDPA | PyTorch fp32 SDPA | fp16 ÷ ours | fp32 ÷ ours |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    let peer_ms = |imp: &str, c: &AttentionCase| {
        peers
            .and_then(|p| p.attention_case(imp, c))
            .and_then(|p| p.ms)
    };
    for c in &a.cases {
        let ours_ms = c.gpu.map(|g| g.median_ms);
        let (p16, p32) = (peer_ms(impls::SDPA_FP16, c), peer_ms(impls::SDPA_FP32, c));
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            c.id.trim_start_matches("attention "),
            c.dims(),
            cell(c.gpu),
            opt_sig(c.gpu_gbps(), "–"),
            if c.is_decode() {
                opt_num(c.roofline_pct(ours.roofline.as_ref()), 1, "–")
            } else {
                "compute".into()
            },
            opt_sig(c.gpu_tflops(), "–"),
            opt_time(c.cpu.map(|m| m.median_ms), NM),
            opt_time(p16, NM),
            opt_time(p32, NM),
            ratio(ours_ms, p16),
            ratio(ours_ms, p32),
        ));
    }
    let decode: Vec<&AttentionCase> = a.cases.iter().filter(|c| c.is_decode()).collect();
    if !decode.is_empty() {
        s.push_str(&format!(
            "\n**KV append** (one position's k and v, `[1, Hkv, D]`, into a cache holding Tk \
             positions). Ours: `{}`.\n\n",
            a.append_path
        ));
        s.push_str("| head layout | cache holds | ours GPU (serial) | PyTorch fp16 | PyTorch fp32 | fp16 ÷ ours | fp32 ÷ ours |\n");
        s.push_str("|---|---|---|---|---|---|---|\n");
        for c in decode {
            let ours_ms = c.append.map(|g| g.median_ms);
            let p16 = peer_ms(impls::KV_APPEND_FP16, c);
            let p32 = peer_ms(impls::KV_APPEND_FP32, c);
            s.push_str(&format!(
                "| {} ({} kv heads × {}) | {} | {} | {} | {} | {} | {} |\n",
                c.model,
                c.hkv,
                c.d,
                c.tk,
                cell(c.append),
                opt_time(p16, NM),
                opt_time(p32, NM),
                ratio(ours_ms, p16),
                ratio(ours_ms, p32),
            ));
        }
    }
    notes(s, a, peers);
}

/// Our time with its clock, or "not measured".
fn cell(m: Option<Measurement>) -> String {
    m.map_or(NM.to_string(), |g| {
        format!("{} ({})", time_ms(g.median_ms), g.clock.tag())
    })
}

/// PyTorch ÷ ours, or a dash when either is missing.
fn ratio(ours: Option<f64>, peer: Option<f64>) -> String {
    opt_ratio(ours.zip(peer).map(|(o, p)| p / o), "–")
}

/// The method notes, how PyTorch handled grouped heads and which backends it ran, and each
/// distinct reason a figure of ours is missing.
fn notes(s: &mut String, a: &crate::attention::AttentionResult, peers: Option<&PeersReport>) {
    s.push_str("\nMethod:\n\n");
    s.push_str(
        "- GB/s counts compulsory traffic: k and v read once (Tk·Hkv·D·4 bytes each, f32), q read \
                and the output written (Tq·Hq·D·4 bytes each). % roofline = GB/s ÷ the copy-kernel \
                roofline of the same run, for decode (one query: memory bound); prefill is compute \
                bound (TFLOP/s = 4·Hq·D per attended (query, key) pair ÷ time, causal).\n",
    );
    s.push_str("- Our op reads f32 k/v and computes in f32 (f32 scores, softmax and weighted sums). \
                PyTorch fp16 moves half our bytes (its memory-bound floor is half ours); fp32 moves \
                the same bytes as ours. The fp32 SDPA figure is the like-for-like one.\n");
    s.push_str("- Ours: GPU time as every case (profiler batch span of back-to-back calls ÷ calls), \
                inputs resident, (q, k, v) rotated through copies whose total exceeds `--cold-bytes`, \
                each output dropped at once (serial: every call waits for the one before it, as a \
                dependent op in a decode step). cpu-ref: the same case on all host cores, wall time.\n");
    s.push_str("- PyTorch: layout converted to `[1, H, T, D]` outside the timed region; decode attends \
                every key without a mask, prefill uses `is_causal=True` (Tq = Tk: the same mask as \
                ours); a CUDA graph of one call per rotated (q, k, v) copy, replayed and divided by \
                the copies. KV append: `index_copy_` of k and v into preallocated `[1, Hkv, capacity, D]` \
                caches at position Tk, a graph of several appends ÷ their count; ours appends then \
                truncates back, so every call writes that same position.\n");
    if let Some(p) = peers {
        let mut seen: Vec<String> = Vec::new();
        for e in &p.attention {
            let what = [
                e.gqa.as_ref().map(|g| format!("grouped heads by {g}")),
                e.backend.as_ref().map(|b| format!("backend {b}")),
                e.method.as_ref().map(|m| format!("timed as {m}")),
                e.note.as_ref().map(|n| n.replace('|', "/")),
            ];
            let what: Vec<String> = what.into_iter().flatten().collect();
            if !what.is_empty() {
                // A workaround is the case's own: name it.
                let who = match &e.note {
                    Some(_) => format!("{} {} Tq {} Tk {}", e.imp, e.model, e.tq, e.tk),
                    None => e.imp.clone(),
                };
                let line = format!("{who}: {}", what.join(", "));
                if !seen.contains(&line) {
                    seen.push(line);
                }
            }
        }
        for line in seen {
            s.push_str(&format!("- PyTorch {line}.\n"));
        }
    }
    let mut reasons: Vec<(String, usize)> = Vec::new();
    for c in &a.cases {
        for (side, e) in [
            ("GPU", &c.gpu_error),
            ("KV append", &c.append_error),
            ("CPU", &c.cpu_error),
        ] {
            if let Some(e) = e {
                let text = format!("{side}: {}", e.replace('|', "/"));
                match reasons.iter_mut().find(|(t, _)| *t == text) {
                    Some(r) => r.1 += 1,
                    None => reasons.push((text, 1)),
                }
            }
        }
    }
    for (text, n) in reasons {
        s.push_str(&format!("- ours: not measured ({n}×) — {text}\n"));
    }
    let peer_errors = peers
        .iter()
        .flat_map(|p| &p.attention)
        .filter_map(|e| e.error.as_ref().map(|x| (e, x)));
    for (e, x) in peer_errors {
        s.push_str(&format!(
            "- PyTorch {} {} Tq {} Tk {}: not measured — {}\n",
            e.imp,
            e.model,
            e.tq,
            e.tk,
            x.replace('|', "/")
        ));
    }
}
