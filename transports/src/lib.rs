//! Byte and key-value channels to the host: virtio-serial ports found by name, isa-serial,
//! unix sockets, vsock and xenstore. They move bytes or keys; they know no protocol.
//!
//! Every byte transport implements [`guestd_core::contract::ByteTransport`]; [`spec::build`]
//! makes one from a channel SPEC (`virtio:NAME`, `serial:PATH`, `unix-listen:PATH`,
//! `unix-connect:PATH`, `vsock-listen:PORT`).

#[cfg(all(target_os = "linux", feature = "netlink"))]
pub mod hotplug;
pub mod quiet;
pub mod serial;
pub mod spec;
pub mod unix;
pub mod virtio;
pub mod vsock;
pub mod xenstore;

pub use spec::ChannelSpec;

#[cfg(test)]
pub(crate) mod tests {
    /// An error and its sources, as the runtime logs them.
    pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
        guestd_core::runtime::display_chain(e)
    }
}
