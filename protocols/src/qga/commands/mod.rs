//! The command table of the current QGA schema and the dispatch from a command name to its
//! implementation. One module per command group.

mod actions;
mod exec;
mod file;
mod info;

use serde_json::{Map, Value};

use super::Ctx;
use super::error::QgaError;

/// What a successful command sends back.
#[derive(Clone, Debug, PartialEq)]
pub enum Success {
    /// `{"return": value}`.
    Return(Value),
    /// `{"return": value}` preceded by one 0xFF byte (`guest-sync-delimited`).
    Delimited(Value),
    /// Nothing (`guest-shutdown`, `guest-suspend-*`).
    NoReply,
}

/// A command of the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    /// Its name.
    pub name: &'static str,
    /// Whether success is answered (false for shutdown and suspend).
    pub success_response: bool,
}

const fn c(name: &'static str) -> Command {
    Command {
        name,
        success_response: true,
    }
}

const fn silent(name: &'static str) -> Command {
    Command {
        name,
        success_response: false,
    }
}

/// Every command of the current QGA schema (QEMU 10.0), in schema order.
pub const COMMANDS: [Command; 44] = [
    c("guest-sync-delimited"),
    c("guest-sync"),
    c("guest-ping"),
    c("guest-get-time"),
    c("guest-set-time"),
    c("guest-info"),
    silent("guest-shutdown"),
    c("guest-file-open"),
    c("guest-file-close"),
    c("guest-file-read"),
    c("guest-file-write"),
    c("guest-file-seek"),
    c("guest-file-flush"),
    c("guest-fsfreeze-status"),
    c("guest-fsfreeze-freeze"),
    c("guest-fsfreeze-freeze-list"),
    c("guest-fsfreeze-thaw"),
    c("guest-fstrim"),
    silent("guest-suspend-disk"),
    silent("guest-suspend-ram"),
    silent("guest-suspend-hybrid"),
    c("guest-network-get-interfaces"),
    c("guest-get-vcpus"),
    c("guest-set-vcpus"),
    c("guest-get-disks"),
    c("guest-get-fsinfo"),
    c("guest-set-user-password"),
    c("guest-get-memory-blocks"),
    c("guest-set-memory-blocks"),
    c("guest-get-memory-block-info"),
    c("guest-exec-status"),
    c("guest-exec"),
    c("guest-get-host-name"),
    c("guest-get-users"),
    c("guest-get-timezone"),
    c("guest-get-osinfo"),
    c("guest-get-devices"),
    c("guest-ssh-get-authorized-keys"),
    c("guest-ssh-add-authorized-keys"),
    c("guest-ssh-remove-authorized-keys"),
    c("guest-get-diskstats"),
    c("guest-get-cpustats"),
    c("guest-get-load"),
    c("guest-network-get-route"),
];

/// Commands that still run while filesystems are frozen (qemu-ga's list).
pub const FROZEN_ALLOWED: [&str; 6] = [
    "guest-ping",
    "guest-info",
    "guest-sync",
    "guest-sync-delimited",
    "guest-fsfreeze-status",
    "guest-fsfreeze-thaw",
];

/// Commands qemu-ga on Linux lists but always answers as disabled (Windows only).
pub const PLATFORM_DISABLED: [&str; 1] = ["guest-get-devices"];

/// Whether filesystems are frozen now, as the dispatcher's frozen-state policy knows it.
pub(crate) fn actions_is_frozen(agent: &guestd_core::Agent) -> bool {
    actions::is_frozen(agent)
}

/// The schema entry for `name`.
pub fn find(name: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// Run command `name` (known and enabled) with its `arguments`.
pub(crate) async fn run(
    ctx: &Ctx<'_>,
    name: &str,
    args: &mut Map<String, Value>,
) -> Result<Success, QgaError> {
    match name {
        "guest-sync-delimited" => info::sync(args).map(Success::Delimited),
        "guest-sync" => info::sync(args).map(Success::Return),
        "guest-ping" => info::no_args(args).map(|()| Success::Return(Value::Object(Map::new()))),
        "guest-info" => info::no_args(args).map(|()| Success::Return(ctx.guest_info())),
        "guest-get-time" => info::get_time(args),
        "guest-get-host-name" => info::host_name(ctx, args).await,
        "guest-get-osinfo" => info::osinfo(ctx, args).await,
        "guest-get-timezone" => info::timezone(ctx, args).await,
        "guest-get-users" => info::users(ctx, args).await,
        "guest-network-get-interfaces" => info::interfaces(ctx, args).await,
        "guest-get-fsinfo" => info::fsinfo(ctx, args).await,
        "guest-get-disks" => info::disks(ctx, args).await,
        "guest-get-vcpus" => info::vcpus(ctx, args).await,
        "guest-get-memory-blocks" => info::memory_blocks(ctx, args).await,
        "guest-get-memory-block-info" => info::memory_block_info(ctx, args).await,
        "guest-get-diskstats" => info::diskstats(ctx, args).await,
        "guest-get-cpustats" => info::cpustats(ctx, args).await,
        "guest-get-load" => info::load(ctx, args).await,
        "guest-network-get-route" => info::routes(ctx, args).await,
        "guest-file-open" => file::open(ctx, args).await,
        "guest-file-close" => file::close(ctx, args).await,
        "guest-file-read" => file::read(ctx, args).await,
        "guest-file-write" => file::write(ctx, args).await,
        "guest-file-seek" => file::seek(ctx, args).await,
        "guest-file-flush" => file::flush(ctx, args).await,
        "guest-exec" => exec::exec(ctx, args).await,
        "guest-exec-status" => exec::status(ctx, args),
        "guest-set-time" => actions::set_time(ctx, args).await,
        "guest-shutdown" => actions::shutdown(ctx, args).await,
        "guest-suspend-disk" | "guest-suspend-ram" | "guest-suspend-hybrid" => {
            actions::suspend(ctx, name, args).await
        }
        "guest-fsfreeze-status" => actions::freeze_status(ctx, args).await,
        "guest-fsfreeze-freeze" => actions::freeze(ctx, args, false).await,
        "guest-fsfreeze-freeze-list" => actions::freeze(ctx, args, true).await,
        "guest-fsfreeze-thaw" => actions::thaw(ctx, args).await,
        "guest-fstrim" => actions::fstrim(ctx, args).await,
        "guest-set-vcpus" => actions::set_vcpus(ctx, args).await,
        "guest-set-memory-blocks" => actions::set_memory_blocks(ctx, args).await,
        "guest-set-user-password" => actions::set_password(ctx, args).await,
        "guest-ssh-get-authorized-keys"
        | "guest-ssh-add-authorized-keys"
        | "guest-ssh-remove-authorized-keys" => actions::ssh_keys(ctx, name, args).await,
        // Listed but disabled on this platform; never reached while disabled.
        _ => Err(QgaError::not_found(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_the_current_schema() {
        let mut names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 44);
        for n in FROZEN_ALLOWED.iter().chain(PLATFORM_DISABLED.iter()) {
            assert!(find(n).is_some(), "{n}");
        }
        let silent: Vec<&str> = COMMANDS
            .iter()
            .filter(|c| !c.success_response)
            .map(|c| c.name)
            .collect();
        assert_eq!(
            silent,
            [
                "guest-shutdown",
                "guest-suspend-disk",
                "guest-suspend-ram",
                "guest-suspend-hybrid"
            ]
        );
    }
}
