//! A tar entry's metadata (owner, mode, mtime, xattrs; PAX records over header
//! fields) and putting it on the node made for the entry. Shared by the main
//! unpacking thread (`apply`) and the file-creating workers (`unpack_pool`).

use std::io::{self, Read};
use std::os::fd::BorrowedFd;

use crate::error::{io_err, unsafe_err, ApplyError};
use crate::sys::{self, cstr, errno};
use crate::xattr;

/// Metadata of one entry, with PAX records taking precedence over header fields.
pub(crate) struct Meta {
    uid: u64,
    gid: u64,
    pub(crate) mode: u32,
    pub(crate) mtime: (i64, u32),
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Parse a PAX time (`1700000000.5`, possibly negative) into (seconds, nanoseconds).
fn parse_pax_time(v: &str) -> Option<(i64, u32)> {
    let (int, frac) = match v.split_once('.') {
        Some((i, f)) => (i, f),
        None => (v, ""),
    };
    let secs: i64 = int.parse().ok()?;
    let mut nanos: u32 = 0;
    let digits: String = frac.chars().take(9).collect();
    if !digits.is_empty() {
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        nanos = format!("{digits:0<9}").parse().ok()?;
    }
    if secs < 0 && nanos > 0 {
        // -1.5 means 1.5 s before the epoch: (-2 s, +0.5 s).
        return Some((secs - 1, 1_000_000_000 - nanos));
    }
    Some((secs, nanos))
}

/// An entry's metadata from its header and PAX records.
pub(crate) fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, path: &str) -> Result<Meta, ApplyError> {
    let h = entry.header();
    let bad = |what: &str| unsafe_err(path, format!("malformed {what} field in tar header"));
    let mut m = Meta {
        uid: h.uid().map_err(|_| bad("uid"))?,
        gid: h.gid().map_err(|_| bad("gid"))?,
        mode: h.mode().map_err(|_| bad("mode"))? & 0o7777,
        mtime: (h.mtime().map_err(|_| bad("mtime"))? as i64, 0),
        xattrs: Vec::new(),
    };
    if let Some(pax) = entry.pax_extensions().map_err(ApplyError::Read)? {
        for rec in pax {
            let rec = rec.map_err(ApplyError::Read)?;
            let Ok(key) = rec.key() else { continue };
            let val = rec.value_bytes();
            let num = || std::str::from_utf8(val).ok().and_then(|s| s.parse::<u64>().ok());
            match key {
                "uid" => m.uid = num().ok_or_else(|| bad("PAX uid"))?,
                "gid" => m.gid = num().ok_or_else(|| bad("PAX gid"))?,
                "mtime" => {
                    m.mtime = std::str::from_utf8(val).ok().and_then(parse_pax_time).ok_or_else(|| bad("PAX mtime"))?
                }
                k => {
                    if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                        m.xattrs.push((name.to_string(), val.to_vec()));
                    }
                }
            }
        }
    }
    Ok(m)
}

pub(crate) fn ids(meta: &Meta, path: &str) -> Result<(u32, u32), ApplyError> {
    let uid = u32::try_from(meta.uid).ok().filter(|&u| u != u32::MAX);
    let gid = u32::try_from(meta.gid).ok().filter(|&g| g != u32::MAX);
    match (uid, gid) {
        (Some(u), Some(g)) => Ok((u, g)),
        _ => Err(unsafe_err(path, format!("uid/gid {}:{} out of range", meta.uid, meta.gid))),
    }
}

/// `Ok(true)`: the owner has no mapping in our user namespace (EINVAL, e.g. a uid
/// beyond a 65536-id range). The node then stays owned by the namespace's root, so
/// it must not keep any privilege that came with its real owner (see
/// [`set_owner_mode`], [`set_xattrs`]).
pub(crate) fn chown_failed(e: io::Error, meta: &Meta, path: &str, notes: &mut Vec<String>) -> Result<bool, ApplyError> {
    if errno(&e) == libc::EINVAL {
        notes.push(format!("{path}: owner {}:{} not mapped in the user namespace: {e}", meta.uid, meta.gid));
        return Ok(true);
    }
    Err(io_err(path, "chown")(e))
}

/// Owner and mode, changed only where they differ from what the node has: a node
/// created by us already has our ids (usually the tar's 0:0) and, through the
/// create mode, usually the right permission bits. fstat costs far less than a
/// chown or chmod, each of which dirties the inode.
pub(crate) fn set_owner_mode(fd: BorrowedFd<'_>, meta: &Meta, path: &str, notes: &mut Vec<String>) -> Result<(), ApplyError> {
    let (uid, gid) = ids(meta, path)?;
    let mut want = meta.mode & 0o7777;
    let st = sys::fstat(fd).map_err(io_err(path, "stat"))?;
    let mut have = st.st_mode & 0o7777;
    if (st.st_uid, st.st_gid) != (uid, gid) {
        if let Err(e) = sys::fchown(fd, uid, gid) {
            // An owner that cannot be kept must not become a setuid/setgid root file.
            if chown_failed(e, meta, path, notes)? && want & 0o6000 != 0 {
                notes.push(format!("{path}: setuid/setgid dropped: its owner {}:{} cannot be kept in this user namespace, and the file would run as root", meta.uid, meta.gid));
                want &= !0o6000;
            }
        }
        // chown clears setuid/setgid: set the mode again.
        have = u32::MAX;
    }
    if have != want {
        sys::fchmod(fd, want).map_err(io_err(path, "chmod"))?;
    }
    Ok(())
}

/// The entry's xattrs on `fd`; file capabilities only where the owner was kept (a
/// capability on a file of an unmappable owner would be granted to root's file).
pub(crate) fn set_xattrs(fd: BorrowedFd<'_>, meta: &Meta, path: &str, notes: &mut Vec<String>) -> Result<(), ApplyError> {
    let owner_kept = match (ids(meta, path), sys::fstat(fd)) {
        (Ok(want), Ok(st)) => want == (st.st_uid, st.st_gid),
        _ => true,
    };
    let caps: &[u8] = b"security.capability";
    if !owner_kept && meta.xattrs.iter().any(|(n, _)| n.as_bytes() == caps) {
        notes.push(format!("{path}: file capabilities dropped: its owner {}:{} cannot be kept in this user namespace", meta.uid, meta.gid));
    }
    set_xattrs_with(meta, path, notes, |c, v| if !owner_kept && c.to_bytes() == caps { Ok(()) } else { xattr::fset(fd, c, v) })
}

/// The entry's xattrs through `set` (by fd, or by path for nodes that cannot be
/// opened), minus overlay's own, with failures judged by `xattr_result`.
pub(crate) fn set_xattrs_with(
    meta: &Meta,
    path: &str,
    notes: &mut Vec<String>,
    mut set: impl FnMut(&std::ffi::CStr, &[u8]) -> io::Result<()>,
) -> Result<(), ApplyError> {
    for (name, value) in &meta.xattrs {
        if xattr::is_overlay_private(name) {
            notes.push(format!("{path}: overlay-private xattr {name} not applied"));
            continue;
        }
        let c = cstr(name.as_bytes()).map_err(io_err(path, "xattr name"))?;
        xattr_result(set(&c, value), name, path, notes)?;
    }
    Ok(())
}

fn xattr_result(r: io::Result<()>, name: &str, path: &str, notes: &mut Vec<String>) -> Result<(), ApplyError> {
    match r {
        Ok(()) => Ok(()),
        // trusted.* needs CAP_SYS_ADMIN in the initial namespace: expected to fail
        // rootless, and meaningless inside a container anyway.
        Err(e) if name.starts_with("trusted.") && matches!(errno(&e), libc::EPERM | libc::ENOTSUP) => Ok(()),
        // File capabilities are what makes e.g. ping work: never drop them quietly.
        Err(e) if name == "security.capability" => Err(io_err(path, "set security.capability")(e)),
        Err(e) if matches!(errno(&e), libc::EPERM | libc::ENOTSUP) => {
            notes.push(format!("{path}: xattr {name} not set: {e}"));
            Ok(())
        }
        Err(e) => Err(io_err(path, "set xattr")(e)),
    }
}

/// A new regular file's metadata once its data is written. Order matters: chown
/// clears setuid/setgid and security.capability, so chown, then chmod, then
/// xattrs; the mtime last.
pub(crate) fn finish_file(fd: BorrowedFd<'_>, meta: &Meta, path: &str, notes: &mut Vec<String>) -> Result<(), ApplyError> {
    set_owner_mode(fd, meta, path, notes)?;
    set_xattrs(fd, meta, path, notes)?;
    sys::futimens(fd, meta.mtime.0, meta.mtime.1).map_err(io_err(path, "set mtime"))
}

#[cfg(test)]
mod tests {
    use super::parse_pax_time;

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time("1700000000"), Some((1700000000, 0)));
        assert_eq!(parse_pax_time("1700000000.5"), Some((1700000000, 500_000_000)));
        assert_eq!(parse_pax_time("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time("x"), None);
    }
}
