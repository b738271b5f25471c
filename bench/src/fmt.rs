//! Number formatting shared by the table, the SVG and RESULTS.md, so one figure reads the same
//! everywhere. Missing figures are spelled out, never invented.

/// What a missing figure is shown as.
pub const NOT_MEASURED: &str = "not measured";

/// A time in milliseconds with a unit that keeps 3–4 significant digits (`12.3 µs`, `1.234 ms`).
pub fn time_ms(ms: f64) -> String {
    if !ms.is_finite() {
        return "n/a".into();
    }
    if ms < 1.0 {
        let us = ms * 1e3;
        if us < 10.0 {
            format!("{us:.2} µs")
        } else {
            format!("{us:.1} µs")
        }
    } else if ms < 1000.0 {
        format!("{ms:.3} ms")
    } else {
        format!("{:.2} s", ms / 1e3)
    }
}

/// An optional time, or `dash` when absent.
pub fn opt_time(ms: Option<f64>, dash: &str) -> String {
    ms.map_or_else(|| dash.to_string(), time_ms)
}

/// A value with a fixed number of decimals, or `dash` when absent or not finite.
pub fn opt_num(v: Option<f64>, decimals: usize, dash: &str) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => dash.to_string(),
    }
}

/// A value with 3 significant digits (`1234`, `123`, `12.3`, `1.23`, `0.0123`), or `dash`: for
/// throughputs that span GB/s on lavapipe to TB/s on an H100.
pub fn opt_sig(v: Option<f64>, dash: &str) -> String {
    match v {
        Some(v) if v.is_finite() => {
            let a = v.abs();
            let decimals = if a >= 100.0 || a == 0.0 {
                0
            } else {
                (2.0 - a.log10().floor()) as usize
            };
            format!("{v:.decimals$}")
        }
        _ => dash.to_string(),
    }
}

/// A ratio as `"3.21×"`, or `dash`.
pub fn opt_ratio(v: Option<f64>, dash: &str) -> String {
    match v {
        Some(v) if v.is_finite() => {
            if v >= 100.0 {
                format!("{v:.0}×")
            } else if v >= 10.0 {
                format!("{v:.1}×")
            } else if v >= 0.1 {
                format!("{v:.2}×")
            } else {
                format!("{}×", opt_sig(Some(v), dash))
            }
        }
        _ => dash.to_string(),
    }
}

/// Bytes as MB / GB (10^6 / 10^9), for headers.
pub fn bytes(b: u64) -> String {
    if b >= 1_000_000_000 {
        format!("{:.2} GB", b as f64 / 1e9)
    } else {
        format!("{:.1} MB", b as f64 / 1e6)
    }
}

/// Pads every column of `rows` (first row = header) to its widest cell and joins them, with a
/// dashed rule under the header. The first column is left-aligned, the others right-aligned.
pub fn text_table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = (0..cols)
            .map(|c| {
                let s = row.get(c).map_or("", String::as_str);
                let pad = width[c].saturating_sub(s.chars().count());
                if c == 0 {
                    format!("{s}{}", " ".repeat(pad))
                } else {
                    format!("{}{s}", " ".repeat(pad))
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            let total = width.iter().sum::<usize>() + 2 * cols.saturating_sub(1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_missing() {
        assert_eq!(time_ms(0.00512), "5.12 µs");
        assert_eq!(time_ms(0.0512), "51.2 µs");
        assert_eq!(time_ms(2.5), "2.500 ms");
        assert_eq!(time_ms(2500.0), "2.50 s");
        assert_eq!(opt_time(None, NOT_MEASURED), NOT_MEASURED);
        assert_eq!(opt_ratio(Some(5.123), "-"), "5.12×");
        assert_eq!(opt_num(Some(f64::NAN), 1, "-"), "-");
        let sig: Vec<String> = [2712.3, 123.4, 12.34, 1.234, 0.01234, 0.0]
            .iter()
            .map(|&v| opt_sig(Some(v), "-"))
            .collect();
        assert_eq!(sig, ["2712", "123", "12.3", "1.23", "0.0123", "0"]);
    }

    #[test]
    fn table_aligns() {
        let t = text_table(&[
            vec!["a".into(), "bb".into()],
            vec!["ccc".into(), "d".into()],
        ]);
        assert_eq!(t, "a    bb\n-------\nccc   d\n");
    }
}
