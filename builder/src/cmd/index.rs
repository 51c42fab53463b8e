//! `kiln index create REF --from REF1 --from REF2 …`: stitch images built natively
//! on different machines (one per architecture) into one multi-platform OCI index.
//!
//! For each source, the manifest is fetched; a single-platform manifest gets its
//! platform from its config (`os`, `architecture`, `variant`, `os.version`,
//! `os.features`), an index contributes each of its platform manifests (entries
//! without a usable platform, e.g. attestation manifests `unknown/unknown`, are
//! skipped). Every platform manifest must exist in REF's repository before the index
//! names it: when a source lives in another repository its blobs are mounted
//! cross-repository (same registry) or copied through the local content store, and
//! the manifest is PUT by digest. Then the index is PUT under REF's tag. The index
//! digest is printed on stdout (and written to `--digest-file`).
//!
//! No user namespace is needed: this runs as the calling user, before `userns::enter`.

use anyhow::{anyhow, bail, Context, Result};
use kiln_cache::reference::Reference;

use crate::cli::index::{CreateArgs, IndexCommand};
use kiln_cache::registry::Registry;
use kiln_cache::store::ContentStore;
use kiln_oci::{media, Descriptor, Digest, ImageConfig, ImageIndex, ImageManifest};
use serde_json::{json, Value};

/// Largest manifest or config we accept into memory.
const MAX_CONFIG: u64 = 8 << 20;

/// One platform manifest that goes into the index.
struct Entry {
    source: Reference,
    media_type: String,
    bytes: Vec<u8>,
    digest: Digest,
    platform: Value,
}

/// `auth_files`: the merged CI credentials, if any (`cmd::ciauth`).
pub fn main(cmd: IndexCommand, auth_files: Option<kiln_cache::auth::AuthFiles>) -> Result<()> {
    match cmd {
        IndexCommand::Create(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(create(args, auth_files))
        }
    }
}

fn media_type_of(bytes: &[u8]) -> Result<(String, Value)> {
    let v: Value = serde_json::from_slice(bytes).context("manifest is not JSON")?;
    let mt = match v.get("mediaType").and_then(Value::as_str) {
        Some(mt) => mt.to_string(),
        None if v.get("manifests").is_some() => media::OCI_INDEX.to_string(),
        None => media::OCI_MANIFEST.to_string(),
    };
    Ok((mt, v))
}

fn platform_of_config(c: &ImageConfig) -> Value {
    let mut p = json!({"architecture": c.architecture, "os": c.os});
    if let Some(v) = c.variant.as_ref().filter(|v| !v.is_empty()) {
        p["variant"] = json!(v);
    }
    for k in ["os.version", "os.features"] {
        if let Some(x) = c.extra.get(k) {
            p[k] = x.clone();
        }
    }
    p
}

fn platform_display(p: &Value) -> String {
    let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut out = format!("{}/{}", s("os"), s("architecture"));
    if !s("variant").is_empty() {
        out.push('/');
        out.push_str(&s("variant"));
    }
    out
}

/// The platform manifest at `r` (by digest) with its platform from its config.
async fn manifest_entry(registry: &Registry, r: &Reference, bytes: Vec<u8>, digest: Digest, media_type: String) -> Result<Entry> {
    let m: ImageManifest = serde_json::from_slice(&bytes).with_context(|| format!("parsing manifest {digest} of {r}"))?;
    let cd: Digest = m.config().digest().to_string().parse().map_err(|e| anyhow!("config digest of {r}: {e}"))?;
    let cfg_bytes = registry
        .get_blob(r, &cd, MAX_CONFIG)
        .await
        .with_context(|| format!("fetching the config of {r}"))?;
    let cfg = ImageConfig::from_bytes(&cfg_bytes).with_context(|| format!("parsing the config {cd} of {r}"))?;
    if cfg.os.is_empty() || cfg.architecture.is_empty() {
        bail!("the config of {r} names no os/architecture: cannot place it in an index");
    }
    Ok(Entry { source: r.clone(), media_type, bytes, digest, platform: platform_of_config(&cfg) })
}

/// The platform manifests a source contributes.
async fn entries_of(registry: &Registry, src: &Reference) -> Result<Vec<Entry>> {
    let (bytes, digest) = registry
        .get_manifest(src)
        .await
        .with_context(|| format!("fetching the manifest of {src}"))?
        .ok_or_else(|| anyhow!("{src}: no such image in the registry"))?;
    let (mt, _) = media_type_of(&bytes)?;
    if !media::is_index(&mt) {
        if !media::is_manifest(&mt) {
            bail!("{src}: unsupported manifest media type {mt}");
        }
        return Ok(vec![manifest_entry(registry, &src.with_digest(digest.clone()), bytes, digest, mt).await?]);
    }
    let index: ImageIndex = serde_json::from_slice(&bytes).with_context(|| format!("parsing the index of {src}"))?;
    let mut out = Vec::new();
    for d in index.manifests() {
        let cmt = d.media_type().to_string();
        if !media::is_manifest(&cmt) {
            tracing::warn!("{src}: skipping index entry of media type {cmt}");
            continue;
        }
        // Attestation manifests (BuildKit) carry unknown/unknown: not an image.
        if let Some(p) = d.platform() {
            if p.os().to_string() == "unknown" || p.architecture().to_string() == "unknown" {
                continue;
            }
        }
        let dd: Digest = d.digest().to_string().parse().map_err(|e| anyhow!("{src}: {e}"))?;
        let r = src.with_digest(dd.clone());
        let (cbytes, cdigest) = registry
            .get_manifest(&r)
            .await
            .with_context(|| format!("fetching manifest {dd} of {src}"))?
            .ok_or_else(|| anyhow!("{src}: its index names {dd}, which the registry does not have"))?;
        let mut e = manifest_entry(registry, &r, cbytes, cdigest, cmt).await?;
        if e.platform["os"] == "unknown" {
            continue;
        }
        // The index's own platform may say more (os.features); keep the config's
        // os/architecture/variant, which is what the image is.
        if let Some(p) = d.platform() {
            if let Some(f) = p.os_features() {
                e.platform["os.features"] = json!(f);
            }
        }
        out.push(e);
    }
    if out.is_empty() {
        bail!("{src}: its index has no platform manifests");
    }
    Ok(out)
}

/// Makes `e`'s manifest (and every blob it names) exist in `target`'s repository.
async fn ensure_in_repo(registry: &Registry, store: &ContentStore, target: &Reference, e: &Entry) -> Result<()> {
    let dest = target.with_digest(e.digest.clone());
    if e.source.registry() == target.registry() && e.source.repository() == target.repository() {
        return Ok(());
    }
    if registry.get_manifest(&dest).await.ok().flatten().is_some() {
        return Ok(());
    }
    let m: ImageManifest = serde_json::from_slice(&e.bytes)?;
    let mut blobs: Vec<Descriptor> = vec![m.config().clone()];
    blobs.extend(m.layers().iter().cloned());
    let same_registry = e.source.registry() == target.registry();
    if same_registry {
        // Cross-repository mounts: nothing travels through this machine.
        let mounted = registry
            .push_image(&dest, store, &e.bytes, &e.media_type, &blobs, std::slice::from_ref(&e.source))
            .await;
        match mounted {
            Ok(rep) => {
                eprintln!(
                    "copied {} ({}) into {}: {} blob(s) mounted, {} present, {} uploaded",
                    e.digest,
                    platform_display(&e.platform),
                    target.name(),
                    rep.mounted.len(),
                    rep.skipped.len(),
                    rep.uploaded.len()
                );
                return Ok(());
            }
            Err(err) => tracing::info!("mounting blobs into {} failed, copying them instead: {err}", target.name()),
        }
    }
    // Another registry (or a registry that refuses mounts): through the content store.
    for b in &blobs {
        let d: Digest = b.digest().to_string().parse().map_err(|x| anyhow!("{x}"))?;
        registry
            .pull_blob(&e.source, &d, Some(b.size()), store)
            .await
            .with_context(|| format!("fetching blob {d} of {}", e.source.name()))?;
    }
    let rep = registry
        .push_image(&dest, store, &e.bytes, &e.media_type, &blobs, &[])
        .await
        .with_context(|| format!("copying {} ({}) into {}", e.digest, platform_display(&e.platform), target.name()))?;
    eprintln!(
        "copied {} ({}) into {}: {} blob(s) uploaded, {} present",
        e.digest,
        platform_display(&e.platform),
        target.name(),
        rep.uploaded.len(),
        rep.skipped.len()
    );
    Ok(())
}

async fn create(args: CreateArgs, auth_files: Option<kiln_cache::auth::AuthFiles>) -> Result<()> {
    let target: Reference = args.reference.parse().map_err(|e| anyhow!("index create {}: {e}", args.reference))?;
    if target.digest().is_some() {
        bail!("index create {}: give a tag to push the index under, not a digest", args.reference);
    }
    let sources = args
        .from
        .iter()
        .map(|s| s.parse::<Reference>().map_err(|e| anyhow!("--from {s}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let registry = Registry::new(kiln_cache::RegistryOptions { auth_files, ..args.access.registry.to_options()? });
    let state = crate::options::state_dir()?;
    let store = ContentStore::open(&state.join("content"))
        .with_context(|| format!("opening the content store in {}", state.display()))?;

    let mut entries: Vec<Entry> = Vec::new();
    for src in &sources {
        for e in entries_of(&registry, src).await? {
            if let Some(prev) = entries.iter().find(|p| p.platform == e.platform) {
                if prev.digest == e.digest {
                    continue;
                }
                bail!(
                    "two sources are {}: {} ({}) and {} ({}); an index holds one image per platform",
                    platform_display(&e.platform),
                    prev.source,
                    prev.digest,
                    e.source,
                    e.digest
                );
            }
            eprintln!("{} {} from {}", platform_display(&e.platform), e.digest, src);
            entries.push(e);
        }
    }

    for e in &entries {
        ensure_in_repo(&registry, &store, &target, e).await?;
    }

    let manifests: Vec<kiln_oci::IndexEntry> = entries
        .iter()
        .map(|e| kiln_oci::IndexEntry::new(&e.media_type, &e.digest, e.bytes.len() as u64).with_platform(e.platform.clone()))
        .collect();
    let bytes = kiln_oci::index_json(media::OCI_INDEX, &manifests);
    let digest = store.put(&bytes).context("storing the index")?;
    registry
        .push_image(&target, &store, &bytes, media::OCI_INDEX, &[], &[])
        .await
        .with_context(|| format!("pushing the index to {target}"))?;
    eprintln!("pushed {target}@{digest}");
    println!("{digest}");
    if let Some(p) = &args.digest_file {
        std::fs::write(p, digest.to_string()).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_from_config() {
        let c = ImageConfig::from_bytes(
            br#"{"architecture":"arm","os":"linux","variant":"v7","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        let p = platform_of_config(&c);
        assert_eq!(p, json!({"architecture":"arm","os":"linux","variant":"v7"}));
        assert_eq!(platform_display(&p), "linux/arm/v7");
    }

    #[test]
    fn media_types() {
        assert_eq!(media_type_of(br#"{"manifests":[]}"#).unwrap().0, media::OCI_INDEX);
        assert_eq!(media_type_of(br#"{"layers":[]}"#).unwrap().0, media::OCI_MANIFEST);
        assert_eq!(media_type_of(format!(r#"{{"mediaType":"{}"}}"#, media::DOCKER_MANIFEST).as_bytes()).unwrap().0, media::DOCKER_MANIFEST);
    }
}
