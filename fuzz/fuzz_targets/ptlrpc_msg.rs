//! ptlrpc: lustre_msg_v2 and the bodies inside never panic on hostile bytes; a parsed message
//! round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lnd::ptlrpc::wire::{IoObj, LustreMsg, NioBuf, Obdo};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = LustreMsg::parse(data) {
        let _ = m.body();
        if let Ok(b) = m.buf(1, 208) {
            let _ = Obdo::parse(b, m.swapped);
        }
        if let Ok(b) = m.buf(2, 24) {
            let _ = IoObj::parse(b, m.swapped);
        }
        if let Some(b) = m.bufs.get(3) {
            let _ = NioBuf::parse_all(b, m.swapped);
        }
        if !m.swapped {
            assert_eq!(LustreMsg::parse(&m.emit()).unwrap().bufs, m.bufs);
        }
    }
});
