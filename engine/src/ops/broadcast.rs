//! NumPy broadcasting as the elementwise kernel sees it: the output shape, each operand's strides
//! in the output's index space (0 on broadcast axes), and the merge of adjacent axes that keeps
//! the kernel's fixed 6-axis index decomposition enough for any rank that matters.

use crate::error::{Error, Result};

/// Axes the `elementwise_binary` kernel decomposes.
pub(crate) const MAX_AXES: usize = 6;

/// Row-major strides of `shape` seen through the broadcast shape `out` (0 on broadcast axes).
pub(crate) fn strides_in(shape: &[usize], out: &[usize]) -> Vec<u64> {
    let mut strides = vec![0u64; out.len()];
    let offset = out.len() - shape.len();
    let mut stride = 1u64;
    for (i, &d) in shape.iter().enumerate().rev() {
        strides[offset + i] = if d == 1 { 0 } else { stride };
        stride *= d as u64;
    }
    strides
}

/// The kernel's view of a broadcast: extents and the two operands' strides, outermost first,
/// right-aligned to [`MAX_AXES`] axes (leading axes of extent 1 and stride 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Output extents.
    pub shape: [u32; MAX_AXES],
    /// Strides of `a`.
    pub a: [u32; MAX_AXES],
    /// Strides of `b`.
    pub b: [u32; MAX_AXES],
}

/// Builds the kernel plan: drops extent-1 axes, merges each axis into its inner neighbour when
/// both operands step through them contiguously (`stride[i] == stride[i+1] · extent[i+1]`, which
/// also holds for two broadcast axes), and fails when more than [`MAX_AXES`] axes remain.
pub(crate) fn plan(op: &'static str, out: &[usize], a: &[u64], b: &[u64]) -> Result<Plan> {
    // (extent, stride a, stride b), outermost first.
    let mut axes: Vec<(u64, u64, u64)> = Vec::new();
    for i in 0..out.len() {
        let e = out[i] as u64;
        if e == 1 {
            continue;
        }
        match axes.last_mut() {
            Some(last) if last.1 == a[i] * e && last.2 == b[i] * e => {
                *last = (last.0 * e, a[i], b[i]);
            }
            _ => axes.push((e, a[i], b[i])),
        }
    }
    if axes.len() > MAX_AXES {
        return Err(Error::Unsupported(format!(
            "{op}: this broadcast of shape {out:?} needs {} index axes after merging contiguous \
             ones; the GPU kernel handles at most {MAX_AXES}",
            axes.len()
        )));
    }
    let mut p = Plan {
        shape: [1; MAX_AXES],
        a: [0; MAX_AXES],
        b: [0; MAX_AXES],
    };
    let skip = MAX_AXES - axes.len();
    for (j, &(e, sa, sb)) in axes.iter().enumerate() {
        // Callers check that element counts fit u32, which bounds extents and strides.
        p.shape[skip + j] = e as u32;
        p.a[skip + j] = sa as u32;
        p.b[skip + j] = sb as u32;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_axes_merge_and_broadcast_axes_stay() {
        // [2, 3, 4] + [3, 1]: b repeats over the last axis and over the first.
        let out = [2, 3, 4];
        let p = plan(
            "t",
            &out,
            &strides_in(&[2, 3, 4], &out),
            &strides_in(&[3, 1], &out),
        )
        .unwrap();
        assert_eq!(p.shape, [1, 1, 1, 2, 3, 4]);
        assert_eq!(p.a, [0, 0, 0, 12, 4, 1]);
        assert_eq!(p.b, [0, 0, 0, 0, 1, 0]);
        // Same shapes collapse to one axis.
        let p = plan("t", &out, &strides_in(&out, &out), &strides_in(&out, &out)).unwrap();
        assert_eq!(p.shape, [1, 1, 1, 1, 1, 24]);
    }

    #[test]
    fn too_many_alternating_axes_is_an_error() {
        let out = [2, 2, 2, 2, 2, 2, 2];
        let b = [2, 1, 2, 1, 2, 1, 2];
        assert!(plan("t", &out, &strides_in(&out, &out), &strides_in(&b, &out)).is_err());
    }
}
