//! Byte and key-value channels to the host: virtio-serial ports found by name, isa-serial,
//! unix sockets, vsock and xenstore. They move bytes or keys; they know no protocol.

pub mod spec;
pub mod unix;
pub mod xenstore;

pub use spec::ChannelSpec;
