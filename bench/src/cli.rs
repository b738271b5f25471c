//! Command-line parsing (hand-written: two subcommands and a dozen flags need no parser crate).

use crate::error::{BenchError, Result};
use std::path::PathBuf;

/// Usage text printed by `--help`.
pub const USAGE: &str = "\
bitnet-bench — headless benchmark of bitnet-wgpu on the best adapter, vs the CPU reference

USAGE:
  bitnet-bench [run] [OPTIONS]
  bitnet-bench merge --ours FILE [--peers FILE] --results FILE

A full run takes about 10 minutes on lavapipe (software Vulkan), a few on a data-center GPU.

RUN OPTIONS:
  --quick             2B4T shapes, M in {1, 8}, few repeats, small stack, attention decode over
                      512 positions and a 128-token prefill (~1-2 min on lavapipe)
  --filter TEXT       only cases whose id contains TEXT (case-insensitive, repeatable);
                      ids look like 'bitlinear 2B q/o M=1 2560x2560', 'act_quant ...',
                      'weight_quant ...', 'stack' for the decode stack, and
                      'attention decode 2B4T Tk=512' / 'attention prefill 2B4T Tq=512 Tk=512'
                      (attention + KV append; 'attention' selects them all)
  --repeats N         timed GPU repeats per case, median reported (default 30; quick 3)
  --cpu-repeats N     timed CPU repeats per case (default 3; quick 1)
  --cpu-budget SECS   stop repeating a CPU case after this much time (default 2; quick 0.5)
  --layers N          layers of the decode stack (default 30; quick 4)
  --cold-bytes MIB    rotate weight copies until the working set exceeds this (default 256; quick 0)
  --stream-mib MIB    f32 activations streamed through act quant + BitLinear (issue 4; default
                      1024; quick 64); filter id 'stream'. 'batch' selects the B=8 / B=1 case
  --tuning SPEC       force BitNet kernel plans, e.g. 'lanes=64,fuse=0' (keys: lanes,
                      gemm_block, splits, autotune, fuse, batch, staged, lean, leanq, coop,
                      generic; coopkernel=coop|coopi8|coopi8n96)
  --no-cpu            skip the CPU reference
  --no-gpu            skip the GPU (CPU reference only); without it, no usable adapter
                      is an error (wgpu's WGPU_BACKEND / WGPU_ADAPTER_NAME pick the adapter)
  --json FILE         write the full report as JSON (input of `merge`)
  --svg FILE          write a bar chart of % of copy-kernel roofline per op
  --peers FILE        PyTorch peers JSON (bench/peers/torch_peers.py), for --results
  --results FILE      write RESULTS.md (ours + peers side by side, targets)
  --time-limit SECS   skip the steps that would start after this many seconds (recorded as
                      skipped); the decode stack runs first, right after the GPU is opened
                      and the roofline measured (~20-30 s on lavapipe), so a limit longer than
                      that never cuts it
  --no-progress       no progress bar on stderr
  --no-clock-keeper   let the GPU idle while the host records each timed batch: its clocks
                      may then drop between samples, and the figures with them
  -h, --help          this text
  -V, --version       the version

A filter matches anywhere in an id, so 'bitlinear' also selects the streaming case (its id
names act_quant+bitlinear) and 'decode' the stack, the batched case and the attention decodes.

MERGE: writes RESULTS.md from a saved --json report and the peers JSON.
";

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Print usage.
    Help,
    /// Print the version.
    Version,
    /// Measure.
    Run(RunArgs),
    /// Combine saved JSON into RESULTS.md.
    Merge {
        /// Our `--json` report.
        ours: PathBuf,
        /// The peers JSON, if any.
        peers: Option<PathBuf>,
        /// Where to write RESULTS.md.
        results: PathBuf,
    },
}

/// Options of a measuring run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunArgs {
    /// Reduced workload set.
    pub quick: bool,
    /// Case-id substrings (lower case); empty = everything.
    pub filters: Vec<String>,
    /// GPU timed repeats per case.
    pub repeats: usize,
    /// CPU timed repeats per case.
    pub cpu_repeats: usize,
    /// CPU time budget per case, seconds.
    pub cpu_budget_s: f64,
    /// Decode-stack layers.
    pub layers: usize,
    /// Weight-rotation working set in bytes.
    pub cold_bytes: u64,
    /// Bytes of f32 activations the streaming case uploads.
    pub stream_bytes: u64,
    /// Run the CPU reference.
    pub cpu: bool,
    /// Run the GPU.
    pub gpu: bool,
    /// `--json` target.
    pub json: Option<PathBuf>,
    /// `--svg` target.
    pub svg: Option<PathBuf>,
    /// `--peers` input.
    pub peers: Option<PathBuf>,
    /// `--results` target.
    pub results: Option<PathBuf>,
    /// Show the progress bar.
    pub progress: bool,
    /// Wall-clock budget of the whole run, seconds.
    pub time_limit_s: Option<f64>,
    /// `--tuning` settings forced on the engine's BitNet ops (A/B runs of kernel plans).
    pub tuning: Option<bitnet_wgpu::BitnetTuning>,
    /// Keep a real GPU busy between timed batches (`clock_keeper.rs`); `--no-clock-keeper`.
    pub clock_keeper: bool,
}

impl RunArgs {
    /// Whether a case id passes `--filter`.
    pub fn selects(&self, id: &str) -> bool {
        let id = id.to_lowercase();
        self.filters.is_empty() || self.filters.iter().any(|f| id.contains(f.as_str()))
    }
}

/// Parses `args` (without the program name).
pub fn parse(args: &[String]) -> Result<Command> {
    let mut it = args.iter().peekable();
    let merge = match it.peek().map(|s| s.as_str()) {
        Some("merge") => {
            it.next();
            true
        }
        Some("run") => {
            it.next();
            false
        }
        _ => false,
    };
    let quick = args.iter().any(|a| a == "--quick");
    let mut run = RunArgs {
        quick,
        filters: Vec::new(),
        repeats: if quick { 3 } else { 30 },
        cpu_repeats: if quick { 1 } else { 3 },
        cpu_budget_s: if quick { 0.5 } else { 2.0 },
        layers: if quick { 4 } else { 30 },
        cold_bytes: if quick { 0 } else { 256 << 20 },
        stream_bytes: if quick { 64 << 20 } else { 1 << 30 },
        cpu: true,
        gpu: true,
        json: None,
        svg: None,
        peers: None,
        results: None,
        progress: true,
        clock_keeper: true,
        time_limit_s: None,
        tuning: None,
    };
    let mut ours = None;
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| BenchError::Usage(format!("{name} needs a value")))
        };
        // merge reads saved files only: a run option there would be silently ignored.
        let merge_flag = matches!(
            flag.as_str(),
            "-h" | "--help" | "-V" | "--version" | "--ours" | "--peers" | "--results"
        );
        if merge && !merge_flag {
            return Err(BenchError::Usage(format!(
                "merge takes only --ours, --peers and --results, not {flag:?}"
            )));
        }
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--quick" => {}
            "--filter" => run.filters.push(value(flag)?.to_lowercase()),
            "--repeats" => run.repeats = number(flag, &value(flag)?, 1)?,
            "--cpu-repeats" => run.cpu_repeats = number(flag, &value(flag)?, 1)?,
            "--cpu-budget" => run.cpu_budget_s = seconds(flag, &value(flag)?)?,
            "--layers" => run.layers = number(flag, &value(flag)?, 1)?,
            "--cold-bytes" => run.cold_bytes = mib(flag, &value(flag)?, 0)?,
            "--stream-mib" => run.stream_bytes = mib(flag, &value(flag)?, 1)?,
            "--no-cpu" => run.cpu = false,
            "--no-gpu" => run.gpu = false,
            "--no-progress" => run.progress = false,
            "--no-clock-keeper" => run.clock_keeper = false,
            "--tuning" => run.tuning = Some(tuning(&value(flag)?)?),
            "--time-limit" => run.time_limit_s = Some(seconds(flag, &value(flag)?)?),
            "--json" => run.json = Some(value(flag)?.into()),
            "--svg" => run.svg = Some(value(flag)?.into()),
            "--peers" => run.peers = Some(value(flag)?.into()),
            "--results" => run.results = Some(value(flag)?.into()),
            "--ours" if merge => ours = Some(PathBuf::from(value(flag)?)),
            other => return Err(BenchError::Usage(format!("unknown argument {other:?}"))),
        }
    }
    if merge {
        let ours = ours.ok_or_else(|| BenchError::Usage("merge needs --ours FILE".into()))?;
        let results = run
            .results
            .ok_or_else(|| BenchError::Usage("merge needs --results FILE".into()))?;
        return Ok(Command::Merge {
            ours,
            peers: run.peers,
            results,
        });
    }
    if run.peers.is_some() && run.results.is_none() {
        return Err(BenchError::Usage(
            "--peers is only used with --results FILE".into(),
        ));
    }
    Ok(Command::Run(run))
}

/// Parses `--tuning`: comma-separated `key=value` of [`bitnet_wgpu::BitnetTuning`] — `lanes=N`,
/// `gemm_block=N`, `splits=N` (GEMM K slices), and `0`/`1` for `autotune`, `fuse`, `batch`, `staged`, `lean`, `leanq`, `coop`,
/// `generic`; and `coopkernel=coop|coopi8|coopi8n96` (which cooperative-matrix GEMM).
pub fn tuning(spec: &str) -> Result<bitnet_wgpu::BitnetTuning> {
    let mut t = bitnet_wgpu::BitnetTuning::default();
    for item in spec.split(',').filter(|s| !s.is_empty()) {
        let bad = || BenchError::Usage(format!("--tuning: bad item {item:?}"));
        let (key, v) = item.split_once('=').ok_or_else(bad)?;
        if key == "coopkernel" {
            t.gemm_coop_kernel = Some(bitnet_wgpu::CoopKind::from_code(v).ok_or_else(bad)?);
            continue;
        }
        let n: u32 = v.parse().map_err(|_| bad())?;
        let on = n == 1;
        // The values the engine's plans take ([`bitnet_wgpu::BitnetTuning`]'s docs); another
        // would only be warned about at run time and measure the default plan under its name.
        let one_of = |allowed: &[u32]| {
            if allowed.contains(&n) {
                Ok(Some(n))
            } else {
                Err(BenchError::Usage(format!(
                    "--tuning: {key} takes one of {allowed:?}, got {n}"
                )))
            }
        };
        match key {
            "lanes" => t.gemv_lanes = one_of(&[4, 8, 16, 32, 64, 128, 256])?,
            "gemm_block" => t.gemm_block = one_of(&[4, 8])?,
            "splits" => t.gemm_splits = one_of(&[1, 2, 4, 8])?,
            _ if n > 1 => return Err(bad()),
            "autotune" => t.autotune = Some(on),
            "fuse" => t.fuse_decode = Some(on),
            "batch" => t.batch_gemv = Some(on),
            "staged" => t.staged_gemv = Some(on),
            "lean" => t.lean_gemv = Some(on),
            "leanq" => t.lean_q_gemv = Some(on),
            "coop" => t.gemm_coop = Some(on),
            "generic" => t.generic_gemv = on,
            _ => return Err(bad()),
        }
    }
    Ok(t)
}

fn number(flag: &str, v: &str, min: usize) -> Result<usize> {
    match v.parse::<usize>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(BenchError::Usage(format!(
            "{flag} wants an integer ≥ {min}, got {v:?}"
        ))),
    }
}

/// A size in MiB (at least `min`) as bytes; a count whose bytes overflow is refused, not wrapped.
fn mib(flag: &str, v: &str, min: usize) -> Result<u64> {
    let n = number(flag, v, min)?;
    (n as u64).checked_mul(1 << 20).ok_or_else(|| {
        BenchError::Usage(format!(
            "{flag} wants at most {} MiB, got {v:?}",
            u64::MAX >> 20
        ))
    })
}

fn seconds(flag: &str, v: &str) -> Result<f64> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => Err(BenchError::Usage(format!(
            "{flag} wants seconds ≥ 0, got {v:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn run_flags() {
        let Command::Run(r) = p("--quick --filter Bitlinear --repeats 5 --json a.json").unwrap()
        else {
            panic!("not a run")
        };
        assert!(r.quick && r.repeats == 5 && r.layers == 4 && r.clock_keeper);
        assert!(r.selects("bitlinear 2B q/o M=1 2560x2560") && !r.selects("act_quant x"));
        assert_eq!(r.json.as_deref(), Some(std::path::Path::new("a.json")));
        let Command::Run(r) = p("--no-clock-keeper").unwrap() else {
            panic!("not a run")
        };
        assert!(!r.clock_keeper);
    }

    #[test]
    fn merge_and_errors() {
        assert!(matches!(
            p("merge --ours a --peers b --results c").unwrap(),
            Command::Merge { .. }
        ));
        assert!(p("merge --peers b --results c").is_err());
        // A run option given to merge would be ignored: refused instead.
        assert!(p("merge --ours a --results c --quick").is_err());
        assert!(p("merge --ours a --results c --json x").is_err());
        assert!(p("--repeats 0").is_err());
        assert!(p("--bogus").is_err());
        assert!(p("--json").is_err());
        assert!(p("--ours a").is_err());
        assert_eq!(p("--help").unwrap(), Command::Help);
    }

    /// MiB counts whose bytes overflow u64 are refused: `<< 20` wrapped 2^44 MiB to 0 bytes
    /// (below `--stream-mib`'s minimum of 1) and larger counts to arbitrary sizes.
    #[test]
    fn mib_overflow_is_refused() {
        assert!(p("--cold-bytes 17592186044416").is_err());
        assert!(p("--stream-mib 17592186044416").is_err());
        assert!(p("--stream-mib 99999999999999999").is_err());
        let Command::Run(r) = p("--cold-bytes 17592186044415 --stream-mib 2").unwrap() else {
            panic!("not a run")
        };
        assert_eq!(
            (r.cold_bytes, r.stream_bytes),
            (u64::MAX - (1 << 20) + 1, 2 << 20)
        );
    }

    #[test]
    fn tuning_specs() {
        let t = tuning("coop=1,coopkernel=coopi8n96,splits=4,lanes=16").unwrap();
        assert_eq!(t.gemm_coop, Some(true));
        assert_eq!(t.gemm_coop_kernel, Some(bitnet_wgpu::CoopKind::Int8N96));
        assert_eq!((t.gemm_splits, t.gemv_lanes), (Some(4), Some(16)));
        for kind in bitnet_wgpu::CoopKind::ALL {
            let t = tuning(&format!("coopkernel={}", kind.code())).unwrap();
            assert_eq!(t.gemm_coop_kernel, Some(kind));
        }
        // Values no plan takes are refused here, not warned about at run time.
        for bad in [
            "coopkernel=int4",
            "coop=2",
            "coop",
            "bogus=1",
            "lanes=7",
            "lanes=0",
            "gemm_block=6",
            "splits=0",
            "splits=3",
        ] {
            assert!(tuning(bad).is_err(), "{bad}");
        }
    }
}
