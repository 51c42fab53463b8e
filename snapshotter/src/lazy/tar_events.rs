//! A tar stream cut into entries as it is written: the header blocks of each entry
//! (PAX and GNU long-name blocks included), its content, its padding, and the end
//! of the archive. The lazy-pull writers need to know where each file's content
//! starts and ends in the stream without holding the stream; the layer writer
//! produces the tar through `tar::Builder` into a `Write`, so this parser is a
//! `Write` too and forwards what it sees to a [`TarSink`].

use std::io::{self, Write};

const BLOCK: usize = 512;

/// What the writers record of an entry (from its ustar header, overridden by PAX
/// records and GNU long names as tar readers do).
#[derive(Debug, Clone, Default)]
pub struct EntryMeta {
    pub name: Vec<u8>,
    /// The ustar typeflag (`b'0'` regular, `b'5'` directory, ...).
    pub kind: u8,
    pub link: Vec<u8>,
    /// The mode field as written (permission bits, maybe type bits).
    pub mode: u64,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub size: u64,
    pub dev: (u64, u64),
    pub uname: String,
    pub gname: String,
    /// Every PAX record of the entry, as written (SOCI's TOC keeps them all; the
    /// xattrs are among them, [`EntryMeta::xattrs_base64`]).
    pub pax: Vec<(String, Vec<u8>)>,
}

impl EntryMeta {
    pub fn is_regular(&self) -> bool {
        matches!(self.kind, b'0' | 0 | b'7')
    }

    pub fn name_str(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// The `SCHILY.xattr.*` PAX records by name without the prefix, values in
    /// base64 (as both TOC formats' Go writers marshal bytes).
    pub fn xattrs_base64(&self) -> std::collections::BTreeMap<String, String> {
        use base64::Engine as _;
        self.pax
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("SCHILY.xattr.").map(|x| (x.to_string(), base64::engine::general_purpose::STANDARD.encode(v))))
            .collect()
    }
}

/// Receives a tar stream entry by entry.
pub trait TarSink {
    /// The raw header blocks of one entry and what they say.
    fn header(&mut self, raw: &[u8], meta: &EntryMeta) -> io::Result<()>;
    /// Content bytes of the entry last announced (its `meta.size` bytes in all).
    fn content(&mut self, data: &[u8]) -> io::Result<()>;
    /// The zero padding after the content (only called when there is content).
    fn padding(&mut self, raw: &[u8]) -> io::Result<()>;
    /// The end-of-archive blocks and anything after them, at [`TarEvents::finish`].
    fn trailer(&mut self, raw: &[u8]) -> io::Result<()>;
}

enum State {
    /// Collecting a 512-byte header block.
    Header,
    /// Collecting the content of a PAX or GNU long-name block (size with padding).
    Meta { kind: u8, left: usize },
    Content { left: u64, pad: usize },
    Padding { left: usize },
    /// After the first zero block: everything is trailer.
    Trailer,
}

/// The parser: write a tar stream into it, then [`TarEvents::finish`].
pub struct TarEvents<S: TarSink> {
    sink: S,
    state: State,
    /// Header blocks of the entry being read (PAX blocks before the ustar one).
    raw: Vec<u8>,
    block: Vec<u8>,
    meta_content: Vec<u8>,
    pax: Vec<(String, Vec<u8>)>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    trailer: Vec<u8>,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("tar stream: {what}"))
}

/// A numeric header field: octal text, or GNU base-256 when the high bit is set.
fn number(field: &[u8]) -> io::Result<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for b in &field[1..] {
            v = v.checked_shl(8).ok_or_else(|| bad("number too large"))? | *b as u64;
        }
        return Ok(v);
    }
    let text: Vec<u8> = field.iter().copied().take_while(|b| *b != 0).filter(|b| *b != b' ').collect();
    if text.is_empty() {
        return Ok(0);
    }
    let s = std::str::from_utf8(&text).map_err(|_| bad("numeric field"))?;
    u64::from_str_radix(s, 8).map_err(|_| bad("numeric field"))
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    &field[..end]
}

/// PAX records: `LEN KEY=VALUE\n` each.
fn pax_records(mut data: &[u8]) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    while !data.is_empty() && data[0] != 0 {
        let sp = data.iter().position(|b| *b == b' ').ok_or_else(|| bad("PAX record"))?;
        let len: usize = std::str::from_utf8(&data[..sp]).ok().and_then(|s| s.parse().ok()).ok_or_else(|| bad("PAX record length"))?;
        if len <= sp + 1 || len > data.len() {
            return Err(bad("PAX record length"));
        }
        let rec = &data[sp + 1..len - 1];
        let eq = rec.iter().position(|b| *b == b'=').ok_or_else(|| bad("PAX record"))?;
        out.push((String::from_utf8_lossy(&rec[..eq]).into_owned(), rec[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

fn padded(n: u64) -> usize {
    ((BLOCK as u64 - n % BLOCK as u64) % BLOCK as u64) as usize
}

impl<S: TarSink> TarEvents<S> {
    pub fn new(sink: S) -> Self {
        TarEvents {
            sink,
            state: State::Header,
            raw: Vec::new(),
            block: Vec::with_capacity(BLOCK),
            meta_content: Vec::new(),
            pax: Vec::new(),
            long_name: None,
            long_link: None,
            trailer: Vec::new(),
        }
    }

    /// Hand the trailer to the sink and return it. A stream that ends inside an
    /// entry is an error.
    pub fn finish(mut self) -> io::Result<S> {
        if !matches!(self.state, State::Header | State::Trailer) || !self.block.is_empty() || !self.raw.is_empty() {
            return Err(bad("ends inside an entry"));
        }
        self.sink.trailer(&self.trailer)?;
        Ok(self.sink)
    }

    fn header_block(&mut self) -> io::Result<()> {
        let b = std::mem::take(&mut self.block);
        if b.iter().all(|x| *x == 0) {
            if !self.raw.is_empty() {
                return Err(bad("end of archive after a PAX header"));
            }
            self.trailer.extend_from_slice(&b);
            self.state = State::Trailer;
            return Ok(());
        }
        let size = number(&b[124..136])?;
        let kind = b[156];
        self.raw.extend_from_slice(&b);
        if matches!(kind, b'x' | b'g' | b'L' | b'K') {
            let size = usize::try_from(size).map_err(|_| bad("header too large"))?;
            if size > 64 << 20 {
                return Err(bad("extended header larger than 64 MiB"));
            }
            self.meta_content.clear();
            self.state = if size == 0 { State::Header } else { State::Meta { kind, left: size + padded(size as u64) } };
            return Ok(());
        }
        let mut m = EntryMeta {
            name: cstr(&b[0..100]).to_vec(),
            kind,
            link: cstr(&b[157..257]).to_vec(),
            mode: number(&b[100..108])?,
            uid: number(&b[108..116])?,
            gid: number(&b[116..124])?,
            mtime: number(&b[136..148])? as i64,
            size,
            dev: (0, 0),
            uname: String::new(),
            gname: String::new(),
            pax: Vec::new(),
        };
        if &b[257..262] == b"ustar" {
            m.uname = String::from_utf8_lossy(cstr(&b[265..297])).into_owned();
            m.gname = String::from_utf8_lossy(cstr(&b[297..329])).into_owned();
            if matches!(kind, b'3' | b'4') {
                m.dev = (number(&b[329..337])?, number(&b[337..345])?);
            }
            let prefix = cstr(&b[345..500]);
            if !prefix.is_empty() && &b[257..263] == b"ustar\0" {
                m.name = [prefix, b"/", &m.name].concat();
            }
        }
        if let Some(n) = self.long_name.take() {
            m.name = n;
        }
        if let Some(l) = self.long_link.take() {
            m.link = l;
        }
        m.pax = self.pax.clone();
        for (k, v) in std::mem::take(&mut self.pax) {
            let num = || std::str::from_utf8(&v).ok().and_then(|s| s.split('.').next().and_then(|i| i.parse::<i64>().ok()));
            match k.as_str() {
                "path" => m.name = v.clone(),
                "linkpath" => m.link = v.clone(),
                "size" => m.size = num().ok_or_else(|| bad("PAX size"))? as u64,
                "uid" => m.uid = num().ok_or_else(|| bad("PAX uid"))? as u64,
                "gid" => m.gid = num().ok_or_else(|| bad("PAX gid"))? as u64,
                "mtime" => m.mtime = num().ok_or_else(|| bad("PAX mtime"))?,
                "uname" => m.uname = String::from_utf8_lossy(&v).into_owned(),
                "gname" => m.gname = String::from_utf8_lossy(&v).into_owned(),
                _ => {}
            }
        }
        let raw = std::mem::take(&mut self.raw);
        self.sink.header(&raw, &m)?;
        self.state = if m.size == 0 { State::Header } else { State::Content { left: m.size, pad: padded(m.size) } };
        Ok(())
    }

    fn meta_done(&mut self, kind: u8) -> io::Result<()> {
        let content = std::mem::take(&mut self.meta_content);
        match kind {
            b'x' => self.pax.extend(pax_records(&content)?),
            b'L' => self.long_name = Some(cstr(&content).to_vec()),
            b'K' => self.long_link = Some(cstr(&content).to_vec()),
            _ => {}
        }
        self.state = State::Header;
        Ok(())
    }
}

impl<S: TarSink> Write for TarEvents<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            match &mut self.state {
                State::Header => {
                    let take = (BLOCK - self.block.len()).min(rest.len());
                    self.block.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if self.block.len() == BLOCK {
                        self.header_block()?;
                    }
                }
                State::Meta { kind, left } => {
                    let take = (*left).min(rest.len());
                    self.raw.extend_from_slice(&rest[..take]);
                    self.meta_content.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    *left -= take;
                    if *left == 0 {
                        let k = *kind;
                        self.meta_done(k)?;
                    }
                }
                State::Content { left, pad } => {
                    let take = (*left).min(rest.len() as u64) as usize;
                    let pad = *pad;
                    *left -= take as u64;
                    let done = *left == 0;
                    self.sink.content(&rest[..take])?;
                    rest = &rest[take..];
                    if done {
                        self.state = if pad == 0 {
                            self.sink.padding(&[])?;
                            State::Header
                        } else {
                            State::Padding { left: pad }
                        };
                    }
                }
                State::Padding { left } => {
                    let take = (*left).min(rest.len());
                    *left -= take;
                    let done = *left == 0;
                    self.block.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if done {
                        let pad = std::mem::take(&mut self.block);
                        self.sink.padding(&pad)?;
                        self.state = State::Header;
                    }
                }
                State::Trailer => {
                    self.trailer.extend_from_slice(rest);
                    rest = &[];
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
