//! What a run measures: the per-op cases, the decode stack, issue 4's parts and the attention
//! cases that `--filter`, `--quick`, `--no-gpu` and `--no-cpu` leave; an empty selection is
//! refused up front.

use crate::attention::{self, AttentionSpec};
use crate::cli::RunArgs;
use crate::error::{BenchError, Result};
use crate::run::STACK_ID;
use crate::workload::{SHAPES, StackSpec, TOKEN_COUNTS, Workload, workloads};
use crate::{batch, stream};

/// What a run measures: the cases, the decode stack, issue 4's parts and the attention cases
/// that `--filter`, `--quick`, `--no-gpu` and `--no-cpu` leave.
pub struct Selection {
    /// Per-op cases, in table order.
    pub cases: Vec<Workload>,
    /// The decode stack, unless filtered out.
    pub stack_spec: Option<StackSpec>,
    /// Issue 4's streaming case (GPU only).
    pub do_stream: bool,
    /// Issue 4's batched decode (GPU only).
    pub do_batch: bool,
    /// Issue 4's CPU-path overhead (CPU side).
    pub do_overhead: bool,
    /// Attention cases (GPU, KV append and cpu-ref, as the sides allow), in table order.
    pub attention: Vec<AttentionSpec>,
}

/// Picks what `args` asks to measure; a selection with nothing in it is a usage error (a filter
/// matching no id, or both sides skipped), never a run that measures only the roofline and
/// prints an empty table.
pub fn select(args: &RunArgs) -> Result<Selection> {
    let (shapes, tokens): (&[_], &[usize]) = if args.quick {
        (&SHAPES[..4], &TOKEN_COUNTS[..2])
    } else {
        (SHAPES, TOKEN_COUNTS)
    };
    let cases: Vec<Workload> = workloads(shapes, tokens)
        .into_iter()
        .filter(|w| args.selects(&w.id()))
        .collect();
    let stack_spec = args.selects(STACK_ID).then_some(StackSpec {
        layers: args.layers,
        ..StackSpec::DECODE_2B4T
    });
    let sel = Selection {
        cases,
        stack_spec,
        do_stream: args.gpu && args.selects(stream::STREAM_ID),
        do_batch: args.gpu && args.selects(batch::BATCH_ID),
        do_overhead: args.cpu && args.selects(crate::overhead::OVERHEAD_ID),
        attention: attention::specs(args.quick)
            .into_iter()
            .filter(|s| args.selects(&s.id()))
            .collect(),
    };
    let any = !sel.cases.is_empty()
        || sel.stack_spec.is_some()
        || sel.do_stream
        || sel.do_batch
        || sel.do_overhead
        || !sel.attention.is_empty();
    if !args.gpu && !args.cpu {
        return Err(BenchError::Usage(
            "--no-gpu and --no-cpu leave nothing to measure".into(),
        ));
    }
    if !any {
        let quick = if args.quick { " in --quick" } else { "" };
        let gpu = if args.gpu {
            ""
        } else {
            " ('stream' and 'batch' need the GPU)"
        };
        return Err(BenchError::Usage(format!(
            "--filter {:?} selects nothing to measure{quick}{gpu}; ids look like \
             'bitlinear 2B q/o M=1 2560x2560', 'act_quant 2B q/o M=1 K=2560', \
             'weight_quant 2B q/o 2560x2560', '{STACK_ID}', 'stream', 'batch', \
             'attention decode 2B4T Tk=512'",
            args.filters
        )));
    }
    Ok(sel)
}

#[cfg(test)]
mod tests {
    use super::select;

    fn args(line: &str) -> crate::cli::RunArgs {
        let words: Vec<String> = line.split_whitespace().map(String::from).collect();
        match crate::cli::parse(&words).unwrap() {
            crate::cli::Command::Run(r) => r,
            other => panic!("not a run: {other:?}"),
        }
    }

    /// A filter that matches no id, or both sides skipped, is refused before anything runs: it
    /// used to measure the roofline (30 s on lavapipe), print an empty table and exit 0.
    #[test]
    fn empty_selections_are_refused() {
        for line in [
            "--filter nomatch",
            "--quick --filter 8b",
            "--no-gpu --filter stream",
            "--no-gpu --no-cpu",
        ] {
            assert!(select(&args(line)).is_err(), "{line}");
        }
        let s = select(&args("--quick --filter stack")).unwrap();
        assert!(s.cases.is_empty() && s.stack_spec.is_some());
        let s = select(&args("--filter batch")).unwrap();
        assert!(s.do_batch && !s.do_stream && s.stack_spec.is_none());
        assert!(s.attention.is_empty());
    }

    /// `--filter attention` selects the attention cases alone (CPU side too); `--quick` keeps
    /// 2B4T, as for the linear shapes.
    #[test]
    fn attention_is_selectable() {
        let s = select(&args("--quick --filter attention")).unwrap();
        assert!(s.cases.is_empty() && s.stack_spec.is_none() && !s.do_batch);
        let ids: Vec<String> = s.attention.iter().map(|a| a.id()).collect();
        assert_eq!(
            ids,
            [
                "attention decode 2B4T Tk=512",
                "attention prefill 2B4T Tq=128 Tk=128"
            ]
        );
        let s = select(&args("--no-gpu --filter tk=4096")).unwrap();
        assert_eq!(s.attention.len(), 2);
        assert!(select(&args("--no-gpu --filter attention")).is_ok());
    }
}
