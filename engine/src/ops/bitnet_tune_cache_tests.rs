//! Tests of `bitnet_tune_cache.rs`: the plan cache's device key, lines, file and compaction.

/// Engine options that change kernel times change the plan cache's device key (a plan
/// measured with every op chunked was served to default engines before).
#[test]
fn engine_options_that_change_times_are_in_the_device_key() {
    crate::test_gpu::assert_key_follows_engine_options(super::device_key);
}

/// A last line cut short (no newline) is never read as a plan: `gemm:8x4` cut to `gemm:8`
/// was a different, valid plan.
#[test]
fn cut_off_last_lines_are_not_plans() {
    use super::{format_line, parse_line};
    use crate::ops::bitnet_plan::{CoopKind, LinearPlan};
    let shape = (64, 2560, 6912, true);
    for plan in [
        LinearPlan::Gemm { t: 8, splits: 4 },
        LinearPlan::Coop {
            splits: 1,
            kind: CoopKind::Int8N96,
        },
    ] {
        let line = format_line("dev", shape, plan);
        for cut in 0..line.len() {
            let got = crate::cache_file::complete_lines(&line[..cut])
                .filter_map(|l| parse_line(l, "dev"))
                .last();
            assert!(got.is_none(), "{:?} loads as {got:?}", &line[..cut]);
        }
        let whole = crate::cache_file::complete_lines(&line)
            .filter_map(|l| parse_line(l, "dev"))
            .last();
        assert_eq!(whole, Some((shape, plan)));
    }
}

use super::*;
use crate::cache_file::location;

/// Writers of one plan file take turns: with the file past `MAX_LINES` every store compacts
/// (reads, then renames a rewrite over it), and a line appended between another writer's
/// read and rename was lost (116 of 400 kept before the lock).
#[test]
fn concurrent_stores_keep_every_plan() {
    let dir = std::env::temp_dir().join(format!("bitnet-plan-race-{}", std::process::id()));
    let path = dir.join("plans.txt");
    std::fs::create_dir_all(&dir).unwrap();
    let others: String = (0..MAX_LINES)
        .map(|i| format_line("other", (i, 64, 64, true), LinearPlan::Generic))
        .collect();
    std::fs::write(&path, others).unwrap();
    std::thread::scope(|s| {
        for t in 0..4usize {
            let path = &path;
            s.spawn(move || {
                for i in 0..25usize {
                    let shape = (1 + t * 100 + i, 2560, 2560, true);
                    store_at(path, "dev", shape, LinearPlan::Fused { lanes: 32 }).unwrap();
                }
            });
        }
    });
    let text = std::fs::read_to_string(&path).unwrap();
    let kept = crate::cache_file::complete_lines(&text)
        .filter(|l| parse_line(l, "dev").is_some())
        .count();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(kept, 100, "plans of the four writers kept");
}

/// A store after a cut-off last line drops the fragment: ended with a newline (as it was),
/// `gemm:8x4` cut to `gemm:8` became a whole line, a valid plan never measured.
#[test]
fn a_store_after_a_cut_off_line_drops_the_fragment() {
    let dir = std::env::temp_dir().join(format!("bitnet-plan-cut-{}", std::process::id()));
    let path = dir.join("plans.txt");
    std::fs::create_dir_all(&dir).unwrap();
    let kept = ((1, 2560, 2560, true), LinearPlan::Fused { lanes: 32 });
    let cut_shape = (64, 2560, 6912, true);
    let cut = format_line("dev", cut_shape, LinearPlan::Gemm { t: 8, splits: 4 });
    let fragment = &cut[..cut.find("x4").unwrap()];
    std::fs::write(&path, format_line("dev", kept.0, kept.1) + fragment).unwrap();
    let added = ((8, 640, 2560, true), LinearPlan::Vec4 { lanes: 64 });
    store_at(&path, "dev", added.0, added.1).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let plans: Vec<_> = crate::cache_file::complete_lines(&text)
        .filter_map(|l| parse_line(l, "dev"))
        .collect();
    assert_eq!(plans, [kept, added], "{text:?}");
    // Whole files are still appended to.
    let more = ((2, 640, 2560, false), LinearPlan::Generic);
    store_at(&path, "dev", more.0, more.1).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 3, "{text:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lines_round_trip_and_reject_garbage() {
    let plans = [
        LinearPlan::Fused { lanes: 32 },
        LinearPlan::Vec4 { lanes: 128 },
        LinearPlan::Batch { lanes: 16 },
        LinearPlan::Staged { lanes: 32 },
        LinearPlan::Lean { lanes: 16 },
        LinearPlan::LeanQ { lanes: 64 },
        LinearPlan::Generic,
        LinearPlan::Gemm { t: 8, splits: 1 },
        LinearPlan::Gemm { t: 4, splits: 8 },
        LinearPlan::Coop {
            splits: 1,
            kind: CoopKind::F16,
        },
        LinearPlan::Coop {
            splits: 4,
            kind: CoopKind::F16,
        },
        LinearPlan::Coop {
            splits: 1,
            kind: CoopKind::Int8,
        },
        LinearPlan::Coop {
            splits: 8,
            kind: CoopKind::Int8N96,
        },
    ];
    for (i, plan) in plans.into_iter().enumerate() {
        let shape = (i + 1, 2560, 6912, i % 2 == 0);
        let line = format_line("dev | key", shape, plan);
        assert_eq!(
            parse_line(line.trim_end(), "dev | key"),
            Some((shape, plan))
        );
        assert_eq!(parse_line(line.trim_end(), "other key"), None);
    }
    for bad in [
        "dev\t1 2 3\tgeneric",
        "dev\t1 2 3 2\tgeneric",
        "dev\t1 2 3 1\tfused:x",
        "dev\t1 2 3 1\tvec4",
        "dev\t1 2 3 1\tgemm:8\textra",
        "dev",
    ] {
        assert_eq!(parse_line(bad, "dev"), None, "{bad}");
    }
}

#[test]
fn compaction_keeps_the_latest_line_per_shape() {
    let text = "a\t1 2 3 0\tgeneric\nb\t1 2 3 0\tgemm:4\na\t1 2 3 0\tvec4:8\ngarbage\n";
    assert_eq!(compact(text), "a\t1 2 3 0\tvec4:8\nb\t1 2 3 0\tgemm:4\n");
}

#[test]
fn cache_path_follows_the_environment() {
    let home = Some(PathBuf::from("/home/u"));
    assert_eq!(
        resolve(location(Some("off")), None, home.clone(), None),
        None
    );
    assert_eq!(resolve(location(Some("0")), None, home.clone(), None), None);
    assert_eq!(
        resolve(location(Some("/tmp/p.txt")), None, home.clone(), None),
        Some(PathBuf::from("/tmp/p.txt"))
    );
    if cfg!(target_os = "linux") {
        let xdg = Some(PathBuf::from("/xdg"));
        assert_eq!(
            resolve(location(None), xdg, home.clone(), None),
            Some(PathBuf::from("/xdg/bitnet-wgpu/bitlinear-plans.txt"))
        );
        assert_eq!(
            resolve(location(Some("")), None, home, None),
            Some(PathBuf::from(
                "/home/u/.cache/bitnet-wgpu/bitlinear-plans.txt"
            ))
        );
        assert_eq!(resolve(location(None), None, None, None), None);
        // A relative XDG_CACHE_HOME is ignored (XDG rules), as is an empty one.
        for bad in ["cache", ""] {
            assert_eq!(
                resolve(location(None), Some(bad.into()), Some("/h".into()), None),
                Some(PathBuf::from("/h/.cache/bitnet-wgpu/bitlinear-plans.txt"))
            );
        }
    }
}
