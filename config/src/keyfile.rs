//! qemu-ga's `/etc/qemu/qemu-ga.conf`: a GLib key file whose `[general]` group holds qemu-ga's
//! long option names (qga.md §5). Read so that an image configured for qemu-ga keeps its channel,
//! command lists, hook and state directory when guestd replaces qemu-ga. Options that do not
//! mean anything to guestd (`daemon`, `logfile`, `pidfile`) are accepted with a warning.

use std::path::{Path, PathBuf};

use crate::{
    DEFAULT_FSFREEZE_HOOK, Diagnostic, Layer, QgaLayer, qga_method_channel, split_rpcs,
    unknown_rpcs,
};

/// One `key=value` of the `[general]` group, with its line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    key: String,
    value: String,
    line: usize,
}

/// What a qemu-ga.conf gave.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Its values.
    pub layer: Layer,
    /// Errors and warnings.
    pub diagnostics: Vec<Diagnostic>,
}

fn diag(file: &Path, line: usize, msg: impl Into<String>) -> Diagnostic {
    Diagnostic {
        line: Some(line),
        ..Diagnostic::file(file, msg)
    }
}

/// GLib's value escapes: `\s \n \t \r \\`.
fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut it = raw.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('s') => out.push(' '),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            // List separators may be escaped inside list items.
            Some(c @ (';' | ',')) => out.push(c),
            Some(c) => return Err(format!("invalid escape sequence '\\{c}'")),
            None => return Err("value ends with a lone '\\'".into()),
        }
    }
    Ok(out)
}

/// The `[general]` entries, or the syntax errors.
fn entries(file: &Path, text: &str) -> (Vec<Entry>, Vec<Diagnostic>) {
    let mut out = Vec::new();
    let mut diags = Vec::new();
    let mut group: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            match rest.trim_end().strip_suffix(']') {
                Some(name) if !name.is_empty() && !name.contains(['[', ']']) => {
                    group = Some(name.to_owned());
                }
                _ => diags.push(diag(
                    file,
                    n,
                    format!("invalid group header '{}'", raw.trim()),
                )),
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            diags.push(diag(
                file,
                n,
                format!(
                    "'{}' is not a key=value pair, a [group] or a comment",
                    raw.trim()
                ),
            ));
            continue;
        };
        let key = key.trim_end();
        if key.is_empty() {
            diags.push(diag(file, n, "empty key"));
            continue;
        }
        let Some(g) = &group else {
            diags.push(diag(file, n, "key before the first [group]"));
            continue;
        };
        if g != "general" {
            continue;
        }
        match unescape(value.trim_start()) {
            Ok(v) => out.push(Entry {
                key: key.to_owned(),
                value: v,
                line: n,
            }),
            Err(e) => diags.push(diag(file, n, format!("{key}: {e}"))),
        }
    }
    (out, diags)
}

fn boolean(v: &str) -> Option<bool> {
    match v.trim() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// Parse the text of a qemu-ga.conf named `file`.
pub fn parse(file: &Path, text: &str) -> Parsed {
    let (entries, mut diags) = entries(file, text);
    let mut layer = Layer {
        source: file.display().to_string(),
        ..Layer::default()
    };
    let mut qga = QgaLayer::default();
    let (mut method, mut path) = (None, None);
    let mut method_line = 0;
    let (mut block_line, mut allow_line) = (None, None);
    let last = |key: &str| entries.iter().rev().find(|e| e.key == key);
    for e in &entries {
        let bad_bool = || {
            diag(
                file,
                e.line,
                format!("{}: '{}' is not true or false", e.key, e.value),
            )
        };
        match e.key.as_str() {
            "method" => {
                method = Some(e.value.trim().to_owned());
                method_line = e.line;
            }
            "path" => {
                path = Some(e.value.clone());
                if method_line == 0 {
                    method_line = e.line;
                }
            }
            "fsfreeze-hook" => {
                let v = e.value.trim();
                if v.is_empty() {
                    layer.hook = Some(Some(PathBuf::from(DEFAULT_FSFREEZE_HOOK)));
                } else if v.starts_with('/') {
                    layer.hook = Some(Some(PathBuf::from(v)));
                } else {
                    // qemu-ga would look it up from / after daemonizing, else from wherever it
                    // was started; guestd.toml refuses a relative hook too.
                    diags.push(diag(
                        file,
                        e.line,
                        format!("fsfreeze-hook: '{}' is not an absolute path", e.value),
                    ));
                }
            }
            "statedir" => layer.statedir = Some(PathBuf::from(e.value.trim())),
            "verbose" => match boolean(&e.value) {
                Some(true) => layer.log_level = Some("debug".into()),
                Some(false) => {}
                None => diags.push(bad_bool()),
            },
            "block-rpcs" | "blacklist" | "allow-rpcs" => {
                let list = split_rpcs([e.value.as_str()]);
                let unknown = unknown_rpcs(&list);
                if !unknown.is_empty() {
                    diags.push(
                        diag(
                            file,
                            e.line,
                            format!(
                                "{}: not QGA commands, ignored as qemu-ga does: {}",
                                e.key,
                                unknown.join(", ")
                            ),
                        )
                        .warning(),
                    );
                }
                let dst = if e.key == "allow-rpcs" {
                    allow_line = Some(e.line);
                    &mut qga.allow
                } else {
                    block_line = Some(e.line);
                    &mut qga.block
                };
                dst.get_or_insert_with(Vec::new).extend(list);
            }
            "daemon" | "retry-path" => match boolean(&e.value) {
                Some(true) if e.key == "daemon" => diags.push(
                    diag(
                        file,
                        e.line,
                        "daemon: ignored; guestd never forks (systemd runs it)",
                    )
                    .warning(),
                ),
                // guestd always reopens a failed channel.
                Some(_) => {}
                None => diags.push(bad_bool()),
            },
            "logfile" | "pidfile" => diags.push(
                diag(
                    file,
                    e.line,
                    format!(
                        "{}: ignored; guestd logs to stderr (the journal) and needs no pid file",
                        e.key
                    ),
                )
                .warning(),
            ),
            other => diags.push(
                diag(
                    file,
                    e.line,
                    format!("unknown qemu-ga option '{other}', ignored"),
                )
                .warning(),
            ),
        }
    }
    if let (Some(_), Some(a)) = (block_line, allow_line) {
        diags.push(diag(
            file,
            a,
            "block-rpcs and allow-rpcs cannot both be given (qemu-ga refuses this too)",
        ));
    }
    if method.is_some() || path.is_some() {
        match qga_method_channel(method.as_deref(), path.as_deref()) {
            Ok(c) => qga.channels = Some(vec![c]),
            Err(e) => diags.push(diag(file, method_line, e)),
        }
    }
    if let Some(e) = last("statedir")
        && !e.value.trim().starts_with('/')
    {
        diags.push(diag(
            file,
            e.line,
            format!("statedir: '{}' is not an absolute path", e.value),
        ));
    }
    layer.qga = qga;
    diags.sort_by_key(|d| d.line);
    Parsed {
        layer,
        diagnostics: diags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Severity;
    use guestd_transports::ChannelSpec;

    fn p(text: &str) -> Parsed {
        parse(Path::new("/etc/qemu/qemu-ga.conf"), text)
    }

    #[test]
    fn qemu_ga_options() {
        let r = p(
            "# qemu-ga\n[general]\nmethod = virtio-serial\npath=/dev/virtio-ports/org.qemu.guest_agent.0\nblock-rpcs=guest-exec;guest-file-open\nblacklist=guest-shutdown\nfsfreeze-hook=\nstatedir=/var/run\nverbose=true\nretry-path=false\n\n[other]\nx=y\n",
        );
        assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
        let l = r.layer;
        assert_eq!(
            l.qga.channels,
            Some(vec![ChannelSpec::Virtio("org.qemu.guest_agent.0".into())])
        );
        assert_eq!(
            l.qga.block,
            Some(vec![
                "guest-exec".into(),
                "guest-file-open".into(),
                "guest-shutdown".into()
            ])
        );
        assert_eq!(l.hook, Some(Some(PathBuf::from(DEFAULT_FSFREEZE_HOOK))));
        assert_eq!(l.statedir, Some(PathBuf::from("/var/run")));
        assert_eq!(l.log_level.as_deref(), Some("debug"));
    }

    #[test]
    fn syntax_errors_have_lines() {
        let r = p("[general]\nmethod=isa-serial\nthis line is wrong\npath=/x\\q\n");
        let e: Vec<String> = r.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("/etc/qemu/qemu-ga.conf:3: "), "{e:?}");
        assert!(e[1].starts_with("/etc/qemu/qemu-ga.conf:4: ") && e[1].contains("escape"));
        let r = p("method=x\n");
        assert!(r.diagnostics[0].to_string().contains(":1: key before"));
    }

    #[test]
    fn semantic_errors_and_warnings() {
        let r = p(
            "[general]\ndaemon=true\nmethod=carrier-pigeon\nverbose=maybe\nlogfile=/var/log/qga.log\nfrobnicate=1\nallow-rpcs=guest-ping\nblock-rpcs=guest-exec\n",
        );
        let errs: Vec<String> = r
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(ToString::to_string)
            .collect();
        let warns: Vec<String> = r
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .map(ToString::to_string)
            .collect();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs.iter().any(|e| e.contains(":4: verbose")));
        assert!(
            errs.iter()
                .any(|e| e.contains(":7: ") && e.contains("both"))
        );
        assert!(
            errs.iter()
                .any(|e| e.contains(":3: ") && e.contains("carrier-pigeon"))
        );
        assert_eq!(warns.len(), 3, "{warns:?}");
        let r = p("[general]\nfsfreeze-hook=fsfreeze-hook\n");
        assert!(r.diagnostics[0].to_string().contains(":2: fsfreeze-hook"));
        assert_eq!(r.layer.hook, None);
    }
}
