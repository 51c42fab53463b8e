//! The local content store: an OCI image layout on disk.
//!
//! Layout: `root/oci-layout`, `root/index.json`, `root/blobs/sha256/<hex>`, plus
//! `root/ingest/` for blobs being written. Blobs only ever enter `blobs/` by an atomic
//! rename of a fully written, fsynced and digest-verified temp file, so a killed build
//! never leaves a blob whose name lies about its content (DESIGN.md invariant).
//! Temp names are unique per writer, so concurrent builds (threads or processes)
//! writing the same blob do not clash: both renames put identical bytes in place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kiln_oci::{Descriptor, Digest, ImageIndex, Sha256Writer};

use crate::lock::{LockFile, LockMode};

pub use crate::error::StoreError;

/// The annotation an OCI layout uses to name an image (the store's `index.json`
/// names images the same way as an exported layout).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

const OCI_LAYOUT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";
const EMPTY_INDEX: &str = "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[]}";

/// The local content store (see module docs). Clones share one handle and one
/// shared store lock (see [`crate::lock`] for the protocol).
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
    lock: Arc<LockFile>,
}

impl ContentStore {
    /// Opens the store at `root`, creating the layout if it is missing, and takes the
    /// shared store lock (waiting, with a message, while a prune runs).
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(root).map_err(|e| StoreError::io("creating", root, e))?;
        let lock_path = root.join("lock");
        let lock = LockFile::acquire(&lock_path, LockMode::Shared, || {
            tracing::warn!("waiting for a prune of {} to finish", root.display());
        })?;
        init_layout(root)?;
        for d in ["ingest", "cache/keys"] {
            let dir = root.join(d);
            fs::create_dir_all(&dir).map_err(|e| StoreError::io("creating", &dir, e))?;
        }
        Ok(ContentStore { root: root.to_path_buf(), lock: Arc::new(lock) })
    }

    pub(crate) fn lock_file(&self) -> &LockFile {
        &self.lock
    }

    /// The descriptors named in `index.json` (images kept by name: GC roots).
    pub fn refs(&self) -> Result<Vec<Descriptor>, StoreError> {
        let p = self.root.join("index.json");
        let bytes = fs::read(&p).map_err(|e| StoreError::io("reading", &p, e))?;
        let idx: ImageIndex = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Invalid { what: p.display().to_string(), message: e.to_string() })?;
        Ok(idx.manifests().clone())
    }

    /// Names `desc` (whose blobs must be in the store) as `name` in `index.json`
    /// (`org.opencontainers.image.ref.name`), replacing an entry of the same name.
    /// Named images are never pruned. Safe against concurrent callers (an exclusive
    /// `flock` on `index.lock` around the read-modify-write).
    pub fn set_ref(&self, name: &str, desc: &Descriptor) -> Result<(), StoreError> {
        self.update_index(|manifests| {
            manifests.retain(|d| ref_name(d) != Some(name));
            let mut d = desc.clone();
            let mut ann = d.annotations().clone().unwrap_or_default();
            ann.insert(REF_NAME.to_string(), name.to_string());
            d.set_annotations(Some(ann));
            manifests.push(d);
        })
    }

    /// Removes the entry named `name` from `index.json` (its blobs become prunable).
    pub fn remove_ref(&self, name: &str) -> Result<(), StoreError> {
        self.update_index(|manifests| manifests.retain(|d| ref_name(d) != Some(name)))
    }

    fn update_index(&self, f: impl FnOnce(&mut Vec<Descriptor>)) -> Result<(), StoreError> {
        let _guard = LockFile::acquire(&self.root.join("index.lock"), LockMode::Exclusive, || {})?;
        let p = self.root.join("index.json");
        let bytes = fs::read(&p).map_err(|e| StoreError::io("reading", &p, e))?;
        let mut idx: ImageIndex = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Invalid { what: p.display().to_string(), message: e.to_string() })?;
        let mut manifests = idx.manifests().clone();
        f(&mut manifests);
        idx.set_manifests(manifests);
        let out = serde_json::to_vec_pretty(&idx)
            .map_err(|e| StoreError::Invalid { what: p.display().to_string(), message: e.to_string() })?;
        write_atomic(&p, &out)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        // `Digest::hex` is validated lowercase hex, so it is a safe file name.
        self.root.join("blobs").join("sha256").join(d.hex())
    }

    pub fn has(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// A writer to a fresh temp file in `root/ingest/`, hashing as it writes.
    pub fn writer(&self) -> Result<BlobWriter, StoreError> {
        let dir = self.root.join("ingest");
        let (file, path) = create_unique(&dir, "blob")?;
        Ok(BlobWriter {
            inner: Some(Sha256Writer::new(file)),
            temp: path,
            blobs_dir: self.root.join("blobs").join("sha256"),
        })
    }

    /// Stores `bytes` and returns their digest. A blob already present is not rewritten.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let d = Digest::of(bytes);
        if self.has(&d) {
            return Ok(d);
        }
        let mut w = self.writer()?;
        w.write_all(bytes).map_err(|e| StoreError::io("writing", &w.temp, e))?;
        let (d2, _) = w.commit(Some(&d))?;
        Ok(d2)
    }

    pub fn read(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(d);
        fs::read(&p).map_err(|e| self.not_found_or(d, "reading", &p, e))
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File, StoreError> {
        let p = self.blob_path(d);
        File::open(&p).map_err(|e| self.not_found_or(d, "opening", &p, e))
    }

    /// Reads each blob once and checks that its bytes still hash to its digest:
    /// called where bytes leave the store for another reader (an OCI layout, an
    /// archive), which would otherwise trust a file that changed on disk. Every
    /// corrupt blob is removed (the next build fetches or rebuilds it); the error
    /// names the first and counts the others.
    pub fn verify(&self, digests: &[Digest]) -> Result<(), StoreError> {
        let mut corrupt: Option<StoreError> = None;
        let mut others = 0;
        for d in digests {
            let mut f = self.open_blob(d)?;
            let mut w = Sha256Writer::new(io::sink());
            let p = self.blob_path(d);
            io::copy(&mut f, &mut w).map_err(|e| StoreError::io("reading", &p, e))?;
            let (_, actual, _) = w.finish();
            if &actual == d {
                continue;
            }
            let _ = fs::remove_file(&p);
            match corrupt {
                None => corrupt = Some(StoreError::Corrupt { path: p, expected: d.clone(), actual, others: 0 }),
                Some(_) => others += 1,
            }
        }
        match corrupt {
            Some(StoreError::Corrupt { path, expected, actual, .. }) => Err(StoreError::Corrupt { path, expected, actual, others }),
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub fn size(&self, d: &Digest) -> Result<u64, StoreError> {
        let p = self.blob_path(d);
        fs::metadata(&p)
            .map(|m| m.len())
            .map_err(|e| self.not_found_or(d, "reading metadata of", &p, e))
    }

    fn not_found_or(&self, d: &Digest, op: &'static str, p: &Path, e: io::Error) -> StoreError {
        if e.kind() == io::ErrorKind::NotFound {
            StoreError::NotFound(d.clone())
        } else {
            StoreError::io(op, p, e)
        }
    }
}

/// The name `d` has in an `index.json` (its [`REF_NAME`] annotation).
pub(crate) fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations().as_ref()?.get(REF_NAME).map(|s| s.as_str())
}

/// Creates `oci-layout`, `index.json` and `blobs/sha256` under `root` if missing.
/// Shared with layout export.
pub(crate) fn init_layout(root: &Path) -> Result<(), StoreError> {
    let blobs = root.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(|e| StoreError::io("creating", &blobs, e))?;
    let layout = root.join("oci-layout");
    if !layout.exists() {
        write_atomic(&layout, OCI_LAYOUT.as_bytes())?;
    }
    let index = root.join("index.json");
    if !index.exists() {
        // Never replace: another process may have created it and named images in
        // it since the check above.
        create_if_absent(&index, EMPTY_INDEX.as_bytes())?;
    }
    Ok(())
}

/// Writes `path` with `bytes` unless it exists, atomically (a complete temp file
/// hard-linked into place, which fails rather than replaces).
fn create_if_absent(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let (mut f, tmp) = create_unique(dir, "init")?;
    let res = f.write_all(bytes).and_then(|_| f.sync_all()).and_then(|_| match fs::hard_link(&tmp, path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        r => r,
    });
    let _ = fs::remove_file(&tmp);
    res.map_err(|e| StoreError::io("writing", path, e))?;
    sync_dir(dir);
    Ok(())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates a new file with a name unique across threads and processes
/// (pid + per-process counter + time), refusing to reuse an existing name.
pub(crate) fn create_unique(dir: &Path, prefix: &str) -> Result<(File, PathBuf), StoreError> {
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = dir.join(format!(".{prefix}-{}-{n}-{nanos}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(StoreError::io("creating", &path, e)),
        }
    }
}

/// Writes a small file atomically: temp file in the same directory, fsync, rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let (mut f, tmp) = create_unique(dir, "write")?;
    let res = f
        .write_all(bytes)
        .and_then(|_| f.sync_all())
        .and_then(|_| fs::rename(&tmp, path));
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::io("writing", path, e));
    }
    sync_dir(dir);
    Ok(())
}

/// Best effort: make a rename durable. Failing to fsync a directory is not worth
/// failing a build for (some filesystems refuse it).
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A blob being written into the store. Nothing is visible under `blobs/` until
/// [`BlobWriter::commit`]; dropping it without committing removes the temp file.
pub struct BlobWriter {
    inner: Option<Sha256Writer<File>>,
    temp: PathBuf,
    blobs_dir: PathBuf,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter").field("temp", &self.temp).finish()
    }
}

impl BlobWriter {
    /// Path of the temp file (for error messages).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Fsyncs, verifies (`expected` must match if given; on mismatch the temp file is
    /// removed), and renames into `blobs/`. Returns (digest, size).
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64), StoreError> {
        let w = self.inner.take().expect("BlobWriter committed twice");
        let (file, digest, size) = w.finish();
        // From here on, `self.temp` is removed on error by Drop (inner is None, but the
        // path is still ours until the rename succeeds).
        if let Some(exp) = expected {
            if *exp != digest {
                return Err(StoreError::DigestMismatch { expected: exp.clone(), actual: digest });
            }
        }
        file.sync_all().map_err(|e| StoreError::io("syncing", &self.temp, e))?;
        // Blobs are immutable: read-only protects them when hard-linked into an export.
        let _ = fs::set_permissions(&self.temp, std::os::unix::fs::PermissionsExt::from_mode(0o444));
        drop(file);
        let dest = self.blobs_dir.join(digest.hex());
        // rename(2) atomically replaces an existing blob; a concurrent writer of the
        // same digest wrote the same bytes, so either one winning is fine.
        fs::rename(&self.temp, &dest).map_err(|e| StoreError::io("committing blob to", &dest, e))?;
        self.temp = PathBuf::new();
        sync_dir(&self.blobs_dir);
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Some(w) => w.write(buf),
            None => Err(io::Error::other("BlobWriter already committed")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        self.inner.take();
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest_is_empty(s: &ContentStore) -> bool {
        fs::read_dir(s.root().join("ingest")).unwrap().next().is_none()
    }

    #[test]
    fn open_creates_layout() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("store");
        let s = ContentStore::open(&root).unwrap();
        assert!(root.join("oci-layout").is_file());
        assert!(root.join("blobs/sha256").is_dir());
        let idx: serde_json::Value =
            serde_json::from_slice(&fs::read(root.join("index.json")).unwrap()).unwrap();
        assert_eq!(idx["schemaVersion"], 2);
        // Re-opening keeps what is there.
        let d = s.put(b"x").unwrap();
        let s2 = ContentStore::open(&root).unwrap();
        assert!(s2.has(&d));
    }

    #[test]
    fn put_read_size() {
        let t = tempfile::tempdir().unwrap();
        let s = ContentStore::open(t.path()).unwrap();
        let d = s.put(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert!(s.has(&d));
        assert_eq!(s.read(&d).unwrap(), b"hello");
        assert_eq!(s.size(&d).unwrap(), 5);
        assert_eq!(s.put(b"hello").unwrap(), d);
        let missing = Digest::of(b"nope");
        assert!(matches!(s.read(&missing), Err(StoreError::NotFound(_))));
        assert!(matches!(s.size(&missing), Err(StoreError::NotFound(_))));
        assert!(matches!(s.open_blob(&missing), Err(StoreError::NotFound(_))));
        assert!(ingest_is_empty(&s));
    }

    #[test]
    fn commit_is_atomic() {
        let t = tempfile::tempdir().unwrap();
        let s = ContentStore::open(t.path()).unwrap();
        let d = Digest::of(b"abcdef");
        let mut w = s.writer().unwrap();
        w.write_all(b"abc").unwrap();
        // Half written: not visible.
        assert!(!s.has(&d));
        assert!(w.temp_path().starts_with(t.path().join("ingest")));
        w.write_all(b"def").unwrap();
        assert!(!s.has(&d));
        let (got, size) = w.commit(Some(&d)).unwrap();
        assert_eq!((got.clone(), size), (d.clone(), 6));
        assert_eq!(s.read(&d).unwrap(), b"abcdef");
        assert!(ingest_is_empty(&s));
    }

    #[test]
    fn digest_mismatch_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let s = ContentStore::open(t.path()).unwrap();
        let expected = Digest::of(b"right");
        let mut w = s.writer().unwrap();
        w.write_all(b"wrong").unwrap();
        let err = w.commit(Some(&expected)).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&expected.to_string()));
        assert!(!s.has(&expected));
        assert!(!s.has(&Digest::of(b"wrong")));
        assert!(ingest_is_empty(&s));
    }

    #[test]
    fn drop_removes_temp() {
        let t = tempfile::tempdir().unwrap();
        let s = ContentStore::open(t.path()).unwrap();
        let mut w = s.writer().unwrap();
        w.write_all(b"partial").unwrap();
        let p = w.temp_path().to_path_buf();
        assert!(p.exists());
        drop(w);
        assert!(!p.exists());
        assert!(ingest_is_empty(&s));
        assert!(fs::read_dir(t.path().join("blobs/sha256")).unwrap().next().is_none());
    }

    #[test]
    fn concurrent_writers_of_same_blob_both_succeed() {
        let t = tempfile::tempdir().unwrap();
        let s = ContentStore::open(t.path()).unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let d = Digest::of(&data);
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|sc| {
            for _ in 0..8 {
                sc.spawn(|| {
                    let mut w = s.writer().unwrap();
                    barrier.wait();
                    for chunk in data.chunks(4096) {
                        w.write_all(chunk).unwrap();
                    }
                    let (got, n) = w.commit(Some(&d)).unwrap();
                    assert_eq!(got, d);
                    assert_eq!(n, data.len() as u64);
                });
            }
        });
        assert_eq!(s.read(&d).unwrap(), data);
        assert!(ingest_is_empty(&s));
    }

    #[test]
    fn separate_store_handles_share_blobs() {
        // Two builds open the same root independently (as two processes would).
        let t = tempfile::tempdir().unwrap();
        let a = ContentStore::open(t.path()).unwrap();
        let b = ContentStore::open(t.path()).unwrap();
        let d = a.put(b"shared").unwrap();
        assert!(b.has(&d));
        assert_eq!(b.put(b"shared").unwrap(), d);
    }

    #[test]
    fn concurrent_builds_name_images_without_losing_any() {
        // Eight "builds", each with its own handle (as separate processes would have),
        // write blobs and name an image at the same time: no entry is lost.
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        std::thread::scope(|sc| {
            for i in 0..8u8 {
                let root = root.clone();
                sc.spawn(move || {
                    let s = ContentStore::open(&root).unwrap();
                    for j in 0..5u8 {
                        let d = s.put(&[i, j]).unwrap();
                        let desc = oci_spec::image::DescriptorBuilder::default()
                            .media_type(oci_spec::image::MediaType::ImageLayer)
                            .digest(oci_spec::image::Digest::try_from(d.to_string()).unwrap())
                            .size(2u64)
                            .build()
                            .unwrap();
                        s.set_ref(&format!("b{i}-{j}"), &desc).unwrap();
                    }
                });
            }
        });
        let s = ContentStore::open(&root).unwrap();
        let refs = s.refs().unwrap();
        assert_eq!(refs.len(), 40);
        s.set_ref("b0-0", &refs[5]).unwrap();
        assert_eq!(s.refs().unwrap().len(), 40, "same name replaced");
        s.remove_ref("b0-0").unwrap();
        assert_eq!(s.refs().unwrap().len(), 39);
    }
}
