//! The fabric link's frames from a (hostile) remote device: parsing never panics, and what
//! parses emits back to the very same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lnd::dev::link::LinkFrame;

fuzz_target!(|data: &[u8]| {
    if let Some(head) = data.get(..4) {
        let _ = LinkFrame::announced_len(head.try_into().unwrap());
    }
    if let Ok(f) = LinkFrame::parse(data) {
        let mut out = Vec::new();
        f.emit(&mut out);
        assert_eq!(&out[4..], data);
    }
});
