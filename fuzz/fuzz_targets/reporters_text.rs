//! See `guestd_fuzz::reporters_text` (fuzz/src/lib.rs) for what this target checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| guestd_fuzz::reporters_text(data));
