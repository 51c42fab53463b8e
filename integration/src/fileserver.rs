//! A small HTTP/1.1 file server for one test case: the `-- http:/path --` sections
//! of the BuildKit table (`ADD http://…` sources), on plain std threads.
//!
//! [`FileServer::start`] listens on a free 127.0.0.1 port and answers `GET` and
//! `HEAD` of the files it was given (`Content-Length`, an `ETag` of the content,
//! `Last-Modified` when the file has one), 404 for any other path and 405 for any
//! other method, always with `Connection: close`. Every request is recorded
//! ([`FileServer::requests`]) so a case can say what the builder asked for. The
//! HTTP dates it writes and reads (IMF-fixdate, RFC 9110 §5.6.7) are
//! [`http_date`] / [`parse_http_date`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A file the server serves at `path` (`/a/b`, matched exactly against the request
/// target, query included).
#[derive(Clone, Debug, PartialEq)]
pub struct ServedFile {
    pub path: String,
    pub data: Vec<u8>,
    /// Seconds since the epoch, sent as `Last-Modified`.
    pub last_modified: Option<i64>,
}

/// One request as the server read it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The running server; stopped (and its accept thread joined) on drop.
pub struct FileServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl FileServer {
    pub fn start(files: Vec<ServedFile>) -> std::io::Result<FileServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let files = Arc::new(files);
        let accept = {
            let (requests, stop) = (requests.clone(), stop.clone());
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (files, requests) = (files.clone(), requests.clone());
                    thread::spawn(move || {
                        // A client that goes away mid-request is its own business.
                        let _ = serve(conn, &files, &requests);
                    });
                }
            })
        };
        Ok(FileServer { addr, requests, stop, accept: Some(accept) })
    }

    /// `127.0.0.1:PORT`, what `127.0.0.1:5001` in a case becomes.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every request so far, in the order their heads were read.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The requests as `METHOD TARGET` lines (`GET /foo`).
    pub fn request_lines(&self) -> Vec<String> {
        self.requests().iter().map(|r| format!("{} {}", r.method, r.target)).collect()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The accept loop only looks at `stop` when a connection arrives.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, files: &[ServedFile], requests: &Mutex<Vec<Request>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    conn.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    // A request head ends with an empty line; 64 KiB is far more than any client sends.
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = (&mut reader).take(64 * 1024).read_until(b'\n', &mut line)?;
        if n == 0 {
            // Closed before the head ended (the drop's wake-up connection, a probe).
            return Ok(());
        }
        head.extend_from_slice(&line);
        if head.len() > 64 * 1024 {
            return respond(&conn, 431, &[], None);
        }
        let text = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
        if text.is_empty() {
            break;
        }
        lines.push(text);
    }
    let mut it = lines.into_iter();
    let request_line = it.next().unwrap_or_default();
    let mut words = request_line.split_whitespace();
    let (Some(method), Some(target), Some(_version)) = (words.next(), words.next(), words.next()) else {
        return respond(&conn, 400, &[], None);
    };
    let headers: Vec<(String, String)> = it
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    let req = Request { method: method.to_string(), target: target.to_string(), headers };
    requests.lock().unwrap_or_else(|p| p.into_inner()).push(req.clone());

    if req.method != "GET" && req.method != "HEAD" {
        return respond(&conn, 405, &[("Allow", "GET, HEAD".to_string())], Some(b"method not allowed\n"));
    }
    let Some(f) = files.iter().find(|f| f.path == req.target) else {
        return respond(&conn, 404, &[], if req.method == "HEAD" { None } else { Some(b"not found\n") });
    };
    let mut extra = vec![
        ("Content-Type", "application/octet-stream".to_string()),
        ("ETag", format!("\"{:016x}\"", fnv1a(&f.data))),
    ];
    if let Some(t) = f.last_modified {
        extra.push(("Last-Modified", http_date(t)));
    }
    if req.method == "HEAD" {
        // HEAD says how long the GET body would be, without sending it.
        extra.push(("Content-Length", f.data.len().to_string()));
        respond(&conn, 200, &extra, None)
    } else {
        respond(&conn, 200, &extra, Some(&f.data))
    }
}

/// Write a response; `Content-Length` comes from `body` unless `extra` has one.
fn respond(mut conn: &TcpStream, status: u16, extra: &[(&str, String)], body: Option<&[u8]>) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\n");
    if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        head.push_str(&format!("Content-Length: {}\r\n", body.map_or(0, <[u8]>::len)));
    }
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    if let Some(b) = body {
        conn.write_all(b)?;
    }
    conn.flush()
}

/// A content hash for the ETag: it only has to change when the content does.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]; // 1970-01-01 was a Thursday
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Seconds since the epoch as an IMF-fixdate: `Tue, 14 Nov 2023 22:13:20 GMT`.
pub fn http_date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let s = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// An IMF-fixdate back to seconds; the weekday must be the date's (a typo in a
/// hand-written date is caught rather than silently served).
pub fn parse_http_date(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not an HTTP date like \"Tue, 14 Nov 2023 22:13:20 GMT\"");
    let p: Vec<&str> = s.split_whitespace().collect();
    let [wday, day, month, year, hms, "GMT"] = p[..] else { return Err(bad()) };
    let wday = wday.strip_suffix(',').ok_or_else(bad)?;
    let num = |t: &str, len: usize| -> Result<i64, String> {
        if t.len() != len || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse().map_err(|_| bad())
    };
    let d = num(day, 2)?;
    let m = MONTHS.iter().position(|x| *x == month).ok_or_else(bad)? as i64 + 1;
    let y = num(year, 4)?;
    let t: Vec<&str> = hms.split(':').collect();
    let [hh, mm, ss] = t[..] else { return Err(bad()) };
    let (hh, mm, ss) = (num(hh, 2)?, num(mm, 2)?, num(ss, 2)?);
    if !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return Err(bad());
    }
    let days = days_from_civil(y, m, d);
    if civil_from_days(days) != (y, m, d) {
        return Err(format!("{s:?}: no such date"));
    }
    let want = DAYS[days.rem_euclid(7) as usize];
    if wday != want {
        return Err(format!("{s:?}: that day is a {want}"));
    }
    Ok(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http;

    #[test]
    fn dates_round_trip() {
        assert_eq!(http_date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(parse_http_date("Tue, 14 Nov 2023 22:13:20 GMT"), Ok(1_700_000_000));
        assert_eq!(parse_http_date("Thu, 29 Feb 2024 12:00:00 GMT"), Ok(1_709_208_000));
        for t in [0, 951_782_400, 1_445_412_480, 1_700_000_402, 4_102_444_800] {
            assert_eq!(parse_http_date(&http_date(t)), Ok(t), "{t}");
        }
        for s in ["Mon, 14 Nov 2023 22:13:20 GMT", "Tue, 14 Nov 2023 22:13:20 UTC", "Fri, 30 Feb 2024 00:00:00 GMT", "1700000000"] {
            assert!(parse_http_date(s).is_err(), "{s}");
        }
    }

    #[test]
    fn serves_get_head_404_and_records_requests() {
        let server = FileServer::start(vec![
            ServedFile { path: "/foo".into(), data: b"content1".to_vec(), last_modified: None },
            ServedFile { path: "/".into(), data: b"content2".to_vec(), last_modified: Some(1_700_000_000) },
        ])
        .unwrap();
        let host = server.host();

        let r = http::get(&host, "/foo", &[]).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"content1"[..]));
        assert_eq!(r.header("content-length"), Some("8"));
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(r.header("last-modified"), None);
        let etag = r.header("etag").map(str::to_string);
        assert!(etag.as_deref().is_some_and(|e| e.starts_with('"') && e.len() > 2), "{etag:?}");

        let r = http::get(&host, "/", &[]).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"content2"[..]));
        assert_eq!(r.header("last-modified"), Some("Tue, 14 Nov 2023 22:13:20 GMT"));
        assert_ne!(r.header("etag").map(str::to_string), etag);

        let r = http::request("HEAD", &host, "/foo", &[]).unwrap();
        assert_eq!((r.status, r.body.len()), (200, 0));
        assert_eq!(r.header("content-length"), Some("8"));
        assert_eq!(r.header("etag").map(str::to_string), etag);

        let r = http::get(&host, "/missing", &[]).unwrap();
        assert_eq!(r.status, 404);
        let r = http::request("POST", &host, "/foo", &[]).unwrap();
        assert_eq!(r.status, 405);

        assert_eq!(server.request_lines(), ["GET /foo", "GET /", "HEAD /foo", "GET /missing", "POST /foo"]);
        assert_eq!(server.requests()[0].header("user-agent"), Some("kiln-integration"));
    }

    #[test]
    fn drop_stops_the_server() {
        let server = FileServer::start(Vec::new()).unwrap();
        let host = server.host();
        assert_eq!(http::get(&host, "/x", &[]).unwrap().status, 404);
        drop(server);
        assert!(http::get(&host, "/x", &[]).is_err(), "still answering after drop");
    }
}
