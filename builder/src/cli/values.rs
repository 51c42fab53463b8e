//! Values of flags shared by several subcommands.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use kiln_cache::reference::Reference;

use crate::options::Output;

/// `--build-arg KEY=VALUE`s; a bare KEY is taken from the environment and ignored
/// when unset, as Docker does.
pub fn parse_build_args(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut build_args = BTreeMap::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                build_args.insert(k.to_string(), v.to_string());
            }
            Some(_) => bail!("--build-arg {a:?}: expected KEY=VALUE"),
            None => {
                if let Ok(v) = std::env::var(a) {
                    build_args.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(build_args)
}


/// `type=registry,ref=REF` (BuildKit's cache syntax), or a bare reference.
pub fn parse_cache_ref(flag: &str, spec: &str) -> Result<Reference> {
    let mut r = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("type", "registry")) => {}
            Some(("type", other)) => bail!("{flag} {spec:?}: unsupported cache type {other:?} (registry)"),
            Some(("ref", v)) => r = Some(v.to_string()),
            Some(("mode" | "compression" | "oci-mediatypes" | "image-manifest" | "ignore-error", _)) => {}
            None if !part.is_empty() => r = Some(part.to_string()),
            _ => bail!("{flag} {spec:?}: unknown field {part:?}"),
        }
    }
    let r = r.ok_or_else(|| anyhow!("{flag} {spec:?}: missing ref="))?;
    r.parse::<Reference>().map_err(|e| anyhow!("{flag} {r}: {e}"))
}

pub fn parse_output(spec: &str) -> Result<Output> {
    let mut kind = None;
    let mut dest = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("type", v)) => kind = Some(v.to_string()),
            Some(("dest", v)) => dest = Some(PathBuf::from(v)),
            _ => bail!("--output {spec:?}: unknown field {part:?} (expected type=oci,dest=DIR)"),
        }
    }
    let need = |what: &str| anyhow!("--output {spec:?}: this type needs dest={what}");
    match kind.as_deref() {
        Some("oci") => Ok(Output::OciLayout { dest: dest.ok_or_else(|| need("DIR"))? }),
        Some("docker" | "tar") => Ok(Output::DockerArchive { dest: dest.ok_or_else(|| need("FILE.tar"))? }),
        Some("local") => Ok(Output::Local { dest: dest.ok_or_else(|| need("DIR"))? }),
        Some(other) => bail!("--output {spec:?}: unsupported type {other:?} (supported: oci, docker, local)"),
        None => bail!("--output {spec:?}: missing type= (e.g. type=oci,dest=DIR)"),
    }
}

