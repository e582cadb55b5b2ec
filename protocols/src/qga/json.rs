//! QEMU's JSON dialect as qemu-ga reads and writes it, byte for byte.
//!
//! Reading is two layers, as in QEMU: a lexer that turns bytes into tokens (with QEMU's
//! extensions: single-quoted strings, any `[a-z]+` as a keyword for the parser to judge, error
//! recovery up to the next structural or control byte) and a streamer that counts braces and
//! brackets to find where a message ends. [`Framer::parse`] runs both incrementally over a
//! growing buffer and, once a message is complete, parses it into a [`Value`] with QEMU's
//! error texts. The framer's state survives between calls, so how the input was chunked never
//! changes the result.
//!
//! Unlike qemu-ga 7.2, a message over the size, token or nesting limit is answered with one
//! error and then skipped up to its end (braces balanced again) instead of being lexed again
//! as new input; memory stays bounded by the size limit.
//!
//! Writing is compact, one line, ASCII only: everything outside printable ASCII is escaped as
//! `\uXXXX` (upper-case hex, surrogate pairs beyond the BMP), as qemu-ga does, so replies never
//! contain a raw newline or a byte a line-based client could split on.

use bytes::{Buf, BytesMut};
use serde_json::{Map, Number, Value};

/// qemu-ga's per-message token limit.
pub const MAX_TOKEN_COUNT: usize = 2 << 20;
/// qemu-ga's nesting limit (braces plus brackets open at once).
pub const MAX_NESTING: i64 = 1 << 10;
/// qemu-ga's per-message size limit (`MAX_TOKEN_SIZE`, 64 MiB).
pub const DEFAULT_MAX_MESSAGE: usize = 64 << 20;

/// Above this size a complete message gets the receive buffer's allocation to itself.
const TAKE_WHOLE_ABOVE: usize = 64 << 10;

/// In a message that has its own allocation, the first string longer than this with nothing
/// to unescape is not copied out: the message's memory becomes the string (a 40 MiB
/// `guest-file-write` then holds its request once, not twice; see [`parse_owned`]).
const BIG_STRING: usize = 64 << 10;

/// QEMU formats parser messages into a 1024-byte buffer; longer ones are cut there.
const PARSE_MESSAGE_MAX: usize = 1023;
/// Longest token text quoted in a `stray` error.
const STRAY_MAX: usize = 1023;

/// Why the input did not yield a request. Each one is answered with one `GenericError`
/// whose text is [`FrameError::desc`]; the offending input has been consumed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A byte that cannot start or continue a token (0xFF, a control character, an
    /// upper-case letter, a bad number). Carries the token text up to and including it.
    #[error("JSON parse error, stray '{}'", sanitize(.0))]
    Stray(Vec<u8>),
    /// A complete message that is not valid JSON.
    #[error("JSON parse error, {0}")]
    Syntax(String),
    /// The message grew beyond the size limit.
    #[error("JSON token size limit exceeded")]
    TooLarge,
    /// The message has more tokens than the limit.
    #[error("JSON token count limit exceeded")]
    TooManyTokens,
    /// The message nests deeper than the limit.
    #[error("JSON nesting depth limit exceeded")]
    TooDeep,
}

impl FrameError {
    /// The error text qemu-ga sends for it.
    pub fn desc(&self) -> String {
        self.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Start,
    Recovery,
    Dq,
    DqEsc,
    Sq,
    SqEsc,
    Zero,
    ExpDigits,
    ExpSign,
    ExpE,
    Mantissa,
    MantissaDigits,
    Digits,
    Sign,
    Keyword,
}

/// A token kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    LCurly,
    RCurly,
    LSquare,
    RSquare,
    Colon,
    Comma,
    Integer,
    Float,
    Keyword,
    Str,
}

/// What one byte does in one state; mirrors QEMU's lexer table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Consumed as part of the current token; go to this state.
    Into(St),
    /// Consumed, belongs to no token (whitespace, bytes skipped in recovery).
    Skip,
    /// Consumed; completes a token.
    Token(Tok),
    /// The token ended before this byte, which is looked at again from `Start`.
    TokenBefore(Tok),
    /// Consumed; the token so far plus this byte is an error.
    Error,
    /// Recovery ends before this byte, which is looked at again from `Start`.
    Resync,
}

fn step(st: St, b: u8) -> Step {
    use Step::*;
    match st {
        St::Start => match b {
            b'"' => Into(St::Dq),
            b'\'' => Into(St::Sq),
            b'0' => Into(St::Zero),
            b'1'..=b'9' => Into(St::Digits),
            b'-' => Into(St::Sign),
            b'{' => Token(Tok::LCurly),
            b'}' => Token(Tok::RCurly),
            b'[' => Token(Tok::LSquare),
            b']' => Token(Tok::RSquare),
            b',' => Token(Tok::Comma),
            b':' => Token(Tok::Colon),
            b'a'..=b'z' => Into(St::Keyword),
            b' ' | b'\t' | b'\r' | b'\n' => Skip,
            _ => Error,
        },
        St::Recovery => match b {
            b'\t' => Skip,
            0..=0x1F | 0xFE | 0xFF | b'[' | b']' | b'{' | b'}' | b':' | b',' => Resync,
            _ => Skip,
        },
        St::Dq => match b {
            b'\\' => Into(St::DqEsc),
            b'"' => Token(Tok::Str),
            0x20..=0xFD => Into(St::Dq),
            _ => Error,
        },
        St::DqEsc => match b {
            0x20..=0xFD => Into(St::Dq),
            _ => Error,
        },
        St::Sq => match b {
            b'\\' => Into(St::SqEsc),
            b'\'' => Token(Tok::Str),
            0x20..=0xFD => Into(St::Sq),
            _ => Error,
        },
        St::SqEsc => match b {
            0x20..=0xFD => Into(St::Sq),
            _ => Error,
        },
        St::Zero => match b {
            b'0'..=b'9' => Error,
            b'.' => Into(St::Mantissa),
            _ => TokenBefore(Tok::Integer),
        },
        St::ExpDigits => match b {
            b'0'..=b'9' => Into(St::ExpDigits),
            _ => TokenBefore(Tok::Float),
        },
        St::ExpSign => match b {
            b'0'..=b'9' => Into(St::ExpDigits),
            _ => Error,
        },
        St::ExpE => match b {
            b'-' | b'+' => Into(St::ExpSign),
            b'0'..=b'9' => Into(St::ExpDigits),
            _ => Error,
        },
        St::MantissaDigits => match b {
            b'0'..=b'9' => Into(St::MantissaDigits),
            b'e' | b'E' => Into(St::ExpE),
            _ => TokenBefore(Tok::Float),
        },
        St::Mantissa => match b {
            b'0'..=b'9' => Into(St::MantissaDigits),
            _ => Error,
        },
        St::Digits => match b {
            b'0'..=b'9' => Into(St::Digits),
            b'e' | b'E' => Into(St::ExpE),
            b'.' => Into(St::Mantissa),
            _ => TokenBefore(Tok::Integer),
        },
        St::Sign => match b {
            b'0' => Into(St::Zero),
            b'1'..=b'9' => Into(St::Digits),
            _ => Error,
        },
        St::Keyword => match b {
            b'a'..=b'z' => Into(St::Keyword),
            _ => TokenBefore(Tok::Keyword),
        },
    }
}

/// The token a state stands for when the input ends there (only complete messages are
/// re-lexed, so only states that end with lookahead can be pending).
fn pending_token(st: St) -> Option<Tok> {
    match st {
        St::Zero | St::Digits => Some(Tok::Integer),
        St::MantissaDigits | St::ExpDigits => Some(Tok::Float),
        St::Keyword => Some(Tok::Keyword),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Framer: lexer + streamer over a growing buffer
// ---------------------------------------------------------------------------------------------

/// Finds complete messages in a byte stream and parses them. Feed it by appending to the
/// buffer and calling [`Framer::parse`] until it returns `Ok(None)`.
///
/// Between calls the buffer holds only the message in progress (leading whitespace and
/// skipped garbage are consumed at once), so the caller's memory is bounded by
/// `max_message`.
#[derive(Clone, Debug)]
pub struct Framer {
    st: St,
    /// Bytes of the buffer already lexed.
    scan: usize,
    /// Where the token being lexed started, if one is.
    tok_start: Option<usize>,
    brace: i64,
    bracket: i64,
    tokens: usize,
    /// Skipping the rest of an over-limit message until its braces balance.
    discarding: bool,
    max_message: usize,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE)
    }
}

impl Framer {
    /// A framer that refuses messages longer than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            st: St::Start,
            scan: 0,
            tok_start: None,
            brace: 0,
            bracket: 0,
            tokens: 0,
            discarding: false,
            max_message: max_message.max(16),
        }
    }

    /// The size limit.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Forget everything (the host went away). The caller clears its buffer too.
    pub fn reset(&mut self) {
        *self = Self::new(self.max_message);
    }

    /// True while no message is in progress (a reset would lose nothing).
    pub fn is_idle(&self) -> bool {
        self.tokens == 0 && self.tok_start.is_none() && !self.discarding
    }

    fn reset_message(&mut self) {
        self.scan = 0;
        self.tok_start = None;
        self.brace = 0;
        self.bracket = 0;
        self.tokens = 0;
    }

    /// The next message in `buf`.
    ///
    /// `Ok(None)`: more bytes are needed; what was looked at is remembered, so call again
    /// after appending. `Ok(Some(value))`: one complete JSON value, removed from `buf`.
    /// `Err(e)`: bad input, already removed from `buf` (answer it and call again).
    /// Every `Ok(Some)` and `Err` consumes at least one byte.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Value>, FrameError> {
        if buf.len() < self.scan {
            // The caller dropped bytes under us; start over on what is there.
            let max = self.max_message;
            *self = Self::new(max);
        }
        while self.scan < buf.len() {
            // Inside a string most bytes just continue it: skip them in one go (a 48 MiB
            // guest-file-write is one string).
            if let Some(quote) = match self.st {
                St::Dq => Some(b'"'),
                St::Sq => Some(b'\''),
                _ => None,
            } {
                let run = buf[self.scan..]
                    .iter()
                    .position(|&c| c == quote || c == b'\\' || !(0x20..0xFE).contains(&c))
                    .unwrap_or(buf.len() - self.scan);
                if run > 0 {
                    self.scan += run;
                    if let Some(e) = self.after_step(buf) {
                        return Err(e);
                    }
                    continue;
                }
            }
            let b = buf[self.scan];
            let step = step(self.st, b);
            match step {
                Step::Into(next) => {
                    if self.st == St::Start {
                        self.tok_start = Some(self.scan);
                    }
                    self.st = next;
                    self.scan += 1;
                }
                Step::Skip => {
                    if self.idle_between_tokens() {
                        buf.advance(1);
                    } else {
                        self.scan += 1;
                    }
                }
                Step::Token(tok) => {
                    if self.st == St::Start {
                        self.tok_start = Some(self.scan);
                    }
                    self.scan += 1;
                    self.st = St::Start;
                    if let Some(r) = self.token(tok, buf) {
                        return r.map(Some);
                    }
                }
                Step::TokenBefore(tok) => {
                    self.st = St::Start;
                    if let Some(r) = self.token(tok, buf) {
                        return r.map(Some);
                    }
                }
                Step::Resync => self.st = St::Start,
                Step::Error => {
                    let from = self.tok_start.unwrap_or(self.scan).min(self.scan);
                    // Keep the reply bounded: a huge bad token is reported by its start
                    // and the byte that broke it.
                    let mut token = buf[from..self.scan.min(from + STRAY_MAX)].to_vec();
                    token.push(b);
                    buf.advance(self.scan + 1);
                    self.reset_message();
                    self.discarding = false;
                    self.st = St::Recovery;
                    return Err(FrameError::Stray(token));
                }
            }
            if let Some(e) = self.after_step(buf) {
                return Err(e);
            }
        }
        Ok(None)
    }

    /// Bookkeeping after bytes were lexed: drop what a discarded message consumed, or stop a
    /// message that grew too large.
    fn after_step(&mut self, buf: &mut BytesMut) -> Option<FrameError> {
        if self.discarding {
            // Nothing of a discarded message is kept.
            buf.advance(self.scan);
            self.scan = 0;
            if let Some(t) = self.tok_start.as_mut() {
                *t = 0;
            }
            None
        } else if self.scan > self.max_message {
            Some(self.start_discarding(buf, FrameError::TooLarge))
        } else {
            None
        }
    }

    /// Between messages, in whitespace or recovery: bytes can be dropped at once.
    fn idle_between_tokens(&self) -> bool {
        (self.tokens == 0 && self.tok_start.is_none()) || self.discarding
    }

    fn start_discarding(&mut self, buf: &mut BytesMut, err: FrameError) -> FrameError {
        buf.advance(self.scan);
        self.scan = 0;
        if self.tok_start.is_some() {
            self.tok_start = Some(0);
        }
        self.discarding = true;
        if self.brace <= 0 && self.bracket <= 0 && self.tok_start.is_none() {
            // Nothing left open (a lone oversized scalar just ended).
            self.discarding = false;
            self.reset_message();
        }
        err
    }

    /// A token ended at `self.scan`. Returns a result when it ends (or breaks) a message.
    fn token(&mut self, tok: Tok, buf: &mut BytesMut) -> Option<Result<Value, FrameError>> {
        self.tok_start = None;
        match tok {
            Tok::LCurly => self.brace += 1,
            Tok::RCurly => self.brace -= 1,
            Tok::LSquare => self.bracket += 1,
            Tok::RSquare => self.bracket -= 1,
            _ => {}
        }
        self.tokens += 1;
        let complete = self.brace < 0 || self.bracket < 0 || (self.brace == 0 && self.bracket == 0);
        if self.discarding {
            if complete {
                self.discarding = false;
                buf.advance(self.scan);
                self.reset_message();
            }
            return None;
        }
        if complete {
            // Split off, a large message would share its allocation with what stays in
            // `buf` for as long as `buf` lives; instead the few bytes read behind it (one
            // read at most) move to a buffer of their own, and the message's memory goes
            // back as soon as it is parsed. Owning its allocation, it can also be parsed in
            // place.
            let parsed = if self.scan > TAKE_WHOLE_ABOVE {
                let rest = BytesMut::from(&buf[self.scan..]);
                let mut whole = std::mem::replace(buf, rest);
                whole.truncate(self.scan);
                parse_owned(whole)
            } else {
                parse_message(&buf.split_to(self.scan))
            };
            self.reset_message();
            return Some(parsed.map_err(FrameError::Syntax));
        }
        let limit = if self.tokens > MAX_TOKEN_COUNT {
            Some(FrameError::TooManyTokens)
        } else if self.brace + self.bracket > MAX_NESTING {
            Some(FrameError::TooDeep)
        } else {
            None
        };
        limit.map(|e| Err(self.start_discarding(buf, e)))
    }
}

// ---------------------------------------------------------------------------------------------
// Parser: a complete message to a Value, with QEMU's messages
// ---------------------------------------------------------------------------------------------

struct Tokens<'a> {
    src: &'a [u8],
    pos: usize,
    peeked: Option<Option<(Tok, &'a [u8])>>,
    /// Whether a big plain string may be left in the source (see [`parse_owned`]).
    defer_big: bool,
    /// How long a string must be to be left there.
    big_min: usize,
    /// The string left in the source: its span there and the way to its placeholder.
    big: Option<Big>,
}

/// A string left in the message: `span` of its text in the source, and `path`, the keys and
/// indices from its placeholder up to the root (innermost first).
struct Big {
    span: std::ops::Range<usize>,
    path: Vec<Seg>,
}

enum Seg {
    Key(String),
    Index(usize),
}

impl<'a> Tokens<'a> {
    fn new(src: &'a [u8]) -> Self {
        Self {
            src,
            pos: 0,
            peeked: None,
            defer_big: false,
            big_min: BIG_STRING,
            big: None,
        }
    }

    /// A string token that can be left in the source: long, and its text is its value
    /// (printable ASCII, no escapes), so the bytes between the quotes are the string.
    fn take_big(&mut self, token: &[u8]) -> bool {
        if !self.defer_big || self.big.is_some() || token.len() < self.big_min + 2 {
            return false;
        }
        let inner = &token[1..token.len() - 1];
        if !inner
            .iter()
            .all(|&c| (0x20..0x7f).contains(&c) && c != b'\\')
        {
            return false;
        }
        // The token is a slice of `src`: its place there is the pointer difference.
        let start = inner.as_ptr() as usize - self.src.as_ptr() as usize;
        self.big = Some(Big {
            span: start..start + inner.len(),
            path: Vec::new(),
        });
        true
    }

    /// Parse a child value of a container; if the big string was found inside it, note the
    /// way there.
    fn child(&mut self, depth: usize, seg: impl FnOnce() -> Seg) -> Result<Value, String> {
        let had = self.big.is_some();
        let v = parse_value(self, depth)?;
        if !had && let Some(big) = &mut self.big {
            big.path.push(seg());
        }
        Ok(v)
    }

    fn lex(&mut self) -> Result<Option<(Tok, &'a [u8])>, String> {
        let mut st = St::Start;
        let mut start = self.pos;
        while self.pos < self.src.len() {
            let b = self.src[self.pos];
            match step(st, b) {
                Step::Into(next) => {
                    if st == St::Start {
                        start = self.pos;
                    }
                    st = next;
                    self.pos += 1;
                }
                Step::Skip | Step::Resync => {
                    self.pos += 1;
                    st = St::Start;
                }
                Step::Token(tok) => {
                    if st == St::Start {
                        start = self.pos;
                    }
                    self.pos += 1;
                    return Ok(Some((tok, &self.src[start..self.pos])));
                }
                Step::TokenBefore(tok) => return Ok(Some((tok, &self.src[start..self.pos]))),
                // The framer never hands over a message with a lexical error.
                Step::Error => return Err("expecting value".into()),
            }
        }
        Ok(pending_token(st).map(|tok| (tok, &self.src[start..self.pos])))
    }

    fn peek(&mut self) -> Result<Option<(Tok, &'a [u8])>, String> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lex()?);
        }
        Ok(self.peeked.flatten())
    }

    fn next(&mut self) -> Result<Option<(Tok, &'a [u8])>, String> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lex(),
        }
    }
}

fn premature() -> String {
    "premature EOI".into()
}

fn clip(mut msg: String) -> String {
    if msg.len() > PARSE_MESSAGE_MAX {
        let mut cut = PARSE_MESSAGE_MAX;
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        msg.truncate(cut);
    }
    msg
}

/// Parse one complete message (as delimited by the framer). The error is the text after
/// `JSON parse error, `.
pub fn parse_message(src: &[u8]) -> Result<Value, String> {
    let mut toks = Tokens::new(src);
    parse_value(&mut toks, 0).map_err(clip)
}

/// [`parse_message`] for a message that owns its allocation: the first big plain string in it
/// is not copied; its bytes move to the front of the message's memory, which then becomes that
/// string. So the largest requests (`guest-file-write`) are held once while parsed.
pub fn parse_owned(msg: BytesMut) -> Result<Value, String> {
    parse_owned_above(msg, BIG_STRING)
}

/// [`parse_owned`] leaving a string of `min` bytes or more in place: for the fuzzer, which
/// checks it against [`parse_message`] on inputs far smaller than a real large request.
#[doc(hidden)]
pub fn parse_owned_above(msg: BytesMut, min: usize) -> Result<Value, String> {
    let (mut value, big) = {
        let mut toks = Tokens::new(&msg);
        toks.defer_big = true;
        toks.big_min = min;
        let v = parse_value(&mut toks, 0).map_err(clip)?;
        (v, toks.big)
    };
    let Some(big) = big else {
        return Ok(value);
    };
    // A uniquely owned `BytesMut` turns back into its `Vec` without copying.
    let mut bytes: Vec<u8> = msg.into();
    let len = big.span.len();
    bytes.copy_within(big.span, 0);
    bytes.truncate(len);
    // Printable ASCII only (see `take_big`), so this cannot fail.
    let text = String::from_utf8(bytes).map_err(|_| "invalid UTF-8 sequence in string")?;
    let mut slot = &mut value;
    for seg in big.path.iter().rev() {
        let next = match seg {
            Seg::Key(k) => slot.as_object_mut().and_then(|m| m.get_mut(k)),
            Seg::Index(i) => slot.as_array_mut().and_then(|a| a.get_mut(*i)),
        };
        slot = next.ok_or("internal error: lost a string")?;
    }
    *slot = Value::String(text);
    Ok(value)
}

fn parse_value(t: &mut Tokens<'_>, depth: usize) -> Result<Value, String> {
    // The framer bounds nesting; this only guards direct callers of parse_message.
    if depth > MAX_NESTING as usize {
        return Err("nesting depth limit exceeded".into());
    }
    let Some((tok, text)) = t.peek()? else {
        return Err(premature());
    };
    match tok {
        Tok::LCurly => parse_object(t, depth),
        Tok::LSquare => parse_array(t, depth),
        Tok::Str => {
            t.next()?;
            if t.take_big(text) {
                // A placeholder: `parse_owned` puts the string here.
                return Ok(Value::Null);
            }
            parse_string(text).map(Value::String)
        }
        Tok::Integer => {
            t.next()?;
            Ok(parse_integer(text))
        }
        Tok::Float => {
            t.next()?;
            Ok(parse_float(text))
        }
        Tok::Keyword => {
            t.next()?;
            match text {
                b"true" => Ok(Value::Bool(true)),
                b"false" => Ok(Value::Bool(false)),
                b"null" => Ok(Value::Null),
                _ => Err(format!("invalid keyword '{}'", sanitize(text))),
            }
        }
        _ => Err("expecting value".into()),
    }
}

fn parse_object(t: &mut Tokens<'_>, depth: usize) -> Result<Value, String> {
    t.next()?; // '{'
    let mut map = Map::new();
    match t.peek()? {
        None => return Err(premature()),
        Some((Tok::RCurly, _)) => {
            t.next()?;
            return Ok(Value::Object(map));
        }
        Some(_) => {}
    }
    parse_pair(t, &mut map, depth)?;
    loop {
        match t.next()? {
            None => return Err(premature()),
            Some((Tok::RCurly, _)) => return Ok(Value::Object(map)),
            Some((Tok::Comma, _)) => parse_pair(t, &mut map, depth)?,
            Some(_) => return Err("expected separator in dict".into()),
        }
    }
}

fn parse_pair(
    t: &mut Tokens<'_>,
    map: &mut Map<String, Value>,
    depth: usize,
) -> Result<(), String> {
    if t.peek()?.is_none() {
        return Err(premature());
    }
    // A key is never left in the source: the map needs it now.
    let defer = std::mem::replace(&mut t.defer_big, false);
    let key = parse_value(t, depth + 1);
    t.defer_big = defer;
    let Value::String(key) = key? else {
        return Err("key is not a string in object".into());
    };
    match t.next()? {
        None => return Err(premature()),
        Some((Tok::Colon, _)) => {}
        Some(_) => return Err("missing : in object pair".into()),
    }
    let value = t.child(depth + 1, || Seg::Key(key.clone()))?;
    if map.contains_key(&key) {
        return Err("duplicate key".into());
    }
    map.insert(key, value);
    Ok(())
}

fn parse_array(t: &mut Tokens<'_>, depth: usize) -> Result<Value, String> {
    t.next()?; // '['
    let mut list = Vec::new();
    match t.peek()? {
        None => return Err(premature()),
        Some((Tok::RSquare, _)) => {
            t.next()?;
            return Ok(Value::Array(list));
        }
        Some(_) => {}
    }
    list.push(t.child(depth + 1, || Seg::Index(0))?);
    loop {
        match t.next()? {
            None => return Err(premature()),
            Some((Tok::RSquare, _)) => return Ok(Value::Array(list)),
            Some((Tok::Comma, _)) => {
                let i = list.len();
                list.push(t.child(depth + 1, || Seg::Index(i))?);
            }
            Some(_) => return Err("expected separator in list".into()),
        }
    }
}

/// QEMU's integer rule: int64 if it fits, else uint64 if it fits, else a double.
fn parse_integer(text: &[u8]) -> Value {
    let s = std::str::from_utf8(text).unwrap_or("0");
    if let Ok(i) = s.parse::<i64>() {
        return Value::Number(i.into());
    }
    if !s.starts_with('-')
        && let Ok(u) = s.parse::<u64>()
    {
        return Value::Number(u.into());
    }
    parse_float(text)
}

fn parse_float(text: &[u8]) -> Value {
    let s = std::str::from_utf8(text).unwrap_or("0");
    // strtod gives ±inf on overflow; JSON has no such value, so it becomes null (only an
    // `id` can carry it back, and no client can parse qemu-ga's bare `inf` either).
    s.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

fn hex4(s: &[u8]) -> Option<u32> {
    if s.len() < 4 {
        return None;
    }
    let mut cp = 0u32;
    for &c in &s[..4] {
        cp = (cp << 4) | (c as char).to_digit(16)?;
    }
    Some(cp)
}

fn valid_codepoint(cp: u32) -> bool {
    cp <= 0x10FFFF
        && !(0xD800..=0xDFFF).contains(&cp)
        && !(0xFDD0..=0xFDEF).contains(&cp)
        && (cp & 0xFFFE) != 0xFFFE
}

/// Decode one modified-UTF-8 sequence (QEMU's `mod_utf8_codepoint`): the code point, or
/// `None` for an invalid sequence, and the number of bytes it spans.
fn mod_utf8(s: &[u8]) -> (Option<u32>, usize) {
    let Some(&first) = s.first() else {
        return (None, 0);
    };
    if first < 0x80 {
        return (Some(first as u32), 1);
    }
    if first >= 0xFE || first & 0x40 == 0 {
        return (None, 1);
    }
    let len = (first.leading_ones() as usize).min(6);
    let mut cp = (first as u32) & ((1u32 << (7 - len)) - 1);
    for i in 1..len {
        match s.get(i) {
            Some(&c) if c & 0xC0 == 0x80 => cp = (cp << 6) | (c as u32 & 0x3F),
            _ => return (None, i),
        }
    }
    const MIN: [u32; 5] = [0x80, 0x800, 0x10000, 0x200000, 0x4000000];
    let ok = valid_codepoint(cp) && (cp >= MIN[len - 2] || (cp == 0 && len == 2));
    (ok.then_some(cp), len)
}

/// Bytes as QEMU would print them: a C string (up to the first NUL), each invalid sequence
/// replaced by U+FFFD, `C0 80` read as U+0000.
pub fn sanitize(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let mut s = &bytes[..end];
    let mut out = String::with_capacity(s.len());
    while !s.is_empty() {
        let (cp, n) = mod_utf8(s);
        out.push(cp.and_then(char::from_u32).unwrap_or('\u{FFFD}'));
        s = &s[n.max(1)..];
    }
    out
}

/// A string token (quotes included) to its value, with QEMU's escape rules and errors.
fn parse_string(token: &[u8]) -> Result<String, String> {
    let inner = &token[1..token.len().saturating_sub(1)];
    let mut out = String::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let c = inner[i];
        if c == b'\\' {
            let beg = i;
            i += 1;
            let e = inner.get(i).copied().unwrap_or(0);
            i += 1;
            match e {
                b'"' => out.push('"'),
                b'\'' => out.push('\''),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let first = hex4(&inner[i.min(inner.len())..]);
                    i += 4;
                    let mut cp = first;
                    if let Some(hi) = first
                        && (0xD800..=0xDBFF).contains(&hi)
                        && inner.get(i) == Some(&b'\\')
                        && inner.get(i + 1) == Some(&b'u')
                    {
                        match hex4(&inner[(i + 2).min(inner.len())..]) {
                            Some(lo) if (0xDC00..=0xDFFF).contains(&lo) => {
                                cp = Some(0x10000 + ((hi & 0x3FF) << 10) + (lo & 0x3FF));
                                i += 6;
                            }
                            _ => cp = None,
                        }
                    }
                    match cp.filter(|&c| valid_codepoint(c)).and_then(char::from_u32) {
                        Some(ch) => out.push(ch),
                        None => {
                            let end = i.min(inner.len());
                            return Err(format!(
                                "{} is not a valid Unicode character",
                                sanitize(&inner[beg..end])
                            ));
                        }
                    }
                }
                _ => return Err("invalid escape sequence in string".into()),
            }
        } else {
            let (cp, n) = mod_utf8(&inner[i..]);
            match cp.and_then(char::from_u32) {
                Some(ch) => out.push(ch),
                None => return Err("invalid UTF-8 sequence in string".into()),
            }
            i += n.max(1);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

/// Append `s` as a JSON string, ASCII only.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for ch in s.chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            ' '..='~' => out.push(ch as u8),
            _ => {
                let mut units = [0u16; 2];
                for u in ch.encode_utf16(&mut units) {
                    out.extend_from_slice(format!("\\u{:04X}", u).as_bytes());
                }
            }
        }
    }
    out.push(b'"');
}

/// QEMU prints doubles with `%.17g`, so an integral double below 1e17 reads back as an
/// integer (`1e5` comes back as `100000`); other values print in their shortest exact form,
/// which parses to the same double.
fn write_number(out: &mut Vec<u8>, n: &Number) {
    if let Some(f) = n.as_f64().filter(|_| n.is_f64())
        && f.fract() == 0.0
        && f.abs() < 1e17
    {
        out.extend_from_slice(format!("{}", f as i64).as_bytes());
        return;
    }
    out.extend_from_slice(n.to_string().as_bytes());
}

/// Append `v` as compact, ASCII-only JSON.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// `v` as compact, ASCII-only JSON.
pub fn to_vec(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(&mut out, v);
    out
}

// ---------------------------------------------------------------------------------------------
// QEMU's QDict iteration order
// ---------------------------------------------------------------------------------------------

/// The order in which QEMU's `QDict` iterates the keys of an object that was parsed with its
/// members in `keys` order: by bucket of the key's hash, and within a bucket the most recently
/// inserted first. qemu-ga checks request members in this order, so when a request has more
/// than one bad member this picks the one qemu-ga reports.
pub fn qdict_order<'a>(keys: &[&'a str]) -> Vec<&'a str> {
    fn tdb_hash(name: &str) -> u32 {
        let bytes = name.as_bytes();
        let mut value: u32 = 0x238F_13AFu32.wrapping_mul(bytes.len() as u32);
        for (i, &b) in bytes.iter().enumerate() {
            value = value.wrapping_add((b as u32) << ((i * 5) % 24));
        }
        1_103_515_243u32.wrapping_mul(value).wrapping_add(12345)
    }
    let mut indexed: Vec<(u32, usize, &'a str)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (tdb_hash(k) % 512, i, *k))
        .collect();
    indexed.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    indexed.into_iter().map(|(_, _, k)| k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all(input: &[u8]) -> Vec<Result<Value, FrameError>> {
        let mut f = Framer::default();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(r) = f.parse(&mut buf).transpose() {
            out.push(r);
        }
        out
    }

    fn descs(input: &[u8]) -> Vec<String> {
        all(input)
            .into_iter()
            .map(|r| match r {
                Ok(v) => String::from_utf8(to_vec(&v)).unwrap(),
                Err(e) => format!("ERR {}", e.desc()),
            })
            .collect()
    }

    #[test]
    fn objects_split_pipelined_and_single_quoted() {
        assert_eq!(
            descs(b"{'execute':'guest-ping'}{\"a\":\n[1, -2, 3.5, true, null]}  "),
            vec![
                r#"{"execute":"guest-ping"}"#,
                r#"{"a":[1,-2,3.5,true,null]}"#
            ]
        );
    }

    #[test]
    fn stray_bytes_and_recovery() {
        assert_eq!(
            descs(b"\xff{\"x\":1}"),
            vec!["ERR JSON parse error, stray '\u{FFFD}'", r#"{"x":1}"#]
        );
        assert_eq!(
            descs(b"{\"execute\":\"guest-pi\xff{\"execute\":\"guest-ping\"}"),
            vec![
                "ERR JSON parse error, stray '\"guest-pi\u{FFFD}'",
                r#"{"execute":"guest-ping"}"#
            ]
        );
        // Recovery skips to the next structural byte: `rue}` is eaten up to the `}`.
        assert_eq!(
            descs(b"{\"a\":True}"),
            vec![
                "ERR JSON parse error, stray 'T'",
                "ERR JSON parse error, expecting value"
            ]
        );
        assert_eq!(
            descs(b"garbage{}"),
            vec!["ERR JSON parse error, invalid keyword 'garbage'", "{}"]
        );
        assert_eq!(descs(b"}"), vec!["ERR JSON parse error, expecting value"]);
        assert_eq!(descs(b"42 \"s\" [1]"), vec!["42", "\"s\"", "[1]"]);
    }

    #[test]
    fn syntax_errors_use_qemu_texts() {
        let cases: &[(&[u8], &str)] = &[
            (b"{\"a\" 1}", "missing : in object pair"),
            (b"{1:2}", "key is not a string in object"),
            (b"{\"a\":1 \"b\":2}", "expected separator in dict"),
            (b"[1 2]", "expected separator in list"),
            (b"{\"a\":1,\"a\":2}", "duplicate key"),
            (b"[\"\\q\"]", "invalid escape sequence in string"),
            (b"[\"\\uD800\"]", "\\uD800 is not a valid Unicode character"),
            (b"[\"\xc3\x28\"]", "invalid UTF-8 sequence in string"),
            (b"{]", "expecting value"),
        ];
        for (input, want) in cases {
            assert_eq!(
                descs(input),
                vec![format!("ERR JSON parse error, {want}")],
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn numbers_keep_qemu_classes() {
        let v = &all(b"[9223372036854775807,9223372036854775808,18446744073709551616,-0,1e2]")[0];
        let v = v.as_ref().unwrap();
        assert!(v[0].is_i64());
        assert!(v[1].is_u64() && !v[1].is_i64());
        assert!(v[2].is_f64());
        assert_eq!(v[3], json!(0));
        assert!(v[4].is_f64());
        assert_eq!(
            to_vec(v),
            b"[9223372036854775807,9223372036854775808,1.8446744073709552e+19,0,100]"
        );
    }

    #[test]
    fn unicode_escapes_and_ascii_output() {
        let v = all(b"['\\u00e9\\ud83d\\ude00\\u0000\xc3\xa9']")
            .remove(0)
            .unwrap();
        assert_eq!(v, json!(["\u{e9}\u{1F600}\u{0}\u{e9}"]));
        assert_eq!(
            to_vec(&v),
            b"[\"\\u00E9\\uD83D\\uDE00\\u0000\\u00E9\"]".to_vec()
        );
    }

    #[test]
    fn partial_input_waits_and_resumes() {
        let mut f = Framer::default();
        let mut buf = BytesMut::from(&b"{\"execute\":\"gue"[..]);
        assert_eq!(f.parse(&mut buf), Ok(None));
        buf.extend_from_slice(b"st-ping\"}");
        assert_eq!(
            f.parse(&mut buf),
            Ok(Some(json!({"execute": "guest-ping"})))
        );
        assert!(buf.is_empty());
        // A number needs the byte after it.
        buf.extend_from_slice(b"12");
        assert_eq!(f.parse(&mut buf), Ok(None));
        buf.extend_from_slice(b"3\n");
        assert_eq!(f.parse(&mut buf), Ok(Some(json!(123))));
    }

    #[test]
    fn oversized_message_is_one_error_then_resync() {
        let mut f = Framer::new(64);
        let mut input = b"{\"execute\":\"guest-file-write\",\"arguments\":{\"buf-b64\":\"".to_vec();
        input.extend(std::iter::repeat_n(b'A', 10_000));
        input.extend_from_slice(b"\"}}{\"execute\":\"guest-ping\"}");
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in input.chunks(7) {
            buf.extend_from_slice(chunk);
            while let Some(r) = f.parse(&mut buf).transpose() {
                out.push(r);
            }
            assert!(buf.len() <= 64 + 7, "buffer grew to {}", buf.len());
        }
        assert_eq!(
            out,
            vec![
                Err(FrameError::TooLarge),
                Ok(json!({"execute": "guest-ping"}))
            ]
        );
    }

    #[test]
    fn owned_parse_moves_one_big_string_and_agrees_with_the_copying_parse() {
        let big = "QUJD".repeat(BIG_STRING / 2);
        let other = "x".repeat(BIG_STRING + 10);
        let cases = [
            format!(
                r#"{{"execute":"guest-file-write","arguments":{{"handle":1,"buf-b64":"{big}","count":3}}}}"#
            ),
            format!(r#"["{big}", "{other}", {{"k":'{big}'}}]"#),
            format!(r#"{{"a":[1,{{"b":["z","{big}"]}}],"c":"d"}}"#),
            format!(r#""{big}""#),
            // Not taken: escapes, a key, a short string.
            format!(r#"{{"a":"{big}\n"}}"#),
            format!(r#"{{"{big}":1}}"#),
            r#"{"a":"b"}"#.to_owned(),
            // Errors stay errors.
            format!(r#"{{"a":"{big}" "b"}}"#),
        ];
        for c in &cases {
            let owned = parse_owned(BytesMut::from(c.as_bytes()));
            assert_eq!(owned, parse_message(c.as_bytes()), "{}", &c[..40]);
        }
        // Which ones were left in place rather than copied.
        let taken: Vec<bool> = cases
            .iter()
            .map(|c| {
                let mut t = Tokens::new(c.as_bytes());
                t.defer_big = true;
                let _ = parse_value(&mut t, 0);
                t.big.is_some()
            })
            .collect();
        assert_eq!(taken, [true, true, true, true, false, false, false, true]);
        let v = parse_owned(BytesMut::from(cases[0].as_bytes())).unwrap();
        assert_eq!(
            v["arguments"]["buf-b64"].as_str().map(str::len),
            Some(big.len())
        );
    }

    #[test]
    fn nesting_limit() {
        let mut input = vec![b'['; 1100];
        input.extend(vec![b']'; 1100]);
        input.extend_from_slice(b"{}");
        let got = all(&input);
        assert_eq!(got, vec![Err(FrameError::TooDeep), Ok(json!({}))]);
        // At the limit it parses, objects and lists mixed, also in place. The agent's parser
        // runs on a thread of at least 2 MiB: enough in an optimised build (checked with
        // `cargo test --release`); unoptimised frames are several times larger.
        let stack = if cfg!(debug_assertions) {
            32 << 20
        } else {
            2 << 20
        };
        std::thread::Builder::new()
            .stack_size(stack)
            .spawn(deep_nesting_parses)
            .unwrap()
            .join()
            .unwrap();
    }

    fn deep_nesting_parses() {
        let mut deep = Vec::new();
        for i in 0..MAX_NESTING {
            deep.extend_from_slice(if i % 2 == 0 { b"{\"k\":" } else { b"[" });
        }
        deep.extend_from_slice(b"1");
        for i in (0..MAX_NESTING).rev() {
            deep.push(if i % 2 == 0 { b'}' } else { b']' });
        }
        let got = all(&deep);
        assert!(
            matches!(got.as_slice(), [Ok(_)]),
            "{:?}",
            got.first().map(|r| r.is_ok())
        );
        assert!(parse_owned_above(BytesMut::from(&deep[..]), 0).is_ok());
    }

    #[test]
    fn qdict_order_is_stable() {
        let keys = ["execute", "arguments", "id"];
        let order = qdict_order(&keys);
        assert_eq!(order.len(), 3);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, vec!["arguments", "execute", "id"]);
    }
}
