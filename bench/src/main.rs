//! `bitnet-bench`: the headless benchmark binary (see `bench/README.md`).

use bitnet_bench::cli::{self, Command};
use bitnet_bench::{error, results_md, run};
use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = std::iter::once("bitnet-bench".to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    match real_main(&args, &command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bitnet-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(args: &[String], command: &str) -> error::Result<()> {
    match cli::parse(args)? {
        Command::Help => error::print_to(&mut std::io::stdout(), cli::USAGE)?,
        Command::Version => error::print_to(
            &mut std::io::stdout(),
            &format!("bitnet-bench {}\n", env!("CARGO_PKG_VERSION")),
        )?,
        Command::Run(r) => {
            run::preflight(&r)?;
            let report = run::run(&r, command)?;
            run::write_outputs(&report, &r, command)?;
            if !report.measured_anything() {
                return Err(error::BenchError::NothingMeasured);
            }
        }
        Command::Merge {
            ours,
            peers,
            results,
        } => {
            let report = run::load_report(&ours)?;
            let peers = peers.as_deref().map(run::load_peers).transpose()?;
            if let Some(p) = &peers {
                run::check_same_device(&report, p)?;
            }
            error::write_file(
                &results,
                &results_md::render(&report, peers.as_ref(), command),
            )?;
            eprintln!("wrote {}", results.display());
        }
    }
    Ok(())
}
