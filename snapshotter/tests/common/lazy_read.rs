//! Readers of the lazy-pull layer formats, written from the format descriptions and
//! not from kiln's writers: stargz-snapshotter `docs/estargz.md` (footer, TOC,
//! gzip members at each file and chunk, chunk digests, annotations) and
//! containers/storage `pkg/chunked` (skippable frames, footer, TOC offsets and
//! digests, tar-split that rebuilds the tar). Each check returns the decompressed
//! tar so callers can compare trees. Shared by snapshotter and integration tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;

use base64::Engine as _;
use serde_json::Value;

fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(data);
    format!("sha256:{}", h.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// One tar entry as a plain reader sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TarItem {
    pub name: String,
    pub kind: u8,
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub link: String,
    pub data: Vec<u8>,
}

/// The entries of a tar, through the `tar` crate (PAX and GNU names resolved).
pub fn tar_items(tar_bytes: &[u8]) -> Vec<TarItem> {
    let mut a = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for e in a.entries().expect("tar entries") {
        let mut e = e.expect("tar entry");
        let h = e.header().clone();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let link = e.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned()).unwrap_or_default();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("tar entry data");
        out.push(TarItem {
            name,
            kind: h.entry_type().as_byte(),
            size: e.size(),
            mode: h.mode().expect("mode"),
            uid: h.uid().expect("uid"),
            gid: h.gid().expect("gid"),
            link,
            data,
        });
    }
    out
}

fn type_of(kind: u8) -> &'static str {
    match kind {
        b'0' | 0 | b'7' => "reg",
        b'1' => "hardlink",
        b'2' => "symlink",
        b'3' => "char",
        b'4' => "block",
        b'5' => "dir",
        b'6' => "fifo",
        _ => "?",
    }
}

fn clean(name: &str) -> String {
    name.trim_start_matches("./").trim_end_matches('/').to_string()
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Decompress one gzip member starting at `at`; returns its bytes.
fn gzip_member(blob: &[u8], at: usize) -> Result<Vec<u8>, String> {
    if blob.get(at..at + 2) != Some(&[0x1f, 0x8b][..]) {
        return Err(format!("no gzip header at offset {at}"));
    }
    let mut d = flate2::read::GzDecoder::new(&blob[at..]);
    let mut out = Vec::new();
    d.read_to_end(&mut out).map_err(|e| format!("gzip member at {at}: {e}"))?;
    Ok(out)
}

/// Checks an eStargz blob against the spec; returns the decompressed tar.
pub fn check_estargz(blob: &[u8], annotations: &BTreeMap<String, String>) -> Result<Vec<u8>, String> {
    // Footer: 51 bytes, an empty gzip member with extra field SG / %016xSTARGZ.
    if blob.len() < 51 {
        return Err("blob shorter than the footer".into());
    }
    let footer = &blob[blob.len() - 51..];
    if footer[0..4] != [0x1f, 0x8b, 8, 4] {
        return Err("footer: not a gzip header with FEXTRA".into());
    }
    let xlen = u16::from_le_bytes([footer[10], footer[11]]);
    let sub_len = u16::from_le_bytes([footer[14], footer[15]]);
    if xlen != 26 || &footer[12..14] != b"SG" || sub_len != 22 || &footer[32..38] != b"STARGZ" {
        return Err(format!("footer: bad extra field {:?}", &footer[10..38]));
    }
    let toc_offset = u64::from_str_radix(std::str::from_utf8(&footer[16..32]).map_err(|e| e.to_string())?, 16).map_err(|e| e.to_string())? as usize;
    let empty = gzip_member(footer, 0)?;
    if !empty.is_empty() {
        return Err("footer member is not empty".into());
    }
    // The TOC: a member at toc_offset holding a tar with stargz.index.json last.
    let toc_tar = gzip_member(blob, toc_offset)?;
    let toc_items = tar_items(&toc_tar);
    if toc_items.len() != 1 || toc_items[0].name != "stargz.index.json" {
        return Err(format!("TOC member holds {:?}", toc_items.iter().map(|i| &i.name).collect::<Vec<_>>()));
    }
    let json = &toc_items[0].data;
    if annotations.get("containerd.io/snapshot/stargz/toc.digest") != Some(&sha256(json)) {
        return Err("toc.digest annotation is not the TOC's sha256".into());
    }
    let toc: Value = serde_json::from_slice(json).map_err(|e| format!("TOC JSON: {e}"))?;
    if toc["version"] != 1 {
        return Err("TOC version is not 1".into());
    }
    let entries = toc["entries"].as_array().ok_or("TOC has no entries")?;
    // The whole blob decompresses as one gzip stream (all members).
    let mut tar_bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(blob).read_to_end(&mut tar_bytes).map_err(|e| format!("as plain gzip: {e}"))?;
    if annotations.get("io.containers.estargz.uncompressed-size") != Some(&tar_bytes.len().to_string()) {
        return Err("uncompressed-size annotation is not the tar's size".into());
    }
    let items = tar_items(&tar_bytes);
    if items.last().map(|i| i.name.as_str()) != Some("stargz.index.json") {
        return Err("stargz.index.json is not the last tar entry".into());
    }
    if items[0].name != ".no.prefetch.landmark" || items[0].data != [0x0f] {
        return Err("the first entry is not the no-prefetch landmark with content 0xf".into());
    }
    // Every tar entry but the TOC, in order, with its chunks after a reg entry.
    let mut e = entries.iter().peekable();
    for item in &items[..items.len() - 1] {
        let ent = e.next().ok_or_else(|| format!("{}: not in the TOC", item.name))?;
        if clean(s(ent, "name")) != clean(&item.name) || s(ent, "type") != type_of(item.kind) {
            return Err(format!("TOC entry {ent} for tar entry {} ({})", item.name, item.kind as char));
        }
        if u(ent, "mode") & 0o7777 != item.mode as u64 & 0o7777 || u(ent, "uid") != item.uid || u(ent, "gid") != item.gid {
            return Err(format!("{}: TOC mode/uid/gid differ from the tar header", item.name));
        }
        if matches!(item.kind, b'1' | b'2') && s(ent, "linkName") != item.link {
            return Err(format!("{}: linkName differs", item.name));
        }
        if type_of(item.kind) != "reg" || item.size == 0 {
            continue;
        }
        if u(ent, "size") != item.size || s(ent, "digest") != sha256(&item.data) {
            return Err(format!("{}: TOC size or digest is not the file's", item.name));
        }
        // The chunks: reg first, then `chunk` entries, each at a gzip header.
        let mut chunks = vec![ent];
        while e.peek().is_some_and(|n| s(n, "type") == "chunk") {
            chunks.push(e.next().expect("peeked"));
        }
        let mut covered = 0u64;
        for (i, c) in chunks.iter().enumerate() {
            let at = u(c, "offset") as usize;
            let from = u(c, "chunkOffset");
            if from != covered {
                return Err(format!("{}: chunk {i} starts at {from}, expected {covered}", item.name));
            }
            let last = i == chunks.len() - 1;
            let size = if last { item.size - from } else { u(c, "chunkSize") };
            if last && u(c, "chunkSize") != 0 && u(c, "chunkSize") != size {
                return Err(format!("{}: last chunk size", item.name));
            }
            let mut d = flate2::read::GzDecoder::new(blob.get(at..).ok_or("offset past the blob")?);
            if blob.get(at..at + 2) != Some(&[0x1f, 0x8b][..]) {
                return Err(format!("{}: chunk {i} at {at} is not at a gzip header", item.name));
            }
            let mut got = vec![0; size as usize];
            d.read_exact(&mut got).map_err(|err| format!("{}: chunk {i}: {err}", item.name))?;
            let want = &item.data[from as usize..(from + size) as usize];
            if got != want || s(c, "chunkDigest") != sha256(want) {
                return Err(format!("{}: chunk {i} content or chunkDigest wrong", item.name));
            }
            covered += size;
        }
        if covered != item.size {
            return Err(format!("{}: chunks cover {covered} of {}", item.name, item.size));
        }
    }
    if e.next().is_some() {
        return Err("TOC lists entries the tar does not have".into());
    }
    Ok(tar_bytes)
}

/// CRC-64/ISO as Go computes it, bit by bit (tar-split's per-file checksum).
fn crc64_iso(data: &[u8]) -> u64 {
    let mut crc: u64 = !0;
    for &b in data {
        crc ^= b as u64;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xD800_0000_0000_0000 } else { crc >> 1 };
        }
    }
    !crc
}

fn le(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
}

/// Checks a zstd:chunked blob against containers/storage's format; returns the
/// decompressed tar.
pub fn check_zstd_chunked(blob: &[u8], annotations: &BTreeMap<String, String>) -> Result<Vec<u8>, String> {
    let skippable = [0x50, 0x2a, 0x4d, 0x18];
    if blob.len() < 72 {
        return Err("blob shorter than the footer".into());
    }
    let f = &blob[blob.len() - 72..];
    if f[0..4] != skippable || u32::from_le_bytes(f[4..8].try_into().expect("4")) != 64 || &f[64..72] != b"GNUlInUx" {
        return Err("footer: not a 64-byte skippable frame ending in GNUlInUx".into());
    }
    let foot = &f[8..];
    let (m_off, m_len, m_raw, m_type, t_off, t_len, t_raw) = (le(foot, 0), le(foot, 1), le(foot, 2), le(foot, 3), le(foot, 4), le(foot, 5), le(foot, 6));
    if m_type != 1 {
        return Err("footer: manifest type is not 1".into());
    }
    if annotations.get("io.github.containers.zstd-chunked.manifest-position") != Some(&format!("{m_off}:{m_len}:{m_raw}:1")) {
        return Err("manifest-position annotation does not match the footer".into());
    }
    if annotations.get("io.github.containers.zstd-chunked.tarsplit-position") != Some(&format!("{t_off}:{t_len}:{t_raw}")) {
        return Err("tarsplit-position annotation does not match the footer".into());
    }
    let frame = |off: u64, len: u64| -> Result<&[u8], String> {
        let (off, len) = (off as usize, len as usize);
        let head = blob.get(off - 8..off).ok_or("frame offset")?;
        if head[0..4] != skippable || u32::from_le_bytes(head[4..8].try_into().expect("4")) as usize != len {
            return Err(format!("no skippable frame header before offset {off}"));
        }
        blob.get(off..off + len).ok_or_else(|| "frame past the blob".to_string())
    };
    let compressed = frame(m_off, m_len)?;
    if annotations.get("io.github.containers.zstd-chunked.manifest-checksum") != Some(&sha256(compressed)) {
        return Err("manifest-checksum is not the compressed TOC's sha256".into());
    }
    let manifest = zstd::bulk::decompress(compressed, m_raw as usize).map_err(|e| format!("TOC: {e}"))?;
    if manifest.len() as u64 != m_raw {
        return Err("TOC uncompressed length".into());
    }
    let toc: Value = serde_json::from_slice(&manifest).map_err(|e| format!("TOC JSON: {e}"))?;
    let split_c = frame(t_off, t_len)?;
    if s(&toc, "tarSplitDigest") != sha256(split_c) {
        return Err("tarSplitDigest is not the tar-split frame's sha256".into());
    }
    // The whole blob is a zstd stream a plain decoder reads (skippable frames skipped).
    let mut tar_bytes = Vec::new();
    zstd::stream::read::Decoder::new(blob).map_err(|e| e.to_string())?.read_to_end(&mut tar_bytes).map_err(|e| format!("as plain zstd: {e}"))?;
    let items = tar_items(&tar_bytes);
    let entries = toc["entries"].as_array().ok_or("TOC has no entries")?;
    let mut e = entries.iter().peekable();
    let by_name: BTreeMap<String, &TarItem> = items.iter().map(|i| (i.name.clone(), i)).collect();
    let range = |a: u64, b: u64| -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(blob.get(a as usize..b as usize).ok_or("range past the blob")?)
            .map_err(|e| e.to_string())?
            .read_to_end(&mut out)
            .map_err(|e| format!("frames {a}..{b}: {e}"))?;
        Ok(out)
    };
    for item in &items {
        let ent = e.next().ok_or_else(|| format!("{}: not in the TOC", item.name))?;
        if s(ent, "name") != item.name || s(ent, "type") != type_of(item.kind) || u(ent, "size") != item.size {
            return Err(format!("TOC entry {ent} for tar entry {}", item.name));
        }
        if u(ent, "mode") & 0o7777 != item.mode as u64 & 0o7777 || u(ent, "uid") != item.uid || u(ent, "gid") != item.gid {
            return Err(format!("{}: TOC mode/uid/gid differ from the tar header", item.name));
        }
        if item.kind != b'0' || item.size == 0 {
            continue;
        }
        if s(ent, "digest") != sha256(&item.data) {
            return Err(format!("{}: digest", item.name));
        }
        // The content's frames alone decompress to the content.
        if range(u(ent, "offset"), u(ent, "endOffset"))? != item.data {
            return Err(format!("{}: offset..endOffset is not the content", item.name));
        }
        let mut chunks = vec![ent];
        while e.peek().is_some_and(|n| s(n, "type") == "chunk") {
            chunks.push(e.next().expect("peeked"));
        }
        if chunks.len() > 1 {
            let mut covered = 0;
            for (i, c) in chunks.iter().enumerate() {
                let size = u(c, "chunkSize");
                if u(c, "chunkOffset") != covered {
                    return Err(format!("{}: chunk {i} offset", item.name));
                }
                let end = chunks.get(i + 1).map(|n| u(n, "offset")).unwrap_or(u(ent, "endOffset"));
                let got = range(u(c, "offset"), end)?;
                let want = &item.data[covered as usize..(covered + size) as usize];
                if got != want || s(c, "chunkDigest") != sha256(want) {
                    return Err(format!("{}: chunk {i} content or digest", item.name));
                }
                covered += size;
            }
            if covered != item.size {
                return Err(format!("{}: chunks cover {covered} of {}", item.name, item.size));
            }
        }
    }
    if e.next().is_some() {
        return Err("TOC lists entries the tar does not have".into());
    }
    // tar-split: segments and files rebuild the tar byte for byte.
    let split = zstd::bulk::decompress(split_c, t_raw as usize).map_err(|e| format!("tar-split: {e}"))?;
    let mut rebuilt = Vec::new();
    for (pos, line) in split.split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        let v: Value = serde_json::from_slice(line).map_err(|e| format!("tar-split line: {e}"))?;
        if u(&v, "position") != pos as u64 {
            return Err("tar-split positions are not 0, 1, 2, ...".into());
        }
        let payload = match v.get("payload").and_then(Value::as_str) {
            Some(p) => base64::engine::general_purpose::STANDARD.decode(p).map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        match u(&v, "type") {
            2 => rebuilt.extend_from_slice(&payload),
            1 => {
                let name = s(&v, "name");
                let item = by_name.get(name).ok_or_else(|| format!("tar-split names {name}, not in the tar"))?;
                if u(&v, "size") != item.size {
                    return Err(format!("tar-split size of {name}"));
                }
                if item.size > 0 {
                    if payload != crc64_iso(&item.data).to_be_bytes() {
                        return Err(format!("tar-split CRC-64 of {name}"));
                    }
                    rebuilt.extend_from_slice(&item.data);
                }
            }
            t => return Err(format!("tar-split entry type {t}")),
        }
    }
    if rebuilt != tar_bytes {
        return Err(format!("tar-split rebuilds {} bytes, not the {}-byte tar", rebuilt.len(), tar_bytes.len()));
    }
    Ok(tar_bytes)
}

/// A flatbuffer read by hand (root table, vtables, strings, vectors): the reader
/// of SOCI's `ztoc.fbs` needs no generated code and shares nothing with the writer.
struct Fb<'a>(&'a [u8]);

impl<'a> Fb<'a> {
    fn u16(&self, at: usize) -> Result<u16, String> {
        self.0.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]])).ok_or_else(|| format!("flatbuffer: read past the end at {at}"))
    }
    fn u32(&self, at: usize) -> Result<u32, String> {
        self.0.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4"))).ok_or_else(|| format!("flatbuffer: read past the end at {at}"))
    }
    fn i64(&self, at: usize) -> Result<i64, String> {
        self.0.get(at..at + 8).map(|b| i64::from_le_bytes(b.try_into().expect("8"))).ok_or_else(|| format!("flatbuffer: read past the end at {at}"))
    }
    fn root(&self) -> Result<usize, String> {
        Ok(self.u32(0)? as usize)
    }
    /// The position of field `n` of the table at `t`, if present.
    fn field(&self, t: usize, n: usize) -> Result<Option<usize>, String> {
        let vt = (t as i64 - self.u32(t)? as i32 as i64) as usize;
        let vt_len = self.u16(vt)? as usize;
        if 4 + 2 * n >= vt_len {
            return Ok(None);
        }
        let off = self.u16(vt + 4 + 2 * n)? as usize;
        Ok((off != 0).then_some(t + off))
    }
    fn deref(&self, at: usize) -> Result<usize, String> {
        Ok(at + self.u32(at)? as usize)
    }
    fn string(&self, t: usize, n: usize) -> Result<String, String> {
        let Some(f) = self.field(t, n)? else { return Ok(String::new()) };
        let s = self.deref(f)?;
        let len = self.u32(s)? as usize;
        let b = self.0.get(s + 4..s + 4 + len).ok_or("flatbuffer: string past the end")?;
        String::from_utf8(b.to_vec()).map_err(|e| e.to_string())
    }
    fn long(&self, t: usize, n: usize) -> Result<i64, String> {
        self.field(t, n)?.map(|f| self.i64(f)).unwrap_or(Ok(0))
    }
    fn table(&self, t: usize, n: usize) -> Result<usize, String> {
        let f = self.field(t, n)?.ok_or_else(|| format!("flatbuffer: table field {n} missing"))?;
        self.deref(f)
    }
    /// (position of the first element, count) of a vector field.
    fn vector(&self, t: usize, n: usize) -> Result<(usize, usize), String> {
        let Some(f) = self.field(t, n)? else { return Ok((0, 0)) };
        let v = self.deref(f)?;
        Ok((v + 4, self.u32(v)? as usize))
    }
}

/// Checks a SOCI ztoc (soci-snapshotter `ztoc/fbs/ztoc.fbs`, zinfo v2 of
/// `ztoc/compression/gzip_zinfo.c`) against the gzip layer it describes: sizes, every
/// tar entry with the offset of its content, the access points (raw inflate from
/// each with its window gives the tar's bytes there) and the span digests.
pub fn check_ztoc(blob: &[u8], ztoc: &[u8]) -> Result<(), String> {
    let fb = Fb(ztoc);
    let root = fb.root()?;
    if fb.string(root, 0)? != "0.9" {
        return Err(format!("ztoc version {:?}", fb.string(root, 0)?));
    }
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(blob).read_to_end(&mut tar).map_err(|e| e.to_string())?;
    if fb.long(root, 2)? as usize != blob.len() || fb.long(root, 3)? as usize != tar.len() {
        return Err(format!("ztoc sizes {} / {}, blob {} / tar {}", fb.long(root, 2)?, fb.long(root, 3)?, blob.len(), tar.len()));
    }
    // The TOC: every tar entry, in order, its content where the ztoc says.
    let toc = fb.table(root, 4)?;
    let (at, n) = fb.vector(toc, 0)?;
    let items = tar_items(&tar);
    if n != items.len() {
        return Err(format!("ztoc lists {n} entries, the tar has {}", items.len()));
    }
    for (i, item) in items.iter().enumerate() {
        let t = fb.deref(at + 4 * i)?;
        let (name, kind, off, size) = (fb.string(t, 0)?, fb.string(t, 1)?, fb.long(t, 2)? as usize, fb.long(t, 3)? as usize);
        if clean(&name) != clean(&item.name) || kind != type_of(item.kind) {
            return Err(format!("ztoc entry {i}: {name} {kind}, tar: {} {}", item.name, item.kind as char));
        }
        if fb.long(t, 5)? as u64 & 0o7777 != item.mode as u64 & 0o7777 {
            return Err(format!("{name}: ztoc mode"));
        }
        if kind == "reg" && (size as u64 != item.size || tar.get(off..off + size) != Some(&item.data[..])) {
            return Err(format!("{name}: the tar at uncompressed_offset {off} is not the file's {size} bytes"));
        }
    }
    // The access points and spans.
    let info = fb.table(root, 5)?;
    if fb.field(info, 0)?.is_some_and(|f| ztoc[f] != 1) {
        return Err("compression_algorithm is not gzip".into());
    }
    let (cp_at, cp_len) = fb.vector(info, 3)?;
    let zinfo = &ztoc[cp_at..cp_at + cp_len];
    let count = i32::from_le_bytes(zinfo[0..4].try_into().expect("4")) as usize;
    const POINT: usize = 8 + 8 + 1 + 32768;
    if zinfo.len() != 12 + count * POINT || count == 0 {
        return Err(format!("zinfo blob of {} bytes for {count} checkpoints", zinfo.len()));
    }
    let max_span = fb.field(info, 1)?.map(|f| fb.u32(f)).transpose()?.unwrap_or(0) as usize;
    let (dg_at, dg_n) = fb.vector(info, 2)?;
    if max_span + 1 != count || dg_n != count {
        return Err(format!("max_span_id {max_span}, {dg_n} span digests, {count} checkpoints"));
    }
    let point = |i: usize| {
        let p = &zinfo[12 + i * POINT..12 + (i + 1) * POINT];
        (u64::from_le_bytes(p[0..8].try_into().expect("8")) as usize, u64::from_le_bytes(p[8..16].try_into().expect("8")) as usize, p[16], &p[17..])
    };
    if point(0).0 != 10 || point(0).1 != 0 {
        return Err("the first access point is not after the 10-byte gzip header at output 0".into());
    }
    for i in 0..count {
        let (comp, out, bits, window) = point(i);
        if bits != 0 {
            return Err(format!("access point {i} has {bits} bits (kiln's are byte-aligned)"));
        }
        let end = if i + 1 < count { point(i + 1).0 } else { blob.len() };
        let s = fb.deref(dg_at + 4 * i)?;
        let len = fb.u32(s)? as usize;
        let want = std::str::from_utf8(&ztoc[s + 4..s + 4 + len]).map_err(|e| e.to_string())?;
        if want != sha256(&blob[comp..end]) {
            return Err(format!("span {i}: digest is not the sha256 of bytes {comp}..{end}"));
        }
        // Raw inflate from the access point with its window: the tar's bytes there.
        let mut d = flate2::Decompress::new(false);
        d.set_dictionary(window).map_err(|e| format!("access point {i}: dictionary: {e}"))?;
        let next_out = if i + 1 < count { point(i + 1).1 } else { tar.len() };
        let mut got = vec![0u8; (next_out - out).min(256 * 1024)];
        let _ = d.decompress(&blob[comp..], &mut got, flate2::FlushDecompress::Sync).map_err(|e| format!("access point {i}: inflate: {e}"))?;
        let n = d.total_out() as usize;
        if n < got.len() || got[..n] != tar[out..out + n] {
            return Err(format!("access point {i} (in {comp}, out {out}): inflating gives {n} bytes that are not the tar's"));
        }
    }
    Ok(())
}
