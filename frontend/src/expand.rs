//! Shell-word variable expansion, as Docker applies it to instruction arguments.
//!
//! This is not a shell: there is no word splitting, globbing or command substitution.
//! One word goes in, one string comes out, with quotes removed, escapes resolved and
//! `$NAME`, `${NAME}` and the `${NAME<op>word}` forms replaced. Unset variables expand
//! to the empty string. Errors are plain messages; the caller attaches the location.
//! The rules follow BuildKit's `shell.Lex` (read for semantics, not translated):
//! patterns of `#`, `%` and `/` keep their escapes and know only `*` and `?`; `[` is an
//! ordinary character; `${V/p}` without the second `/` is a syntax error.
//!
//! Heredoc bodies of COPY/ADD use a mode where quotes are ordinary characters, so that
//! a copied script keeps its quoting; escapes are still processed there (BuildKit does
//! the same: `\$HOME` stays literal, and a lone backslash is dropped).

/// Looks a variable up in the current scope.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Expand one word (quotes removed).
pub fn expand_word(word: &str, escape: char, env: Lookup<'_>) -> Result<String, String> {
    let mut lx = Lexer::new(word, escape, env);
    let (s, _) = lx.process(&[], false)?;
    Ok(s)
}

/// Expand a heredoc body: variables and escapes, quotes kept as they are.
pub fn expand_raw(text: &str, escape: char, env: Lookup<'_>) -> Result<String, String> {
    let mut lx = Lexer { skip_quotes: true, ..Lexer::new(text, escape, env) };
    let (s, _) = lx.process(&[], false)?;
    Ok(s)
}

/// A step's name as BuildKit shows it (dockerfile2llb `processCmdEnv` with
/// `RawQuotes` and `SkipUnsetEnv`): variables that are set expanded, quotes kept
/// (still quoting), unset variables kept as written; the text as it is when it
/// does not parse.
pub fn expand_display(text: &str, escape: char, env: Lookup<'_>) -> String {
    let mut lx = Lexer { raw_quotes: true, keep_unset: true, ..Lexer::new(text, escape, env) };
    lx.process(&[], false).map(|(s, _)| s).unwrap_or_else(|_| text.to_string())
}

/// Nesting limit for `${A:-${B:-...}}` so that hostile input cannot blow the stack.
const MAX_DEPTH: usize = 64;

/// Cap on an expanded word, so that `ENV A=$A$A` chains cannot exhaust memory.
const MAX_LEN: usize = 1 << 20;

const MISSING_BRACE: &str = "syntax error: missing '}'";

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    env: Lookup<'a>,
    /// Quotes are ordinary characters (heredoc bodies).
    skip_quotes: bool,
    /// Quotes quote and are kept in the output (step names).
    raw_quotes: bool,
    /// An unset variable stays as written (step names).
    keep_unset: bool,
    depth: usize,
}

impl<'a> Lexer<'a> {
    fn new(text: &str, escape: char, env: Lookup<'a>) -> Self {
        Lexer {
            chars: text.chars().collect(),
            pos: 0,
            escape,
            env,
            skip_quotes: false,
            raw_quotes: false,
            keep_unset: false,
            depth: 0,
        }
    }

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

    fn push_expansion(&mut self, out: &mut String) -> Result<(), String> {
        let v = self.dollar()?;
        out.push_str(&v);
        if out.len() > MAX_LEN {
            return Err(format!("expansion result is larger than {MAX_LEN} bytes"));
        }
        Ok(())
    }

    /// Process until one of `stops` (outside quotes) is consumed or the input ends.
    /// Returns the text and the stop char that ended it (None = end of input). With
    /// `raw_escapes` the escape char is kept in the output (for patterns).
    fn process(&mut self, stops: &[char], raw_escapes: bool) -> Result<(String, Option<char>), String> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if stops.contains(&c) {
                self.pos += 1;
                return Ok((out, Some(c)));
            }
            match c {
                '$' => self.push_expansion(&mut out)?,
                '\'' if !self.skip_quotes => {
                    self.pos += 1;
                    if self.raw_quotes {
                        out.push('\'');
                    }
                    loop {
                        match self.next() {
                            None => {
                                return Err("unexpected end of statement while looking for matching single-quote".into())
                            }
                            Some('\'') => {
                                if self.raw_quotes {
                                    out.push('\'');
                                }
                                break;
                            }
                            Some(x) => out.push(x),
                        }
                    }
                }
                '"' if !self.skip_quotes => {
                    self.pos += 1;
                    if self.raw_quotes {
                        out.push('"');
                    }
                    loop {
                        match self.peek() {
                            None => {
                                return Err("unexpected end of statement while looking for matching double-quote".into())
                            }
                            Some('"') => {
                                self.pos += 1;
                                if self.raw_quotes {
                                    out.push('"');
                                }
                                break;
                            }
                            Some('$') => self.push_expansion(&mut out)?,
                            Some(x) => {
                                self.pos += 1;
                                if x == self.escape {
                                    if raw_escapes {
                                        out.push(x);
                                    }
                                    match self.peek() {
                                        None => continue,
                                        Some(n) if n == '"' || n == '$' || n == self.escape => {
                                            self.pos += 1;
                                            out.push(n);
                                        }
                                        Some(_) if raw_escapes => {}
                                        Some(_) => out.push(x),
                                    }
                                } else {
                                    out.push(x);
                                }
                            }
                        }
                    }
                }
                x if x == self.escape => {
                    self.pos += 1;
                    if raw_escapes {
                        out.push(x);
                    }
                    match self.next() {
                        Some(n) => out.push(n),
                        None => break,
                    }
                }
                x => {
                    self.pos += 1;
                    out.push(x);
                }
            }
        }
        if !stops.is_empty() {
            return Err(MISSING_BRACE.into());
        }
        Ok((out, None))
    }

    /// A variable name as BuildKit reads one: a run of digits, one special parameter
    /// (`$@`, `$$`, ... which are never set here), or letters/digits/underscores.
    fn name(&mut self) -> String {
        let mut name = String::new();
        match self.peek() {
            Some(c) if c.is_ascii_digit() => {
                while let Some(c) = self.peek().filter(char::is_ascii_digit) {
                    name.push(c);
                    self.pos += 1;
                }
            }
            Some(c) if matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!') => {
                self.pos += 1;
                name.push(c);
            }
            _ => {
                while let Some(c) = self.peek().filter(|c| c.is_alphanumeric() || *c == '_') {
                    name.push(c);
                    self.pos += 1;
                }
            }
        }
        name
    }

    /// At a `$`.
    fn dollar(&mut self) -> Result<String, String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match (self.env)(&name) {
                None if self.keep_unset => format!("${name}"),
                v => v.unwrap_or_default(),
            });
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
        match self.peek() {
            None => return Err(MISSING_BRACE.into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            _ => {}
        }
        let name = self.name();
        let value = (self.env)(&name);
        let Some(mut op) = self.next() else { return Err(MISSING_BRACE.into()) };
        let mut shown = op.to_string();
        match op {
            '}' if value.is_none() && self.keep_unset => Ok(format!("${{{name}}}")),
            '}' => Ok(value.unwrap_or_default()),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let colon = op == ':';
                if colon {
                    let Some(o) = self.next() else { return Err(MISSING_BRACE.into()) };
                    op = o;
                    shown.push(o);
                }
                let pattern = op == '#' || op == '%';
                if colon && pattern {
                    return Err(format!("unsupported modifier ({shown}) in substitution"));
                }
                let (mut word, _) = self.process(&['}'], pattern)?;
                if value.is_none() && self.keep_unset {
                    return Ok(format!("${{{name}{shown}{word}}}"));
                }
                let set = value.is_some();
                let empty = value.as_deref().is_none_or(str::is_empty);
                match op {
                    '-' => Ok(if !set || (colon && empty) { word } else { value.unwrap_or_default() }),
                    '+' => Ok(if !set || (colon && empty) { String::new() } else { word }),
                    '?' if !set => {
                        Err(format!("{name}: {}", if word.is_empty() { "is not allowed to be unset" } else { &word }))
                    }
                    '?' if colon && empty => {
                        Err(format!("{name}: {}", if word.is_empty() { "is not allowed to be empty" } else { &word }))
                    }
                    '?' => Ok(value.unwrap_or_default()),
                    '#' | '%' => {
                        let greedy = word.starts_with(op);
                        if greedy {
                            word.remove(0);
                        }
                        let mut pat = compile(&word)?;
                        let mut v: Vec<char> = value.unwrap_or_default().chars().collect();
                        let n = v.len();
                        if op == '%' {
                            // A suffix match is a prefix match of the reversed string.
                            pat.reverse();
                            v.reverse();
                        }
                        let ends = match_ends(&pat, &v);
                        let k = if greedy { ends.iter().rposition(|&b| b) } else { ends.iter().position(|&b| b) };
                        if op == '%' {
                            v.reverse();
                        }
                        Ok(match k {
                            None => v.iter().collect(),
                            Some(k) if op == '#' => v[k..].iter().collect(),
                            Some(k) => v[..n - k].iter().collect(),
                        })
                    }
                    _ => Err(format!("unsupported modifier ({shown}) in substitution")),
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let pat = match self.process(&['/'], true) {
                    Ok((p, _)) => p,
                    Err(_) if self.peek().is_none() => return Err("syntax error: missing '/' in ${}".into()),
                    Err(e) => return Err(e),
                };
                let (repl, _) = self.process(&['}'], true)?;
                let pat = compile(&pat)?;
                let v: Vec<char> = value.unwrap_or_default().chars().collect();
                Ok(replace(&v, &pat, &repl, all))
            }
            _ => Err(format!("unsupported modifier ({shown}) in substitution")),
        }
    }
}

/// A compiled substitution pattern: `*`, `?` and literal characters.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Char(char),
    Any,
    Star,
}

/// Compile a pattern whose escapes were kept: `\*`, `\?`, `\\` are literals, `\}` and
/// `\/` lose the backslash, any other escape is an error (as in BuildKit).
fn compile(p: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut it = p.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '*' => out.push(Tok::Star),
            '?' => out.push(Tok::Any),
            '\\' => match it.peek().copied() {
                Some('}' | '/') => {}
                Some(n @ ('*' | '?' | '\\')) => {
                    it.next();
                    out.push(Tok::Char(n));
                }
                Some(n) => return Err(format!("invalid pattern ({p}) in substitution: invalid escape '\\{n}'")),
                None => return Err(format!("invalid pattern ({p}) in substitution: trailing escape")),
            },
            x => out.push(Tok::Char(x)),
        }
    }
    Ok(out)
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
            Tok::Any | Tok::Char(_) => {
                for j in 1..=m {
                    nd[j] = dp[j - 1] && (*t == Tok::Any || *t == Tok::Char(s[j - 1]));
                }
            }
        }
        dp = nd;
    }
    dp
}

/// `${V/p/r}` and `${V//p/r}`, as BuildKit does them with a regular expression: the
/// leftmost match (empty matches included, so an empty pattern inserts `r` at the
/// start), the longest one at that position; with `//` every non-overlapping match,
/// ignoring an empty match right after a previous match (Go's `ReplaceAllString`).
fn replace(v: &[char], pat: &[Tok], repl: &str, all: bool) -> String {
    let mut out = String::new();
    let mut i = 0;
    let mut last_end: Option<usize> = None;
    while i <= v.len() {
        let ends = match_ends(pat, &v[i..]);
        if let Some(len) = ends.iter().rposition(|&b| b) {
            if !(len == 0 && last_end == Some(i)) {
                out.push_str(repl);
                last_end = Some(i + len);
                if !all {
                    out.extend(&v[i + len..]);
                    return out;
                }
                if len > 0 {
                    i += len;
                    continue;
                }
            }
        }
        if let Some(c) = v.get(i) {
            out.push(*c);
        }
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
            "G" => Some("a*b[c]".into()),
            _ => None,
        }
    }

    #[test]
    fn display_keeps_quotes_and_unset_variables() {
        let cases: &[(&str, &str)] = &[
            (r#"RUN [ "$A" == "pw" ]"#, r#"RUN [ "hello" == "pw" ]"#),
            ("RUN echo '$A' $A", "RUN echo '$A' hello"),
            ("RUN echo $NOPE ${NOPE} ${NOPE:-x}", "RUN echo $NOPE ${NOPE} ${NOPE:-x}"),
            ("RUN echo ${A:+set} $E.", "RUN echo set ."),
            ("RUN echo \"unterminated", "RUN echo \"unterminated"),
        ];
        for (input, want) in cases {
            assert_eq!(expand_display(input, '\\', &env), *want, "{input}");
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
            ("$10", ""),
            ("$$", ""),
            ("a$@b", "ab"),
            ("$é", ""),
            ("$/", "$/"),
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
            ("${A/h?/_}", "_llo"),
            ("${G/\\*/-}", "a-b[c]"),
            ("${G/*/-}", "-"),
            ("${G/[c]/x}", "a*bx"),
            ("${G#a\\*}", "b[c]"),
            ("${P/\\//:}", ":usr/local/bin/tool.tar.gz"),
            ("${P//\\//:}", ":usr:local:bin:tool.tar.gz"),
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
            ("${E:?}", "E: is not allowed to be empty"),
            ("${UNSET:?}", "UNSET: is not allowed to be unset"),
            ("${UNSET?}", "UNSET: is not allowed to be unset"),
            ("${A", "syntax error: missing '}'"),
            ("${", "syntax error: missing '}'"),
            ("${A:-x", "syntax error: missing '}'"),
            ("${}", "syntax error: bad substitution"),
            ("${:-x}", "syntax error: bad substitution"),
            ("${A:x}", "unsupported modifier (:x) in substitution"),
            ("${A:#x}", "unsupported modifier (:#) in substitution"),
            ("${A^}", "unsupported modifier (^) in substitution"),
            ("${A/l}", "syntax error: missing '/' in ${}"),
            ("${A/\\x/y}", "invalid pattern (\\x) in substitution: invalid escape '\\x'"),
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
        // Quotes stay, escapes are processed (as BuildKit does for COPY heredocs).
        assert_eq!(expand_raw("echo \"$A\" '${A}' \\$A \\n", '\\', &env).unwrap(), "echo \"hello\" 'hello' $A n");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let s = "${A:-".repeat(10_000);
        assert!(expand_word(&s, '\\', &env).is_err());
    }
}
