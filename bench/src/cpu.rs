//! The CPU side: every workload through bitnet-cpu-ref on all host cores (rayon), wall time.
//! Inputs are built before timing; only the op itself is timed ("resident data").

use crate::data;
use crate::measure::{Measurement, RepeatPolicy, time_cpu};
use crate::report::HostReport;
use crate::workload::{
    LAYER_2B4T_READS, LinearInput, OpKind, StackSpec, Workload, stack_weight_scale,
};
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
/// the chained data flow of a real decode (`LAYER_2B4T_READS`), from resident packed weights.
/// cpu-ref fails on a non-finite output, so this also proves the chained stack's values stay
/// finite with `stack_weight_scale`.
pub fn time_stack(spec: StackSpec, policy: RepeatPolicy) -> Result<Measurement, cpu::Error> {
    let weights = spec
        .matrices()
        .iter()
        .enumerate()
        .map(|(i, &(n, k))| data::ternary_scaled(n, k, 1000 + i as u64, stack_weight_scale(k)))
        .collect::<Result<Vec<_>, _>>()?;
    let x0 = data::floats(spec.m * 2560, 2560);
    time_cpu(policy, || {
        let mut x = x0.clone();
        for layer in weights.chunks(LAYER_2B4T_READS.len()) {
            let mut outs: Vec<Vec<f32>> = Vec::with_capacity(layer.len());
            for (w, reads) in layer.iter().zip(LAYER_2B4T_READS) {
                let input = match reads {
                    LinearInput::LayerInput => &x,
                    LinearInput::Output(j) => &outs[j],
                };
                let y = cpu::bitlinear(input, spec.m, w)?;
                outs.push(y);
            }
            x = outs.pop().unwrap_or_default();
        }
        black_box(x);
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
