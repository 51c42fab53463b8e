//! The image being built: its config, its layers, and how each Dockerfile
//! instruction changes the config and history.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use kiln_frontend::{Healthcheck, StepKind};
use kiln_oci::{Digest, HealthConfig, History, ImageConfig};

use crate::fsutil::container_path;

/// A layer of the image being built.
#[derive(Debug, Clone)]
pub struct Layer {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
    /// Descriptor annotations that describe the blob (the lazy formats' TOC digest
    /// and position), written on the manifest's layer descriptor.
    pub annotations: BTreeMap<String, String>,
    /// The layer's SOCI ztoc in the content store (`--soci`, gzip layers kiln wrote).
    pub ztoc: Option<kiln_cache::layercache::BlobRef>,
}

/// The state of a stage between steps.
#[derive(Debug, Clone)]
pub struct ImageState {
    pub config: ImageConfig,
    pub layers: Vec<Layer>,
    /// Whether CMD was set in this stage (ENTRYPOINT resets an inherited CMD only).
    pub cmd_set_here: bool,
    /// The layers the stage being built adds never leave this machine (the solver
    /// decides, `solver/leaves.rs`): they are kept uncompressed.
    pub layers_stay: bool,
    /// Where each name is in the config's Env, so that an ENV step does not scan
    /// the list (100,000 ENV lines were quadratic: 59 s).
    env_index: EnvIndex,
}

/// Positions of `K=V` entries by `K` in an Env list. Rebuilt whenever the list is
/// not the one it was built for (another length, or an entry that moved).
#[derive(Debug, Clone, Default)]
struct EnvIndex {
    seen: usize,
    pos: std::collections::HashMap<String, usize>,
}

/// The name of a `K=V` entry; an entry without `=` names nothing (as in set_env).
fn env_key(e: &str) -> Option<&str> {
    e.split_once('=').map(|(k, _)| k)
}

impl EnvIndex {
    fn rebuild(&mut self, env: &[String]) {
        self.pos.clear();
        for (i, e) in env.iter().enumerate() {
            if let Some(k) = env_key(e) {
                self.pos.entry(k.to_string()).or_insert(i);
            }
        }
        self.seen = env.len();
    }

    /// [`set_env`] in constant time.
    fn set(&mut self, env: &mut Vec<String>, k: &str, v: &str) {
        if self.seen != env.len() {
            self.rebuild(env);
        }
        let valid = |i: usize, env: &[String]| env.get(i).is_some_and(|e| env_key(e) == Some(k));
        match self.pos.get(k).copied() {
            Some(i) if valid(i, env) => env[i] = format!("{k}={v}"),
            Some(_) => {
                self.rebuild(env);
                set_env(env, k, v);
                self.rebuild(env);
            }
            None => {
                self.pos.insert(k.to_string(), env.len());
                env.push(format!("{k}={v}"));
            }
        }
        self.seen = env.len();
    }
}

impl ImageState {
    pub fn new(config: ImageConfig, layers: Vec<Layer>) -> Self {
        ImageState { config, layers, cmd_set_here: false, layers_stay: false, env_index: EnvIndex::default() }
    }

    pub fn env(&self) -> Vec<String> {
        self.config.config.as_ref().and_then(|c| c.env.clone()).unwrap_or_default()
    }

    pub fn workdir(&self) -> String {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_string())
    }

    pub fn user(&self) -> String {
        self.config.config.as_ref().and_then(|c| c.user.clone()).unwrap_or_default()
    }

    pub fn push_history(&mut self, created: &str, created_by: &str, empty_layer: bool) {
        self.config.history.push(History {
            created: Some(created.to_string()),
            created_by: Some(created_by.to_string()),
            comment: Some("buildkit.dockerfile.v0".to_string()),
            empty_layer,
            ..Default::default()
        });
    }

    pub fn push_layer(&mut self, layer: Layer) {
        self.config.rootfs.diff_ids.push(layer.diff_id.clone());
        self.layers.push(layer);
    }

    /// Apply an instruction that only changes the config. Returns false for steps
    /// that touch the filesystem (RUN/COPY/ADD), which the solver handles.
    pub fn apply_config_step(&mut self, kind: &StepKind) -> bool {
        let cmd_set_here = &mut self.cmd_set_here;
        let rc = self.config.run_config_mut();
        match kind {
            StepKind::Env(kvs) => {
                let env = rc.env.get_or_insert_with(Vec::new);
                for (k, v) in kvs {
                    self.env_index.set(env, k, v);
                }
            }
            StepKind::Workdir(p) => {
                let cur = rc.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into());
                rc.working_dir = Some(container_path(&cur, p).to_string_lossy().into_owned());
            }
            StepKind::Cmd(argv) => {
                rc.cmd = Some(argv.clone());
                *cmd_set_here = true;
            }
            StepKind::Entrypoint(argv) => {
                rc.entrypoint = Some(argv.clone());
                if !*cmd_set_here {
                    rc.cmd = None;
                }
            }
            StepKind::User(u) => rc.user = Some(u.clone()),
            StepKind::Label(kvs) => {
                let labels = rc.labels.get_or_insert_with(BTreeMap::new);
                for (k, v) in kvs {
                    labels.insert(k.clone(), v.clone());
                }
            }
            StepKind::Expose(ports) => {
                let map = rc.exposed_ports.get_or_insert_with(BTreeMap::new);
                for p in ports {
                    map.insert(p.clone(), BTreeMap::new());
                }
            }
            StepKind::Volume(vols) => {
                let map = rc.volumes.get_or_insert_with(BTreeMap::new);
                for v in vols {
                    map.insert(v.clone(), BTreeMap::new());
                }
            }
            StepKind::StopSignal(s) => rc.stop_signal = Some(s.clone()),
            StepKind::Healthcheck(h) => rc.healthcheck = Some(health(h.as_ref())),
            StepKind::Shell(argv) => rc.shell = Some(argv.clone()),
            StepKind::OnBuild(trigger) => rc.on_build.get_or_insert_with(Vec::new).push(trigger.clone()),
            StepKind::Maintainer(m) => self.config.author = Some(m.clone()),
            StepKind::Arg(_) => {}
            StepKind::Run { .. } | StepKind::Copy(_) | StepKind::Add(_) => return false,
        }
        true
    }
}

fn health(h: Option<&Healthcheck>) -> HealthConfig {
    match h {
        None => HealthConfig { test: Some(vec!["NONE".to_string()]), ..Default::default() },
        Some(h) => HealthConfig {
            test: Some(h.test.clone()),
            interval: h.interval,
            timeout: h.timeout,
            start_period: h.start_period,
            start_interval: h.start_interval,
            retries: h.retries,
        },
    }
}

pub fn set_env(env: &mut Vec<String>, k: &str, v: &str) {
    let entry = format!("{k}={v}");
    match env.iter_mut().find(|e| e.split_once('=').map(|(ek, _)| ek) == Some(k)) {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

/// Who a step runs as: uid, gid, supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// From the user's /etc/passwd entry, else `/` (as Docker sets HOME).
    pub home: String,
}

/// Resolve USER (`name`, `uid`, `name:group`, `uid:gid`) through the image's
/// /etc/passwd and /etc/group, as Docker does.
pub fn resolve_user(root: &Path, user: &str) -> Result<RunAs> {
    let user = if user.is_empty() { "0" } else { user };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_db(root, "/etc/passwd");
    let group = read_db(root, "/etc/group");
    let home_of = |f: &Vec<String>| f.get(5).filter(|h| !h.is_empty()).cloned();
    let (uid, primary_gid, name, home) = if let Ok(n) = u.parse::<u32>() {
        let entry = passwd.iter().find(|f| f.get(2).and_then(|x| x.parse::<u32>().ok()) == Some(n));
        (n, entry.and_then(|f| f.get(3)?.parse().ok()).unwrap_or(0), entry.map(|f| f[0].clone()), entry.and_then(home_of))
    } else {
        let f = passwd
            .iter()
            .find(|f| f.first().map(String::as_str) == Some(u))
            .with_context(|| format!("unable to find user {u}: no matching entries in the image's /etc/passwd"))?;
        let uid = f.get(2).and_then(|x| x.parse().ok()).context("malformed /etc/passwd entry")?;
        let gid = f.get(3).and_then(|x| x.parse().ok()).context("malformed /etc/passwd entry")?;
        (uid, gid, Some(u.to_string()), home_of(f))
    };
    let home = home.unwrap_or_else(|| "/".to_string());
    let gid = match g {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .iter()
                .find(|f| f.first().map(String::as_str) == Some(g))
                .and_then(|f| f.get(2)?.parse().ok())
                .with_context(|| format!("unable to find group {g}: no matching entries in the image's /etc/group"))?,
        },
    };
    // The process's groups are its gid, then (only when the group was not given
    // explicitly) the image's groups that list the user: `id` as root prints
    // `groups=0(root),10(wheel)` under BuildKit (containerd's WithUser adds the
    // primary gid to the additional gids).
    let mut groups = vec![gid];
    if let (None, Some(name)) = (g, name) {
        for f in &group {
            let members = f.get(3).map(|m| m.split(',').any(|x| x == name)).unwrap_or(false);
            if let (true, Some(id)) = (members, f.get(2).and_then(|x| x.parse::<u32>().ok())) {
                if id != gid && !groups.contains(&id) {
                    groups.push(id);
                }
            }
        }
    }
    Ok(RunAs { uid, gid, groups, home })
}

fn read_db(root: &Path, path: &str) -> Vec<Vec<String>> {
    let host = match crate::fsutil::resolve_in_root(root, Path::new(path), true) {
        Ok(p) => p,
        Err(_) => return Vec::new(),
    };
    std::fs::read_to_string(host)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

/// Parse `--chown` (`user[:group]`) for COPY.
pub fn resolve_chown(root: &Path, spec: &str) -> Result<crate::image::Owner> {
    if spec.is_empty() {
        bail!("--chown needs user[:group]");
    }
    let r = resolve_user(root, spec)?;
    Ok(crate::image::Owner { uid: r.uid, gid: r.gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_replaces_in_place() {
        let mut env = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        set_env(&mut env, "A", "2");
        set_env(&mut env, "B", "x=y");
        assert_eq!(env, ["PATH=/bin", "A=2", "B=x=y"]);
    }

    #[test]
    fn the_env_index_agrees_with_the_list_scan() {
        // Base env with a duplicate and an entry without '=', then ENV steps that
        // replace, add, and meet a list changed behind the index's back.
        let base = vec!["PATH=/bin".to_string(), "A=1".into(), "A=dup".into(), "BARE".into()];
        let mut by_scan = base.clone();
        let mut by_index = base;
        let mut idx = EnvIndex::default();
        for (k, v) in [("A", "2"), ("BARE", "now"), ("C", "3"), ("PATH", "/usr/bin"), ("C", "4"), ("D", "x=y")] {
            set_env(&mut by_scan, k, v);
            idx.set(&mut by_index, k, v);
            assert_eq!(by_index, by_scan, "after {k}={v}");
        }
        by_index.swap(0, 1);
        by_scan.swap(0, 1);
        idx.set(&mut by_index, "A", "5");
        set_env(&mut by_scan, "A", "5");
        assert_eq!(by_index, by_scan);
    }

    #[test]
    fn resolves_users_through_the_image() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n").unwrap();
        std::fs::write(t.path().join("etc/group"), "root:x:0:\napp:x:1000:\nwheel:x:10:app\n").unwrap();
        let r = |uid, gid, groups: Vec<u32>, home: &str| RunAs { uid, gid, groups, home: home.to_string() };
        assert_eq!(resolve_user(t.path(), "").unwrap(), r(0, 0, vec![0], "/root"));
        assert_eq!(resolve_user(t.path(), "app").unwrap(), r(1000, 1000, vec![1000, 10], "/home/app"));
        assert_eq!(resolve_user(t.path(), "app:wheel").unwrap(), r(1000, 10, vec![10], "/home/app"));
        assert_eq!(resolve_user(t.path(), "1234:5").unwrap(), r(1234, 5, vec![5], "/"));
        assert_eq!(resolve_user(t.path(), "1234").unwrap(), r(1234, 0, vec![0], "/"));
        assert!(resolve_user(t.path(), "nobody").unwrap_err().to_string().contains("unable to find user nobody"));
    }

    #[test]
    fn entrypoint_resets_inherited_cmd_only() {
        let mut s = ImageState::new(ImageConfig::default(), vec![]);
        s.config.run_config_mut().cmd = Some(vec!["sh".into()]);
        s.apply_config_step(&StepKind::Entrypoint(vec!["/e".into()]));
        assert_eq!(s.config.config.as_ref().unwrap().cmd, None);
        s.apply_config_step(&StepKind::Cmd(vec!["c".into()]));
        s.apply_config_step(&StepKind::Entrypoint(vec!["/f".into()]));
        assert_eq!(s.config.config.as_ref().unwrap().cmd, Some(vec!["c".to_string()]));
    }
}

/// Ownership applied to everything a COPY writes (`None` in a request: keep the
/// source's, as for `COPY --from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}
