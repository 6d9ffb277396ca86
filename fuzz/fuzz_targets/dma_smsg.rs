//! DMA LND short messages: parse never panics; what parses emits and parses back equal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lnd::dmalnd::wire::MsgRepr;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = MsgRepr::parse(data) {
        let mut b = Vec::new();
        m.emit(&mut b);
        assert_eq!(MsgRepr::parse(&b).unwrap(), m);
    }
});
