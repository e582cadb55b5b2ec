//! OS error texts as C programs print them (`strerror`), which is what the agents guestd
//! replaces put on the wire.

use std::io;

/// `strerror(errno)` for an OS error (`No such file or directory`), without Rust's
/// ` (os error 2)` suffix; other errors as they display.
pub fn strerror(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => strerror_code(code),
        None => e.to_string(),
    }
}

/// `strerror(code)`.
pub fn strerror_code(code: i32) -> String {
    let s = io::Error::from_raw_os_error(code).to_string();
    let suffix = format!(" (os error {code})");
    s.strip_suffix(&suffix).map(str::to_owned).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rust_suffix() {
        assert_eq!(
            strerror(&io::Error::from_raw_os_error(libc::ENOENT)),
            "No such file or directory"
        );
        assert_eq!(strerror(&io::Error::other("plain")), "plain");
    }
}
