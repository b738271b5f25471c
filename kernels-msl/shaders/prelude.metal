// Shared prelude of every bitnet-wgpu Metal kernel: the standard library, the constants of
// `bitnet_cpu_ref::layout` as exact bit patterns, and the engine's binding conventions.
//
// Kernel sources are concatenated at compile time (prelude.metal, exact_f32.metal, ternary.metal,
// then the kernel file; see kernels-msl/src/kernels.rs), because Metal's runtime compiler cannot
// resolve includes of our own files. Each concatenation is one complete MSL translation unit.
//
// # Binding conventions (shared with the engine's WGSL kernels)
//
// The engine binds, in wgpu terms: immediates = the kernel's params struct, group 0 = the
// kernel's storage buffers in order, group 1 binding 1 = a non-finite status slot of 4 words. On
// Metal, wgpu assigns buffer indices in exactly that order, so every kernel declares:
//
//   [[buffer(0)]]          constant Params&      the params (wgpu immediates = setBytes)
//   [[buffer(1 ..= n)]]    device buffers         group 0 bindings 0 .. n-1
//   [[buffer(n + 1)]]      device atomic_uint*    status: word t = smallest flat index of a
//                                                 NaN/inf in the t-th checked tensor (atomic min,
//                                                 initialised to 0xffffffff by the engine)
//
// # Fast math
//
// wgpu compiles passthrough MSL with default MTLCompileOptions, i.e. fast math ON: the compiler may
// reassociate, contract and assume no NaN/inf. So every float operation whose exact rounding
// matters and that the compiler could legally rewrite is done on bit patterns with integer
// arithmetic (exact_f32.metal): sums, the scale products and every division. What stays in native
// float is immune to those rewrites: a single multiply followed by rint (nothing to reassociate or
// contract), comparisons of sign-cleared bit patterns, and int -> float conversions. A product
// whose bits are then tested for NaN/inf is not: the compiler may assume it finite and fold the
// test away (clang 19 with -ffast-math does), so the rescaled outputs use exact_mul. For the same
// reason a value that may be NaN or infinite (a sum, a scale, a product) is kept as a `uint` bit
// pattern, never as a float parameter, return value or operand: the exact_f32 routines take and
// return bits, and kernels convert with as_type only where an f32 is loaded or stored.

#include <metal_stdlib>
using namespace metal;

// Bit pattern of `layout::SCALE_EPS` = 1e-5f (lower clamp of both the weight absmean and the
// activation absmax).
constexpr constant uint SCALE_EPS_BITS = 0x3727c5acu;
// Bit pattern of `layout::INV_127` = 1.0f / 127.0f, rounded once.
constexpr constant uint INV_127_BITS = 0x3c010204u;
// Bit pattern of 0.5f: a non-negative product rounds (half to even) to a non-zero integer exactly
// when its bits exceed this.
constexpr constant uint HALF_BITS = 0x3f000000u;
// Exponent mask: a float is NaN or infinite exactly when all these bits are set.
constexpr constant uint F32_EXP_MASK = 0x7f800000u;
// Everything but the sign bit.
constexpr constant uint F32_ABS_MASK = 0x7fffffffu;
// The status word value meaning "nothing flagged".
constexpr constant uint STATUS_CLEAR = 0xffffffffu;

// Whether `bits` (a float's bit pattern) is NaN or infinite. A bit test, because fast math lets
// the compiler fold `isnan` / `isinf` to false.
inline bool is_non_finite_bits(uint bits) {
    return (bits & F32_EXP_MASK) == F32_EXP_MASK;
}
