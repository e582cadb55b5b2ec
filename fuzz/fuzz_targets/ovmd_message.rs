//! Reassembly of a manager message from arbitrary key and chunk bytes, and the scan plan
//! from arbitrary counters and child names: never panics, limits always hold.
#![no_main]
use libfuzzer_sys::fuzz_target;

use guestd_protocols::ovmd::inbound::{Assembly, Inbound, plan_scan};
use guestd_protocols::ovmd::layout::{KEY_MAX, VALUE_MAX, parse_counter};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0xff);
    let key = parts.next().unwrap_or_default();
    if let Ok(mut asm) = Assembly::new(key) {
        let mut ok = true;
        for chunk in parts.by_ref() {
            if asm.push(chunk).is_err() {
                ok = false;
                break;
            }
        }
        if ok {
            match asm.finish().0 {
                Inbound::Param { key, value } => {
                    assert!(!key.is_empty());
                    assert!(value.len() <= VALUE_MAX * 3); // U+FFFD may triple invalid bytes
                    assert!(key.len() <= KEY_MAX * 3);
                }
                Inbound::Event { value } => assert!(value.len() <= VALUE_MAX * 3),
            }
        }
    }
    let last_read = parse_counter(data.get(..4).unwrap_or_default()).unwrap_or(0);
    let last_write = parse_counter(data.get(4..8).unwrap_or_default()).unwrap_or(0);
    let names: Vec<String> = data
        .split(|b| *b == b'/')
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    let scan = plan_scan(last_read, last_write, &names);
    assert!(scan.todo.iter().all(|n| *n <= last_write));
    assert!(scan.todo.windows(2).all(|w| w[0] < w[1]));
});
