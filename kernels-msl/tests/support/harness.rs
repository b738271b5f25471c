//! The emulation harness: writes `kernels_under_test.inc` (see `generate.rs`), builds
//! `tests/harness/harness.cpp` with clang++ under sanitizers, and runs kernels on buffer files.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use bitnet_kernels_msl::{BindingKind, Dispatch, MslKernel, Workgroups};

use super::generate::generate;
use super::{clang, compat_dir, tests_dir, work_dir};

/// Which sanitizers the harness is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// AddressSanitizer + UndefinedBehaviorSanitizer: out-of-bounds buffer or threadgroup-array
    /// accesses, integer overflow, bad shifts and conversions abort the run.
    Address,
    /// ThreadSanitizer: a threadgroup-memory access not ordered by a barrier aborts the run.
    Thread,
    /// No sanitizers, `-O2 -ffast-math`: the licence Metal's default compile options give its
    /// compiler (no NaN/inf, reassociation, contraction). Built with [`fast_math_compiler`].
    FastMath,
}

impl Flavor {
    fn flags(self) -> &'static [&'static str] {
        match self {
            Flavor::Address => &[
                "-fsanitize=address,undefined",
                "-fno-sanitize-recover=all",
                "-fno-omit-frame-pointer",
            ],
            Flavor::Thread => &["-fsanitize=thread"],
            Flavor::FastMath => &["-O2", "-ffast-math", "-Wno-error"],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Flavor::Address => "asan",
            Flavor::Thread => "tsan",
            Flavor::FastMath => "fastmath",
        }
    }
}

/// The compiler of [`Flavor::FastMath`]: `BITNET_CLANGXX_FASTMATH`, else `clang++-19` when it
/// runs (clang 19 folds a NaN/inf bit test of a fast-math product away; clang 14 does not, so
/// only a recent clang shows that hazard), else the usual clang++.
pub fn fast_math_compiler() -> PathBuf {
    if let Some(c) = std::env::var_os("BITNET_CLANGXX_FASTMATH") {
        return PathBuf::from(c);
    }
    let recent = Command::new("clang++-19")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    match recent {
        true => PathBuf::from("clang++-19"),
        false => clang::require().unwrap_or_else(|| "clang++".into()),
    }
}

/// A built harness executable.
pub struct Harness {
    exe: PathBuf,
    flavor: Flavor,
}

/// The harness of `flavor`, built once per test process (and cached on disk across runs while
/// its inputs are unchanged); `None` when the developer explicitly opted out of clang checks.
pub fn get(flavor: Flavor) -> Option<&'static Harness> {
    static ADDRESS: OnceLock<Option<Harness>> = OnceLock::new();
    static THREAD: OnceLock<Option<Harness>> = OnceLock::new();
    static FAST: OnceLock<Option<Harness>> = OnceLock::new();
    let cell = match flavor {
        Flavor::FastMath => {
            return FAST
                .get_or_init(|| clang::require().map(|_| build(&fast_math_compiler(), flavor)))
                .as_ref();
        }
        Flavor::Address => &ADDRESS,
        Flavor::Thread => &THREAD,
    };
    cell.get_or_init(|| clang::require().map(|cxx| build(&cxx, flavor)))
        .as_ref()
}

/// What threadgroup memory holds when each threadgroup starts (the harness's
/// `METAL_EMU_THREADGROUP_FILL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadgroupFill {
    /// A poison pattern, like Metal's uninitialized memory: what every check runs with.
    Poison,
    /// Zeros, as WGSL guarantees: only to show that the poison catches what zeros hide.
    Zero,
}

/// Builds (or reuses) the harness of `flavor`.
fn build(cxx: &std::path::Path, flavor: Flavor) -> Harness {
    let dir = work_dir().join(flavor.name());
    std::fs::create_dir_all(&dir).expect("create harness dir");
    let generated = generate();
    let source = tests_dir().join("harness").join("harness.cpp");
    let mut args: Vec<String> = vec![
        "-std=c++17".into(),
        "-O1".into(),
        "-g".into(),
        "-pthread".into(),
    ];
    if flavor != Flavor::FastMath {
        args.push("-ffp-contract=off".into()); // host float ops must be plain IEEE, like the kernels'
    }
    args.extend(clang::kernel_flags());
    args.extend(flavor.flags().iter().map(|f| f.to_string()));
    args.extend(["-I".into(), dir.display().to_string()]);

    // Rebuild only when something that goes into the binary changed.
    let mut hasher = DefaultHasher::new();
    generated.hash(&mut hasher);
    args.hash(&mut hasher);
    for f in [
        source.clone(),
        compat_dir().join("metal_stdlib"),
        compat_dir().join("metal_emu_runtime.h"),
        compat_dir().join("metal_compat_end.h"),
    ] {
        std::fs::read(&f)
            .unwrap_or_else(|e| panic!("read {}: {e}", f.display()))
            .hash(&mut hasher);
    }
    let version = Command::new(cxx)
        .arg("--version")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    version.hash(&mut hasher);
    let stamp = format!("{:016x}", hasher.finish());
    let exe = dir.join("harness");
    let stamp_file = dir.join("harness.stamp");
    if exe.exists() && std::fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp) {
        return Harness { exe, flavor };
    }

    std::fs::write(dir.join("kernels_under_test.inc"), &generated)
        .expect("write generated launchers");
    // Build under a unique name and rename, so concurrent test processes never see half a binary.
    let tmp = dir.join(format!("harness.{}.tmp", std::process::id()));
    args.extend([
        source.display().to_string(),
        "-o".into(),
        tmp.display().to_string(),
    ]);
    clang::compile(
        cxx,
        &args,
        &format!("building the {} emulation harness", flavor.name()),
    );
    std::fs::rename(&tmp, &exe).expect("install harness");
    std::fs::write(&stamp_file, stamp).expect("write stamp");
    Harness { exe, flavor }
}

/// Folds a linear threadgroup count like the engine's `Launch::workgroups` does, with a small
/// per-dimension limit so tests exercise the kernels' linearization and their extra groups.
pub fn fold(n: u64, max: u64) -> [u32; 3] {
    if n <= max {
        return [n as u32, 1, 1];
    }
    let y = n.div_ceil(max);
    [n.div_ceil(y) as u32, y as u32, 1]
}

/// The result of one emulated launch.
pub struct Launched {
    /// The storage buffers after the run, in binding order.
    pub storage: Vec<Vec<u8>>,
    /// The status slot's four words.
    pub status: [u32; 4],
}

impl Harness {
    /// Runs the exact f32 self-test of the prelude on `count` random operand pairs.
    pub fn selftest(&self, count: u32) {
        let out = Command::new(&self.exe)
            .args(["selftest", &count.to_string()])
            .output()
            .expect("run harness selftest");
        assert!(
            out.status.success(),
            "exact_f32 self-test failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The exact_f32 routines' results on the self-test's operands (`count` random rounds plus
    /// edge cases), as records `[a, b, |a| + |b|, |a| * |b|, |a| / |b|]` of f32 bits.
    pub fn exact_results(&self, count: u32) -> Vec<[u32; 5]> {
        let file = work_dir().join(format!(
            "exact-{}-{}.bin",
            self.flavor.name(),
            std::process::id()
        ));
        let out = Command::new(&self.exe)
            .args(["exact", &count.to_string()])
            .arg(&file)
            .output()
            .expect("run harness exact");
        assert!(
            out.status.success(),
            "exact_f32 dump failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let words = to_u32s(&std::fs::read(&file).expect("read exact_f32 results"));
        let _ = std::fs::remove_file(&file);
        words
            .chunks_exact(5)
            .map(|r| r.try_into().unwrap())
            .collect()
    }

    /// Launches `kernel` with `dispatch` on `storage` (group-0 buffers in order): the params
    /// buffer and a cleared status slot are added around them. Linear grids are folded with
    /// `fold_max` groups per dimension. Threadgroup memory starts poisoned.
    pub fn launch(
        &self,
        kernel: &MslKernel,
        dispatch: &Dispatch,
        storage: Vec<Vec<u8>>,
        fold_max: u64,
    ) -> Launched {
        self.launch_filled(kernel, dispatch, storage, fold_max, ThreadgroupFill::Poison)
    }

    /// [`Harness::launch`] with threadgroup memory starting as `fill` says.
    pub fn launch_filled(
        &self,
        kernel: &MslKernel,
        dispatch: &Dispatch,
        storage: Vec<Vec<u8>>,
        fold_max: u64,
        fill: ThreadgroupFill,
    ) -> Launched {
        assert_eq!(
            storage.len(),
            kernel.storage().count(),
            "{}: storage buffer count",
            kernel.name
        );
        let groups = match dispatch.workgroups {
            Workgroups::Linear(n) => fold(n, fold_max),
            Workgroups::Grid(g) => g,
        };
        let mut buffers = vec![dispatch.params_bytes().to_vec()];
        buffers.extend(storage);
        assert!(matches!(
            kernel.bindings.last().map(|b| b.kind),
            Some(BindingKind::Status)
        ));
        buffers.push(vec![0xff; 16]);
        self.run(kernel, groups, &mut buffers, fill);
        let status_bytes = buffers.pop().expect("status buffer");
        let status = std::array::from_fn(|i| {
            u32::from_le_bytes(status_bytes[4 * i..4 * i + 4].try_into().unwrap())
        });
        buffers.remove(0);
        Launched {
            storage: buffers,
            status,
        }
    }

    /// Runs `kernel` on a grid of `groups` threadgroups; `buffers[i]` is `[[buffer(i)]]`, updated
    /// in place; threadgroup memory starts as `fill` says. Panics with the harness's diagnostics
    /// when the emulation or a sanitizer fails.
    pub fn run(
        &self,
        kernel: &MslKernel,
        groups: [u32; 3],
        buffers: &mut [Vec<u8>],
        fill: ThreadgroupFill,
    ) {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let dir = work_dir().join(format!(
            "run-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create run dir");
        let files: Vec<PathBuf> = (0..buffers.len())
            .map(|i| dir.join(format!("buffer{i}.bin")))
            .collect();
        for (f, b) in files.iter().zip(buffers.iter()) {
            std::fs::write(f, b).expect("write buffer file");
        }
        let out = Command::new(&self.exe)
            .arg("run")
            .arg(kernel.entry_point)
            .args(groups.iter().map(u32::to_string))
            .arg(kernel.workgroup_size.0.to_string())
            .args(&files)
            .env(
                "METAL_EMU_THREADGROUP_FILL",
                match fill {
                    ThreadgroupFill::Poison => "poison",
                    ThreadgroupFill::Zero => "zero",
                },
            )
            .env("TSAN_OPTIONS", "halt_on_error=1 exitcode=66")
            .env("ASAN_OPTIONS", "halt_on_error=1 detect_leaks=1")
            .env("UBSAN_OPTIONS", "halt_on_error=1 print_stacktrace=1")
            .output()
            .expect("run harness");
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr.chars().take(12_000).collect();
            panic!(
                "emulated {} ({} harness, grid {groups:?}) failed: {}\n{tail}",
                kernel.entry_point,
                self.flavor.name(),
                out.status
            );
        }
        for (f, b) in files.iter().zip(buffers.iter_mut()) {
            *b = std::fs::read(f).expect("read buffer file");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Little-endian bytes of `f32` values.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian bytes of `u32` values.
pub fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `u32` values of little-endian bytes.
pub fn to_u32s(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// `f32` values of little-endian bytes.
pub fn to_f32s(b: &[u8]) -> Vec<f32> {
    to_u32s(b).into_iter().map(f32::from_bits).collect()
}
