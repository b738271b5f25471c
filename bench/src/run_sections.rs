//! The steps of a run between the decode stack and the per-op cases: issue 4's streaming and
//! batched decode, and the attention section. Each is a guarded, checkpointed step of
//! [`Steps`]: a failure is recorded in the report and the run goes on.

use crate::attention::{self, AttentionCase, AttentionResult, AttentionSpec};
use crate::attention_measure as measure;
use crate::cli::RunArgs;
use crate::gpu::GpuBench;
use crate::measure::RepeatPolicy;
use crate::report::Report;
use crate::steps::Steps;
use crate::{batch, stream};

/// What the section steps share: the run's options, its GPU (if any) and repeat policies.
pub(super) struct Sections<'a> {
    /// The run's options.
    pub args: &'a RunArgs,
    /// The GPU, unless `--no-gpu` (or none could be opened).
    pub gpu: Option<&'a GpuBench>,
    /// Repeats and budget of a GPU figure.
    pub gpu_policy: RepeatPolicy,
    /// Repeats and budget of a cpu-ref figure.
    pub cpu_policy: RepeatPolicy,
}

/// Samples of each streaming leg (interleaved rounds; median). Three had left the overlap ratio
/// at the mercy of one slow round: in one H200 run the total's three samples spread 44.7-49.4 ms
/// and the transfer leg's 42.4-47.9 ms, and the ratio of their medians read 1.11 where the run
/// before read 1.02 (2026-12-01). A round of all four legs takes about 0.15 s.
const STREAM_REPEATS: usize = 9;

impl Sections<'_> {
    /// Issue 4's streaming case (one step; its own failure record when it fails).
    pub fn stream(&self, st: &mut Steps, report: &mut Report) {
        let args = self.args;
        let (r, e) = st.step("GPU streaming (issue 4)", || {
            let g = self.gpu.ok_or("no GPU")?;
            let was = g.timestamps();
            let _ = g.engine().set_profiling(false);
            let r = g.with_pool(|| {
                Ok(stream::measure(
                    g.engine(),
                    args.stream_bytes,
                    args.quick,
                    args.repeats.min(STREAM_REPEATS),
                ))
            });
            if was {
                let _ = g.engine().set_profiling(true);
            }
            r.map(|r| r.0)
        });
        report.stream = r.or_else(|| e.map(|e| stream::failed(args.stream_bytes, args.quick, e)));
        st.checkpoint(report);
    }

    /// Issue 4's batched decode (one step; a note when it fails as a whole).
    pub fn batch(&self, st: &mut Steps, report: &mut Report) {
        let (r, e) = st.step("GPU batched decode B=8 vs B=1 (issue 4)", || {
            let g = self.gpu.ok_or("no GPU")?;
            let r = g.with_pool(|| {
                Ok(batch::measure(
                    g.engine(),
                    g.timestamps(),
                    self.gpu_policy,
                    self.args.cold_bytes,
                ))
            });
            r.map(|r| r.0)
        });
        report.batch = r;
        if let Some(e) = e {
            report
                .notes
                .push(format!("batched decode not measured: {e}"));
        }
        st.checkpoint(report);
    }

    /// Issue 4's CPU-path overhead (one step; a note when it fails).
    pub fn overhead(&self, st: &mut Steps, report: &mut Report) {
        let (r, e) = st.step("engine overhead on the CPU path (issue 4)", || {
            Ok::<_, String>(crate::overhead::measure())
        });
        report.overhead = r;
        if let Some(e) = e {
            report
                .notes
                .push(format!("engine overhead not measured: {e}"));
        }
        st.checkpoint(report);
    }

    /// The attention section: per case a GPU step, a KV-append step (decode cases) and a CPU
    /// step, as the run's sides allow; [`attention_steps`] counts them. Each figure or its error
    /// lands in `report.attention` as soon as it is known.
    pub fn attention(&self, st: &mut Steps, report: &mut Report, specs: &[AttentionSpec]) {
        let args = self.args;
        let cases = specs
            .iter()
            .map(|s| AttentionCase::new(s, measure::copies(s, args.cold_bytes)))
            .collect();
        report.attention = Some(AttentionResult {
            path: attention::PATH.into(),
            append_path: attention::APPEND_PATH.into(),
            cases,
        });
        for (i, spec) in specs.iter().enumerate() {
            let id = spec.id();
            if args.gpu {
                let copies = measure::copies(spec, args.cold_bytes);
                let (r, e) = st.step(&format!("GPU {id}"), || {
                    let g = self.gpu.ok_or("no GPU")?;
                    let t = || {
                        measure::time_gpu(g.engine(), g.timestamps(), self.gpu_policy, spec, copies)
                    };
                    g.with_pool(t).map(|r| r.0)
                });
                if let Some(c) = case(report, i) {
                    (c.gpu, c.gpu_error) = (r, e);
                }
                if spec.is_decode() {
                    let (r, e) = st.step(&format!("GPU {id} KV append"), || {
                        let g = self.gpu.ok_or("no GPU")?;
                        let t = || {
                            measure::time_append(g.engine(), g.timestamps(), self.gpu_policy, spec)
                        };
                        g.with_pool(t).map(|r| r.0)
                    });
                    if let Some(c) = case(report, i) {
                        (c.append, c.append_error) = (r, e);
                    }
                }
            }
            if args.cpu {
                let (r, e) = st.step(&format!("CPU {id}"), || {
                    measure::time_cpu_ref(spec, self.cpu_policy)
                });
                if let Some(c) = case(report, i) {
                    (c.cpu, c.cpu_error) = (r, e);
                }
            }
            st.checkpoint(report);
        }
    }
}

/// Case `i` of the report's attention section.
fn case(report: &mut Report, i: usize) -> Option<&mut AttentionCase> {
    report.attention.as_mut().and_then(|a| a.cases.get_mut(i))
}

/// Progress steps of [`Sections::attention`] for `specs` on the run's sides.
pub(super) fn attention_steps(specs: &[AttentionSpec], gpu: bool, cpu: bool) -> usize {
    let decode = specs.iter().filter(|s| s.is_decode()).count();
    specs.len() * (usize::from(gpu) + usize::from(cpu)) + usize::from(gpu) * decode
}
