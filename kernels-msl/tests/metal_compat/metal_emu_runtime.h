// The execution model behind the Metal compatibility header: an emulated compute grid.
//
// Each threadgroup runs as real std::threads, one per Metal thread. threadgroup_barrier is a real
// barrier over all of them; simdgroup collectives exchange values through per-simdgroup scratch
// between two barriers over the 32 lanes. Threadgroups run one after another (their
// `threadgroup` arrays are function statics, see metal_stdlib), each thread looping over the grid
// and meeting the others at barriers around each threadgroup.
//
// Threadgroup memory starts uninitialized on Metal (wgpu's zero-initialization of workgroup
// memory does not apply to passthrough shaders), so before each threadgroup runs, every
// `threadgroup` array of every kernel is filled with a poison pattern: a read before the
// threadgroup's own write sees garbage, not zeros or the previous threadgroup's values, and the
// cpu-ref comparisons catch it. No single pattern is harmful to every use (a NaN vanishes in fmax,
// a tiny float in a sum), so the pattern rotates with the threadgroup's linear index; see
// kThreadgroupPoison.
//
// The emulation is stricter than hardware, never looser: lanes run freely between collectives (no
// lock-step to hide a missing barrier; the harness is also built with ThreadSanitizer), every
// collective checks that all 32 lanes called the same collective, and a barrier that some thread
// never reaches (divergent control flow, early return) aborts with a message instead of hanging.
//
// C++14 on purpose: the Metal Shading Language is C++14-based, and the kernels are syntax-checked
// with -std=c++14 against this header. No macros are defined here.
#ifndef METAL_EMU_RUNTIME_H
#define METAL_EMU_RUNTIME_H

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#endif

#if defined(__ELF__)
// Bounds of the section holding every `threadgroup` array (metal_stdlib places them there; the
// linker defines these for sections named like C identifiers). Weak: null when no kernel declares
// threadgroup memory.
extern "C" __attribute__((weak)) unsigned char __start_metal_emu_threadgroup[];
extern "C" __attribute__((weak)) unsigned char __stop_metal_emu_threadgroup[];
#else
#error "the emulation needs an ELF target: threadgroup arrays are found through their linker section"
#endif

namespace metal_emu {

/// Lanes per simdgroup on every Apple GPU.
constexpr unsigned kSimdWidth = 32;
/// Seconds a barrier waits before declaring a deadlock.
constexpr int kBarrierTimeoutSeconds = 60;

/// What threadgroup memory holds when a threadgroup starts.
enum class ThreadgroupFill {
    /// Garbage, as on Metal: kThreadgroupPoison.
    Poison,
    /// Zeros, as WGSL guarantees (only to show what the poison catches).
    Zero,
};

/// Byte patterns for threadgroup memory, by linear threadgroup index modulo 3. As f32: NaN (sums
/// and products), 3.4e38 (maxima, sums), -2.9e-16 (minima, signs); as u32/i32: all ones, large
/// positive, large negative; as f16: NaN, NaN, -0.022; as int8: -1, 127, -91.
constexpr unsigned char kThreadgroupPoison[] = {0xff, 0x7f, 0xa5};

/// Fills every threadgroup array (of all kernels: only one runs) for the threadgroup with linear
/// index `group`.
inline void fill_threadgroup_memory(ThreadgroupFill fill, std::uint64_t group) {
    unsigned char* begin = __start_metal_emu_threadgroup;
    unsigned char* end = __stop_metal_emu_threadgroup;
    if (begin == nullptr || end == nullptr) {
        return;
    }
    const unsigned char byte =
        fill == ThreadgroupFill::Zero ? 0u : kThreadgroupPoison[group % sizeof(kThreadgroupPoison)];
    std::memset(begin, byte, static_cast<std::size_t>(end - begin));
}

/// Prints `what` and terminates the process with exit code 70 (what the Rust test reports).
[[noreturn]] inline void fail(const char* what) {
    std::fprintf(stderr, "metal-emu: %s\n", what);
    std::fflush(stderr);
    std::_Exit(70);
}

/// Sleeps until `*word != expected` (or a spurious wake-up, or about 100 ms passed).
inline void wait_while_equal(std::atomic<std::uint32_t>& word, std::uint32_t expected) {
#if defined(__linux__)
    // A futex: waiters sleep in the kernel and leave without re-taking any lock, which matters
    // with hundreds of emulated threads on a few cores.
    struct timespec timeout = {0, 100 * 1000 * 1000};
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected, &timeout, nullptr, 0);
#else
    if (word.load(std::memory_order_acquire) == expected) {
        std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
#endif
}

/// Wakes every thread sleeping in wait_while_equal(word, ...).
inline void wake_all(std::atomic<std::uint32_t>& word) {
#if defined(__linux__)
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE_PRIVATE, 0x7fffffff, nullptr, nullptr, 0);
#else
    (void)word;
#endif
}

/// A reusable barrier for a fixed number of threads, with deadlock detection.
///
/// Synchronization is through the two atomics (acquire/release), so ThreadSanitizer sees that
/// everything before the barrier in any thread happens before everything after it in all threads;
/// the futex only puts waiters to sleep.
class Barrier {
  public:
    Barrier(unsigned count, const char* what) : count_(count), what_(what) {}

    /// Blocks until `count` threads arrived; aborts after kBarrierTimeoutSeconds.
    void arrive_and_wait() {
        // Read before arriving: the generation cannot move until this thread has arrived.
        const std::uint32_t generation = generation_.load(std::memory_order_acquire);
        if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == count_) {
            arrived_.store(0, std::memory_order_relaxed);
            generation_.store(generation + 1, std::memory_order_release);
            wake_all(generation_);
            return;
        }
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kBarrierTimeoutSeconds);
        while (generation_.load(std::memory_order_acquire) == generation) {
            wait_while_equal(generation_, generation);
            if (std::chrono::steady_clock::now() > deadline) {
                std::fprintf(stderr, "metal-emu: %s: only %u of %u threads arrived\n", what_,
                             arrived_.load(std::memory_order_relaxed), count_);
                fail("deadlock: a barrier or collective is not reached by every thread (divergent "
                     "control flow or an early return before it)");
            }
        }
    }

  private:
    std::atomic<std::uint32_t> arrived_{0};
    std::atomic<std::uint32_t> generation_{0};
    const unsigned count_;
    const char* what_;
};

/// Bytes a lane may contribute to one collective.
constexpr unsigned kSlotBytes = 32;

/// Identifies a collective, so lanes that called different ones are caught.
enum class Collective : std::uint32_t {
    Barrier = 1,
    Sum,
    Max,
    ShuffleDown,
};

/// Shared state of one simdgroup: its barrier and the lanes' exchange slots.
struct Simdgroup {
    Barrier barrier{kSimdWidth, "simdgroup collective"};
    std::uint32_t tags[kSimdWidth] = {};
    alignas(16) unsigned char slots[kSimdWidth][kSlotBytes] = {};
};

/// Shared state of one threadgroup.
struct Threadgroup {
    explicit Threadgroup(unsigned threads)
        : barrier(threads, "threadgroup_barrier"), start(threads, "start of threadgroup"),
          end(threads, "end of threadgroup") {
        for (unsigned s = 0; s < threads / kSimdWidth; ++s) {
            simds.emplace_back(new Simdgroup());
        }
    }
    Barrier barrier;
    Barrier start;
    Barrier end;
    std::vector<std::unique_ptr<Simdgroup>> simds;
};

/// The Metal builtins of one emulated thread (1-D threadgroups, 3-D grid of threadgroups).
struct ThreadContext {
    Threadgroup* group = nullptr;
    Simdgroup* simd = nullptr;
    std::uint32_t thread_index_in_threadgroup = 0;
    std::uint32_t thread_index_in_simdgroup = 0;
    std::uint32_t simdgroup_index_in_threadgroup = 0;
    std::uint32_t simdgroups_per_threadgroup = 0;
    std::uint32_t threads_per_simdgroup = kSimdWidth;
    std::uint32_t thread_position_in_threadgroup[3] = {0, 0, 0};
    std::uint32_t threads_per_threadgroup[3] = {0, 1, 1};
    std::uint32_t threadgroup_position_in_grid[3] = {0, 0, 0};
    std::uint32_t threadgroups_per_grid[3] = {0, 0, 0};
    std::uint32_t thread_position_in_grid[3] = {0, 0, 0};
    std::uint32_t threads_per_grid[3] = {0, 0, 0};
};

/// The calling thread's context slot (null outside an emulated grid).
inline ThreadContext*& current_slot() {
    static thread_local ThreadContext* slot = nullptr;
    return slot;
}

/// The calling thread's context; aborts outside an emulated grid.
inline ThreadContext& current() {
    ThreadContext* c = current_slot();
    if (c == nullptr) {
        fail("a Metal builtin was called outside an emulated grid");
    }
    return *c;
}

/// All 32 lanes of the caller's simdgroup post `value` under `tag`; returns every lane's value.
/// Aborts when lanes called different collectives.
template <typename T>
void exchange(Collective tag, const T& value, T (&all)[kSimdWidth]) {
    static_assert(sizeof(T) <= kSlotBytes, "collective operand too large for the emulation");
    static_assert(std::is_trivially_copyable<T>::value, "collective operand must be plain data");
    ThreadContext& c = current();
    Simdgroup& s = *c.simd;
    const std::uint32_t lane = c.thread_index_in_simdgroup;
    s.tags[lane] = static_cast<std::uint32_t>(tag) << 8 | static_cast<std::uint32_t>(sizeof(T));
    std::memcpy(s.slots[lane], &value, sizeof(T));
    s.barrier.arrive_and_wait();
    for (unsigned i = 0; i < kSimdWidth; ++i) {
        if (s.tags[i] != s.tags[lane]) {
            fail("lanes of one simdgroup called different simdgroup collectives (divergence)");
        }
        std::memcpy(&all[i], s.slots[i], sizeof(T));
    }
    // Nobody may overwrite the slots before every lane has read them.
    s.barrier.arrive_and_wait();
}

/// A kernel bound to its buffers: called once per emulated thread.
using Body = std::function<void(const ThreadContext&)>;

/// Runs `body` over a grid of `groups` threadgroups of `threads` threads each, threadgroup memory
/// filled as `fill` says before each threadgroup.
inline void run_grid(const std::uint32_t groups[3], std::uint32_t threads, ThreadgroupFill fill,
                     const Body& body) {
    if (threads == 0 || threads % kSimdWidth != 0) {
        fail("threadgroup size must be a positive multiple of 32");
    }
    Threadgroup group(threads);
    std::vector<std::thread> workers;
    workers.reserve(threads);
    for (std::uint32_t t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            ThreadContext c;
            c.group = &group;
            c.simd = group.simds[t / kSimdWidth].get();
            c.thread_index_in_threadgroup = t;
            c.thread_index_in_simdgroup = t % kSimdWidth;
            c.simdgroup_index_in_threadgroup = t / kSimdWidth;
            c.simdgroups_per_threadgroup = threads / kSimdWidth;
            c.thread_position_in_threadgroup[0] = t;
            c.threads_per_threadgroup[0] = threads;
            for (int d = 0; d < 3; ++d) {
                c.threadgroups_per_grid[d] = groups[d];
                c.threads_per_grid[d] = groups[d] * c.threads_per_threadgroup[d];
            }
            current_slot() = &c;
            for (std::uint32_t z = 0; z < groups[2]; ++z) {
                for (std::uint32_t y = 0; y < groups[1]; ++y) {
                    for (std::uint32_t x = 0; x < groups[0]; ++x) {
                        const std::uint32_t pos[3] = {x, y, z};
                        for (int d = 0; d < 3; ++d) {
                            c.threadgroup_position_in_grid[d] = pos[d];
                            c.thread_position_in_grid[d] =
                                pos[d] * c.threads_per_threadgroup[d] + c.thread_position_in_threadgroup[d];
                        }
                        // Threadgroup memory (function statics, shared by all groups) is
                        // refilled between the previous group's end and this group's start.
                        if (t == 0) {
                            const std::uint64_t row = y + std::uint64_t(groups[1]) * z;
                            fill_threadgroup_memory(fill, x + std::uint64_t(groups[0]) * row);
                        }
                        group.start.arrive_and_wait();
                        body(c);
                        group.end.arrive_and_wait();
                    }
                }
            }
            current_slot() = nullptr;
        });
    }
    for (std::thread& w : workers) {
        w.join();
    }
}

/// One kernel the harness can run (the table is generated from the kernels' signatures).
struct KernelEntry {
    /// The kernel's entry point name.
    const char* entry;
    /// Number of [[buffer(i)]] parameters (indices 0 .. buffers - 1).
    unsigned buffers;
    /// Calls the kernel for one emulated thread, with buffer i at buffers[i].
    void (*launch)(unsigned char* const* buffers, const ThreadContext& c);
    /// For each kernel parameter: the byte size a `constant T&` buffer must have, else 0.
    std::vector<std::size_t> (*param_bytes)();
    /// For each kernel parameter: its buffer index, or -1 for a builtin.
    const int* buffer_of_param;
};

}  // namespace metal_emu

#endif  // METAL_EMU_RUNTIME_H
