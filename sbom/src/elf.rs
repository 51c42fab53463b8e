//! Executables: Go's embedded build info (section `.go.buildinfo`: the main module
//! and every dependency with its version) and cargo-auditable's dependency list
//! (section `.dep-v0`, zlib-compressed JSON). Only the ELF header, the section
//! headers and the one section are read, each bounded.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::{Ecosystem, Package};

/// Largest section read (a big Go binary's build info is a few KiB).
const MAX_SECTION: u64 = 8 << 20;

struct Elf {
    file: std::fs::File,
    little: bool,
    wide: bool,
}

impl Elf {
    fn open(path: &Path) -> Option<Elf> {
        let mut file = std::fs::File::open(path).ok()?;
        let mut ident = [0u8; 16];
        file.read_exact(&mut ident).ok()?;
        if &ident[..4] != b"\x7fELF" {
            return None;
        }
        Some(Elf { file, wide: ident[4] == 2, little: ident[5] == 1 })
    }

    fn read_at(&mut self, off: u64, len: u64) -> Option<Vec<u8>> {
        if len > MAX_SECTION {
            return None;
        }
        let mut buf = vec![0u8; len as usize];
        self.file.seek(SeekFrom::Start(off)).ok()?;
        self.file.read_exact(&mut buf).ok()?;
        Some(buf)
    }

    fn num(&self, b: &[u8]) -> u64 {
        let mut v = 0u64;
        let bytes: Vec<u8> = if self.little { b.iter().rev().copied().collect() } else { b.to_vec() };
        for x in bytes {
            v = (v << 8) | u64::from(x);
        }
        v
    }

    /// The bytes of the section called `want`.
    fn section(&mut self, want: &str) -> Option<Vec<u8>> {
        let hdr = self.read_at(0, if self.wide { 64 } else { 52 })?;
        let (shoff, shentsize, shnum, shstrndx) = if self.wide {
            (self.num(&hdr[40..48]), self.num(&hdr[58..60]), self.num(&hdr[60..62]), self.num(&hdr[62..64]))
        } else {
            (self.num(&hdr[32..36]), self.num(&hdr[46..48]), self.num(&hdr[48..50]), self.num(&hdr[50..52]))
        };
        if shnum == 0 || shentsize < 40 || shstrndx >= shnum {
            return None;
        }
        let table = self.read_at(shoff, shentsize * shnum)?;
        let entry = |i: u64| &table[(i * shentsize) as usize..((i + 1) * shentsize) as usize];
        let geom = |e: &[u8], me: &Elf| -> (u64, u64, u64) {
            if me.wide {
                (me.num(&e[0..4]), me.num(&e[24..32]), me.num(&e[32..40]))
            } else {
                (me.num(&e[0..4]), me.num(&e[16..20]), me.num(&e[20..24]))
            }
        };
        let (_, str_off, str_size) = geom(entry(shstrndx), self);
        let names = self.read_at(str_off, str_size)?;
        for i in 0..shnum {
            let (name_off, off, size) = geom(entry(i), self);
            let name = names.get(name_off as usize..).and_then(|n| n.split(|b| *b == 0).next()).unwrap_or_default();
            if name == want.as_bytes() {
                return self.read_at(off, size);
            }
        }
        None
    }
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, x) in b.iter().enumerate().take(10) {
        v |= u64::from(x & 0x7f) << (7 * i);
        if x & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// (Go version, modinfo text) of a Go ≥ 1.18 build-info section (inline strings).
pub fn go_buildinfo(sec: &[u8]) -> Option<(String, String)> {
    if sec.len() < 32 || &sec[..14] != b"\xff Go buildinf:" || sec[15] & 2 == 0 {
        return None;
    }
    let mut rest = &sec[32..];
    let mut strings: Vec<&[u8]> = Vec::new();
    for _ in 0..2 {
        let (len, n) = uvarint(rest)?;
        let end = n.checked_add(usize::try_from(len).ok()?)?;
        strings.push(rest.get(n..end)?);
        rest = &rest[end..];
    }
    let mut modinfo = strings.pop()?;
    // The module info is framed by 16-byte (binary) sentinels.
    if modinfo.len() >= 33 {
        modinfo = &modinfo[16..modinfo.len() - 16];
    }
    Some((String::from_utf8_lossy(strings.pop()?).into_owned(), String::from_utf8_lossy(modinfo).into_owned()))
}

fn go_package(module: &str, version: &str, found_at: &str) -> Package {
    let (ns, name) = module.rsplit_once('/').map(|(n, m)| (Some(n), m)).unwrap_or((None, module));
    Package {
        ecosystem: Ecosystem::Go,
        name: module.to_string(),
        version: version.to_string(),
        purl: crate::purl::purl("golang", ns, name, version, &[]),
        licenses: Vec::new(),
        files: vec![found_at.to_string()],
        found_at: found_at.to_string(),
        arch: None,
        supplier: None,
    }
}

/// The modules of a modinfo text: `mod` and `dep` lines (a `=>` replaces the line
/// before). A binary built outside module mode (Debian's GOPATH builds) records only
/// its `path`: that main package is listed, without a version.
pub fn go_modules(modinfo: &str, found_at: &str) -> Vec<Package> {
    let mut out: Vec<Package> = Vec::new();
    let mut main_path = None;
    for line in modinfo.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["path", path, ..] => main_path = Some(path.to_string()),
            ["mod" | "dep", path, version, ..] => out.push(go_package(path, version, found_at)),
            ["mod" | "dep", path] => out.push(go_package(path, "", found_at)),
            ["=>", path, version, ..] => {
                if out.pop().is_some() {
                    out.push(go_package(path, version, found_at));
                }
            }
            _ => {}
        }
    }
    if out.is_empty() {
        out.extend(main_path.map(|p| go_package(&p, "", found_at)));
    }
    out
}

pub fn scan(root: &Path, executables: &[String], out: &mut Vec<Package>, warnings: &mut Vec<String>) {
    for path in executables {
        let Some(mut elf) = Elf::open(&root.join(&path[1..])) else { continue };
        if let Some(sec) = elf.section(".go.buildinfo") {
            match go_buildinfo(&sec) {
                Some((_go, modinfo)) => out.extend(go_modules(&modinfo, path)),
                None => warnings.push(format!("{path}: Go build info older than Go 1.18 (not read)")),
            }
        }
        if let Some(sec) = elf.section(".dep-v0") {
            let mut json = Vec::new();
            let read = flate2::read::ZlibDecoder::new(&sec[..]).take(MAX_SECTION).read_to_end(&mut json);
            match read {
                Ok(_) => out.extend(crate::cargo::auditable_packages(&json).into_iter().map(|(n, v)| {
                    let mut p = crate::cargo::package(&n, &v, path);
                    p.files = vec![path.clone()];
                    p
                })),
                Err(e) => warnings.push(format!("{path}: cargo-auditable data: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Go 1.18+ section: header, then varint-prefixed version and framed modinfo.
    fn section(version: &str, modinfo: &str) -> Vec<u8> {
        let mut s = b"\xff Go buildinf:".to_vec();
        s.extend([8, 2]);
        s.resize(32, 0);
        let framed = format!("{}{modinfo}{}", "0".repeat(16), "1".repeat(16));
        for text in [version, framed.as_str()] {
            s.push(text.len() as u8 | 0x80);
            s.push((text.len() >> 7) as u8);
            s.extend(text.as_bytes());
        }
        s
    }

    #[test]
    fn module_mode_and_gopath_build_info() {
        let modinfo = "path\texample.com/app/cmd/app\nmod\texample.com/app\t(devel)\t\ndep\tgithub.com/spf13/cobra\tv1.8.0\th1:x=\ndep\tgolang.org/x/sys\tv0.1.0\th1:y=\n=>\tgolang.org/x/sys\tv0.2.0\th1:z=\nbuild\tGOOS=linux\n";
        let (go, info) = go_buildinfo(&section("go1.22.1", modinfo)).unwrap();
        assert_eq!(go, "go1.22.1");
        let mods: Vec<(String, String, String)> = go_modules(&info, "/app").into_iter().map(|p| (p.name, p.version, p.purl)).collect();
        assert_eq!(mods[1], ("github.com/spf13/cobra".into(), "v1.8.0".into(), "pkg:golang/github.com/spf13/cobra@v1.8.0".into()));
        assert_eq!(mods[2].1, "v0.2.0", "a replacement wins");
        assert_eq!(mods.len(), 3);
        let gopath = go_modules("path\tgithub.com/containers/skopeo/cmd/skopeo\nbuild\t-compiler=gc\n", "/usr/bin/skopeo");
        assert_eq!(gopath.len(), 1);
        assert_eq!(gopath[0].purl, "pkg:golang/github.com/containers/skopeo/cmd/skopeo");
        assert!(go_buildinfo(b"\xff Go buildinf:\x08\x00").is_none());
    }
}
