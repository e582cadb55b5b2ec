//! ovmd's own option grammar, as getopt_long parses it: short options clustered (`-lx`),
//! arguments attached or separate (`-pk=v`, `-p k=v`), long options with `=` or a separate
//! argument (`--set-param=k=v`, `--set-param k=v`), and unique prefixes of long options
//! (`--list`). clap cannot express the original's exact forms, hence this small parser.

use std::ffi::OsString;
use std::path::PathBuf;

/// One thing to do, in command-line order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `-p key=value`: send to the manager and keep.
    Set(String),
    /// `-g KEY`.
    Get(String),
    /// `-r KEY`: forget locally.
    Delete(String),
    /// `-x`: forget everything locally.
    DeleteAll,
    /// `-l`.
    List,
    /// `-e EVENT`.
    Event(String),
    /// `-s SCRIPT`.
    Script(String),
    /// `--enable-initial-config`: arm first-boot configuration for the next boot.
    EnableInitialConfig,
}

/// Everything on the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Opts {
    /// Actions, in order; none means "run the daemon".
    pub ops: Vec<Op>,
    /// `-d`: 0 off, 1 stderr, 2 syslog.
    pub debug: Option<u8>,
    /// `-f`.
    pub pid_file: Option<PathBuf>,
    /// `-t`, seconds.
    pub period: Option<u64>,
    /// `-v`.
    pub version: bool,
    /// `-h`.
    pub help: bool,
    /// guestd: the parameter store's directory.
    pub store: Option<PathBuf>,
    /// guestd: the daemon's control socket.
    pub socket: Option<PathBuf>,
    /// guestd: the xenstore endpoint (socket or device).
    pub xenstore: Option<PathBuf>,
    /// guestd: outbound chunk size.
    pub chunk_size: Option<usize>,
    /// guestd: never ask a daemon, work on the store directly.
    pub local: bool,
    /// guestd: the root the actions (cleanup, first-boot configuration) work on.
    pub root: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Id {
    Set,
    Get,
    Delete,
    DeleteAll,
    List,
    Event,
    Script,
    Debug,
    PidFile,
    Period,
    Version,
    Help,
    Store,
    Socket,
    Xenstore,
    ChunkSize,
    Local,
    Root,
    EnableInitialConfig,
}

const LONG: &[(&str, bool, Id)] = &[
    ("set-param", true, Id::Set),
    ("get-param", true, Id::Get),
    ("delete-param", true, Id::Delete),
    ("delete-params", false, Id::DeleteAll),
    ("list-params", false, Id::List),
    ("event", true, Id::Event),
    ("script", true, Id::Script),
    ("debug", true, Id::Debug),
    ("pid-file", true, Id::PidFile),
    ("time-period", true, Id::Period),
    ("version", false, Id::Version),
    ("help", false, Id::Help),
    ("store", true, Id::Store),
    ("control-socket", true, Id::Socket),
    ("xenstore", true, Id::Xenstore),
    ("chunk-size", true, Id::ChunkSize),
    ("local", false, Id::Local),
    ("root", true, Id::Root),
    ("enable-initial-config", false, Id::EnableInitialConfig),
];

fn short(c: char) -> Option<(bool, Id)> {
    Some(match c {
        'p' => (true, Id::Set),
        'g' => (true, Id::Get),
        'r' => (true, Id::Delete),
        'x' => (false, Id::DeleteAll),
        'l' => (false, Id::List),
        'e' => (true, Id::Event),
        's' => (true, Id::Script),
        'd' => (true, Id::Debug),
        'f' => (true, Id::PidFile),
        't' => (true, Id::Period),
        'v' => (false, Id::Version),
        'h' => (false, Id::Help),
        _ => return None,
    })
}

fn long(name: &str) -> Result<(&'static str, bool, Id), String> {
    if let Some(&(n, a, id)) = LONG.iter().find(|(n, _, _)| *n == name) {
        return Ok((n, a, id));
    }
    let hits: Vec<_> = LONG
        .iter()
        .filter(|(n, _, _)| n.starts_with(name))
        .collect();
    match hits.as_slice() {
        [(n, a, id)] => Ok((n, *a, *id)),
        [] => Err(format!("unrecognized option '--{name}'")),
        many => Err(format!(
            "option '--{name}' is ambiguous; possibilities: {}",
            many.iter()
                .map(|(n, _, _)| format!("'--{n}'"))
                .collect::<Vec<_>>()
                .join(" ")
        )),
    }
}

/// Parse the arguments after the program name.
pub fn parse(args: &[OsString]) -> Result<Opts, String> {
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            a.to_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("argument {a:?} is not valid UTF-8"))
        })
        .collect::<Result<_, _>>()?;
    let mut o = Opts::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            if let Some(extra) = args.get(i) {
                return Err(format!("unexpected argument '{extra}'"));
            }
            break;
        }
        if let Some(body) = a.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (body, None),
            };
            let (full, takes, id) = long(name)?;
            let value = match (takes, inline) {
                (true, Some(v)) => Some(v),
                (true, None) => match args.get(i) {
                    Some(v) => {
                        i += 1;
                        Some(v.clone())
                    }
                    None => return Err(format!("option '--{full}' requires an argument")),
                },
                (false, Some(_)) => {
                    return Err(format!("option '--{full}' doesn't allow an argument"));
                }
                (false, None) => None,
            };
            apply(&mut o, id, value)?;
        } else if let Some(cluster) = a.strip_prefix('-').filter(|c| !c.is_empty()) {
            for (at, c) in cluster.char_indices() {
                let (takes, id) = short(c).ok_or_else(|| format!("invalid option -- '{c}'"))?;
                if !takes {
                    apply(&mut o, id, None)?;
                    continue;
                }
                let rest = &cluster[at + c.len_utf8()..];
                let value = if !rest.is_empty() {
                    rest.to_owned()
                } else {
                    match args.get(i) {
                        Some(v) => {
                            i += 1;
                            v.clone()
                        }
                        None => return Err(format!("option requires an argument -- '{c}'")),
                    }
                };
                apply(&mut o, id, Some(value))?;
                break;
            }
        } else {
            return Err(format!("unexpected argument '{a}'"));
        }
    }
    Ok(o)
}

fn apply(o: &mut Opts, id: Id, value: Option<String>) -> Result<(), String> {
    let v = value.unwrap_or_default();
    match id {
        Id::Set => o.ops.push(Op::Set(v)),
        Id::Get => o.ops.push(Op::Get(v)),
        Id::Delete => o.ops.push(Op::Delete(v)),
        Id::DeleteAll => o.ops.push(Op::DeleteAll),
        Id::List => o.ops.push(Op::List),
        Id::Event => o.ops.push(Op::Event(v)),
        Id::Script => o.ops.push(Op::Script(v)),
        Id::EnableInitialConfig => o.ops.push(Op::EnableInitialConfig),
        Id::Debug => {
            o.debug = Some(match v.trim() {
                "0" => 0,
                "1" => 1,
                "2" => 2,
                _ => return Err(format!("invalid debug level '{v}': expected 0, 1 or 2")),
            })
        }
        Id::PidFile => {
            if v.is_empty() {
                return Err("empty pid file name".into());
            }
            o.pid_file = Some(PathBuf::from(v));
        }
        Id::Period => {
            o.period =
                Some(
                    v.trim().parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("invalid time period '{v}': expected seconds > 0")
                    })?,
                )
        }
        Id::Version => o.version = true,
        Id::Help => o.help = true,
        Id::Store => o.store = Some(PathBuf::from(v)),
        Id::Socket => o.socket = Some(PathBuf::from(v)),
        Id::Xenstore => o.xenstore = Some(PathBuf::from(v)),
        Id::ChunkSize => {
            o.chunk_size = Some(
                v.trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=guestd_protocols::ovmd::layout::CHUNK).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "invalid chunk size '{v}': expected 1 to {}",
                            guestd_protocols::ovmd::layout::CHUNK
                        )
                    })?,
            )
        }
        Id::Local => o.local = true,
        Id::Root => o.root = Some(PathBuf::from(v)),
    }
    Ok(())
}

/// `ovmd --help`.
pub fn usage(prog: &str) -> String {
    format!(
        "Usage: {prog} [OPTION]...
Oracle VM guest messaging (guestd's drop-in ovmd). Without an action option it runs the
daemon that exchanges key/value messages with Oracle VM Manager over xenstore.

Actions:
  -p, --set-param=KEY=VALUE   send KEY=VALUE to the manager and keep it in the list
  -g, --get-param=KEY         print the value of KEY (exit 1 if there is none)
  -r, --delete-param=KEY      forget KEY locally (xenstore is not touched)
  -x, --delete-params         forget every parameter locally
  -l, --list-params           print every parameter, received and sent, one JSON
                              object per line: {{\"key\":\"value\"}}
  -e, --event=EVENT           post EVENT to the running daemon (snapshot, migrate,
                              shutdown, reconfig, ip-address, user, new-param, system)
  -s, --script=SCRIPT         run SCRIPT; 'cleanup' forgets every parameter and removes
                              instance state so the VM can become a template;
                              'configure' applies the received configuration now
      --enable-initial-config arm first-boot configuration for the next boot

Daemon options:
  -d, --debug=LEVEL           0 no log, 1 log to stderr, 2 log to syslog (default)
  -f, --pid-file=FILE         write the daemon's pid to FILE
  -t, --time-period=SECS      daemon period in seconds (default 10)

guestd options:
      --store=DIR             parameter store (default {store}, or $GUESTD_OVMD_STORE)
      --control-socket=PATH   the daemon's local socket (default {socket},
                              or $GUESTD_OVMD_SOCKET)
      --xenstore=PATH         xenstore socket or device (default: $XENSTORED_PATH, then
                              /dev/xen/xenbus, /proc/xen/xenbus, /run/xenstored/socket)
      --chunk-size=N          outbound chunk size, 1 to 2048 (default 2048)
      --local                 work on the store directly even when a daemon runs
      --root=DIR              act on the system under DIR (default /)

  -v, --version               print the version and exit
  -h, --help                  print this help and exit

Exit status: 0 on success, 1 on an error (with a message on stderr), 2 on a usage error.
",
        store = guestd_core::params::ParamStore::DEFAULT_DIR,
        socket = super::DEFAULT_SOCKET,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Opts, String> {
        parse(&args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn every_short_and_long_form() {
        for args in [
            &["-p", "k=v"][..],
            &["-pk=v"],
            &["--set-param=k=v"],
            &["--set-param", "k=v"],
            &["--set=k=v"],
        ] {
            assert_eq!(p(args).unwrap().ops, [Op::Set("k=v".into())], "{args:?}");
        }
        assert_eq!(p(&["-g", "k"]).unwrap().ops, [Op::Get("k".into())]);
        assert_eq!(p(&["--get-param=k"]).unwrap().ops, [Op::Get("k".into())]);
        assert_eq!(p(&["-r", "k"]).unwrap().ops, [Op::Delete("k".into())]);
        assert_eq!(
            p(&["--delete-param", "k"]).unwrap().ops,
            [Op::Delete("k".into())]
        );
        assert_eq!(p(&["-x"]).unwrap().ops, [Op::DeleteAll]);
        assert_eq!(p(&["--delete-params"]).unwrap().ops, [Op::DeleteAll]);
        assert_eq!(p(&["-l"]).unwrap().ops, [Op::List]);
        assert_eq!(p(&["--list-params"]).unwrap().ops, [Op::List]);
        assert_eq!(p(&["--list"]).unwrap().ops, [Op::List]);
        assert_eq!(
            p(&["-e", "shutdown"]).unwrap().ops,
            [Op::Event("shutdown".into())]
        );
        assert_eq!(
            p(&["--event=user"]).unwrap().ops,
            [Op::Event("user".into())]
        );
        assert_eq!(
            p(&["-s", "cleanup"]).unwrap().ops,
            [Op::Script("cleanup".into())]
        );
        assert_eq!(
            p(&["--script=cleanup"]).unwrap().ops,
            [Op::Script("cleanup".into())]
        );
        let o = p(&["-d", "1", "-f", "/run/ovmd.pid", "-t", "30"]).unwrap();
        assert_eq!(
            (o.debug, o.pid_file.as_deref(), o.period),
            (
                Some(1),
                Some(std::path::Path::new("/run/ovmd.pid")),
                Some(30)
            )
        );
        let o = p(&["--debug=0", "--pid-file=/x", "--time-period=5"]).unwrap();
        assert_eq!((o.debug, o.period), (Some(0), Some(5)));
        assert!(o.ops.is_empty());
        assert!(p(&["-v"]).unwrap().version);
        assert!(p(&["--version"]).unwrap().version);
        assert!(p(&["-h"]).unwrap().help);
        assert!(p(&["--help"]).unwrap().help);
        assert_eq!(
            p(&["--enable-initial-config"]).unwrap().ops,
            [Op::EnableInitialConfig]
        );
    }

    #[test]
    fn clusters_and_order() {
        assert_eq!(p(&["-lx"]).unwrap().ops, [Op::List, Op::DeleteAll]);
        assert_eq!(p(&["-lgk"]).unwrap().ops, [Op::List, Op::Get("k".into())]);
        assert_eq!(
            p(&["-p", "a=1", "-p", "b=2", "-l"]).unwrap().ops,
            [Op::Set("a=1".into()), Op::Set("b=2".into()), Op::List]
        );
    }

    #[test]
    fn errors() {
        assert!(p(&["-q"]).unwrap_err().contains("invalid option -- 'q'"));
        assert!(p(&["-p"]).unwrap_err().contains("requires an argument"));
        assert!(
            p(&["--get-param"])
                .unwrap_err()
                .contains("requires an argument")
        );
        assert!(p(&["--bogus"]).unwrap_err().contains("unrecognized option"));
        assert!(p(&["--delete"]).unwrap_err().contains("ambiguous"));
        assert!(p(&["--list=x"]).unwrap_err().contains("doesn't allow"));
        assert!(p(&["-d", "3"]).is_err());
        assert!(p(&["-t", "0"]).is_err());
        assert!(p(&["stray"]).unwrap_err().contains("unexpected argument"));
        assert!(p(&["--chunk-size=4096"]).is_err());
        assert_eq!(p(&["--chunk-size=1024"]).unwrap().chunk_size, Some(1024));
    }
}
