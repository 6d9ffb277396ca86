//! NID, net and process-id text: parse never panics; what parses prints and re-parses the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lnd::wire::{Net, Nid, ProcessId};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(n) = s.parse::<Nid>() {
        assert_eq!(n.to_string().parse::<Nid>().unwrap(), n);
    }
    let _ = s.parse::<Net>();
    let _ = s.parse::<ProcessId>();
});
