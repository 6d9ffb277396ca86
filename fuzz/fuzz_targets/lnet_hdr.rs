//! The 72-byte LNet header: parse never panics; a parsed header emits the bytes it came from
//! (unused union bytes aside) and parses back equal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lnd::wire::HdrRepr;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = HdrRepr::parse_bytes(data) {
        assert_eq!(HdrRepr::parse_bytes(&h.to_bytes()).unwrap(), h);
    }
});
