//! A minimal QGA client over a unix socket: one request, one reply line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// A connection to an agent.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    line: Vec<u8>,
}

impl Client {
    /// Connects once.
    pub fn connect(path: &Path) -> anyhow::Result<Self> {
        let s = UnixStream::connect(path).with_context(|| format!("connect {}", path.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let writer = s.try_clone()?;
        Ok(Self {
            reader: BufReader::with_capacity(1 << 16, s),
            writer,
            line: Vec::with_capacity(4096),
        })
    }

    /// A second handle on the socket for a writer thread.
    pub fn writer(&self) -> anyhow::Result<UnixStream> {
        Ok(self.writer.try_clone()?)
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.writer.write_all(bytes)?;
        Ok(())
    }

    /// Reads one reply line (without its newline); fails at EOF.
    pub fn read_line(&mut self) -> anyhow::Result<&[u8]> {
        self.line.clear();
        let n = self.reader.read_until(b'\n', &mut self.line)?;
        if n == 0 || self.line.last() != Some(&b'\n') {
            bail!("the agent closed the connection");
        }
        self.line.pop();
        Ok(&self.line)
    }

    /// Sends one request and reads its reply line.
    pub fn round_trip(&mut self, req: &[u8]) -> anyhow::Result<&[u8]> {
        self.send(req)?;
        self.read_line()
    }

    /// Runs a command; its `return` value, or the error as text.
    pub fn call(&mut self, cmd: &str, args: Option<Value>) -> anyhow::Result<Value> {
        let mut req = serde_json::json!({ "execute": cmd });
        if let Some(a) = args {
            req["arguments"] = a;
        }
        let mut bytes = serde_json::to_vec(&req)?;
        bytes.push(b'\n');
        let line = self.round_trip(&bytes)?;
        let mut reply: Value = serde_json::from_slice(line)
            .with_context(|| format!("reply to {cmd}: {}", String::from_utf8_lossy(line)))?;
        if let Some(v) = reply.get_mut("return") {
            return Ok(v.take());
        }
        bail!("{cmd} failed: {reply}")
    }
}

/// One request line.
pub fn request(cmd: &str) -> Vec<u8> {
    format!("{{\"execute\":\"{cmd}\"}}\n").into_bytes()
}
