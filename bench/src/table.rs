//! The result table: one row per measure, guestd beside qemu-ga, their ratio and the target.

use std::fmt::Write as _;
use std::time::Duration;

/// A measured value.
#[derive(Clone, Copy, Debug)]
pub enum Value {
    Bytes(u64),
    Time(Duration),
    /// Requests per second.
    Rate(f64),
    /// Wake-ups per second.
    PerSec(f64),
    /// A plain number.
    Count(u64),
}

impl Value {
    fn num(self) -> f64 {
        match self {
            Self::Bytes(b) => b as f64,
            Self::Time(d) => d.as_secs_f64(),
            Self::Rate(r) | Self::PerSec(r) => r,
            Self::Count(n) => n as f64,
        }
    }

    fn show(self) -> String {
        match self {
            Self::Bytes(b) if b >= 1 << 20 => {
                format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20))
            }
            Self::Bytes(b) => format!("{:.0} KiB", b as f64 / 1024.0),
            Self::Time(d) if d >= Duration::from_millis(10) => {
                format!("{:.1} ms", d.as_secs_f64() * 1e3)
            }
            Self::Time(d) => format!("{:.0} µs", d.as_secs_f64() * 1e6),
            Self::Rate(r) => format!("{r:.0} req/s"),
            Self::PerSec(r) => format!("{r:.2}/s"),
            Self::Count(n) => n.to_string(),
        }
    }
}

/// What a row must reach.
#[derive(Clone, Debug)]
pub enum Target {
    /// guestd / qemu-ga at most this.
    RatioAtMost(f64),
    /// guestd / qemu-ga at least this.
    RatioAtLeast(f64),
    /// guestd's value at most this (absolute), described.
    AtMost(Value, String),
    /// No target: shown for information.
    None,
}

/// One line of the table.
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub guestd: Value,
    pub qemu_ga: Option<Value>,
    pub target: Target,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        let q = self.qemu_ga?.num();
        (q > 0.0).then(|| self.guestd.num() / q)
    }

    /// `Some(true)` met, `Some(false)` missed, `None` no target.
    pub fn met(&self) -> Option<bool> {
        match &self.target {
            Target::RatioAtMost(t) => self.ratio().map(|r| r <= *t),
            Target::RatioAtLeast(t) => self.ratio().map(|r| r >= *t),
            Target::AtMost(v, _) => Some(self.guestd.num() <= v.num()),
            Target::None => None,
        }
    }

    fn target_text(&self) -> String {
        match &self.target {
            Target::RatioAtMost(t) => format!("≤ {t}×"),
            Target::RatioAtLeast(t) => format!("≥ {t}×"),
            Target::AtMost(_, what) => what.clone(),
            Target::None => String::new(),
        }
    }
}

/// The table as Markdown.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("| measure | guestd | qemu-ga | guestd / qemu-ga | target | |\n");
    s.push_str("|---|---:|---:|---:|---|---|\n");
    for r in rows {
        let ratio = r.ratio().map(|x| format!("{x:.2}")).unwrap_or_default();
        let met = match r.met() {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            r.name,
            r.guestd.show(),
            r.qemu_ga.map(Value::show).unwrap_or_else(|| "–".into()),
            ratio,
            r.target_text(),
            met
        );
    }
    s
}
