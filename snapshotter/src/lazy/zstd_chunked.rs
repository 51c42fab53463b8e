//! zstd:chunked: a zstd layer every client decompresses as usual (the tar inside is
//! the plain layer's, byte for byte), with what containers/storage needs to pull
//! only the files it lacks (`pkg/chunked/compressor` and `internal/minimal`):
//!
//! - every non-empty regular file's content in zstd frames of its own (cut every
//!   4 MiB), headers and padding in the frames between;
//! - after the tar, three skippable frames: the TOC (zstd-compressed JSON, entries
//!   with `offset`/`endOffset` and, for chunked files, `chunk*`), the tar-split
//!   data (zstd-compressed JSON lines that rebuild the tar from the files: raw
//!   segments and per file its name, size and CRC-64/ISO), and a 64-byte footer;
//! - annotations `io.github.containers.zstd-chunked.manifest-checksum` (sha256 of
//!   the compressed TOC), `…manifest-position` (`offset:length:uncompressed:1`) and
//!   `…tarsplit-position` (`offset:length:uncompressed`).

use std::io::{self, Write};

use base64::Engine as _;
use serde::Serialize;

use super::tar_events::{EntryMeta, TarSink};
use super::toc::{rfc3339, type_name, ChunkCursor};
use super::{Counted, Finished};

pub const MANIFEST_CHECKSUM: &str = "io.github.containers.zstd-chunked.manifest-checksum";
pub const MANIFEST_POSITION: &str = "io.github.containers.zstd-chunked.manifest-position";
pub const TARSPLIT_POSITION: &str = "io.github.containers.zstd-chunked.tarsplit-position";
pub const SKIPPABLE_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];
pub const FOOTER_MAGIC: &[u8; 8] = b"GNUlInUx";
pub const FOOTER_LEN: usize = 64;

/// One TOC entry, as containers/storage's `FileMetadata` marshals.
#[derive(Serialize, Default)]
struct Entry {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    #[serde(rename = "linkName", skip_serializing_if = "String::is_empty")]
    link_name: String,
    #[serde(skip_serializing_if = "is_zero")]
    mode: u64,
    #[serde(skip_serializing_if = "is_zero")]
    size: u64,
    #[serde(skip_serializing_if = "is_zero")]
    uid: u64,
    #[serde(skip_serializing_if = "is_zero")]
    gid: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    modtime: Option<String>,
    #[serde(rename = "devMajor", skip_serializing_if = "is_zero")]
    dev_major: u64,
    #[serde(rename = "devMinor", skip_serializing_if = "is_zero")]
    dev_minor: u64,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    xattrs: std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    digest: String,
    #[serde(skip_serializing_if = "is_zero")]
    offset: u64,
    #[serde(rename = "endOffset", skip_serializing_if = "is_zero")]
    end_offset: u64,
    #[serde(rename = "chunkSize", skip_serializing_if = "is_zero")]
    chunk_size: u64,
    #[serde(rename = "chunkOffset", skip_serializing_if = "is_zero")]
    chunk_offset: u64,
    #[serde(rename = "chunkDigest", skip_serializing_if = "String::is_empty")]
    chunk_digest: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A tar-split line (vbatts/tar-split `storage.Entry`): type 1 a file, 2 raw bytes.
#[derive(Serialize)]
struct SplitEntry<'a> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_raw: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    size: u64,
    payload: Option<String>,
    position: u64,
}

/// CRC-64 with the ISO polynomial, reflected (Go's `crc64.MakeTable(crc64.ISO)`),
/// the checksum tar-split keeps per file.
pub struct Crc64(u64);

const fn crc64_table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u64;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 { (c >> 1) ^ 0xD800_0000_0000_0000 } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC64: [u64; 256] = crc64_table();

impl Crc64 {
    pub fn new() -> Self {
        Crc64(0)
    }
    pub fn update(&mut self, data: &[u8]) {
        let mut c = !self.0;
        for b in data {
            c = CRC64[((c as u8) ^ b) as usize] ^ (c >> 8);
        }
        self.0 = !c;
    }
    pub fn value(&self) -> u64 {
        self.0
    }
}

impl Default for Crc64 {
    fn default() -> Self {
        Self::new()
    }
}

struct OpenFile {
    main: Entry,
    /// (blob offset, offset in the file, size, digest) of each chunk.
    chunks: Vec<(u64, u64, u64, String)>,
    at: ChunkCursor,
    crc: Crc64,
    start: u64,
    /// Blob offset of the current chunk's first frame.
    chunk_start: u64,
    name: String,
    name_raw: Option<Vec<u8>>,
}

type Frame<W> = zstd::stream::write::Encoder<'static, Counted<W>>;

/// The writer: a [`TarSink`] for [`super::tar_events::TarEvents`].
pub struct ZstdChunkedWriter<W: Write> {
    frame: Option<Frame<W>>,
    idle: Option<Counted<W>>,
    level: i32,
    /// The padding after a file's content: written with the next header, in the
    /// frame after the content's (as containers/storage does).
    pending: Vec<u8>,
    toc: Vec<u8>,
    split: zstd::stream::write::Encoder<'static, Vec<u8>>,
    split_len: u64,
    split_pos: u64,
    file: Option<OpenFile>,
}

impl<W: Write> ZstdChunkedWriter<W> {
    pub fn new(out: W, level: i32) -> io::Result<Self> {
        Ok(ZstdChunkedWriter {
            frame: None,
            idle: Some(Counted { inner: out, n: 0 }),
            level,
            pending: Vec::new(),
            toc: Vec::new(),
            split: zstd::stream::write::Encoder::new(Vec::new(), level)?,
            split_len: 0,
            split_pos: 0,
            file: None,
        })
    }

    fn put(&mut self, data: &[u8]) -> io::Result<()> {
        if self.frame.is_none() {
            let out = self.idle.take().ok_or_else(|| io::Error::other("zstd:chunked writer used after an error"))?;
            self.frame = Some(zstd::stream::write::Encoder::new(out, self.level)?);
        }
        self.frame.as_mut().expect("just set").write_all(data)
    }

    /// Ends the current frame; returns the blob offset after it.
    fn cut(&mut self) -> io::Result<u64> {
        if let Some(f) = self.frame.take() {
            self.idle = Some(f.finish()?);
        }
        Ok(self.idle.as_ref().map(|c| c.n).unwrap_or(0))
    }

    fn split_line(&mut self, e: SplitEntry<'_>) -> io::Result<()> {
        let mut line = serde_json::to_vec(&e).map_err(io::Error::other)?;
        line.push(b'\n');
        self.split_len += line.len() as u64;
        self.split_pos += 1;
        self.split.write_all(&line)
    }

    fn segment(&mut self, raw: &[u8]) -> io::Result<()> {
        if raw.is_empty() {
            return Ok(());
        }
        let payload = Some(base64::engine::general_purpose::STANDARD.encode(raw));
        let position = self.split_pos;
        self.split_line(SplitEntry { kind: 2, name: None, name_raw: None, size: 0, payload, position })
    }

    fn file_line(&mut self, name: &[u8], size: u64, crc: Option<u64>) -> io::Result<()> {
        let position = self.split_pos;
        let payload = crc.map(|c| base64::engine::general_purpose::STANDARD.encode(c.to_be_bytes()));
        let (name, name_raw) = match std::str::from_utf8(name) {
            Ok(s) => (Some(s.to_string()), None),
            Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(name))),
        };
        self.split_line(SplitEntry { kind: 1, name: name.as_deref(), name_raw, size, payload, position })
    }

    fn push_entry(&mut self, e: &Entry) -> io::Result<()> {
        if !self.toc.is_empty() {
            self.toc.push(b',');
        }
        serde_json::to_writer(&mut self.toc, e).map_err(io::Error::other)
    }

    /// Closes the current chunk's frame and records the chunk; the next chunk (if
    /// any) starts where this frame ended.
    fn end_chunk(&mut self) -> io::Result<u64> {
        let end = self.cut()?;
        if let Some(f) = self.file.as_mut() {
            let size = f.at.in_chunk;
            let d = f.at.end_chunk();
            f.chunks.push((f.chunk_start, f.at.done - size, size, d.to_string()));
            f.chunk_start = end;
        }
        Ok(end)
    }

    /// Writes the TOC, tar-split and footer frames; the blob is complete.
    pub fn close(mut self) -> io::Result<Finished<W>> {
        if self.file.is_some() {
            return Err(io::Error::other("zstd:chunked: the tar ended inside a file"));
        }
        let tar_end = self.cut()?;
        let split = std::mem::replace(&mut self.split, zstd::stream::write::Encoder::new(Vec::new(), self.level)?).finish()?;
        let mut manifest = b"{\"version\":1,\"entries\":[".to_vec();
        manifest.extend_from_slice(&self.toc);
        manifest.extend_from_slice(format!("],\"tarSplitDigest\":\"{}\"}}", kiln_oci::Digest::of(&split)).as_bytes());
        let compressed = zstd::bulk::compress(&manifest, self.level)?;
        let mut out = self.idle.take().ok_or_else(|| io::Error::other("zstd:chunked writer used after an error"))?;
        let manifest_at = tar_end + 8;
        let split_at = manifest_at + compressed.len() as u64 + 8;
        for frame in [&compressed[..], &split[..]] {
            out.write_all(&SKIPPABLE_MAGIC)?;
            out.write_all(&(frame.len() as u32).to_le_bytes())?;
            out.write_all(frame)?;
        }
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        for v in [manifest_at, compressed.len() as u64, manifest.len() as u64, 1, split_at, split.len() as u64, self.split_len] {
            footer.extend_from_slice(&v.to_le_bytes());
        }
        footer.extend_from_slice(FOOTER_MAGIC);
        out.write_all(&SKIPPABLE_MAGIC)?;
        out.write_all(&(footer.len() as u32).to_le_bytes())?;
        out.write_all(&footer)?;
        Ok(Finished {
            out: out.inner,
            diff_id: None,
            annotations: vec![
                (MANIFEST_CHECKSUM.to_string(), kiln_oci::Digest::of(&compressed).to_string()),
                (MANIFEST_POSITION.to_string(), format!("{manifest_at}:{}:{}:1", compressed.len(), manifest.len())),
                (TARSPLIT_POSITION.to_string(), format!("{split_at}:{}:{}", split.len(), self.split_len)),
            ],
        })
    }
}

impl<W: Write> TarSink for ZstdChunkedWriter<W> {
    fn header(&mut self, raw: &[u8], meta: &EntryMeta) -> io::Result<()> {
        let mut seg = std::mem::take(&mut self.pending);
        seg.extend_from_slice(raw);
        self.put(&seg)?;
        self.segment(&seg)?;
        let kind = type_name(meta.kind).ok_or_else(|| io::Error::other(format!("zstd:chunked: {}: tar entry type {:?} has no TOC type", meta.name_str(), meta.kind as char)))?;
        let main = Entry {
            kind,
            name: meta.name_str(),
            link_name: String::from_utf8_lossy(&meta.link).into_owned(),
            mode: meta.mode,
            size: meta.size,
            uid: meta.uid,
            gid: meta.gid,
            modtime: Some(rfc3339(meta.mtime)),
            dev_major: meta.dev.0,
            dev_minor: meta.dev.1,
            xattrs: meta.xattrs_base64(),
            ..Default::default()
        };
        if meta.size == 0 {
            self.push_entry(&main)?;
            return self.file_line(&meta.name, 0, None);
        }
        let start = self.cut()?;
        let name_raw = std::str::from_utf8(&meta.name).is_err().then(|| meta.name.clone());
        self.file = Some(OpenFile {
            name: meta.name_str(),
            name_raw,
            main,
            chunks: Vec::new(),
            at: ChunkCursor::new(),
            crc: Crc64::new(),
            start,
            chunk_start: start,
        });
        Ok(())
    }

    fn content(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.file.as_ref().is_some_and(|f| f.at.full()) {
                self.end_chunk()?;
            }
            let Some(f) = self.file.as_mut() else { return self.put(data) };
            let take = f.at.take(data);
            f.crc.update(&data[..take]);
            self.put(&data[..take])?;
            data = &data[take..];
        }
        Ok(())
    }

    fn padding(&mut self, raw: &[u8]) -> io::Result<()> {
        self.pending = raw.to_vec();
        if self.file.is_none() {
            return Ok(());
        }
        let end = self.end_chunk()?;
        let f = self.file.take().expect("checked");
        let mut main = f.main;
        main.digest = f.at.whole.finish().to_string();
        main.offset = f.start;
        main.end_offset = end;
        let mut entries = vec![main];
        if f.chunks.len() > 1 {
            for c in &f.chunks[1..] {
                entries.push(Entry { kind: "chunk", name: f.name.clone(), chunk_offset: c.1, ..Default::default() });
            }
            for (e, c) in entries.iter_mut().zip(&f.chunks) {
                e.chunk_size = c.2;
                e.offset = c.0;
                e.chunk_digest = c.3.clone();
            }
        }
        for e in &entries {
            self.push_entry(e)?;
        }
        let name = f.name_raw.clone().unwrap_or_else(|| f.name.clone().into_bytes());
        self.file_line(&name, f.at.done, Some(f.crc.value()))
    }

    fn trailer(&mut self, raw: &[u8]) -> io::Result<()> {
        let mut seg = std::mem::take(&mut self.pending);
        seg.extend_from_slice(raw);
        self.put(&seg)?;
        self.segment(&seg)
    }
}
