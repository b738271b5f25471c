//! The CPU side: every workload through bitnet-cpu-ref on all host cores (rayon), wall time.
//! Inputs are built before timing; only the op itself is timed ("resident data").

use crate::data;
use crate::measure::{Measurement, RepeatPolicy, time_cpu};
use crate::report::HostReport;
use crate::workload::{OpKind, StackSpec, Workload};
use bitnet_cpu_ref as cpu;
use std::hint::black_box;

/// Times one workload on the CPU reference.
pub fn time_case(w: &Workload, policy: RepeatPolicy) -> Result<Measurement, cpu::Error> {
    match w.op {
        OpKind::Bitlinear => {
            let wq = data::ternary(w.n, w.k, seed(w))?;
            let x = data::floats(w.m * w.k, seed(w) + 1);
            time_cpu(policy, || {
                cpu::bitlinear(&x, w.m, &wq).map(|y| drop(black_box(y)))
            })
        }
        OpKind::WeightQuant => {
            let x = data::floats(w.n * w.k, seed(w));
            time_cpu(policy, || {
                cpu::quantize_weights(&x, w.n, w.k).map(|q| drop(black_box(q)))
            })
        }
        OpKind::ActQuant => {
            let x = data::floats(w.m * w.k, seed(w));
            time_cpu(policy, || {
                cpu::quantize_activations(&x, w.m, w.k).map(|q| drop(black_box(q)))
            })
        }
    }
}

/// Times the decode stack on the CPU: every layer's BitLinear (activation quant included), in
/// order, from resident packed weights.
pub fn time_stack(spec: StackSpec, policy: RepeatPolicy) -> Result<Measurement, cpu::Error> {
    let weights = spec
        .matrices()
        .iter()
        .enumerate()
        .map(|(i, &(n, k))| data::ternary(n, k, 1000 + i as u64))
        .collect::<Result<Vec<_>, _>>()?;
    let inputs: Vec<(usize, Vec<f32>)> = [2560usize, 6912]
        .iter()
        .map(|&k| (k, data::floats(spec.m * k, k as u64)))
        .collect();
    let input = |k: usize| {
        inputs
            .iter()
            .find(|(kk, _)| *kk == k)
            .map(|(_, x)| x.as_slice())
    };
    time_cpu(policy, || {
        for w in &weights {
            let x = input(w.k()).ok_or(cpu::Error::ZeroDimension {
                op: "bench stack",
                dim: "K",
            })?;
            black_box(cpu::bitlinear(x, spec.m, w)?);
        }
        Ok(())
    })
}

/// A per-workload seed, so GPU and CPU see the same kind of data.
pub fn seed(w: &Workload) -> u64 {
    (w.m as u64) << 40 ^ (w.n as u64) << 20 ^ w.k as u64 ^ w.op as u64
}

/// Describes the host CPU (model from `/proc/cpuinfo` where there is one).
pub fn host() -> HostReport {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    HostReport {
        cpu_model,
        threads: rayon::current_num_threads(),
        os: format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }
}
