//! `--svg FILE`: a hand-written horizontal bar chart of "% of copy-kernel roofline" per op and
//! shape (memory-bound cases and the decode stack), with the target lines at 70 % / 80 %.
//! A case's bar is its overlapped calls where measured (throughput; the copy kernel reaches its own
//! as one large dispatch per copy), else
//! its serial calls; the label says which.

use crate::report::Report;
use crate::workload::OpKind;

const WIDTH: f64 = 960.0;
const LABEL_W: f64 = 330.0;
const ROW_H: f64 = 20.0;
const TOP: f64 = 64.0;
const RIGHT_PAD: f64 = 70.0;

/// One bar: label, percent (None = not measured), colour.
struct Bar {
    label: String,
    pct: Option<f64>,
    color: &'static str,
}

fn color(op: OpKind) -> &'static str {
    match op {
        OpKind::Bitlinear => "#3b6fd4",
        OpKind::WeightQuant => "#d4873b",
        OpKind::ActQuant => "#3ba55c",
    }
}

/// Renders the chart; cases that are not memory bound have no bandwidth roofline and are left out.
/// Times of zero or below read "not measured" ([`Report::without_invalid_times`]): an infinite
/// percent would have no bar and no end to the grid.
pub fn render(report: &Report) -> String {
    let report = &report.clone().without_invalid_times();
    let roof = report.roofline.as_ref();
    let mut bars: Vec<Bar> = Vec::new();
    if let Some(s) = &report.stack {
        // Both data flows: independent (the 210 kernels may overlap) and chained as one
        // LinearChain dispatch (a real decode's dependencies), which is far from the roofline.
        let flows = [
            ("independent", s.gpu),
            ("chained, LinearChain", s.gpu_chain),
        ];
        for (flow, time) in flows {
            let pct = time
                .zip(roof)
                .map(|(t, r)| 100.0 * crate::report::gbps(s.bytes, t.median_ms) / r.gbps());
            bars.push(Bar {
                label: format!(
                    "decode stack, {flow} ({} matrices, M={})",
                    s.matrices, s.spec.m
                ),
                pct,
                color: "#7b3bd4",
            });
        }
    }
    for c in report.cases.iter().filter(|c| c.memory_bound) {
        let (pct, how) = match c.overlapped_roofline_pct(roof) {
            Some(p) => (Some(p), "overlapped"),
            None => (c.roofline_pct(roof), "serial"),
        };
        bars.push(Bar {
            label: format!("{} ({how})", c.id),
            pct,
            color: color(c.op),
        });
    }
    let max_pct = bars.iter().filter_map(|b| b.pct).fold(100.0f64, f64::max);
    let plot_w = WIDTH - LABEL_W - RIGHT_PAD;
    let x = |pct: f64| LABEL_W + plot_w * (pct / max_pct).clamp(0.0, 1.0);
    let height = TOP + ROW_H * bars.len() as f64 + 40.0;

    let mut s = String::new();
    s.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    ));
    s.push_str(&format!(
        "<rect width=\"{WIDTH}\" height=\"{height}\" fill=\"white\"/>\n"
    ));
    let device = report
        .device
        .as_ref()
        .map_or("no GPU adapter", |d| d.name.as_str());
    let copy = roof.map_or("copy roofline not measured".to_string(), |r| {
        format!("100 % = copy kernel {:.1} GB/s", r.gbps())
    });
    s.push_str(&format!(
        "<text x=\"10\" y=\"22\" font-size=\"16\" font-weight=\"bold\">{}</text>\n",
        esc(&format!("bitnet-bench: % of bandwidth roofline — {device}"))
    ));
    s.push_str(&format!(
        "<text x=\"10\" y=\"42\" fill=\"#555\">{}</text>\n",
        esc(&format!("{copy}; {}", report.date_utc))
    ));

    // Grid every 20 %, and the targets (80 % GEMV, 70 % quantization) dashed.
    let bottom = TOP + ROW_H * bars.len() as f64;
    let mut p = 0.0;
    while p <= max_pct + 1e-9 {
        s.push_str(&format!(
            "<line x1=\"{0:.1}\" y1=\"{TOP}\" x2=\"{0:.1}\" y2=\"{bottom}\" stroke=\"#ddd\"/>\
             <text x=\"{0:.1}\" y=\"{1}\" text-anchor=\"middle\" fill=\"#555\">{2:.0} %</text>\n",
            x(p),
            bottom + 16.0,
            p
        ));
        p += 20.0;
    }
    for (target, what) in [(80.0, "GEMV target"), (70.0, "quant target")] {
        s.push_str(&format!(
            "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{bottom}\" stroke=\"#c33\" stroke-dasharray=\"4 3\"/>\
             <text x=\"{0:.1}\" y=\"{2}\" text-anchor=\"middle\" fill=\"#c33\" font-size=\"10\">{what}</text>\n",
            x(target),
            TOP - 2.0,
            // Stagger the two labels so they never overlap.
            if target == 80.0 { TOP - 6.0 } else { TOP - 18.0 }
        ));
    }
    for (i, b) in bars.iter().enumerate() {
        let y = TOP + ROW_H * i as f64;
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            LABEL_W - 8.0,
            y + ROW_H * 0.7,
            esc(&b.label)
        ));
        match b.pct {
            Some(pct) => s.push_str(&format!(
                "<rect x=\"{LABEL_W}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{pct:.1} %</text>\n",
                y + 3.0,
                x(pct) - LABEL_W,
                ROW_H - 6.0,
                b.color,
                x(pct) + 4.0,
                y + ROW_H * 0.7
            )),
            None => s.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#999\">not measured</text>\n",
                LABEL_W + 4.0,
                y + ROW_H * 0.7
            )),
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Escapes text for XML content.
fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
