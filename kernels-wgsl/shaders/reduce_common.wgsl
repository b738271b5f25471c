// Shared by reduce_last.wgsl and reduce_last_subgroup.wgsl (concatenated with them and
// exact_div.wgsl): parameters, bindings, each invocation's sequential fold of its elements, and
// the row's final step. The two kernels differ only in how the 256 partials become one.
//
// op: 0 = sum, 1 = mean (sum / len), 2 = max, 3 = absmax (max |x|). Invocation t folds elements
// t, t + 256, t + 512, ... of its row in order.
//
// Chunking: the launch covers rows row_base .. row_base + rows; x and out are each bound whole or
// from the chunk's first row (x_shift / out_shift say which row of the binding is launch row 0).
// Flat indices reported are those of the full tensors.
//
// Non-finite status words: 0 = x, 1 = output (sum overflow). Dispatch: linear, one workgroup per
// row (row = wid.x + wid.y · nwg.x).

struct Params {
    rows: u32,
    len: u32,
    op: u32,
    row_base: u32,
    x_shift: u32,    // row of x's binding holding launch row 0 (0 when bound from the chunk)
    out_shift: u32,  // element of out's binding holding launch row 0
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

const WG: u32 = 256u;

// Sum for ops 0 and 1, max otherwise (absmax inputs are made non-negative before folding).
fn combine(op: u32, u: f32, v: f32) -> f32 {
    return select(max_ordered(u, v), u + v, op <= 1u);
}

// max(u, v) with -0 below +0, as cpu-ref's Max (WGSL leaves a zero result's sign of `max` to the
// device): equal values have equal bits but for the two zeros, whose AND is +0 when either is.
fn max_ordered(u: f32, v: f32) -> f32 {
    return select(max(u, v), bitcast<f32>(bitcast<u32>(u) & bitcast<u32>(v)), u == v);
}

// An i32 key ordered as max_ordered orders finite floats (-0 below +0): negative floats' bits
// past the sign flipped. Its own inverse (ordered_f32).
fn ordered_key(v: f32) -> i32 {
    let b = bitcast<u32>(v);
    return bitcast<i32>(select(b, b ^ 0x7fffffffu, b >= 0x80000000u));
}

fn ordered_f32(k: i32) -> f32 {
    let b = bitcast<u32>(k);
    return bitcast<f32>(select(b, b ^ 0x7fffffffu, b >= 0x80000000u));
}

// Invocation t's fold of row `row` (flags non-finite inputs on status word 0).
fn fold_row(row: u32, t: u32) -> f32 {
    let op = params.op;
    let len = params.len;
    let base = (params.x_shift + row) * len;
    // Identity: 0 for sums and for absmax (|x| >= 0), the lowest finite f32 for max.
    var acc = select(0.0, -3.4028235e38, op == 2u);
    for (var i = t; i < len; i += WG) {
        var v = x[base + i];
        if (is_non_finite(v)) {
            atomicMin(&nonfinite[0], (params.row_base + row) * len + i);
        }
        if (op == 3u) {
            v = abs(v);
        }
        acc = combine(op, acc, v);
    }
    return acc;
}

// The row's result `r` of the fold: divided by len for mean, flagged if non-finite, stored.
fn finish_row(row: u32, folded: f32) {
    var r = folded;
    if (params.op == 1u) {
        r = div_rounded(r, u32_to_f32(params.len));
    }
    if (is_non_finite(r)) {
        atomicMin(&nonfinite[1], params.row_base + row);
    }
    out[params.out_shift + row] = r;
}
