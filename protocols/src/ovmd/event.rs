//! Events: the `VMAPIEvent` message and the event names `ovmd -e` accepts (ovmd.md §1.7-1.8).

/// The to-guest message name that carries an event instead of a parameter.
pub const EVENT_NAME: &str = "VMAPIEvent";

/// Oracle's event types (bit values of the driver's subscription mask).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Snapshot (0x1).
    Snapshot,
    /// Migration (0x2).
    Migrate,
    /// Shutdown (0x4).
    Shutdown,
    /// Reconfiguration (0x8).
    Reconfig,
    /// IP address change (0x10).
    IpAddress,
    /// Application-defined (0x20).
    User,
    /// A new parameter arrived (0x40).
    NewParam,
    /// System (0x80).
    System,
}

/// Every type, in bit order.
pub const EVENT_TYPES: [EventType; 8] = [
    EventType::Snapshot,
    EventType::Migrate,
    EventType::Shutdown,
    EventType::Reconfig,
    EventType::IpAddress,
    EventType::User,
    EventType::NewParam,
    EventType::System,
];

impl EventType {
    /// The bit in the driver's mask.
    pub fn bit(self) -> u32 {
        match self {
            EventType::Snapshot => 0x1,
            EventType::Migrate => 0x2,
            EventType::Shutdown => 0x4,
            EventType::Reconfig => 0x8,
            EventType::IpAddress => 0x10,
            EventType::User => 0x20,
            EventType::NewParam => 0x40,
            EventType::System => 0x80,
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            EventType::Snapshot => "snapshot",
            EventType::Migrate => "migrate",
            EventType::Shutdown => "shutdown",
            EventType::Reconfig => "reconfig",
            EventType::IpAddress => "ip-address",
            EventType::User => "user",
            EventType::NewParam => "new-param",
            EventType::System => "system",
        }
    }

    /// Parse a name (any case, `_` for `-`, an optional `VMAPI_EVENT_TYPE_` prefix as in
    /// Oracle's headers) or a single-bit mask value (`0x10`, `16`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        let norm = norm.strip_prefix("vmapi-event-type-").unwrap_or(&norm);
        let by_number = norm
            .strip_prefix("0x")
            .map(|h| u32::from_str_radix(h, 16))
            .unwrap_or_else(|| norm.parse())
            .ok();
        EVENT_TYPES
            .iter()
            .copied()
            .find(|t| {
                t.name() == norm
                    || t.name().replace('-', "") == norm.replace('-', "")
                    || by_number == Some(t.bit())
            })
            .ok_or_else(|| {
                let names: Vec<&str> = EVENT_TYPES.iter().map(|t| t.name()).collect();
                format!("unknown event '{s}': known events are {}", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_bits() {
        for t in EVENT_TYPES {
            assert_eq!(EventType::parse(t.name()), Ok(t));
            assert_eq!(EventType::parse(&t.bit().to_string()), Ok(t));
        }
        assert_eq!(EventType::parse("IP_ADDRESS"), Ok(EventType::IpAddress));
        assert_eq!(EventType::parse("ipaddress"), Ok(EventType::IpAddress));
        assert_eq!(
            EventType::parse("VMAPI_EVENT_TYPE_SHUTDOWN"),
            Ok(EventType::Shutdown)
        );
        assert_eq!(EventType::parse("0x40"), Ok(EventType::NewParam));
        let e = EventType::parse("reboot").unwrap_err();
        assert!(
            e.contains("unknown event 'reboot'") && e.contains("shutdown"),
            "{e}"
        );
        assert!(EventType::parse("3").is_err());
    }
}
