//! The registry layer caches against a real registry: Kaniko-style `--cache-repo` and
//! BuildKit-style `--cache-to/--cache-from type=registry`, probed from a "second
//! machine" (a fresh content store) without downloading layers.

mod common;

use std::time::Duration;

use common::*;
use kiln_cache::registrycache::{CacheLocation, CacheMode};
use kiln_cache::{
    CacheKey, CacheOptions, CacheRecord, ContentStore, LayerCache, LayerRecord, LocalCache, Registry,
    RegistryCache, RegistryOptions,
};
use kiln_oci::{media, Digest};

fn layer_record(store: &ContentStore, len: usize, salt: u64) -> LayerRecord {
    let bytes = random_bytes(len, salt);
    let d = store.put(&bytes).unwrap();
    LayerRecord { media_type: media::OCI_LAYER_GZIP.into(), digest: d, size: len as u64, annotations: Default::default(), ztoc: None }
}

fn records(store: &ContentStore) -> Vec<CacheRecord> {
    let k1 = CacheKey::from_material(b"FROM base\0RUN make");
    let k2 = CacheKey::from_parts([k1.hex(), "ENV A=1"]);
    let k3 = CacheKey::from_parts([k2.hex(), "COPY . /src", "sha256:ctx"]);
    let mut r1 = CacheRecord::new(&k1, Some(layer_record(store, 300_000, 1)), Some(Digest::of(b"d1")), "RUN make");
    r1.history_created = Some("2025-01-02T03:04:05Z".into());
    let mut r2 = CacheRecord::new(&k2, None, None, "ENV A=1");
    r2.config_change = serde_json::json!({"Env": ["A=1"]});
    let r3 = CacheRecord::new(&k3, Some(layer_record(store, 5_000, 3)), Some(Digest::of(b"d3")), "COPY . /src");
    vec![r1, r2, r3]
}

fn key(r: &CacheRecord) -> CacheKey {
    CacheKey::from_hex(&r.key).unwrap()
}

async fn check_second_machine(cache: &dyn LayerCache, recs: &[CacheRecord], src: &ContentStore, fresh: &ContentStore) {
    let missing = CacheKey::from_material(b"never built");
    let keys: Vec<CacheKey> = vec![key(&recs[0]), missing.clone(), key(&recs[1]), key(&recs[2])];
    let got = cache.probe_many(&keys).await;
    assert_eq!(got, vec![Some(recs[0].clone()), None, Some(recs[1].clone()), Some(recs[2].clone())]);
    // Lazy: probing downloaded no layer.
    for r in recs {
        if let Some(l) = &r.layer {
            assert!(!fresh.has(&l.digest), "probe must not download layers");
        }
    }
    // fetch_layer brings exactly the bytes in, verified.
    cache.fetch_layer(&recs[0], fresh).await.unwrap();
    cache.fetch_layer(&recs[1], fresh).await.unwrap(); // no layer: no-op
    let l = &recs[0].layer.as_ref().unwrap().digest;
    assert_eq!(fresh.read(l).unwrap(), src.read(l).unwrap());
    assert!(!fresh.has(&recs[2].layer.as_ref().unwrap().digest));
    // And the local cache can take the record over now that the layer is here.
    let local = LocalCache::new(fresh.clone(), CacheOptions::default());
    local.put(&recs[0], fresh).await.unwrap();
    assert_eq!(local.probe(&keys[0]).await.unwrap(), Some(recs[0].clone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_repo_kaniko_style() {
    let reg = TestRegistry::start();
    let t = tempfile::tempdir().unwrap();
    let src = ContentStore::open(&t.path().join("a")).unwrap();
    let client = Registry::new(RegistryOptions::default());
    let repo = reg.reference("team/app/cache");
    let cache = RegistryCache::repo(client.clone(), repo.clone(), CacheOptions::default());
    let recs = records(&src);
    for r in &recs {
        cache.put(r, &src).await.unwrap();
    }
    cache.flush(&src).await.unwrap();

    // One image per key, tagged by the key, with the step's layer as its only layer.
    let m = client.get_manifest(&repo.with_tag(key(&recs[0]).hex()).unwrap()).await.unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&m.0).unwrap();
    assert_eq!(v["layers"].as_array().unwrap().len(), 1);
    assert_eq!(v["layers"][0]["digest"], recs[0].layer.as_ref().unwrap().digest.to_string());
    let cfg: Digest = v["config"]["digest"].as_str().unwrap().parse().unwrap();
    let c: serde_json::Value = serde_json::from_slice(&src.read(&cfg).unwrap()).unwrap();
    assert_eq!(c["rootfs"]["diff_ids"][0], Digest::of(b"d1").to_string());
    assert_eq!(c["history"][0]["created_by"], "RUN make");
    assert_eq!(c["history"][0]["created"], "2025-01-02T03:04:05Z");

    let fresh = ContentStore::open(&t.path().join("b")).unwrap();
    let other = RegistryCache::repo(Registry::new(RegistryOptions::default()), repo.clone(), CacheOptions::default());
    check_second_machine(&other, &recs, &src, &fresh).await;
    assert_eq!(other.repositories(), vec![repo.clone()]);

    // TTL: records made an hour ago are misses with a 10 minute TTL.
    let mut old = recs[1].clone();
    old.key = CacheKey::from_material(b"old").hex().to_string();
    old.created -= 3600;
    cache.put(&old, &src).await.unwrap();
    let ttl = RegistryCache::repo(client.clone(), repo.clone(), CacheOptions { ttl: Some(Duration::from_secs(600)), ..Default::default() });
    assert_eq!(ttl.probe(&key(&old)).await.unwrap(), None);
    assert_eq!(ttl.probe(&key(&recs[1])).await.unwrap(), Some(recs[1].clone()));
    assert_eq!(cache.probe(&key(&old)).await.unwrap(), Some(old));
}

fn loc(r: &kiln_cache::Reference) -> CacheLocation {
    CacheLocation::Registry(r.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_to_and_from_manifest() {
    let reg = TestRegistry::start();
    let t = tempfile::tempdir().unwrap();
    let src = ContentStore::open(&t.path().join("a")).unwrap();
    let client = Registry::new(RegistryOptions::default());
    let r = reg.reference("team/app:buildcache");
    let recs = records(&src);

    // First build: nothing to import; puts are batched and pushed by flush.
    let first = RegistryCache::manifest(client.clone(), vec![loc(&r)], Some((loc(&r), CacheMode::Max)), CacheOptions::default());
    assert_eq!(first.probe(&key(&recs[0])).await.unwrap(), None);
    for rec in &recs[..2] {
        first.put(rec, &src).await.unwrap();
    }
    assert!(client.get_manifest(&r).await.unwrap().is_none(), "nothing is pushed before flush");
    first.flush(&src).await.unwrap();
    let (m, _) = client.get_manifest(&r).await.unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
    assert_eq!(v["config"]["mediaType"], kiln_cache::registrycache::CACHE_CONFIG_MEDIA_TYPE);
    assert_eq!(v["layers"].as_array().unwrap().len(), 1);

    // Second build elsewhere: hits for both, adds the third, exports all three
    // (the first layer is not downloaded to do so: it is already in the repository).
    let fresh = ContentStore::open(&t.path().join("b")).unwrap();
    let second = RegistryCache::manifest(client.clone(), vec![loc(&r)], Some((loc(&r), CacheMode::Max)), CacheOptions::default());
    let got = second.probe_many(&[key(&recs[0]), key(&recs[1]), key(&recs[2])]).await;
    assert_eq!(got, vec![Some(recs[0].clone()), Some(recs[1].clone()), None]);
    // Hits are exported once the build says it took them.
    second.mark_used(&recs[0], &fresh);
    second.mark_used(&recs[1], &fresh);
    // recs[2]'s layer is in `src`; put it into `fresh` as the second build would have made it.
    let l3 = recs[2].layer.as_ref().unwrap();
    fresh.put(&src.read(&l3.digest).unwrap()).unwrap();
    second.put(&recs[2], &fresh).await.unwrap();
    second.flush(&fresh).await.unwrap();
    assert!(!fresh.has(&recs[0].layer.as_ref().unwrap().digest));

    // Third machine: everything is there, lazily.
    let third = ContentStore::open(&t.path().join("c")).unwrap();
    let cache = RegistryCache::manifest(client.clone(), vec![loc(&r)], None, CacheOptions::default());
    check_second_machine(&cache, &recs, &src, &third).await;

    // Export to another repository of the same registry: layers are mounted, not fetched.
    let other = reg.reference("team/other:cache");
    let fourth = ContentStore::open(&t.path().join("d")).unwrap();
    let c4 = RegistryCache::manifest(client.clone(), vec![loc(&r)], Some((loc(&other), CacheMode::Max)), CacheOptions::default());
    assert_eq!(c4.probe_many(&[key(&recs[0]), key(&recs[2])]).await.iter().filter(|x| x.is_some()).count(), 2);
    c4.mark_used(&recs[0], &fourth);
    c4.mark_used(&recs[2], &fourth);
    c4.flush(&fourth).await.unwrap();
    assert!(!fourth.has(&recs[0].layer.as_ref().unwrap().digest), "mounted, not downloaded");
    let c5 = RegistryCache::manifest(client.clone(), vec![loc(&other)], None, CacheOptions::default());
    let fifth = ContentStore::open(&t.path().join("e")).unwrap();
    let hit = c5.probe(&key(&recs[2])).await.unwrap().unwrap();
    c5.fetch_layer(&hit, &fifth).await.unwrap();
    assert!(fifth.has(&l3.digest));
    assert_eq!(c5.probe(&key(&recs[1])).await.unwrap(), None, "only what c4 hit was exported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_cache_is_a_miss_not_an_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let repo: kiln_cache::Reference = format!("127.0.0.1:{port}/cache").parse().unwrap();
    let opts = RegistryOptions { retries: 0, ..Default::default() };
    let cache = RegistryCache::repo(Registry::new(opts.clone()), repo.clone(), CacheOptions::default());
    let k = CacheKey::from_material(b"x");
    assert_eq!(cache.probe_many(std::slice::from_ref(&k)).await, vec![None]);
    let err = cache.probe(&k).await.unwrap_err().to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}/cache")), "{err}");
    let m = RegistryCache::manifest(Registry::new(opts), vec![loc(&repo)], None, CacheOptions::default());
    assert_eq!(m.probe_many(&[k]).await, vec![None]);
}
