//! Planning the uid/gid maps of the build's user namespace.
//!
//! Pure logic (no syscalls) so it is unit-tested without root: given who we are and
//! the contents of /etc/subuid and /etc/subgid, decide what to hand to
//! newuidmap/newgidmap, or fall back to a single-id map.

/// One line of a uid_map/gid_map: `inside outside count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapPlan {
    /// Root maps to us, 1.. maps to our subordinate range, written by the setuid
    /// helpers `newuidmap`/`newgidmap`.
    Subordinate { uids: Vec<IdRange>, gids: Vec<IdRange> },
    /// Only root inside maps to us: no helper needed, but files owned by other ids
    /// cannot be created (chown fails), so images with such files will not build.
    SingleId { uid: u32, gid: u32 },
}

/// Parse /etc/subuid-style text and return the ranges granted to `name` or `id`.
pub fn subordinate_ranges(text: &str, name: &str, id: u32) -> Vec<(u32, u32)> {
    let id_str = id.to_string();
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let mut parts = line.split(':');
            let who = parts.next()?;
            let start: u32 = parts.next()?.trim().parse().ok()?;
            let count: u32 = parts.next()?.trim().parse().ok()?;
            (who == name || who == id_str).then_some((start, count)).filter(|_| count > 0)
        })
        .collect()
}

fn ranges_for(own: u32, subs: &[(u32, u32)]) -> Vec<IdRange> {
    let mut out = vec![IdRange { inside: 0, outside: own, count: 1 }];
    let mut next_inside = 1u32;
    for &(start, count) in subs {
        out.push(IdRange { inside: next_inside, outside: start, count });
        next_inside = next_inside.saturating_add(count);
    }
    out
}

pub fn plan(
    uid: u32,
    gid: u32,
    user_name: &str,
    subuid_text: Option<&str>,
    subgid_text: Option<&str>,
    helpers_present: bool,
) -> MapPlan {
    let subuids = subuid_text.map(|t| subordinate_ranges(t, user_name, uid)).unwrap_or_default();
    let subgids = subgid_text.map(|t| subordinate_ranges(t, user_name, gid)).unwrap_or_default();
    if helpers_present && !subuids.is_empty() && !subgids.is_empty() {
        MapPlan::Subordinate { uids: ranges_for(uid, &subuids), gids: ranges_for(gid, &subgids) }
    } else {
        MapPlan::SingleId { uid, gid }
    }
}

/// Arguments for newuidmap/newgidmap after the pid: `inside outside count ...`.
pub fn helper_args(ranges: &[IdRange]) -> Vec<String> {
    ranges
        .iter()
        .flat_map(|r| [r.inside.to_string(), r.outside.to_string(), r.count.to_string()])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBUID: &str = "# comment\nalice:100000:65536\nbob:165536:65536\n1000:300000:10\n";

    #[test]
    fn finds_ranges_by_name_and_uid() {
        assert_eq!(subordinate_ranges(SUBUID, "alice", 1001), vec![(100000, 65536)]);
        assert_eq!(subordinate_ranges(SUBUID, "carol", 1000), vec![(300000, 10)]);
        assert_eq!(subordinate_ranges(SUBUID, "dave", 7), vec![]);
        assert_eq!(subordinate_ranges("bad\nalice:x:1\nalice:5:0\n", "alice", 1), vec![]);
    }

    #[test]
    fn plans_subordinate_map() {
        let p = plan(1001, 1001, "alice", Some(SUBUID), Some(SUBUID), true);
        let expect = vec![
            IdRange { inside: 0, outside: 1001, count: 1 },
            IdRange { inside: 1, outside: 100000, count: 65536 },
        ];
        assert_eq!(p, MapPlan::Subordinate { uids: expect.clone(), gids: expect.clone() });
        assert_eq!(helper_args(&expect), ["0", "1001", "1", "1", "100000", "65536"]);
    }

    #[test]
    fn falls_back_to_single_id() {
        assert_eq!(plan(5, 6, "x", Some(SUBUID), Some(SUBUID), true), MapPlan::SingleId { uid: 5, gid: 6 });
        assert_eq!(plan(1001, 1001, "alice", Some(SUBUID), Some(SUBUID), false), MapPlan::SingleId { uid: 1001, gid: 1001 });
        assert_eq!(plan(1001, 1001, "alice", Some(SUBUID), None, true), MapPlan::SingleId { uid: 1001, gid: 1001 });
    }
}
