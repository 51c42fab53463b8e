//! Reading gzip: the one decoder of layer blobs, ISA-L's inflate (igzip) behind a
//! safe `Read`.
//!
//! Why not flate2: inflating a base's gzip layers is most of the time of a build
//! that only adds files onto a big base (issue 18: the 203 MB layer of bench/big's
//! base inflates in 1.21 s with flate2's zlib-rs backend, 0.84 s with ISA-L, 3.04 s
//! with GNU gzip; 2 vCPU AMD EPYC, 2026-12-07). Compression stays with flate2/pgzip:
//! the bytes kiln writes must not change, and ISA-L's levels are not zlib's.
//!
//! The decoder reads every member of the stream (gzip allows several; eStargz and
//! pigz write them), checks each member's CRC-32 and length (ISA-L's `ISAL_GZIP`
//! mode), and fails on a stream that ends inside a member or on bytes after a member
//! that are not another member — the rules of flate2's `MultiGzDecoder` and of Go's
//! `compress/gzip` reader, which the peers use.

use std::io::{self, Read};
use std::mem::MaybeUninit;

use isal_sys::igzip_lib as isal;

const IN_BUF: usize = 128 * 1024;

/// A gzip stream of one or more members, decoded.
pub struct MultiGzDecoder<R> {
    inner: R,
    // Boxed: the state is 66 KiB, and ISA-L is handed raw pointers into it and into
    // `input` only for the duration of one call, so moving the decoder is safe.
    state: Box<isal::inflate_state>,
    // The member header is read with its own call and a header record that lives
    // across calls: isal_inflate's built-in header reading keeps the flags in a
    // record of its own frame, and loses them when a header with a name or extra
    // field is split across reads.
    header: Box<isal::isal_gzip_header>,
    input: Box<[u8]>,
    pos: usize,
    len: usize,
    eof: bool,
}

// SAFETY: the raw pointers in `state` and `header` are null or point into `state`
// and `input`, which the decoder owns, and are only used during one ISA-L call.
unsafe impl<R: Send> Send for MultiGzDecoder<R> {}

/// # Safety
/// All-zero bytes must be a valid `T` (ISA-L's C structs: integers, arrays, pointers;
/// their init functions then set what they need).
unsafe fn zeroed<T>() -> Box<T> {
    let mut b: Box<MaybeUninit<T>> = Box::new_uninit();
    unsafe {
        std::ptr::write_bytes(b.as_mut_ptr(), 0, 1);
        b.assume_init()
    }
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("gzip stream: {what}"))
}

impl<R: Read> MultiGzDecoder<R> {
    pub fn new(inner: R) -> Self {
        let mut d = MultiGzDecoder {
            inner,
            // SAFETY: both are C structs of integers, arrays and pointers.
            state: unsafe { zeroed() },
            header: unsafe { zeroed() },
            input: vec![0; IN_BUF].into_boxed_slice(),
            pos: 0,
            len: 0,
            eof: false,
        };
        d.new_member();
        d
    }

    fn new_member(&mut self) {
        // SAFETY: both point to initialised, owned structs.
        unsafe {
            isal::isal_inflate_init(&mut *self.state);
            isal::isal_gzip_header_init(&mut *self.header);
        }
        self.state.crc_flag = isal::ISAL_GZIP;
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.pos < self.len {
            self.input.copy_within(self.pos..self.len, 0);
        }
        self.len -= self.pos;
        self.pos = 0;
        loop {
            match self.inner.read(&mut self.input[self.len..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            return Ok(());
        }
    }

    fn finished_member(&self) -> bool {
        self.state.block_state == isal::isal_block_state_ISAL_BLOCK_FINISH
    }

    /// One ISA-L call on the buffered input: the header reader until the member's
    /// header is read, then inflate into `out`. Returns (consumed, produced).
    fn step(&mut self, out: &mut [u8]) -> io::Result<(usize, usize)> {
        let avail = self.len - self.pos;
        self.state.next_in = self.input[self.pos..].as_mut_ptr();
        self.state.avail_in = avail as u32;
        self.state.next_out = out.as_mut_ptr();
        self.state.avail_out = out.len().min(u32::MAX as usize) as u32;
        let want = self.state.avail_out as usize;
        // SAFETY: next_in/avail_in and next_out/avail_out describe live buffers of
        // this decoder and the caller for the duration of the call.
        let rc = unsafe {
            if self.state.wrapper_flag == 0 {
                isal::isal_read_gzip_header(&mut *self.state, &mut *self.header)
            } else {
                isal::isal_inflate(&mut *self.state)
            }
        };
        // On an error ISA-L leaves next_in/avail_in wherever it was (its own header
        // buffer, say): only a successful call's counts mean anything.
        let (left_in, left_out) = (self.state.avail_in as usize, self.state.avail_out as usize);
        self.state.next_in = std::ptr::null_mut();
        self.state.next_out = std::ptr::null_mut();
        if rc < 0 {
            return Err(corrupt(describe(rc)));
        }
        let (Some(consumed), Some(produced)) = (avail.checked_sub(left_in), want.checked_sub(left_out)) else {
            return Err(corrupt("the decoder reported more than it was given"));
        };
        self.pos += consumed;
        Ok((consumed, produced))
    }
}

impl<R: Read> Read for MultiGzDecoder<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos == self.len && !self.eof {
                self.fill()?;
            }
            if self.finished_member() {
                if self.pos == self.len {
                    if self.eof {
                        return Ok(0);
                    }
                    continue;
                }
                self.new_member(); // another member follows
            }
            let (consumed, produced) = self.step(out)?;
            if produced > 0 {
                return Ok(produced);
            }
            if consumed == 0 && !self.finished_member() {
                if self.eof {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "gzip stream ends inside a member (truncated)"));
                }
                if self.pos == 0 && self.len == self.input.len() {
                    return Err(corrupt("no progress"));
                }
                // ISA-L wants more than is buffered.
                self.fill()?;
            }
        }
    }
}

fn describe(rc: i32) -> &'static str {
    match rc {
        isal::ISAL_INVALID_BLOCK => "invalid deflate block",
        isal::ISAL_INVALID_SYMBOL => "invalid deflate symbol",
        isal::ISAL_INVALID_LOOKBACK => "invalid back-reference distance",
        isal::ISAL_INVALID_WRAPPER => "invalid gzip header",
        isal::ISAL_UNSUPPORTED_METHOD => "compression method is not deflate",
        isal::ISAL_INCORRECT_CHECKSUM => "CRC-32 or length does not match the data",
        _ => "corrupt data",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode(blob: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
        // A reader that hands out at most `chunk` bytes per read: member and
        // trailer boundaries fall anywhere.
        struct Dribble<'a>(&'a [u8], usize);
        impl Read for Dribble<'_> {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(self.1).min(b.len());
                b[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        MultiGzDecoder::new(Dribble(blob, chunk)).read_to_end(&mut out)?;
        Ok(out)
    }

    fn sample(n: usize) -> Vec<u8> {
        let mut x = 0x2545F491u32;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if i % 3 == 0 { (x >> 24) as u8 } else { b"tar header "[i % 11] }
            })
            .collect()
    }

    #[test]
    fn decodes_what_flate2_writes_at_every_level_and_read_size() {
        let data = sample(700_000);
        for level in [0, 1, 6, 9] {
            let blob = gz(&data, level);
            for chunk in [1, 7, 4096, 1 << 20] {
                if chunk == 1 && level != 6 {
                    continue;
                }
                assert!(decode(&blob, chunk).unwrap() == data, "level {level} chunk {chunk}");
            }
        }
    }

    #[test]
    fn reads_every_member_and_agrees_with_flate2() {
        let (a, b) = (sample(100_000), b"second member".to_vec());
        let mut blob = gz(&a, 6);
        blob.extend(gz(b"", 6));
        blob.extend(gz(&b, 1));
        // A member with every optional header field (pigz writes a name, Go's
        // writer an extra field for eStargz's TOC lookups).
        let mut e = flate2::GzBuilder::new()
            .filename("layer.tar")
            .comment("a comment")
            .extra(vec![b'S', b'G', 2, 0, 1, 2])
            .write(Vec::new(), flate2::Compression::new(6));
        e.write_all(b"third").unwrap();
        blob.extend(e.finish().unwrap());
        let mut want = Vec::new();
        flate2::read::MultiGzDecoder::new(&blob[..]).read_to_end(&mut want).unwrap();
        assert_eq!(want.len(), a.len() + b.len() + 5);
        for chunk in [3, 8, 65536] {
            assert!(decode(&blob, chunk).unwrap() == want, "chunk {chunk}");
        }
    }

    #[test]
    fn a_cut_stream_a_bad_crc_a_bad_length_and_trailing_garbage_fail() {
        let data = sample(50_000);
        let blob = gz(&data, 6);
        for cut in [0, 5, 10, blob.len() / 2, blob.len() - 8, blob.len() - 1] {
            assert!(decode(&blob[..cut], 4096).is_err(), "cut at {cut} of {}", blob.len());
        }
        let n = blob.len();
        for (what, at) in [("crc", n - 8), ("length", n - 2), ("data", n / 2), ("header", 0)] {
            let mut bad = blob.clone();
            bad[at] ^= 0x40;
            let e = decode(&bad, 4096).expect_err(what);
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}: {e}");
        }
        let mut trailing = blob.clone();
        trailing.extend_from_slice(b"not gzip");
        assert!(decode(&trailing, 4096).is_err());
    }

    #[test]
    fn corrupted_streams_fail_wherever_flate2_fails_and_never_decode_differently() {
        let blob = {
            let mut b = gz(&sample(40_000), 6);
            b.extend(gz(b"member two", 9));
            b
        };
        let mut want = Vec::new();
        flate2::read::MultiGzDecoder::new(&blob[..]).read_to_end(&mut want).unwrap();
        let mut x = 0x9E3779B9u32;
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut bad = blob.clone();
            let at = x as usize % bad.len();
            bad[at] ^= 1 << (x >> 29);
            let theirs = {
                let mut v = Vec::new();
                flate2::read::MultiGzDecoder::new(&bad[..]).read_to_end(&mut v).map(|_| v)
            };
            match (decode(&bad, 5000), theirs) {
                (Ok(a), Ok(b)) => assert!(a == b, "flip at {at}: both decode, differently"),
                (Ok(_), Err(e)) => panic!("flip at {at}: flate2 fails ({e}), ISA-L decodes"),
                (Err(_), _) => {}
            }
        }
    }
}
