//! An image's file tree for `kiln diff`: its layers applied in order, in memory,
//! from their tar streams (gzip, zstd or plain, told apart by their first bytes),
//! with OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`).
//!
//! Nothing is written to disk: a regular file is kept as its size and sha256,
//! hashed while it streams by. A whiteout or an opaque directory removes only what
//! lower layers wrote (so its place in the layer's tar does not matter). A hard
//! link is recorded as the file it names (type, mode, owner, size, content and
//! xattrs of that inode), with the name it links to kept for display only. The
//! root directory itself is not part of the tree; a parent that no entry
//! describes exists as a `dir 0755 0:0` (what runtimes create), marked implicit.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};

use anyhow::{bail, Context, Result};
use kiln_oci::{Digest, Sha256Writer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::File => write!(f, "file"),
            Kind::Dir => write!(f, "dir"),
            Kind::Symlink => write!(f, "symlink"),
            Kind::Char(a, b) => write!(f, "char {a}:{b}"),
            Kind::Block(a, b) => write!(f, "block {a}:{b}"),
            Kind::Fifo => write!(f, "fifo"),
        }
    }
}

/// One path of the final filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits incl. setuid/setgid/sticky (no type bits).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Bytes of a regular file (0 otherwise).
    pub size: u64,
    /// sha256 of a regular file's content.
    pub digest: Option<Digest>,
    /// A symlink's target.
    pub target: Option<String>,
    /// Written as a hard link to this path (not compared).
    pub hardlink: Option<String>,
    /// From PAX `SCHILY.xattr.*` records.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Index of the layer that last wrote this path.
    pub layer: usize,
    /// A parent directory no entry described.
    pub implicit: bool,
}

impl Node {
    fn implicit_dir(layer: usize) -> Node {
        Node {
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            digest: None,
            target: None,
            hardlink: None,
            xattrs: BTreeMap::new(),
            layer,
            implicit: true,
        }
    }
}

/// Absolute path (`/etc/passwd`, no trailing slash) → node.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    pub nodes: BTreeMap<String, Node>,
}

/// `./a//b/` → `/a/b`; `..` never climbs above the root; `None` for the root.
pub fn normalize(raw: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for p in raw.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(format!("/{}", parts.join("/")))
    }
}

/// The layer blob's bytes uncompressed, by its magic number (`steps::archive`'s
/// detection, the one ADD uses).
pub fn decompressed<'a, R: Read + 'a>(reader: R) -> Result<Box<dyn Read + 'a>> {
    let mut r = BufReader::with_capacity(256 << 10, reader);
    let kind = crate::steps::archive::detect(r.fill_buf().context("reading the layer")?);
    crate::steps::archive::decompress(r, kind).context("starting the layer's decompression")
}

fn split_parent(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some(("", base)) => ("/", base),
        Some((parent, base)) => (parent, base),
        None => ("/", path),
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

impl Tree {
    /// Applies one layer blob (compressed or not) on top of what is there.
    pub fn apply_layer<R: Read>(&mut self, reader: R, layer: usize) -> Result<()> {
        let mut ar = tar::Archive::new(decompressed(reader)?);
        for entry in ar.entries().context("reading the layer's tar")? {
            let mut e = entry.context("reading the layer's tar")?;
            let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            self.apply_entry(&mut e, &raw, layer).with_context(|| format!("entry {raw:?}"))?;
        }
        // Read what the tar reader left (end blocks, padding) so a caller hashing
        // the blob sees all of it.
        let mut rest = ar.into_inner();
        io::copy(&mut rest, &mut io::sink()).context("reading the end of the layer")?;
        Ok(())
    }

    fn apply_entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>, raw: &str, layer: usize) -> Result<()> {
        use tar::EntryType as T;
        let et = e.header().entry_type();
        if matches!(et, T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink) {
            return Ok(());
        }
        let Some(path) = normalize(raw) else { return Ok(()) };
        let (parent, base) = split_parent(&path);
        if base == ".wh..wh..opq" {
            self.remove_below(parent, layer);
            return Ok(());
        }
        if let Some(victim) = base.strip_prefix(".wh.") {
            let victim = join(parent, victim);
            self.remove_below(&victim, layer);
            if self.nodes.get(&victim).is_some_and(|n| n.layer < layer) {
                self.nodes.remove(&victim);
            }
            return Ok(());
        }
        let h = e.header().clone();
        // Empty numeric fields (some writers leave them blank) read as 0.
        let (mut uid, mut gid) = (h.uid().unwrap_or(0), h.gid().unwrap_or(0));
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = e.pax_extensions().context("PAX records")? {
            for ext in exts {
                let ext = ext.context("PAX record")?;
                let key = ext.key().context("PAX key")?;
                let number = || ext.value().ok().and_then(|v| v.trim().parse::<u64>().ok());
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(name.to_string(), ext.value_bytes().to_vec());
                } else if key == "uid" {
                    uid = number().unwrap_or(uid);
                } else if key == "gid" {
                    gid = number().unwrap_or(gid);
                }
            }
        }
        let mut node = Node {
            kind: Kind::File,
            mode: h.mode().context("mode")? & 0o7777,
            uid,
            gid,
            size: 0,
            digest: None,
            target: None,
            hardlink: None,
            xattrs,
            layer,
            implicit: false,
        };
        let link = e.link_name_bytes().map(|b| String::from_utf8_lossy(&b).into_owned());
        let device = || -> Result<(u32, u32)> {
            Ok((h.device_major().ok().flatten().unwrap_or(0), h.device_minor().ok().flatten().unwrap_or(0)))
        };
        match et {
            T::Regular | T::Continuous | T::GNUSparse => {
                let mut w = Sha256Writer::new(io::sink());
                io::copy(e, &mut w).context("reading the file's content")?;
                let (_, digest, n) = w.finish();
                node.size = n;
                node.digest = Some(digest);
            }
            T::Directory => node.kind = Kind::Dir,
            T::Symlink => {
                node.kind = Kind::Symlink;
                node.target = Some(link.unwrap_or_default());
            }
            T::Link => {
                let target = normalize(&link.unwrap_or_default()).unwrap_or_else(|| "/".into());
                let Some(src) = self.nodes.get(&target) else {
                    bail!("hard link to {target}, which is not in the image");
                };
                if src.kind == Kind::Dir {
                    bail!("hard link to the directory {target}");
                }
                node = Node { hardlink: Some(target), layer, implicit: false, ..src.clone() };
            }
            T::Char => {
                let (a, b) = device()?;
                node.kind = Kind::Char(a, b);
            }
            T::Block => {
                let (a, b) = device()?;
                node.kind = Kind::Block(a, b);
            }
            T::Fifo => node.kind = Kind::Fifo,
            other => bail!("unsupported tar entry type {other:?}"),
        }
        self.insert(path, node);
        Ok(())
    }

    /// Removes what lower layers than `layer` wrote strictly below `dir`.
    fn remove_below(&mut self, dir: &str, layer: usize) {
        let prefix = if dir == "/" { "/".to_string() } else { format!("{dir}/") };
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(_, n)| n.layer < layer)
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    fn insert(&mut self, path: String, node: Node) {
        let layer = node.layer;
        // Missing parents exist as runtimes create them.
        let mut at = 0;
        while let Some(i) = path[at + 1..].find('/') {
            at += 1 + i;
            let parent = &path[..at];
            if !self.nodes.contains_key(parent) {
                self.nodes.insert(parent.to_string(), Node::implicit_dir(layer));
            }
        }
        // Anything but a directory replacing a directory replaces its contents too.
        if node.kind != Kind::Dir && self.nodes.get(&path).is_some_and(|n| n.kind == Kind::Dir) {
            self.remove_below(&path, usize::MAX);
        }
        self.nodes.insert(path, node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tar::EntryType as T;

    /// One tar entry for [`layer`].
    pub struct E<'a> {
        pub path: &'a str,
        pub kind: T,
        pub data: &'a [u8],
        pub mode: u32,
        pub owner: (u64, u64),
        pub link: Option<&'a str>,
        pub xattrs: &'a [(&'a str, &'a [u8])],
    }

    pub fn file<'a>(path: &'a str, data: &'a [u8]) -> E<'a> {
        E { path, kind: T::Regular, data, mode: 0o644, owner: (0, 0), link: None, xattrs: &[] }
    }
    pub fn dir(path: &str) -> E<'_> {
        E { path, kind: T::Directory, data: b"", mode: 0o755, owner: (0, 0), link: None, xattrs: &[] }
    }
    pub fn link<'a>(path: &'a str, kind: T, target: &'a str) -> E<'a> {
        E { path, kind, data: b"", mode: 0o777, owner: (0, 0), link: Some(target), xattrs: &[] }
    }

    /// A layer tar with PAX records for xattrs.
    pub fn layer(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            if !e.xattrs.is_empty() {
                let recs: Vec<(String, &[u8])> = e.xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v)).collect();
                b.append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v))).unwrap();
            }
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(e.kind);
            h.set_mode(e.mode);
            h.set_uid(e.owner.0);
            h.set_gid(e.owner.1);
            h.set_size(e.data.len() as u64);
            match e.link {
                Some(t) => b.append_link(&mut h, e.path, t).unwrap(),
                None => b.append_data(&mut h, e.path, e.data).unwrap(),
            }
        }
        b.into_inner().unwrap()
    }

    pub fn tree_of(layers: &[Vec<u8>]) -> Tree {
        let mut t = Tree::default();
        for (i, l) in layers.iter().enumerate() {
            t.apply_layer(l.as_slice(), i).unwrap();
        }
        t
    }

    fn paths(t: &Tree) -> Vec<&str> {
        t.nodes.keys().map(String::as_str).collect()
    }

    #[test]
    fn whiteouts_and_opaque_dirs_remove_only_lower_layers() {
        let l0 = layer(&[dir("a"), file("a/x", b"x"), file("a/y", b"y"), dir("b"), file("b/z", b"z"), file("c", b"c"), dir("d"), file("d/old", b"o")]);
        // The opaque marker after a new entry of the same layer, a whiteout
        // after the entry recreating its name: neither touches this layer's entries.
        let l1 = layer(&[
            dir("a"),
            file("a/new", b"n"),
            file("a/.wh..wh..opq", b""),
            file("b/.wh.z", b""),
            file(".wh.c", b""),
            dir("d"),
            file("d/fresh", b"f"),
            file(".wh.d", b""),
        ]);
        let t = tree_of(&[l0, l1]);
        assert_eq!(paths(&t), ["/a", "/a/new", "/b", "/d", "/d/fresh"]);
        assert_eq!(t.nodes["/a/new"].digest, Some(Digest::of(b"n")));
        assert_eq!(t.nodes["/a/new"].size, 1);
        assert_eq!(t.nodes["/a/new"].layer, 1);
    }

    #[test]
    fn a_whited_out_directory_goes_with_its_contents() {
        let l0 = layer(&[dir("a"), dir("a/b"), file("a/b/c", b"c"), file("keep", b"k")]);
        let l1 = layer(&[file(".wh.a", b"")]);
        assert_eq!(paths(&tree_of(&[l0, l1])), ["/keep"]);
    }

    #[test]
    fn hard_links_are_the_file_they_name() {
        let mut f = file("bin/tool", b"#!/bin/sh\n");
        f.mode = 0o4755;
        f.owner = (0, 50);
        f.xattrs = &[("security.capability", b"\x01\x02")];
        let l0 = layer(&[dir("bin"), f, link("bin/alias", T::Link, "bin/tool"), link("usr/tool", T::Link, "./bin/tool")]);
        let t = tree_of(&[l0]);
        let (tool, alias) = (&t.nodes["/bin/tool"], &t.nodes["/bin/alias"]);
        assert_eq!(alias.kind, Kind::File);
        assert_eq!((alias.mode, alias.uid, alias.gid, alias.size), (0o4755, 0, 50, 10));
        assert_eq!(alias.digest, tool.digest);
        assert_eq!(alias.xattrs, tool.xattrs);
        assert_eq!(alias.hardlink.as_deref(), Some("/bin/tool"));
        assert_eq!(tool.hardlink, None);
        // An undescribed parent is an implicit 0755 root-owned directory.
        assert!(t.nodes["/usr"].implicit && t.nodes["/usr"].mode == 0o755 && t.nodes["/usr"].kind == Kind::Dir);
        let dangling = layer(&[link("x", T::Link, "nowhere")]);
        let err = Tree::default().apply_layer(dangling.as_slice(), 0).unwrap_err();
        assert!(format!("{err:#}").contains("hard link to /nowhere"), "{err:#}");
    }

    #[test]
    fn xattrs_symlinks_devices_and_owners() {
        let mut f = file("f", b"data");
        f.xattrs = &[("user.a", b"1"), ("user.overlay.origin", b"x")];
        f.owner = (1000, 1001);
        let mut dev = link("dev/null", T::Char, "");
        dev.link = None;
        let l0 = layer(&[f, link("l", T::Symlink, "/etc/target"), dev]);
        let t = tree_of(&[l0]);
        let n = &t.nodes["/f"];
        assert_eq!(n.xattrs.get("user.a").map(Vec::as_slice), Some(&b"1"[..]));
        assert_eq!(n.xattrs.len(), 2);
        assert_eq!((n.uid, n.gid), (1000, 1001));
        assert_eq!(t.nodes["/l"].kind, Kind::Symlink);
        assert_eq!(t.nodes["/l"].target.as_deref(), Some("/etc/target"));
        assert_eq!(t.nodes["/dev/null"].kind, Kind::Char(0, 0));
    }

    #[test]
    fn replacing_a_directory_by_a_file_drops_its_contents_and_compression_is_detected() {
        let l0 = layer(&[dir("a"), file("a/x", b"x")]);
        let l1 = layer(&[file("a", b"now a file")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &l1).unwrap();
        let l1gz = gz.finish().unwrap();
        let l2 = zstd::stream::encode_all(layer(&[file("z", b"zstd")]).as_slice(), 1).unwrap();
        let t = tree_of(&[l0, l1gz, l2]);
        assert_eq!(paths(&t), ["/a", "/z"]);
        assert_eq!(t.nodes["/a"].kind, Kind::File);
        assert_eq!(t.nodes["/z"].digest, Some(Digest::of(b"zstd")));
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize("./a//b/"), Some("/a/b".into()));
        assert_eq!(normalize("../../etc"), Some("/etc".into()));
        assert_eq!(normalize("./"), None);
    }
}
