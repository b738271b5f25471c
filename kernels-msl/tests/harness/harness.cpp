// Runs the bitnet-wgpu Metal kernels on the CPU, through the compatibility header in
// ../metal_compat, on an emulated grid (see metal_emu_runtime.h). Built and driven by
// kernels-msl/tests/emulated.rs, which generates kernels_under_test.inc from the shipped sources.
//
// Usage:
//   harness run <entry> <groups_x> <groups_y> <groups_z> <threads> <buffer files...>
//       Buffer i of the kernel ([[buffer(i)]]) starts as the bytes of the i-th file; after the
//       grid ran, every buffer is written back to its file. Threadgroup memory is poisoned before
//       each threadgroup (see metal_emu_runtime.h), unless METAL_EMU_THREADGROUP_FILL=zero
//       (WGSL's zero-initialization; only for the test that shows what the poison catches).
//   harness selftest <count>
//       Checks the prelude's exact_f32 routines against the host's IEEE-754 arithmetic on
//       `count` rounds of random operand pairs plus edge cases, and the emulated half
//       conversions (not in the fast-math build, whose host arithmetic is not IEEE).
//   harness exact <count> <file>
//       Writes the exact_f32 results on the same operands to `file`, as u32 records
//       (a, b, |a| + |b|, |a| * |b|, |a| / |b|), for a check outside the harness.
// Exit codes: 0 success, 1 self-test mismatch, 64 bad usage or I/O, 70 a kernel error detected by
// the emulation (deadlock, divergent collectives, inexact simdgroup MMA).

#include <metal_stdlib>

#include "kernels_under_test.inc"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

[[noreturn]] void usage_error(const std::string& message) {
    std::fprintf(stderr, "harness: %s\n", message.c_str());
    std::exit(64);
}

/// A buffer sized exactly like its file (heap-allocated, so AddressSanitizer bounds every access).
struct HostBuffer {
    std::string path;
    std::size_t size = 0;
    unsigned char* data = nullptr;
};

HostBuffer read_buffer(const std::string& path) {
    HostBuffer b;
    b.path = path;
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) {
        usage_error("cannot open " + path);
    }
    std::fseek(f, 0, SEEK_END);
    const long size = std::ftell(f);
    std::fseek(f, 0, SEEK_SET);
    if (size <= 0) {
        usage_error("empty buffer file " + path);
    }
    b.size = static_cast<std::size_t>(size);
    b.data = new unsigned char[b.size];
    if (std::fread(b.data, 1, b.size, f) != b.size) {
        usage_error("short read of " + path);
    }
    std::fclose(f);
    return b;
}

void write_buffer(const HostBuffer& b) {
    std::FILE* f = std::fopen(b.path.c_str(), "wb");
    if (f == nullptr || std::fwrite(b.data, 1, b.size, f) != b.size || std::fclose(f) != 0) {
        usage_error("cannot write " + b.path);
    }
}

std::uint32_t parse_u32(const char* text) {
    char* end = nullptr;
    const unsigned long v = std::strtoul(text, &end, 10);
    if (end == text || *end != '\0' || v > 0xffffffffUL) {
        usage_error(std::string("not a u32: ") + text);
    }
    return static_cast<std::uint32_t>(v);
}

int run(int argc, char** argv) {
    if (argc < 7) {
        usage_error("run <entry> <gx> <gy> <gz> <threads> <buffer files...>");
    }
    const std::string entry = argv[2];
    const metal_emu::KernelEntry* k = nullptr;
    for (const metal_emu::KernelEntry& e : kEmuKernels) {
        if (entry == e.entry) {
            k = &e;
        }
    }
    if (k == nullptr) {
        usage_error("unknown kernel " + entry);
    }
    const std::uint32_t groups[3] = {parse_u32(argv[3]), parse_u32(argv[4]), parse_u32(argv[5])};
    const std::uint32_t threads = parse_u32(argv[6]);
    std::vector<HostBuffer> buffers;
    for (int i = 7; i < argc; ++i) {
        buffers.push_back(read_buffer(argv[i]));
    }
    if (buffers.size() != k->buffers) {
        usage_error(entry + ": " + std::to_string(k->buffers) + " buffers expected, " +
                    std::to_string(buffers.size()) + " given");
    }
    // A `constant Params&` buffer must hold exactly the struct the kernel declares.
    const std::vector<std::size_t> bytes = k->param_bytes();
    for (std::size_t p = 0; p < bytes.size(); ++p) {
        const int b = k->buffer_of_param[p];
        if (b >= 0 && bytes[p] != 0 && buffers[b].size != bytes[p]) {
            usage_error(entry + ": buffer " + std::to_string(b) + " has " + std::to_string(buffers[b].size) +
                        " bytes, the kernel's struct has " + std::to_string(bytes[p]));
        }
    }
    std::vector<unsigned char*> pointers;
    for (HostBuffer& b : buffers) {
        pointers.push_back(b.data);
    }
    metal_emu::ThreadgroupFill fill = metal_emu::ThreadgroupFill::Poison;
    if (const char* mode = std::getenv("METAL_EMU_THREADGROUP_FILL")) {
        if (std::strcmp(mode, "zero") == 0) {
            fill = metal_emu::ThreadgroupFill::Zero;
        } else if (std::strcmp(mode, "poison") != 0) {
            usage_error(std::string("METAL_EMU_THREADGROUP_FILL must be poison or zero, not ") + mode);
        }
    }
    metal_emu::run_grid(groups, threads, fill,
                        [&](const metal_emu::ThreadContext& c) { k->launch(pointers.data(), c); });
    for (const HostBuffer& b : buffers) {
        write_buffer(b);
        delete[] b.data;
    }
    return 0;
}

// ---- Self-test -----------------------------------------------------------------------------

std::uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

std::uint64_t next_random() {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

float from_bits(std::uint32_t b) {
    float f;
    std::memcpy(&f, &b, 4);
    return f;
}

std::uint32_t to_bits(float f) {
    std::uint32_t b;
    std::memcpy(&b, &f, 4);
    return b;
}

/// Calls `visit(a, b)` on the operand bit patterns of the exact_f32 checks: `count` rounds of
/// random pairs, then every pair of edge values. Integer-only, so a fast-math build generates
/// the same operands.
template <typename Visit>
void for_each_operand_pair(long count, Visit visit) {
    for (long i = 0; i < count; ++i) {
        const std::uint64_t r = next_random();
        const std::uint32_t a = static_cast<std::uint32_t>(r);
        // Independent operands (all classes and exponent gaps), then close ones (same binade,
        // where rounding of sums and products is decided by the low bits).
        visit(a, static_cast<std::uint32_t>(r >> 32));
        const std::uint32_t near = (a & 0x7fffffffu) + (static_cast<std::uint32_t>(r >> 40) & 0x1ffffffu);
        visit(a, near & 0x7fffffffu);
        // The operands of layout.rs: sum / count, 1 / s, 127 / a, s * a, (s * a) * INV_127.
        const std::uint32_t cnt = static_cast<std::uint32_t>((r >> 32) % 50000000u + 1u);
        visit(a & 0x7fffffffu, to_bits(static_cast<float>(cnt)));
        visit(0x3f800000u, (a & 0x0fffffffu) + 0x30000000u);  // 1.0
        visit(0x42fe0000u, (a & 0x0fffffffu) + 0x37000000u);  // 127.0
    }
    // Zero, subnormals (smallest, 3e-45, 1e-40, largest), the smallest normal, 1e-5, 0.5, 1, 1.5, 3,
    // 127, 1 / 127, 4095, 2^24 - 1, 2^24, 1.7e38, f32::MAX, infinity, quiet NaN, signalling NaN,
    // NaN with a full payload.
    const std::uint32_t edges[] = {0x00000000u, 0x00000001u, 0x00000002u, 0x000116c2u, 0x007fffffu,
                                   0x00800000u, 0x3727c5acu, 0x3f000000u, 0x3f800000u, 0x3fc00000u,
                                   0x40400000u, 0x42fe0000u, 0x3c010204u, 0x457ff000u, 0x4b7fffffu,
                                   0x4b800000u, 0x7effc99eu, 0x7f7fffffu, 0x7f800000u, 0x7fc00000u,
                                   0x7f800001u, 0x7fffffffu};
    for (std::uint32_t a : edges) {
        for (std::uint32_t b : edges) {
            visit(a, b);
            visit(a | 0x80000000u, b);
        }
    }
}

long failures = 0;

void check(const char* op, std::uint32_t a, std::uint32_t b, std::uint32_t got, float want) {
    const bool same = got == to_bits(want) || (got == 0x7fc00000u && want != want);
    if (!same && ++failures <= 20) {
        std::fprintf(stderr, "%s(0x%08x, 0x%08x): got 0x%08x, IEEE %a (0x%08x)\n", op, a, b, got, want,
                     to_bits(want));
    }
}

/// All three exact operations on magnitudes a, b against the host's IEEE arithmetic.
void check_all(std::uint32_t a, std::uint32_t b) {
    const float x = from_bits(a & 0x7fffffffu);
    const float y = from_bits(b & 0x7fffffffu);
    check("exact_abs_add", a, b, msl_prelude::exact_abs_add(a, b), x + y);
    check("exact_mul", a, b, msl_prelude::exact_mul(a, b), x * y);
    check("exact_div", a, b, msl_prelude::exact_div(a, b), x / y);
}

int selftest(long count) {
#if defined(__FAST_MATH__)
    (void)count;
    usage_error("selftest compares with the host's IEEE arithmetic, which -ffast-math breaks: use exact");
#else
    for_each_operand_pair(count, check_all);
    // Half conversions of the compatibility header: every finite half round-trips, and the
    // int8/ternary values the GEMM stages are exact.
    for (std::uint32_t h = 0; h < 0x10000u; ++h) {
        if ((h & 0x7c00u) == 0x7c00u) {
            continue;
        }
        half v;
        const std::uint16_t h16 = static_cast<std::uint16_t>(h);
        std::memcpy(&v, &h16, 2);
        const half back = static_cast<half>(static_cast<float>(v));
        std::uint16_t out;
        std::memcpy(&out, &back, 2);
        if (out != h16 && ++failures <= 20) {
            std::fprintf(stderr, "half 0x%04x round-trips to 0x%04x\n", h, out);
        }
    }
    for (int i = -128; i <= 127; ++i) {
        if (static_cast<float>(static_cast<half>(i)) != static_cast<float>(i) && ++failures <= 20) {
            std::fprintf(stderr, "half(%d) is not exact\n", i);
        }
    }
    if (failures != 0) {
        std::fprintf(stderr, "selftest: %ld mismatches\n", failures);
        return 1;
    }
    std::printf("selftest: ok\n");
    return 0;
#endif
}

/// Writes, for every operand pair of the self-test, the u32 words a, b, exact_abs_add(a, b),
/// exact_mul(a, b), exact_div(a, b) to `path` (for the fast-math build, whose host arithmetic is
/// no reference: the test checks them against Rust's IEEE arithmetic).
int exact_dump(long count, const char* path) {
    std::vector<std::uint32_t> out;
    for_each_operand_pair(count, [&](std::uint32_t a, std::uint32_t b) {
        const std::uint32_t record[5] = {a, b, msl_prelude::exact_abs_add(a, b), msl_prelude::exact_mul(a, b),
                                         msl_prelude::exact_div(a, b)};
        out.insert(out.end(), record, record + 5);
    });
    std::FILE* f = std::fopen(path, "wb");
    if (f == nullptr || std::fwrite(out.data(), 4, out.size(), f) != out.size() || std::fclose(f) != 0) {
        usage_error(std::string("cannot write ") + path);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc >= 2 && std::strcmp(argv[1], "run") == 0) {
        return run(argc, argv);
    }
    if (argc == 3 && std::strcmp(argv[1], "selftest") == 0) {
        return selftest(static_cast<long>(parse_u32(argv[2])));
    }
    if (argc == 4 && std::strcmp(argv[1], "exact") == 0) {
        return exact_dump(static_cast<long>(parse_u32(argv[2])), argv[3]);
    }
    usage_error("usage: harness run <entry> <gx> <gy> <gz> <threads> <files...> | harness selftest <count> | "
                "harness exact <count> <file>");
}
