//! eStargz: a gzip layer every client unpacks as usual, whose files a stargz
//! snapshotter can fetch one by one (stargz-snapshotter `docs/estargz.md`).
//!
//! Layout written: the `.no.prefetch.landmark` entry first (no prioritized files),
//! then the layer's entries in their order; a new gzip member starts at the content
//! of every non-empty regular file and every 4 MiB inside it; the TOC
//! (`stargz.index.json`, with the end-of-archive blocks) in a member of its own;
//! then the 51-byte footer, an empty member whose extra field holds the TOC offset.
//! Annotations: `containerd.io/snapshot/stargz/toc.digest` (sha256 of the TOC JSON)
//! and `io.containers.estargz.uncompressed-size`.

use std::io::{self, Write};

use flate2::write::GzEncoder;
use serde::Serialize;

use super::tar_events::{EntryMeta, TarSink};
use super::toc::{rfc3339, type_name, ChunkCursor, Hasher};
use super::{Counted, Finished, CHUNK};

pub const TOC_NAME: &str = "stargz.index.json";
pub const LANDMARK: &str = ".no.prefetch.landmark";
pub const TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";
pub const UNCOMPRESSED_SIZE: &str = "io.containers.estargz.uncompressed-size";
/// Root-level entries an eStargz layer has for the format, not for the image (the
/// TOC and both landmarks): kiln does not unpack them (`apply.rs`).
pub const RESERVED: [&[u8]; 3] = [b"stargz.index.json", b".no.prefetch.landmark", b".prefetch.landmark"];
/// Size of the footer: gzip header 10, XLEN 2, extra 26, empty stored block 5, trailer 8.
pub const FOOTER_LEN: usize = 51;

/// One TOC entry, as stargz-snapshotter's `TOCEntry` marshals.
#[derive(Serialize, Default)]
struct Entry {
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "is_zero")]
    size: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    modtime: String,
    #[serde(rename = "linkName", skip_serializing_if = "String::is_empty")]
    link_name: String,
    mode: u64,
    uid: u64,
    gid: u64,
    #[serde(rename = "userName", skip_serializing_if = "String::is_empty")]
    user_name: String,
    #[serde(rename = "groupName", skip_serializing_if = "String::is_empty")]
    group_name: String,
    #[serde(rename = "devMajor", skip_serializing_if = "Option::is_none")]
    dev_major: Option<u64>,
    #[serde(rename = "devMinor", skip_serializing_if = "Option::is_none")]
    dev_minor: Option<u64>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    xattrs: std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    digest: String,
    #[serde(skip_serializing_if = "is_zero")]
    offset: u64,
    #[serde(rename = "chunkOffset", skip_serializing_if = "is_zero")]
    chunk_offset: u64,
    #[serde(rename = "chunkSize", skip_serializing_if = "is_zero")]
    chunk_size: u64,
    #[serde(rename = "chunkDigest", skip_serializing_if = "String::is_empty")]
    chunk_digest: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Entry {
    fn of(m: &EntryMeta, kind: &'static str) -> Entry {
        let dev = matches!(kind, "char" | "block");
        Entry {
            name: m.name_str(),
            kind,
            size: if kind == "reg" { m.size } else { 0 },
            modtime: rfc3339(m.mtime),
            link_name: String::from_utf8_lossy(&m.link).into_owned(),
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            user_name: m.uname.clone(),
            group_name: m.gname.clone(),
            dev_major: dev.then_some(m.dev.0),
            dev_minor: dev.then_some(m.dev.1),
            xattrs: m.xattrs_base64(),
            ..Default::default()
        }
    }

    fn chunk(name: &str, offset: u64, chunk_offset: u64) -> Entry {
        Entry { name: name.to_string(), kind: "chunk", offset, chunk_offset, ..Default::default() }
    }
}

/// The regular file whose content is being written.
struct OpenFile {
    entries: Vec<Entry>,
    at: ChunkCursor,
}

/// The writer: a [`TarSink`] for [`super::tar_events::TarEvents`].
pub struct EstargzWriter<W: Write> {
    gz: Option<GzEncoder<Counted<W>>>,
    idle: Option<Counted<W>>,
    level: flate2::Compression,
    /// The decompressed stream: its sha256 is the layer's diffID.
    raw: Hasher,
    raw_len: u64,
    toc: Vec<u8>,
    file: Option<OpenFile>,
    mtime: i64,
}

/// A ustar header for an entry kiln adds (landmark, TOC).
fn added_header(name: &str, size: u64, mtime: i64) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime.max(0) as u64);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

fn padding(n: u64) -> Vec<u8> {
    vec![0; ((512 - n % 512) % 512) as usize]
}

impl<W: Write> EstargzWriter<W> {
    /// Starts the blob with the no-prefetch landmark. `mtime` is the time of the
    /// entries kiln adds (the landmark and the TOC).
    pub fn new(out: W, level: u32, mtime: i64) -> io::Result<Self> {
        let mut w = EstargzWriter {
            gz: None,
            idle: Some(Counted { inner: out, n: 0 }),
            level: flate2::Compression::new(level.min(9)),
            raw: Hasher::new(),
            raw_len: 0,
            toc: Vec::new(),
            file: None,
            mtime,
        };
        let h = added_header(LANDMARK, 1, mtime)?;
        let meta = EntryMeta { name: LANDMARK.into(), kind: b'0', mode: 0o644, mtime: mtime.max(0), size: 1, ..Default::default() };
        w.header(h.as_bytes(), &meta)?;
        w.content(&[0x0f])?;
        w.padding(&padding(1))?;
        Ok(w)
    }

    fn put(&mut self, data: &[u8]) -> io::Result<()> {
        if self.gz.is_none() {
            let out = self.idle.take().ok_or_else(|| io::Error::other("estargz writer used after an error"))?;
            self.gz = Some(GzEncoder::new(out, self.level));
        }
        self.raw.update(data);
        self.raw_len += data.len() as u64;
        self.gz.as_mut().expect("just set").write_all(data)
    }

    /// Ends the current gzip member; returns the offset where the next one starts.
    fn cut(&mut self) -> io::Result<u64> {
        if let Some(gz) = self.gz.take() {
            self.idle = Some(gz.finish()?);
        }
        Ok(self.idle.as_ref().map(|c| c.n).unwrap_or(0))
    }

    fn push_entry(&mut self, e: &Entry) -> io::Result<()> {
        if !self.toc.is_empty() {
            self.toc.push(b',');
        }
        serde_json::to_writer(&mut self.toc, e).map_err(io::Error::other)
    }

    /// Writes the TOC, the end of the archive and the footer; the blob is complete.
    pub fn close(mut self) -> io::Result<Finished<W>> {
        if self.file.is_some() {
            return Err(io::Error::other("estargz: the tar ended inside a file"));
        }
        let toc_offset = self.cut()?;
        let mut json = b"{\"version\":1,\"entries\":[".to_vec();
        json.extend_from_slice(&self.toc);
        json.extend_from_slice(b"]}");
        let h = added_header(TOC_NAME, json.len() as u64, self.mtime)?;
        self.put(h.as_bytes())?;
        self.put(&json)?;
        self.put(&padding(json.len() as u64))?;
        self.put(&[0; 1024])?;
        self.cut()?;
        let mut out = self.idle.take().ok_or_else(|| io::Error::other("estargz writer used after an error"))?;
        out.write_all(&footer(toc_offset))?;
        let toc_digest = kiln_oci::Digest::of(&json);
        let raw = std::mem::replace(&mut self.raw, Hasher::new());
        Ok(Finished {
            out: out.inner,
            diff_id: Some(raw.finish()),
            annotations: vec![(TOC_DIGEST.to_string(), toc_digest.to_string()), (UNCOMPRESSED_SIZE.to_string(), self.raw_len.to_string())],
        })
    }

    fn end_chunk(&mut self) {
        if let Some(f) = self.file.as_mut() {
            let d = f.at.end_chunk();
            if let Some(e) = f.entries.last_mut() {
                e.chunk_digest = d.to_string();
            }
        }
    }
}

/// The footer: an empty gzip member whose extra field says `%016xSTARGZ`.
pub fn footer(toc_offset: u64) -> Vec<u8> {
    let mut f = Vec::with_capacity(FOOTER_LEN);
    f.extend_from_slice(&[0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff]);
    f.extend_from_slice(&26u16.to_le_bytes());
    f.extend_from_slice(b"SG");
    f.extend_from_slice(&22u16.to_le_bytes());
    f.extend_from_slice(format!("{toc_offset:016x}STARGZ").as_bytes());
    f.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    f.extend_from_slice(&[0; 8]);
    f
}

impl<W: Write> TarSink for EstargzWriter<W> {
    fn header(&mut self, raw: &[u8], meta: &EntryMeta) -> io::Result<()> {
        self.put(raw)?;
        let Some(kind) = type_name(meta.kind) else { return Ok(()) };
        let e = Entry::of(meta, kind);
        if kind == "reg" && meta.size > 0 {
            let offset = self.cut()?;
            let mut e = e;
            e.offset = offset;
            self.file = Some(OpenFile { entries: vec![e], at: ChunkCursor::new() });
            return Ok(());
        }
        self.push_entry(&e)
    }

    fn content(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.file.as_ref().is_some_and(|f| f.at.full()) {
                self.end_chunk();
                let offset = self.cut()?;
                let f = self.file.as_mut().expect("checked");
                f.entries.last_mut().expect("a file has an entry").chunk_size = CHUNK;
                let name = f.entries[0].name.clone();
                f.entries.push(Entry::chunk(&name, offset, f.at.done));
            }
            let Some(f) = self.file.as_mut() else {
                // Content of an entry the TOC does not locate (not a regular file).
                return self.put(data);
            };
            let take = f.at.take(data);
            self.put(&data[..take])?;
            data = &data[take..];
        }
        Ok(())
    }

    fn padding(&mut self, raw: &[u8]) -> io::Result<()> {
        if self.file.is_some() {
            self.end_chunk();
            let f = self.file.take().expect("checked");
            let mut entries = f.entries;
            // The last chunk's size is 0 ("the rest"), as the spec asks.
            if let Some(last) = entries.last_mut() {
                last.chunk_size = 0;
            }
            entries[0].digest = f.at.whole.finish().to_string();
            for e in &entries {
                self.push_entry(e)?;
            }
        }
        self.put(raw)
    }

    fn trailer(&mut self, _raw: &[u8]) -> io::Result<()> {
        // The end-of-archive blocks follow the TOC entry (`close`).
        Ok(())
    }
}
