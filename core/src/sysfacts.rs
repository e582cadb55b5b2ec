//! Lower-level system facts that some protocols expose one to one (QGA's vCPU, memory-block,
//! disk, statistics and route commands). They are not part of `guestd info`'s report.

use serde::{Deserialize, Serialize};

use crate::model::Disk;

/// A logical CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vcpu {
    /// Logical CPU number (`cpuN`).
    pub logical_id: u32,
    /// Online now.
    pub online: bool,
    /// The kernel lets it go offline (`cpuN/online` exists and is writable).
    pub can_offline: bool,
}

/// A hot-pluggable memory block (`/sys/devices/system/memory/memoryN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryBlock {
    /// Block number N.
    pub phys_index: u64,
    /// Online now.
    pub online: bool,
    /// The kernel says it may be removed (`removable`).
    pub can_offline: bool,
}

/// A block device or partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDevice {
    /// Device node (`/dev/vda1`).
    pub name: String,
    /// A partition rather than a whole disk.
    pub partition: bool,
    /// Device nodes this one is built on (the disk of a partition, the members of a dm/md).
    pub dependencies: Vec<String>,
    /// Where the device sits, for whole disks.
    pub address: Option<Disk>,
    /// Device-mapper name (`vg-root`), when it is one.
    pub alias: Option<String>,
}

/// One line of `/proc/diskstats`. Counter names follow the kernel's documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStats {
    /// Kernel device name.
    pub name: String,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Reads completed.
    pub read_ios: Option<u64>,
    /// Reads merged.
    pub read_merges: Option<u64>,
    /// Sectors read.
    pub read_sectors: Option<u64>,
    /// Milliseconds spent reading.
    pub read_ticks: Option<u64>,
    /// Writes completed.
    pub write_ios: Option<u64>,
    /// Writes merged.
    pub write_merges: Option<u64>,
    /// Sectors written.
    pub write_sectors: Option<u64>,
    /// Milliseconds spent writing.
    pub write_ticks: Option<u64>,
    /// I/Os in flight.
    pub ios_pgr: Option<u64>,
    /// Milliseconds spent doing I/O.
    pub total_ticks: Option<u64>,
    /// Weighted milliseconds doing I/O.
    pub weight_ticks: Option<u64>,
    /// Discards completed.
    pub discard_ios: Option<u64>,
    /// Discards merged.
    pub discard_merges: Option<u64>,
    /// Sectors discarded.
    pub discard_sectors: Option<u64>,
    /// Milliseconds spent discarding.
    pub discard_ticks: Option<u64>,
    /// Flushes completed.
    pub flush_ios: Option<u64>,
    /// Milliseconds spent flushing.
    pub flush_ticks: Option<u64>,
}

/// Time one CPU spent in each state since boot, in milliseconds (from `/proc/stat` ticks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuStats {
    /// CPU number.
    pub cpu: u32,
    /// User mode.
    pub user: u64,
    /// Niced user mode.
    pub nice: u64,
    /// Kernel mode.
    pub system: u64,
    /// Idle.
    pub idle: u64,
    /// Waiting for I/O.
    pub iowait: Option<u64>,
    /// Servicing interrupts.
    pub irq: Option<u64>,
    /// Servicing softirqs.
    pub softirq: Option<u64>,
    /// Stolen by the hypervisor.
    pub steal: Option<u64>,
    /// Running guests.
    pub guest: Option<u64>,
    /// Running niced guests.
    pub guest_nice: Option<u64>,
}

/// A route of the main table, as `/proc/net/route` and `/proc/net/ipv6_route` show it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Outgoing interface.
    pub iface: String,
    /// Destination network address.
    pub destination: String,
    /// 4 or 6.
    pub version: u8,
    /// Metric.
    pub metric: u32,
    /// Gateway (next hop), when any.
    pub gateway: Option<String>,
    /// IPv4 netmask (dotted quad).
    pub mask: Option<String>,
    /// IPv6 destination prefix length.
    pub destination_prefix: Option<u8>,
    /// IPv6 source network.
    pub source: Option<String>,
    /// IPv6 source prefix length.
    pub source_prefix: Option<u8>,
    /// Route flags (`RTF_*`).
    pub flags: Option<u64>,
    /// Reference count.
    pub refcnt: Option<u64>,
    /// Use count.
    pub use_count: Option<u64>,
    /// TCP window (IPv4).
    pub window: Option<u64>,
    /// MTU (IPv4).
    pub mtu: Option<u64>,
    /// Initial round-trip time (IPv4).
    pub irtt: Option<u64>,
}
