//! RPM packages (Fedora, RHEL, Rocky, openSUSE, Amazon Linux): the SQLite database of
//! rpm ≥ 4.16 (`/var/lib/rpm/rpmdb.sqlite` or `/usr/lib/sysimage/rpm/rpmdb.sqlite`,
//! table `Packages(hnum, blob)`), each blob an RPM header: `il` index entries and
//! `dl` bytes of data (big-endian), read for name, epoch, version, release, arch,
//! licence, vendor and the file list (dirnames[dirindexes[i]] + basenames[i]).
//!
//! The older Berkeley DB `Packages` and rpm's own `ndb` `Packages.db` are not read:
//! the scanner warns that the image has an RPM database it cannot list.

use std::path::Path;

use crate::walk::resolve;
use crate::{Distro, Ecosystem, Package};

const DBS: &[&str] = &["/var/lib/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/rpmdb.sqlite"];
const OTHER_DBS: &[&str] = &["/var/lib/rpm/Packages", "/var/lib/rpm/Packages.db", "/usr/lib/sysimage/rpm/Packages.db"];
/// Larger headers are refused (a real one is tens of KiB).
const MAX_HEADER: usize = 64 << 20;

const NAME: u32 = 1000;
const VERSION: u32 = 1001;
const RELEASE: u32 = 1002;
const EPOCH: u32 = 1003;
const VENDOR: u32 = 1011;
const LICENSE: u32 = 1014;
const ARCH: u32 = 1022;
const DIRINDEXES: u32 = 1116;
const BASENAMES: u32 = 1117;
const DIRNAMES: u32 = 1118;

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Ints(Vec<u32>),
    Strings(Vec<String>),
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The tags of one header blob that kiln reads.
fn parse_header(blob: &[u8]) -> Option<Vec<(u32, Value)>> {
    let il = be32(blob, 0)? as usize;
    let dl = be32(blob, 4)? as usize;
    let data_start = 8usize.checked_add(il.checked_mul(16)?)?;
    if blob.len() > MAX_HEADER || data_start.checked_add(dl)? > blob.len() {
        return None;
    }
    let data = &blob[data_start..data_start + dl];
    let mut out = Vec::new();
    for i in 0..il {
        let e = 8 + i * 16;
        let (tag, ty, off, count) = (be32(blob, e)?, be32(blob, e + 4)?, be32(blob, e + 8)? as usize, be32(blob, e + 12)? as usize);
        if !matches!(tag, NAME | VERSION | RELEASE | EPOCH | VENDOR | LICENSE | ARCH | DIRINDEXES | BASENAMES | DIRNAMES) || off > data.len() {
            continue;
        }
        let v = match ty {
            // INT32
            4 => Value::Ints((0..count.min(data.len() / 4)).filter_map(|k| be32(data, off + 4 * k)).collect()),
            // STRING, STRING_ARRAY, I18NSTRING: NUL-terminated strings
            6 | 8 | 9 => {
                let n = if ty == 6 { 1 } else { count };
                let strings: Vec<String> = data[off..].split(|b| *b == 0).take(n).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
                Value::Strings(strings)
            }
            _ => continue,
        };
        out.push((tag, v));
    }
    Some(out)
}

fn string(tags: &[(u32, Value)], tag: u32) -> Option<String> {
    tags.iter().find(|(t, _)| *t == tag).and_then(|(_, v)| match v {
        Value::Strings(s) => s.first().cloned(),
        Value::Ints(_) => None,
    })
}

fn strings(tags: &[(u32, Value)], tag: u32) -> Vec<String> {
    tags.iter().find(|(t, _)| *t == tag).map(|(_, v)| match v {
        Value::Strings(s) => s.clone(),
        Value::Ints(_) => Vec::new(),
    }).unwrap_or_default()
}

fn ints(tags: &[(u32, Value)], tag: u32) -> Vec<u32> {
    tags.iter().find(|(t, _)| *t == tag).map(|(_, v)| match v {
        Value::Ints(i) => i.clone(),
        Value::Strings(_) => Vec::new(),
    }).unwrap_or_default()
}

/// A package of one header blob.
pub fn package(blob: &[u8], distro: Option<&Distro>, found_at: &str) -> Option<Package> {
    let tags = parse_header(blob)?;
    let name = string(&tags, NAME)?;
    // The gpg-pubkey pseudo-packages are keys, not software.
    if name == "gpg-pubkey" {
        return None;
    }
    let version = format!("{}-{}", string(&tags, VERSION)?, string(&tags, RELEASE).unwrap_or_default());
    let arch = string(&tags, ARCH);
    let epoch = ints(&tags, EPOCH).first().copied();
    let dirs = strings(&tags, DIRNAMES);
    let files: Vec<String> = strings(&tags, BASENAMES)
        .iter()
        .zip(ints(&tags, DIRINDEXES))
        .filter_map(|(b, i)| dirs.get(i as usize).map(|d| format!("{d}{b}")))
        .collect();
    let id = distro.map(|d| d.id.as_str()).filter(|i| !i.is_empty()).unwrap_or("rpm");
    let mut q = vec![("arch", arch.clone().unwrap_or_default())];
    if let Some(e) = epoch {
        q.push(("epoch", e.to_string()));
    }
    if let Some(d) = distro {
        q.push(("distro", format!("{}-{}", d.id, d.version_id)));
    }
    Some(Package {
        ecosystem: Ecosystem::Rpm,
        purl: crate::purl::purl("rpm", Some(id), &name, &version, &q),
        name,
        version,
        licenses: string(&tags, LICENSE).into_iter().collect(),
        files,
        found_at: found_at.to_string(),
        arch,
        supplier: string(&tags, VENDOR),
    })
}

pub fn scan(root: &Path, distro: Option<&Distro>, out: &mut Vec<Package>, warnings: &mut Vec<String>) {
    let mut read_one = false;
    for db in DBS {
        let Some(host) = resolve(root, db).filter(|h| h.is_file()) else { continue };
        // Read-only and immutable: never write a journal into the image.
        let uri = format!("file:{}?immutable=1", host.display());
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let rows = rusqlite::Connection::open_with_flags(&uri, flags).and_then(|c| {
            let mut st = c.prepare("SELECT blob FROM Packages ORDER BY hnum")?;
            let blobs: Vec<Vec<u8>> = st.query_map([], |r| r.get::<_, Vec<u8>>(0))?.collect::<Result<_, _>>()?;
            Ok(blobs)
        });
        match rows {
            Ok(blobs) => {
                read_one = true;
                out.extend(blobs.iter().filter_map(|b| package(b, distro, db)));
            }
            Err(e) => warnings.push(format!("{db}: cannot read the RPM database: {e}")),
        }
    }
    if !read_one {
        for db in OTHER_DBS {
            if resolve(root, db).is_some_and(|h| h.is_file()) {
                warnings.push(format!("{db}: an RPM database kiln cannot read (Berkeley DB or ndb; rpm >= 4.16's SQLite is read): its packages are not listed"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header blob from (tag, type, data) entries, laid out as rpm does.
    fn header(entries: &[(u32, u32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for (tag, ty, count, bytes) in entries {
            while ty == &4 && data.len() % 4 != 0 {
                data.push(0);
            }
            for v in [*tag, *ty, data.len() as u32, *count] {
                index.extend(v.to_be_bytes());
            }
            data.extend(bytes);
        }
        let mut b = (entries.len() as u32).to_be_bytes().to_vec();
        b.extend((data.len() as u32).to_be_bytes());
        b.extend(index);
        b.extend(data);
        b
    }

    #[test]
    fn header_blob() {
        let s = |t: &str| format!("{t}\0").into_bytes();
        let blob = header(&[
            (NAME, 6, 1, s("bash")),
            (VERSION, 6, 1, s("5.2.15")),
            (RELEASE, 6, 1, s("2.fc39")),
            (EPOCH, 4, 1, 1u32.to_be_bytes().to_vec()),
            (LICENSE, 6, 1, s("GPL-3.0-or-later")),
            (ARCH, 6, 1, s("x86_64")),
            (DIRINDEXES, 4, 2, [0u32, 1].iter().flat_map(|v| v.to_be_bytes()).collect()),
            (BASENAMES, 8, 2, [s("bash"), s("README")].concat()),
            (DIRNAMES, 8, 2, [s("/usr/bin/"), s("/usr/share/doc/bash/")].concat()),
        ]);
        let d = Distro { id: "fedora".into(), version_id: "39".into(), pretty_name: String::new() };
        let p = package(&blob, Some(&d), "/var/lib/rpm/rpmdb.sqlite").unwrap();
        assert_eq!(p.purl, "pkg:rpm/fedora/bash@5.2.15-2.fc39?arch=x86_64&distro=fedora-39&epoch=1");
        assert_eq!(p.files, ["/usr/bin/bash", "/usr/share/doc/bash/README"]);
        assert_eq!(p.licenses, ["GPL-3.0-or-later"]);
        // Truncated or lying headers are refused, never read past their end.
        assert!(package(&blob[..blob.len() - 3], Some(&d), "x").is_none());
        let mut lie = blob.clone();
        lie[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(package(&lie, Some(&d), "x").is_none());
    }
}
