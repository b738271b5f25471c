//! `exact_div.wgsl` transliterated line for line into Rust and checked against the IEEE
//! division of the host CPU. (The GPU cross-check suite checks the WGSL itself through the
//! weight scales it produces.)

/// Rust mirror of `exact_div_split`.
fn split(bits: u32) -> (u32, i32) {
    let biased = (bits >> 23) as i32;
    let frac = bits & 0x7f_ffff;
    if biased == 0 {
        let shift = frac.leading_zeros() - 8;
        return (frac << shift, -126 - shift as i32);
    }
    (frac | 0x80_0000, biased - 127)
}

/// Rust mirror of `exact_div`.
fn exact_div(a: f32, b: f32) -> f32 {
    let ab = a.to_bits() & 0x7fff_ffff;
    let bb = b.to_bits() & 0x7fff_ffff;
    let inf = 0x7f80_0000u32;
    if ab > inf || bb > inf || (ab == inf && bb == inf) || (ab == 0 && bb == 0) {
        return f32::from_bits(0x7fc0_0000);
    }
    if bb == inf {
        return 0.0;
    }
    if bb == 0 || ab == inf {
        return f32::from_bits(inf);
    }
    if ab == 0 {
        return 0.0;
    }
    let (xs, xe) = split(ab);
    let (ys, ye) = split(bb);
    let mut rem = xs;
    let mut e = xe - ye;
    if rem < ys {
        rem <<= 1;
        e -= 1;
    }
    let biased = e + 127;
    if biased >= 255 {
        return f32::from_bits(inf);
    }
    let nbits = if biased < 1 { 24 + biased } else { 25 };
    if nbits < 1 {
        return 0.0;
    }
    let mut q = 0u32;
    for _ in 0..nbits {
        q <<= 1;
        if rem >= ys {
            rem -= ys;
            q |= 1;
        }
        rem <<= 1;
    }
    let round_bit = q & 1;
    q >>= 1;
    if round_bit == 1 && (rem != 0 || q & 1 == 1) {
        q += 1;
    }
    if biased < 1 {
        return f32::from_bits(q);
    }
    f32::from_bits((((biased - 1) as u32) << 23) + q)
}

fn check(a: f32, b: f32) {
    let got = exact_div(a, b);
    let want = a / b;
    assert!(
        got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
        "{a:e} / {b:e}: got {got:e} ({:#x}), want {want:e} ({:#x})",
        got.to_bits(),
        want.to_bits()
    );
}

#[test]
fn exact_div_matches_ieee_division() {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    // Random non-negative bit patterns over the whole range (incl. subnormal, inf, NaN).
    for _ in 0..400_000 {
        let r = next();
        check(
            f32::from_bits(r as u32 & 0x7fff_ffff),
            f32::from_bits((r >> 32) as u32 & 0x7fff_ffff),
        );
    }
    // The three divisions of layout.rs over their real operand ranges.
    for _ in 0..400_000 {
        let r = next();
        let a = f32::from_bits(r as u32 & 0x7fff_ffff);
        let count = ((r >> 32) % 50_000_000 + 1) as f32;
        if a.is_finite() {
            check(a, count);
            let s = (a / count).max(1e-5);
            check(1.0, s);
            check(127.0, a.max(1e-5));
        }
    }
    // Edge cases: exact quotients, ties in the subnormal range, overflow, specials.
    let edges = [
        0.0,
        1e-45,
        1e-40,
        1.1754942e-38,
        1.1754944e-38,
        1e-5,
        0.5,
        1.0,
        1.5,
        3.0,
        127.0,
        16777215.0,
        16777216.0,
        3.4028235e38,
        f32::INFINITY,
        f32::NAN,
    ];
    for a in edges {
        for b in edges {
            check(a, b);
        }
    }
}
