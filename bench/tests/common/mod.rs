//! Synthetic reports shared by the output tests: our figures on a made-up 1 TB/s device, and
//! the PyTorch peers' on the same shapes.

use bitnet_bench::dispatch_floor::{COLD_BYTES, ColdRead, DispatchFloor};
use bitnet_bench::measure::{Clock, Measurement};
use bitnet_bench::peers::{PeerCase, PeerStack, PeersReport, impls};
use bitnet_bench::pool::PoolPeak;
use bitnet_bench::report::{
    CaseResult, DeviceReport, HostReport, Report, Roofline, SCHEMA, StackResult,
};
use bitnet_bench::workload::{OpKind, StackSpec, Workload};

/// One measurement of `v` ms (5 samples of 16 calls).
pub fn ms(v: f64, clock: Clock) -> Measurement {
    Measurement {
        median_ms: v,
        min_ms: v,
        max_ms: v,
        samples: 5,
        clock,
        calls_per_sample: 16,
    }
}

/// Our report: a 1 TB/s roofline, two GEMVs (one large shape missing), one prefill, one quant.
pub fn ours() -> Report {
    let case = |op, m, n, k, gpu: Option<f64>, cpu: Option<f64>| {
        let mut c = CaseResult::new(&Workload {
            op,
            shape: "t",
            m,
            n,
            k,
        });
        c.gpu = gpu.map(|v| ms(v, Clock::Timestamp));
        c.cpu = cpu.map(|v| ms(v, Clock::Cpu));
        if gpu.is_none() {
            c.gpu_error = Some("kernel | failed".into());
        } else {
            // Ratio 1.1 for BitLinear cases, 1.6 for quantization (to see both verdicts).
            let alloc = if op == OpKind::Bitlinear { 1100 } else { 1600 };
            c.gpu_pool = Some(PoolPeak {
                peak_allocated_bytes: alloc * m.max(1) as u64,
                peak_live_bytes: 1000 * m.max(1) as u64,
                hits: 1,
                misses: 1,
            });
        }
        c
    };
    let spec = StackSpec::DECODE_2B4T;
    Report {
        schema: SCHEMA.into(),
        version: "0.0.0".into(),
        date_utc: "2026-01-01T00:00:00Z".into(),
        command: "bitnet-bench --json x".into(),
        quick: false,
        device: Some(DeviceReport {
            name: "GPU <&>".into(),
            backend: "Vulkan".into(),
            driver: "1.2".into(),
            ..Default::default()
        }),
        host: HostReport {
            cpu_model: "cpu".into(),
            threads: 16,
            os: "linux".into(),
        },
        roofline: Some(Roofline {
            bytes: 1_000_000_000,
            time: ms(1.0, Clock::Timestamp),
            source: "test".into(),
            dispatch_floor: Some(DispatchFloor {
                tiny_dependent_us: 2.0,
                tiny_independent_us: 0.25,
                read_dependent_us: 2.5,
                read_independent_us: 0.5,
                // Chained 2B4T layer floor: o 4.0 + qkv 4.0 + down 4.5 + gate/up 5.5 = 18 µs.
                cold: std::array::from_fn(|i| ColdRead {
                    bytes: COLD_BYTES[i],
                    dependent_us: [4.0, 4.0, 4.5, 5.5, 6.0][i],
                    independent_us: 1.0,
                }),
            }),
        }),
        copy_probes: vec![],
        // 3 GB in 2 ms = 1500 GB/s: 150 % of the (made-up) 1 TB/s roofline.
        elementwise_probes: vec![Roofline {
            bytes: 3_000_000_000,
            time: ms(2.0, Clock::Timestamp),
            source: "engine add".into(),
            dispatch_floor: None,
        }],
        roofline_error: None,
        cases: vec![
            // 6912×2560 GEMV: bytes ≈ 4.44 MB + io; at 0.005 ms ≈ 890 GB/s = 89 % of 1 TB/s
            // serial, and (made up, to tell the two apart) 0.01 ms = 44.6 % overlapped.
            {
                let mut c = case(OpKind::Bitlinear, 1, 6912, 2560, Some(0.005), Some(0.5));
                c.gpu_overlapped = Some(ms(0.01, Clock::Timestamp));
                c
            },
            case(OpKind::Bitlinear, 1, 2560, 6912, None, Some(0.5)),
            case(OpKind::Bitlinear, 512, 2560, 2560, Some(1.0), None),
            case(OpKind::WeightQuant, 0, 6912, 2560, Some(0.2), Some(10.0)),
        ],
        stack: Some(StackResult {
            spec,
            matrices: 210,
            packed_weight_bytes: spec.packed_weight_bytes(),
            bytes: spec.bytes(),
            gpu: Some(ms(0.4, Clock::Timestamp)),
            gpu_wall: Some(ms(0.5, Clock::Wall)),
            gpu_chained: Some(ms(0.6, Clock::Timestamp)),
            gpu_chained_wall: Some(ms(0.7, Clock::Wall)),
            gpu_chain: Some(ms(0.55, Clock::Timestamp)),
            gpu_chain_wall: Some(ms(0.58, Clock::Wall)),
            gpu_chain_fused: true,
            gpu_chain_back_to_back: Some(ms(0.56, Clock::Wall)),
            gpu_error: None,
            cpu: None,
            cpu_error: Some("skipped".into()),
            gpu_pool: Some(PoolPeak {
                peak_allocated_bytes: 600,
                peak_live_bytes: 500,
                hits: 3,
                misses: 1,
            }),
        }),
        stream: None,
        batch: None,
        overhead: None,
        attention: None,
        pool: vec![],
        clock_keeper: false,
        notes: vec![],
    }
}

/// The peers: fp16 on two shapes, fp16 stacks in both data flows (CUDA graph).
pub fn peers() -> PeersReport {
    PeersReport {
        schema: bitnet_bench::peers::SCHEMA.into(),
        command: "python3 torch_peers.py".into(),
        device: "GPU <&>".into(),
        cases: vec![
            PeerCase {
                imp: impls::FP16_LINEAR.into(),
                m: 1,
                n: 6912,
                k: 2560,
                ms: Some(0.02),
                ..Default::default()
            },
            PeerCase {
                imp: impls::FP16_LINEAR.into(),
                m: 512,
                n: 2560,
                k: 2560,
                ms: Some(0.2),
                ..Default::default()
            },
        ],
        stacks: vec![
            PeerStack {
                imp: impls::FP16_LINEAR.into(),
                cuda_graph: true,
                layers: 30,
                m: 1,
                ms: Some(2.4),
                weight_bytes: Some(4_170_000_000),
                ..Default::default()
            },
            PeerStack {
                imp: impls::FP16_LINEAR.into(),
                cuda_graph: true,
                chained: true,
                layers: 30,
                m: 1,
                ms: Some(2.7),
                weight_bytes: Some(4_170_000_000),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

/// The first line of `text` (a rendered RESULTS.md or console table) starting with `start`.
pub fn line<'a>(text: &'a str, start: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line {start:?} in\n{text}"))
}
