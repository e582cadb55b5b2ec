//! API version negotiation (note §4.2), agent side.
//!
//! The agent starts at version 0 and rises only on `api-version`. The host (VDSM) keeps its
//! own value and sends `api-version` only when a heartbeat's `apiVersion` *changes* it, so the
//! agent reports 0 in its first heartbeat and 3 afterwards: a host still holding 3 from before
//! an agent restart goes 3 → 0 → 3 and says `api-version 3`. A heartbeat written while the
//! host was away is lost, so while the agent is at 0 the 0 → 3 pair is repeated after the host
//! returns and after every `refresh`.

use super::message::min_version;

/// The highest version either side knows.
pub const MAX_API_VERSION: u8 = 3;

/// The agent's negotiation state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiation {
    version: u8,
    next_heartbeat: u8,
}

impl Default for Negotiation {
    fn default() -> Self {
        Self::new()
    }
}

impl Negotiation {
    /// A freshly started agent: version 0, the next heartbeat carries 0.
    pub fn new() -> Self {
        Self {
            version: 0,
            next_heartbeat: 0,
        }
    }

    /// The version in force, which gates what is sent.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The `apiVersion` the heartbeat now being sent carries; later ones carry the maximum
    /// until the pair is armed again.
    pub fn heartbeat_version(&mut self) -> u8 {
        let v = self.next_heartbeat;
        self.next_heartbeat = MAX_API_VERSION;
        v
    }

    /// What the next heartbeat will carry (for tests and logs).
    pub fn peek_heartbeat_version(&self) -> u8 {
        self.next_heartbeat
    }

    /// `api-version` arrived. `None` (not an integer) is ignored. Returns true when the
    /// version changed, which calls for the refresh batch.
    pub fn on_api_version(&mut self, offered: Option<i64>) -> bool {
        let Some(v) = offered else { return false };
        let v = v.clamp(0, i64::from(MAX_API_VERSION)) as u8;
        if v == self.version {
            return false;
        }
        self.version = v;
        true
    }

    /// `refresh` arrived. Without `apiVersion` (a host from before versioning) the agent
    /// falls back to 0; with it nothing changes. At 0 the heartbeat pair is armed again.
    pub fn on_refresh(&mut self, api_version_present: bool) {
        if !api_version_present {
            self.version = 0;
        }
        self.arm_if_unversioned();
    }

    /// The host came back after being away.
    pub fn on_host_returned(&mut self) {
        self.arm_if_unversioned();
    }

    fn arm_if_unversioned(&mut self) {
        if self.version == 0 {
            self.next_heartbeat = 0;
        }
    }

    /// True when a message of this name may be sent at the current version.
    pub fn allows(&self, name: &str) -> bool {
        min_version(name) <= self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VDSM's side of §4.2, written from the note, to play the sequences against.
    struct Vdsm {
        effective: u8,
        sent: Vec<u8>,
    }

    impl Vdsm {
        fn heartbeat(&mut self, api: Option<u8>) {
            match api {
                Some(v) => {
                    let common = v.min(3);
                    if common != self.effective {
                        self.effective = common;
                        if common > 0 {
                            self.sent.push(common);
                        }
                    }
                }
                None => self.effective = 0,
            }
        }
    }

    #[test]
    fn agent_restart_while_host_holds_3() {
        let mut a = Negotiation::new();
        let mut v = Vdsm {
            effective: 3,
            sent: vec![],
        };
        v.heartbeat(Some(a.heartbeat_version()));
        assert_eq!(v.effective, 0);
        assert!(v.sent.is_empty());
        v.heartbeat(Some(a.heartbeat_version()));
        assert_eq!(v.sent, vec![3]);
        assert!(a.on_api_version(Some(3)));
        assert_eq!(a.version(), 3);
        assert!(a.allows("containers"));
        // Later heartbeats keep 3 and cause nothing.
        v.heartbeat(Some(a.heartbeat_version()));
        assert_eq!(v.sent, vec![3]);
        assert!(!a.on_api_version(Some(3)));
    }

    #[test]
    fn lost_zero_heartbeat_is_repeated_after_host_returns() {
        let mut a = Negotiation::new();
        // The first heartbeat (0) is written while the host is away: lost.
        assert_eq!(a.heartbeat_version(), 0);
        let mut v = Vdsm {
            effective: 3,
            sent: vec![],
        };
        // Without re-arming, 3 would change nothing on a host holding 3.
        assert_eq!(a.peek_heartbeat_version(), 3);
        a.on_host_returned();
        a.on_refresh(true);
        v.heartbeat(Some(a.heartbeat_version()));
        v.heartbeat(Some(a.heartbeat_version()));
        assert_eq!(v.sent, vec![3]);
        assert!(a.on_api_version(Some(3)));
        // Once at 3, returning hosts and refreshes do not re-arm.
        a.on_host_returned();
        a.on_refresh(true);
        assert_eq!(a.heartbeat_version(), 3);
    }

    #[test]
    fn refresh_without_api_version_resets_to_zero() {
        let mut a = Negotiation::new();
        a.heartbeat_version();
        assert!(a.on_api_version(Some(3)));
        a.on_refresh(false);
        assert_eq!(a.version(), 0);
        assert!(!a.allows("os-info"));
        assert_eq!(a.heartbeat_version(), 0);
        assert_eq!(a.heartbeat_version(), 3);
    }

    #[test]
    fn api_version_is_clamped_and_non_integers_ignored() {
        let mut a = Negotiation::new();
        assert!(!a.on_api_version(None));
        assert!(a.on_api_version(Some(7)));
        assert_eq!(a.version(), 3);
        assert!(a.on_api_version(Some(1)));
        assert!(a.allows("number-of-cpus") && !a.allows("timezone"));
        assert!(a.on_api_version(Some(-4)));
        assert_eq!(a.version(), 0);
    }
}
