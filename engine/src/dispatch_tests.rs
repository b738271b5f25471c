//! `BITNET_DISPATCH` parsing.

use super::*;
use crate::cache_file::tests::warnings;

/// A blank `BITNET_DISPATCH` (as `BITNET_DISPATCH= cmd` leaves it) says nothing, as an unset
/// one: it was logged as an invalid policy.
#[test]
fn a_blank_setting_says_nothing() {
    warnings();
    for blank in ["", " ", "\t\n"] {
        assert_eq!(DispatchPolicy::from_setting(Some(blank)), None);
    }
    assert_eq!(DispatchPolicy::from_setting(None), None);
    let gpu = DispatchPolicy::from_setting(Some(" GPU "));
    assert_eq!(gpu, Some(DispatchPolicy::Gpu));
    assert_eq!(DispatchPolicy::from_setting(Some("fast")), None);
    let logged = warnings();
    let about = |v: &str| {
        logged
            .iter()
            .any(|w| w.contains(&format!("{DISPATCH_ENV}={v:?}")))
    };
    assert!(!about("") && !about(" ") && !about("\t\n"), "{logged:?}");
    assert!(about("fast"), "{logged:?}");
}
