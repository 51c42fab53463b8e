//! Reading images back: pull with skopeo into an OCI layout (or read a layout
//! kiln wrote), then apply the layers in memory with OCI whiteout semantics
//! into a [`Tree`].

use crate::process::run_with_timeout;
use crate::require_program;
use flate2::read::MultiGzDecoder;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Regular files up to this size keep their content in [`Node::content`].
pub const KEEP_CONTENT_MAX: u64 = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// a hard link to the given path (absolute, in the image)
    Hardlink(String),
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
            Kind::Hardlink(t) => write!(f, "hardlink->{t}"),
            Kind::Char(a, b) => write!(f, "char({a},{b})"),
            Kind::Block(a, b) => write!(f, "block({a},{b})"),
            Kind::Fifo => write!(f, "fifo"),
        }
    }
}

/// One path of the final filesystem.
#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    /// permission bits incl. setuid/setgid/sticky (no type bits)
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    /// `sha256:…` of a regular file's content
    pub sha256: Option<String>,
    /// content of a regular file up to [`KEEP_CONTENT_MAX`] bytes
    pub content: Option<Vec<u8>>,
    /// symlink target
    pub link: Option<String>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub mtime: u64,
    /// index of the layer that last wrote this path
    pub layer: usize,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
    pub fn is_file(&self) -> bool {
        matches!(self.kind, Kind::File | Kind::Hardlink(_))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.content.as_deref().unwrap_or_default()).into_owned()
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:04o} {}:{} size={}", self.kind, self.mode, self.uid, self.gid, self.size)?;
        if let Some(l) = &self.link {
            write!(f, " -> {l}")?;
        }
        if let Some(c) = &self.content {
            if c.len() <= 80 {
                write!(f, " content={:?}", String::from_utf8_lossy(c))?;
            }
        }
        if !self.xattrs.is_empty() {
            write!(f, " xattrs={:?}", self.xattrs.keys().collect::<Vec<_>>())?;
        }
        write!(f, " (layer {})", self.layer)
    }
}

/// Path (absolute, e.g. `/app/hello.txt`; no trailing slash) → node.
#[derive(Clone, Debug, Default)]
pub struct Tree(pub BTreeMap<String, Node>);

impl Tree {
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.0.get(path)
    }
    pub fn contains(&self, path: &str) -> bool {
        self.0.contains_key(path)
    }
    pub fn paths(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }
    /// Paths strictly under `dir`.
    pub fn children_of<'a>(&'a self, dir: &str) -> Vec<&'a String> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        self.0.keys().filter(|k| k.starts_with(&prefix)).collect()
    }

    /// The node at `path`, failing with the tree listing when absent.
    #[track_caller]
    pub fn node(&self, path: &str) -> &Node {
        match self.0.get(path) {
            Some(n) => n,
            None => panic!("{path} not in the image; tree:\n{}", self.listing_without_applets()),
        }
    }

    /// Assert kind, permission bits and owner of `path`.
    #[track_caller]
    pub fn assert_entry(&self, path: &str, kind: Kind, mode: u32, uid: u64, gid: u64) -> &Node {
        let n = self.node(path);
        assert!(
            n.kind == kind && n.mode == mode && n.uid == uid && n.gid == gid,
            "{path}: expected {kind} {mode:04o} {uid}:{gid}, got {n}"
        );
        n
    }

    /// Assert a regular file's mode, owner and exact content.
    #[track_caller]
    pub fn assert_file(&self, path: &str, mode: u32, uid: u64, gid: u64, content: &str) -> &Node {
        let n = self.assert_entry(path, Kind::File, mode, uid, gid);
        assert_eq!(n.text(), content, "{path}: content");
        n
    }

    #[track_caller]
    pub fn assert_absent(&self, path: &str) {
        if let Some(n) = self.0.get(path) {
            panic!("{path} should not be in the image, found {n}");
        }
    }

    /// `path kind mode uid:gid size [-> link]` per line.
    pub fn listing(&self) -> String {
        self.0.iter().map(|(p, n)| format!("{p} {n}\n")).collect()
    }

    /// The listing without the busybox applet symlinks (readable in failures).
    pub fn listing_without_applets(&self) -> String {
        self.0
            .iter()
            .filter(|(_, n)| n.link.as_deref() != Some("/bin/busybox"))
            .map(|(p, n)| format!("{p} {n}\n"))
            .collect()
    }
}

/// One layer as stored: its descriptor and what it contains (in tar order).
#[derive(Clone, Debug)]
pub struct Layer {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// sha256 of the uncompressed tar, computed here
    pub diff_id: String,
    /// entry paths as they appear in the tar (normalized to `/x/y`, whiteouts kept)
    pub entries: Vec<String>,
}

/// An image read back: manifest, config, layers, final tree.
#[derive(Clone, Debug)]
pub struct Image {
    /// the digest of the manifest (`sha256:…`)
    pub manifest_digest: String,
    pub manifest: Value,
    pub config: Value,
    pub layers: Vec<Layer>,
    pub tree: Tree,
}

impl Image {
    /// `sha256:<hex>` of `data`: a blob's or manifest's digest.
    pub fn digest_of(data: &[u8]) -> String {
        sha256_hex(data)
    }
}

fn sha256_hex(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in d.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn read_json(p: &Path) -> Value {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_slice(&b).unwrap_or_else(|e| panic!("parse {}: {e}", p.display()))
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

impl Image {
    /// `skopeo copy --src-tls-verify=false docker://REF oci:TMP:img` (the
    /// host platform from an index) and read it.
    #[track_caller]
    pub fn pull(reference: &str) -> Image {
        Self::pull_platform(reference, None)
    }

    /// Pull `REPO:TAG` (or `REPO@DIGEST`) from `registry`, with its
    /// credentials if it has auth.
    #[track_caller]
    pub fn pull_from(registry: &crate::Registry, repo_tag: &str) -> Image {
        Self::pull_opts(&registry.reference(repo_tag), None, registry.credentials())
    }

    /// Like [`Image::pull`], choosing `arch` (e.g. "arm64") from an index.
    #[track_caller]
    pub fn pull_platform(reference: &str, arch: Option<&str>) -> Image {
        Self::pull_opts(reference, arch, None)
    }

    #[track_caller]
    pub fn pull_opts(reference: &str, arch: Option<&str>, creds: Option<(String, String)>) -> Image {
        let skopeo = require_program("skopeo");
        let dir = tempfile::Builder::new().prefix("kiln-pull-").tempdir().unwrap();
        let layout = dir.path().join("layout");
        let mut cmd = Command::new(skopeo);
        cmd.arg("copy").arg("--quiet").arg("--src-tls-verify=false");
        if let Some((u, p)) = creds {
            cmd.arg("--src-creds").arg(format!("{u}:{p}"));
        }
        if let Some(a) = arch {
            cmd.arg("--override-arch").arg(a).arg("--override-os").arg("linux");
        }
        cmd.arg(format!("docker://{reference}")).arg(format!("oci:{}:img", layout.display()));
        let out = run_with_timeout(&mut cmd, Duration::from_secs(120));
        assert!(out.status.success(), "pulling {reference} failed\n{out}");
        Self::from_layout_platform(&layout, Some("img"), arch.unwrap_or(host_arch()))
    }

    /// Read an OCI image layout directory: the manifest tagged `tag`
    /// (`org.opencontainers.image.ref.name`), or the only one when `tag` is
    /// None; an index is resolved to the host platform.
    #[track_caller]
    pub fn from_layout(dir: &Path, tag: Option<&str>) -> Image {
        Self::from_layout_platform(dir, tag, host_arch())
    }

    #[track_caller]
    pub fn from_layout_platform(dir: &Path, tag: Option<&str>, arch: &str) -> Image {
        assert!(
            dir.join("oci-layout").is_file(),
            "{} is not an OCI image layout (no oci-layout file)",
            dir.display()
        );
        let index = read_json(&dir.join("index.json"));
        let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
        let desc = match tag {
            Some(t) => manifests
                .iter()
                .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == t)
                .cloned()
                .or_else(|| (manifests.len() == 1).then(|| manifests[0].clone()))
                .unwrap_or_else(|| panic!("no manifest tagged {t} in {}/index.json: {index}", dir.display())),
            None => {
                assert_eq!(
                    manifests.len(),
                    1,
                    "{}/index.json: expected exactly one manifest: {index}",
                    dir.display()
                );
                manifests[0].clone()
            }
        };
        let blobs = BlobDir(dir.join("blobs"));
        let mut desc = desc;
        // Follow indexes down to a manifest for the platform.
        for _ in 0..4 {
            let mt = desc["mediaType"].as_str().unwrap_or_default();
            if !(mt.contains("index") || mt.contains("manifest.list")) {
                break;
            }
            let idx: Value = serde_json::from_slice(&blobs.read(desc["digest"].as_str().unwrap())).unwrap();
            let list = idx["manifests"].as_array().cloned().unwrap_or_default();
            desc = list
                .iter()
                .find(|m| m["platform"]["architecture"] == arch && m["platform"]["os"] == "linux")
                .or_else(|| (list.len() == 1).then(|| &list[0]))
                .unwrap_or_else(|| panic!("no linux/{arch} manifest in index {idx}"))
                .clone();
        }
        let manifest_digest = desc["digest"].as_str().expect("descriptor digest").to_string();
        let manifest_bytes = blobs.read(&manifest_digest);
        let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
        let config: Value = serde_json::from_slice(
            &blobs.read(manifest["config"]["digest"].as_str().expect("manifest config digest")),
        )
        .unwrap();
        let mut tree = Tree::default();
        let mut layers = Vec::new();
        for (i, l) in manifest["layers"].as_array().cloned().unwrap_or_default().iter().enumerate() {
            let digest = l["digest"].as_str().unwrap().to_string();
            let media_type = l["mediaType"].as_str().unwrap_or_default().to_string();
            let blob = blobs.read(&digest);
            let tar = decompress(&blob, &media_type, &digest);
            let diff_id = sha256_hex(&tar);
            let entries = apply_layer(&mut tree, &tar, i)
                .unwrap_or_else(|e| panic!("layer {i} ({digest}): bad tar: {e}"));
            layers.push(Layer { digest, media_type, size: blob.len() as u64, diff_id, entries });
        }
        Image { manifest_digest, manifest, config, layers, tree }
    }

    /// The `config` object of the image config (Env, Cmd, WorkingDir, …).
    pub fn cfg(&self) -> &Value {
        &self.config["config"]
    }

    pub fn env(&self) -> Vec<String> {
        self.cfg()["Env"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }

    pub fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.digest.clone()).collect()
    }

    pub fn history(&self) -> Vec<Value> {
        self.config["history"].as_array().cloned().unwrap_or_default()
    }

    /// Every path any layer mentions (whiteouts included), with its layer index.
    pub fn all_layer_entries(&self) -> Vec<(usize, String)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| l.entries.iter().map(move |e| (i, e.clone())))
            .collect()
    }

    /// Check manifest ↔ config ↔ blobs consistency: one diff_id per layer,
    /// each equal to the sha256 of the uncompressed layer.
    #[track_caller]
    pub fn assert_consistent(&self) {
        let diff_ids: Vec<String> = self.config["rootfs"]["diff_ids"]
            .as_array()
            .unwrap_or_else(|| panic!("config has no rootfs.diff_ids: {}", self.config))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(self.config["rootfs"]["type"], "layers", "rootfs.type");
        let computed: Vec<String> = self.layers.iter().map(|l| l.diff_id.clone()).collect();
        assert_eq!(diff_ids, computed, "rootfs.diff_ids vs the layers' uncompressed sha256");
        let non_empty = self
            .history()
            .iter()
            .filter(|h| !h["empty_layer"].as_bool().unwrap_or(false))
            .count();
        if !self.history().is_empty() {
            assert_eq!(
                non_empty,
                self.layers.len(),
                "history entries without empty_layer must match the layer count: {:#}",
                self.config["history"]
            );
        }
    }
}

struct BlobDir(PathBuf);

impl BlobDir {
    #[track_caller]
    fn read(&self, digest: &str) -> Vec<u8> {
        let (alg, hex) = digest.split_once(':').unwrap_or_else(|| panic!("bad digest {digest}"));
        let p = self.0.join(alg).join(hex);
        let b = std::fs::read(&p).unwrap_or_else(|e| panic!("blob {}: {e}", p.display()));
        assert_eq!(sha256_hex(&b), digest, "blob {} does not match its digest", p.display());
        b
    }
}

#[track_caller]
fn decompress(blob: &[u8], media_type: &str, digest: &str) -> Vec<u8> {
    if blob.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        // All members: a gzip file may be several (eStargz is one per file).
        MultiGzDecoder::new(blob)
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("layer {digest}: gunzip: {e}"));
        assert!(
            media_type.contains("gzip"),
            "layer {digest} is gzip but its mediaType is {media_type}"
        );
        out
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        // zstd: no crate here; use the zstd CLI when present.
        let zstd = crate::paths::which("zstd")
            .unwrap_or_else(|| panic!("layer {digest} is zstd-compressed; install zstd to read it"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("l.zst");
        std::fs::write(&f, blob).unwrap();
        let out = Command::new(zstd).arg("-dc").arg(&f).output().unwrap();
        assert!(out.status.success(), "zstd -d {digest} failed");
        out.stdout
    } else {
        assert!(
            !media_type.contains("gzip") && !media_type.contains("zstd"),
            "layer {digest}: mediaType {media_type} but the blob is not compressed that way"
        );
        blob.to_vec()
    }
}

/// `./a/b/` → `/a/b`; `a` → `/a`; `.` → `/`.
fn normalize(p: &str) -> String {
    let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    format!("/{}", parts.join("/"))
}

fn remove_subtree(tree: &mut Tree, path: &str, include_self: bool) {
    let prefix = if path == "/" { "/".to_string() } else { format!("{path}/") };
    let doomed: Vec<String> = tree
        .0
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in doomed {
        tree.0.remove(&k);
    }
    if include_self {
        tree.0.remove(path);
    }
}

/// Apply one uncompressed layer: whiteouts (against the lower layers) first,
/// then the entries. Returns the entry paths in tar order.
fn apply_layer(tree: &mut Tree, tar_bytes: &[u8], layer: usize) -> std::io::Result<Vec<String>> {
    let mut ar = tar::Archive::new(tar_bytes);
    let mut names = Vec::new();
    let mut whiteouts = Vec::new(); // (dir or path, opaque?)
    let mut adds: Vec<(String, Node)> = Vec::new();
    for e in ar.entries()? {
        let mut e = e?;
        let raw_path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let path = normalize(&raw_path);
        names.push(path.clone());
        if path == "/" {
            continue;
        }
        let (parent, base) = path.rsplit_once('/').unwrap();
        let parent = if parent.is_empty() { "/" } else { parent };
        if base == ".wh..wh..opq" {
            whiteouts.push((parent.to_string(), true));
            continue;
        }
        if let Some(victim) = base.strip_prefix(".wh.") {
            let victim = if parent == "/" { format!("/{victim}") } else { format!("{parent}/{victim}") };
            whiteouts.push((victim, false));
            continue;
        }
        let h = e.header().clone();
        let mut uid = h.uid().unwrap_or(0);
        let mut gid = h.gid().unwrap_or(0);
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = e.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                let k = ext.key().unwrap_or_default().to_string();
                if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(name.to_string(), ext.value_bytes().to_vec());
                } else if k == "uid" {
                    uid = ext.value().ok().and_then(|v| v.parse().ok()).unwrap_or(uid);
                } else if k == "gid" {
                    gid = ext.value().ok().and_then(|v| v.parse().ok()).unwrap_or(gid);
                }
            }
        }
        let et = h.entry_type();
        let link = e.link_name_bytes().map(|b| String::from_utf8_lossy(&b).into_owned());
        let mut node = Node {
            kind: Kind::File,
            mode: h.mode().unwrap_or(0) & 0o7777,
            uid,
            gid,
            size: 0,
            sha256: None,
            content: None,
            link: None,
            xattrs,
            mtime: h.mtime().unwrap_or(0),
            layer,
        };
        use tar::EntryType as T;
        match et {
            T::Regular | T::Continuous | T::GNUSparse => {
                let mut data = Vec::new();
                e.read_to_end(&mut data)?;
                node.size = data.len() as u64;
                node.sha256 = Some(sha256_hex(&data));
                if node.size <= KEEP_CONTENT_MAX {
                    node.content = Some(data);
                }
            }
            T::Directory => node.kind = Kind::Dir,
            T::Symlink => {
                node.kind = Kind::Symlink;
                node.link = link;
            }
            T::Link => {
                let target = normalize(&link.unwrap_or_default());
                // Same layer (earlier entry) or a lower layer.
                let src = adds
                    .iter()
                    .rev()
                    .find(|(p, _)| *p == target)
                    .map(|(_, n)| n.clone())
                    .or_else(|| tree.0.get(&target).cloned());
                if let Some(src) = src {
                    node.size = src.size;
                    node.sha256 = src.sha256.clone();
                    node.content = src.content.clone();
                }
                node.kind = Kind::Hardlink(target);
            }
            T::Char => {
                node.kind = Kind::Char(
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                )
            }
            T::Block => {
                node.kind = Kind::Block(
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                )
            }
            T::Fifo => node.kind = Kind::Fifo,
            other => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{raw_path}: unsupported entry type {other:?}"),
                ))
            }
        }
        adds.push((path, node));
    }
    for (p, opaque) in whiteouts {
        if opaque {
            remove_subtree(tree, &p, false);
        } else {
            remove_subtree(tree, &p, true);
        }
    }
    for (p, n) in adds {
        // A non-directory replacing a directory removes what was below it.
        if n.kind != Kind::Dir {
            if let Some(old) = tree.0.get(&p) {
                if old.kind == Kind::Dir {
                    remove_subtree(tree, &p, false);
                }
            }
        }
        tree.0.insert(p, n);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, t, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*t);
            h.set_mode(if *t == tar::EntryType::Directory { 0o755 } else { 0o644 });
            h.set_size(data.len() as u64);
            h.set_uid(0);
            h.set_gid(0);
            b.append_data(&mut h, p, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_and_opaque_dirs() {
        use tar::EntryType as T;
        let mut tree = Tree::default();
        let l0 = tar_of(&[
            ("a/", T::Directory, b""),
            ("a/x", T::Regular, b"x"),
            ("a/y", T::Regular, b"y"),
            ("b/", T::Directory, b""),
            ("b/z", T::Regular, b"z"),
            ("c", T::Regular, b"c"),
        ]);
        apply_layer(&mut tree, &l0, 0).unwrap();
        let l1 = tar_of(&[
            ("a/", T::Directory, b""),
            ("a/.wh..wh..opq", T::Regular, b""),
            ("a/new", T::Regular, b"n"),
            ("b/.wh.z", T::Regular, b""),
            (".wh.c", T::Regular, b""),
        ]);
        apply_layer(&mut tree, &l1, 1).unwrap();
        let paths: Vec<&String> = tree.paths().collect();
        assert_eq!(paths, ["/a", "/a/new", "/b"]);
        assert_eq!(tree.node("/a/new").text(), "n");
        assert_eq!(tree.node("/a/new").layer, 1);
    }
}
