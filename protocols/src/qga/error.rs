//! The one place that knows QGA's error vocabulary: every failure on its way to the wire
//! becomes a [`QgaError`] here, with qemu-ga's class and text.

use guestd_core::action::ActionError;
use guestd_core::contract::FactError;
use guestd_core::exec::ExecError;
use guestd_core::files::FileError;
use guestd_core::oserror::strerror;
use guestd_core::runtime::display_chain;

use super::json::FrameError;

/// The error classes qemu-ga sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Everything but unknown and disabled commands.
    GenericError,
    /// Unknown or disabled command.
    CommandNotFound,
}

impl ErrorClass {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::GenericError => "GenericError",
            ErrorClass::CommandNotFound => "CommandNotFound",
        }
    }
}

/// Why a command is disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disabled {
    /// `--block-rpcs`, or not available on this platform.
    Blocked,
    /// Not in `--allow-rpcs`.
    NotAllowed,
    /// Filesystems are frozen and the command is not on the frozen allowlist.
    Frozen,
}

/// An error reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QgaError {
    /// Its class.
    pub class: ErrorClass,
    /// Its text.
    pub desc: String,
}

/// qemu-ga's text for "not supported here" (`QERR_UNSUPPORTED`).
pub const UNSUPPORTED: &str = "this feature or command is not currently supported";

impl QgaError {
    /// A `GenericError`.
    pub fn generic(desc: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::GenericError,
            desc: desc.into(),
        }
    }

    /// An unknown command.
    pub fn not_found(cmd: &str) -> Self {
        Self {
            class: ErrorClass::CommandNotFound,
            desc: format!("The command {cmd} has not been found"),
        }
    }

    /// A disabled command.
    pub fn disabled(cmd: &str, why: Disabled) -> Self {
        let desc = match why {
            Disabled::Blocked => format!("Command {cmd} has been disabled"),
            Disabled::NotAllowed => {
                format!("Command {cmd} has been disabled: the command is not allowed")
            }
            Disabled::Frozen => {
                format!("Command {cmd} has been disabled: the agent is in frozen state")
            }
        };
        Self {
            class: ErrorClass::CommandNotFound,
            desc,
        }
    }

    /// Not supported on this system.
    pub fn unsupported() -> Self {
        Self::generic(UNSUPPORTED)
    }

    /// An action of command `cmd` failed.
    pub fn from_action(cmd: &str, e: &ActionError) -> Self {
        match e {
            ActionError::Unsupported => Self::unsupported(),
            ActionError::Frozen => Self::disabled(cmd, Disabled::Frozen),
            ActionError::InvalidArgument(s) | ActionError::NotFound(s) | ActionError::Failed(s) => {
                Self::generic(s.clone())
            }
            ActionError::Io { what, source } => {
                Self::generic(format!("{what}: {}", strerror(source)))
            }
            other => Self::generic(display_chain(other)),
        }
    }

    /// A helper program behind command `cmd` failed: qemu-ga's `child process has failed to
    /// <what>`, with the action's own words appended as QEMU 9.1+ appends the child's output.
    /// Refusals (frozen, unsupported) keep their own texts.
    pub fn child_failed(cmd: &str, what: &str, e: &ActionError) -> Self {
        match e {
            ActionError::Unsupported | ActionError::Frozen => Self::from_action(cmd, e),
            other => {
                let detail = Self::from_action(cmd, other).desc;
                // The action layer already words some failures as qemu-ga does.
                if detail.starts_with("child process")
                    || detail.starts_with("failed to create child process")
                {
                    return Self::generic(detail);
                }
                if detail.is_empty() {
                    Self::generic(format!("child process has failed to {what}"))
                } else {
                    Self::generic(format!("child process has failed to {what}: {detail}"))
                }
            }
        }
    }

    /// An action on user `user` failed; an unknown user is reported as qemu-ga's
    /// `getpwnam()` failure (whose errno is 0, hence the `Success`).
    pub fn user_action(cmd: &str, user: &str, e: &ActionError) -> Self {
        match e {
            ActionError::NotFound(_) => {
                Self::generic(format!("failed to lookup user '{user}': Success"))
            }
            other => Self::from_action(cmd, other),
        }
    }

    /// A suspend failed: "not supported", or qemu-ga's `child process has failed to suspend`
    /// with what failed appended (as QEMU 9.1+ appends the child's output).
    pub fn suspend_failed(cmd: &str, e: &ActionError) -> Self {
        const NOT_SUPPORTED: &str = "the requested suspend mode is not supported by the guest";
        match e {
            ActionError::Unsupported => Self::generic(NOT_SUPPORTED),
            ActionError::Failed(s) if s == NOT_SUPPORTED => Self::generic(NOT_SUPPORTED),
            other => Self::child_failed(cmd, "suspend", other),
        }
    }

    /// A fact could not be collected.
    pub fn from_fact(e: &FactError) -> Self {
        match e {
            FactError::Unsupported(_) => Self::unsupported(),
            other => Self::generic(display_chain(other)),
        }
    }
}

impl From<FrameError> for QgaError {
    fn from(e: FrameError) -> Self {
        Self::generic(e.desc())
    }
}

impl From<FileError> for QgaError {
    fn from(e: FileError) -> Self {
        Self::generic(e.to_string())
    }
}

impl From<ExecError> for QgaError {
    fn from(e: ExecError) -> Self {
        Self::generic(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_errors_map_to_qemu_texts() {
        assert_eq!(
            QgaError::from_action("guest-get-osinfo", &ActionError::Frozen),
            QgaError {
                class: ErrorClass::CommandNotFound,
                desc: "Command guest-get-osinfo has been disabled: the agent is in frozen state"
                    .into()
            }
        );
        assert_eq!(
            QgaError::from_action(
                "guest-fsfreeze-freeze",
                &ActionError::ChildFailed {
                    what: "fsfreeze hook".into(),
                    status: 7
                }
            )
            .desc,
            "fsfreeze hook has failed with status 7"
        );
        assert_eq!(
            QgaError::from_action("x", &ActionError::Unsupported).desc,
            UNSUPPORTED
        );
        assert_eq!(
            QgaError::from_action(
                "x",
                &ActionError::Io {
                    what: "failed to freeze /mnt".into(),
                    source: std::io::Error::from_raw_os_error(libc_ebusy()),
                }
            )
            .desc,
            "failed to freeze /mnt: Device or resource busy"
        );
    }

    fn libc_ebusy() -> i32 {
        16
    }
}
