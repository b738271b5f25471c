//! The decode attention kernel (`attention_decode.wgsl`: few query rows per kv head, D = 32, 64
//! or 128, up to 8 query heads per kv head) against cpu-ref: rows finished by one workgroup over
//! one to four chunks of 64 keys, rows split into records merged by the combine (one chunk per
//! record, and several), groups of 1 to 8 heads (5 and 3 included), ragged last chunks, several
//! causal rows whose records differ; and hand-computed outputs that must be exact.

use super::common::{engine, up, values};
use super::values_attention::check;

#[test]
fn decode_kernel_matches_cpu_ref() {
    // (Tq, Tk, Hq, Hkv, D, causal).
    let cases = [
        (1, 65, 16, 2, 128, true), // GQA 8, two chunks in one workgroup, one key in the last
        (1, 100, 8, 8, 32, false), // GQA 1, D = 32
        (1, 90, 10, 2, 64, true),  // GQA 5
        (3, 200, 8, 2, 64, true),  // three causal rows of 198 .. 200 keys, four chunks each
        (4, 1000, 12, 4, 128, true), // GQA 3, 16 records of one chunk (997 .. 1000 keys)
        (2, 1100, 8, 1, 64, false), // GQA 8, 18 records of one chunk, the last ragged
        (1, 5000, 4, 1, 32, true), // 79 chunks: 27 records of three, the last of one
        (5, 300, 20, 5, 128, true), // 2B4T's heads, rows of 296 .. 300 keys
        // Non-causal rows: every row attends all 10 keys (a row's key count must not grow with
        // its index as causal rows' do).
        (4, 10, 8, 2, 64, false),
    ];
    for (i, &case) in cases.iter().enumerate() {
        check(400 + 3 * i as u64, case, 1.0);
    }
    // Sharp scores (a spread of tens): most weights underflow, the key groups' maxima differ
    // widely, and the merges rescale hard — in one workgroup and across records.
    check(430, (1, 200, 8, 2, 64, true), 4.0);
    check(433, (1, 700, 8, 2, 128, true), 4.0);
}

/// Every weight exactly 1 (q = 0): each output is the mean of its kv head's values, and with
/// small integer values the sums are exact, so the correctly rounded division gives exactly the
/// mean rounded once — in one workgroup (3 chunks) and through the records (6 of one chunk).
#[test]
fn decode_kernel_uniform_weights_give_exact_means() {
    let e = engine();
    let (hq, hkv, d) = (8, 2, 128);
    for tk in [130, 330] {
        let v: Vec<f32> = (0..tk * hkv * d)
            .map(|x| ((x * 7 + x / d) % 11) as f32 - 5.0)
            .collect();
        let k = values(7, tk * hkv * d, -1.0, 1.0);
        let q = vec![0.0; hq * d];
        let y = e.attention(
            &up(e, &q, &[1, hq, d]),
            &up(e, &k, &[tk, hkv, d]),
            &up(e, &v, &[tk, hkv, d]),
            0.125,
            true,
        );
        let y = y.unwrap().read_f32().unwrap();
        for h in 0..hq {
            let g = h / (hq / hkv);
            for c in 0..d {
                let sum: f64 = (0..tk).map(|j| f64::from(v[(j * hkv + g) * d + c])).sum();
                let want = (sum / tk as f64) as f32;
                assert_eq!(y[h * d + c], want, "Tk {tk} head {h} dim {c}");
            }
        }
    }
}

/// One key scores 0 and every other -200 (their weights underflow to exactly 0): the output is
/// that key's value, bit for bit, wherever the key sits among the records.
#[test]
fn decode_kernel_one_dominant_key_gives_its_value() {
    let e = engine();
    let (tk, hq, hkv, d) = (300, 4, 1, 32);
    let v = values(9, tk * hkv * d, -4.0, 4.0);
    let mut q = vec![0.0; hq * d];
    for h in 0..hq {
        q[h * d] = 1.0;
    }
    for hot in [0, 63, 64, 200, 299] {
        let mut k = vec![0.0; tk * hkv * d];
        for j in 0..tk {
            k[j * d] = if j == hot { 0.0 } else { -200.0 };
        }
        let y = e.attention(
            &up(e, &q, &[1, hq, d]),
            &up(e, &k, &[tk, hkv, d]),
            &up(e, &v, &[tk, hkv, d]),
            1.0,
            false,
        );
        let y = y.unwrap().read_f32().unwrap();
        for h in 0..hq {
            assert_eq!(
                &y[h * d..(h + 1) * d],
                &v[hot * d..(hot + 1) * d],
                "key {hot}"
            );
        }
    }
}
