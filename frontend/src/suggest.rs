//! "Did you mean ...?" hints for misspelt names (instructions, flags, mount keys and
//! values, stage names), chosen the way BuildKit's `util/suggest` chooses them.
//!
//! A candidate qualifies when its Levenshtein distance (unit costs, counted in
//! characters) to the misspelt value is below 3; the closest wins, and among equally
//! close candidates the first in the list. An exact match means the value was not
//! misspelt (the error has another cause), so nothing is suggested then.

/// The option closest to `value`, if one is close enough to be a likely typo.
///
/// Case-insensitive search compares lower-cased text and returns the option in the
/// case style of `value` (all lower, all upper, else as the option is written), so
/// `COPPY` suggests `COPY` and `coppy` suggests `copy`.
pub fn search<'a, I>(value: &str, options: I, case_sensitive: bool) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    let fold = |s: &str| if case_sensitive { s.to_string() } else { s.to_lowercase() };
    let val = fold(value);
    let mut best: Option<&str> = None;
    // BuildKit starts from 3 (as HCL does): only distances 0..=2 can win.
    let mut min_dist = 3;
    for opt in options {
        let o = fold(opt);
        if o == val {
            return None;
        }
        let d = distance(&val, &o);
        if d < min_dist {
            min_dist = d;
            best = Some(opt);
        }
    }
    let best = best?;
    if case_sensitive {
        return Some(best.to_string());
    }
    // BuildKit lower-cases the option it compared, so mixed case gets it lower-cased.
    let all_upper = value != value.to_lowercase() && value == value.to_uppercase();
    Some(if all_upper { best.to_uppercase() } else { best.to_lowercase() })
}

/// `message` with BuildKit's ` (did you mean X?)` appended when an option is close to
/// `value`.
pub fn with_suggestion<'a, I>(message: String, value: &str, options: I, case_sensitive: bool) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    format!("{message}{}", did_you_mean(search(value, options, case_sensitive).as_deref()))
}

/// ` (did you mean X?)`, or nothing without a suggestion.
pub fn did_you_mean(suggestion: Option<&str>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}

/// Levenshtein distance between two strings, counted in characters (insertion,
/// deletion and substitution each cost 1).
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // One row of the edit matrix at a time: row[j] = distance(a[..i], b[..j]).
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = diag + usize::from(ca != cb);
            diag = row[j + 1];
            row[j + 1] = sub.min(row[j] + 1).min(diag + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        let table: &[(&str, &str, usize)] = &[
            ("", "", 0),
            ("", "abc", 3),
            ("abc", "", 3),
            ("copy", "copy", 0),
            ("coppy", "copy", 1),
            ("chwn", "chown", 1),
            ("fntrypoint", "entrypoint", 1),
            ("kitten", "sitting", 3),
            ("flaw", "lawn", 2),
            ("ab", "ba", 2), // a transposition is two edits, not one
            ("typ", "type", 1),
            ("tmp", "tmpfs", 2),
            ("tmp", "ssh", 3),
            ("share", "shared", 1),
            ("bulid", "build", 2),
            ("héllo", "hello", 1), // characters, not bytes
        ];
        for (a, b, want) in table {
            assert_eq!(distance(a, b), *want, "distance({a:?}, {b:?})");
            assert_eq!(distance(b, a), *want, "distance({b:?}, {a:?})");
        }
    }

    #[test]
    fn searches() {
        let instructions = ["FROM", "RUN", "COPY", "ADD", "ENTRYPOINT", "CMD", "ONBUILD"];
        type Case<'a> = (&'a str, &'a [&'a str], bool, Option<&'a str>);
        let table: &[Case] = &[
            ("COPPY", &instructions, false, Some("COPY")),
            ("coppy", &instructions, false, Some("copy")),
            ("Coppy", &instructions, false, Some("copy")),
            ("FNTRYPOINT", &instructions, false, Some("ENTRYPOINT")),
            // an exact match is no typo, whatever comes before it
            ("copy", &instructions, false, None),
            ("COPY", &["COPPY", "COPY"], true, None),
            // distance 3 is too far
            ("FROBNICATE", &instructions, false, None),
            ("tmp", &["bind", "cache", "ssh", "secret", "tmpfs"], true, Some("tmpfs")),
            // case-sensitive: the case difference counts
            ("TMPFS", &["tmpfs"], true, None),
            ("typ", &["type", "from", "source"], true, Some("type")),
            ("share", &["shared", "private", "locked"], true, Some("shared")),
            ("bulid", &["build"], true, Some("build")),
            // the closest wins, and the first of equally close ones
            ("abcd", &["abxy", "abcx"], true, Some("abcx")),
            ("abcd", &["abcx", "abcy"], true, Some("abcx")),
            ("x", &[], true, None),
        ];
        for (value, options, cs, want) in table {
            assert_eq!(search(value, options.iter().copied(), *cs).as_deref(), *want, "search({value:?}, {options:?})");
        }
    }

    #[test]
    fn messages() {
        assert_eq!(
            with_suggestion("unknown flag: --chwn".into(), "chwn", ["from", "chown"], true),
            "unknown flag: --chwn (did you mean chown?)"
        );
        assert_eq!(
            with_suggestion("unknown flag: --zzz".into(), "zzz", ["from", "chown"], true),
            "unknown flag: --zzz"
        );
        assert_eq!(did_you_mean(None), "");
    }
}
