//! The one error type of bitnet-bench. Failures of a single case are recorded in the report and
//! the run goes on; these errors are the ones that stop a command.

use std::path::PathBuf;

/// Why a bitnet-bench command failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad command line; the message says what and how to fix it.
    #[error("{0}\n(run `bitnet-bench --help` for usage)")]
    Usage(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A JSON input did not parse, or an output did not serialize.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// The GPU side failed in a way that makes every GPU figure meaningless.
    #[error("GPU: {0}")]
    Gpu(String),
    /// A run ended without one figure (its outputs are still written).
    #[error("no figure was measured: every step was skipped or failed (see above)")]
    NothingMeasured,
    /// The CPU reference rejected a workload.
    #[error("CPU reference: {0}")]
    Cpu(#[from] bitnet_cpu_ref::Error),
}

/// Result alias of this crate.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// Reads a whole file, with the path in the error.
pub fn read_file(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        path: path.into(),
        source,
    })
}

/// Writes a whole file atomically (creating parent folders), with the path in the error.
pub fn write_file(path: &std::path::Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| BenchError::Io {
            path: parent.into(),
            source,
        })?;
    }
    // Whole or not at all: a run killed while it rewrites its checkpoint still leaves the last
    // complete report (written beside it, then renamed over it).
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let io = |source| BenchError::Io {
        path: path.into(),
        source,
    };
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Checks before a run that `path` can be written (creating parent folders as [`write_file`]
/// does), so that a long run never ends in an output it cannot write. An existing file is left
/// unchanged; one created by the check is removed again.
pub fn check_writable(path: &std::path::Path) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| BenchError::Io {
            path: parent.into(),
            source,
        })?;
    }
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|source| BenchError::Io {
            path: path.into(),
            source,
        })?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Writes `text` to `out` (stdout in the binary). A reader that went away (`| head`, a closed
/// pipe) is no error: the run's files still get written. `print!` panicked there instead.
pub fn print_to(out: &mut impl std::io::Write, text: &str) -> Result<()> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(BenchError::Io {
            path: "<stdout>".into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    /// A writer whose reader is gone.
    struct ClosedPipe;

    impl std::io::Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_stdout_is_no_error() {
        assert!(super::print_to(&mut ClosedPipe, "table").is_ok());
        let mut v = Vec::new();
        super::print_to(&mut v, "table").unwrap();
        assert_eq!(v, b"table");
    }
}
