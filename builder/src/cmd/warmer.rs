//! `kiln warmer` (Kaniko's `/kaniko/warmer`): pulls images and writes them into the
//! base-image cache directory in Kaniko's layout (`export::base_cache`), one entry per
//! platform manifest. Each image is pulled into a scratch content store inside the
//! cache directory (removed afterwards), so the warmer needs no `$KILN_ROOT`.

use anyhow::{anyhow, Context, Result};
use kiln_cache::reference::Reference;
use kiln_cache::registry::Registry;
use kiln_cache::store::ContentStore;
use kiln_frontend::Platform;

use crate::cli::warmer::WarmerArgs;
use crate::export::base_cache::{self, Lookup};

enum Warmed {
    Written(std::path::PathBuf),
    AlreadyCached(std::path::PathBuf),
}

/// Kaniko's warmer semantics: each image is tried; failures are warnings unless no
/// image at all could be warmed.
pub fn run(a: WarmerArgs) -> Result<()> {
    let flags = a.registry_flags()?;
    let guard = crate::cmd::ciauth::install(None).context("registry credentials")?;
    let mut ropts = flags.to_options()?;
    ropts.auth_files = guard.as_ref().map(|g| g.auth_files());
    let registry = Registry::new(ropts);
    let ttl = match &a.cache_ttl {
        Some(t) => kiln_cache::gc::parse_duration(t).ok_or_else(|| anyhow!("--cache-ttl {t:?}: expected a duration like 336h or 14d"))?,
        None => base_cache::DEFAULT_TTL,
    };
    let platform = match &a.custom_platform {
        Some(p) => Platform::parse(p).map_err(|e| anyhow!("--customPlatform {p:?}: {e}"))?,
        None => Platform::host(),
    };
    let mut images = a.images.clone();
    if let Some(df) = &a.dockerfile {
        images.extend(dockerfile_images(df, &a.build_args, &platform)?);
    }
    std::fs::create_dir_all(&a.cache_dir).with_context(|| format!("creating the cache directory {}", a.cache_dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the async runtime")?;
    let mut failed = 0;
    for image in &images {
        match rt.block_on(warm_one(&registry, &a, ttl, image, &platform)) {
            Ok(Warmed::Written(p)) => crate::progress::get().info("warm", &format!("{image} ({platform}) → {}", p.display())),
            Ok(Warmed::AlreadyCached(p)) => crate::progress::get().info("warm", &format!("{image} ({platform}) is already in the cache: {}", p.display())),
            Err(e) => {
                failed += 1;
                crate::progress::get().warn(&format!("could not warm {image}: {e:#}"));
            }
        }
    }
    if failed == images.len() {
        anyhow::bail!("failed to warm any of the given images ({})", images.join(", "));
    }
    Ok(())
}

async fn warm_one(registry: &Registry, a: &WarmerArgs, ttl: std::time::Duration, image: &str, platform: &Platform) -> Result<Warmed> {
    let r: Reference = image.parse().map_err(|e| anyhow!("image {image}: {e}"))?;
    let digest = base_cache::platform_manifest_digest(registry, &r, platform).await?;
    // Unlike Kaniko, an expired entry is written again: making it fresh is the point.
    if let (false, Lookup::Fresh(p)) = (a.force.unwrap_or(false), base_cache::lookup(&a.cache_dir, &digest, ttl)) {
        return Ok(Warmed::AlreadyCached(p));
    }
    let scratch = tempfile::Builder::new().prefix(".kiln-warming-").tempdir_in(&a.cache_dir).context("a scratch store in the cache directory")?;
    let store = ContentStore::open(scratch.path())?;
    let img = registry.pull_image(&r.with_digest(digest), platform, &store).await?;
    Ok(Warmed::Written(base_cache::write(&store, &a.cache_dir, &img, &r.to_string())?))
}

/// The base images of a Dockerfile's stages, FROM lines expanded with `build_args`.
fn dockerfile_images(path: &std::path::Path, build_args: &[String], platform: &Platform) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading --dockerfile {}", path.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "Dockerfile".into());
    let df = kiln_frontend::parse(&name, &text).map_err(|e| anyhow!("{e}"))?;
    let build_args = build_args
        .iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => std::env::var(a).map(|v| (a.clone(), v)).map_err(|_| anyhow!("--build-arg {a:?}: expected NAME=VALUE")),
        })
        .collect::<Result<_>>()?;
    let opts = kiln_frontend::LowerOptions { build_args, target_platform: platform.clone(), build_platform: Platform::host(), ..Default::default() };
    kiln_frontend::base_images(&df, &opts).map_err(|e| anyhow!("{e}"))
}
