//! Containers of a local Docker-API engine (Docker, or Podman's Docker-compatible socket):
//! `GET /containers/json?all=true` over its unix socket, as the old oVirt agent asked.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use guestd_core::Paths;
use guestd_core::contract::FactError;
use guestd_core::model::Container;
use serde_json::Value;

/// Where engines listen, in the order tried.
pub const SOCKETS: &[&str] = &["run/docker.sock", "var/run/docker.sock"];

/// Longest reply accepted (a few thousand containers).
const MAX_REPLY: u64 = 8 << 20;

/// The containers, running or not. No engine socket, or nobody listening on it, is no
/// containers rather than an error: most guests have no container engine.
pub fn read(paths: &Paths) -> Result<Vec<Container>, FactError> {
    let Some(sock) = SOCKETS.iter().map(|s| paths.join(s)).find(|p| p.exists()) else {
        return Ok(Vec::new());
    };
    let what = sock.display().to_string();
    let io = |source| FactError::Io {
        path: what.clone(),
        source,
    };
    let mut stream = match UnixStream::connect(&sock) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(io(e)),
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(io)?;
    stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .map_err(io)?;
    // HTTP/1.0: the engine closes the connection after the reply, so no keep-alive to handle.
    stream
        .write_all(b"GET /containers/json?all=true HTTP/1.0\r\nHost: docker\r\n\r\n")
        .map_err(io)?;
    let mut raw = Vec::new();
    stream.take(MAX_REPLY).read_to_end(&mut raw).map_err(io)?;
    parse_response(&raw).map_err(|reason| FactError::Parse { path: what, reason })
}

/// Parse the engine's HTTP reply into containers.
pub fn parse_response(raw: &[u8]) -> Result<Vec<Container>, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of the HTTP header")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "header is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(format!("engine answered '{status}'"));
    }
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = &raw[split + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    let list: Value = serde_json::from_slice(&body).map_err(|e| format!("bad JSON: {e}"))?;
    let list = list.as_array().ok_or("reply is not a list")?;
    Ok(list.iter().filter_map(container).collect())
}

fn container(v: &Value) -> Option<Container> {
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let id = s("Id");
    if id.is_empty() {
        return None;
    }
    Some(Container {
        id,
        names: v
            .get("Names")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        image: s("Image"),
        command: s("Command"),
        status: s("Status"),
    })
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&body[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"[{"Id":"9c1e04b2aa70f00d","Names":["/cache"],"Image":"redis:7","ImageID":"sha256:1","Command":"docker-entrypoint.sh redis-server","Created":1700000000,"State":"running","Status":"Up 3 days","Ports":[],"Labels":{}},{"Id":"","Names":[]}]"#;

    #[test]
    fn plain_and_chunked_replies() {
        let plain = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nApi-Version: 1.43\r\n\r\n{LIST}"
        );
        let want = vec![Container {
            id: "9c1e04b2aa70f00d".into(),
            names: vec!["/cache".into()],
            image: "redis:7".into(),
            command: "docker-entrypoint.sh redis-server".into(),
            status: "Up 3 days".into(),
        }];
        assert_eq!(parse_response(plain.as_bytes()).unwrap(), want);
        let (a, b) = LIST.split_at(40);
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        );
        assert_eq!(parse_response(chunked.as_bytes()).unwrap(), want);
        assert_eq!(
            parse_response(b"HTTP/1.0 200 OK\r\n\r\n[]").unwrap(),
            vec![]
        );
    }

    #[test]
    fn errors_are_reasons() {
        assert!(parse_response(b"HTTP/1.0 500 Internal Server Error\r\n\r\n{}").is_err());
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n").is_err());
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n\r\n{\"a\":1}").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }

    #[test]
    fn no_engine_is_no_containers() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(&Paths::under(d.path())).unwrap(), vec![]);
        // A stale socket file with nobody listening.
        let p = d.path().join("run");
        std::fs::create_dir_all(&p).unwrap();
        drop(std::os::unix::net::UnixListener::bind(p.join("docker.sock")).unwrap());
        assert_eq!(read(&Paths::under(d.path())).unwrap(), vec![]);
    }
}
