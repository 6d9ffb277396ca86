//! The device engine through the in-process provider: pulls, the asymmetry rules, chained
//! SMSGs, mailbox bounds, and what a departed node or an unregistered region leaves behind.

use lnd::dev::inproc::InProcFabric;
use lnd::dev::{CompKind, Completion, DevStatus, Desc, DmaDevice, Op, SMSG_MAX};
use lnd::mem::Seg;

fn seg(off: u64, len: u32) -> Seg {
    Seg { off, len }
}

fn completions(d: &mut dyn DmaDevice) -> Vec<(Completion, Vec<u8>)> {
    let mut v = Vec::new();
    d.poll(&mut |c, b| v.push((*c, b.to_vec())));
    v
}

fn setup(a: &mut dyn DmaDevice, frags: Vec<Seg>) -> u64 {
    let key = a.key();
    a.submit(&Desc { tag: 7, op: Op::TxSetup { key, frags, peer: 2 } }).unwrap();
    let c = completions(a);
    let ready = c.iter().find(|c| c.0.kind == CompKind::TxReady).expect("tx ready");
    assert_eq!(ready.0.status, DevStatus::Ok);
    ready.0.cookie
}

#[test]
fn pull_copies_once_and_completes_both_ends() {
    let fab = InProcFabric::new(1);
    let mut a = fab.attach(1, 1 << 16).unwrap();
    let mut b = fab.attach(2, 1 << 16).unwrap();
    a.mem().write(100, b"0123456789").unwrap();
    a.mem().write(5000, b"abcdef").unwrap();
    let cookie = setup(&mut a, vec![seg(100, 10), seg(5000, 6)]);
    let key = b.key();
    // Pull bytes 8..14 of the tx (crossing the fragment boundary) into two sink pieces.
    b.submit(&Desc { tag: 9, op: Op::Pull { src: 1, cookie, tx_off: 8, key, frags: vec![seg(0, 3), seg(50, 3)] } })
        .unwrap();
    let cb = completions(&mut b);
    assert_eq!((cb[0].0.kind, cb[0].0.status, cb[0].0.len, cb[0].0.tag), (CompKind::PullDone, DevStatus::Ok, 6, 9));
    assert_eq!(b.mem().to_vec(0, 3).unwrap(), b"89a");
    assert_eq!(b.mem().to_vec(50, 3).unwrap(), b"bcd");
    let ca = completions(&mut a);
    assert_eq!((ca[0].0.kind, ca[0].0.tag, ca[0].0.peer), (CompKind::TxDone, 7, 2));
}

#[test]
fn asymmetry_is_enforced() {
    let fab = InProcFabric::new(2);
    let mut a = fab.attach(1, 1 << 16).unwrap();
    let mut b = fab.attach(2, 1 << 16).unwrap();
    let mut c = fab.attach(3, 1 << 16).unwrap();
    let cookie = setup(&mut a, vec![seg(0, 100)]);
    let bkey = b.key();
    let akey = a.key();
    let pull = |dev: &mut dyn DmaDevice, src, cookie, off, key, frags| {
        dev.submit(&Desc { tag: 1, op: Op::Pull { src, cookie, tx_off: off, key, frags } }).unwrap();
        completions(dev)[0].0.status
    };
    // never set up
    assert_eq!(pull(&mut b, 1, cookie ^ 0x55, 0, bkey, vec![seg(0, 10)]), DevStatus::NoSuchTx);
    // right cookie, wrong owner named
    assert_eq!(pull(&mut b, 3, cookie, 0, bkey, vec![seg(0, 10)]), DevStatus::NoSuchTx);
    // sink key not ours (A's region): a node never reaches memory it was not given
    assert_eq!(pull(&mut b, 1, cookie, 0, akey, vec![seg(0, 10)]), DevStatus::BadKey);
    // beyond the transmit
    assert_eq!(pull(&mut b, 1, cookie, 95, bkey, vec![seg(0, 10)]), DevStatus::OutOfBounds);
    // beyond our own region
    assert_eq!(pull(&mut b, 1, cookie, 0, bkey, vec![seg(1 << 16, 1)]), DevStatus::OutOfBounds);
    // a good pull, then the same again: consumed
    assert_eq!(pull(&mut b, 1, cookie, 0, bkey, vec![seg(0, 100)]), DevStatus::Ok);
    let ckey = c.key();
    assert_eq!(pull(&mut c, 1, cookie, 0, ckey, vec![seg(0, 1)]), DevStatus::TxConsumed);
    // tx setup against someone else's key or out of range
    c.submit(&Desc { tag: 2, op: Op::TxSetup { key: akey, frags: vec![seg(0, 1)], peer: 2 } }).unwrap();
    assert_eq!(completions(&mut c)[0].0.status, DevStatus::BadKey);
    c.submit(&Desc { tag: 2, op: Op::TxSetup { key: ckey, frags: vec![seg(65530, 7)], peer: 2 } }).unwrap();
    assert_eq!(completions(&mut c)[0].0.status, DevStatus::OutOfBounds);
    // cancel: only the owner, and a cancelled tx cannot be pulled
    let t2 = setup(&mut a, vec![seg(0, 8)]);
    c.submit(&Desc { tag: 3, op: Op::TxCancel { cookie: t2 } }).unwrap();
    assert_eq!(completions(&mut c)[0].0.status, DevStatus::NoSuchTx);
    a.submit(&Desc { tag: 3, op: Op::TxCancel { cookie: t2 } }).unwrap();
    assert_eq!(completions(&mut a)[0].0.status, DevStatus::Ok);
    assert_eq!(pull(&mut b, 1, t2, 0, bkey, vec![seg(0, 8)]), DevStatus::NoSuchTx);
}

#[test]
fn chained_smsg_carries_the_new_cookie() {
    let fab = InProcFabric::new(5);
    let mut a = fab.attach(1, 4096).unwrap();
    let mut b = fab.attach(2, 4096).unwrap();
    let key = a.key();
    a.submit(&Desc { tag: 77, op: Op::TxSetup { key, frags: vec![seg(0, 16)], peer: 2 } }).unwrap();
    a.submit(&Desc { tag: 78, op: Op::SmsgTx { dst: 2, data: vec![0xee; 12], at: 2, tx_tag: 77 } }).unwrap();
    a.submit(&Desc { tag: 79, op: Op::SmsgTx { dst: 2, data: vec![0; 12], at: 2, tx_tag: 5 } }).unwrap();
    a.submit(&Desc { tag: 80, op: Op::SmsgTx { dst: 2, data: vec![0; 12], at: 5, tx_tag: 77 } }).unwrap();
    let ca = completions(&mut a);
    let cookie = ca[0].0.cookie;
    assert_eq!(ca.iter().map(|c| c.0.status).collect::<Vec<_>>(), [DevStatus::Ok, DevStatus::Ok, DevStatus::NoSuchTx, DevStatus::BadDesc]);
    let got = completions(&mut b);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].1[2..10], &cookie.to_le_bytes());
    assert_eq!(&got[0].1[..2], &[0xee, 0xee]);
}

#[test]
fn smsg_mailbox_bounds() {
    let fab = InProcFabric::with_mailbox(3, 2);
    let mut a = fab.attach(1, 4096).unwrap();
    let mut b = fab.attach(2, 4096).unwrap();
    for i in 0..3u8 {
        a.submit(&Desc { tag: i as u64, op: Op::Smsg { dst: 2, data: vec![i; 5] } }).unwrap();
    }
    a.submit(&Desc { tag: 9, op: Op::Smsg { dst: 5, data: vec![] } }).unwrap();
    a.submit(&Desc { tag: 10, op: Op::Smsg { dst: 2, data: vec![0; SMSG_MAX + 1] } }).unwrap();
    let st: Vec<_> = completions(&mut a).iter().map(|c| c.0.status).collect();
    assert_eq!(
        st,
        [DevStatus::Ok, DevStatus::Ok, DevStatus::MailboxFull, DevStatus::NoSuchPeer, DevStatus::TooLong]
    );
    let got = completions(&mut b);
    assert_eq!(got.len(), 2);
    assert_eq!((got[1].0.kind, got[1].0.peer, got[1].1.clone()), (CompKind::SmsgRecv, 1, vec![1u8; 5]));
    assert!(fab.attach(2, 16).is_err(), "duplicate address");
}

#[test]
fn detach_and_unregister_invalidate() {
    let fab = InProcFabric::new(4);
    let mut a = fab.attach(1, 1024).unwrap();
    let mut b = fab.attach(2, 1024).unwrap();
    let cookie = setup(&mut a, vec![seg(0, 10)]);
    let akey = a.key();
    fab.engine().lock().unwrap().unregister(1, akey).unwrap();
    let bkey = b.key();
    b.submit(&Desc { tag: 1, op: Op::Pull { src: 1, cookie, tx_off: 0, key: bkey, frags: vec![seg(0, 10)] } })
        .unwrap();
    assert_eq!(completions(&mut b)[0].0.status, DevStatus::NoSuchTx);
    assert_eq!(fab.engine().lock().unwrap().unregister(2, akey), Err(DevStatus::BadKey));
}

/// Issue 19 item 4: a transmit is for the peer it was announced to; another node that learnt
/// (or guessed) its cookie cannot pull it.
#[test]
fn a_transmit_is_pullable_only_by_its_peer() {
    let fab = InProcFabric::new(6);
    let mut a = fab.attach(1, 4096).unwrap();
    let mut b = fab.attach(2, 4096).unwrap();
    let mut c = fab.attach(3, 4096).unwrap();
    let cookie = setup(&mut a, vec![seg(0, 16)]);
    let pull = |dev: &mut dyn DmaDevice| {
        let key = dev.key();
        dev.submit(&Desc { tag: 1, op: Op::Pull { src: 1, cookie, tx_off: 0, key, frags: vec![seg(0, 16)] } }).unwrap();
        completions(dev)[0].0.status
    };
    assert_eq!(pull(&mut c), DevStatus::NoSuchTx, "node 3 is not the transmit's peer");
    assert_eq!(pull(&mut b), DevStatus::Ok);
}

/// Issue 19 item 4: cookies are keyed random values: two of them say nothing about a third
/// (with `(n·K) ^ secret`, the XOR of two cookies did not even depend on the secret).
#[test]
fn cookies_do_not_reveal_each_other() {
    let cookies = |secret: u64| {
        let fab = InProcFabric::new(secret);
        let mut a = fab.attach(1, 4096).unwrap();
        let _b = fab.attach(2, 4096).unwrap();
        [setup(&mut a, vec![seg(0, 8)]), setup(&mut a, vec![seg(0, 8)]), setup(&mut a, vec![seg(0, 8)])]
    };
    let (x, y) = (cookies(11), cookies(12));
    assert_ne!(x[0] ^ x[1], y[0] ^ y[1], "the XOR of two cookies must depend on the key");
    assert_ne!(x[2], x[1].wrapping_add(x[1].wrapping_sub(x[0])), "no arithmetic progression");
    assert_ne!(x[2] ^ x[1], x[1] ^ x[0]);
}

/// A partition on the fabric: short messages across it fail at the sender as if nobody were
/// there, pulls fail at the puller while the transmit stays (the transmitter hears nothing),
/// a third node is untouched; once healed, the very same transmit is pulled.
#[test]
fn a_cut_fabric_refuses_short_messages_and_pulls_across_it_until_healed() {
    let fab = InProcFabric::new(5);
    let mut a = fab.attach(1, 1 << 16).unwrap();
    let mut b = fab.attach(2, 1 << 16).unwrap();
    let mut c = fab.attach(3, 1 << 16).unwrap();
    a.mem().write(0, b"across").unwrap();
    let cookie = setup(&mut a, vec![seg(0, 6)]);
    fab.engine().lock().unwrap().set_cut(1, 2, true);
    b.submit(&Desc { tag: 4, op: Op::Smsg { dst: 1, data: b"hi".to_vec() } }).unwrap();
    c.submit(&Desc { tag: 5, op: Op::Smsg { dst: 1, data: b"c".to_vec() } }).unwrap();
    let key = b.key();
    let pull = Desc { tag: 6, op: Op::Pull { src: 1, cookie, tx_off: 0, key, frags: vec![seg(0, 6)] } };
    b.submit(&pull).unwrap();
    let cb: Vec<_> = completions(&mut b).into_iter().map(|c| (c.0.kind, c.0.status)).collect();
    assert_eq!(cb, [(CompKind::SmsgSent, DevStatus::NoSuchPeer), (CompKind::PullDone, DevStatus::NoSuchPeer)]);
    assert_eq!(completions(&mut c)[0].0.status, DevStatus::Ok, "a node off the cut is not touched");
    let ca = completions(&mut a);
    assert_eq!(ca.iter().map(|c| (c.0.kind, c.0.peer)).collect::<Vec<_>>(), [(CompKind::SmsgRecv, 3)], "only c's message arrived; no TxDone");
    fab.engine().lock().unwrap().set_cut(2, 1, false);
    b.submit(&pull).unwrap();
    assert_eq!(completions(&mut b)[0].0.status, DevStatus::Ok, "healed: the transmit is still there");
    assert_eq!(b.mem().to_vec(0, 6).unwrap(), b"across");
}

/// A killed device loses every attachment: old handles take descriptors and complete
/// nothing, their mailboxes are gone, nobody attaches until it starts again; a handle from the
/// old life dropped later does not detach the new attachment at its address.
#[test]
fn a_killed_device_goes_dead_and_a_started_one_takes_new_attachments() {
    let fab = InProcFabric::new(6);
    let mut a = fab.attach(1, 1 << 16).unwrap();
    let mut b = fab.attach(2, 1 << 16).unwrap();
    b.submit(&Desc { tag: 1, op: Op::Smsg { dst: 1, data: b"queued".to_vec() } }).unwrap();
    let life = fab.epoch();
    fab.kill();
    assert!(fab.is_down() && fab.epoch() != life);
    assert!(completions(&mut a).is_empty(), "the mailbox went with the device");
    a.submit(&Desc { tag: 2, op: Op::Smsg { dst: 2, data: b"x".to_vec() } }).unwrap();
    assert!(completions(&mut a).is_empty() && completions(&mut b).is_empty(), "a dead device answers nothing");
    assert!(matches!(fab.attach_mem(1, a.mem().clone()), Err(lnd::dev::engine::AttachError::DeviceDown)));
    fab.start();
    let mut a2 = fab.attach_mem(1, a.mem().clone()).unwrap();
    let mut b2 = fab.attach_mem(2, b.mem().clone()).unwrap();
    drop(a);
    drop(b);
    b2.submit(&Desc { tag: 3, op: Op::Smsg { dst: 1, data: b"again".to_vec() } }).unwrap();
    assert_eq!(completions(&mut b2)[0].0.status, DevStatus::Ok, "the old handles' drop left the new attachments alone");
    assert_eq!(completions(&mut a2)[0].1, b"again");
}

/// `late` on a fabric with a clock: the pull's completions wait until the clock passes the
/// latency, and what the node submitted after it waits behind it (as behind the sleeping
/// copier of `dmadev`).
#[test]
fn a_late_pull_completes_when_the_clock_passes_and_holds_what_follows() {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    let t0 = Instant::now();
    let now = Arc::new(Mutex::new(t0));
    let n = now.clone();
    let fab = InProcFabric::new(7).with_clock(Arc::new(move || *n.lock().unwrap()));
    fab.engine().lock().unwrap().set_faults(lnd::dev::engine::FaultConfig { late: 1, late_ms: 30, ..Default::default() }, 1);
    let mut a = fab.attach(1, 1 << 16).unwrap();
    let mut b = fab.attach(2, 1 << 16).unwrap();
    a.mem().write(0, b"late").unwrap();
    let cookie = setup(&mut a, vec![seg(0, 4)]);
    let key = b.key();
    b.submit(&Desc { tag: 6, op: Op::Pull { src: 1, cookie, tx_off: 0, key, frags: vec![seg(0, 4)] } }).unwrap();
    b.submit(&Desc { tag: 8, op: Op::Fence }).unwrap();
    *now.lock().unwrap() = t0 + Duration::from_millis(29);
    assert!(completions(&mut b).is_empty() && completions(&mut a).is_empty(), "held for 30 ms");
    assert_eq!(b.mem().to_vec(0, 4).unwrap(), [0; 4], "not copied yet");
    *now.lock().unwrap() = t0 + Duration::from_millis(30);
    let cb: Vec<_> = completions(&mut b).into_iter().map(|c| (c.0.kind, c.0.tag)).collect();
    assert_eq!(cb, [(CompKind::PullDone, 6), (CompKind::Fenced, 8)], "the fence waited behind the pull");
    assert_eq!(b.mem().to_vec(0, 4).unwrap(), b"late");
    assert_eq!(completions(&mut a)[0].0.kind, CompKind::TxDone);
    assert_eq!(fab.engine().lock().unwrap().stats.late, 1);
}
