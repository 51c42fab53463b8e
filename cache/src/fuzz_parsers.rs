//! Fuzzing what kiln parses from a registry or its credential files (issue 19):
//! `WWW-Authenticate` challenges, references, manifests and indexes (kind, platform
//! selection), image configs, referrers indexes being merged, error answers, and
//! `config.json` credential files — seeded mutations of real documents and token
//! soup. Every input must give a value or an error, never a panic (serde_json's
//! depth limit keeps deep nesting an error). `KILN_FUZZ_SECS` (default 2) sets how
//! long it runs, `KILN_FUZZ_SEED` replays one.

use std::str::FromStr;

use kiln_oci::{Digest, IndexEntry};

#[path = "../../integration/src/fuzzrng.rs"]
mod fuzzrng;
use fuzzrng::Rng;

const DOCS: &[&str] = &[
    r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}]}"#,
    r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"platform":{"architecture":"amd64","os":"linux"},"artifactType":"application/spdx+json"}]}"#,
    r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"platform":{"architecture":"amd64","os":"linux","os.version":"10.0"}}]}"#,
    r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin","A=b"],"Entrypoint":["/bin/sh"],"User":"1000","Labels":{"a":"b"},"ExposedPorts":{"80/tcp":{}}},"rootfs":{"type":"layers","diff_ids":["sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"]},"history":[{"created_by":"x","empty_layer":true}]}"#,
    r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#,
    r#"{"auths":{"registry:5000":{"auth":"a2lsbjpzM2NyZXQ="},"https://index.docker.io/v1/":{"username":"u","password":"p"}},"credHelpers":{"other":"none"},"credsStore":""}"#,
];
const JSON_TOKENS: &[&str] = &[
    "{", "}", "[", "]", ",", ":", "\"", "null", "true", "-1", "1e999", "18446744073709551616", "\"sha256:\"", "\"mediaType\"",
    "\"manifests\"", "\"layers\"", "\"platform\"", "\"size\"", "\"digest\"", "\\u0000", "\\ud800", "\"application/vnd.oci.image.index.v1+json\"",
];
const HEADER_TOKENS: &[&str] = &["Bearer", "Basic", " ", "realm=", "service=", "scope=", "\"", "\\\"", ",", "=", "https://auth.example/token", "a:b", "é", "\t"];
const REF_TOKENS: &[&str] = &["registry", ":5000", "/", "library", "app", ":", "tag", "@", "sha256:", "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "..", "-", "_", "__", "[::1]", "localhost", "A", "é", "."];

fn soup(r: &mut Rng, tokens: &[&str], n: usize) -> String {
    (0..r.below(n)).map(|_| tokens[r.below(tokens.len())]).collect()
}

fn mutate(r: &mut Rng, doc: &str) -> Vec<u8> {
    let mut b = doc.as_bytes().to_vec();
    for _ in 0..1 + r.below(4) {
        match r.below(5) {
            0 if !b.is_empty() => {
                let i = r.below(b.len());
                b[i] = r.next() as u8;
            }
            1 if !b.is_empty() => {
                let i = r.below(b.len());
                b.truncate(i);
            }
            2 => {
                let i = r.below(b.len() + 1);
                let t = JSON_TOKENS[r.below(JSON_TOKENS.len())];
                b.splice(i..i, t.bytes());
            }
            3 => {
                // Deep nesting.
                let depth = r.below(2000);
                let mut v = "[".repeat(depth).into_bytes();
                v.extend(b.iter());
                v.extend("]".repeat(depth).bytes());
                b = v;
            }
            _ => {}
        }
    }
    b
}

fn exercise(bytes: &[u8], header: &str, reference: &str, creds_file: &std::path::Path) {
    let _ = crate::oauth::parse_challenge(header);
    let _ = crate::Reference::from_str(reference);
    let _ = crate::registry::is_index_bytes(bytes);
    if let Ok(index) = serde_json::from_slice::<oci_spec::image::ImageIndex>(bytes) {
        for p in ["linux/amd64", "linux/arm64/v8", "windows/amd64"] {
            let _ = crate::platform::select(index.manifests(), &crate::parse_platform(p).unwrap());
        }
    }
    let _ = serde_json::from_slice::<oci_spec::image::ImageManifest>(bytes);
    let _ = kiln_oci::ImageConfig::from_bytes(bytes);
    let entry = IndexEntry::new("application/vnd.oci.image.manifest.v1+json", &Digest::of(bytes), bytes.len() as u64);
    let _ = crate::referrers::merge_index(Some(bytes), entry);
    let status = reqwest::StatusCode::from_u16(200 + (bytes.len() % 400) as u16).unwrap_or(reqwest::StatusCode::BAD_REQUEST);
    let _ = crate::bounded::check_status(status, bytes, "http://r/v2/x/manifests/y");
    if std::fs::write(creds_file, bytes).is_ok() {
        let _ = crate::auth::lookup_in_file(creds_file, "registry:5000");
        let _ = crate::auth::lookup_in_file(creds_file, "docker.io");
    }
}

#[test]
fn fuzz_registry_parsers() {
    let (seed, secs) = fuzzrng::seed_and_secs(2.0);
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("config.json");
    let mut r = Rng(seed);
    let start = std::time::Instant::now();
    let (mut n, mut bytes_tried) = (0u64, 0u64);
    while start.elapsed().as_secs_f64() < secs {
        let doc = DOCS[r.below(DOCS.len())];
        let body = if r.below(4) == 0 { soup(&mut r, JSON_TOKENS, 60).into_bytes() } else { mutate(&mut r, doc) };
        let header = soup(&mut r, HEADER_TOKENS, 16);
        let reference = soup(&mut r, REF_TOKENS, 10);
        bytes_tried += (body.len() + header.len() + reference.len()) as u64;
        if std::panic::catch_unwind(|| exercise(&body, &header, &reference, &creds)).is_err() {
            panic!("a registry parser panicked (seed {seed}, input #{n}): body {:?}, header {header:?}, reference {reference:?}", String::from_utf8_lossy(&body));
        }
        n += 1;
    }
    eprintln!("fuzz_registry_parsers: seed {seed}, {n} inputs ({bytes_tried} bytes) in {:.1}s, no panic", start.elapsed().as_secs_f64());
    assert!(n > 0);
}
