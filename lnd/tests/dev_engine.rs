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
