//! A crashed OSS loses what it had not committed, and the clients' replay gives it back: every
//! byte reads back, no acknowledged write is lost, replays run in transno order across clients
//! (`ost_crash_no_replay.rs` shows the loss when the clients do not replay).

mod common;

fn check(clients: usize) {
    let c = common::crash::crash_during_writes(clients);
    assert!(c.uncommitted_at_crash > 0, "acknowledged writes were uncommitted at the crash");
    assert_eq!(c.before_crash.len(), c.after_crash.len(), "the objects were committed");
    assert_ne!(c.before_crash, c.after_crash, "the crash lost data the OSS had acknowledged");
    let total = 4 * (2 * (1 << 20) + 12345);
    let mut replays = 0;
    for r in &c.reports {
        assert_eq!((r.errors, r.bytes_verified, r.lost_acked_writes), (0, total, 0), "{r:?}");
        replays += r.replays;
    }
    assert!(replays >= c.uncommitted_at_crash as u64, "every uncommitted change replayed: {:?}", c.reports);
    assert_eq!(c.oss_replays, replays, "the OSS served each replay");
    for ost in [0, 1] {
        let order: Vec<u64> = c.replayed.iter().filter(|r| r.0 == ost).map(|r| r.1).collect();
        assert!(!order.is_empty() && order.windows(2).all(|w| w[0] < w[1]), "OST{ost} served replays in transno order: {order:?}");
    }
}

#[test]
fn a_crashed_oss_loses_uncommitted_writes_and_replay_restores_them() {
    check(1);
}

/// Two clients' replays interleave by transno on each OST (target recovery orders them).
#[test]
fn two_clients_replay_in_transno_order_across_clients() {
    check(2);
}

/// The OSS crashes as the client disconnects: the restarted OSS still counts it among the
/// clients to recover, so the client's DISCONNECT (answered -ENOTCONN) makes it connect again,
/// recover and then disconnect; recovery ends and the OSS forgets it. Before: the client took
/// -ENOTCONN as goodbye and the OSS waited its whole recovery window for it.
#[test]
fn a_client_disconnecting_from_a_crashed_oss_lets_its_recovery_end() {
    let c = common::crash::crash_when(1, &|oscs, _| oscs[0].waiting()["phase"] == "disconnect");
    assert_eq!((c.reports[0].errors, c.reports[0].lost_acked_writes), (0, 0), "{:?}", c.reports[0]);
    assert!(c.reports[0].reconnects >= 1, "{:?}", c.reports[0]);
}
