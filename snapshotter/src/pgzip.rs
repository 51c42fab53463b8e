//! Parallel gzip: one gzip member whose deflate stream is made of independently
//! compressed blocks, each primed with the 32 KiB before it (the scheme pigz uses).
//!
//! Why: a layer is written in one pass, and single-threaded deflate at level 6 ran
//! at ~40 MiB/s here, so a 250 MB COPY spent 6 s compressing on one core while the
//! other idled. Blocks are cut at fixed input offsets and never depend on timing or
//! on the number of workers, so the output is the same bytes on every machine
//! (reproducible builds), and any gzip reader decodes it.
//!
//! Blocks whose bytes look like noise (compressed or random data) are stored rather
//! than searched for matches; see [`incompressible`].
//!
//! Each block but the last ends with a sync flush (an empty stored block, so the
//! next block starts on a byte boundary and none is marked final); the last one
//! ends the stream. The CRC-32 and length of the trailer are computed here, on the
//! caller's thread, while the workers compress.

use std::collections::BTreeMap;
use std::io::{self, Write};

use flate2::{Compress, Compression, FlushCompress, Status};

/// Input bytes per block. Large enough that the per-block sync flush and reset
/// cost nothing measurable, small enough to keep two workers busy on small layers.
const BLOCK: usize = 128 * 1024;
/// Deflate's window: the dictionary carried from one block to the next.
const DICT: usize = 32 * 1024;

struct Job {
    seq: u64,
    data: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
}

type Done = (u64, io::Result<Vec<u8>>);

/// The compressing threads, each with its own deflate state.
type Pool = crate::workers::Workers<Job, Done>;

fn start_pool(n: usize, level: u32) -> Pool {
    Pool::start(n, n * 2, move || Deflaters::new(level), |c: &mut Deflaters, job: Job| {
        (job.seq, c.block(&job.data, &job.dict, job.last))
    })
}

/// Whether a block looks like noise to deflate: order-0 entropy within 0.01 bit of
/// 8 bits per byte (already compressed or encrypted data, random bytes). Huffman
/// coding cannot gain more than that 0.1 %, and deflate at level 6 crawls through
/// such data (~40 MiB/s here), so these blocks are stored. The test depends only on
/// the block's bytes: the output stays the same everywhere.
fn incompressible(data: &[u8]) -> bool {
    if data.len() < 16 * 1024 {
        return false;
    }
    let mut hist = [0u32; 256];
    for &b in data {
        hist[b as usize] += 1;
    }
    let n = data.len() as f64;
    let bits: f64 = hist.iter().filter(|&&c| c > 0).map(|&c| {
        let p = c as f64 / n;
        -p * p.log2()
    }).sum();
    bits > 7.99
}

/// A worker's compressor settings: the chosen level, or stored (level 0) for noise.
///
/// Each block gets a fresh deflate state. A reused one (`Compress::reset`) made the
/// output depend on which block the worker compressed before: four clean builds of
/// one layer under load gave four different (valid) gzip streams (issue 19), the
/// worker a block lands on being a matter of timing.
struct Deflaters {
    level: u32,
}

impl Deflaters {
    fn new(level: u32) -> Self {
        Deflaters { level }
    }

    fn block(&mut self, data: &[u8], dict: &[u8], last: bool) -> io::Result<Vec<u8>> {
        if incompressible(data) {
            deflate_block(&mut Compress::new(Compression::new(0), false), data, &[], last)
        } else {
            deflate_block(&mut Compress::new(Compression::new(self.level), false), data, dict, last)
        }
    }
}

/// Compress one block as a piece of a raw deflate stream.
fn deflate_block(c: &mut Compress, data: &[u8], dict: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let err = |e: flate2::CompressError| io::Error::other(format!("deflate: {e}"));
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(err)?;
    }
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    // Worst case for deflate is a little over the input (stored blocks); start there.
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 64);
    loop {
        let consumed = c.total_in() as usize;
        if out.len() == out.capacity() {
            out.reserve(BLOCK / 4);
        }
        let status = c.compress_vec(&data[consumed..], &mut out, flush).map_err(err)?;
        let all_in = c.total_in() as usize == data.len();
        match status {
            Status::StreamEnd => return Ok(out),
            // With room left over, the flush is complete.
            Status::Ok | Status::BufError if all_in && !last && out.len() < out.capacity() => return Ok(out),
            Status::Ok | Status::BufError => {}
        }
    }
}

/// A gzip writer that compresses on `workers` threads. `finish` must be called;
/// dropping it without is like dropping any unfinished encoder: a truncated stream.
pub struct ParGzEncoder<W: Write> {
    inner: W,
    level: u32,
    workers: usize,
    buf: Vec<u8>,
    dict: Vec<u8>,
    crc: crc32fast::Hasher,
    size: u64,
    header_written: bool,
    pool: Option<Pool>,
    next_seq: u64,
    next_out: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    /// Access points for random reads (SOCI's zinfo), when asked for.
    index: Option<Index>,
}

/// One access point: inflate raw deflate from `comp` (a byte boundary: every block
/// starts after a sync flush) with `window` as dictionary to get the stream's bytes
/// from `uncomp` on. What zran.c and SOCI's zinfo record, with no bits left over.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub comp: u64,
    pub uncomp: u64,
    /// The 32 KiB before `uncomp`, zeros in front when the stream has less.
    pub window: Vec<u8>,
}

/// The access points of a finished stream, at least one `span` of uncompressed
/// bytes apart (at block starts), and the sha256 of the compressed bytes of each
/// span (from its access point to the next one, the last to the end of the file).
#[derive(Debug, Clone, Default)]
pub struct Zinfo {
    pub span: u64,
    pub checkpoints: Vec<Checkpoint>,
    pub span_digests: Vec<kiln_oci::Digest>,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
}

struct Index {
    span: u64,
    last: Option<u64>,
    /// Blocks that start an access point: their uncompressed offset and window.
    due: BTreeMap<u64, (u64, Vec<u8>)>,
    zinfo: Zinfo,
    span_hash: Option<kiln_oci::Sha256Writer<io::Sink>>,
    written: u64,
}

impl Index {
    /// Block `seq` is about to be compressed with `dict` before it.
    fn consider(&mut self, seq: u64, dict: &[u8]) {
        let at = seq * BLOCK as u64;
        if self.last.is_some_and(|l| at - l <= self.span) {
            return;
        }
        let mut window = vec![0; DICT - dict.len().min(DICT)];
        window.extend_from_slice(&dict[dict.len().saturating_sub(DICT)..]);
        self.due.insert(seq, (at, window));
        self.last = Some(at);
    }

    /// Block `seq`'s compressed bytes are written next, at `10 + written`.
    fn block(&mut self, seq: u64, bytes: &[u8]) {
        if let Some((uncomp, window)) = self.due.remove(&seq) {
            self.end_span();
            self.zinfo.checkpoints.push(Checkpoint { comp: 10 + self.written, uncomp, window });
            self.span_hash = Some(kiln_oci::Sha256Writer::new(io::sink()));
        }
        self.hash(bytes);
        self.written += bytes.len() as u64;
    }

    fn hash(&mut self, bytes: &[u8]) {
        if let Some(h) = self.span_hash.as_mut() {
            // Writing into a sink cannot fail.
            let _ = h.write_all(bytes);
        }
    }

    fn end_span(&mut self) {
        if let Some(h) = self.span_hash.take() {
            self.zinfo.span_digests.push(h.finish().1);
        }
    }
}

impl<W: Write> ParGzEncoder<W> {
    /// `level` 0-9; `workers` threads (at least one) once there is more than one block.
    pub fn new(inner: W, level: u32, workers: usize) -> Self {
        ParGzEncoder {
            inner,
            level: level.min(9),
            workers: workers.max(1),
            buf: Vec::with_capacity(BLOCK),
            dict: Vec::new(),
            crc: crc32fast::Hasher::new(),
            size: 0,
            header_written: false,
            pool: None,
            next_seq: 0,
            next_out: 0,
            pending: BTreeMap::new(),
            index: None,
        }
    }

    /// Also records access points at least `span` uncompressed bytes apart
    /// ([`ParGzEncoder::finish_indexed`]). The compressed bytes do not change.
    pub fn with_index(mut self, span: u64) -> Self {
        self.index = Some(Index { span: span.max(1), last: None, due: BTreeMap::new(), zinfo: Zinfo { span, ..Default::default() }, span_hash: None, written: 0 });
        self
    }

    /// As flate2's `GzBuilder::new().mtime(0)`: no name, no time, XFL from the
    /// level, OS 255, so that the header does not depend on the machine.
    fn header(&self) -> [u8; 10] {
        let xfl = if self.level >= 9 {
            2
        } else if self.level <= 1 {
            4
        } else {
            0
        };
        [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            let h = self.header();
            self.inner.write_all(&h)?;
            self.header_written = true;
        }
        Ok(())
    }

    /// Hand the full buffer to the workers as block `next_seq`.
    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        let dict = std::mem::take(&mut self.dict);
        if let Some(ix) = self.index.as_mut() {
            ix.consider(self.next_seq, &dict);
        }
        self.dict = data[data.len().saturating_sub(DICT)..].to_vec();
        let job = Job { seq: self.next_seq, data, dict, last };
        self.next_seq += 1;
        if self.pool.is_none() {
            self.pool = Some(start_pool(self.workers, self.level));
        }
        // Keep the number of blocks in flight bounded: collect before sending more.
        while self.next_seq - self.next_out > (self.workers * 2 + 1) as u64 {
            self.collect_one()?;
        }
        let pool = self.pool.as_ref().ok_or_else(|| io::Error::other("gzip workers not started"))?;
        pool.send(job).map_err(|_| io::Error::other("gzip worker stopped"))
    }

    /// Wait for one finished block and write every block that is now in order.
    fn collect_one(&mut self) -> io::Result<()> {
        let pool = self.pool.as_ref().ok_or_else(|| io::Error::other("gzip workers not started"))?;
        let (seq, out) = pool.recv().map_err(|_| io::Error::other("gzip worker stopped"))?;
        self.pending.insert(seq, out?);
        while let Some(out) = self.pending.remove(&self.next_out) {
            self.write_header()?;
            if let Some(ix) = self.index.as_mut() {
                ix.block(self.next_out, &out);
            }
            self.inner.write_all(&out)?;
            self.next_out += 1;
        }
        Ok(())
    }

    /// Compress what is left, write the trailer, stop the workers; returns the writer.
    pub fn finish(self) -> io::Result<W> {
        self.finish_indexed().map(|(w, _)| w)
    }

    /// [`ParGzEncoder::finish`], with the access points when [`ParGzEncoder::with_index`]
    /// asked for them.
    pub fn finish_indexed(mut self) -> io::Result<(W, Option<Zinfo>)> {
        self.write_header()?;
        if self.pool.is_none() {
            // The whole stream is one block: no threads needed.
            let out = Deflaters::new(self.level).block(&self.buf, &[], true)?;
            if let Some(ix) = self.index.as_mut() {
                ix.consider(0, &[]);
                ix.block(0, &out);
            }
            self.inner.write_all(&out)?;
        } else {
            self.submit(true)?;
            while self.next_out < self.next_seq {
                self.collect_one()?;
            }
            self.pool = None;
        }
        let crc = std::mem::take(&mut self.crc).finalize();
        let mut trailer = crc.to_le_bytes().to_vec();
        trailer.extend_from_slice(&(self.size as u32).to_le_bytes());
        self.inner.write_all(&trailer)?;
        let size = self.size;
        let ParGzEncoder { inner, index, .. } = self;
        let zinfo = index.map(|mut ix| {
            ix.hash(&trailer);
            ix.end_span();
            ix.zinfo.compressed_size = 10 + ix.written + 8;
            ix.zinfo.uncompressed_size = size;
            ix.zinfo
        });
        Ok((inner, zinfo))
    }
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BLOCK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.crc.update(&data[..n]);
        self.size += n as u64;
        if self.buf.len() == BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    /// Blocks are cut at fixed offsets, so a flush cannot force one out early;
    /// it passes on the bytes of the blocks already done.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn data(n: usize, seed: u64) -> Vec<u8> {
        // Half text-like (compressible), half pseudo-random.
        let mut x = seed | 1;
        (0..n)
            .map(|i| {
                if (i / 50_000) % 2 == 0 {
                    b"the quick brown fox jumps over the lazy dog\n"[i % 44]
                } else {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                }
            })
            .collect()
    }

    fn gz(input: &[u8], level: u32, workers: usize, chunk: usize) -> Vec<u8> {
        let mut e = ParGzEncoder::new(Vec::new(), level, workers);
        for c in input.chunks(chunk.max(1)) {
            e.write_all(c).unwrap();
        }
        e.finish().unwrap()
    }

    fn gunzip(b: &[u8]) -> Vec<u8> {
        // GzDecoder (single member) checks the CRC-32 and length in the trailer.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(b).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn round_trips_at_block_edges() {
        for n in [0, 1, 100, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 3 * BLOCK + 17, 1_000_003] {
            let input = data(n, n as u64 + 7);
            for level in [0, 1, 6, 9] {
                let out = gz(&input, level, 2, 8191);
                assert_eq!(gunzip(&out), input, "n={n} level={level}");
            }
        }
    }

    #[test]
    fn output_does_not_depend_on_workers_or_write_sizes() {
        let input = data(1_500_000, 3);
        let a = gz(&input, 6, 1, 1 << 20);
        assert_eq!(a, gz(&input, 6, 2, 4096));
        assert_eq!(a, gz(&input, 6, 5, 77));
        assert_eq!(&a[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    }

    /// Issue 19: four clean builds gave four gzip digests of one RUN layer. Many
    /// runs over multi-megabyte mixed layers, with reused workers whose previous
    /// block differed (text, noise, all-zero, short), under other threads' load:
    /// one output, equal to one worker's.
    #[test]
    fn output_is_the_same_on_every_run_under_load() {
        let mut input = data(6 << 20, 11);
        input.extend(std::iter::repeat_n(0u8, 700_000));
        input.extend(data(3 << 20, 12).iter().rev());
        input.extend(b"tail".repeat(10_001));
        let want = gz(&input, 6, 1, 1 << 20);
        let load: Vec<_> = (0..2)
            .map(|_| std::thread::spawn(|| (0..200).map(|i| gz(&data(200_000, i), 1, 2, 4096).len()).sum::<usize>()))
            .collect();
        for run in 0..12 {
            let workers = 2 + run % 3;
            let chunk = [4096, 65_537, 1 << 20][run % 3];
            let got = gz(&input, 6, workers, chunk);
            assert!(got == want, "run {run} ({workers} workers, writes of {chunk}) gave other bytes");
        }
        for l in load {
            l.join().unwrap();
        }
        assert_eq!(gunzip(&want), input);
    }

    #[test]
    fn single_block_matches_flate2_header_and_decodes() {
        let input = data(5000, 1);
        let ours = gz(&input, 6, 2, 100);
        let mut theirs = flate2::GzBuilder::new().mtime(0).write(Vec::new(), Compression::new(6));
        theirs.write_all(&input).unwrap();
        let theirs = theirs.finish().unwrap();
        assert_eq!(ours, theirs, "one block is exactly what flate2 writes");
    }

    #[test]
    fn dictionary_keeps_the_ratio_close_to_one_stream() {
        // Repetitive data whose repeats straddle block edges.
        let unit: Vec<u8> = (0..20_000u32).flat_map(|i| (i.wrapping_mul(2654435761) >> 24).to_le_bytes()).collect();
        let input: Vec<u8> = unit.iter().cycle().take(2_000_000).copied().collect();
        let ours = gz(&input, 6, 2, 65536).len();
        let mut one = flate2::GzBuilder::new().mtime(0).write(Vec::new(), Compression::new(6));
        one.write_all(&input).unwrap();
        let one = one.finish().unwrap().len();
        assert!(ours <= one + one / 20 + 1024, "parallel {ours} vs single {one}");
    }

    #[test]
    fn noise_is_stored_and_text_is_compressed() {
        let mut x = 0x9e3779b97f4a7c15u64;
        let noise: Vec<u8> = (0..3 * BLOCK + 5)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert!(incompressible(&noise[..BLOCK]));
        let out = gz(&noise, 6, 2, 10_000);
        assert_eq!(gunzip(&out), noise);
        // Stored: 5 bytes of header per 64 KiB stored block, plus flush markers.
        assert!(out.len() > noise.len() && out.len() < noise.len() + noise.len() / 1000 + 200, "{}", out.len());

        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog\n".iter().cycle().take(3 * BLOCK).copied().collect();
        assert!(!incompressible(&text[..BLOCK]));
        let out = gz(&text, 6, 2, 10_000);
        assert_eq!(gunzip(&out), text);
        assert!(out.len() < text.len() / 50, "{}", out.len());
    }

    #[test]
    fn dropped_unfinished_encoder_stops_its_workers() {
        let mut e = ParGzEncoder::new(Vec::new(), 6, 2);
        e.write_all(&data(5 * BLOCK, 9)).unwrap();
        drop(e); // must not hang
    }
}
