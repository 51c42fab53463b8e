//! Java archives (`*.jar`, `*.war`, `*.ear`): Maven coordinates from
//! `META-INF/maven/GROUP/ARTIFACT/pom.properties`, else the manifest's
//! `Implementation-Title`/`-Version` (or `Bundle-SymbolicName`/`-Version`).
//!
//! A jar is a zip. Only the central directory and the two kinds of small entries
//! are read (stored or deflated, each at most 1 MiB), so no zip crate is needed:
//! flate2 is already a dependency and this is all of the format kiln reads.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::{Ecosystem, Package};

const MAX_ENTRY: u64 = 1 << 20;
const MAX_CENTRAL: u64 = 16 << 20;

struct Entry {
    name: String,
    method: u16,
    compressed: u64,
    offset: u64,
}

fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The central directory's entries (from the end-of-central-directory record).
fn entries(f: &mut std::fs::File) -> Option<Vec<Entry>> {
    let len = f.metadata().ok()?.len();
    let tail_len = len.min(65_557);
    f.seek(SeekFrom::Start(len - tail_len)).ok()?;
    let mut tail = vec![0u8; tail_len as usize];
    f.read_exact(&mut tail).ok()?;
    let eocd = (0..tail.len().saturating_sub(21)).rev().find(|&i| tail[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])?;
    let size = u64::from(u32le(&tail, eocd + 12));
    let start = u64::from(u32le(&tail, eocd + 16));
    if size > MAX_CENTRAL || start + size > len {
        return None;
    }
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut cd = vec![0u8; size as usize];
    f.read_exact(&mut cd).ok()?;
    let mut out = Vec::new();
    let mut i = 0;
    while i + 46 <= cd.len() && cd[i..i + 4] == [0x50, 0x4b, 0x01, 0x02] {
        let (n, x, c) = (u16le(&cd, i + 28) as usize, u16le(&cd, i + 30) as usize, u16le(&cd, i + 32) as usize);
        let name = String::from_utf8_lossy(cd.get(i + 46..i + 46 + n)?).into_owned();
        out.push(Entry { name, method: u16le(&cd, i + 10), compressed: u64::from(u32le(&cd, i + 20)), offset: u64::from(u32le(&cd, i + 42)) });
        i += 46 + n + x + c;
    }
    Some(out)
}

/// One entry's bytes (stored or deflated, bounded).
fn read_entry(f: &mut std::fs::File, e: &Entry) -> Option<Vec<u8>> {
    if e.compressed > MAX_ENTRY {
        return None;
    }
    let mut local = [0u8; 30];
    f.seek(SeekFrom::Start(e.offset)).ok()?;
    f.read_exact(&mut local).ok()?;
    if local[..4] != [0x50, 0x4b, 0x03, 0x04] {
        return None;
    }
    let skip = u64::from(u16le(&local, 26)) + u64::from(u16le(&local, 28));
    f.seek(SeekFrom::Current(skip as i64)).ok()?;
    let mut raw = vec![0u8; e.compressed as usize];
    f.read_exact(&mut raw).ok()?;
    match e.method {
        0 => Some(raw),
        8 => {
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(&raw[..]).take(MAX_ENTRY).read_to_end(&mut out).ok()?;
            Some(out)
        }
        _ => None,
    }
}

fn properties(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(['=', ':']).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect()
}

fn get<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

fn maven(group: &str, artifact: &str, version: &str, found_at: &str) -> Package {
    Package {
        ecosystem: Ecosystem::Maven,
        name: format!("{group}:{artifact}"),
        version: version.to_string(),
        purl: crate::purl::purl("maven", Some(group), artifact, version, &[]),
        licenses: Vec::new(),
        files: vec![found_at.to_string()],
        found_at: found_at.to_string(),
        arch: None,
        supplier: None,
    }
}

/// The packages of one archive: every pom.properties, else the manifest's title.
pub fn scan_jar(host: &Path, path: &str) -> Vec<Package> {
    let Ok(mut f) = std::fs::File::open(host) else { return Vec::new() };
    let Some(list) = entries(&mut f) else { return Vec::new() };
    let mut out = Vec::new();
    for e in list.iter().filter(|e| e.name.starts_with("META-INF/maven/") && e.name.ends_with("/pom.properties")) {
        let Some(bytes) = read_entry(&mut f, e) else { continue };
        let p = properties(&String::from_utf8_lossy(&bytes));
        if let (Some(g), Some(a), Some(v)) = (get(&p, "groupId"), get(&p, "artifactId"), get(&p, "version")) {
            out.push(maven(g, a, v, path));
        }
    }
    if out.is_empty() {
        if let Some(e) = list.iter().find(|e| e.name == "META-INF/MANIFEST.MF") {
            if let Some(bytes) = read_entry(&mut f, e) {
                let p = properties(&String::from_utf8_lossy(&bytes));
                let title = get(&p, "Implementation-Title").or(get(&p, "Bundle-SymbolicName")).map(|t| t.split(';').next().unwrap_or(t).to_string());
                let version = get(&p, "Implementation-Version").or(get(&p, "Bundle-Version"));
                if let (Some(t), Some(v)) = (title, version) {
                    let group = get(&p, "Implementation-Vendor-Id").unwrap_or(&t).to_string();
                    out.push(maven(&group, &t, v, path));
                }
            }
        }
    }
    out
}

pub fn scan(root: &Path, jars: &[String], out: &mut Vec<Package>) {
    for j in jars {
        out.extend(scan_jar(&root.join(&j[1..]), j));
    }
}
