//! socklnd: a connection parser fed arbitrary bytes (passive and active) in arbitrary chunks
//! never panics; every error is a reason to close.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lnd::sock::conn::ConnParser;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let passive = data[0] & 1 == 1;
    let chunk = 1 + (data[0] as usize >> 1);
    let mut p = ConnParser::new(passive);
    let mut ev = Vec::new();
    for c in data[1..].chunks(chunk) {
        if p.input(c, &mut ev).is_err() {
            break;
        }
        ev.clear();
    }
});
