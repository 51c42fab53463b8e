//! Test helpers: a raw tar writer that puts any bytes into header fields (the tar
//! crate's builder refuses `..`), and tree comparison.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const REG: u8 = b'0';
pub const LINK: u8 = b'1';
pub const SYMLINK: u8 = b'2';
pub const CHR: u8 = b'3';
pub const BLK: u8 = b'4';
pub const DIR: u8 = b'5';
pub const FIFO: u8 = b'6';

#[derive(Clone)]
pub struct E<'a> {
    pub name: &'a [u8],
    pub kind: u8,
    pub link: &'a [u8],
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub data: &'a [u8],
    pub dev: (u32, u32),
}

impl<'a> E<'a> {
    pub fn new(name: &'a str, kind: u8) -> Self {
        E { name: name.as_bytes(), kind, link: b"", mode: if kind == DIR { 0o755 } else { 0o644 }, uid: 0, gid: 0, mtime: 1_600_000_000, data: b"", dev: (0, 0) }
    }
    pub fn file(name: &'a str, data: &'a [u8]) -> Self {
        E { data, ..E::new(name, REG) }
    }
    pub fn dir(name: &'a str) -> Self {
        E::new(name, DIR)
    }
    pub fn symlink(name: &'a str, target: &'a str) -> Self {
        E { link: target.as_bytes(), mode: 0o777, ..E::new(name, SYMLINK) }
    }
    pub fn hardlink(name: &'a str, target: &'a str) -> Self {
        E { link: target.as_bytes(), ..E::new(name, LINK) }
    }
}

#[derive(Default)]
pub struct RawTar {
    pub buf: Vec<u8>,
}

impl RawTar {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, e: E<'_>) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        {
            let u = h.as_ustar_mut().unwrap();
            assert!(e.name.len() <= 100 && e.link.len() <= 100, "use pax for long names");
            u.name[..e.name.len()].copy_from_slice(e.name);
            u.linkname[..e.link.len()].copy_from_slice(e.link);
        }
        h.set_entry_type(tar::EntryType::new(e.kind));
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(e.data.len() as u64);
        if e.kind == CHR || e.kind == BLK {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        self.buf.extend_from_slice(e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0, pad));
        self
    }

    /// A PAX extended header applying to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let rest = 3 + k.len() + v.len();
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len = rest + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        let e = E { data: &data, ..E::new("PaxHeaders/x", b'x') };
        self.add(e)
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.buf);
        v.extend(std::iter::repeat_n(0, 1024));
        v
    }
}

/// A temp dir with `root/` (the unpack target) and `outside/` holding a `victim`
/// file, so tests can prove that nothing escapes.
pub struct Sandbox {
    pub tmp: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("root")).unwrap();
        std::fs::create_dir(tmp.path().join("outside")).unwrap();
        std::fs::write(tmp.path().join("outside/victim"), b"original").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path().join("outside/victim"), std::fs::Permissions::from_mode(0o644)).unwrap();
        Sandbox { tmp }
    }
    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }
    pub fn outside(&self) -> PathBuf {
        self.tmp.path().join("outside")
    }
    /// Nothing changed beside the target: the sibling holds only the untouched
    /// victim, and the temp dir holds only root/ and outside/.
    pub fn assert_contained(&self) {
        let mut top: Vec<_> = std::fs::read_dir(self.tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        top.sort();
        assert_eq!(top, ["outside", "root"], "something appeared beside the target");
        let names: Vec<_> = std::fs::read_dir(self.outside()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["victim"], "something appeared in the sibling dir");
        let victim = self.outside().join("victim");
        let m = std::fs::symlink_metadata(&victim).unwrap();
        assert!(m.is_file());
        assert_eq!(m.nlink(), 1, "victim was hardlinked");
        assert_eq!(m.mode() & 0o7777, 0o644, "victim mode changed");
        assert_eq!(std::fs::read(&victim).unwrap(), b"original");
        assert!(kiln_snapshotter::xattr::lget(&self.outside(), "user.overlay.opaque").unwrap().is_none());
        assert!(kiln_snapshotter::xattr::lget(&victim, "user.evil").unwrap().is_none());
    }
}

/// A comparable snapshot of a tree: path → description.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = m.file_type();
        let what = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("symlink->{}", std::fs::read_link(&p).unwrap().display())
        } else if ft.is_file() {
            format!("file:{:?} nlink={}", String::from_utf8_lossy(&std::fs::read(&p).unwrap()), m.nlink())
        } else {
            format!("special mode={:o} rdev={}", m.mode() & libc::S_IFMT, m.rdev())
        };
        let mut xattrs = list_xattrs(&p);
        xattrs.sort();
        let perm = if ft.is_symlink() { 0 } else { m.mode() & 0o7777 };
        out.insert(rel, format!("{what} mode={perm:o} uid={} gid={} mtime={} xattrs={xattrs:?}", m.uid(), m.gid(), m.mtime()));
        if ft.is_dir() {
            walk(root, &p, out);
        }
    }
}

pub fn list_xattrs(p: &Path) -> Vec<String> {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return vec![];
    }
    buf.truncate(n as usize);
    buf.split(|&b| b == 0).filter(|s| !s.is_empty()).map(|s| {
        let name = String::from_utf8_lossy(s).into_owned();
        let v = kiln_snapshotter::xattr::lget(p, &name).unwrap().unwrap_or_default();
        format!("{name}={}", String::from_utf8_lossy(&v))
    }).collect()
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let r = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(r, 0, "lsetxattr {name} on {}: {}", p.display(), std::io::Error::last_os_error());
}

pub fn sha256(data: &[u8]) -> kiln_oci::Digest {
    kiln_oci::Digest::of(data)
}

/// Are we really uid 0 with full capabilities over arbitrary uids (not a single-uid
/// user namespace)? Ownership tests need it.
pub fn can_chown_any() -> bool {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("x");
    std::fs::write(&p, b"").unwrap();
    std::os::unix::fs::lchown(&p, Some(1000), Some(1000)).is_ok()
}
