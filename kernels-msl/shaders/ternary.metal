// The packed layouts of `bitnet_cpu_ref::layout`, as MSL helpers.
//
// Ternary weights: 2-bit codes c = w + 1, 16 per u32, interleaved so that weight
// k = 16 j + 4 g + i of a row sits at bits [8 i + 2 g, 8 i + 2 g + 2) of word j. Hence
// `(word >> 2 g) & 0x03030303` holds in byte i the code of weight 16 j + 4 g + i, lined up with
// byte i of packed activation word 4 j + g (4 int8 values per u32, little-endian). Padding weights
// (k >= K) have code 1 (weight 0) and padding activations are 0.

// Weights per packed u32 word.
constexpr constant uint WEIGHTS_PER_WORD = 16u;
// Packed activation words per weight word (4 activations per u32).
constexpr constant uint ACT_WORDS_PER_WEIGHT_WORD = 4u;
// The four code bytes of one group of a weight word.
constexpr constant uint CODE_BYTES_MASK = 0x03030303u;
// A weight word of 16 zero weights (every code 1): what padding words read as.
constexpr constant uint ZERO_WEIGHT_WORD = 0x55555555u;

// u32 words per packed ternary row of length k: ceil(k / 16).
inline uint ternary_words_per_row(uint k) {
    return (k + WEIGHTS_PER_WORD - 1u) / WEIGHTS_PER_WORD;
}

// Bit offset of weight `k_in_word` (0..16) inside its word: 8 (k % 4) + 2 (k / 4).
inline uint code_shift(uint k_in_word) {
    return 8u * (k_in_word & 3u) + 2u * (k_in_word >> 2u);
}

// Σ_i x_i · c_i over the 4 int8 activations of `x_word` and the 4 code bytes of `codes`.
// (Scalar element access: no vector conversions, whose meaning differs between MSL and C++.)
inline int dot4_codes(uint x_word, uint codes) {
    const char4 x = as_type<char4>(x_word);
    const uchar4 c = as_type<uchar4>(codes);
    return int(x.x) * int(c.x) + int(x.y) * int(c.y) + int(x.z) * int(c.z) + int(x.w) * int(c.w);
}

// Σ_k x_k · code_k over the 16 weights of `word`, given the 4 activation words aligned with it.
// The ternary dot product is this minus Σ_k x_k (codes are w + 1).
inline int dot16_codes(uint x0, uint x1, uint x2, uint x3, uint word) {
    return dot4_codes(x0, word & CODE_BYTES_MASK) + dot4_codes(x1, (word >> 2u) & CODE_BYTES_MASK) +
           dot4_codes(x2, (word >> 4u) & CODE_BYTES_MASK) + dot4_codes(x3, (word >> 6u) & CODE_BYTES_MASK);
}

// The code of weight `w` quantized with `inv_s`: clamp(round(w · inv_s), -1, 1) + 1.
// Both arguments are f32 bit patterns (w may be NaN or infinite; such weights are flagged by the
// caller): |w · inv_s| = exact_mul(|w|, inv_s) (the product's sign is w's), and a non-negative p
// rounds half-to-even to a non-zero integer exactly when p > 0.5.
inline uint ternary_code(uint w, uint inv_s) {
    if (exact_mul(w, inv_s) <= HALF_BITS) {
        return 1u;
    }
    return (w >> 31u) != 0u ? 0u : 2u;
}

// The packed activation byte of `q` (an int8 value held in an int) at byte `i` of its word.
inline uint pack_act_byte(int q, uint i) {
    return (uint(q) & 0xffu) << (8u * i);
}

// The int8 quantization of one activation: clamp(round_half_even(x · inv), -128, 127).
// `x * inv` is one multiply followed by rint, so fast math cannot change it. Both are finite (the
// callers replace a NaN/inf activation by 0; inv = 127 / a with a in [1e-5, f32::MAX]), so the
// no-NaN/inf assumption holds.
inline int quantize_act(float x, float inv) {
    return int(clamp(rint(x * inv), -128.0f, 127.0f));
}
