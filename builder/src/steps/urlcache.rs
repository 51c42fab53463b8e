//! Remote `ADD` sources (HTTP/HTTPS without `--checksum`) resolved before any step
//! runs, so that their content enters the step keys: each URL is downloaded once
//! into the content store and remembered with the server's `ETag` and
//! `Last-Modified` (`$KILN_ROOT/http-cache/<sha256 of the URL>.json`). A later
//! build asks with `HEAD` and `If-None-Match` first and downloads again only when
//! the ETag changed, as BuildKit's HTTP source does (`source/http/source.go`
//! `resolveMetadata`): a rebuild sends `HEAD`, a changed file is fetched with `GET`.
//! A server that sends no ETag is asked with `GET` every time; the step is still
//! cached when the bytes are the same.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kiln_cache::store::ContentStore;
use kiln_oci::Digest;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A URL as it was resolved for this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The body, in the content store.
    pub digest: Digest,
    /// `Last-Modified`, seconds since the epoch.
    pub mtime: Option<i64>,
}

/// What is remembered of a URL between builds.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    digest: String,
}

/// Every URL a build reads, resolved (blocking: call off the async runtime);
/// `out` holds the ones resolved already.
pub fn resolve_all(
    state_dir: &Path,
    store: &ContentStore,
    urls: &[String],
    mut out: BTreeMap<String, Resolved>,
) -> Result<BTreeMap<String, Resolved>> {
    if urls.iter().all(|u| out.contains_key(u)) {
        return Ok(out);
    }
    let client = client()?;
    let dir = state_dir.join("http-cache");
    for url in urls {
        if !out.contains_key(url) {
            let r = resolve(&client, &dir, store, url)?;
            out.insert(url.clone(), r);
        }
    }
    Ok(out)
}

/// A URL with `--checksum`, fetched when its step runs (the checksum is its key):
/// the body goes into the store only if it has that digest.
pub fn fetch_pinned(store: &ContentStore, url: &str, checksum: &str) -> Result<Resolved> {
    let want: Digest = checksum.parse().with_context(|| format!("--checksum={checksum}: expected sha256:<64 hex digits>"))?;
    let resp = client()?.get(url).send().with_context(|| format!("ADD {url}: request failed"))?;
    if !resp.status().is_success() {
        bail!("ADD {url}: the server answered {}", resp.status());
    }
    let mtime = header(&resp, reqwest::header::LAST_MODIFIED).as_deref().and_then(parse_http_date);
    let digest = store_body(store, url, resp, Some(&want))?;
    Ok(Resolved { digest, mtime })
}

fn client() -> Result<reqwest::blocking::Client> {
    reqwest::blocking::Client::builder()
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("creating the HTTP client")
}

/// Stream a response body into the content store, verified against `expected`.
fn store_body(store: &ContentStore, url: &str, mut resp: reqwest::blocking::Response, expected: Option<&Digest>) -> Result<Digest> {
    let mut w = store.writer().context("ADD: writing the download to the content store")?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = resp.read(&mut buf).with_context(|| format!("ADD {url}: reading the body"))?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).context("ADD: writing the download")?;
    }
    match w.commit(expected) {
        Ok((digest, _)) => Ok(digest),
        Err(kiln_cache::store::StoreError::DigestMismatch { expected, actual }) => {
            bail!("ADD {url}: checksum mismatch: expected {expected}, got {actual}")
        }
        Err(e) => Err(e).context("ADD: storing the download"),
    }
}

fn record_path(dir: &Path, url: &str) -> PathBuf {
    dir.join(format!("{}.json", hex::encode(Sha256::digest(url.as_bytes()))))
}

fn load(dir: &Path, url: &str, store: &ContentStore) -> Option<(Record, Digest)> {
    let bytes = std::fs::read(record_path(dir, url)).ok()?;
    let rec: Record = serde_json::from_slice(&bytes).ok()?;
    let digest: Digest = rec.digest.parse().ok()?;
    // A pruned body cannot be revalidated: download it again.
    (rec.url == url && store.has(&digest)).then_some((rec, digest))
}

fn save(dir: &Path, rec: &Record) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = record_path(dir, &rec.url);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(rec)?).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn header(resp: &reqwest::blocking::Response, name: reqwest::header::HeaderName) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(|s| s.trim().to_string())
}

fn resolve(client: &reqwest::blocking::Client, dir: &Path, store: &ContentStore, url: &str) -> Result<Resolved> {
    let known = load(dir, url, store).filter(|(r, _)| r.etag.is_some());
    if let Some((rec, digest)) = &known {
        let etag = rec.etag.as_deref().unwrap_or_default();
        let head = client
            .head(url)
            .header(reqwest::header::IF_NONE_MATCH, etag)
            .header(reqwest::header::ACCEPT_ENCODING, "gzip")
            .send();
        if let Ok(resp) = head {
            let status = resp.status();
            if status.is_success() || status == reqwest::StatusCode::NOT_MODIFIED {
                // A 304 without an ETag is about the one we asked for.
                let got = header(&resp, reqwest::header::ETAG)
                    .or_else(|| (status == reqwest::StatusCode::NOT_MODIFIED).then(|| etag.to_string()));
                if got.as_deref() == Some(etag) {
                    return Ok(Resolved { digest: digest.clone(), mtime: rec.last_modified.as_deref().and_then(parse_http_date) });
                }
            }
        }
    }
    let mut req = client.get(url);
    if let Some((rec, _)) = &known {
        req = req.header(reqwest::header::IF_NONE_MATCH, rec.etag.as_deref().unwrap_or_default());
    }
    let resp = req.send().with_context(|| format!("ADD {url}: request failed"))?;
    if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
        if let Some((rec, digest)) = &known {
            return Ok(Resolved { digest: digest.clone(), mtime: rec.last_modified.as_deref().and_then(parse_http_date) });
        }
    }
    if !resp.status().is_success() {
        bail!("ADD {url}: the server answered {}", resp.status());
    }
    let etag = header(&resp, reqwest::header::ETAG);
    let last_modified = header(&resp, reqwest::header::LAST_MODIFIED);
    let digest = store_body(store, url, resp, None)?;
    let rec = Record { url: url.to_string(), etag, last_modified, digest: digest.to_string() };
    // Not remembering only costs a download next time.
    if let Err(e) = save(dir, &rec) {
        tracing::debug!(error = %format!("{e:#}"), "http cache record not written");
    }
    Ok(Resolved { digest, mtime: rec.last_modified.as_deref().and_then(parse_http_date) })
}

/// An IMF-fixdate (`Tue, 14 Nov 2023 22:13:20 GMT`) as seconds since the epoch.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: i64 = parts[1].parse().ok()?;
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| *m == parts[2])? as i64
        + 1;
    let year: i64 = parts[3].parse().ok()?;
    let hms: Vec<i64> = parts[4].split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    if hms.len() != 3 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
}

/// The newest modification time of the entries of a (possibly compressed) tar
/// archive in the store, or `None` when the blob is not an archive (BuildKit's
/// `archiveMaxTimeFromRef` with non-archives allowed).
pub fn archive_max_mtime(store: &ContentStore, digest: &Digest) -> Result<Option<i64>> {
    let Some(reader) = crate::steps::archive::open_decompressed(&store.blob_path(digest))? else { return Ok(None) };
    let mut ar = tar::Archive::new(reader);
    let mut newest: Option<i64> = None;
    for e in ar.entries().context("reading the archive")? {
        let e = e.context("reading the archive")?;
        let t = e.header().mtime().unwrap_or(0) as i64;
        newest = Some(newest.map_or(t, |n| n.max(t)));
    }
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(parse_http_date("Tue, 14 Nov 2023 22:13:20 GMT"), Some(1_700_000_000));
        assert_eq!(parse_http_date("garbage"), None);
    }

    #[test]
    fn archive_times() {
        let d = tempfile::tempdir().unwrap();
        let store = ContentStore::open(d.path()).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        for (name, t) in [("a", 1_700_000_100u64), ("b", 1_700_000_402), ("c", 5)] {
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mtime(t);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &b"x"[..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let plain = store.put(&tar).unwrap();
        assert_eq!(archive_max_mtime(&store, &plain).unwrap(), Some(1_700_000_402));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = store.put(&gz.finish().unwrap()).unwrap();
        assert_eq!(archive_max_mtime(&store, &gz).unwrap(), Some(1_700_000_402));
        let text = store.put(b"just some text, not an archive").unwrap();
        assert_eq!(archive_max_mtime(&store, &text).unwrap(), None);
    }
}
