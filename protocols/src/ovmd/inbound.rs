//! Manager to guest, pure: which message numbers to take after a `last-write` change, and
//! how one message is reassembled from its name and chunks (ovmd.md §1.4, §6 q6-q8).

use super::event::EVENT_NAME;
use super::layout::{CHUNKS_MAX, KEY_MAX, VALUE_MAX};

/// What to do after reading `to-guest/last-write` and listing `to-guest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    /// `last-write` went below what was already read: the tree was reset (resume,
    /// migration); numbering starts again from 1.
    pub reset: bool,
    /// Messages to take now, ascending.
    pub todo: Vec<u64>,
    /// Messages at or below what was already taken that are still there (a restart between
    /// storing and removing them): only to be removed.
    pub taken: Vec<u64>,
    /// The cursor once `todo` is done: the kernel advances past missing numbers too.
    pub last_read: u64,
}

/// Plan a scan. `children` are the names under `to-guest` (non-numeric ones, such as
/// `last-write`, are ignored); only numbers up to `last_write` are taken, so messages the
/// manager is still writing wait for their commit.
pub fn plan_scan(last_read: u64, last_write: u64, children: &[String]) -> Scan {
    let reset = last_write < last_read;
    let from = if reset { 0 } else { last_read };
    let mut numbers: Vec<u64> = children
        .iter()
        .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|c| c.parse().ok())
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    Scan {
        reset,
        todo: numbers
            .iter()
            .copied()
            .filter(|n| *n > from && *n <= last_write)
            .collect(),
        taken: numbers.iter().copied().filter(|n| *n <= from).collect(),
        last_read: last_write.max(from),
    }
}

/// A short salted fingerprint of a message, to recognise one already taken. 32 bits: enough
/// to tell two messages apart, too few to serve as a verifier of a password it covers.
pub fn fingerprint(salt: u64, key: &str, value: &str) -> u32 {
    use std::hash::{Hash, Hasher};
    // `DefaultHasher::new` is the same in every run of one build (a different build at
    // worst takes one leftover message once more).
    let mut h = std::hash::DefaultHasher::new();
    salt.hash(&mut h);
    key.hash(&mut h);
    value.hash(&mut h);
    let x = h.finish();
    (x ^ (x >> 32)) as u32
}

/// One reassembled message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A key-value pair to store.
    Param {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// A `VMAPIEvent`: delivered as an event, not stored.
    Event {
        /// Its payload.
        value: String,
    },
}

/// Why a message is skipped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// The message node has an empty value: no key.
    #[error("message has no key")]
    EmptyKey,
    /// The key is longer than Oracle's limit.
    #[error("key of {0} bytes is longer than {KEY_MAX}")]
    KeyTooLong(usize),
    /// The chunks add up to more than Oracle's limit.
    #[error("value is longer than {VALUE_MAX} bytes")]
    ValueTooLong,
    /// More chunks than any valid value can have.
    #[error("{0} chunks is more than a value can have")]
    TooManyChunks(usize),
    /// A chunk index between 0 and the count is missing.
    #[error("chunk {index} of {count} is missing")]
    MissingChunk {
        /// The missing index.
        index: usize,
        /// How many children the message has.
        count: usize,
    },
}

/// A message being reassembled: its key, then its chunks in index order.
#[derive(Debug)]
pub struct Assembly {
    key: Vec<u8>,
    value: Vec<u8>,
}

impl Assembly {
    /// Start with the message node's value (the key).
    pub fn new(key: &[u8]) -> Result<Self, Reject> {
        // A C string ends at its first NUL, as in the kernel.
        let key = key.split(|b| *b == 0).next().unwrap_or_default();
        if key.is_empty() {
            return Err(Reject::EmptyKey);
        }
        if key.len() > KEY_MAX {
            return Err(Reject::KeyTooLong(key.len()));
        }
        Ok(Self {
            key: key.to_vec(),
            value: Vec::new(),
        })
    }

    /// Check the number of chunks before reading them.
    pub fn expect_chunks(&self, count: usize) -> Result<(), Reject> {
        if count > CHUNKS_MAX {
            return Err(Reject::TooManyChunks(count));
        }
        Ok(())
    }

    /// Append the next chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), Reject> {
        if self.value.len() + chunk.len() > VALUE_MAX {
            return Err(Reject::ValueTooLong);
        }
        self.value.extend_from_slice(chunk);
        Ok(())
    }

    /// The message; `true` when key or value were not UTF-8 and were repaired (U+FFFD).
    pub fn finish(self) -> (Inbound, bool) {
        let key = String::from_utf8(self.key);
        let value = String::from_utf8(self.value);
        let lossy = key.is_err() || value.is_err();
        let key = key.unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let value = value.unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let msg = if key == EVENT_NAME {
            Inbound::Event { value }
        } else {
            Inbound::Param { key, value }
        };
        (msg, lossy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn scan_takes_committed_numbers_only() {
        let s = plan_scan(0, 2, &names(&["1", "last-write", "2", "3"]));
        assert_eq!(s.todo, [1, 2]);
        assert!(!s.reset && s.taken.is_empty());
        assert_eq!(s.last_read, 2);
        // Already read up to 2; 2 still there (killed before removal).
        let s = plan_scan(2, 4, &names(&["2", "4", "3"]));
        assert_eq!(s.todo, [3, 4]);
        assert_eq!(s.taken, [2]);
        // Gaps are skipped and the cursor still advances.
        let s = plan_scan(0, 5, &names(&["5"]));
        assert_eq!(s.todo, [5]);
        assert_eq!(s.last_read, 5);
        // Nothing new.
        let s = plan_scan(5, 5, &names(&[]));
        assert!(s.todo.is_empty());
        assert_eq!(s.last_read, 5);
    }

    #[test]
    fn scan_resets_when_last_write_goes_back() {
        let s = plan_scan(7, 1, &names(&["1", "last-write"]));
        assert!(s.reset);
        assert_eq!(s.todo, [1]);
        assert!(s.taken.is_empty());
        assert_eq!(s.last_read, 1);
    }

    #[test]
    fn scan_ignores_odd_children() {
        let s = plan_scan(0, 10, &names(&["01x", "", "-1", "3", "3"]));
        assert_eq!(s.todo, [3]);
    }

    #[test]
    fn reassembly_in_index_order() {
        let mut a = Assembly::new(b"com.oracle.linux.network.hostname").unwrap();
        a.expect_chunks(2).unwrap();
        a.push(b"db").unwrap();
        a.push(b"01").unwrap();
        assert_eq!(
            a.finish(),
            (
                Inbound::Param {
                    key: "com.oracle.linux.network.hostname".into(),
                    value: "db01".into()
                },
                false
            )
        );
        // No chunks: empty value.
        let a = Assembly::new(b"k").unwrap();
        assert_eq!(
            a.finish().0,
            Inbound::Param {
                key: "k".into(),
                value: String::new()
            }
        );
    }

    #[test]
    fn limits() {
        assert_eq!(Assembly::new(b"").unwrap_err(), Reject::EmptyKey);
        assert_eq!(Assembly::new(b"\0x").unwrap_err(), Reject::EmptyKey);
        assert!(Assembly::new(&[b'k'; 255]).is_ok());
        assert_eq!(
            Assembly::new(&[b'k'; 256]).unwrap_err(),
            Reject::KeyTooLong(256)
        );
        let mut a = Assembly::new(b"k").unwrap();
        a.push(&[b'v'; 4096]).unwrap();
        a.push(&[b'v'; 4095]).unwrap();
        assert_eq!(a.push(b"v").unwrap_err(), Reject::ValueTooLong);
        let a = Assembly::new(b"k").unwrap();
        assert!(a.expect_chunks(8192).is_ok());
        assert!(a.expect_chunks(8193).is_err());
    }

    #[test]
    fn utf8_is_repaired_after_joining_chunks() {
        // "é" split across two chunks is fine.
        let mut a = Assembly::new("clé".as_bytes()).unwrap();
        a.push(&[0xc3]).unwrap();
        a.push(&[0xa9]).unwrap();
        assert_eq!(
            a.finish(),
            (
                Inbound::Param {
                    key: "clé".into(),
                    value: "é".into()
                },
                false
            )
        );
        let mut a = Assembly::new(b"k").unwrap();
        a.push(&[0xff, b'a']).unwrap();
        assert_eq!(
            a.finish(),
            (
                Inbound::Param {
                    key: "k".into(),
                    value: "\u{fffd}a".into()
                },
                true
            )
        );
    }

    #[test]
    fn fingerprints() {
        let a = fingerprint(1, "k", "v");
        assert_eq!(a, fingerprint(1, "k", "v"));
        assert_ne!(a, fingerprint(2, "k", "v"));
        assert_ne!(a, fingerprint(1, "k", "w"));
        assert_ne!(fingerprint(1, "kv", ""), fingerprint(1, "k", "v"));
    }

    #[test]
    fn vmapi_event_is_not_a_param() {
        let mut a = Assembly::new(b"VMAPIEvent").unwrap();
        a.push(b"payload").unwrap();
        assert_eq!(
            a.finish().0,
            Inbound::Event {
                value: "payload".into()
            }
        );
    }
}
