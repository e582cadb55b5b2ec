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
    decode_in_place(s.as_bytes().to_vec())
}

/// [`decode`] into the text's own memory: a large payload is held once, not twice.
pub fn decode_in_place(mut buf: Vec<u8>) -> Result<Vec<u8>, QgaError> {
    if buf.iter().any(|&c| c != b'\n' && rank(c).is_none()) {
        return Err(QgaError::generic(INVALID));
    }
    // Each group of four characters read gives at most three bytes, so the write position
    // never passes the read position: nothing unread is overwritten.
    let (mut v, mut n, mut w) = (0u32, 0, 0usize);
    let mut last0 = 0u8;
    for i in 0..buf.len() {
        let c = buf[i];
        let Some(r) = rank(c) else { continue };
        let last1 = last0;
        last0 = c;
        v = (v << 6) | r;
        n += 1;
        if n == 4 {
            buf[w] = (v >> 16) as u8;
            w += 1;
            if last1 != b'=' {
                buf[w] = (v >> 8) as u8;
                w += 1;
            }
            if last0 != b'=' {
                buf[w] = v as u8;
                w += 1;
            }
            n = 0;
        }
    }
    buf.truncate(w);
    Ok(buf)
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

    #[test]
    fn in_place_matches_the_base64_crate() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for len in [0, 1, 2, 3, 4, 5, 1000, 99_999, 100_000] {
            let text = encode(&data[..len]);
            assert_eq!(decode_in_place(text.into_bytes()).unwrap(), &data[..len]);
        }
        // Line breaks (as `base64` tools write them) are skipped.
        let wrapped: String = encode(&data[..3000])
            .as_bytes()
            .chunks(76)
            .map(|l| format!("{}\n", std::str::from_utf8(l).unwrap()))
            .collect();
        assert_eq!(
            decode_in_place(wrapped.into_bytes()).unwrap(),
            &data[..3000]
        );
    }
}
