//! `sha256:<hex>` content digests.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    Invalid(String),
}

/// A sha256 content digest. Only sha256 is accepted: it is what every registry and
/// OCI layout we meet uses, and refusing the rest keeps path building safe
/// (the hex part is validated, so it can be used as a file name).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    pub fn from_sha256_bytes(bytes: &[u8]) -> Self {
        Digest { hex: hex::encode(bytes) }
    }

    /// Digest of a byte slice.
    pub fn of(data: &[u8]) -> Self {
        Self::from_sha256_bytes(&Sha256::digest(data))
    }

    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    /// The 64 hex digits, safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// First 12 hex digits, for progress output.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| DigestError::Invalid(s.to_string()))?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::Invalid(s.to_string()));
        }
        Ok(Digest { hex: hex.to_string() })
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A writer that hashes and counts everything passing through it on its way to `inner`.
/// Used to get a layer's diffID (uncompressed) and digest (compressed) in one pass.
pub struct Sha256Writer<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Sha256Writer<W> {
    pub fn new(inner: W) -> Self {
        Sha256Writer { inner, hasher: Sha256::new(), len: 0 }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Returns the inner writer, the digest and the byte count of what was written.
    pub fn finish(self) -> (W, Digest, u64) {
        let d = Digest::from_sha256_bytes(&self.hasher.finalize());
        (self.inner, d, self.len)
    }
}

impl<W: Write> Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts everything read through it from `inner`: a
/// digest checked while streaming (a layer's diffID, a blob read once).
pub struct Sha256Reader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> Sha256Reader<R> {
    pub fn new(inner: R) -> Self {
        Sha256Reader { inner, hasher: Sha256::new(), len: 0 }
    }

    /// Returns the inner reader, the digest and the byte count of what was read.
    pub fn finish(self) -> (R, Digest, u64) {
        let d = Digest::from_sha256_bytes(&self.hasher.finalize());
        (self.inner, d, self.len)
    }
}

impl<R: Read> Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// [`Sha256Reader`] with the hashing on a thread of its own: for a long stream read
/// by a thread with other work per byte (a layer's diffID while the layer is
/// inflated and unpacked), so that the two use two cores. What is read is copied
/// into a few recycled 256 KiB buffers, at most `IN_FLIGHT` of them waiting for the
/// hasher. Dropped without [`finish`](Self::finish), the thread ends on its own.
pub struct BackgroundSha256Reader<R> {
    inner: R,
    buf: Vec<u8>,
    len: u64,
    to_hasher: std::sync::mpsc::SyncSender<Vec<u8>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    hasher: std::thread::JoinHandle<Sha256>,
}

impl<R: Read> BackgroundSha256Reader<R> {
    const CHUNK: usize = 256 * 1024;
    const IN_FLIGHT: usize = 4;

    pub fn new(inner: R) -> io::Result<Self> {
        let (to_hasher, work) = std::sync::mpsc::sync_channel::<Vec<u8>>(Self::IN_FLIGHT);
        let (give_back, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        let hasher = std::thread::Builder::new().name("kiln-sha256".into()).spawn(move || {
            let mut h = Sha256::new();
            for mut b in work {
                h.update(&b);
                b.clear();
                let _ = give_back.send(b);
            }
            h
        })?;
        Ok(BackgroundSha256Reader { inner, buf: Vec::with_capacity(Self::CHUNK), len: 0, to_hasher, spare, hasher })
    }

    fn send(&mut self) {
        let next = self.spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(Self::CHUNK));
        // The hasher stops only when the sender goes: a failed send means it
        // panicked, which finish() reports.
        let _ = self.to_hasher.send(std::mem::replace(&mut self.buf, next));
    }

    /// The inner reader, the digest and the byte count of what was read.
    pub fn finish(mut self) -> io::Result<(R, Digest, u64)> {
        if !self.buf.is_empty() {
            self.send();
        }
        let BackgroundSha256Reader { inner, to_hasher, hasher, len, .. } = self;
        drop(to_hasher);
        let h = hasher.join().map_err(|_| io::Error::other("the sha256 thread panicked"))?;
        Ok((inner, Digest::from_sha256_bytes(&h.finalize()), len))
    }
}

impl<R: Read> Read for BackgroundSha256Reader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.buf.extend_from_slice(&out[..n]);
        self.len += n as u64;
        if self.buf.len() >= Self::CHUNK {
            self.send();
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in ["", "sha256:", "md5:abc", "sha256:../../etc/passwd", &format!("sha256:{}", "A".repeat(64))] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn writer_counts_and_hashes() {
        let mut w = Sha256Writer::new(Vec::new());
        w.write_all(b"hello").unwrap();
        let (inner, d, n) = w.finish();
        assert_eq!(inner, b"hello");
        assert_eq!(n, 5);
        assert_eq!(d, Digest::of(b"hello"));
    }

    #[test]
    fn background_reader_hashes_what_was_read_in_order() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for step in [1usize, 511, 65536, 1 << 20] {
            let mut r = BackgroundSha256Reader::new(&data[..]).unwrap();
            let mut seen = Vec::new();
            let mut buf = vec![0u8; step];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                if step == 1 && seen.len() > 300_000 {
                    break; // stopped early: the digest is of what was read
                }
            }
            let (_, d, n) = r.finish().unwrap();
            assert_eq!(n as usize, seen.len(), "step {step}");
            assert_eq!(d, Digest::of(&seen), "step {step}");
        }
    }
}
