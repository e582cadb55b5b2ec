//! The xenstore frame decoder on arbitrary bytes: never panics, always makes progress or
//! waits, never holds more than one frame's worth beyond the input.
#![no_main]
use libfuzzer_sys::fuzz_target;

use guestd_transports::xenstore::wire;

fuzz_target!(|data: &[u8]| {
    let mut buf = bytes::BytesMut::from(data);
    loop {
        let before = buf.len();
        match wire::decode(&mut buf) {
            Ok(Some(f)) => {
                assert!(buf.len() < before);
                assert!(f.payload.len() <= wire::PAYLOAD_MAX);
                let _ = wire::Errno::parse(&f.payload);
                let _ = wire::split_nul(&f.payload);
            }
            Ok(None) | Err(_) => break,
        }
    }
});
