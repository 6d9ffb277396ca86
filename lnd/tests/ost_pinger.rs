//! Exports do not pile up: clients ping the OSS when idle (`ptlrpc_pinger_main`, every
//! obd_timeout / 4) and the OSS evicts exports silent for longer than PING_EVICT_TIMEOUT (six
//! ping intervals, `ping_evictor_main`). Time is each role's clock, so the tests move it.

mod common;
use common::ost::*;
use lnd::ptlrpc::wire::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const W: Duration = Duration::from_secs(2);

/// A clock that runs with the wall clock plus a skew the test sets.
fn skewed() -> (lnd::Clock, Arc<Mutex<Duration>>) {
    let skew = Arc::new(Mutex::new(Duration::ZERO));
    let s = skew.clone();
    (Arc::new(move || Instant::now() + *s.lock().unwrap()), skew)
}

/// A client that connects and then dies without a DISCONNECT: once it has been silent for
/// PING_EVICT_TIMEOUT (150 s with Lustre's default obd_timeout of 100 s) its export is gone,
/// and a request on the old handle gets -ENOTCONN. Before: the export stayed forever.
#[test]
fn a_silent_client_is_evicted() {
    let mut r = Rig::new(60);
    let (clock, skew) = skewed();
    r.oss.clock = clock;
    let rep = r.raw(portal::OST_REQUEST, 0x1000, req(opc::OST_CONNECT, 0, 0), connect_bufs(0, "dead-a_UUID"), None, W).unwrap();
    let h = rep.body.handle;
    assert_eq!((rep.body.status, r.oss.exports()), (0, 1));
    *skew.lock().unwrap() = Duration::from_secs(140);
    r.idle_for(Duration::from_millis(20));
    assert_eq!(r.oss.exports(), 1, "evicted before PING_EVICT_TIMEOUT");
    *skew.lock().unwrap() = Duration::from_secs(151);
    r.idle_for(Duration::from_millis(20));
    assert_eq!(r.oss.exports(), 0, "a client silent for longer than PING_EVICT_TIMEOUT keeps its export");
    let rep = r.raw(portal::OST_REQUEST, 0x1080, req(opc::OST_GETATTR, h, 0x107f), vec![obdo(1).emit()], None, W).unwrap();
    assert_eq!(rep.body.status, -107, "a request on an evicted export: ENOTCONN");
}

/// A virtual clock both roles read, moved on by the test.
fn virtual_clock() -> (lnd::Clock, Arc<Mutex<Instant>>) {
    let now = Arc::new(Mutex::new(Instant::now()));
    let n = now.clone();
    (Arc::new(move || *n.lock().unwrap()), now)
}

/// An idle but live client is not evicted: its job only uses OST 0, so its import of OST 1
/// carries nothing but the pings the client sends every obd_timeout / 4 when an import has been
/// idle that long (`ptlrpc_pinger_main`); they keep the export. Time moves 5 s a step, so the
/// job lasts several PING_EVICT_TIMEOUTs.
#[test]
fn an_idle_client_pings_and_keeps_its_export() {
    let mut r = Rig::new(61);
    let (clock, now) = virtual_clock();
    r.oss.clock = clock.clone();
    let mut j = job("idle", 0);
    // One file, one stripe: file 0's object is on OST 0; OST 1 stays idle.
    (j.files, j.stripe_count, j.file_size, j.timeout_ms, j.inflight) = (1, 1, 16 << 20, 10_000_000, 1);
    let mut o = lnd::ost::osc::Osc::new(j).unwrap();
    o.clock = clock;
    o.pump(&mut r.nodes[1]);
    r.oscs.push((1, o));
    let start = *now.lock().unwrap();
    let mut exports_seen = 0;
    while !r.oscs[0].1.done() {
        *now.lock().unwrap() += Duration::from_secs(5);
        r.step();
        exports_seen = exports_seen.max(r.oss.exports());
        assert!(now.lock().unwrap().duration_since(start) < Duration::from_secs(100_000), "I/O did not finish: {:?} {:?}", r.oscs[0].1.report, &r.oss.trace[..30.min(r.oss.trace.len())]);
    }
    let elapsed = now.lock().unwrap().duration_since(start);
    assert!(elapsed > Duration::from_secs(300), "the job was too short to test eviction: {elapsed:?}");
    let rep = &r.oscs[0].1.report;
    assert_eq!((rep.errors, rep.reconnects, rep.bytes_verified), (0, 0, rep.bytes_written), "{rep:?}");
    assert_eq!((r.oss.evictions, exports_seen), (0, 2), "a live client was evicted");
    let pings = r.oss.trace.iter().filter(|v| v["rpc"] == "OBD_PING" && v["status"] == 0).count();
    assert!(pings as u64 >= elapsed.as_secs() / 25 / 2, "{pings} pings in {elapsed:?}");
}

/// A client the OSS evicted (here its clock jumps past PING_EVICT_TIMEOUT mid-job, as if the
/// client had been silent that long): its next request gets -ENOTCONN, it connects again and
/// its job completes with nothing lost.
#[test]
fn an_evicted_client_reconnects_and_loses_nothing() {
    let mut r = Rig::new(62);
    let (clock, skew) = skewed();
    r.oss.clock = clock;
    let mut j = job("evicted", 0);
    j.timeout_ms = 300;
    let mut o = lnd::ost::osc::Osc::new(j).unwrap();
    o.pump(&mut r.nodes[1]);
    r.oscs.push((1, o));
    while !r.oscs[0].1.phases.iter().any(|p| p.0 == "write") {
        r.step();
    }
    *skew.lock().unwrap() = Duration::from_secs(151);
    let rep = r.run_jobs(vec![]).remove(0);
    assert_eq!(r.oss.evictions, 2, "both exports of the client are evicted");
    assert!(r.oss.trace.iter().any(|v| v["status"] == -107), "no request met the eviction");
    assert!(rep.reconnects >= 1, "{rep:?}");
    assert_eq!((rep.errors, rep.lost_acked_writes, rep.bytes_verified), (0, 0, rep.bytes_written), "{rep:?}");
    assert_eq!(r.oss.exports(), 0, "the reconnected client's exports outlived its disconnect");
}
