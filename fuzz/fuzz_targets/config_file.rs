//! See `guestd_fuzz::config_file` (fuzz/src/lib.rs) for what this target checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| guestd_fuzz::config_file(data));
