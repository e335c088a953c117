//! Checks of the test harness itself.

/// Fails on purpose when `BERTH_TEST_FAIL=1`, so that `cargo xtask test-vm`
/// and `.ci/run` can show that a failing test makes the run fail.
#[test]
fn deliberate_failure_when_asked() {
    if std::env::var("BERTH_TEST_FAIL").as_deref() == Ok("1") {
        panic!("BERTH_TEST_FAIL=1: failing on purpose");
    }
}
