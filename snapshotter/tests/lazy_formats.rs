//! eStargz and zstd:chunked layers written from an upperdir, checked by readers
//! written from the format descriptions (common/lazy_read.rs), and compared with
//! the plain gzip layer of the same tree: zstd:chunked holds the very same tar,
//! eStargz the same entries plus its landmark and TOC.

mod common;
#[path = "common/lazy_read.rs"]
mod lazy_read;

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use kiln_snapshotter::{write_layer, Compression, DiffOptions, LayerDigests};

const LONG: &str = "a-directory-name-long-enough-that-two-of-them-need-a-pax-path-record-in-the-tar";

fn make_tree(d: &Path) {
    std::fs::create_dir_all(d.join("app/empty-dir")).unwrap();
    std::fs::write(d.join("app/hello.txt"), b"hello\n").unwrap();
    std::fs::write(d.join("app/empty"), b"").unwrap();
    std::fs::write(d.join("app/exact-block"), vec![7u8; 512]).unwrap();
    // 9 MiB + 3 bytes: three 4 MiB chunks, the last one short.
    let big: Vec<u8> = (0..(9 << 20) + 3u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(d.join("app/big.bin"), &big).unwrap();
    // Exactly one chunk: no `chunk` entries.
    std::fs::write(d.join("app/four-mib"), vec![1u8; 4 << 20]).unwrap();
    symlink("hello.txt", d.join("app/link")).unwrap();
    std::fs::hard_link(d.join("app/hello.txt"), d.join("app/hard")).unwrap();
    std::fs::set_permissions(d.join("app/hello.txt"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::create_dir_all(d.join(LONG).join(LONG)).unwrap();
    std::fs::write(d.join(LONG).join(LONG).join("deep-file"), b"deep").unwrap();
    common::set_xattr(&d.join("app/hello.txt"), "user.comment", b"\x00binary\xff");
}

fn write(upper: &Path, c: Compression) -> (Vec<u8>, LayerDigests) {
    let mut blob = Vec::new();
    let opts = DiffOptions { compression: c, source_date_epoch: Some(1_700_000_000), ..Default::default() };
    let d = write_layer(upper, &opts, &mut blob).unwrap();
    assert_eq!(d.digest, kiln_oci::Digest::of(&blob), "{c:?}: digest of the blob");
    assert_eq!(d.size, blob.len() as u64);
    (blob, d)
}

fn annotations(d: &LayerDigests) -> BTreeMap<String, String> {
    d.annotations.clone()
}

fn plain_tar(upper: &Path) -> (Vec<u8>, LayerDigests) {
    let (blob, d) = write(upper, Compression::None);
    assert!(d.annotations.is_empty());
    (blob, d)
}

#[test]
fn estargz_passes_the_spec_reader_and_holds_the_plain_layers_entries() {
    let t = tempfile::tempdir().unwrap();
    make_tree(t.path());
    let (tar, plain) = plain_tar(t.path());
    let (blob, d) = write(t.path(), Compression::Estargz);
    assert_eq!(d.media_type, kiln_oci::media::OCI_LAYER_GZIP);
    let raw = lazy_read::check_estargz(&blob, &annotations(&d)).unwrap_or_else(|e| panic!("eStargz reader: {e}"));
    assert_eq!(d.diff_id, kiln_oci::Digest::of(&raw), "the diffID is the decompressed stream's");
    assert_ne!(d.diff_id, plain.diff_id, "eStargz adds two entries");
    let mut items = lazy_read::tar_items(&raw);
    let added: Vec<String> = [items.remove(0), items.pop().unwrap()].iter().map(|i| i.name.clone()).collect();
    assert_eq!(added, [".no.prefetch.landmark", "stargz.index.json"]);
    assert_eq!(items, lazy_read::tar_items(&tar), "the layer's own entries, unchanged and in order");
    let toc = toc_json(&raw);
    let chunks = toc["entries"].as_array().unwrap().iter().filter(|e| e["name"] == "app/big.bin").count();
    assert_eq!(chunks, 3, "a 9 MiB file is three 4 MiB chunks");
    assert_eq!(toc["entries"].as_array().unwrap().iter().filter(|e| e["name"] == "app/four-mib").count(), 1);
    // Same tree, same bytes.
    assert_eq!(write(t.path(), Compression::Estargz).0, blob);
}

fn toc_json(raw: &[u8]) -> serde_json::Value {
    let items = lazy_read::tar_items(raw);
    serde_json::from_slice(&items.last().unwrap().data).unwrap()
}

#[test]
fn zstd_chunked_passes_the_reader_and_is_the_plain_tar() {
    let t = tempfile::tempdir().unwrap();
    make_tree(t.path());
    let (tar, plain) = plain_tar(t.path());
    let (blob, d) = write(t.path(), Compression::ZstdChunked);
    assert_eq!(d.media_type, kiln_oci::media::OCI_LAYER_ZSTD);
    let raw = lazy_read::check_zstd_chunked(&blob, &annotations(&d)).unwrap_or_else(|e| panic!("zstd:chunked reader: {e}"));
    assert_eq!(raw, tar, "a plain zstd decoder reads the plain layer's tar");
    assert_eq!(d.diff_id, plain.diff_id);
    let (again, _) = write(t.path(), Compression::ZstdChunked);
    assert_eq!(again, blob, "same tree, same bytes");
}

#[test]
fn the_readers_catch_a_lying_toc() {
    let t = tempfile::tempdir().unwrap();
    make_tree(t.path());
    let (blob, d) = write(t.path(), Compression::Estargz);
    let mut a = annotations(&d);
    a.insert("containerd.io/snapshot/stargz/toc.digest".into(), kiln_oci::Digest::of(b"x").to_string());
    assert!(lazy_read::check_estargz(&blob, &a).unwrap_err().contains("toc.digest"));
    let mut cut = blob.clone();
    cut.truncate(blob.len() - 1);
    assert!(lazy_read::check_estargz(&cut, &annotations(&d)).is_err());
    let (blob, d) = write(t.path(), Compression::ZstdChunked);
    let mut a = annotations(&d);
    a.insert("io.github.containers.zstd-chunked.manifest-position".into(), "1:2:3:1".into());
    assert!(lazy_read::check_zstd_chunked(&blob, &a).is_err());
}


#[test]
fn a_soci_ztoc_describes_the_same_gzip_bytes() {
    let t = tempfile::tempdir().unwrap();
    make_tree(t.path());
    let (plain, _) = write(t.path(), Compression::Gzip);
    let opts = DiffOptions { compression: Compression::Gzip, source_date_epoch: Some(1_700_000_000), soci_span: Some(1 << 20), ..Default::default() };
    let mut blob = Vec::new();
    let d = write_layer(t.path(), &opts, &mut blob).unwrap();
    assert_eq!(blob, plain, "the ztoc is made beside the layer; its bytes do not change");
    let ztoc = d.ztoc.expect("a ztoc");
    lazy_read::check_ztoc(&blob, &ztoc).unwrap_or_else(|e| panic!("ztoc reader: {e}"));
    // 13 MiB of tar with a 1 MiB span: a dozen access points or so, each checked.
    let points = i32::from_le_bytes(find_zinfo_count(&ztoc));
    assert!((8..=16).contains(&points), "{points} access points");
    // A ztoc that lies about a span is caught.
    let mut bad = ztoc.clone();
    let at = bad.windows(7).position(|w| w == b"sha256:").unwrap() + 7;
    bad[at] = if bad[at] == b'0' { b'1' } else { b'0' };
    assert!(lazy_read::check_ztoc(&blob, &bad).unwrap_err().contains(": digest is not the sha256"));
}

/// The checkpoint count at the head of the zinfo blob inside a ztoc: the 4 bytes
/// before the span size (1 MiB, little endian) that follows it.
fn find_zinfo_count(ztoc: &[u8]) -> [u8; 4] {
    let span = (1u64 << 20).to_le_bytes();
    let at = ztoc.windows(8).position(|w| w == span).unwrap();
    ztoc[at - 4..at].try_into().unwrap()
}
