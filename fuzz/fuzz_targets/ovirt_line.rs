//! See `guestd_fuzz::ovirt_line` (fuzz/src/lib.rs) for what this target checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| guestd_fuzz::ovirt_line(data));
