//! First-boot instance configuration: the `com.oracle.linux.*` key mapping, and every module on
//! fixture roots of both distribution families, checked with the distributions' own tools
//! where they exist here (pwck/grpck, openssl passwd, ifquery, nmcli --offline, ssh-keygen,
//! systemctl --root).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "instance/accounts.rs"]
mod accounts;
#[path = "instance/fixtures.rs"]
mod fixtures;
#[path = "instance/lifecycle.rs"]
mod lifecycle;
#[path = "instance/mapping.rs"]
mod mapping;
#[path = "instance/network.rs"]
mod network;
#[path = "instance/system.rs"]
mod system;
