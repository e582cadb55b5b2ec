//! Base64 as qemu-ga handles it: input is first checked for characters outside the
//! alphabet (`+/=`, newline allowed), then decoded leniently the way GLib does (an unfinished
//! final group is dropped, `=` only trims the group it ends). Output is standard, padded.

use base64::Engine;

use super::error::QgaError;

/// qemu-ga's text for input outside the alphabet.
pub const INVALID: &str = "Base64 data contains invalid characters";

fn rank(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        b'=' => Some(0),
        _ => None,
    }
}

/// Decode like `qbase64_decode()`.
pub fn decode(s: &str) -> Result<Vec<u8>, QgaError> {
    let bytes = s.as_bytes();
    if bytes.iter().any(|&c| c != b'\n' && rank(c).is_none()) {
        return Err(QgaError::generic(INVALID));
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let (mut v, mut n) = (0u32, 0);
    let mut last0 = 0u8;
    for &c in bytes {
        let Some(r) = rank(c) else { continue };
        let last1 = last0;
        last0 = c;
        v = (v << 6) | r;
        n += 1;
        if n == 4 {
            out.push((v >> 16) as u8);
            if last1 != b'=' {
                out.push((v >> 8) as u8);
            }
            if last0 != b'=' {
                out.push(v as u8);
            }
            n = 0;
        }
    }
    Ok(out)
}

/// Encode, standard alphabet with padding.
pub fn encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glib_leniency() {
        assert_eq!(decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode("aGVs\nbG8=").unwrap(), b"hello");
        // An unfinished last group is dropped.
        assert_eq!(decode("aGVsbG8").unwrap(), b"hel");
        assert_eq!(decode("").unwrap(), b"");
        assert_eq!(decode("!!").unwrap_err().desc, INVALID);
        assert_eq!(decode("aGVs bG8=").unwrap_err().desc, INVALID);
        assert_eq!(encode(b"hello"), "aGVsbG8=");
    }
}
