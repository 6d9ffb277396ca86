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

/// A client that disconnects leaves nothing to replay: the OSS commits when it drops the
/// client's record (`tgt_client_del` is a synchronous transaction). A job's punches, made after
/// its last OST_SYNC, survive a crash that comes after it disconnected. (Before: they were in
/// the cache, the client gone, and the crash lost them.)
#[test]
fn a_disconnect_commits_what_the_client_changed() {
    let mut r = common::ost::Rig::new(73);
    let job = lnd::ost::osc::IoJob { punch: true, ..common::ost::job("punches", 0) };
    let (size, ss, sc) = (job.file_size, job.stripe_size as u64, job.stripe_count);
    let rep = r.run_jobs(vec![job]).remove(0);
    assert_eq!(rep.errors, 0, "{rep:?}");
    let common::ost::Rig { oss, .. } = r;
    let osts = oss.crash().unwrap();
    for &(_, stripe, t, oid) in &rep.objects {
        let want = lnd::ost::osc::stripe_object_size(size, ss, sc, stripe) / 2;
        assert_eq!(osts[t].size(oid), Ok(want), "object {oid} of stripe {stripe} keeps its punch");
        assert!(osts[t].clients().is_empty());
    }
}

/// A replay whose reply is lost is resent; the recovering OSS serves the resend again (its
/// transno is behind the next one by then) but counts it once, as the client does. (Before: a
/// debug run under load counted 18 replays at the OSS for the clients' 16.)
#[test]
fn a_resent_replay_is_counted_once() {
    let drop_replies = |nodes: &mut [lnd::node::Node]| {
        // Every third reply the client gets on OST_REPLY_PORTAL (4) is lost: replays' too.
        let rule = lnd::lnet::fault::FaultRule { portal: Some(4), msg_type: Some("PUT".into()), interval: Some(3), ..Default::default() };
        nodes[1].lnet.add_fault_rule(rule).unwrap();
    };
    let c = common::crash::crash_then(1, &|oscs, total| oscs[0].report.bytes_written >= total / 2, &drop_replies);
    let r = &c.reports[0];
    assert_eq!((r.errors, r.lost_acked_writes), (0, 0), "{r:?}");
    assert!(r.replays >= 3 && r.resends >= 1, "replies were lost during replay: {r:?}");
    assert_eq!(c.oss_replays, r.replays, "the OSS counts each replay once: {r:?}");
}
