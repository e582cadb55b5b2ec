//! The wire protocols: QGA, oVirt and Oracle VM messaging. Each turns bytes or keys into
//! requests to `guestd-core` and core's answers and events back into bytes. Pure code: a
//! parser says "incomplete" instead of reading, so it can be tested and fuzzed byte by byte.

pub mod ovirt;
pub mod ovmd;
pub mod qga;
