//! Alpine packages: `/lib/apk/db/installed` (one stanza per package; `P` name,
//! `V` version, `A` arch, `L` licence, `m` maintainer, `o` origin, `F` a directory
//! and the `R` files in it).

use std::path::Path;

use crate::walk::read_record;
use crate::{Distro, Ecosystem, Package};

const INSTALLED: &str = "/lib/apk/db/installed";

pub fn scan(root: &Path, distro: Option<&Distro>, out: &mut Vec<Package>, warnings: &mut Vec<String>) {
    let Some(text) = read_record(root, INSTALLED, warnings) else { return };
    for stanza in text.split("\n\n") {
        let (mut name, mut version, mut arch, mut license, mut maint, mut origin) = (None, None, None, None, None, None);
        let mut files = Vec::new();
        let mut dir = String::new();
        for line in stanza.lines() {
            let Some((k, v)) = line.split_once(':') else { continue };
            match k {
                "P" => name = Some(v.to_string()),
                "V" => version = Some(v.to_string()),
                "A" => arch = Some(v.to_string()),
                "L" => license = Some(v.to_string()),
                "m" => maint = Some(v.to_string()),
                "o" => origin = Some(v.to_string()),
                "F" => dir = v.to_string(),
                "R" => files.push(if dir.is_empty() { format!("/{v}") } else { format!("/{dir}/{v}") }),
                _ => {}
            }
        }
        let (Some(name), Some(version)) = (name, version) else { continue };
        let id = distro.map(|d| d.id.as_str()).filter(|i| !i.is_empty()).unwrap_or("alpine");
        let mut q = vec![("arch", arch.clone().unwrap_or_default())];
        if let Some(d) = distro {
            q.push(("distro", format!("{}-{}", d.id, d.version_id)));
        }
        if let Some(o) = origin.as_ref().filter(|o| **o != name) {
            q.push(("upstream", o.clone()));
        }
        out.push(Package {
            ecosystem: Ecosystem::Apk,
            purl: crate::purl::purl("apk", Some(id), &name, &version, &q),
            name,
            version,
            licenses: license.map(|l| l.split_whitespace().filter(|w| !matches!(*w, "AND" | "OR")).map(str::to_string).collect()).unwrap_or_default(),
            files,
            found_at: INSTALLED.into(),
            arch,
            supplier: maint,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_db() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("lib/apk/db")).unwrap();
        std::fs::write(
            d.path().join("lib/apk/db/installed"),
            "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\nm:Timo <t@alpinelinux.org>\no:musl\nF:lib\nR:ld-musl-x86_64.so.1\nR:libc.musl-x86_64.so.1\n\nP:busybox\nV:1.36.1-r15\nA:x86_64\nL:GPL-2.0-only\nF:bin\nR:busybox\n",
        )
        .unwrap();
        let distro = Distro { id: "alpine".into(), version_id: "3.19.1".into(), pretty_name: String::new() };
        let mut out = Vec::new();
        scan(d.path(), Some(&distro), &mut out, &mut Vec::new());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].purl, "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19.1");
        assert_eq!(out[0].files, ["/lib/ld-musl-x86_64.so.1", "/lib/libc.musl-x86_64.so.1"]);
        assert_eq!(out[1].licenses, ["GPL-2.0-only"]);
    }
}
