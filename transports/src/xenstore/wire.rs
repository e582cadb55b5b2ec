//! The xenstore wire format: a 16-byte header of four native-endian `u32` (type, request id,
//! transaction id, payload length) and up to 4096 payload bytes. Pure code: [`decode`] says
//! "incomplete" instead of reading, so it can be tested and fuzzed byte by byte.

use bytes::{Buf, Bytes, BytesMut};

/// Bytes in a header.
pub const HEADER_LEN: usize = 16;
/// Longest payload either side may send on the daemon's socket.
pub const PAYLOAD_MAX: usize = 4096;
/// Longest payload a Linux guest may write to `/dev/xen/xenbus`: the kernel's 4096-byte
/// buffer holds the header too.
pub const DEVICE_PAYLOAD_MAX: usize = PAYLOAD_MAX - HEADER_LEN;

/// Message types guestd sends or receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MsgType {
    /// Implementation-specific control commands (was DEBUG).
    Control = 0,
    /// Names of a node's children.
    Directory = 1,
    /// A node's value.
    Read = 2,
    /// A node's permissions.
    GetPerms = 3,
    /// Register a watch.
    Watch = 4,
    /// Remove a watch.
    Unwatch = 5,
    /// Start a transaction.
    TransactionStart = 6,
    /// Commit or abort a transaction.
    TransactionEnd = 7,
    /// Introduce a domain (dom0 only).
    Introduce = 8,
    /// Release a domain (dom0 only).
    Release = 9,
    /// `/local/domain/<domid>`.
    GetDomainPath = 10,
    /// Write a value.
    Write = 11,
    /// Create a node.
    Mkdir = 12,
    /// Remove a subtree.
    Rm = 13,
    /// Set permissions.
    SetPerms = 14,
    /// A watch fired (server to client only).
    WatchEvent = 15,
    /// An error reply (server to client only).
    Error = 16,
    /// Whether a domain is introduced.
    IsDomainIntroduced = 17,
    /// Resume a domain (dom0 only).
    Resume = 18,
    /// Set a domain's target (dom0 only).
    SetTarget = 19,
    /// Drop the caller's watches and transactions.
    ResetWatches = 21,
    /// A slice of a long directory listing.
    DirectoryPart = 22,
}

impl MsgType {
    /// The type with this number, if guestd knows it.
    pub fn from_u32(n: u32) -> Option<Self> {
        use MsgType::*;
        Some(match n {
            0 => Control,
            1 => Directory,
            2 => Read,
            3 => GetPerms,
            4 => Watch,
            5 => Unwatch,
            6 => TransactionStart,
            7 => TransactionEnd,
            8 => Introduce,
            9 => Release,
            10 => GetDomainPath,
            11 => Write,
            12 => Mkdir,
            13 => Rm,
            14 => SetPerms,
            15 => WatchEvent,
            16 => Error,
            17 => IsDomainIntroduced,
            18 => Resume,
            19 => SetTarget,
            21 => ResetWatches,
            22 => DirectoryPart,
            _ => return None,
        })
    }

    /// The daemon's name for it, for logs.
    pub fn name(self) -> &'static str {
        use MsgType::*;
        match self {
            Control => "CONTROL",
            Directory => "DIRECTORY",
            Read => "READ",
            GetPerms => "GET_PERMS",
            Watch => "WATCH",
            Unwatch => "UNWATCH",
            TransactionStart => "TRANSACTION_START",
            TransactionEnd => "TRANSACTION_END",
            Introduce => "INTRODUCE",
            Release => "RELEASE",
            GetDomainPath => "GET_DOMAIN_PATH",
            Write => "WRITE",
            Mkdir => "MKDIR",
            Rm => "RM",
            SetPerms => "SET_PERMS",
            WatchEvent => "WATCH_EVENT",
            Error => "ERROR",
            IsDomainIntroduced => "IS_DOMAIN_INTRODUCED",
            Resume => "RESUME",
            SetTarget => "SET_TARGET",
            ResetWatches => "RESET_WATCHES",
            DirectoryPart => "DIRECTORY_PART",
        }
    }
}

/// A message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Message type number (kept raw: the daemon may send types guestd does not know).
    pub ty: u32,
    /// Request id, chosen by the client and echoed in the reply.
    pub req_id: u32,
    /// Transaction id, 0 outside transactions.
    pub tx_id: u32,
    /// Payload length.
    pub len: u32,
}

impl Header {
    /// Parse the first [`HEADER_LEN`] bytes.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Self {
        let u = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Self {
            ty: u(0),
            req_id: u(4),
            tx_id: u(8),
            len: u(12),
        }
    }

    /// The header's bytes.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.ty.to_ne_bytes());
        out[4..8].copy_from_slice(&self.req_id.to_ne_bytes());
        out[8..12].copy_from_slice(&self.tx_id.to_ne_bytes());
        out[12..16].copy_from_slice(&self.len.to_ne_bytes());
        out
    }
}

/// One whole message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Its header.
    pub header: Header,
    /// Its payload (`header.len` bytes).
    pub payload: Bytes,
}

impl Frame {
    /// The message type, if known.
    pub fn msg_type(&self) -> Option<MsgType> {
        MsgType::from_u32(self.header.ty)
    }
}

/// Bytes that cannot be a xenstore message stream, or a message too big to send.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A header announced more than the protocol allows: the stream cannot be trusted.
    #[error("Message announces {len} payload bytes, more than {max}")]
    TooLong {
        /// Announced length.
        len: u32,
        /// The limit.
        max: usize,
    },
    /// A payload to send is over the limit of the channel.
    #[error("Payload of {len} bytes is over the limit of {max}")]
    PayloadTooBig {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A path or token contains a NUL byte.
    #[error("Embedded NUL byte in a path or token")]
    EmbeddedNul,
}

/// Take one whole message from the front of `buf`. `Ok(None)`: need more bytes, nothing
/// consumed. `Err`: the stream is corrupt (the caller drops the connection).
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&buf[..HEADER_LEN]);
    let header = Header::parse(&h);
    let len = header.len as usize;
    if len > PAYLOAD_MAX {
        return Err(WireError::TooLong {
            len: header.len,
            max: PAYLOAD_MAX,
        });
    }
    if buf.len() < HEADER_LEN + len {
        buf.reserve(HEADER_LEN + len - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let payload = buf.split_to(len).freeze();
    Ok(Some(Frame { header, payload }))
}

/// Encode one message, refusing a payload over `max` (the channel's limit).
pub fn encode(
    ty: MsgType,
    req_id: u32,
    tx_id: u32,
    payload: &[u8],
    max: usize,
) -> Result<Vec<u8>, WireError> {
    if payload.len() > max {
        return Err(WireError::PayloadTooBig {
            len: payload.len(),
            max,
        });
    }
    let header = Header {
        ty: ty as u32,
        req_id,
        tx_id,
        // Bounded by `max` (at most 4096) above.
        len: payload.len() as u32,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Payload `a\0b\0...`: every part NUL-terminated (paths, tokens, offsets).
pub fn nul_list(parts: &[&[u8]]) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for p in parts {
        if p.contains(&0) {
            return Err(WireError::EmbeddedNul);
        }
        out.extend_from_slice(p);
        out.push(0);
    }
    Ok(out)
}

/// Payload of a WRITE: `path\0value`, the value verbatim with no NUL after it.
pub fn path_value(path: &[u8], value: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut out = nul_list(&[path])?;
    out.extend_from_slice(value);
    Ok(out)
}

/// Split a `name\0name\0` reply into its parts; a missing final NUL is tolerated, empty
/// parts (the extra NUL ending a DIRECTORY_PART listing) are dropped.
pub fn split_nul(payload: &[u8]) -> Vec<&[u8]> {
    payload
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .collect()
}

/// A reply payload without its trailing NUL (`OK\0` -> `OK`).
pub fn strip_nul(payload: &[u8]) -> &[u8] {
    payload.strip_suffix(&[0]).unwrap_or(payload)
}

/// The error names xenstored sends, in its header's order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum Errno {
    /// Invalid argument (bad path, malformed request).
    EINVAL,
    /// Permission denied.
    EACCES,
    /// Exists (watch registered twice).
    EEXIST,
    /// Is a directory.
    EISDIR,
    /// No such node or transaction.
    ENOENT,
    /// Out of memory.
    ENOMEM,
    /// Quota exceeded.
    ENOSPC,
    /// I/O error.
    EIO,
    /// Not empty.
    ENOTEMPTY,
    /// Not implemented.
    ENOSYS,
    /// Read-only.
    EROFS,
    /// Busy.
    EBUSY,
    /// Transaction conflict: redo it.
    EAGAIN,
    /// Already connected.
    EISCONN,
    /// Too big (a directory listing over one payload).
    E2BIG,
    /// Operation not permitted (4.17).
    EPERM,
    /// A name guestd does not know.
    Other(String),
}

impl Errno {
    /// From an ERROR payload such as `EACCES\0`.
    pub fn parse(payload: &[u8]) -> Self {
        let name = strip_nul(payload);
        match name {
            b"EINVAL" => Self::EINVAL,
            b"EACCES" => Self::EACCES,
            b"EEXIST" => Self::EEXIST,
            b"EISDIR" => Self::EISDIR,
            b"ENOENT" => Self::ENOENT,
            b"ENOMEM" => Self::ENOMEM,
            b"ENOSPC" => Self::ENOSPC,
            b"EIO" => Self::EIO,
            b"ENOTEMPTY" => Self::ENOTEMPTY,
            b"ENOSYS" => Self::ENOSYS,
            b"EROFS" => Self::EROFS,
            b"EBUSY" => Self::EBUSY,
            b"EAGAIN" => Self::EAGAIN,
            b"EISCONN" => Self::EISCONN,
            b"E2BIG" => Self::E2BIG,
            b"EPERM" => Self::EPERM,
            other => Self::Other(String::from_utf8_lossy(other).into_owned()),
        }
    }

    /// From an OS errno, as the guest device reports some failures through `write()`.
    pub fn from_os(errno: i32) -> Self {
        match errno {
            libc::EINVAL | libc::EILSEQ => Self::EINVAL,
            libc::EACCES => Self::EACCES,
            libc::EEXIST => Self::EEXIST,
            libc::EISDIR => Self::EISDIR,
            libc::ENOENT | libc::ESRCH => Self::ENOENT,
            libc::ENOMEM => Self::ENOMEM,
            libc::ENOSPC => Self::ENOSPC,
            libc::EIO => Self::EIO,
            libc::ENOTEMPTY => Self::ENOTEMPTY,
            libc::ENOSYS => Self::ENOSYS,
            libc::EROFS => Self::EROFS,
            libc::EBUSY => Self::EBUSY,
            libc::EAGAIN => Self::EAGAIN,
            libc::EISCONN => Self::EISCONN,
            libc::E2BIG => Self::E2BIG,
            libc::EPERM => Self::EPERM,
            other => Self::Other(format!("errno {other}")),
        }
    }

    /// The name as the daemon spells it.
    pub fn name(&self) -> &str {
        match self {
            Self::EINVAL => "EINVAL",
            Self::EACCES => "EACCES",
            Self::EEXIST => "EEXIST",
            Self::EISDIR => "EISDIR",
            Self::ENOENT => "ENOENT",
            Self::ENOMEM => "ENOMEM",
            Self::ENOSPC => "ENOSPC",
            Self::EIO => "EIO",
            Self::ENOTEMPTY => "ENOTEMPTY",
            Self::ENOSYS => "ENOSYS",
            Self::EROFS => "EROFS",
            Self::EBUSY => "EBUSY",
            Self::EAGAIN => "EAGAIN",
            Self::EISCONN => "EISCONN",
            Self::E2BIG => "E2BIG",
            Self::EPERM => "EPERM",
            Self::Other(s) => s,
        }
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_of_relative_domid_matches_the_note() {
        let p = nul_list(&[b"domid"]).unwrap();
        let got = encode(MsgType::Read, 1, 0, &p, PAYLOAD_MAX).unwrap();
        let mut want = Vec::new();
        for w in [2u32, 1, 0, 6] {
            want.extend_from_slice(&w.to_ne_bytes());
        }
        want.extend_from_slice(b"domid\0");
        assert_eq!(got, want);
    }

    #[test]
    fn decode_waits_for_whole_frames_and_keeps_the_rest() {
        let a = encode(MsgType::Read, 7, 0, b"val", PAYLOAD_MAX).unwrap();
        let b = encode(MsgType::Error, 8, 3, b"ENOENT\0", PAYLOAD_MAX).unwrap();
        let all: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in all {
            buf.extend_from_slice(&[byte]);
            while let Some(f) = decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].header.req_id, 7);
        assert_eq!(&got[0].payload[..], b"val");
        assert_eq!(got[1].msg_type(), Some(MsgType::Error));
        assert_eq!(got[1].header.tx_id, 3);
        assert_eq!(Errno::parse(&got[1].payload), Errno::ENOENT);
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_header_is_an_error_and_payload_limit_is_enforced() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(
            &Header {
                ty: 2,
                req_id: 1,
                tx_id: 0,
                len: 4097,
            }
            .to_bytes(),
        );
        assert!(matches!(
            decode(&mut buf),
            Err(WireError::TooLong { len: 4097, .. })
        ));
        assert!(encode(MsgType::Write, 1, 0, &[0; 4096], PAYLOAD_MAX).is_ok());
        assert!(encode(MsgType::Write, 1, 0, &[0; 4081], DEVICE_PAYLOAD_MAX).is_err());
    }

    #[test]
    fn nul_rules() {
        assert_eq!(path_value(b"/t/a", b"v").unwrap(), b"/t/a\0v");
        assert_eq!(path_value(b"/t/b", b"").unwrap(), b"/t/b\0");
        assert_eq!(nul_list(&[b"a\0b"]), Err(WireError::EmbeddedNul));
        assert_eq!(split_nul(b"a\0b\0"), vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(split_nul(b"a\0b\0\0"), vec![&b"a"[..], &b"b"[..]]);
        assert!(split_nul(b"").is_empty());
        assert_eq!(strip_nul(b"OK\0"), b"OK");
        assert_eq!(Errno::parse(b"EWHAT\0"), Errno::Other("EWHAT".into()));
        assert_eq!(Errno::parse(b"E2BIG\0").name(), "E2BIG");
    }

    proptest::proptest! {
        /// How the bytes arrive never changes which frames come out.
        #[test]
        fn chunking_does_not_matter(
            frames in proptest::collection::vec(
                (0u32..24, proptest::num::u32::ANY, proptest::collection::vec(proptest::num::u8::ANY, 0..300)),
                0..6,
            ),
            cuts in proptest::collection::vec(0usize..2000, 0..8),
        ) {
            let mut stream = Vec::new();
            for (ty, req, payload) in &frames {
                let h = Header { ty: *ty, req_id: *req, tx_id: 0, len: payload.len() as u32 };
                stream.extend_from_slice(&h.to_bytes());
                stream.extend_from_slice(payload);
            }
            let mut at: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            at.sort_unstable();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut prev = 0;
            for a in at.into_iter().chain([stream.len()]) {
                buf.extend_from_slice(&stream[prev..a]);
                prev = a;
                while let Some(f) = decode(&mut buf).unwrap() {
                    got.push((f.header.ty, f.header.req_id, f.payload.to_vec()));
                }
            }
            proptest::prop_assert_eq!(got, frames);
            proptest::prop_assert!(buf.is_empty());
        }

        /// Arbitrary bytes: frames or a clean error, never a panic or a frame over the limit.
        #[test]
        fn garbage_is_survived(data in proptest::collection::vec(proptest::num::u8::ANY, 0..9000)) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(f)) = decode(&mut buf) {
                proptest::prop_assert!(f.payload.len() <= PAYLOAD_MAX);
                let _ = Errno::parse(&f.payload);
            }
        }
    }

    #[test]
    fn every_known_type_round_trips() {
        for n in 0..32 {
            if let Some(t) = MsgType::from_u32(n) {
                assert_eq!(t as u32, n);
                assert!(!t.name().is_empty());
            }
        }
        assert_eq!(MsgType::from_u32(20), None);
        assert_eq!(MsgType::from_u32(0xffff), None);
    }
}
