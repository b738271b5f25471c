//! The small text files the engine caches across processes (the calibration, `calibrate.rs`;
//! autotuned plans, `ops/bitnet_tune_cache.rs`): where they go, and reading and writing them so
//! that another process reading at the same moment, a crash or a full disk never leaves a file
//! that parses as other values.
//!
//! - Writes go to a temporary file in the same directory, then `rename` over the real one (atomic
//!   on one file system): a reader sees the old file or the new one, never a prefix.
//! - Reads are lossy UTF-8: one bad byte costs the line it is in, not the whole file.
//! - Only complete lines count (`complete_lines`): a line without its newline may be cut short.
//!
//! The engine's environment values are parsed here too, one way for every variable: surrounding
//! blanks ignored, any case ([`location`] for cache places, [`switch`] for on/off variables).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Replaces `path` with `text` atomically (a temporary file of its own in the same directory,
/// then rename).
pub(crate) fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // One temporary file per write, not per process: two writers of one process (two engines
    // saving one calibration) must not truncate each other's file before or after its rename.
    // Processes of two containers sharing the directory can share a pid (often 1), so the name
    // also carries the time, and the file is created new (never truncating another writer's
    // file, never following a link planted at the name), with another name if it exists.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let mut attempt = 0;
    let (tmp, mut file) = loop {
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.{n}.{nanos:x}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    drop(file);
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Holds an exclusive advisory lock on `<path>.lock` (created next to `path`) until dropped, so
/// that read-modify-write updates of `path` by several engines or processes take turns: a
/// compacting rewrite read the file, and a line another writer appended before the rename was
/// lost. `None` where the platform or file system has no such locks (then writers race, as
/// before; whatever they write still parses).
pub(crate) fn lock_for_update(path: &Path) -> Option<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PathBuf::from(name))
        .ok()?;
    file.lock().ok()?;
    Some(file)
}

/// The engine's directory in the user's cache (`bitnet-wgpu` under `%LOCALAPPDATA%` on Windows,
/// `~/Library/Caches` on macOS, `$XDG_CACHE_HOME` or else `~/.cache` elsewhere), from the
/// environment; `None` when none of those is known.
pub(crate) fn user_cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).map(PathBuf::from);
    user_cache_dir_from(var("XDG_CACHE_HOME"), var("HOME"), var("LOCALAPPDATA"))
}

/// [`user_cache_dir`] as a pure function of those variables' values. Empty values count as unset,
/// and a relative `XDG_CACHE_HOME` is ignored, as the XDG base directory rules say (it would
/// put the cache wherever the process happens to run).
pub(crate) fn user_cache_dir_from(
    xdg: Option<PathBuf>,
    home: Option<PathBuf>,
    local_app_data: Option<PathBuf>,
) -> Option<PathBuf> {
    let set = |v: Option<PathBuf>| v.filter(|p| !p.as_os_str().is_empty());
    let base = if cfg!(target_os = "windows") {
        set(local_app_data)
    } else if cfg!(target_os = "macos") {
        set(home).map(|h| h.join("Library/Caches"))
    } else {
        set(xdg)
            .filter(|p| p.is_absolute())
            .or_else(|| set(home).map(|h| h.join(".cache")))
    };
    base.map(|b| b.join("bitnet-wgpu"))
}

/// The file's text, invalid UTF-8 replaced; `None` if it cannot be read.
pub(crate) fn read_lossy(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The lines of `text` that end in a newline (the last one may have been cut short).
pub(crate) fn complete_lines(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
}

/// A cache-location variable's value: `None` when unset, blank or on (`on`, `1`, `true`, `yes`:
/// use the default place), `Some(None)` when it opts out (`off`, `0`, `false`, `no`), any case,
/// surrounding blanks ignored; `Some(Some(path))` otherwise.
pub(crate) fn location(value: Option<&str>) -> Option<Option<PathBuf>> {
    let v = value.map(str::trim).filter(|v| !v.is_empty())?;
    match on_off(v) {
        Some(false) => Some(None),
        Some(true) => None,
        None => Some(Some(PathBuf::from(v))),
    }
}

/// [`location`] of the environment variable `name`. A value that is not valid UTF-8 is a path
/// as it stands (it spells no on/off word): read as unset, it sent the cache back to the
/// default place the user had moved it away from.
pub(crate) fn location_var(name: &str) -> Option<Option<PathBuf>> {
    location_os(std::env::var_os(name).as_deref())
}

/// [`location_var`] of the value itself.
fn location_os(value: Option<&std::ffi::OsStr>) -> Option<Option<PathBuf>> {
    match value?.to_str() {
        Some(text) => location(Some(text)),
        None => Some(Some(PathBuf::from(value?))),
    }
}

/// The one list of on/off spellings (`v` trimmed, any case): off (`0`, `false`, `off`, `no`), on
/// (`1`, `true`, `on`, `yes`), else `None`.
fn on_off(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "0" | "false" | "off" | "no" => Some(false),
        "1" | "true" | "on" | "yes" => Some(true),
        _ => None,
    }
}

/// An on/off variable's value: off (`0`, `false`, `off`, `no`) or on (`1`, `true`, `on`, `yes`),
/// any case, surrounding blanks ignored; unset or blank: no say (`None`). Anything else is logged
/// (naming the variable `name`) once per process and value — some variables are read per
/// decision, and one bad setting should not flood the log — and ignored.
pub(crate) fn switch(name: &str, value: Option<&str>) -> Option<bool> {
    let v = value.map(str::trim).filter(|v| !v.is_empty())?;
    let verdict = on_off(v);
    if verdict.is_none() && first_sighting(name, v) {
        log::warn!("bitnet-wgpu: {name}={v:?} is neither on nor off; ignored");
    }
    verdict
}

/// Whether this process sees `name`=`value` (a bad setting) for the first time: each is logged
/// once.
pub(crate) fn first_sighting(name: &str, value: &str) -> bool {
    static SEEN: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let new = !seen.iter().any(|(n, v)| n == name && v == value);
    if new {
        seen.push((name.to_owned(), value.to_owned()));
    }
    new
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The warnings this test binary logged so far (a capturing logger, installed on first call:
    /// call it once before the code under test).
    pub(crate) fn warnings() -> Vec<String> {
        struct Capture(std::sync::Mutex<Vec<String>>);
        impl log::Log for Capture {
            fn enabled(&self, m: &log::Metadata) -> bool {
                m.level() <= log::Level::Warn
            }
            fn log(&self, r: &log::Record) {
                if self.enabled(r.metadata()) {
                    let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
                    v.push(r.args().to_string());
                }
            }
            fn flush(&self) {}
        }
        static CAPTURE: Capture = Capture(std::sync::Mutex::new(Vec::new()));
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            if log::set_logger(&CAPTURE).is_ok() {
                log::set_max_level(log::LevelFilter::Warn);
            }
        });
        CAPTURE.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The on/off spellings (`BITNET_AUTOTUNE`'s `off` used to mean "no say").
    #[test]
    fn switch_values_ignore_case_and_blanks() {
        for (v, want) in [
            ("off", Some(false)),
            ("false", Some(false)),
            (" 0", Some(false)),
            ("true", Some(true)),
            (" 1", Some(true)),
            ("1\n", Some(true)),
            ("YES", Some(true)),
            ("", None),
            ("maybe", None),
        ] {
            assert_eq!(switch("X", Some(v)), want, "{v:?}");
        }
        assert_eq!(switch("X", None), None);
    }

    /// A bad value is logged once, not per read: `BITNET_AUTOTUNE` is read for every BitLinear
    /// shape planned, and logged a warning each time.
    #[test]
    fn a_bad_value_is_logged_once() {
        warnings();
        let name = "BITNET_TEST_SWITCH_LOGGED_ONCE";
        for _ in 0..3 {
            assert_eq!(switch(name, Some("perhaps")), None);
        }
        assert_eq!(switch(name, Some("never")), None);
        let count = |v: &str| {
            let text = format!("{name}={v:?}");
            warnings().iter().filter(|w| w.contains(&text)).count()
        };
        assert_eq!((count("perhaps"), count("never")), (1, 1));
    }

    #[test]
    fn only_complete_lines_count() {
        let got: Vec<&str> = complete_lines("a\nb\r\nc").collect();
        assert_eq!(got, ["a", "b"]);
    }

    #[test]
    fn opt_out_values_ignore_case_and_blanks() {
        for v in ["off", " off", "OFF\n", " 0", "No", "false "] {
            assert_eq!(location(Some(v)), Some(None), "{v:?}");
        }
        assert_eq!(location(Some("  ")), None);
        assert_eq!(location(None), None);
        // The on spellings of `switch` keep the default place (they made a relative directory
        // named `1`, `true`, ... in the working directory).
        for v in ["1", " on", "TRUE", "yes\n"] {
            assert_eq!(location(Some(v)), None, "{v:?}");
        }
        assert_eq!(
            location(Some(" /tmp/x ")),
            Some(Some(PathBuf::from("/tmp/x")))
        );
    }

    /// A value that is not UTF-8 is the path it names (it was read as unset: the default place).
    #[cfg(unix)]
    #[test]
    fn non_utf8_locations_are_paths() {
        use std::os::unix::ffi::OsStrExt;
        let raw = std::ffi::OsStr::from_bytes(b"/srv/cache/\xff");
        assert_eq!(location_os(Some(raw)), Some(Some(PathBuf::from(raw))));
        assert_eq!(location_os(Some("off".as_ref())), Some(None));
        assert_eq!(location_os(None), None);
    }

    /// Two writers of one process (two engines saving the same calibration) replace the file
    /// atomically too: they shared one temporary file name, so one could truncate the file the
    /// other had just renamed into place (a reader saw it empty or cut short), and the other's
    /// rename then failed.
    #[test]
    fn writers_of_one_process_do_not_share_a_temporary_file() {
        let dir = std::env::temp_dir().join(format!("bitnet-cache-race-{}", std::process::id()));
        let path = dir.join("f.txt");
        let text = "x".repeat(64 << 10) + "\n";
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        write_atomic(&path, &text).expect("every write succeeds");
                        let now = read_lossy(&path).unwrap_or_default();
                        assert!(now.len() == text.len(), "read {} bytes", now.len());
                    }
                });
            }
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn atomic_writes_replace_the_file_and_leave_no_temporary() {
        let dir = std::env::temp_dir().join(format!("bitnet-cache-file-{}", std::process::id()));
        let path = dir.join("f.txt");
        write_atomic(&path, "one\n").unwrap();
        write_atomic(&path, "two\n").unwrap();
        assert_eq!(read_lossy(&path).as_deref(), Some("two\n"));
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
        std::fs::write(&path, b"ok\n\xff bad\n").unwrap();
        assert_eq!(
            complete_lines(&read_lossy(&path).unwrap()).next(),
            Some("ok")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
