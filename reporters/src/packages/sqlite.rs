//! Just enough of the SQLite file format (<https://www.sqlite.org/fileformat2.html>) to walk
//! one table's rows read-only: the rpm database of RHEL 9 and Fedora 33+ (`rpmdb.sqlite`) is a
//! `Packages (hnum INTEGER PRIMARY KEY, blob BLOB)` table. Pages are read on demand with
//! `pread`, and a row's payload is fetched only as far as the caller needs, so a database of
//! hundreds of megabytes costs a few page reads per package.
//!
//! Every page number, offset and length from the file is checked; a corrupt file is an
//! error, never a panic or a loop.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// What went wrong, for the caller's error message.
pub type Error = String;

/// An open database file.
#[derive(Debug)]
pub struct Db {
    file: File,
    page_size: usize,
    usable: usize,
    pages: u64,
}

/// One row's value in a column we read.
#[derive(Debug, PartialEq, Eq)]
pub enum Value {
    /// NULL (also an `INTEGER PRIMARY KEY`, which lives in the rowid).
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
    /// A blob: where its bytes are, to be fetched with [`Payload::read`].
    Blob {
        /// Offset in the payload.
        at: usize,
        /// Length.
        len: usize,
    },
    /// A float or anything else we do not use.
    Other,
}

/// A row's payload: the bytes on its b-tree page and the overflow chain behind them.
#[derive(Debug)]
pub struct Payload {
    data: Vec<u8>,
    total: usize,
    next_overflow: u32,
}

impl Db {
    /// Opens `path` and checks its header.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let mut h = [0u8; 100];
        file.read_exact_at(&mut h, 0)
            .map_err(|e| format!("cannot read the header: {e}"))?;
        if &h[..16] != b"SQLite format 3\0" {
            return Err("not an SQLite database".into());
        }
        let page_size = match u16::from_be_bytes([h[16], h[17]]) {
            1 => 65_536,
            n if n >= 512 && n.is_power_of_two() => usize::from(n),
            _ => return Err("bad page size".into()),
        };
        let usable = page_size - usize::from(h[20]);
        if usable < 480 {
            return Err("bad reserved space".into());
        }
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        Ok(Self {
            file,
            page_size,
            usable,
            pages: len / page_size as u64,
        })
    }

    fn page(&self, n: u32) -> Result<Vec<u8>, Error> {
        if n == 0 || u64::from(n) > self.pages {
            return Err(format!("page {n} out of range"));
        }
        let mut buf = vec![0u8; self.page_size];
        self.file
            .read_exact_at(&mut buf, (u64::from(n) - 1) * self.page_size as u64)
            .map_err(|e| format!("cannot read page {n}: {e}"))?;
        Ok(buf)
    }

    /// The root page of table `name`, from the schema table on page 1.
    pub fn table_root(&self, name: &str) -> Result<u32, Error> {
        let mut found = None;
        self.scan(1, &mut |_, mut p| {
            let cols = self.record(&mut p, 5)?;
            if let [Value::Text(kind), Value::Text(n), _, Value::Int(root), ..] = cols.as_slice()
                && kind == "table"
                && n.eq_ignore_ascii_case(name)
            {
                found = u32::try_from(*root).ok();
            }
            Ok(())
        })?;
        found.ok_or_else(|| format!("no table {name}"))
    }

    /// Calls `row(rowid, payload)` for every row of the table b-tree rooted at `root`.
    pub fn scan(
        &self,
        root: u32,
        row: &mut dyn FnMut(i64, Payload) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut seen = HashSet::new();
        self.walk(root, 0, &mut seen, row)
    }

    fn walk(
        &self,
        n: u32,
        depth: u32,
        seen: &mut HashSet<u32>,
        row: &mut dyn FnMut(i64, Payload) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if depth > 32 || !seen.insert(n) {
            return Err("b-tree loop".into());
        }
        let page = self.page(n)?;
        let h = if n == 1 { 100 } else { 0 };
        let at = |i: usize| {
            page.get(i)
                .copied()
                .ok_or_else(|| format!("page {n} truncated"))
        };
        let be16 = |i: usize| -> Result<usize, Error> {
            Ok(usize::from(at(i)?) << 8 | usize::from(at(i + 1)?))
        };
        let kind = at(h)?;
        let cells = be16(h + 3)?;
        let (interior, ptrs) = match kind {
            0x05 => (true, h + 12),
            0x0d => (false, h + 8),
            _ => return Err(format!("page {n} is not a table b-tree page")),
        };
        for i in 0..cells {
            let off = be16(ptrs + 2 * i)?;
            let cell = page.get(off..).ok_or("cell out of page")?;
            if interior {
                let child = u32::from_be_bytes(
                    cell.get(..4)
                        .ok_or("short cell")?
                        .try_into()
                        .map_err(|_| "short cell")?,
                );
                self.walk(child, depth + 1, seen, row)?;
            } else {
                let (size, a) = varint(cell).ok_or("bad cell")?;
                let (rowid, b) = varint(&cell[a..]).ok_or("bad cell")?;
                let payload = self.payload(&cell[a + b..], size)?;
                row(rowid as i64, payload)?;
            }
        }
        if interior {
            let right = u32::from_be_bytes([at(h + 8)?, at(h + 9)?, at(h + 10)?, at(h + 11)?]);
            self.walk(right, depth + 1, seen, row)?;
        }
        Ok(())
    }

    fn payload(&self, cell: &[u8], size: u64) -> Result<Payload, Error> {
        let total = usize::try_from(size).map_err(|_| "payload too large")?;
        if total > 1 << 30 {
            return Err("payload too large".into());
        }
        let u = self.usable;
        let x = u - 35;
        let local = if total <= x {
            total
        } else {
            let m = ((u - 12) * 32 / 255) - 23;
            let k = m + ((total - m) % (u - 4));
            if k <= x { k } else { m }
        };
        let data = cell.get(..local).ok_or("payload past its page")?.to_vec();
        let next_overflow = if local < total {
            let p = cell.get(local..local + 4).ok_or("no overflow pointer")?;
            u32::from_be_bytes([p[0], p[1], p[2], p[3]])
        } else {
            0
        };
        Ok(Payload {
            data,
            total,
            next_overflow,
        })
    }

    /// Decodes the first `max_cols` columns of a record, fetching the header from overflow
    /// pages if needed (blobs are left where they are).
    pub fn record(&self, p: &mut Payload, max_cols: usize) -> Result<Vec<Value>, Error> {
        self.fill(p, 10)?;
        let (hlen, mut at) = varint(&p.data).ok_or("bad record header")?;
        let hlen = usize::try_from(hlen).map_err(|_| "bad record header")?;
        self.fill(p, hlen)?;
        let mut body = hlen;
        let mut out = Vec::new();
        while at < hlen && out.len() < max_cols {
            let (t, n) = varint(p.data.get(at..hlen).ok_or("bad record header")?)
                .ok_or("bad record header")?;
            at += n;
            let (len, v) = match t {
                0 => (0, Some(Value::Null)),
                1..=6 => {
                    let len = [0, 1, 2, 3, 4, 6, 8][t as usize];
                    self.fill(p, body + len)?;
                    let bytes = p.data.get(body..body + len).ok_or("record truncated")?;
                    let mut v: i64 = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
                        -1
                    } else {
                        0
                    };
                    for b in bytes {
                        v = (v << 8) | i64::from(*b);
                    }
                    (len, Some(Value::Int(v)))
                }
                7 => (8, Some(Value::Other)),
                8 => (0, Some(Value::Int(0))),
                9 => (0, Some(Value::Int(1))),
                t if t >= 12 && t % 2 == 0 => {
                    let len = usize::try_from((t - 12) / 2).map_err(|_| "blob too large")?;
                    (len, Some(Value::Blob { at: body, len }))
                }
                t if t >= 13 => {
                    let len = usize::try_from((t - 13) / 2).map_err(|_| "text too large")?;
                    self.fill(p, body + len)?;
                    let s = p.data.get(body..body + len).ok_or("record truncated")?;
                    (
                        len,
                        Some(Value::Text(String::from_utf8_lossy(s).into_owned())),
                    )
                }
                _ => (0, None),
            };
            body += len;
            out.push(v.unwrap_or(Value::Other));
        }
        Ok(out)
    }

    /// Makes sure the first `upto` bytes of the payload are loaded (as far as it goes).
    pub fn fill(&self, p: &mut Payload, upto: usize) -> Result<(), Error> {
        let upto = upto.min(p.total);
        let mut guard = 0usize;
        while p.data.len() < upto {
            if p.next_overflow == 0 {
                return Err("overflow chain ends early".into());
            }
            guard += 1;
            if guard as u64 > self.pages {
                return Err("overflow chain loops".into());
            }
            let page = self.page(p.next_overflow)?;
            p.next_overflow = u32::from_be_bytes([page[0], page[1], page[2], page[3]]);
            let want = (p.total - p.data.len()).min(self.usable - 4);
            p.data.extend_from_slice(&page[4..4 + want]);
        }
        Ok(())
    }
}

impl Payload {
    /// `len` bytes from `at`, loading overflow pages as needed.
    pub fn read<'a>(&'a mut self, db: &Db, at: usize, len: usize) -> Result<&'a [u8], Error> {
        let end = at.checked_add(len).ok_or("range overflow")?;
        if end > self.total {
            return Err("read past the payload".into());
        }
        db.fill(self, end)?;
        self.data
            .get(at..end)
            .ok_or_else(|| "read past the payload".into())
    }

    /// Total payload length.
    pub fn len(&self) -> usize {
        self.total
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// An SQLite varint: 1 to 9 bytes, big-endian, 7 bits per byte but 8 in the ninth.
pub fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let byte = *b.get(i)?;
        if i == 8 {
            return Some(((v << 8) | u64::from(byte), 9));
        }
        v = (v << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        assert_eq!(varint(&[0x05]), Some((5, 1)));
        assert_eq!(varint(&[0x81, 0x00]), Some((128, 2)));
        assert_eq!(varint(&[0xff; 9]), Some((u64::MAX, 9)));
        assert_eq!(varint(&[0x81]), None);
    }

    #[test]
    fn not_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        assert!(Db::open(&p).is_err());
        std::fs::write(&p, b"short").unwrap();
        assert!(Db::open(&p).is_err());
    }
}
