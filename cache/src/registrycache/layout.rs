//! The cache manifest in an OCI layout directory (`type=local`): read with bounded
//! JSON, blobs copied into the store verified.

use super::*;

/// An index.json or manifest bigger than this is not a cache kiln wrote.
const MAX_JSON: u64 = 16 << 20;

fn read_small(path: &Path, max: u64) -> Result<Option<Vec<u8>>, CacheError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(invalid(path, e.to_string())),
    };
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf).map_err(|e| invalid(path, e.to_string()))?;
    if buf.len() as u64 > max {
        return Err(invalid(path, format!("larger than {max} bytes")));
    }
    Ok(Some(buf))
}

fn invalid(path: &Path, message: String) -> CacheError {
    CacheError::Invalid { what: path.display().to_string(), message }
}

fn blob_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join("sha256").join(d.hex())
}

pub(super) fn blob_file(dir: &Path, d: &Digest) -> PathBuf {
    blob_path(dir, d)
}

/// A blob of the layout, read whole and verified.
fn read_blob(dir: &Path, d: &Digest) -> Result<Vec<u8>, CacheError> {
    let p = blob_path(dir, d);
    let bytes = read_small(&p, MAX_JSON)?.ok_or_else(|| invalid(&p, "missing".into()))?;
    if Digest::of(&bytes) != *d {
        return Err(invalid(&p, format!("does not hold {d}")));
    }
    Ok(bytes)
}

/// The cache manifest named `tag` (or with `digest`) in the layout at `dir`, and
/// its config; `None` when the directory holds no layout yet (a first CI run).
pub(super) fn config_of(dir: &Path, tag: &str, digest: Option<&Digest>) -> Result<Option<(String, serde_json::Value, serde_json::Value)>, CacheError> {
    let index_path = dir.join("index.json");
    let Some(index) = read_small(&index_path, MAX_JSON)? else { return Ok(None) };
    let index: serde_json::Value = serde_json::from_slice(&index).map_err(|e| invalid(&index_path, e.to_string()))?;
    let entry = index["manifests"].as_array().into_iter().flatten().find(|m| match digest {
        Some(d) => m["digest"].as_str() == Some(d.to_string().as_str()),
        None => m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(tag),
    });
    let Some(entry) = entry else { return Ok(None) };
    let md: Digest = entry["digest"].as_str().and_then(|s| s.parse().ok()).ok_or_else(|| invalid(&index_path, "an entry without a digest".into()))?;
    let what = format!("cache manifest {}:{tag} ({md})", dir.display());
    let m: serde_json::Value = serde_json::from_slice(&read_blob(dir, &md)?).map_err(|e| CacheError::Invalid { what: what.clone(), message: e.to_string() })?;
    let cd: Digest = m["config"]["digest"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| CacheError::Invalid { what: what.clone(), message: "no config digest".into() })?;
    let c = serde_json::from_slice(&read_blob(dir, &cd)?).map_err(|e| CacheError::Invalid { what: what.clone(), message: e.to_string() })?;
    Ok(Some((what, m, c)))
}

/// Copies a layer of the layout into the store, verified (nothing enters unless
/// the digest and size match).
pub(super) fn copy_blob(dir: &Path, d: &Digest, size: u64, store: &ContentStore) -> Result<(), CacheError> {
    if store.has(d) {
        return Ok(());
    }
    let p = blob_path(dir, d);
    let mut f = std::fs::File::open(&p).map_err(|e| invalid(&p, e.to_string()))?;
    let mut w = store.writer()?;
    let n = std::io::copy(&mut (&mut f).take(size + 1), &mut w).map_err(|e| invalid(&p, e.to_string()))?;
    if n != size {
        return Err(invalid(&p, format!("has {n} bytes, the record says {size}")));
    }
    w.commit(Some(d))?;
    Ok(())
}
