// Shared by the three dispatches of weight quantization that reads `w` from memory once
// (weight_quant_band.wgsl, weight_quant_once.wgsl, weight_quant_fixup.wgsl): the layout of their
// scratch buffer. Why and how: weight_quant_once.wgsl.
//
// Scratch words: the band's pack factors (four f32 bits: s_lo's then s_hi's, `pack_factors`),
// the uncertain-word count, the fixup mode, the band's ends (s_lo, s_hi, kept for diagnosis),
// the estimator workgroups' partial sums (three words each), the block sums, then the list of
// uncertain words.

const SCRATCH_FACTORS: u32 = 0u;
const SCRATCH_UNCERTAIN: u32 = 4u;
const SCRATCH_MODE: u32 = 5u;
const SCRATCH_BAND: u32 = 6u;
const SCRATCH_PARTIALS: u32 = 8u;
// Most estimator workgroups (engine: kernels::WEIGHT_BAND_MAX_GROUPS).
const BAND_MAX_GROUPS: u32 = 256u;
const SCRATCH_SUMS: u32 = SCRATCH_PARTIALS + 3u * BAND_MAX_GROUPS;

// Fixup modes: re-pack only the listed words, or every word (s left the band, or the list
// overflowed).
const MODE_LIST: u32 = 0u;
const MODE_ALL: u32 = 1u;
