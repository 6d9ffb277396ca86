//! Adaptive timeouts against a busy OSS: requests waiting for an I/O thread get early replies
//! and a client doing adaptive timeouts waits for them instead of resending.

mod common;
use common::ost::*;
use common::*;
use lnd::lnet::fault::FaultRule;
use lnd::ost::osc::IoJob;
use lnd::ptlrpc::at::AtConfig;

/// One I/O thread, and every bulk GET of the OSS held 300 ms at the client: six writes in
/// flight wait up to 1.8 s, past the 1 s a request is given (the client's `at_max`). With
/// adaptive timeouts the OSS's early replies (at 0.5 s: half of a short timeout) move the
/// deadlines out and nothing is resent; with a fixed 1 s timeout the same run resends.
#[test]
fn a_busy_oss_sends_early_replies_and_adaptive_clients_wait_for_them() {
    for adaptive in [true, false] {
        let mut r = Rig::new(5);
        r.oss.io_threads = 1;
        r.oss.at.extra_ms = 3000;
        let hold = FaultRule { src: Some(nid(OSS_NID)), msg_type: Some("GET".into()), interval: Some(1), delay_ms: Some(300), ..Default::default() };
        r.nodes[1].lnet.add_fault_rule(hold).unwrap();
        let at = AtConfig { max_ms: 1000, ..Default::default() };
        let job = IoJob { at: adaptive.then_some(at), timeout_ms: 1000, max_tries: 16, ..job("busy", 0) };
        let rep = r.run_jobs(vec![job]).remove(0);
        assert_eq!((rep.errors, rep.bytes_verified), (0, 2 * (2 * (1 << 20) + 12345)), "{rep:?}");
        if adaptive {
            assert!(rep.early_replies > 0 && r.oss.early_replies >= rep.early_replies, "early replies: {} received, {} sent", rep.early_replies, r.oss.early_replies);
            assert_eq!((rep.resends, rep.reconnects), (0, 0), "{rep:?}");
            assert!(r.oss.queued_max >= 4, "the writes queued for the one thread: {}", r.oss.queued_max);
        } else {
            assert_eq!((rep.early_replies, r.oss.early_replies), (0, 0), "no early reply to a client without MSGHDR_AT_SUPPORT");
            assert!(rep.resends > 0, "fixed 1 s timeouts expire: {rep:?}");
        }
    }
}
