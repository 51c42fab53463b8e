//! `kiln push`, `kiln pull` and `kiln inspect`: local images to and from registries.
//! Run as the calling user (no user namespace: only the content store is touched).

use anyhow::{anyhow, bail, Context, Result};
use kiln_cache::reference::Reference;
use kiln_cache::registry::Registry;
use kiln_cache::store::ContentStore;
use kiln_frontend::Platform;
use kiln_oci::{Descriptor, Digest, ImageIndex};
use serde_json::{json, Value};

use super::{familiar, open_store, resolve_one};
use crate::cli::images::{InspectArgs, PullArgs, PushArgs};
use crate::cli::values::RegistryAccess;
use crate::export::{load_built, push_built};

/// Largest manifest or config read into memory.
pub(super) const MAX_JSON: u64 = 8 << 20;

pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the async runtime")
}

/// The registry client of the command's flags and credentials; the guard keeps
/// the merged credentials alive.
pub(super) fn registry(access: &RegistryAccess) -> Result<(Registry, Option<crate::cmd::ciauth::Guard>)> {
    let guard = crate::cmd::ciauth::install(access.authfile.as_deref()).context("registry credentials")?;
    let mut opts = access.registry.to_options()?;
    opts.auth_files = guard.as_ref().map(|g| g.auth_files());
    Ok((Registry::new(opts), guard))
}

pub(super) fn parse_ref(s: &str) -> Result<Reference> {
    s.parse().map_err(|e| anyhow!("{e}"))
}

pub(super) fn push(a: PushArgs) -> Result<()> {
    let store = open_store()?;
    let img = resolve_one(&store, &a.image)?;
    let dest = match &a.destination {
        Some(d) => parse_ref(d)?,
        None => img.name.clone(),
    };
    let built = load_built(&store, &img.descriptor)?;
    let (registry, _guard) = registry(&a.access)?;
    crate::progress::init(crate::progress::Mode::Plain);
    let digest = runtime()?.block_on(push_built(&registry, &store, &dest, &built, &[]))?;
    if let Some(p) = &a.digest_file {
        std::fs::write(p, digest.to_string()).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Pulls every platform of `r` (or `platforms`) into the store and names the
/// result: the index, an index of the chosen platforms, or the one manifest.
async fn pull_into(registry: &Registry, store: &ContentStore, r: &Reference, platforms: &[Platform]) -> Result<Descriptor> {
    let (bytes, digest) = registry.get_manifest(r).await?.ok_or_else(|| anyhow!("{r}: the registry has no such image"))?;
    if !kiln_cache::images::is_index(&bytes)? {
        let img = registry.pull_image(&r.with_digest(digest.clone()), &Platform::host(), store).await?;
        if let Some(want) = platforms.first() {
            let have = Platform::new(&img.config.os, &img.config.architecture, img.config.variant.as_deref());
            if platforms.iter().all(|p| p.os != have.os || p.architecture != have.architecture) {
                bail!("{r} is a {have} image, not {want}");
            }
        }
        return descriptor(&bytes, &digest);
    }
    let index: ImageIndex = serde_json::from_slice(&bytes).with_context(|| format!("the index of {r}"))?;
    let chosen: Vec<&Descriptor> = if platforms.is_empty() {
        index.manifests().iter().collect()
    } else {
        let mut v = Vec::new();
        for p in platforms {
            let d = kiln_cache::platform::select(index.manifests(), p).ok_or_else(|| anyhow!("{r} has no {p} image"))?;
            v.push(d);
        }
        v
    };
    for d in &chosen {
        let md: Digest = d.digest().to_string().parse()?;
        crate::progress::get().info("pull", &format!("pulling {} {}", d.platform().as_ref().map(|p| Platform::from_spec(p).to_string()).unwrap_or_default(), md));
        registry.pull_image(&r.with_digest(md), &Platform::host(), store).await?;
    }
    if platforms.is_empty() {
        store.put(&bytes)?;
        return descriptor(&bytes, &digest);
    }
    if let [one] = chosen.as_slice() {
        let mut d = (*one).clone();
        d.set_platform(None);
        return Ok(d);
    }
    // Some platforms of an index: an index of just those, so every blob it names is here.
    let entries: Vec<kiln_oci::IndexEntry> = chosen
        .iter()
        .map(|d| -> Result<kiln_oci::IndexEntry> {
            let md: Digest = d.digest().to_string().parse()?;
            let e = kiln_oci::IndexEntry::new(&d.media_type().to_string(), &md, d.size());
            Ok(match d.platform() {
                Some(p) => e.with_platform(Platform::from_spec(p).to_json()),
                None => e,
            })
        })
        .collect::<Result<_>>()?;
    let media_type = index.media_type().as_ref().map(|m| m.to_string()).unwrap_or_else(|| kiln_oci::media::OCI_INDEX.to_string());
    let sub = kiln_oci::index_json(&media_type, &entries);
    let sub_digest = store.put(&sub)?;
    descriptor(&sub, &sub_digest)
}

/// The descriptor of manifest (or index) bytes, with the media type they declare.
fn descriptor(bytes: &[u8], digest: &Digest) -> Result<Descriptor> {
    let mt = serde_json::from_slice::<Value>(bytes)?["mediaType"].as_str().map(str::to_string).unwrap_or_else(|| kiln_oci::media::OCI_MANIFEST.to_string());
    crate::export::descriptor(&mt, digest, bytes.len() as u64)
}

pub(super) fn pull(a: PullArgs) -> Result<()> {
    let store = open_store()?;
    let r = parse_ref(&a.reference)?;
    let platforms = match &a.platform {
        Some(p) => Platform::parse_list(p).map_err(|e| anyhow!("--platform {p:?}: {e}"))?,
        None => Vec::new(),
    };
    let (registry, _guard) = registry(&a.access)?;
    crate::progress::init(crate::progress::Mode::Plain);
    let desc = runtime()?.block_on(pull_into(&registry, &store, &r, &platforms))?;
    // A pull by digest alone has no tag to keep it under: it is named
    // `REPO:sha256-<12 hex>` (a tag that cannot collide with a real one a user
    // pushed by hand in practice), and `FROM REPO@sha256:…` finds it by digest.
    let name = match (r.tag(), r.digest()) {
        (None, Some(_)) => r.with_tag(&format!("sha256-{}", &desc.digest().to_string().trim_start_matches("sha256:")[..12]))?,
        _ => r.clone(),
    };
    store.name_image(&name, &desc)?;
    if a.quiet {
        println!("{}", desc.digest());
    } else {
        println!("{}: {}", familiar(&name), desc.digest());
    }
    Ok(())
}

/// The inspected image as JSON: name, digest, media type, platforms, and the
/// chosen platform's manifest, config and history.
fn inspect_json(name: &str, top: (&[u8], &Digest), manifest: &[u8], manifest_digest: &Digest, config: &[u8], platforms: Vec<String>) -> Result<Value> {
    let manifest: Value = serde_json::from_slice(manifest)?;
    let config: Value = serde_json::from_slice(config)?;
    let top_json: Value = serde_json::from_slice(top.0)?;
    let size: u64 = manifest["config"]["size"].as_u64().unwrap_or(0)
        + manifest["layers"].as_array().map(|l| l.iter().filter_map(|x| x["size"].as_u64()).sum()).unwrap_or(0);
    Ok(json!({
        "Name": name,
        "Digest": top.1.to_string(),
        "MediaType": top_json["mediaType"],
        "Platforms": platforms,
        "ManifestDigest": manifest_digest.to_string(),
        "Manifest": manifest,
        "Config": config.clone(),
        "History": config["history"],
        "Size": size,
    }))
}

fn platform_list(top: &[u8], one: &Value) -> Vec<String> {
    match serde_json::from_slice::<ImageIndex>(top) {
        Ok(i) if kiln_cache::images::is_index(top).unwrap_or(false) => {
            i.manifests().iter().filter_map(|d| d.platform().as_ref().map(|p| Platform::from_spec(p).to_string())).collect()
        }
        _ => {
            let variant = one["variant"].as_str();
            vec![Platform::new(one["os"].as_str().unwrap_or("linux"), one["architecture"].as_str().unwrap_or(""), variant).to_string()]
        }
    }
}

async fn inspect_remote(registry: &Registry, r: &Reference, platform: &Platform) -> Result<Value> {
    let (top, top_digest) = registry.get_manifest(r).await?.ok_or_else(|| anyhow!("{r}: not a local image, and the registry has no such image"))?;
    let (manifest, manifest_digest) = if kiln_cache::images::is_index(&top)? {
        let index: ImageIndex = serde_json::from_slice(&top)?;
        let d = kiln_cache::platform::select(index.manifests(), platform).ok_or_else(|| anyhow!("{r} has no {platform} image"))?;
        let md: Digest = d.digest().to_string().parse()?;
        registry.get_manifest(&r.with_digest(md)).await?.ok_or_else(|| anyhow!("{r}: the registry lost the {platform} manifest"))?
    } else {
        (top.clone(), top_digest.clone())
    };
    let m: Value = serde_json::from_slice(&manifest)?;
    let cd: Digest = m["config"]["digest"].as_str().unwrap_or_default().parse().map_err(|e| anyhow!("{r}: config digest: {e}"))?;
    let config = registry.get_blob(r, &cd, MAX_JSON).await?;
    let cv: Value = serde_json::from_slice(&config)?;
    inspect_json(&r.to_string(), (&top, &top_digest), &manifest, &manifest_digest, &config, platform_list(&top, &cv))
}

fn inspect_local(store: &ContentStore, arg: &str, platform: &Platform) -> Result<Option<Value>> {
    let img = match resolve_one(store, arg) {
        Ok(i) => i,
        Err(_) => return Ok(None),
    };
    let pulled = store.local_image(&img.name, platform)?.ok_or_else(|| anyhow!("{arg} has no {platform} image"))?;
    let top_digest = img.digest()?;
    let top = store.read(&top_digest)?;
    let config = store.read(&pulled.config_digest)?;
    let cv: Value = serde_json::from_slice(&config)?;
    Ok(Some(inspect_json(&familiar(&img.name), (&top, &top_digest), &pulled.manifest_bytes, &pulled.manifest_digest, &config, platform_list(&top, &cv))?))
}

/// `--format .A.b.0.C` (or `{{.A.b}}`): keys matched case-insensitively, numbers
/// index arrays; a string prints bare, anything else as JSON.
pub(super) fn select_path<'a>(v: &'a Value, path: &str) -> Result<&'a Value> {
    let p = path.trim().trim_start_matches("{{").trim_end_matches("}}").trim();
    let mut cur = v;
    for part in p.split('.').filter(|s| !s.is_empty()) {
        cur = match cur {
            Value::Object(m) => m
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(part))
                .map(|(_, v)| v)
                .ok_or_else(|| anyhow!("--format {path:?}: no key {part:?} (keys: {})", m.keys().cloned().collect::<Vec<_>>().join(", ")))?,
            Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)).ok_or_else(|| anyhow!("--format {path:?}: {part:?} is not an index below {}", a.len()))?,
            _ => bail!("--format {path:?}: {part:?} is below a value that has no keys"),
        };
    }
    Ok(cur)
}

pub(super) fn inspect(a: InspectArgs) -> Result<()> {
    let platform = match &a.platform {
        Some(p) => Platform::parse(p).map_err(|e| anyhow!("--platform {p:?}: {e}"))?,
        None => Platform::host(),
    };
    let store = open_store()?;
    let v = match inspect_local(&store, &a.image, &platform)? {
        Some(v) => v,
        None => {
            let r = parse_ref(&a.image)?;
            let (registry, _guard) = registry(&a.access)?;
            runtime()?.block_on(inspect_remote(&registry, &r, &platform)).with_context(|| format!("inspecting {}", a.image))?
        }
    };
    match &a.format {
        Some(f) => match select_path(&v, f)? {
            Value::String(s) => println!("{s}"),
            other => println!("{other}"),
        },
        None => println!("{}", serde_json::to_string_pretty(&v)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_paths_walk_keys_and_indexes() {
        let v = json!({"Config": {"config": {"Env": ["A=1", "B=2"], "Labels": {"x": "y"}}}, "Digest": "sha256:ab"});
        assert_eq!(select_path(&v, ".Digest").unwrap(), "sha256:ab");
        assert_eq!(select_path(&v, "{{ .config.Config.env.1 }}").unwrap(), "B=2");
        assert_eq!(select_path(&v, ".Config.config.Labels").unwrap(), &json!({"x": "y"}));
        assert!(select_path(&v, ".Nope").unwrap_err().to_string().contains("no key \"Nope\""));
        assert!(select_path(&v, ".Config.config.Env.7").is_err());
    }
}
