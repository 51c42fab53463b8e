//! `kiln attestations REF` and `kiln sbom REF`: what is attached to a pushed image,
//! read without another tool. Both layouts are read: OCI 1.1 referrers of each
//! platform manifest (the referrers API, else the tag schema), and BuildKit's
//! attestation manifests inside the index (so images built by BuildKit show too).

use anyhow::{anyhow, bail, Context, Result};
use kiln_cache::reference::Reference;
use kiln_cache::registry::Registry;
use kiln_frontend::Platform;
use kiln_oci::{media, Digest};
use serde_json::{json, Value};

use super::remote::{parse_ref, registry, runtime, MAX_JSON};
use crate::cli::images::{AttestationsArgs, SbomArgs};

/// Largest attestation document read (a big image's SBOM is a few MiB).
const MAX_DOCUMENT: u64 = 256 << 20;

/// One attestation found.
struct Found {
    platform: String,
    subject: Digest,
    /// The referrer manifest, or BuildKit's attestation manifest.
    manifest: Digest,
    /// The payload blob.
    blob: Digest,
    size: u64,
    artifact_type: String,
    predicate_type: Option<String>,
    scope: Option<String>,
    /// `referrer` or `buildkit`.
    style: &'static str,
}

fn annotation(v: &Value, key: &str) -> Option<String> {
    v["annotations"][key].as_str().map(str::to_string)
}

/// Every platform image of `r`: (platform, manifest digest), and BuildKit's
/// attestation entries (manifest digest, the image it refers to).
async fn images_of(registry: &Registry, r: &Reference) -> Result<(Vec<(String, Digest)>, Vec<(Digest, Digest)>)> {
    let (top, top_digest) = registry.get_manifest(r).await?.ok_or_else(|| anyhow!("{r}: the registry has no such image"))?;
    if !kiln_cache::images::is_index(&top)? {
        let m: Value = serde_json::from_slice(&top).with_context(|| format!("the manifest of {r}"))?;
        let cd: Digest = m["config"]["digest"].as_str().unwrap_or_default().parse().map_err(|e| anyhow!("{r}: config digest: {e}"))?;
        let config: Value = serde_json::from_slice(&registry.get_blob(r, &cd, MAX_JSON).await?).with_context(|| format!("the config of {r}"))?;
        let p = Platform::new(config["os"].as_str().unwrap_or("linux"), config["architecture"].as_str().unwrap_or(""), config["variant"].as_str());
        return Ok((vec![(p.to_string(), top_digest)], Vec::new()));
    }
    let index: Value = serde_json::from_slice(&top).with_context(|| format!("the index of {r}"))?;
    let mut images = Vec::new();
    let mut buildkit = Vec::new();
    for e in index["manifests"].as_array().into_iter().flatten() {
        let d: Digest = e["digest"].as_str().unwrap_or_default().parse().map_err(|err| anyhow!("{r}: index entry digest: {err}"))?;
        if annotation(e, "vnd.docker.reference.type").as_deref() == Some("attestation-manifest") {
            if let Some(subject) = annotation(e, "vnd.docker.reference.digest").and_then(|s| s.parse().ok()) {
                buildkit.push((d, subject));
            }
            continue;
        }
        let p = &e["platform"];
        let p = Platform::new(p["os"].as_str().unwrap_or("linux"), p["architecture"].as_str().unwrap_or(""), p["variant"].as_str());
        images.push((p.to_string(), d));
    }
    Ok((images, buildkit))
}

/// Every attestation of `r` (of `platform` only, when given).
async fn find(registry: &Registry, r: &Reference, platform: Option<&Platform>) -> Result<Vec<Found>> {
    let (images, buildkit) = images_of(registry, r).await?;
    let wanted = |p: &str| platform.is_none_or(|want| Platform::parse(p).is_ok_and(|have| have.os == want.os && have.architecture == want.architecture && (want.variant.is_none() || have.variant == want.variant)));
    let mut out = Vec::new();
    for (p, subject) in images.iter().filter(|(p, _)| wanted(p)) {
        for referrer in registry.referrers(r, subject, None).await.with_context(|| format!("listing the referrers of {r}@{subject}"))? {
            let (bytes, _) = registry
                .get_manifest(&r.with_digest(referrer.digest.clone()))
                .await?
                .ok_or_else(|| anyhow!("{r}: the referrer {} is listed but missing", referrer.digest))?;
            let m: Value = serde_json::from_slice(&bytes).with_context(|| format!("the referrer {} of {r}", referrer.digest))?;
            let layer = &m["layers"][0];
            let Ok(blob) = layer["digest"].as_str().unwrap_or_default().parse::<Digest>() else { continue };
            out.push(Found {
                platform: p.clone(),
                subject: subject.clone(),
                manifest: referrer.digest.clone(),
                blob,
                size: layer["size"].as_u64().unwrap_or(0),
                artifact_type: m["artifactType"].as_str().or(referrer.artifact_type.as_deref()).unwrap_or_default().to_string(),
                predicate_type: annotation(&m, crate::attest::PREDICATE_ANNOTATION),
                scope: annotation(&m, crate::attest::SCOPE_ANNOTATION),
                style: "referrer",
            });
        }
    }
    for (d, subject) in &buildkit {
        let Some((p, _)) = images.iter().find(|(_, s)| s == subject) else { continue };
        if !wanted(p) {
            continue;
        }
        let (bytes, _) = registry.get_manifest(&r.with_digest(d.clone())).await?.ok_or_else(|| anyhow!("{r}: attestation manifest {d} is missing"))?;
        let m: Value = serde_json::from_slice(&bytes).with_context(|| format!("the attestation manifest {d} of {r}"))?;
        for layer in m["layers"].as_array().into_iter().flatten() {
            let Ok(blob) = layer["digest"].as_str().unwrap_or_default().parse::<Digest>() else { continue };
            out.push(Found {
                platform: p.clone(),
                subject: subject.clone(),
                manifest: d.clone(),
                blob,
                size: layer["size"].as_u64().unwrap_or(0),
                artifact_type: layer["mediaType"].as_str().unwrap_or_default().to_string(),
                predicate_type: annotation(layer, crate::attest::PREDICATE_ANNOTATION),
                scope: None,
                style: "buildkit",
            });
        }
    }
    Ok(out)
}

/// The document of `f`: a BuildKit layer is an in-toto statement whose predicate
/// is the SBOM; provenance stays the statement.
async fn document(registry: &Registry, r: &Reference, f: &Found) -> Result<Value> {
    let bytes = registry.get_blob(r, &f.blob, MAX_DOCUMENT).await.with_context(|| format!("fetching the attestation {} of {r}", f.blob))?;
    let v: Value = serde_json::from_slice(&bytes).with_context(|| format!("the attestation {} of {r} is not JSON", f.blob))?;
    let is_provenance = f.predicate_type.as_deref().is_some_and(|t| t.starts_with("https://slsa.dev/provenance"));
    if f.style == "buildkit" && !is_provenance {
        return Ok(v["predicate"].clone());
    }
    Ok(v)
}

fn kind_of(f: &Found) -> &'static str {
    match (f.artifact_type.as_str(), f.predicate_type.as_deref()) {
        (media::SPDX_JSON, _) | (_, Some(crate::attest::SPDX_PREDICATE)) => "sbom-spdx",
        (media::CYCLONEDX_JSON, _) | (_, Some(crate::attest::CYCLONEDX_PREDICATE)) => "sbom-cyclonedx",
        (_, Some(t)) if t.starts_with("https://slsa.dev/provenance") => "provenance",
        _ => "other",
    }
}

fn platform_arg(p: &Option<String>) -> Result<Option<Platform>> {
    p.as_deref().map(|p| Platform::parse(p).map_err(|e| anyhow!("--platform {p:?}: {e}"))).transpose()
}

pub(super) fn list(a: AttestationsArgs) -> Result<()> {
    if !matches!(a.format.as_str(), "table" | "json") {
        bail!("--format {:?}: expected table or json", a.format);
    }
    let r = parse_ref(&a.reference)?;
    let platform = platform_arg(&a.platform)?;
    let (registry, _guard) = registry(&a.access)?;
    let rt = runtime()?;
    let found = rt.block_on(find(&registry, &r, platform.as_ref()))?;
    if a.format == "table" {
        println!("{:<16} {:<15} {:<9} {:<12} {:>9}  {}", "PLATFORM", "KIND", "STYLE", "DIGEST", "SIZE", "SCOPE/PREDICATE");
        for f in &found {
            let extra = f.scope.clone().or_else(|| f.predicate_type.clone()).unwrap_or_default();
            println!("{:<16} {:<15} {:<9} {:<12} {:>9}  {extra}", f.platform, kind_of(f), f.style, &f.manifest.short(), f.size);
        }
        if found.is_empty() {
            eprintln!("{r}: no attestations attached");
        }
        return Ok(());
    }
    let mut out = Vec::new();
    for f in &found {
        let mut v = json!({
            "platform": f.platform, "subject": f.subject.to_string(), "digest": f.manifest.to_string(),
            "blob": f.blob.to_string(), "size": f.size, "artifactType": f.artifact_type, "kind": kind_of(f),
            "predicateType": f.predicate_type, "scope": f.scope, "style": f.style,
        });
        if a.payload {
            v["payload"] = rt.block_on(document(&registry, &r, f))?;
        }
        out.push(v);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub(super) fn sbom(a: SbomArgs) -> Result<()> {
    if !matches!(a.format.as_str(), "table" | "json") {
        bail!("--format {:?}: expected table or json", a.format);
    }
    let want_kind = match a.sbom_type.as_deref() {
        None => None,
        Some("spdx") => Some("sbom-spdx"),
        Some("cyclonedx") => Some("sbom-cyclonedx"),
        Some(other) => bail!("--type {other:?}: expected spdx or cyclonedx"),
    };
    let r = parse_ref(&a.reference)?;
    let platform = platform_arg(&a.platform)?;
    let (registry, _guard) = registry(&a.access)?;
    let rt = runtime()?;
    let found = rt.block_on(find(&registry, &r, platform.as_ref()))?;
    let host = Platform::host().to_string();
    let sboms: Vec<&Found> = found
        .iter()
        .filter(|f| kind_of(f).starts_with("sbom-") && want_kind.is_none_or(|k| kind_of(f) == k))
        .filter(|f| f.scope.as_deref().unwrap_or("image") == a.scope)
        .collect();
    // Several platforms and none asked for: the host's, else the first.
    let chosen = sboms.iter().find(|f| platform.is_some() || f.platform == host).or(sboms.first()).copied();
    let Some(f) = chosen else {
        bail!("{r}: no SBOM{} attached (kiln attestations {r} lists what is)", a.sbom_type.as_deref().map(|t| format!(" ({t})")).unwrap_or_default());
    };
    let doc = rt.block_on(document(&registry, &r, f))?;
    if a.format == "json" {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let rows = packages(&doc);
    println!("{:<40} {:<30} PURL", "NAME", "VERSION");
    for (name, version, purl) in &rows {
        println!("{name:<40} {version:<30} {purl}");
    }
    eprintln!("{} packages ({}, {} {})", rows.len(), f.platform, kind_of(f), f.manifest.short());
    Ok(())
}

/// (name, version, purl) of every package of an SPDX or CycloneDX document.
fn packages(doc: &Value) -> Vec<(String, String, String)> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut out = Vec::new();
    for p in doc["packages"].as_array().into_iter().flatten() {
        let purl = p["externalRefs"].as_array().into_iter().flatten().find(|r| r["referenceType"] == "purl").map(|r| s(&r["referenceLocator"])).unwrap_or_default();
        if purl.starts_with("pkg:oci/") || purl.starts_with("pkg:docker/") {
            continue; // the image itself
        }
        out.push((s(&p["name"]), s(&p["versionInfo"]), purl));
    }
    for c in doc["components"].as_array().into_iter().flatten() {
        out.push((s(&c["name"]), s(&c["version"]), s(&c["purl"])));
    }
    out
}
