//! The same crash as `ost_crash.rs` with the `osc_no_replay` mutant (the client drops its
//! uncommitted requests instead of replaying them): the checker counts exactly the writes lost.
//! Its own test binary, as mutants are read from the environment once per process.

mod common;

#[test]
fn without_replay_the_crash_loses_acknowledged_writes_and_the_checker_counts_them() {
    std::env::set_var("LNETLAB_MUTANT", "osc_no_replay");
    let c = common::crash::crash_during_writes(1);
    let r = &c.reports[0];
    assert!(c.uncommitted_at_crash > 0);
    assert_eq!(r.replays, 0, "{r:?}");
    assert!(r.errors > 0, "{r:?}");
    assert_eq!(r.lost_acked_writes, c.uncommitted_at_crash as u64, "each write lost in the crash is counted: {r:?}");
}
