//! Guest to manager, pure: validation and the writes of one message in wire order: the key,
//! the chunks, then `last-write` as the commit (ovmd.md §1.5).

use super::layout::{self, KEY_MAX, VALUE_MAX};

/// A pair that cannot be sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// No key.
    #[error("the key is empty")]
    EmptyKey,
    /// Over Oracle's key limit.
    #[error("the key is {0} bytes long; the limit is {KEY_MAX}")]
    KeyTooLong(usize),
    /// Over Oracle's value limit (the driver's `EMSGSIZE`).
    #[error("the value is {0} bytes long; the limit is {VALUE_MAX}")]
    ValueTooLong(usize),
    /// A NUL byte: Oracle's API carries C strings.
    #[error("the {0} contains a NUL byte")]
    Nul(&'static str),
    /// The key is reserved for events.
    #[error("the key VMAPIEvent is reserved for events")]
    Reserved,
}

/// Check a pair before queueing it.
pub fn validate(key: &str, value: &str) -> Result<(), Invalid> {
    if key.is_empty() {
        return Err(Invalid::EmptyKey);
    }
    if key.len() > KEY_MAX {
        return Err(Invalid::KeyTooLong(key.len()));
    }
    if key == super::event::EVENT_NAME {
        return Err(Invalid::Reserved);
    }
    if value.len() > VALUE_MAX {
        return Err(Invalid::ValueTooLong(value.len()));
    }
    if key.contains('\0') {
        return Err(Invalid::Nul("key"));
    }
    if value.contains('\0') {
        return Err(Invalid::Nul("value"));
    }
    Ok(())
}

/// The chunks of a value: `len / size + 1` slices of `size` bytes (integer division), so a
/// length that is a multiple of `size` (and the empty value) ends with an empty chunk, as
/// UEK's driver writes it.
pub fn chunks(value: &[u8], size: usize) -> Vec<&[u8]> {
    let size = size.max(1);
    (0..=value.len() / size)
        .map(|c| &value[(c * size).min(value.len())..((c + 1) * size).min(value.len())])
        .collect()
}

/// One node write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeWrite {
    /// Relative path.
    pub path: String,
    /// Value.
    pub value: Vec<u8>,
}

/// Every write of message `m`, in order; the last is the commit (`from-guest/last-write`).
pub fn plan(m: u64, key: &str, value: &str, chunk: usize) -> Vec<NodeWrite> {
    let mut out = vec![NodeWrite {
        path: layout::from_guest(m),
        value: key.as_bytes().to_vec(),
    }];
    out.extend(
        chunks(value.as_bytes(), chunk)
            .into_iter()
            .enumerate()
            .map(|(c, bytes)| NodeWrite {
                path: layout::from_guest_chunk(m, c),
                value: bytes.to_vec(),
            }),
    );
    out.push(NodeWrite {
        path: layout::FROM_GUEST_LAST_WRITE.to_owned(),
        value: m.to_string().into_bytes(),
    });
    out
}

/// Split `key=value` at the first `=` (values may contain `=`; keys cannot).
pub fn split_pair(arg: &str) -> Option<(&str, &str)> {
    arg.split_once('=').filter(|(k, _)| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_counts_match_the_driver() {
        let lens = |l: usize| {
            chunks(&vec![b'x'; l], 2048)
                .iter()
                .map(|c| c.len())
                .collect::<Vec<_>>()
        };
        assert_eq!(lens(0), [0]);
        assert_eq!(lens(1), [1]);
        assert_eq!(lens(2047), [2047]);
        assert_eq!(lens(2048), [2048, 0]);
        assert_eq!(lens(5000), [2048, 2048, 904]);
        assert_eq!(lens(8191), [2048, 2048, 2048, 2047]);
        assert_eq!(lens(4096), [2048, 2048, 0]);
    }

    #[test]
    fn plan_writes_key_chunks_then_commit() {
        let p = plan(3, "k", "v", 2048);
        let paths: Vec<_> = p.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "control/oracle-vmapi/from-guest/3",
                "control/oracle-vmapi/from-guest/3/0",
                "control/oracle-vmapi/from-guest/last-write"
            ]
        );
        assert_eq!(p[0].value, b"k");
        assert_eq!(p[1].value, b"v");
        assert_eq!(p[2].value, b"3");
    }

    #[test]
    fn validation() {
        assert!(validate("k", "").is_ok());
        assert!(validate("k", "a=b=c").is_ok());
        assert_eq!(validate("", "v"), Err(Invalid::EmptyKey));
        assert!(validate(&"k".repeat(255), "v").is_ok());
        assert_eq!(
            validate(&"k".repeat(256), "v"),
            Err(Invalid::KeyTooLong(256))
        );
        assert!(validate("k", &"v".repeat(8191)).is_ok());
        assert_eq!(
            validate("k", &"v".repeat(8192)),
            Err(Invalid::ValueTooLong(8192))
        );
        assert_eq!(validate("k\0", "v"), Err(Invalid::Nul("key")));
        assert_eq!(validate("VMAPIEvent", "v"), Err(Invalid::Reserved));
        assert!(validate("clé ünïcode", "välue ✓").is_ok());
    }

    proptest::proptest! {
        /// The chunks put back together are the value; only the last may be short (or empty).
        #[test]
        fn chunks_reassemble(len in 0usize..9000, size in 1usize..3000) {
            let value: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let c = chunks(&value, size);
            proptest::prop_assert_eq!(c.len(), len / size + 1);
            proptest::prop_assert_eq!(c.concat(), value.clone());
            proptest::prop_assert!(c[..c.len() - 1].iter().all(|x| x.len() == size));
        }

        /// Reassembly of whatever the guest would send gives the pair back.
        #[test]
        fn outbound_then_inbound_is_identity(key in "[a-z.]{1,40}", value in "\\PC{0,300}") {
            let w = plan(1, &key, &value, 7);
            let mut asm = crate::ovmd::inbound::Assembly::new(&w[0].value).unwrap();
            for n in &w[1..w.len() - 1] {
                asm.push(&n.value).unwrap();
            }
            let (msg, lossy) = asm.finish();
            proptest::prop_assert!(!lossy);
            proptest::prop_assert_eq!(msg, crate::ovmd::inbound::Inbound::Param { key, value });
        }
    }

    #[test]
    fn pairs_split_at_the_first_equals() {
        assert_eq!(split_pair("k=v"), Some(("k", "v")));
        assert_eq!(split_pair("k=a=b"), Some(("k", "a=b")));
        assert_eq!(split_pair("k="), Some(("k", "")));
        assert_eq!(split_pair("=v"), None);
        assert_eq!(split_pair("kv"), None);
    }
}
