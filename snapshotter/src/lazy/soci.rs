//! SOCI ztocs (awslabs/soci-snapshotter `ztoc/`): for a gzip layer kiln writes, the
//! table of contents of its tar (each entry's metadata and where its content is in
//! the uncompressed stream) and the access points of its gzip stream (zinfo v2:
//! compressed and uncompressed offset, bits, 32 KiB window), serialized as the
//! `ztoc.fbs` flatbuffer. The layer blob itself is unchanged: the access points are
//! the starts of [`crate::pgzip`]'s blocks (byte-aligned after a sync flush, the
//! block before as window), taken at least a span apart, so no second pass over the
//! stream is needed. The SOCI index manifest that lists the ztocs is the builder's
//! (`builder/src/export/soci.rs`).

use std::io::{self, Write};

use flatbuffers::{FlatBufferBuilder, WIPOffset};

use super::tar_events::{EntryMeta, TarSink};
use super::toc::{rfc3339, type_name};
use crate::pgzip::Zinfo;

/// soci-snapshotter's default span (`--span-size`): 4 MiB.
pub const DEFAULT_SPAN: u64 = 4 << 20;
/// soci-snapshotter's default `--min-layer-size`: layers below it get no ztoc.
pub const DEFAULT_MIN_LAYER_SIZE: u64 = 10 << 20;
pub const ZTOC_VERSION: &str = "0.9";
const WINDOW: usize = 32 * 1024;

/// An entry of the TOC with the offset of its content in the tar stream.
struct Entry {
    meta: EntryMeta,
    kind: &'static str,
    offset: u64,
}

/// A [`TarSink`] that passes the tar on to `inner` (the gzip encoder) and keeps
/// the TOC.
pub struct ZtocRecorder<W: Write> {
    inner: W,
    pos: u64,
    entries: Vec<Entry>,
}

impl<W: Write> ZtocRecorder<W> {
    pub fn new(inner: W) -> Self {
        ZtocRecorder { inner, pos: 0, entries: Vec::new() }
    }

    fn put(&mut self, data: &[u8]) -> io::Result<()> {
        self.pos += data.len() as u64;
        self.inner.write_all(data)
    }

    /// The encoder back, and the TOC to pair with its [`Zinfo`] in [`ztoc`].
    pub fn into_parts(self) -> (W, Toc) {
        (self.inner, Toc { entries: self.entries, uncompressed_size: self.pos })
    }
}

/// The TOC half of a ztoc.
pub struct Toc {
    entries: Vec<Entry>,
    uncompressed_size: u64,
}

impl<W: Write> TarSink for ZtocRecorder<W> {
    fn header(&mut self, raw: &[u8], meta: &EntryMeta) -> io::Result<()> {
        self.put(raw)?;
        let kind = type_name(meta.kind).ok_or_else(|| io::Error::other(format!("SOCI: {}: tar entry type {:?} has no ztoc type", meta.name_str(), meta.kind as char)))?;
        self.entries.push(Entry { meta: meta.clone(), kind, offset: self.pos });
        Ok(())
    }
    fn content(&mut self, data: &[u8]) -> io::Result<()> {
        self.put(data)
    }
    fn padding(&mut self, raw: &[u8]) -> io::Result<()> {
        self.put(raw)
    }
    fn trailer(&mut self, raw: &[u8]) -> io::Result<()> {
        self.put(raw)
    }
}

/// zinfo v2's blob: checkpoint count (i32), span (i64), then per checkpoint its
/// compressed offset (i64), uncompressed offset (i64), bits (u8) and window; little
/// endian (`gzip_zinfo.c` `zinfo_to_blob`).
pub fn zinfo_blob(z: &Zinfo) -> Vec<u8> {
    let mut b = Vec::with_capacity(12 + z.checkpoints.len() * (17 + WINDOW));
    b.extend_from_slice(&(z.checkpoints.len() as i32).to_le_bytes());
    b.extend_from_slice(&(z.span as i64).to_le_bytes());
    for c in &z.checkpoints {
        b.extend_from_slice(&(c.comp as i64).to_le_bytes());
        b.extend_from_slice(&(c.uncomp as i64).to_le_bytes());
        b.push(0);
        b.extend_from_slice(&c.window);
    }
    b
}

/// Field slots of `ztoc.fbs` (vtable offset of field n: 4 + 2n).
const fn slot(n: u16) -> flatbuffers::VOffsetT {
    4 + 2 * n
}

/// The ztoc flatbuffer of a layer: its TOC and its gzip access points.
pub fn ztoc(toc: &Toc, z: &Zinfo, build_tool: &str) -> Vec<u8> {
    let mut b = FlatBufferBuilder::with_capacity(64 * 1024 + z.checkpoints.len() * (WINDOW + 64));
    let mut files = Vec::with_capacity(toc.entries.len());
    for e in &toc.entries {
        files.push(file_metadata(&mut b, e));
    }
    let files = b.create_vector(&files);
    let t = b.start_table();
    b.push_slot_always(slot(0), files);
    let toc_table = b.end_table(t);

    let digests: Vec<WIPOffset<&str>> = z.span_digests.iter().map(|d| b.create_string(&d.to_string())).collect();
    let digests = b.create_vector(&digests);
    let checkpoints = b.create_vector(&zinfo_blob(z));
    let t = b.start_table();
    // compression_algorithm: Gzip, the schema's default (omitted, as Go's builder does).
    b.push_slot::<i32>(slot(1), z.checkpoints.len() as i32 - 1, 0);
    b.push_slot_always(slot(2), digests);
    b.push_slot_always(slot(3), checkpoints);
    let info = b.end_table(t);

    let version = b.create_string(ZTOC_VERSION);
    let tool = b.create_string(build_tool);
    let t = b.start_table();
    b.push_slot_always(slot(0), version);
    b.push_slot_always(slot(1), tool);
    b.push_slot::<i64>(slot(2), z.compressed_size as i64, 0);
    b.push_slot::<i64>(slot(3), toc.uncompressed_size as i64, 0);
    b.push_slot_always(slot(4), toc_table);
    b.push_slot_always(slot(5), info);
    let root = b.end_table(t);
    b.finish(root, None);
    b.finished_data().to_vec()
}

fn file_metadata<'a>(b: &mut FlatBufferBuilder<'a>, e: &Entry) -> WIPOffset<flatbuffers::TableFinishedWIPOffset> {
    let m = &e.meta;
    let name = b.create_string(&m.name_str());
    let kind = b.create_string(e.kind);
    let link = b.create_string(&String::from_utf8_lossy(&m.link));
    let uname = b.create_string(&m.uname);
    let gname = b.create_string(&m.gname);
    let mtime = b.create_string(&rfc3339(m.mtime));
    let mut pax: Vec<&(String, Vec<u8>)> = m.pax.iter().collect();
    pax.sort_by(|a, c| a.0.cmp(&c.0));
    let mut xattrs = Vec::with_capacity(pax.len());
    for (k, v) in pax {
        let k = b.create_string(k);
        let v = b.create_string(&String::from_utf8_lossy(v));
        let t = b.start_table();
        b.push_slot_always(slot(0), k);
        b.push_slot_always(slot(1), v);
        xattrs.push(b.end_table(t));
    }
    let xattrs = b.create_vector(&xattrs);
    let size = if m.is_regular() { m.size } else { 0 };
    let t = b.start_table();
    b.push_slot_always(slot(0), name);
    b.push_slot_always(slot(1), kind);
    b.push_slot::<i64>(slot(2), e.offset as i64, 0);
    b.push_slot::<i64>(slot(3), size as i64, 0);
    b.push_slot_always(slot(4), link);
    b.push_slot::<i64>(slot(5), m.mode as i64, 0);
    b.push_slot::<u32>(slot(6), m.uid as u32, 0);
    b.push_slot::<u32>(slot(7), m.gid as u32, 0);
    b.push_slot_always(slot(8), uname);
    b.push_slot_always(slot(9), gname);
    b.push_slot_always(slot(10), mtime);
    b.push_slot::<i64>(slot(11), m.dev.0 as i64, 0);
    b.push_slot::<i64>(slot(12), m.dev.1 as i64, 0);
    b.push_slot_always(slot(13), xattrs);
    b.end_table(t)
}
