//! A fault-injecting HTTP/1.1 proxy for tests, on plain std threads.
//!
//! `FaultProxy::start("127.0.0.1:5000")` listens on a free 127.0.0.1 port and relays
//! every connection to the upstream registry. It parses just enough HTTP (request
//! heads, `Content-Length` and chunked request bodies) to know where each request
//! starts, so [`Rule`]s can pick requests by method and path and inject a [`Fault`]:
//! an error status (or a given status and body), a connection cut in the middle of a request body or of a
//! response, a corrupted response byte, or a plain close. Everything else is relayed
//! byte for byte. Clients must not pipeline (hyper/reqwest and curl do not).
//!
//! Self-contained (std only) so that it can be used both from `kiln-integration` and,
//! by `#[path]`, from the `kiln-cache` tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// What to do to a matching request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status (empty body, `Connection: close`) without forwarding.
    Status(u16),
    /// Read the request's body, then answer this status with this JSON body (a
    /// registry's error envelope) and `Connection: close`, without forwarding.
    Respond(u16, String),
    /// Close the connection without answering.
    Close,
    /// Forward the head and this many body bytes (at most all but the last byte of a
    /// `Content-Length` body), then cut the connection.
    DropRequestAfter(usize),
    /// Forward the request; cut the connection after this many bytes of the response
    /// (head included).
    DropResponseAfter(usize),
    /// Forward the request; flip the bits of the response body byte at this offset.
    CorruptResponseBody(usize),
    /// Wait this many milliseconds, then forward normally (to observe parallelism).
    DelayMs(u64),
    /// Answer with this status, these headers and body (a lying registry: a wrong
    /// `Docker-Content-Digest`, a huge header), without forwarding.
    Answer { status: u16, headers: Vec<(String, String)>, body: Vec<u8> },
    /// Answer 200 with `Content-Type` and, if given, a declared `Content-Length`, then
    /// send bytes without end (64 KiB at a time) until the client goes away.
    Endless { content_type: String, declared_length: Option<u64> },
    /// Answer 200 with a `Content-Length` of `length`, then one byte every `ms`.
    Drip { ms: u64, length: u64 },
    /// Answer 307 to this URL (`{path}` is replaced by the request's path).
    Redirect(String),
}

/// Which requests get a fault: `method` (None = any) and a substring of the path;
/// the first `skip` matching requests pass, the next `times` get the fault.
#[derive(Clone, Debug)]
pub struct Rule {
    pub method: Option<String>,
    pub path_contains: String,
    pub skip: usize,
    pub times: usize,
    pub fault: Fault,
}

impl Rule {
    /// `times` faults for requests with `method` (e.g. "GET", or "*" for any) whose path
    /// contains `path_contains`.
    pub fn new(method: &str, path_contains: &str, fault: Fault, times: usize) -> Rule {
        Rule {
            method: (method != "*").then(|| method.to_string()),
            path_contains: path_contains.to_string(),
            skip: 0,
            times,
            fault,
        }
    }

    /// Let the first `n` matching requests through first.
    pub fn after(mut self, n: usize) -> Rule {
        self.skip = n;
        self
    }
}

struct Shared {
    upstream: String,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<String>>,
    /// `METHOD PATH` and the `Authorization` header's value, for requests that had one.
    authorizations: Mutex<Vec<(String, String)>>,
    injected: AtomicUsize,
    connections: AtomicUsize,
    active: AtomicUsize,
    max_active: AtomicUsize,
    delayed: AtomicUsize,
    max_delayed: AtomicUsize,
}

/// A running proxy; stops accepting when dropped (open connections run to their end).
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Starts relaying to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fault proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            authorizations: Mutex::new(Vec::new()),
            injected: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            max_active: AtomicUsize::new(0),
            delayed: AtomicUsize::new(0),
            max_delayed: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, st) = (shared.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                sh.connections.fetch_add(1, Ordering::SeqCst);
                let sh = sh.clone();
                thread::spawn(move || {
                    let now = sh.active.fetch_add(1, Ordering::SeqCst) + 1;
                    sh.max_active.fetch_max(now, Ordering::SeqCst);
                    let _ = handle(conn, &sh);
                    sh.active.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        FaultProxy { addr, shared, stop }
    }

    /// `127.0.0.1:PORT`, to put in references (loopback: plain HTTP).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn add_rule(&self, rule: Rule) {
        self.shared.rules.lock().unwrap().push(rule);
    }

    pub fn clear_rules(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Faults injected so far.
    pub fn injected(&self) -> usize {
        self.shared.injected.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The most connections that were open at once.
    pub fn max_active_connections(&self) -> usize {
        self.shared.max_active.load(Ordering::SeqCst)
    }

    /// The most `DelayMs`-faulted requests that were waiting at once: requests in
    /// flight, unlike connections (an idle keep-alive connection counts as open).
    pub fn max_concurrent_delayed(&self) -> usize {
        self.shared.max_delayed.load(Ordering::SeqCst)
    }

    /// The requests that carried an `Authorization` header: (`METHOD PATH`, value).
    pub fn authorizations(&self) -> Vec<(String, String)> {
        self.shared.authorizations.lock().unwrap().clone()
    }

    /// Request lines seen (`METHOD PATH`), faulted ones suffixed with ` [fault: …]`.
    pub fn log(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// A fault the response pump applies to the next response.
#[derive(Clone, Copy)]
enum RespFault {
    DropAfter(usize),
    Corrupt(usize),
}

/// The response fault armed for the current request, and which request armed it: the
/// pump restarts its byte count for every request, so a fault armed on a reused
/// connection applies to that request's response, not to offsets of an earlier one.
#[derive(Default)]
struct Armed {
    request: u64,
    fault: Option<RespFault>,
}

fn arm(a: &Mutex<Armed>, fault: Option<RespFault>) {
    let mut a = a.lock().unwrap();
    a.request += 1;
    a.fault = fault;
}

fn pick(shared: &Shared, method: &str, path: &str) -> Option<Fault> {
    let mut rules = shared.rules.lock().unwrap();
    for r in rules.iter_mut() {
        if r.times == 0 || r.method.as_deref().is_some_and(|m| m != method) || !path.contains(&r.path_contains) {
            continue;
        }
        if r.skip > 0 {
            r.skip -= 1;
            return None;
        }
        r.times -= 1;
        shared.injected.fetch_add(1, Ordering::SeqCst);
        return Some(r.fault.clone());
    }
    None
}

/// Upstream → client, applying the response fault armed for the current request;
/// `kill` closes both connections.
fn pump_responses(from: &mut TcpStream, to: &mut TcpStream, rf: &Mutex<Armed>, kill: &dyn Fn()) {
    let mut buf = [0u8; 16 * 1024];
    // Per armed fault: bytes seen since armed, and for corruption the head end.
    let mut seen = 0usize;
    let mut head_tail: Vec<u8> = Vec::new();
    let mut body_at: Option<usize> = None;
    let mut request = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        let armed = {
            let a = rf.lock().unwrap();
            if a.request != request {
                request = a.request;
                seen = 0;
                head_tail.clear();
                body_at = None;
            }
            a.fault
        };
        match armed {
            Some(RespFault::DropAfter(limit)) => {
                let room = limit.saturating_sub(seen);
                if n >= room {
                    let _ = to.write_all(&chunk[..room]);
                    let _ = to.flush();
                    kill();
                    break;
                }
                seen += n;
            }
            Some(RespFault::Corrupt(off)) => {
                for (i, b) in chunk.iter_mut().enumerate() {
                    let pos = seen + i;
                    match body_at {
                        None => {
                            head_tail.push(*b);
                            if head_tail.ends_with(b"\r\n\r\n") {
                                body_at = Some(pos + 1);
                            }
                        }
                        Some(start) if pos == start + off => {
                            *b = !*b;
                            rf.lock().unwrap().fault = None;
                        }
                        Some(_) => {}
                    }
                }
                seen += n;
            }
            None => {}
        }
        if to.write_all(chunk).is_err() {
            break;
        }
    }
    kill();
}

fn handle(client: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let upstream = TcpStream::connect(&shared.upstream)?;
    let resp_fault: Arc<Mutex<Armed>> = Arc::new(Mutex::new(Armed::default()));
    let kill = {
        let both = Arc::new((client.try_clone()?, upstream.try_clone()?));
        move || {
            let _ = both.0.shutdown(Shutdown::Both);
            let _ = both.1.shutdown(Shutdown::Both);
        }
    };

    // Response pump: upstream → client, applying a pending response fault.
    {
        let mut from = upstream.try_clone()?;
        let mut to = client.try_clone()?;
        let rf = resp_fault.clone();
        let kill = kill.clone();
        thread::spawn(move || pump_responses(&mut from, &mut to, &rf, &kill));
    }

    // Request pump: client → upstream, one request at a time.
    let mut reader = BufReader::new(client.try_clone()?);
    let mut up = upstream.try_clone()?;
    let mut cl = client;
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line)? == 0 {
                let _ = up.shutdown(Shutdown::Write);
                return Ok(());
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" || line == b"\n" {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head).to_string();
        let mut first = text.lines().next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let path = first.next().unwrap_or("").to_string();
        let mut content_length = 0usize;
        let mut chunked = false;
        for l in text.lines().skip(1) {
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    content_length = v.parse().unwrap_or(0);
                } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                    chunked = true;
                } else if k == "authorization" {
                    shared.authorizations.lock().unwrap().push((format!("{method} {path}"), v.to_string()));
                }
            }
        }
        let fault = pick(shared, &method, &path);
        shared.log.lock().unwrap().push(match &fault {
            Some(f) => format!("{method} {path} [fault: {f:?}]"),
            None => format!("{method} {path}"),
        });
        match fault {
            Some(Fault::Status(code)) => {
                let _ = write!(
                    cl,
                    "HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = cl.flush();
                kill();
                return Ok(());
            }
            Some(Fault::Respond(code, body)) => {
                // Read the body first: closing with unread bytes resets the
                // connection, and the client may lose the answer.
                if chunked {
                    copy_chunked(&mut reader, &mut std::io::sink())?;
                } else {
                    std::io::copy(&mut (&mut reader).take(content_length as u64), &mut std::io::sink())?;
                }
                let _ = write!(
                    cl,
                    "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = cl.flush();
                kill();
                return Ok(());
            }
            Some(Fault::Close) => {
                kill();
                return Ok(());
            }
            Some(f @ (Fault::Answer { .. } | Fault::Endless { .. } | Fault::Drip { .. } | Fault::Redirect(_))) => {
                let _ = answer(&mut cl, &f, &path);
                kill();
                return Ok(());
            }
            Some(Fault::DropRequestAfter(n)) => {
                up.write_all(&head)?;
                // Never the whole body: the request must stay incomplete (and we must
                // not wait for bytes the client will not send).
                let n = if chunked { n } else { n.min(content_length.saturating_sub(1)) };
                let mut limited = (&mut reader).take(n as u64);
                std::io::copy(&mut limited, &mut up)?;
                let _ = up.flush();
                kill();
                return Ok(());
            }
            Some(Fault::DropResponseAfter(n)) => arm(&resp_fault, Some(RespFault::DropAfter(n))),
            Some(Fault::CorruptResponseBody(n)) => arm(&resp_fault, Some(RespFault::Corrupt(n))),
            Some(Fault::DelayMs(ms)) => {
                let now = shared.delayed.fetch_add(1, Ordering::SeqCst) + 1;
                shared.max_delayed.fetch_max(now, Ordering::SeqCst);
                thread::sleep(std::time::Duration::from_millis(ms));
                shared.delayed.fetch_sub(1, Ordering::SeqCst);
                arm(&resp_fault, None);
            }
            None => arm(&resp_fault, None),
        }
        up.write_all(&head)?;
        if chunked {
            copy_chunked(&mut reader, &mut up)?;
        } else if content_length > 0 {
            let mut limited = (&mut reader).take(content_length as u64);
            std::io::copy(&mut limited, &mut up)?;
        }
        up.flush()?;
    }
}

/// Writes the answer of a fault that does not forward (see [`Fault`]).
fn answer(cl: &mut TcpStream, f: &Fault, path: &str) -> std::io::Result<()> {
    match f {
        Fault::Answer { status, headers, body } => {
            let mut head = format!("HTTP/1.1 {status} Injected\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            cl.write_all(head.as_bytes())?;
            cl.write_all(body)?;
        }
        Fault::Endless { content_type, declared_length } => {
            let length = declared_length.map(|n| format!("Content-Length: {n}\r\n")).unwrap_or_default();
            write!(cl, "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n{length}Connection: close\r\n\r\n{{\"schemaVersion\":2,\"x\":\"")?;
            let block = vec![b'x'; 64 << 10];
            loop {
                cl.write_all(&block)?;
            }
        }
        Fault::Drip { ms, length } => {
            write!(cl, "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n")?;
            for _ in 0..*length {
                cl.write_all(b" ")?;
                cl.flush()?;
                thread::sleep(std::time::Duration::from_millis(*ms));
            }
        }
        Fault::Redirect(to) => {
            let location = to.replace("{path}", path);
            write!(cl, "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        }
        _ => {}
    }
    cl.flush()
}

/// Copies one chunked body (chunks, last chunk, trailers) verbatim.
fn copy_chunked(r: &mut BufReader<TcpStream>, w: &mut impl Write) -> std::io::Result<()> {
    loop {
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line)?;
        w.write_all(&line)?;
        let size_text = String::from_utf8_lossy(&line);
        let size = usize::from_str_radix(size_text.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        if size == 0 {
            // Trailers until an empty line.
            loop {
                let mut t = Vec::new();
                if r.read_until(b'\n', &mut t)? == 0 {
                    return Ok(());
                }
                w.write_all(&t)?;
                if t == b"\r\n" || t == b"\n" {
                    return Ok(());
                }
            }
        }
        let mut limited = (&mut *r).take(size as u64 + 2); // data + CRLF
        std::io::copy(&mut limited, w)?;
    }
}
