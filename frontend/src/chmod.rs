//! `COPY --chmod` / `ADD --chmod`: octal (`0755`) or symbolic (`u+x,g-w,o=r`,
//! `a+X`) modes, as chmod(1) reads them. Parsed at lowering, so that a bad value is
//! an error at its Dockerfile line; applied by the builder to each copied file.
//! Symbolic modes apply to each file's own mode; `X` adds execute only to
//! directories and to files already executable by someone.

use serde::{Serialize, Serializer};

/// A `--chmod` value as written (after expansion) and what it means. The text is
/// kept for the history (`created_by`) and is what the cache material records: the
/// mode is a function of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chmod {
    pub text: String,
    pub mode: ModeSpec,
}

impl Chmod {
    pub fn parse(text: &str) -> Result<Chmod, String> {
        Ok(Chmod { text: text.to_string(), mode: ModeSpec::parse(text)? })
    }
}

impl Serialize for Chmod {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModeSpec {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

/// One comma-separated part of a symbolic mode: `who op perms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    who: u32, // mask of the affected bits: 0o4700 user, 0o2070 group, 0o1007 other
    op: char,
    perms: String,
}

impl ModeSpec {
    pub fn parse(s: &str) -> Result<ModeSpec, String> {
        // A value that starts like a number is an octal mode or BuildKit's error
        // (dockerfile2llb convert_copy.go), never a symbolic one.
        if s.starts_with(|c: char| c.is_ascii_digit()) {
            return match u32::from_str_radix(s, 8) {
                Ok(m) if m <= 0o7777 => Ok(ModeSpec::Octal(m)),
                _ => Err(format!("invalid chmod parameter: '{s}'. it should be octal string and between 0 and 07777")),
            };
        }
        let mut clauses = Vec::new();
        for part in s.split(',') {
            let op_at = part.find(['+', '-', '=']).ok_or_else(|| format!("--chmod={s}: {part:?} has no +, - or ="))?;
            let (who_s, rest) = part.split_at(op_at);
            let mut who = 0;
            for c in who_s.chars() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => return Err(format!("--chmod={s}: unknown class {c:?} (u, g, o, a)")),
                };
            }
            if who == 0 {
                who = 0o7777;
            }
            let mut rest = rest.chars();
            let Some(op) = rest.next() else { unreachable!("split at an operator") };
            let perms: String = rest.collect();
            if let Some(bad) = perms.chars().find(|c| !"rwxXst".contains(*c)) {
                return Err(format!("--chmod={s}: unknown permission {bad:?} (r, w, x, X, s, t)"));
            }
            clauses.push(Clause { who, op, perms });
        }
        Ok(ModeSpec::Symbolic(clauses))
    }

    /// The new permission bits of a file whose current mode is `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            ModeSpec::Octal(m) => *m,
            ModeSpec::Symbolic(clauses) => {
                let mut m = mode & 0o7777;
                for c in clauses {
                    let mut bits = 0;
                    for p in c.perms.chars() {
                        bits |= match p {
                            'r' => 0o444,
                            'w' => 0o222,
                            'x' => 0o111,
                            'X' if is_dir || m & 0o111 != 0 => 0o111,
                            'X' => 0,
                            's' => 0o6000,
                            't' => 0o1000,
                            _ => 0,
                        };
                    }
                    let bits = bits & c.who;
                    m = match c.op {
                        '+' => m | bits,
                        '-' => m & !bits,
                        _ => (m & !(c.who & 0o7777)) | bits,
                    };
                }
                m
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_symbolic() {
        let t = |s: &str, mode: u32, dir: bool| ModeSpec::parse(s).unwrap().apply(mode, dir);
        assert_eq!(t("0755", 0o600, false), 0o755);
        assert_eq!(t("644", 0o777, false), 0o644);
        assert_eq!(t("u+x", 0o644, false), 0o744);
        assert_eq!(t("g-w,o=r", 0o666, false), 0o644);
        assert_eq!(t("a+X", 0o644, false), 0o644);
        assert_eq!(t("a+X", 0o644, true), 0o755);
        assert_eq!(t("a+X", 0o744, false), 0o755);
        assert_eq!(t("+x", 0o600, false), 0o711);
        assert_eq!(t("u=rwx,go=", 0o644, false), 0o700);
        assert_eq!(t("u+s", 0o755, false), 0o4755);
    }

    #[test]
    fn errors() {
        let octal =
            |s: &str| format!("invalid chmod parameter: '{s}'. it should be octal string and between 0 and 07777");
        let table: &[(&str, String)] = &[
            ("99999", octal("99999")),
            ("0778", octal("0778")),
            ("17777", octal("17777")),
            ("", "--chmod=: \"\" has no +, - or =".into()),
            ("z+x", "--chmod=z+x: unknown class 'z' (u, g, o, a)".into()),
            ("u*x", "--chmod=u*x: \"u*x\" has no +, - or =".into()),
            ("u+q", "--chmod=u+q: unknown permission 'q' (r, w, x, X, s, t)".into()),
            ("u+x,", "--chmod=u+x,: \"\" has no +, - or =".into()),
        ];
        for (s, want) in table {
            assert_eq!(ModeSpec::parse(s).unwrap_err(), *want, "{s}");
        }
    }

    #[test]
    fn chmod_keeps_its_text() {
        let c = Chmod::parse("0640").unwrap();
        assert_eq!(c.mode, ModeSpec::Octal(0o640));
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"0640\"");
    }
}
