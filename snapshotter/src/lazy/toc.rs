//! What the two TOC formats share: entry type names, RFC 3339 times, a sha256.

use std::io;

use kiln_oci::{Digest, Sha256Writer};

/// The TOC name of a tar typeflag, or `None` for types the TOCs do not list.
pub fn type_name(kind: u8) -> Option<&'static str> {
    Some(match kind {
        b'0' | 0 | b'7' => "reg",
        b'1' => "hardlink",
        b'2' => "symlink",
        b'3' => "char",
        b'4' => "block",
        b'5' => "dir",
        b'6' => "fifo",
        _ => return None,
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (what Go's time marshals for a UTC time
/// with whole seconds).
pub fn rfc3339(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// A running sha256.
pub struct Hasher(Sha256Writer<io::Sink>);

impl Hasher {
    pub fn new() -> Self {
        Hasher(Sha256Writer::new(io::sink()))
    }
    pub fn update(&mut self, data: &[u8]) {
        use std::io::Write;
        // Writing into a sink cannot fail.
        let _ = self.0.write_all(data);
    }
    pub fn finish(self) -> Digest {
        self.0.finish().1
    }
}

/// Where a regular file's content is, chunk by chunk: the sha256 of the whole file
/// and of the current chunk, bytes done in all and in the chunk. Both TOC writers
/// cut content every [`super::CHUNK`] bytes.
pub struct ChunkCursor {
    pub whole: Hasher,
    pub chunk: Hasher,
    pub done: u64,
    pub in_chunk: u64,
}

impl ChunkCursor {
    pub fn new() -> Self {
        ChunkCursor { whole: Hasher::new(), chunk: Hasher::new(), done: 0, in_chunk: 0 }
    }

    /// Whether the current chunk is full (a new one starts before more content).
    pub fn full(&self) -> bool {
        self.in_chunk == super::CHUNK
    }

    /// Takes as much of `data` as fits in the current chunk; returns how much.
    pub fn take(&mut self, data: &[u8]) -> usize {
        let n = (super::CHUNK - self.in_chunk).min(data.len() as u64) as usize;
        self.whole.update(&data[..n]);
        self.chunk.update(&data[..n]);
        self.done += n as u64;
        self.in_chunk += n as u64;
        n
    }

    /// The digest of the chunk just ended; the next one starts empty.
    pub fn end_chunk(&mut self) -> kiln_oci::Digest {
        self.in_chunk = 0;
        std::mem::replace(&mut self.chunk, Hasher::new()).finish()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_matches_known_times() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_566_297_043), "2019-08-20T10:30:43Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
