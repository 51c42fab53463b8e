//! Which `ADD` sources are git repositories: BuildKit's rule (`util/gitutil`
//! `ParseGitRef`), so that only a remote repository is ever cloned.
//!
//! A git ref is `git://…`, `ssh://…`, `user@host:path` (scp form), or an
//! `http(s)://` URL whose path ends in `.git` (before any `#fragment`). Everything
//! else — `/abs/repo.git`, `repo.git`, `./x.git`, `file://…` — is not a git ref: an
//! ADD of it is a path in the context like any other, confined to the context.

/// Whether `s` names a remote git repository (with an optional `#ref:subdir`).
pub fn is_remote_git(s: &str) -> bool {
    if s.starts_with("./") || s.starts_with("../") {
        return false;
    }
    let remote = s.split('#').next().unwrap_or("");
    if let Some((scheme, rest)) = remote.split_once("://") {
        let host = rest.split('/').next().unwrap_or("");
        return !host.is_empty()
            && match scheme {
                "git" | "ssh" => true,
                "http" | "https" => url_path(rest).ends_with(".git"),
                _ => false,
            };
    }
    is_scp_like(remote)
}

/// The path of `host/path?query`, without the query.
fn url_path(rest: &str) -> &str {
    let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
    path.split('?').next().unwrap_or(path)
}

/// `user@host:path`: a user and a host of URL-safe characters, no slash before
/// the colon (`a/b@c:d` is a path).
fn is_scp_like(s: &str) -> bool {
    let Some((user_host, path)) = s.split_once(':') else { return false };
    let Some((user, host)) = user_host.split_once('@') else { return false };
    let word = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    word(user) && word(host) && !path.is_empty()
}

#[cfg(test)]
mod tests {
    use super::is_remote_git;

    #[test]
    fn only_remote_repositories_are_git_refs() {
        // Cases of BuildKit's util/gitutil git_ref_test.go, and the local forms
        // that must stay context paths.
        for (s, want) in [
            ("git://github.com/moby/buildkit", true),
            ("git://github.com/moby/buildkit.git#v1.0:sub", true),
            ("https://github.com/moby/buildkit.git", true),
            ("https://github.com/moby/buildkit.git#main", true),
            ("http://github.com/moby/buildkit.git?x=1", true),
            ("https://github.com/moby/buildkit", false),
            ("https://example.com/file.tar.gz", false),
            ("git@github.com:moby/buildkit.git", true),
            ("git@github.com:moby/buildkit", true),
            ("ssh://git@github.com/moby/buildkit.git", true),
            ("user@host:repo#ref", true),
            ("/abs/repo.git", false),
            ("repo.git", false),
            ("./repo.git", false),
            ("../repo.git", false),
            ("sub/.git", false),
            (".git", false),
            ("file:///abs/repo.git", false),
            ("file://localhost/abs/repo.git", false),
            ("ext::sh -c touch% /tmp/pwned", false),
            ("a/b@c:d", false),
            ("git://", false),
        ] {
            assert_eq!(is_remote_git(s), want, "{s}");
        }
    }
}
