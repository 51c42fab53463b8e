//! Referrers against the real registry (distribution 2.8: no referrers API, so the
//! referrers tag schema), and through a proxy that answers the referrers API the way
//! a registry with it does (the other code path), both through kiln's real client.

mod common;
#[path = "../../integration/src/faultproxy.rs"]
mod faultproxy;

use std::collections::BTreeMap;

use common::*;
use faultproxy::{Fault, FaultProxy, Rule};
use kiln_cache::referrers::{artifact_manifest, tag_for, ReferrerPush};
use kiln_cache::{ContentStore, Reference, Registry, RegistryOptions};
use kiln_oci::{media, Descriptor, Digest};

/// An artifact manifest of `artifact_type` about `subject`, its blobs in `store`.
fn referrer(store: &ContentStore, artifact_type: &str, payload: &[u8], subject: &Descriptor) -> (Vec<u8>, Vec<Descriptor>) {
    let empty = store.put(b"{}").unwrap();
    let p = store.put(payload).unwrap();
    let layer = desc(artifact_type, &p, payload.len(), None);
    let ann: BTreeMap<String, String> = [("org.opencontainers.image.created".to_string(), "2023-11-14T22:13:20Z".to_string())].into();
    let bytes = artifact_manifest(artifact_type, &layer, subject, &ann);
    store.put(&bytes).unwrap();
    (bytes, vec![desc(media::OCI_EMPTY, &empty, 2, None), layer])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_through_the_tag_schema() {
    let reg = TestRegistry::start();
    let t = tempfile::tempdir().unwrap();
    let store = ContentStore::open(&t.path().join("s")).unwrap();
    let img = make_image(&store, "linux/amd64", 4096, false);
    let client = Registry::new(RegistryOptions::default());
    let r = reg.reference("refs/app:1");
    client.push_image(&r, &store, &img.manifest, img.manifest_type, &img.blobs, &[]).await.unwrap();
    let subject = desc(media::OCI_MANIFEST, &img.digest, img.manifest.len(), None);

    let (sbom, sbom_blobs) = referrer(&store, media::SPDX_JSON, br#"{"spdxVersion":"SPDX-2.3"}"#, &subject);
    let (prov, prov_blobs) = referrer(&store, media::IN_TOTO_JSON, br#"{"_type":"https://in-toto.io/Statement/v1"}"#, &subject);
    let tag = tag_for(&img.digest);
    assert_eq!(client.push_referrer(&r, &store, &sbom, &sbom_blobs, &img.digest).await.unwrap(), ReferrerPush::TagSchema { tag: tag.clone() });
    assert_eq!(client.push_referrer(&r, &store, &prov, &prov_blobs, &img.digest).await.unwrap(), ReferrerPush::TagSchema { tag: tag.clone() });
    // Again: listed once.
    client.push_referrer(&r, &store, &sbom, &sbom_blobs, &img.digest).await.unwrap();

    let all = client.referrers(&r, &img.digest, None).await.unwrap();
    let got: Vec<(Digest, Option<String>)> = all.iter().map(|x| (x.digest.clone(), x.artifact_type.clone())).collect();
    assert_eq!(got, vec![(Digest::of(&sbom), Some(media::SPDX_JSON.to_string())), (Digest::of(&prov), Some(media::IN_TOTO_JSON.to_string()))]);
    assert_eq!(all[0].annotations["org.opencontainers.image.created"], "2023-11-14T22:13:20Z");
    let only = client.referrers(&r, &img.digest, Some(media::IN_TOTO_JSON)).await.unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].digest, Digest::of(&prov));

    // The image is untouched; the tag schema's index is where the spec says.
    let (bytes, d) = client.get_manifest(&r).await.unwrap().unwrap();
    assert_eq!((bytes, d), (img.manifest.clone(), img.digest.clone()));
    let (index, _) = client.get_manifest(&r.with_tag(&tag).unwrap()).await.unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&index).unwrap();
    assert_eq!(v["mediaType"], media::OCI_INDEX);
    assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
    // The referrer itself is in the registry by digest, with its blobs.
    let (got, _) = client.get_manifest(&r.with_digest(Digest::of(&sbom))).await.unwrap().unwrap();
    assert_eq!(got, sbom);
    // A subject without referrers has none.
    assert!(client.referrers(&r, &Digest::of(b"nothing"), None).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_api_is_used_where_the_registry_has_it() {
    let reg = TestRegistry::start();
    let proxy = FaultProxy::start(&reg.host);
    let t = tempfile::tempdir().unwrap();
    let store = ContentStore::open(&t.path().join("s")).unwrap();
    let img = make_image(&store, "linux/amd64", 2048, false);
    let client = Registry::new(RegistryOptions::default());
    let r: Reference = format!("{}/refs/api:1", proxy.host()).parse().unwrap();
    client.push_image(&r, &store, &img.manifest, img.manifest_type, &img.blobs, &[]).await.unwrap();
    let subject = desc(media::OCI_MANIFEST, &img.digest, img.manifest.len(), None);
    let (sbom, blobs) = referrer(&store, media::SPDX_JSON, b"{}", &subject);
    // What a registry with the API answers once it has indexed the referrer.
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": [
        {"mediaType": media::OCI_MANIFEST, "digest": Digest::of(&sbom).to_string(), "size": sbom.len(), "artifactType": media::SPDX_JSON}]});
    proxy.add_rule(Rule::new("GET", "/referrers/", Fault::Respond(200, index.to_string()), 100));

    assert_eq!(client.push_referrer(&r, &store, &sbom, &blobs, &img.digest).await.unwrap(), ReferrerPush::Api);
    // No tag-schema index was written.
    let tag_ref = r.with_tag(&tag_for(&img.digest)).unwrap();
    assert!(client.get_manifest(&tag_ref).await.unwrap().is_none(), "the tag schema was written although the registry has the API");
    let listed = client.referrers(&r, &img.digest, None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].artifact_type.as_deref(), Some(media::SPDX_JSON));
    assert!(proxy.log().iter().any(|l| l.contains("/referrers/") && l.contains("fault")), "{:?}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_tag_where_the_referrers_index_belongs_is_an_error() {
    let reg = TestRegistry::start();
    let t = tempfile::tempdir().unwrap();
    let store = ContentStore::open(&t.path().join("s")).unwrap();
    let img = make_image(&store, "linux/amd64", 1024, false);
    let other = make_image(&store, "linux/arm64", 1000, false);
    let client = Registry::new(RegistryOptions::default());
    let r = reg.reference("refs/foreign:1");
    client.push_image(&r, &store, &img.manifest, img.manifest_type, &img.blobs, &[]).await.unwrap();
    // Someone tagged an image (not an index) sha256-<subject>.
    let squat = r.with_tag(&tag_for(&img.digest)).unwrap();
    client.push_image(&squat, &store, &other.manifest, other.manifest_type, &other.blobs, &[]).await.unwrap();
    let subject = desc(media::OCI_MANIFEST, &img.digest, img.manifest.len(), None);
    let (sbom, blobs) = referrer(&store, media::SPDX_JSON, b"{}", &subject);
    let e = client.push_referrer(&r, &store, &sbom, &blobs, &img.digest).await.unwrap_err().to_string();
    assert!(e.contains("no image index") && e.contains("refs/foreign"), "{e}");
}
