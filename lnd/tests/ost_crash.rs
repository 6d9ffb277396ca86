//! A crashed OSS loses what it had not committed, and the client's replay gives it back: every
//! byte reads back, no acknowledged write is lost (`ost_crash_no_replay.rs` shows the loss when
//! the client does not replay).

mod common;

#[test]
fn a_crashed_oss_loses_uncommitted_writes_and_replay_restores_them() {
    let c = common::crash::crash_during_writes();
    let r = &c.report;
    assert!(c.uncommitted_at_crash > 0, "acknowledged writes were uncommitted at the crash");
    assert_eq!(c.before_crash.len(), c.after_crash.len(), "the objects were committed");
    assert_ne!(c.before_crash, c.after_crash, "the crash lost data the OSS had acknowledged");
    let total = 4 * (2 * (1 << 20) + 12345);
    assert_eq!((r.errors, r.bytes_verified, r.lost_acked_writes), (0, total, 0), "{r:?}");
    assert!(r.replays >= c.uncommitted_at_crash as u64, "every uncommitted change replayed: {r:?}");
    assert_eq!(c.oss_replays, r.replays, "the OSS served each replay");
}
