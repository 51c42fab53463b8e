//! Turning an overlay upperdir into a canonical OCI layer.
//!
//! Canonical means: entries in a fixed order (names sorted bytewise within each
//! directory, a directory before its children), PAX format, numeric uid/gid as on
//! disk with no user/group names, no atime/ctime, no overlay bookkeeping, mtimes
//! clamped to `SOURCE_DATE_EPOCH` when given, and a gzip header without name or time.
//! So the same tree always gives the same bytes.
//!
//! The output is streamed in one pass: tar → sha256 (diffID) → gzip → sha256 +
//! byte count (digest, size) → `out`. Nothing but small buffers is held in memory.
//!
//! Not handled: overlay `redirect_dir`/`metacopy` upperdirs (kiln mounts without
//! them, the default for a user-namespace mount); sockets are skipped, as Docker does.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_oci::{Digest, Sha256Writer};

pub use crate::error::DiffError;
use crate::lazy::estargz::EstargzWriter;
use crate::lazy::soci::ZtocRecorder;
use crate::lazy::tar_events::TarEvents;
use crate::lazy::zstd_chunked::ZstdChunkedWriter;
use crate::safepath::{join, normalize};
use crate::whiteout::{is_overlay_whiteout, OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::xattr;

/// How to write a layer.
#[derive(Debug, Default, Clone)]
pub struct DiffOptions {
    /// Paths relative to the root (no leading `/`) to leave out with everything
    /// below them: mount stubs kiln created (`proc`, `etc/hosts`, ...).
    pub exclude: Vec<PathBuf>,
    /// Clamp mtimes to this when set (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: Option<i64>,
    /// gzip level 0-9; 6 when unset.
    pub gzip_level: Option<u32>,
    /// How to compress the tar stream (gzip unless told otherwise).
    pub compression: Compression,
    /// zstd level 1-22 (negative = fast modes); 3 when unset.
    pub zstd_level: Option<i32>,
    /// A SOCI ztoc of a gzip layer, with access points this many uncompressed bytes
    /// apart ([`crate::lazy::soci`]); `LayerDigests::ztoc` holds it.
    pub soci_span: Option<u64>,
}

/// Layer compression for writing. The media type follows from it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
    /// gzip laid out as eStargz ([`crate::lazy::estargz`]).
    Estargz,
    /// zstd laid out as zstd:chunked ([`crate::lazy::zstd_chunked`]).
    ZstdChunked,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip | Compression::Estargz => kiln_oci::media::OCI_LAYER_GZIP,
            Compression::Zstd | Compression::ZstdChunked => kiln_oci::media::OCI_LAYER_ZSTD,
            Compression::None => kiln_oci::media::OCI_LAYER_TAR,
        }
    }

    /// A format lazy-pulling snapshotters read (its layers carry TOC annotations).
    pub fn is_lazy(self) -> bool {
        matches!(self, Compression::Estargz | Compression::ZstdChunked)
    }

    /// The name `--compression` takes.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
            Compression::Estargz => "estargz",
            Compression::ZstdChunked => "zstd:chunked",
        }
    }

    /// Whether a layer with this media type and these descriptor annotations is
    /// already in this format (what `force-compression` leaves alone).
    pub fn describes(self, media_type: &str, annotations: &std::collections::BTreeMap<String, String>) -> bool {
        let has = |k: &str| annotations.contains_key(k);
        let plain = media_type == self.media_type() || (self == Compression::Gzip && media_type == kiln_oci::media::DOCKER_LAYER_GZIP);
        match self {
            Compression::Estargz => plain && has(crate::lazy::estargz::TOC_DIGEST),
            Compression::ZstdChunked => plain && has(crate::lazy::zstd_chunked::MANIFEST_CHECKSUM),
            _ => plain,
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" | "uncompressed" => Ok(Compression::None),
            "estargz" => Ok(Compression::Estargz),
            "zstd:chunked" | "zstd-chunked" => Ok(Compression::ZstdChunked),
            o => Err(format!("unknown compression {o:?} (expected gzip, zstd, estargz, zstd:chunked or none)")),
        }
    }
}

/// The identities of a written layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDigests {
    /// sha256 of the uncompressed tar (goes into the image config's rootfs).
    pub diff_id: Digest,
    /// sha256 of the compressed blob (the manifest descriptor's digest).
    pub digest: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    /// OCI media type of the blob (`…tar+gzip`, `…tar+zstd`, `…tar`).
    pub media_type: &'static str,
    /// Layer descriptor annotations the format asks for (the lazy formats' TOC
    /// digest and position); empty for plain layers.
    pub annotations: std::collections::BTreeMap<String, String>,
    /// The layer's SOCI ztoc, when `DiffOptions::soci_span` asked for one.
    pub ztoc: Option<Vec<u8>>,
}

/// Compression threads: the machine's parallelism, at most 8.
fn workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8)
}

/// The compressor between the tar hasher and the blob hasher.
enum Encoder<W: Write> {
    Gzip(crate::pgzip::ParGzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    None(W),
    Estargz(TarEvents<EstargzWriter<W>>),
    ZstdChunked(TarEvents<ZstdChunkedWriter<W>>),
    /// gzip with a SOCI ztoc recorded on the way.
    GzipSoci(TarEvents<ZtocRecorder<crate::pgzip::ParGzEncoder<W>>>),
}

/// What the compressor leaves besides the blob: a diffID when the decompressed
/// stream is not the tar written into it (eStargz), and descriptor annotations.
struct Ending<W> {
    out: W,
    diff_id: Option<Digest>,
    annotations: Vec<(String, String)>,
    ztoc: Option<Vec<u8>>,
}

impl<W: Write> Encoder<W> {
    fn new(c: Compression, opts: &DiffOptions, out: W) -> io::Result<Self> {
        Ok(match c {
            Compression::Gzip => {
                let level = opts.gzip_level.unwrap_or(6).min(9);
                // Blocks compressed in parallel; the bytes depend on the level only
                // (not on the worker count), with no name or time in the header.
                let gz = crate::pgzip::ParGzEncoder::new(out, level, workers());
                match opts.soci_span {
                    Some(span) => Encoder::GzipSoci(TarEvents::new(ZtocRecorder::new(gz.with_index(span)))),
                    None => Encoder::Gzip(gz),
                }
            }
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(out, opts.zstd_level.unwrap_or(3))?;
                // Always at least one worker: zstd's multithreaded output depends on
                // the parameters but not on the worker count, so the same layer is
                // bit-identical on a 2-core CI runner and a 64-core laptop.
                e.multithread(workers() as u32)?;
                Encoder::Zstd(e)
            }
            Compression::None => Encoder::None(out),
            // Members and frames per file: compressed on the writing thread.
            Compression::Estargz => Encoder::Estargz(TarEvents::new(EstargzWriter::new(out, opts.gzip_level.unwrap_or(6), 0)?)),
            Compression::ZstdChunked => Encoder::ZstdChunked(TarEvents::new(ZstdChunkedWriter::new(out, opts.zstd_level.unwrap_or(3))?)),
        })
    }

    fn finish(self) -> io::Result<Ending<W>> {
        let plain = |out| Ending { out, diff_id: None, annotations: Vec::new(), ztoc: None };
        let lazy = |f: crate::lazy::Finished<W>| Ending { out: f.out, diff_id: f.diff_id, annotations: f.annotations, ztoc: None };
        match self {
            Encoder::Gzip(g) => g.finish().map(plain),
            Encoder::Zstd(z) => z.finish().map(plain),
            Encoder::None(w) => Ok(plain(w)),
            Encoder::Estargz(t) => t.finish()?.close().map(lazy),
            Encoder::ZstdChunked(t) => t.finish()?.close().map(lazy),
            Encoder::GzipSoci(t) => {
                let (gz, toc) = t.finish()?.into_parts();
                let (out, zinfo) = gz.finish_indexed()?;
                let zinfo = zinfo.ok_or_else(|| io::Error::other("gzip access points were not recorded"))?;
                let tool = concat!("kiln ", env!("CARGO_PKG_VERSION"));
                Ok(Ending { out, diff_id: None, annotations: Vec::new(), ztoc: Some(crate::lazy::soci::ztoc(&toc, &zinfo, tool)) })
            }
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(g) => g.write(buf),
            Encoder::Zstd(z) => z.write(buf),
            Encoder::None(w) => w.write(buf),
            Encoder::Estargz(t) => t.write(buf),
            Encoder::ZstdChunked(t) => t.write(buf),
            Encoder::GzipSoci(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(g) => g.flush(),
            Encoder::Zstd(z) => z.flush(),
            Encoder::None(w) => w.flush(),
            Encoder::Estargz(t) => t.flush(),
            Encoder::ZstdChunked(t) => t.flush(),
            Encoder::GzipSoci(t) => t.flush(),
        }
    }
}

type Out<W> = Sha256Writer<Encoder<Sha256Writer<W>>>;

/// Turn an overlay-format upper directory (an overlay upperdir, or the one the
/// native snapshotter builds from its walk-and-compare diff) into a canonical OCI
/// layer written to `out`, compressed as `opts.compression` says.
pub fn write_layer<W: Write>(upper: &Path, opts: &DiffOptions, out: W) -> Result<LayerDigests, DiffError> {
    let enc = Encoder::new(opts.compression, opts, Sha256Writer::new(out)).map_err(DiffError::Write)?;
    let mut w = Walker {
        tar: tar::Builder::new(Sha256Writer::new(enc)),
        opts,
        exclude: opts
            .exclude
            .iter()
            .filter_map(|p| normalize(p.as_os_str().as_bytes()).ok())
            .filter(|c| !c.is_empty())
            .map(|c| join(&c))
            .collect(),
        links: HashMap::new(),
    };
    // An opaque upper root (everything below replaced) is rare but representable.
    let root_xattrs = xattr::list(upper).map_err(io_err(upper, "list xattrs"))?;
    if is_opaque(&root_xattrs) {
        let meta = std::fs::symlink_metadata(upper).map_err(io_err(upper, "lstat"))?;
        w.marker(OPAQUE_MARKER, w.mtime(&meta), upper)?;
    }
    w.walk_dir(upper, b"")?;

    let hashed_tar = w.tar.into_inner().map_err(DiffError::Write)?;
    finish(hashed_tar, opts)
}

/// Compress an uncompressed layer (`tar`, as a layer that never left the machine was
/// kept) as `opts.compression` says: the blob [`write_layer`] would have written from
/// the same tree, byte for byte (the encoders' output depends on the bytes and the
/// level only). Returns the digests; the caller checks `diff_id` against its record.
pub fn compress_tar<R: Read, W: Write>(mut tar: R, opts: &DiffOptions, out: W) -> Result<LayerDigests, DiffError> {
    let enc = Encoder::new(opts.compression, opts, Sha256Writer::new(out)).map_err(DiffError::Write)?;
    let mut hashed_tar = Sha256Writer::new(enc);
    io::copy(&mut tar, &mut hashed_tar).map_err(DiffError::Write)?;
    finish(hashed_tar, opts)
}

/// Ends the tar, the compressor and the blob: the layer's identities.
fn finish<W: Write>(hashed_tar: Out<W>, opts: &DiffOptions) -> Result<LayerDigests, DiffError> {
    let (enc, tar_diff_id, _) = hashed_tar.finish();
    let end = enc.finish().map_err(DiffError::Write)?;
    let (mut out, digest, size) = end.out.finish();
    out.flush().map_err(DiffError::Write)?;
    let diff_id = end.diff_id.unwrap_or(tar_diff_id);
    Ok(LayerDigests { diff_id, digest, size, media_type: opts.compression.media_type(), annotations: end.annotations.into_iter().collect(), ztoc: end.ztoc })
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> DiffError + 'a {
    move |source| DiffError::Io { path: path.to_path_buf(), op, source }
}

fn is_opaque(xattrs: &[(Vec<u8>, Vec<u8>)]) -> bool {
    xattrs.iter().any(|(n, v)| {
        (n == xattr::OPAQUE_XATTR.as_bytes() || n == xattr::TRUSTED_OPAQUE_XATTR.as_bytes()) && v == b"y"
    })
}

struct Walker<'o, W: Write> {
    tar: tar::Builder<Out<W>>,
    opts: &'o DiffOptions,
    exclude: HashSet<Vec<u8>>,
    /// (dev, ino) of multiply-linked files already written → their entry name.
    links: HashMap<(u64, u64), Vec<u8>>,
}

/// Everything about one entry except its data.
struct Entry<'a> {
    name: &'a [u8],
    kind: tar::EntryType,
    link: Option<&'a [u8]>,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
    dev: Option<(u32, u32)>,
    xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

/// Largest values the ustar numeric fields hold in octal; larger ones go to PAX.
const MAX_ID: u64 = 0o7777777;
const MAX_SIZE: u64 = 0o77777777777;

impl<W: Write> Walker<'_, W> {
    fn mtime(&self, meta: &std::fs::Metadata) -> u64 {
        let mut t = meta.mtime();
        if let Some(epoch) = self.opts.source_date_epoch {
            t = t.min(epoch);
        }
        t.max(0) as u64
    }

    fn walk_dir(&mut self, dir: &Path, rel: &[u8]) -> Result<(), DiffError> {
        let mut names: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .map_err(io_err(dir, "read directory"))?
            .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
            .collect::<Result<_, _>>()
            .map_err(io_err(dir, "read directory"))?;
        names.sort();
        for name in names {
            let mut child_rel = rel.to_vec();
            if !child_rel.is_empty() {
                child_rel.push(b'/');
            }
            child_rel.extend_from_slice(&name);
            if self.exclude.contains(&child_rel) {
                continue;
            }
            let abs = dir.join(std::ffi::OsStr::from_bytes(&name));
            self.write_one(&abs, &child_rel, &name)?;
        }
        Ok(())
    }

    fn write_one(&mut self, abs: &Path, rel: &[u8], base: &[u8]) -> Result<(), DiffError> {
        let meta = std::fs::symlink_metadata(abs).map_err(io_err(abs, "lstat"))?;
        let mode = meta.mode();
        let mtime = self.mtime(&meta);
        let fmt = mode & libc::S_IFMT;

        if is_overlay_whiteout(mode, meta.rdev()) {
            // 0/0 char device → `.wh.NAME`. Checked before hardlinks: overlay may
            // share one whiteout inode between many names.
            let mut name = rel[..rel.len() - base.len()].to_vec();
            name.extend_from_slice(WHITEOUT_PREFIX);
            name.extend_from_slice(base);
            return self.marker(&name, mtime, abs);
        }

        let all_xattrs = xattr::list(abs).map_err(io_err(abs, "list xattrs"))?;
        let opaque = fmt == libc::S_IFDIR && is_opaque(&all_xattrs);
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> = all_xattrs
            .into_iter()
            .filter(|(n, _)| !xattr::is_overlay_private(&String::from_utf8_lossy(n)))
            .collect();

        let mut e = Entry {
            name: rel,
            kind: tar::EntryType::Regular,
            link: None,
            mode: mode & 0o7777,
            uid: meta.uid() as u64,
            gid: meta.gid() as u64,
            mtime,
            size: 0,
            dev: None,
            xattrs: &xattrs,
        };

        match fmt {
            libc::S_IFDIR => {
                let mut name = rel.to_vec();
                name.push(b'/');
                e.name = &name;
                e.kind = tar::EntryType::Directory;
                self.append(&e, io::empty(), abs)?;
                if opaque {
                    let mut marker = name.clone();
                    marker.extend_from_slice(OPAQUE_MARKER);
                    self.marker(&marker, mtime, abs)?;
                }
                return self.walk_dir(abs, rel);
            }
            libc::S_IFSOCK => return Ok(()),
            _ => {}
        }

        // A later name of an inode we already wrote becomes a hardlink entry.
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key).cloned() {
                e.kind = tar::EntryType::Link;
                e.link = Some(&first);
                return self.append(&e, io::empty(), abs);
            }
            self.links.insert(key, rel.to_vec());
        }

        match fmt {
            libc::S_IFREG => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(abs)
                    .map_err(io_err(abs, "open"))?;
                e.size = meta.len();
                let mut r = ExactReader { inner: file, remaining: e.size, error: None };
                let res = self.append(&e, &mut r, abs);
                if let Some(err) = r.error.take() {
                    return Err(DiffError::Io { path: abs.to_path_buf(), op: "read", source: err });
                }
                res
            }
            libc::S_IFLNK => {
                let target = std::fs::read_link(abs).map_err(io_err(abs, "readlink"))?;
                e.kind = tar::EntryType::Symlink;
                e.link = Some(target.as_os_str().as_bytes());
                self.append(&e, io::empty(), abs)
            }
            libc::S_IFCHR | libc::S_IFBLK => {
                e.kind = if fmt == libc::S_IFCHR { tar::EntryType::Char } else { tar::EntryType::Block };
                let rdev = meta.rdev();
                e.dev = Some((libc::major(rdev), libc::minor(rdev)));
                self.append(&e, io::empty(), abs)
            }
            libc::S_IFIFO => {
                e.kind = tar::EntryType::Fifo;
                self.append(&e, io::empty(), abs)
            }
            _ => Err(DiffError::Unrepresentable { path: abs.to_path_buf(), reason: format!("unknown file type {fmt:o}") }),
        }
    }

    /// An empty marker file (`.wh.NAME` or `DIR/.wh..wh..opq`): mode 0, root-owned.
    fn marker(&mut self, name: &[u8], mtime: u64, abs: &Path) -> Result<(), DiffError> {
        let e = Entry {
            name,
            kind: tar::EntryType::Regular,
            link: None,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime,
            size: 0,
            dev: None,
            xattrs: &[],
        };
        self.append(&e, io::empty(), abs)
    }

    /// Write a PAX extension header if needed, then the ustar header and data.
    fn append<R: Read>(&mut self, e: &Entry<'_>, data: R, abs: &Path) -> Result<(), DiffError> {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut h = tar::Header::new_ustar();
        {
            let u = h.as_ustar_mut().expect("ustar header");
            if e.name.len() > u.name.len() {
                pax.push(("path".into(), e.name.to_vec()));
            }
            let n = e.name.len().min(u.name.len());
            u.name[..n].copy_from_slice(&e.name[..n]);
            if let Some(link) = e.link {
                if link.len() > u.linkname.len() {
                    pax.push(("linkpath".into(), link.to_vec()));
                }
                let n = link.len().min(u.linkname.len());
                u.linkname[..n].copy_from_slice(&link[..n]);
            }
        }
        if e.uid > MAX_ID {
            pax.push(("uid".into(), e.uid.to_string().into_bytes()));
        }
        if e.gid > MAX_ID {
            pax.push(("gid".into(), e.gid.to_string().into_bytes()));
        }
        if e.size > MAX_SIZE {
            pax.push(("size".into(), e.size.to_string().into_bytes()));
        }
        for (n, v) in e.xattrs {
            let n = std::str::from_utf8(n).map_err(|_| DiffError::Unrepresentable {
                path: abs.to_path_buf(),
                reason: format!("xattr name {:?} is not UTF-8", String::from_utf8_lossy(n)),
            })?;
            pax.push((format!("SCHILY.xattr.{n}"), v.clone()));
        }
        if !pax.is_empty() {
            self.tar
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(DiffError::Write)?;
        }
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(if e.uid > MAX_ID { 0 } else { e.uid });
        h.set_gid(if e.gid > MAX_ID { 0 } else { e.gid });
        h.set_mtime(e.mtime);
        // Also in the header for readers that ignore PAX (the tar crate falls back
        // to base-256 when it does not fit in octal).
        h.set_size(e.size);
        if let Some((maj, min)) = e.dev {
            h.set_device_major(maj).map_err(DiffError::Write)?;
            h.set_device_minor(min).map_err(DiffError::Write)?;
        }
        h.set_cksum();
        self.tar.append(&h, data).map_err(DiffError::Write)
    }
}

use std::os::unix::fs::OpenOptionsExt;

/// Reads exactly `remaining` bytes of a file: if the file shrank while we were
/// writing it, the tar would be corrupt, so that is an error (kept aside so the
/// caller can blame the file rather than the output).
struct ExactReader {
    inner: std::fs::File,
    remaining: u64,
    error: Option<io::Error>,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf.len().min(self.remaining.min(usize::MAX as u64) as usize);
        match self.inner.read(&mut buf[..max]) {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being written to the layer");
                self.error = Some(io::Error::new(e.kind(), e.to_string()));
                Err(e)
            }
            Ok(n) => {
                self.remaining -= n as u64;
                Ok(n)
            }
            Err(e) => {
                self.error = Some(io::Error::new(e.kind(), e.to_string()));
                Err(e)
            }
        }
    }
}
