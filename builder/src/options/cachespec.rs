//! `--cache-from` / `--cache-to` as `docker buildx build` takes them
//! (BuildKit's `cache/remotecache/{registry,local}` attributes): the type, where the
//! cache is, and the export options, checked once here. Every attribute BuildKit
//! defines for a type is either honoured or refused with the reason; anything else is
//! an error naming it (with "did you mean").

use std::path::PathBuf;

use kiln_cache::layercache::MountExport;
use kiln_cache::registrycache::{CacheLocation, CacheMode};
use kiln_cache::Reference;

/// One `--cache-from`.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheImport {
    pub location: CacheLocation,
    /// `cache-mounts=false` leaves the cache mounts it carries alone (default: a
    /// cache mount this machine does not have is restored from it when a step needs it).
    pub restore_mounts: bool,
}

/// The `--cache-to`.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheExport {
    pub location: CacheLocation,
    /// `mode=`: BuildKit's default is `min`, the final image's layers only.
    pub mode: CacheMode,
    /// `ignore-error=`: `Some(false)` makes a failed export fail the build; unset or
    /// `true`, it is a warning (a cache must not cost a build).
    pub ignore_error: Option<bool>,
    /// `compression=`: must be the build's own (`--compression`): the cache holds the
    /// layers the build made.
    pub compression: Option<String>,
    /// `cache-mounts=true` (kiln's): the contents of `RUN --mount=type=cache` travel
    /// with the cache, with `cache-mounts-max-size=` and `cache-mounts-ttl=`.
    pub mounts: Option<MountExport>,
}

/// What `--cache-to` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheTo {
    /// `type=registry` or `type=local`: a cache manifest.
    Export(CacheExport),
    /// `type=inline`: the records of the image's own steps in its config, read back by
    /// `--cache-from type=registry,ref=IMAGE`.
    Inline,
}

impl CacheTo {
    pub fn is_inline(&self) -> bool {
        matches!(self, CacheTo::Inline)
    }

    pub fn into_export(self) -> Option<CacheExport> {
        match self {
            CacheTo::Export(e) => Some(e),
            CacheTo::Inline => None,
        }
    }
}

/// The `--cache-to`, any type.
pub fn parse_cache_target(spec: &str) -> Result<CacheTo, String> {
    let flag = "--cache-to";
    let (kind, attrs) = fields(flag, spec)?;
    if kind != "inline" {
        return parse_cache_to(spec).map(CacheTo::Export);
    }
    for (k, v) in attrs {
        match k {
            // BuildKit's inline cache is min only; kiln's too.
            "mode" if v == "min" => {}
            "mode" => return Err(format!("{flag} {spec:?}: an inline cache holds the image's own layers only (mode=min); use type=registry,ref=REF,mode=max")),
            "ignore-error" => {
                boolean(flag, k, v)?;
            }
            _ => return Err(format!("{flag} {spec:?}: type=inline takes no option {k:?}")),
        }
    }
    Ok(CacheTo::Inline)
}

const TYPES: &[&str] = &["registry", "local", "inline", "gha", "s3", "azblob"];
const REGISTRY_ATTRS: &[&str] = &[
    "ref", "mode", "oci-mediatypes", "image-manifest", "compression", "compression-level", "force-compression", "ignore-error",
    "cache-mounts", "cache-mounts-max-size", "cache-mounts-ttl",
];
const LOCAL_ATTRS: &[&str] = &[
    "src", "dest", "tag", "digest", "mode", "oci-mediatypes", "image-manifest", "compression", "compression-level", "force-compression", "ignore-error",
    "cache-mounts", "cache-mounts-max-size", "cache-mounts-ttl",
];

/// How long a cache mount no build used is carried from export to export
/// (`cache-mounts-ttl=0` keeps them forever).
pub const DEFAULT_MOUNT_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

fn did_you_mean(got: &str, known: &[&str]) -> String {
    kiln_frontend::suggest::did_you_mean(kiln_frontend::suggest::search(got, known.iter().copied(), true).as_deref())
}

/// `type=…,k=v,…` (a bare value is `ref=` for the registry type, as buildx takes it).
fn fields<'a>(flag: &str, spec: &'a str) -> Result<(String, Vec<(&'a str, &'a str)>), String> {
    let mut kind = None;
    let mut attrs = Vec::new();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("type", t)) => kind = Some(t.to_string()),
            Some((k, v)) => attrs.push((k, v)),
            None => attrs.push(("ref", part)),
        }
    }
    let kind = kind.unwrap_or_else(|| "registry".to_string());
    if !TYPES.contains(&kind.as_str()) {
        return Err(format!("{flag} {spec:?}: unknown cache type {kind:?}{} (kiln has registry, local and inline)", did_you_mean(&kind, TYPES)));
    }
    match kind.as_str() {
        "gha" => Err(format!("{flag} {spec:?}: kiln has no GitHub Actions cache backend: cache a directory with actions/cache and use type=local,src=DIR / type=local,dest=DIR, or use type=registry,ref=REF")),
        "s3" | "azblob" => Err(format!("{flag} {spec:?}: kiln has no {kind} cache backend: use type=registry,ref=REF or type=local with a directory your CI stores")),
        _ => Ok((kind, attrs)),
    }
}

fn boolean(flag: &str, k: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{flag}: {k}={v}: expected true or false")),
    }
}

fn reference(flag: &str, r: &str) -> Result<Reference, String> {
    r.parse::<Reference>().map_err(|e| format!("{flag} {r}: {e}"))
}

/// One `--cache-from`.
pub fn parse_cache_from(spec: &str) -> Result<CacheImport, String> {
    let flag = "--cache-from";
    let (kind, attrs) = fields(flag, spec)?;
    let known = if kind == "local" { LOCAL_ATTRS } else { REGISTRY_ATTRS };
    let (mut r, mut src, mut tag, mut digest) = (None, None, None, None);
    let mut restore_mounts = true;
    for (k, v) in attrs {
        match (kind.as_str(), k) {
            ("registry", "ref") => r = Some(reference(flag, v)?),
            (_, "cache-mounts") => restore_mounts = boolean(flag, k, v)?,
            ("local", "src") => src = Some(PathBuf::from(v)),
            ("local", "tag") => tag = Some(v.to_string()),
            ("local", "digest") => digest = Some(v.parse().map_err(|e| format!("{flag}: digest={v}: {e}"))?),
            ("local", "dest") => return Err(format!("{flag} {spec:?}: dest= is where --cache-to writes; --cache-from reads src=DIR")),
            ("inline", _) => return Err(format!("{flag} {spec:?}: type=inline takes no attributes")),
            (_, k) if known.contains(&k) => {} // export options: meaningless on import, as BuildKit ignores them
            (_, k) => return Err(format!("{flag} {spec:?}: unknown option {k:?}{}", did_you_mean(k, known))),
        }
    }
    let location = match kind.as_str() {
        "registry" => CacheLocation::Registry(r.ok_or_else(|| format!("{flag} {spec:?}: missing ref="))?),
        "local" => CacheLocation::Layout {
            dir: src.ok_or_else(|| format!("{flag} {spec:?}: type=local needs src=DIR"))?,
            tag: tag.unwrap_or_else(|| "latest".into()),
            digest,
        },
        _ => return Err(format!("{flag} {spec:?}: an inline cache is read from the image: --cache-from type=registry,ref=IMAGE")),
    };
    Ok(CacheImport { location, restore_mounts })
}

/// The `--cache-to`.
pub fn parse_cache_to(spec: &str) -> Result<CacheExport, String> {
    let flag = "--cache-to";
    let (kind, attrs) = fields(flag, spec)?;
    if kind == "inline" {
        return Err(format!("{flag} {spec:?}: type=inline is read by parse_cache_target"));
    }
    let known = if kind == "local" { LOCAL_ATTRS } else { REGISTRY_ATTRS };
    let (mut mode, mut ignore_error, mut compression) = (CacheMode::Min, None, None);
    let (mut r, mut dest, mut tag) = (None, None, None);
    let (mut mounts, mut max_size, mut ttl) = (false, None, None);
    for (k, v) in attrs {
        match (kind.as_str(), k) {
            (_, "cache-mounts") => mounts = boolean(flag, k, v)?,
            (_, "cache-mounts-max-size") => {
                max_size = Some(kiln_cache::gc::parse_size(v).ok_or_else(|| format!("{flag}: cache-mounts-max-size={v}: expected a size like 500MB or 2GB"))?)
            }
            (_, "cache-mounts-ttl") => {
                ttl = Some(match v {
                    "0" => std::time::Duration::ZERO,
                    _ => kiln_cache::gc::parse_duration(v).ok_or_else(|| format!("{flag}: cache-mounts-ttl={v}: expected a duration like 168h or 7d, or 0 for none"))?,
                })
            }
            ("registry", "ref") => r = Some(reference(flag, v)?),
            ("local", "dest") => dest = Some(PathBuf::from(v)),
            ("local", "tag") => tag = Some(v.to_string()),
            ("local", "src") => return Err(format!("{flag} {spec:?}: src= is what --cache-from reads; --cache-to writes dest=DIR")),
            ("local", "digest") => return Err(format!("{flag} {spec:?}: digest= selects what --cache-from reads")),
            (_, "mode") => {
                mode = match v {
                    "min" => CacheMode::Min,
                    "max" => CacheMode::Max,
                    _ => return Err(format!("{flag}: mode={v}: expected min or max")),
                }
            }
            (_, "ignore-error") => ignore_error = Some(boolean(flag, k, v)?),
            (_, "oci-mediatypes") => {
                if !boolean(flag, k, v)? {
                    return Err(format!("{flag}: oci-mediatypes=false: kiln writes its cache with OCI media types only (every registry kiln pushes to accepts them)"));
                }
            }
            // kiln's cache is always an image manifest (config + layers), which is what
            // image-manifest=true asks BuildKit for; false (an index) is not needed.
            (_, "image-manifest") => {
                boolean(flag, k, v)?;
            }
            (_, "compression") => match v {
                "gzip" | "zstd" | "uncompressed" | "estargz" | "zstd:chunked" => compression = Some(v.to_string()),
                _ => return Err(format!("{flag}: compression={v}: expected gzip, zstd, estargz, zstd:chunked or uncompressed")),
            },
            (_, "compression-level" | "force-compression") => {
                return Err(format!("{flag}: {k}= is not supported: the cache holds the layers the build made; set --compression-level for the build"));
            }
            (_, k) => return Err(format!("{flag} {spec:?}: unknown option {k:?}{}", did_you_mean(k, known))),
        }
    }
    let location = match kind.as_str() {
        "registry" => CacheLocation::Registry(r.ok_or_else(|| format!("{flag} {spec:?}: missing ref="))?),
        _ => CacheLocation::Layout { dir: dest.ok_or_else(|| format!("{flag} {spec:?}: type=local needs dest=DIR"))?, tag: tag.unwrap_or_else(|| "latest".into()), digest: None },
    };
    if !mounts && (max_size.is_some() || ttl.is_some()) {
        return Err(format!("{flag} {spec:?}: cache-mounts-max-size= and cache-mounts-ttl= apply to cache-mounts=true, which is not set"));
    }
    // Imported mounts no build used for a week are not carried on unless told.
    let mounts = mounts.then(|| MountExport { max_size, ttl: Some(ttl.unwrap_or(DEFAULT_MOUNT_TTL)).filter(|t| !t.is_zero()) });
    Ok(CacheExport { location, mode, ignore_error, compression, mounts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildx_forms() {
        let to = parse_cache_to("type=registry,ref=r:5000/app:cache,mode=max,oci-mediatypes=true,image-manifest=true,ignore-error=true").unwrap();
        assert_eq!(to.mode, CacheMode::Max);
        assert_eq!(to.ignore_error, Some(true));
        assert!(matches!(to.location, CacheLocation::Registry(ref r) if r.to_string() == "r:5000/app:cache"));
        assert_eq!(parse_cache_to("r:5000/app:cache").unwrap().mode, CacheMode::Min, "BuildKit's default mode is min");
        let local = parse_cache_to("type=local,dest=/cache,mode=max").unwrap();
        assert_eq!(local.location, CacheLocation::Layout { dir: "/cache".into(), tag: "latest".into(), digest: None });
        let from = parse_cache_from("type=local,src=/cache,tag=main").unwrap();
        assert_eq!(from.location, CacheLocation::Layout { dir: "/cache".into(), tag: "main".into(), digest: None });
        assert!(matches!(parse_cache_from("r:5000/app:cache").unwrap().location, CacheLocation::Registry(_)));
        let m = parse_cache_to("type=local,dest=/c,cache-mounts=true,cache-mounts-max-size=2GiB,cache-mounts-ttl=24h").unwrap().mounts.unwrap();
        assert_eq!((m.max_size, m.ttl), (Some(2 << 30), Some(std::time::Duration::from_secs(86400))));
        assert_eq!(parse_cache_to("type=local,dest=/c,cache-mounts=true").unwrap().mounts.unwrap().ttl, Some(DEFAULT_MOUNT_TTL));
        assert_eq!(parse_cache_to("type=local,dest=/c,cache-mounts=true,cache-mounts-ttl=0").unwrap().mounts.unwrap().ttl, None);
        assert!(parse_cache_to("r:5000/app:cache").unwrap().mounts.is_none(), "cache mounts travel only when asked");
        assert!(!parse_cache_from("type=registry,ref=r:5000/a:c,cache-mounts=false").unwrap().restore_mounts);
        assert!(parse_cache_from("r:5000/a:c").unwrap().restore_mounts);
        // Export options on an import are ignored, as BuildKit does.
        assert!(parse_cache_from("type=registry,ref=r:5000/a:c,mode=max").is_ok());
    }

    #[test]
    fn errors_name_the_option() {
        let rows: &[(&str, bool, &str)] = &[
            ("type=registry,ref=r/a:c,mdoe=max", true, "unknown option \"mdoe\" (did you mean mode?)"),
            ("type=registyr,ref=r/a:c", true, "unknown cache type \"registyr\" (did you mean registry?)"),
            ("type=registry,ref=r/a:c,mode=all", true, "mode=all: expected min or max"),
            ("type=local,src=/c", true, "src= is what --cache-from reads"),
            ("type=local", true, "type=local needs dest=DIR"),
            ("type=gha", true, "no GitHub Actions cache backend"),
            ("type=s3,bucket=b", false, "no s3 cache backend"),
            ("type=inline,mode=max", true, "holds the image's own layers only"),
            ("type=registry,ref=r/a:c,oci-mediatypes=false", true, "OCI media types only"),
            ("type=registry,ref=r/a:c,compression=brotli", true, "expected gzip, zstd, estargz, zstd:chunked or uncompressed"),
            ("type=registry,ref=r/a:c,force-compression=true", true, "force-compression= is not supported"),
            ("type=registry,mode=max", true, "missing ref="),
            ("type=local,dest=/c", false, "dest= is where --cache-to writes"),
            ("type=local,dst=/c", true, "unknown option \"dst\" (did you mean dest?)"),
            ("type=inline", false, "read from the image"),
            ("type=registry,ref=r/a:c,cache-mount=true", true, "unknown option \"cache-mount\" (did you mean cache-mounts?)"),
            ("type=registry,ref=r/a:c,cache-mounts=yes", true, "cache-mounts=yes: expected true or false"),
            ("type=registry,ref=r/a:c,cache-mounts=true,cache-mounts-max-size=lots", true, "expected a size like 500MB"),
            ("type=registry,ref=r/a:c,cache-mounts-ttl=24h", true, "cache-mounts=true, which is not set"),
        ];
        assert_eq!(parse_cache_target("type=inline").unwrap(), CacheTo::Inline);
        for (spec, to, want) in rows {
            let e = if *to { parse_cache_target(spec).unwrap_err() } else { parse_cache_from(spec).unwrap_err() };
            assert!(e.contains(want), "{spec}: {e}");
        }
    }
}
