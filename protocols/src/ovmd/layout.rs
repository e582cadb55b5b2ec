//! The key layout under the guest's home and the limits of Oracle's driver (ovmd.md §1.2-1.3).

/// The channel's root, relative to `/local/domain/<domid>`.
pub const ROOT: &str = "control/oracle-vmapi";
/// Manager to guest messages.
pub const TO_GUEST: &str = "control/oracle-vmapi/to-guest";
/// The manager's commit counter; the guest watches it.
pub const TO_GUEST_LAST_WRITE: &str = "control/oracle-vmapi/to-guest/last-write";
/// Guest to manager messages.
pub const FROM_GUEST: &str = "control/oracle-vmapi/from-guest";
/// The guest's commit counter, written after each message.
pub const FROM_GUEST_LAST_WRITE: &str = "control/oracle-vmapi/from-guest/last-write";
/// The name of the counters' nodes.
pub const LAST_WRITE: &str = "last-write";

/// Longest key, in bytes, either way.
pub const KEY_MAX: usize = 255;
/// Longest value, in bytes, either way.
pub const VALUE_MAX: usize = 8191;
/// Outbound chunk size of UEK's driver.
pub const CHUNK: usize = 2048;
/// Longest `VMAPIEvent` value the kernel can queue (4096-byte event minus its header, mask
/// and NUL on 64-bit); larger ones vanish there, and are dropped with a log here.
pub const EVENT_VALUE_MAX: usize = 4071;
/// Most chunks an inbound message may have: more cannot fit in [`VALUE_MAX`] unless empty.
pub const CHUNKS_MAX: usize = VALUE_MAX + 1;

/// `to-guest/<n>`.
pub fn to_guest(n: u64) -> String {
    format!("{TO_GUEST}/{n}")
}

/// `to-guest/<n>/<chunk>`.
pub fn to_guest_chunk(n: u64, chunk: usize) -> String {
    format!("{TO_GUEST}/{n}/{chunk}")
}

/// `from-guest/<m>`.
pub fn from_guest(m: u64) -> String {
    format!("{FROM_GUEST}/{m}")
}

/// `from-guest/<m>/<chunk>`.
pub fn from_guest_chunk(m: u64, chunk: usize) -> String {
    format!("{FROM_GUEST}/{m}/{chunk}")
}

/// A counter as the driver reads it: unsigned decimal; surrounding blanks and a trailing NUL
/// are tolerated. `None`: absent meaning ("stop").
pub fn parse_counter(raw: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(raw).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c.is_ascii_whitespace());
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_relative_and_unpadded() {
        assert_eq!(to_guest(1), "control/oracle-vmapi/to-guest/1");
        assert_eq!(to_guest_chunk(12, 0), "control/oracle-vmapi/to-guest/12/0");
        assert_eq!(from_guest(3), "control/oracle-vmapi/from-guest/3");
        assert_eq!(
            from_guest_chunk(3, 2),
            "control/oracle-vmapi/from-guest/3/2"
        );
        assert!(!TO_GUEST.starts_with('/'));
    }

    #[test]
    fn counters() {
        assert_eq!(parse_counter(b"1"), Some(1));
        assert_eq!(parse_counter(b"42\0"), Some(42));
        assert_eq!(parse_counter(b" 7\n"), Some(7));
        assert_eq!(parse_counter(b""), None);
        assert_eq!(parse_counter(b"-1"), None);
        assert_eq!(parse_counter(b"0x10"), None);
        assert_eq!(parse_counter(b"99999999999999999999999"), None);
    }
}
