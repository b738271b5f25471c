// Shared by util_copy_blocks.wgsl and util_copy_blocks_pair.wgsl (concatenated with them): the
// flattened-run indexing of the strided word copy.

// Words per invocation, 256 apart, all loads before any store (see util_copy.wgsl).
const PER_THREAD: u32 = 4u;

// Word i of the flattened runs (run b = i / block_words) in a binding whose run 0 starts at
// `base` and whose runs start `stride` words apart.
fn run_word(i: u32, block_words: u32, base: u32, stride: u32) -> u32 {
    let b = i / block_words;
    return base + b * stride + (i - b * block_words);
}
