//! Logs go to stderr: under systemd that is the journal, and each line then starts with its
//! syslog priority (`<3>` error ... `<7>` debug), which journald turns into the entry's level.
//! Lines are held in memory while filesystems are frozen (the log gate). The filter comes from
//! `--log-level`, else `$GUESTD_LOG`, else the configuration file (and changes with it on a
//! reload), else `info`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use guestd_core::actions::loggate::LogGate;

static HANDLE: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
/// The command line or the environment chose the filter: the configuration does not override it.
static FIXED: AtomicBool = AtomicBool::new(false);

const DEFAULT: &str = "info";

/// Prefixes each line with its syslog priority, for journald.
struct Priority<F>(F);

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let p = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{p}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

/// True when stderr is the journal's stream (systemd sets `JOURNAL_STREAM=DEV:INODE`).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Install the subscriber. `cli` is `--log-level`.
pub fn init(cli: Option<&str>) {
    let chosen = cli
        .map(str::to_owned)
        .or_else(|| std::env::var("GUESTD_LOG").ok().filter(|s| !s.is_empty()));
    FIXED.store(chosen.is_some(), Ordering::SeqCst);
    let filter = crate::config::log_filter(chosen.as_deref().unwrap_or(DEFAULT))
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT));
    let (filter, handle) = reload::Layer::new(filter);
    let _ = HANDLE.set(handle);
    // Held in memory while filesystems are frozen, written after the thaw.
    let writer = || LogGate;
    let installed = if stderr_is_journal() {
        let format = tracing_subscriber::fmt::format()
            .with_target(false)
            .with_ansi(false)
            .without_time();
        tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(false)
                    .event_format(Priority(format)),
            )
            .try_init()
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(ansi)
                    .with_target(false),
            )
            .try_init()
    };
    let _ = installed;
}

/// Apply the configuration's level (on start and on every reload), unless the command line or
/// the environment chose one. `None` goes back to the default.
pub fn apply_config_level(level: Option<&str>) {
    if FIXED.load(Ordering::SeqCst) {
        return;
    }
    let Some(handle) = HANDLE.get() else {
        return;
    };
    let filter = crate::config::log_filter(level.unwrap_or(DEFAULT))
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT));
    if let Err(e) = handle.reload(filter) {
        tracing::warn!(error = %e, "cannot change the log level");
    }
}
