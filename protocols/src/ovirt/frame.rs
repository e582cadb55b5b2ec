//! Newline-framed JSON: reading host commands out of a bounded buffer, writing agent messages
//! as compact ASCII JSON lines with VDSM's character filter and a size cap.

use bytes::{Buf, BytesMut};
use serde_json::{Map, Value};

/// Longest command line accepted from the host, without its `\n`. VDSM's commands are a few
/// hundred bytes; a `login` with a long password stays far below this.
pub const MAX_COMMAND_LINE: usize = 64 * 1024;

/// Largest message line written (note §2.2: VDSM always accepts < 1 MiB; stay well below).
pub const MAX_MESSAGE_LINE: usize = 512 * 1024;

/// Why a line from the host was not a command frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The line grew past the limit before its `\n`; the rest of it is skipped.
    #[error("Line longer than {limit} bytes; skipped")]
    TooLong {
        /// The limit.
        limit: usize,
    },
    /// Not valid JSON (or not UTF-8).
    #[error("Invalid JSON: {0}")]
    Json(String),
    /// Valid JSON but not an object.
    #[error("Not a JSON object")]
    NotObject,
    /// An object without a string `__name__`.
    #[error("Object without a string __name__")]
    NoName,
}

/// Splits the host's byte stream into lines, never buffering more than
/// [`MAX_COMMAND_LINE`] bytes of an unterminated line. A longer line is reported once and
/// skipped up to and including its `\n`.
#[derive(Debug, Clone)]
pub struct LineReader {
    limit: usize,
    skipping: bool,
}

impl Default for LineReader {
    fn default() -> Self {
        Self::new(MAX_COMMAND_LINE)
    }
}

impl LineReader {
    /// A reader with a custom line limit.
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            skipping: false,
        }
    }

    /// The longest partial line this reader leaves in a buffer.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Forget any line being skipped (the host reconnected; the runtime cleared the buffer).
    pub fn reset(&mut self) {
        self.skipping = false;
    }

    /// The next complete line (without `\n`), an error for an oversized one, or `None` when
    /// more bytes are needed. Every `Some` consumes bytes from `buf`; `None` leaves at most
    /// `limit` bytes in it.
    pub fn next_line(&mut self, buf: &mut BytesMut) -> Option<Result<BytesMut, FrameError>> {
        loop {
            match memchr_newline(buf) {
                Some(pos) => {
                    let mut line = buf.split_to(pos + 1);
                    line.truncate(pos);
                    if self.skipping {
                        // The tail of a line already reported as too long.
                        self.skipping = false;
                        continue;
                    }
                    if line.len() > self.limit {
                        return Some(Err(FrameError::TooLong { limit: self.limit }));
                    }
                    return Some(Ok(line));
                }
                None => {
                    if self.skipping {
                        buf.advance(buf.len());
                        return None;
                    }
                    if buf.len() > self.limit {
                        buf.advance(buf.len());
                        self.skipping = true;
                        return Some(Err(FrameError::TooLong { limit: self.limit }));
                    }
                    return None;
                }
            }
        }
    }
}

fn memchr_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// A parsed frame: the `__name__` and the other members.
#[derive(Debug, Clone, PartialEq)]
pub struct RawCommand {
    /// `__name__`.
    pub name: String,
    /// Every other member.
    pub args: Map<String, Value>,
}

/// Parse one line into a named object. Leading/trailing whitespace (a stray `\r`) and a
/// UTF-8 byte order mark are tolerated; an empty line is an error like any other bad line.
pub fn parse_line(line: &[u8]) -> Result<RawCommand, FrameError> {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    let value: Value = serde_json::from_slice(line).map_err(|e| FrameError::Json(e.to_string()))?;
    let Value::Object(mut args) = value else {
        return Err(FrameError::NotObject);
    };
    let name = match args.remove("__name__") {
        Some(Value::String(s)) => s,
        _ => return Err(FrameError::NoName),
    };
    Ok(RawCommand { name, args })
}

/// VDSM's XML character filter (note §2.1): characters XML cannot carry become U+FFFD.
/// TAB, LF, CR and U+0085 stay. (Surrogates cannot occur in a Rust `str`.)
pub fn filter_char(c: char) -> char {
    match c as u32 {
        0x00..=0x08 | 0x0B..=0x0C | 0x0E..=0x1F | 0x7F..=0x84 | 0x86..=0x9F | 0xFFFE..=0xFFFF => {
            '\u{FFFD}'
        }
        _ => c,
    }
}

/// `s` with [`filter_char`] applied; borrows when nothing changes.
pub fn filter_str(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().all(|c| filter_char(c) == c) {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(s.chars().map(filter_char).collect())
    }
}

/// Apply the filter to every string key and value, recursively.
pub fn filter_value(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(filter_str(&s).into_owned()),
        Value::Array(a) => Value::Array(a.into_iter().map(filter_value).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (filter_str(&k).into_owned(), filter_value(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Compact JSON whose strings are pure ASCII (`\uXXXX` escapes, surrogate pairs above the
/// BMP), as the old agent wrote: nothing in between can mangle the bytes.
#[derive(Debug, Clone, Copy, Default)]
struct AsciiFormatter;

impl serde_json::ser::Formatter for AsciiFormatter {
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> std::io::Result<()>
    where
        W: ?Sized + std::io::Write,
    {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                write!(writer, "\\u{u:04x}")?;
            }
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// Serialize one message: `{"__name__": name, ...body}` filtered, compact, ASCII, plus `\n`.
pub fn encode(name: &str, body: &Map<String, Value>) -> Vec<u8> {
    let mut obj = Map::with_capacity(body.len() + 1);
    obj.insert("__name__".to_owned(), Value::String(name.to_owned()));
    for (k, v) in body {
        obj.insert(k.clone(), v.clone());
    }
    let value = filter_value(Value::Object(obj));
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, AsciiFormatter);
    // Serializing a Value into a Vec cannot fail: no I/O errors, no non-string keys.
    if serde::Serialize::serialize(&value, &mut ser).is_err() {
        out.clear();
        out.extend_from_slice(b"{}");
    }
    out.push(b'\n');
    out
}

/// A message that did not fit under the frame limit even after trimming.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Message {name} is {size} bytes, over the {limit}-byte limit")]
pub struct TooBig {
    /// The message name.
    pub name: String,
    /// Its size.
    pub size: usize,
    /// The limit.
    pub limit: usize,
}

/// Encode under `limit` bytes (including `\n`). When too big and `trim` names a list member
/// of `body`, drop entries from its end until it fits; returns the frame and how many entries
/// were dropped.
pub fn encode_capped(
    name: &str,
    body: &Map<String, Value>,
    trim: Option<&str>,
    limit: usize,
) -> Result<(Vec<u8>, usize), TooBig> {
    let frame = encode(name, body);
    if frame.len() <= limit {
        return Ok((frame, 0));
    }
    let too_big = |size| TooBig {
        name: name.to_owned(),
        size,
        limit,
    };
    let Some(key) = trim else {
        return Err(too_big(frame.len()));
    };
    let Some(Value::Array(items)) = body.get(key) else {
        return Err(too_big(frame.len()));
    };
    // Binary search for the longest prefix that fits: sizes grow monotonically with it.
    let (mut lo, mut hi) = (0usize, items.len());
    let mut best: Option<Vec<u8>> = None;
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        let mut b = body.clone();
        b.insert(key.to_owned(), Value::Array(items[..mid].to_vec()));
        let f = encode(name, &b);
        if f.len() <= limit {
            lo = mid;
            best = Some(f);
        } else {
            hi = mid - 1;
        }
    }
    let frame = match best {
        Some(f) => f,
        None => {
            let mut b = body.clone();
            b.insert(key.to_owned(), Value::Array(Vec::new()));
            let f = encode(name, &b);
            if f.len() > limit {
                return Err(too_big(f.len()));
            }
            f
        }
    };
    Ok((frame, items.len() - lo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn lines(reader: &mut LineReader, buf: &mut BytesMut) -> Vec<Result<Vec<u8>, FrameError>> {
        let mut out = Vec::new();
        while let Some(r) = reader.next_line(buf) {
            out.push(r.map(|b| b.to_vec()));
        }
        out
    }

    #[test]
    fn splits_lines_and_keeps_partial() {
        let mut r = LineReader::new(16);
        let mut buf = BytesMut::from(&b"{\"a\":1}\n{\"b\""[..]);
        assert_eq!(lines(&mut r, &mut buf), vec![Ok(b"{\"a\":1}".to_vec())]);
        assert_eq!(&buf[..], b"{\"b\"");
    }

    #[test]
    fn oversized_line_is_reported_once_and_skipped_to_newline() {
        let mut r = LineReader::new(8);
        let mut buf = BytesMut::from(&b"0123456789"[..]);
        assert_eq!(
            lines(&mut r, &mut buf),
            vec![Err(FrameError::TooLong { limit: 8 })]
        );
        assert!(buf.is_empty());
        buf.extend_from_slice(b"abcdefghijkl");
        assert_eq!(lines(&mut r, &mut buf), vec![]);
        assert!(buf.is_empty());
        buf.extend_from_slice(b"xyz\n{}\n");
        assert_eq!(lines(&mut r, &mut buf), vec![Ok(b"{}".to_vec())]);
    }

    #[test]
    fn complete_oversized_line_is_an_error_and_the_next_is_fine() {
        let mut r = LineReader::new(4);
        let mut buf = BytesMut::from(&b"123456\nab\n"[..]);
        assert_eq!(
            lines(&mut r, &mut buf),
            vec![Err(FrameError::TooLong { limit: 4 }), Ok(b"ab".to_vec())]
        );
    }

    #[test]
    fn parses_vdsm_golden_vectors() {
        let c = parse_line(br#"{"apiVersion": 3, "__name__": "refresh"}"#).unwrap();
        assert_eq!(c.name, "refresh");
        assert_eq!(c.args.get("apiVersion"), Some(&json!(3)));
        assert!(!c.args.contains_key("__name__"));
        let c = parse_line(b"\xEF\xBB\xBF{\"__name__\": \"log-off\"}\r").unwrap();
        assert_eq!(c.name, "log-off");
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(matches!(parse_line(b""), Err(FrameError::Json(_))));
        assert!(matches!(parse_line(b"{"), Err(FrameError::Json(_))));
        assert!(matches!(parse_line(b"\xff\xfe"), Err(FrameError::Json(_))));
        assert_eq!(parse_line(b"[1]"), Err(FrameError::NotObject));
        assert_eq!(parse_line(b"{}"), Err(FrameError::NoName));
        assert_eq!(parse_line(br#"{"__name__": 5}"#), Err(FrameError::NoName));
    }

    #[test]
    fn filter_replaces_exactly_the_note_ranges() {
        for c in [
            '\t',
            '\n',
            '\r',
            '\u{85}',
            ' ',
            'a',
            'é',
            '\u{FFFD}',
            '\u{10000}',
        ] {
            assert_eq!(filter_char(c), c, "{c:?}");
        }
        for c in [
            '\0', '\u{8}', '\u{b}', '\u{c}', '\u{e}', '\u{1f}', '\u{7f}', '\u{84}', '\u{86}',
            '\u{9f}', '\u{fffe}', '\u{ffff}',
        ] {
            assert_eq!(filter_char(c), '\u{FFFD}', "{c:?}");
        }
    }

    #[test]
    fn encode_is_compact_ascii_filtered_and_newline_terminated() {
        let mut body = Map::new();
        body.insert("name".into(), json!("b\u{1}ob\u{e9}\u{1F600}"));
        body.insert("k\u{0}".into(), json!(1));
        let f = encode("active-user", &body);
        assert!(f.ends_with(b"\n"));
        assert!(f.is_ascii());
        assert_eq!(f.iter().filter(|&&b| b == b'\n').count(), 1);
        let s = std::str::from_utf8(&f).unwrap();
        assert!(!s.contains(": "), "{s}");
        let v: Value = serde_json::from_str(s).unwrap();
        assert_eq!(v["__name__"], "active-user");
        assert_eq!(v["name"], "b\u{FFFD}ob\u{e9}\u{1F600}");
        assert_eq!(v["k\u{FFFD}"], 1);
    }

    #[test]
    fn capped_encoding_trims_the_list() {
        let mut body = Map::new();
        let apps: Vec<Value> = (0..1000).map(|i| json!(format!("pkg-{i:05}"))).collect();
        body.insert("applications".into(), Value::Array(apps));
        let (f, dropped) =
            encode_capped("applications", &body, Some("applications"), 2000).unwrap();
        assert!(f.len() <= 2000);
        assert!(dropped > 0);
        let v: Value = serde_json::from_slice(&f).unwrap();
        let kept = v["applications"].as_array().unwrap().len();
        assert_eq!(kept + dropped, 1000);
        // One more entry would not fit.
        let mut b = body.clone();
        b.insert(
            "applications".into(),
            Value::Array(body["applications"].as_array().unwrap()[..kept + 1].to_vec()),
        );
        assert!(encode("applications", &b).len() > 2000);
        assert!(encode_capped("echo", &body, None, 2000).is_err());
    }

    proptest! {
        #[test]
        fn chunking_does_not_matter(
            input in proptest::collection::vec(
                prop_oneof![
                    Just(b"{\"__name__\": \"refresh\", \"apiVersion\": 3}\n".to_vec()),
                    Just(b"\n".to_vec()),
                    Just(b"garbage\xff\n".to_vec()),
                    proptest::collection::vec(any::<u8>(), 0..40),
                    proptest::collection::vec(Just(b'x'), 0..100),
                ],
                0..12,
            ),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
        ) {
            let input: Vec<u8> = input.concat();
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
            at.sort_unstable();
            let mut pieces = Vec::new();
            let mut prev = 0;
            for &a in &at { pieces.push(&input[prev..a]); prev = a; }
            pieces.push(&input[prev..]);
            let run = |chunks: &[&[u8]]| {
                let mut r = LineReader::new(32);
                let mut buf = BytesMut::new();
                let mut out = Vec::new();
                for c in chunks {
                    buf.extend_from_slice(c);
                    while let Some(item) = r.next_line(&mut buf) {
                        out.push(item.map(|l| parse_line(&l)));
                    }
                    prop_assert!(buf.len() <= 32);
                }
                Ok(out)
            };
            // Too-long reports may differ in count by chunking only when the
            // overlong line is cut before vs. after its newline; compare successes.
            let whole = run(&[&input[..]])?;
            let split = run(&pieces)?;
            let ok = |v: &Vec<Result<Result<RawCommand, FrameError>, FrameError>>| {
                v.iter().filter_map(|r| r.as_ref().ok().cloned()).collect::<Vec<_>>()
            };
            prop_assert_eq!(ok(&whole), ok(&split));
        }

        #[test]
        fn encoded_frames_are_single_ascii_lines(name in ".{0,20}", s in any::<String>()) {
            let mut body = Map::new();
            body.insert(s.clone(), Value::String(s.clone()));
            let f = encode(&name, &body);
            prop_assert!(f.is_ascii());
            prop_assert_eq!(f.iter().filter(|&&b| b == b'\n').count(), 1);
            prop_assert!(f.ends_with(b"\n"));
            let v: Value = serde_json::from_slice(&f).unwrap();
            let back = v.as_object().unwrap();
            let want = filter_str(&name).into_owned();
            prop_assert_eq!(back["__name__"].as_str().unwrap(), want.as_str());
            prop_assert!(back.get(filter_str(&s).as_ref()).is_some());
        }
    }
}
