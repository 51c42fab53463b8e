//! Shell-word variable expansion, as Docker applies it to instruction arguments.
//!
//! This is not a shell: there is no word splitting, globbing or command substitution.
//! One word goes in, one string comes out, with quotes removed, escapes resolved and
//! `$NAME`, `${NAME}` and the `${NAME<op>word}` forms replaced. Unset variables expand
//! to the empty string. Errors are plain messages; the caller attaches the location.
//!
//! Heredoc bodies use a "raw" mode where quotes are ordinary characters (BuildKit does
//! the same so that a COPY'd script keeps its quoting).

/// Looks a variable up in the current scope.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Expand one word (quotes removed).
pub fn expand_word(word: &str, escape: char, env: Lookup<'_>) -> Result<String, String> {
    let mut lx = Lexer { chars: word.chars().collect(), pos: 0, escape, env, raw: false, depth: 0 };
    let (s, _) = lx.process(&[])?;
    Ok(s)
}

/// Expand a heredoc body: variables only, quotes kept.
pub fn expand_raw(text: &str, escape: char, env: Lookup<'_>) -> Result<String, String> {
    let mut lx = Lexer { chars: text.chars().collect(), pos: 0, escape, env, raw: true, depth: 0 };
    let (s, _) = lx.process(&[])?;
    Ok(s)
}

/// Nesting limit for `${A:-${B:-...}}` so that hostile input cannot blow the stack.
const MAX_DEPTH: usize = 64;

/// Cap on an expanded word, so that `ENV A=$A$A` chains cannot exhaust memory.
const MAX_LEN: usize = 1 << 20;

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    env: Lookup<'a>,
    raw: bool,
    depth: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Process until one of `stops` (unquoted) is consumed or the input ends.
    /// Returns the text and the stop char that ended it (None = end of input).
    fn process(&mut self, stops: &[char]) -> Result<(String, Option<char>), String> {
        let mut out = String::new();
        while let Some(c) = self.next() {
            if stops.contains(&c) {
                return Ok((out, Some(c)));
            }
            match c {
                '\'' if !self.raw => loop {
                    match self.next() {
                        None => return Err("unexpected end of statement while looking for matching single-quote".into()),
                        Some('\'') => break,
                        Some(x) => out.push(x),
                    }
                },
                '"' if !self.raw => loop {
                    match self.next() {
                        None => return Err("unexpected end of statement while looking for matching double-quote".into()),
                        Some('"') => break,
                        Some('$') => {
                            out.push_str(&self.dollar()?);
                            if out.len() > MAX_LEN {
                                return Err(format!("expansion result is larger than {MAX_LEN} bytes"));
                            }
                        }
                        Some(x) if x == self.escape => match self.peek() {
                            None => {}
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.pos += 1;
                                out.push(n);
                            }
                            Some(_) => out.push(x),
                        },
                        Some(x) => out.push(x),
                    }
                },
                '$' => {
                    out.push_str(&self.dollar()?);
                    if out.len() > MAX_LEN {
                        return Err(format!("expansion result is larger than {MAX_LEN} bytes"));
                    }
                }
                x if x == self.escape => {
                    if self.raw {
                        match self.peek() {
                            Some(n) if n == '$' || n == self.escape => {
                                self.pos += 1;
                                out.push(n);
                            }
                            _ => out.push(x),
                        }
                    } else if let Some(n) = self.next() {
                        out.push(n);
                    }
                }
                x => out.push(x),
            }
        }
        Ok((out, None))
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        match self.peek() {
            Some(c) if c.is_ascii_digit() => {
                self.pos += 1;
                name.push(c);
            }
            _ => {
                while let Some(c) = self.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        name.push(c);
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
            }
        }
        name
    }

    fn lookup(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    /// After a `$`.
    fn dollar(&mut self) -> Result<String, String> {
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.lookup(&name).unwrap_or_default());
        }
        self.pos += 1;
        if self.depth >= MAX_DEPTH {
            return Err("substitution nested too deeply".into());
        }
        self.depth += 1;
        let r = self.brace();
        self.depth -= 1;
        r
    }

    /// After `${`.
    fn brace(&mut self) -> Result<String, String> {
        let name = self.name();
        if name.is_empty() {
            return Err(match self.peek() {
                None => "missing '}'".into(),
                Some(c) => format!("bad substitution: unexpected character {c:?} after ${{"),
            });
        }
        let value = self.lookup(&name);
        let Some(op) = self.next() else { return Err("missing '}'".into()) };
        match op {
            '}' => Ok(value.unwrap_or_default()),
            ':' => {
                let Some(op2) = self.next() else { return Err("missing '}'".into()) };
                if !matches!(op2, '-' | '+' | '?') {
                    return Err(format!("unsupported modifier ({op2}) in substitution"));
                }
                let word = self.brace_word()?;
                let set = value.as_deref().is_some_and(|v| !v.is_empty());
                match op2 {
                    '-' => Ok(if set { value.unwrap_or_default() } else { word }),
                    '+' => Ok(if set { word } else { String::new() }),
                    _ => {
                        if set {
                            Ok(value.unwrap_or_default())
                        } else if word.is_empty() {
                            Err(format!("{name}: is not allowed to be unset or empty"))
                        } else {
                            Err(format!("{name}: {word}"))
                        }
                    }
                }
            }
            '-' => {
                let word = self.brace_word()?;
                Ok(value.unwrap_or(word))
            }
            '+' => {
                let word = self.brace_word()?;
                Ok(if value.is_some() { word } else { String::new() })
            }
            '?' => {
                let word = self.brace_word()?;
                match value {
                    Some(v) => Ok(v),
                    None if word.is_empty() => Err(format!("{name}: is not allowed to be unset")),
                    None => Err(format!("{name}: {word}")),
                }
            }
            '#' | '%' => {
                let longest = self.peek() == Some(op);
                if longest {
                    self.pos += 1;
                }
                let mut pat = compile(&self.brace_word()?);
                let mut v: Vec<char> = value.unwrap_or_default().chars().collect();
                let n = v.len();
                if op == '%' {
                    // A suffix match is a prefix match of the reversed string.
                    pat.reverse();
                    v.reverse();
                }
                let ends = match_ends(&pat, &v);
                let k = if longest { ends.iter().rposition(|&b| b) } else { ends.iter().position(|&b| b) };
                if op == '%' {
                    v.reverse();
                }
                Ok(match k {
                    None => v.iter().collect(),
                    Some(k) if op == '#' => v[k..].iter().collect(),
                    Some(k) => v[..n - k].iter().collect(),
                })
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let (pat, stop) = self.process(&['/', '}'])?;
                let repl = match stop {
                    Some('/') => self.brace_word()?,
                    Some(_) => String::new(),
                    None => return Err("missing '}'".into()),
                };
                let pat = compile(&pat);
                let v: Vec<char> = value.unwrap_or_default().chars().collect();
                Ok(replace(&v, &pat, &repl, all))
            }
            c => Err(format!("unsupported modifier ({c}) in substitution")),
        }
    }

    /// The word of `${NAME<op>word}` up to the closing brace.
    fn brace_word(&mut self) -> Result<String, String> {
        match self.process(&['}'])? {
            (w, Some(_)) => Ok(w),
            (_, None) => Err("missing '}'".into()),
        }
    }
}

/// A compiled shell glob pattern.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Char(char),
    Any,
    Star,
    Class { ranges: Vec<(char, char)>, negate: bool },
}

fn compile(p: &str) -> Vec<Tok> {
    let c: Vec<char> = p.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '*' => out.push(Tok::Star),
            '?' => out.push(Tok::Any),
            '\\' if i + 1 < c.len() => {
                i += 1;
                out.push(Tok::Char(c[i]));
            }
            '[' => {
                // Find the closing bracket; an unclosed one is a literal '['.
                let mut j = i + 1;
                let negate = j < c.len() && (c[j] == '!' || c[j] == '^');
                if negate {
                    j += 1;
                }
                let start = j;
                let mut ranges = Vec::new();
                let mut closed = false;
                while j < c.len() {
                    if c[j] == ']' && j > start {
                        closed = true;
                        break;
                    }
                    if j + 2 < c.len() && c[j + 1] == '-' && c[j + 2] != ']' {
                        ranges.push((c[j], c[j + 2]));
                        j += 3;
                    } else {
                        ranges.push((c[j], c[j]));
                        j += 1;
                    }
                }
                if closed {
                    out.push(Tok::Class { ranges, negate });
                    i = j;
                } else {
                    out.push(Tok::Char('['));
                }
            }
            x => out.push(Tok::Char(x)),
        }
        i += 1;
    }
    out
}

/// For every k, does the pattern match `s[..k]`? One dynamic-programming pass, so no
/// exponential backtracking.
fn match_ends(p: &[Tok], s: &[char]) -> Vec<bool> {
    let m = s.len();
    // dp[j] = pattern prefix matches s[..j]
    let mut dp = vec![false; m + 1];
    dp[0] = true;
    for t in p {
        let mut nd = vec![false; m + 1];
        match t {
            Tok::Star => {
                let mut any = false;
                for j in 0..=m {
                    any |= dp[j];
                    nd[j] = any;
                }
            }
            _ => {
                for j in 1..=m {
                    if dp[j - 1] {
                        let c = s[j - 1];
                        nd[j] = match t {
                            Tok::Char(x) => *x == c,
                            Tok::Any => true,
                            Tok::Class { ranges, negate } => {
                                ranges.iter().any(|(a, b)| *a <= c && c <= *b) != *negate
                            }
                            Tok::Star => false,
                        };
                    }
                }
            }
        }
        dp = nd;
    }
    dp
}

/// `${V/p/r}` and `${V//p/r}`: leftmost, longest, non-empty matches.
fn replace(v: &[char], pat: &[Tok], repl: &str, all: bool) -> String {
    let mut out = String::new();
    let mut i = 0;
    let mut replaced = false;
    if pat.is_empty() {
        return v.iter().collect();
    }
    while i < v.len() {
        if !(replaced && !all) {
            let ends = match_ends(pat, &v[i..]);
            if let Some(len) = ends.iter().rposition(|&b| b).filter(|&l| l > 0) {
                out.push_str(repl);
                i += len;
                replaced = true;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(n: &str) -> Option<String> {
        match n {
            "A" => Some("hello".into()),
            "E" => Some(String::new()),
            "P" => Some("/usr/local/bin/tool.tar.gz".into()),
            "S" => Some("a b".into()),
            _ => None,
        }
    }

    #[test]
    fn expansion_table() {
        let cases: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("$A", "hello"),
            ("${A}", "hello"),
            ("x${A}y", "xhelloy"),
            ("$A-$A", "hello-hello"),
            ("$UNSET", ""),
            ("$", "$"),
            ("a$", "a$"),
            ("$1x", "x"),
            ("${UNSET:-def}", "def"),
            ("${E:-def}", "def"),
            ("${A:-def}", "hello"),
            ("${UNSET-def}", "def"),
            ("${E-def}", ""),
            ("${A:+alt}", "alt"),
            ("${E:+alt}", ""),
            ("${UNSET:+alt}", ""),
            ("${E+alt}", "alt"),
            ("${UNSET+alt}", ""),
            ("${A:?boom}", "hello"),
            ("${E?boom}", ""),
            ("${P#*/}", "usr/local/bin/tool.tar.gz"),
            ("${P##*/}", "tool.tar.gz"),
            ("${P%.*}", "/usr/local/bin/tool.tar"),
            ("${P%%.*}", "/usr/local/bin/tool"),
            ("${P#nomatch}", "/usr/local/bin/tool.tar.gz"),
            ("${A/l/L}", "heLlo"),
            ("${A//l/L}", "heLLo"),
            ("${A/l*/X}", "heX"),
            ("${A/[a-h]/_}", "_ello"),
            ("${A//[!l]/_}", "__ll_"),
            ("${A/l}", "helo"),
            ("${UNSET:-${A}}", "hello"),
            ("${UNSET:-\"a b\"}", "a b"),
            ("'$A'", "$A"),
            ("\"$A\"", "hello"),
            ("\"a\\\"b\"", "a\"b"),
            ("\"a\\b\"", "a\\b"),
            ("\\$A", "$A"),
            ("a\\ b", "a b"),
            ("$S", "a b"),
            ("${A}s", "hellos"),
            ("é$A", "éhello"),
        ];
        for (input, want) in cases {
            let got = expand_word(input, '\\', &env);
            assert_eq!(got.as_deref(), Ok(*want), "input {input:?}");
        }
    }

    #[test]
    fn expansion_errors() {
        let cases: &[(&str, &str)] = &[
            ("${UNSET:?boom}", "UNSET: boom"),
            ("${E:?}", "E: is not allowed to be unset or empty"),
            ("${UNSET?}", "UNSET: is not allowed to be unset"),
            ("${A", "missing '}'"),
            ("${A:-x", "missing '}'"),
            ("${}", "bad substitution: unexpected character '}' after ${"),
            ("${A:x}", "unsupported modifier (x) in substitution"),
            ("${A^}", "unsupported modifier (^) in substitution"),
            ("'abc", "unexpected end of statement while looking for matching single-quote"),
            ("\"abc", "unexpected end of statement while looking for matching double-quote"),
        ];
        for (input, want) in cases {
            assert_eq!(expand_word(input, '\\', &env), Err(want.to_string()), "input {input:?}");
        }
    }

    #[test]
    fn backtick_escape_and_raw() {
        assert_eq!(expand_word("C:\\dir `$A", '`', &env).unwrap(), "C:\\dir $A");
        assert_eq!(expand_raw("echo \"$A\" '${A}' \\$A \\n", '\\', &env).unwrap(), "echo \"hello\" 'hello' $A \\n");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let s = "${A:-".repeat(10_000);
        assert!(expand_word(&s, '\\', &env).is_err());
    }
}
