//! Engines made and dropped one after another in one process, as a server that re-creates its
//! engine after a lost device does: every engine must find the GPU again, compute right, and
//! give back what it held (threads and open files stay level). Every third engine loses its
//! device first, so lost devices are dropped too.
//!
//! `ENGINE_CHURN_COUNT` sets how many engines (default 36). On the H200 the 30th engine of such a
//! process found no Vulkan adapter while each engine made its own wgpu instance: dropping the last
//! one unloaded the NVIDIA driver, which could not be loaded again for ever (`device.rs`,
//! `instance_from_env`). `ENGINE_CHURN_TRACE=1` prints each engine's threads, open files and
//! resident memory.

use bitnet_tests::{gpu_engine, lose_device, random_f32, random_normal};
use bitnet_wgpu::cpu_ref;

/// The tests of this file one at a time: the sequence's footprint check counts the process's
/// threads and files, which another test's engines would change.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A Linux process's thread count, open files and resident KiB (zeros elsewhere).
fn process_footprint() -> (usize, usize, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let files = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    (field("Threads:") as usize, files, field("VmRSS:"))
}

/// `name`'s value as a count, else `default`.
fn count_from_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small BitLinear each engine runs: activations, their rows, the weights and cpu-ref's result.
fn small_bitlinear(seed: u64) -> (Vec<f32>, usize, cpu_ref::TernaryMatrix, Vec<f32>) {
    let (m, n, k) = (2, 24, 96);
    let w = cpu_ref::quantize_weights(&random_normal(seed, n * k, 0.02), n, k).unwrap();
    let x = random_f32(seed + 1, m * k, -2.0, 2.0);
    let want = cpu_ref::bitlinear(&x, m, &w).unwrap();
    (x, m, w, want)
}

#[test]
fn engines_made_and_dropped_in_sequence_keep_finding_the_gpu() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let count = count_from_env("ENGINE_CHURN_COUNT", 36);
    let trace = std::env::var("ENGINE_CHURN_TRACE").is_ok_and(|v| v == "1");
    let (x, m, w, want) = small_bitlinear(5);
    let mut settled = None;
    for i in 0..count {
        let started = std::time::Instant::now();
        let e = gpu_engine();
        assert_eq!(e.bitlinear(&x, m, &w).unwrap(), want, "engine {i}");
        if i % 3 == 1 {
            lose_device(&e);
            assert_eq!(
                e.bitlinear(&x, m, &w).unwrap(),
                want,
                "engine {i}, device lost"
            );
        }
        drop(e);
        let (threads, files, rss_kib) = process_footprint();
        if trace {
            eprintln!(
                "engine {i}: {:.0} ms, {threads} threads, {files} files, {rss_kib} KiB resident",
                started.elapsed().as_secs_f64() * 1e3
            );
        }
        // The first engines warm process-wide state (the driver's own threads, wgpu's caches);
        // from the fourth on, each dropped engine must leave the process as it found it.
        if i == 3 {
            settled = Some((threads, files));
        } else if let Some((t0, f0)) = settled {
            assert!(
                threads <= t0 && files <= f0,
                "engine {i} left {threads} threads and {files} files (after engine 3: {t0}, {f0})"
            );
        }
    }
}

/// Engines alive at the same time (a server with an engine per worker): each makes its own
/// device and computes right while the others hold theirs. `ENGINE_CHURN_ALIVE` sets how many
/// (default 12). Where a driver runs out of devices, the constructor must say so with a typed
/// error naming how many engines the process holds — never panic or hang — and the engines made
/// before must keep working: the test counts that as the end of the run, not a failure, and
/// prints how many were made. (H200, 2026-12-01: 63 engines at once, and the 64th device request
/// failed with "Parent device is lost".)
#[test]
fn engines_alive_at_once_each_compute_right() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let count = count_from_env("ENGINE_CHURN_ALIVE", 12);
    let (x, m, w, want) = small_bitlinear(7);
    let mut engines = Vec::new();
    for i in 0..count {
        match bitnet_wgpu::Engine::gpu() {
            Ok(e) => {
                assert_eq!(e.bitlinear(&x, m, &w).unwrap(), want, "engine {i}");
                engines.push(e);
            }
            Err(e) if i > 0 => {
                assert!(
                    matches!(&e, bitnet_wgpu::Error::NoAdapter(m) if m.contains("other GPU engines")),
                    "engine {i}: {e:?}"
                );
                println!("engine {i} refused: {e}");
                break;
            }
            Err(e) => panic!("the first engine: {e}"),
        }
    }
    println!("{} engines alive at once", engines.len());
    for (i, e) in engines.iter().enumerate() {
        let t = e.upload_f32(&x, &[m, x.len() / m]).unwrap();
        assert_eq!(t.read_f32().unwrap(), x, "engine {i} after all were made");
        assert_eq!(e.bitlinear(&x, m, &w).unwrap(), want, "engine {i}");
        assert_eq!(e.dispatch_stats().fallbacks, 0, "engine {i} ran on its GPU");
    }
}
