//! Running foreign-architecture RUN steps: which platforms can this machine execute,
//! and registering QEMU's user-mode emulators with the kernel.
//!
//! A foreign binary runs if the kernel has a binfmt_misc entry for its ELF machine
//! whose interpreter was opened at registration time (the `F` flag): then the
//! interpreter need not exist inside the step's rootfs or mount namespace.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kiln_frontend::Platform;


const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// QEMU's name for each architecture kiln knows.
fn qemu_name(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "arm64" => "aarch64",
        "arm" => "arm",
        "amd64" => "x86_64",
        "386" => "i386",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "mips64le" => "mips64el",
        "loong64" => "loongarch64",
        _ => return None,
    })
}

/// Architectures the host CPU runs without emulation.
fn native(host: &Platform, target: &Platform) -> bool {
    let h = host.architecture.as_str();
    let t = target.architecture.as_str();
    h == t || (h == "amd64" && t == "386") || (h == "arm64" && t == "arm")
}

/// One registered emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub enabled: bool,
    pub interpreter: String,
    pub fix_binary: bool,
}

/// Parse a binfmt_misc entry file (`enabled`, `interpreter …`, `flags: …`).
pub fn parse_entry(name: &str, text: &str) -> Entry {
    let mut e = Entry { name: name.to_string(), enabled: false, interpreter: String::new(), fix_binary: false };
    for line in text.lines() {
        if line == "enabled" {
            e.enabled = true;
        } else if let Some(i) = line.strip_prefix("interpreter ") {
            e.interpreter = i.to_string();
        } else if let Some(f) = line.strip_prefix("flags: ") {
            e.fix_binary = f.contains('F');
        }
    }
    e
}

/// Where a platform can run, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    Native,
    Emulated(Entry),
    Missing(String),
}

pub fn support_in(dir: &Path, host: &Platform, target: &Platform) -> Support {
    if target.os != "linux" {
        return Support::Missing(format!("{} is not a Linux platform; RUN steps need one", (target).to_string()));
    }
    if native(host, target) {
        return Support::Native;
    }
    let Some(q) = qemu_name(&target.architecture) else {
        return Support::Missing(format!("no known emulator for {}", (target).to_string()));
    };
    let name = format!("qemu-{q}");
    match std::fs::read_to_string(dir.join(&name)) {
        Ok(text) => {
            let e = parse_entry(&name, &text);
            if !e.enabled {
                Support::Missing(format!("binfmt_misc entry {name} is disabled"))
            } else if !e.fix_binary {
                Support::Missing(format!(
                    "binfmt_misc entry {name} lacks the F (fix-binary) flag, so its interpreter {} \
                     cannot be found inside the build's rootfs",
                    e.interpreter
                ))
            } else {
                Support::Emulated(e)
            }
        }
        Err(_) if !dir.join("register").exists() => Support::Missing(format!("binfmt_misc is not mounted at {}", dir.display())),
        Err(_) => Support::Missing(format!("no binfmt_misc entry {name} is registered")),
    }
}

pub fn support(target: &Platform) -> Support {
    support_in(Path::new(BINFMT_DIR), &Platform::host(), target)
}

/// Fail with the fix when RUN steps for `target` cannot execute here.
pub fn ensure_runnable(target: &Platform) -> Result<()> {
    match support(target) {
        Support::Native | Support::Emulated(_) => Ok(()),
        Support::Missing(why) => bail!(
            "cannot run RUN steps for platform {}: {why}.\n\
             Fix: install qemu-user-static and, as root, run `kiln binfmt --install {}` \
             (or build this platform on a native node and join the images with an index)",
            (target).to_string(),
            target.architecture
        ),
    }
}

/// `kiln binfmt`: list what this machine can run.
pub fn list() -> Result<()> {
    let host = Platform::host();
    println!("host: {}", (&host).to_string());
    for p in ["linux/amd64", "linux/386", "linux/arm64", "linux/arm/v7", "linux/ppc64le", "linux/s390x", "linux/riscv64"] {
        let target = Platform::parse(p)?;
        let line = match support(&target) {
            Support::Native => "native".to_string(),
            Support::Emulated(e) => format!("emulated ({} → {})", e.name, e.interpreter),
            Support::Missing(why) => format!("unavailable: {why}"),
        };
        println!("{p:<14} {line}");
    }
    Ok(())
}

/// The registration line for an architecture, from the qemu-user-static package's
/// binfmt.d file, with the F flag forced and the static interpreter preferred.
fn registration_line(arch: &str) -> Result<String> {
    let q = qemu_name(arch).with_context(|| format!("no known emulator for architecture {arch}"))?;
    let conf = PathBuf::from(format!("/usr/lib/binfmt.d/qemu-{q}.conf"));
    let text = std::fs::read_to_string(&conf)
        .with_context(|| format!("reading {} (is qemu-user-static installed?)", conf.display()))?;
    let line = text.lines().find(|l| l.starts_with(':')).with_context(|| format!("{} has no registration line", conf.display()))?;
    // :name:type:offset:magic:mask:interpreter:flags — magic/mask contain no ':'.
    let mut fields: Vec<String> = line.split(':').map(str::to_string).collect();
    if fields.len() != 8 {
        bail!("{}: unexpected registration format", conf.display());
    }
    if !Path::new(&fields[6]).exists() {
        let fallback = format!("/usr/bin/qemu-{q}-static");
        if Path::new(&fallback).exists() {
            fields[6] = fallback;
        } else {
            bail!("interpreter {} for {arch} is missing", fields[6]);
        }
    }
    if !fields[7].contains('F') {
        fields[7].push('F');
    }
    Ok(fields.join(":"))
}

/// `kiln binfmt --install [ARCH...]`: register emulators with the F flag (root only).
pub fn install(archs: &[String]) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("kiln binfmt --install must run as root (it registers interpreters with the kernel)");
    }
    let dir = Path::new(BINFMT_DIR);
    if !dir.join("register").exists() {
        use crate::exec::sys::Sys;
        crate::exec::sys::Linux
            .mount(Some(Path::new("binfmt_misc")), dir, Some("binfmt_misc"), nix::mount::MsFlags::empty(), None)
            .context("mounting binfmt_misc")?;
    }
    let host = Platform::host();
    let wanted: Vec<String> = if archs.is_empty() {
        ["arm64", "arm", "amd64", "386", "ppc64le", "s390x", "riscv64"].iter().map(|s| s.to_string()).collect()
    } else {
        archs.iter().map(|a| Platform::parse(a).map(|p| p.architecture).map_err(anyhow::Error::from)).collect::<Result<_>>()?
    };
    for arch in wanted {
        let target = Platform::parse(&arch)?;
        match support_in(dir, &host, &target) {
            Support::Native => println!("{arch}: native"),
            Support::Emulated(e) => println!("{arch}: already registered ({})", e.name),
            Support::Missing(_) => {
                let q = qemu_name(&arch).unwrap_or("?");
                let existing = dir.join(format!("qemu-{q}"));
                if existing.exists() {
                    // Registered without F: replace it.
                    std::fs::write(&existing, "-1").with_context(|| format!("removing {}", existing.display()))?;
                }
                let line = registration_line(&arch)?;
                std::fs::write(dir.join("register"), &line).with_context(|| format!("registering qemu-{q}"))?;
                println!("{arch}: registered qemu-{q}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn parses_entries() {
        let e = parse_entry("qemu-aarch64", "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: POF\noffset 0\n");
        assert_eq!(e, Entry { name: "qemu-aarch64".into(), enabled: true, interpreter: "/usr/bin/qemu-aarch64-static".into(), fix_binary: true });
        assert!(!parse_entry("x", "disabled\nflags: P\n").fix_binary);
    }

    #[test]
    fn decides_support() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let amd = p("linux/amd64");
        assert_eq!(support_in(d, &amd, &p("linux/386")), Support::Native);
        assert!(matches!(support_in(d, &amd, &p("linux/arm64")), Support::Missing(m) if m.contains("not mounted")));
        std::fs::write(d.join("register"), "").unwrap();
        assert!(matches!(support_in(d, &amd, &p("linux/arm64")), Support::Missing(m) if m.contains("no binfmt_misc entry qemu-aarch64")));
        std::fs::write(d.join("qemu-aarch64"), "enabled\ninterpreter /x\nflags: P\n").unwrap();
        assert!(matches!(support_in(d, &amd, &p("linux/arm64")), Support::Missing(m) if m.contains("F (fix-binary)")));
        std::fs::write(d.join("qemu-aarch64"), "enabled\ninterpreter /x\nflags: PF\n").unwrap();
        assert!(matches!(support_in(d, &amd, &p("linux/arm64")), Support::Emulated(_)));
        std::fs::write(d.join("qemu-s390x"), "disabled\ninterpreter /x\nflags: F\n").unwrap();
        assert!(matches!(support_in(d, &amd, &p("linux/s390x")), Support::Missing(m) if m.contains("disabled")));
    }
}
