//! What attestations are made from, gathered where the layers can be mounted: the
//! SBOM scans of each platform's final rootfs (and of the context and intermediate
//! stages when asked), the images each platform read by digest, and the build's
//! facts for provenance.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use kiln_frontend::{Network, Platform, StepKind};

use super::{images_needed, lower_dirs, Ctx, JobId, Job, PulledMap, TargetPlan};
use crate::attest::{Facts, Material, Scans};
use crate::image::ImageState;
use crate::progress;

/// Per platform, in the order of `images`: what was scanned (if an SBOM is asked
/// for) and the images read.
pub(super) struct Inputs {
    pub scans: Vec<Option<Scans>>,
    pub materials: Vec<Vec<Material>>,
}

/// BuildKit's build args that ask for the context and stage scans.
fn arg_true(cx: &Ctx, name: &str) -> bool {
    cx.opts.build_args.get(name).is_some_and(|v| crate::options::build_arg_on(v))
}

fn scan_state(cx: &Ctx, state: &ImageState, what: &str) -> Result<kiln_sbom::Inventory> {
    let lowers = lower_dirs(cx, state)?;
    let snap = cx.snaps.prepare(&lowers)?;
    let started = std::time::Instant::now();
    let inv = kiln_sbom::scan(snap.merged()).with_context(|| format!("scanning {what} for the SBOM"))?;
    progress::get().info(
        "sbom",
        &format!("sbom: {what}: {} packages in {} files ({:.1}s)", inv.packages.len(), inv.files_seen, started.elapsed().as_secs_f64()),
    );
    Ok(inv)
}

/// Scans and materials for every target platform. Runs on a blocking thread.
pub(super) fn gather(cx: &Ctx, plans: &[TargetPlan], results: &BTreeMap<JobId, ImageState>, images: &[(Platform, ImageState)], pulled: &PulledMap) -> Result<Inputs> {
    let req = &cx.opts.attestations;
    let mut out = Inputs { scans: Vec::new(), materials: Vec::new() };
    let context_scan = match &req.sbom {
        Some(s) if s.scan_context || arg_true(cx, "BUILDKIT_SBOM_SCAN_CONTEXT") => {
            let inv = kiln_sbom::scan(&cx.opts.context).with_context(|| format!("scanning the context {} for the SBOM", cx.opts.context.display()))?;
            progress::get().info("sbom", &format!("sbom: context: {} packages", inv.packages.len()));
            Some(inv)
        }
        _ => None,
    };
    for (plan, (platform, state)) in plans.iter().zip(images) {
        let scans = match &req.sbom {
            None => None,
            Some(s) => {
                let mut scans = Scans { image: scan_state(cx, state, &format!("{platform} image"))?, context: context_scan.clone(), stages: Vec::new() };
                if s.scan_stage || arg_true(cx, "BUILDKIT_SBOM_SCAN_STAGE") {
                    for (&i, job) in &plan.jobs {
                        if i == plan.graph.target {
                            continue;
                        }
                        let name = plan.graph.stages[i.0].name.clone().unwrap_or_else(|| format!("stage-{}", i.0));
                        if let Some(st) = results.get(job) {
                            scans.stages.push((name.clone(), scan_state(cx, st, &format!("{platform} stage {name}"))?));
                        }
                    }
                }
                Some(scans)
            }
        };
        out.scans.push(scans);
        let mut materials: Vec<Material> = Vec::new();
        for (name, p) in images_needed(&plan.graph, &plan.platform)? {
            let Some(pulled) = pulled.get(&(name.clone(), p.to_string())) else { continue };
            let m = Material { uri: crate::attest::provenance::subject_name(&name, &p.to_string()), digest: pulled.manifest_digest.clone() };
            if !materials.contains(&m) {
                materials.push(m);
            }
        }
        out.materials.push(materials);
    }
    Ok(out)
}

/// The facts of this build every provenance statement shares.
pub(super) fn facts(cx: &Ctx, jobs: &[Job], dockerfile_text: &str, started: i64) -> Facts {
    let o = &cx.opts;
    let dockerfile_path = o
        .dockerfile
        .strip_prefix(&o.context)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| o.dockerfile.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "Dockerfile".into()));
    let hermetic = o.network_none
        || jobs.iter().all(|j| j.stage.steps.iter().all(|s| !matches!(&s.kind, StepKind::Run { network, .. } if *network != Network::None)));
    let context_commit = o.context_commit.clone().or_else(|| crate::attest::provenance::work_tree_commit(&o.context));
    let context_uri = o.context_uri.clone().or_else(|| context_commit.as_ref().and_then(|_| crate::attest::provenance::work_tree_origin(&o.context)));
    Facts {
        started,
        finished: crate::timefmt::now_secs(),
        dockerfile_path,
        dockerfile_digest: kiln_oci::Digest::of(dockerfile_text.as_bytes()).to_string(),
        context_uri,
        context_commit,
        build_args: o.build_args.clone(),
        target: o.target.clone(),
        secret_ids: o.secrets.iter().map(|s| s.id.clone()).collect(),
        ssh_ids: o.ssh.iter().map(|s| s.id.clone()).collect(),
        builder_platform: Platform::host().to_string(),
        reproducible: o.source_date_epoch.is_some(),
        hermetic,
        no_cache: o.no_cache,
        invocation_id: format!("{}-{}", std::process::id(), started),
    }
}
