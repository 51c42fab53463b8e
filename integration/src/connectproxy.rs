//! An HTTPS forward proxy (HTTP `CONNECT` tunnels) that counts what passes, for
//! tests that must tell whether a package manager inside a RUN step downloaded
//! something again: point its `HTTPS_PROXY` here and read [`ConnectProxy::bytes_down`]
//! and [`ConnectProxy::tunnels`]. std only; one thread per tunnel direction.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// A listening proxy; stops accepting when dropped (its threads end with their peers).
pub struct ConnectProxy {
    port: u16,
    down: Arc<AtomicU64>,
    hosts: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    pub fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
        let port = listener.local_addr().expect("local addr").port();
        let down = Arc::new(AtomicU64::new(0));
        let hosts = Arc::new(Mutex::new(Vec::new()));
        let (d, h) = (down.clone(), hosts.clone());
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (d, h) = (d.clone(), h.clone());
                thread::spawn(move || {
                    let _ = tunnel(conn, &d, &h);
                });
            }
        });
        ConnectProxy { port, down, hosts }
    }

    /// `http://127.0.0.1:PORT`, for `HTTPS_PROXY`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Bytes sent from the servers to the clients so far.
    pub fn bytes_down(&self) -> u64 {
        self.down.load(Ordering::SeqCst)
    }

    /// `host:port` of every tunnel opened so far.
    pub fn tunnels(&self) -> Vec<String> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn tunnel(client: TcpStream, down: &AtomicU64, hosts: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = match line.split_whitespace().collect::<Vec<_>>()[..] {
        ["CONNECT", target, _] => target.to_string(),
        _ => {
            (&client).write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")?;
            return Ok(());
        }
    };
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    hosts.lock().unwrap_or_else(|p| p.into_inner()).push(target.clone());
    let server = match TcpStream::connect(&target) {
        Ok(s) => s,
        Err(_) => {
            (&client).write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")?;
            return Ok(());
        }
    };
    (&client).write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")?;
    // Whatever the client sent after its headers is already in the reader's buffer.
    let early = reader.buffer().to_vec();
    (&server).write_all(&early)?;
    let (mut c_read, mut s_write) = (reader.into_inner(), server.try_clone()?);
    let up = thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let mut buf = [0u8; 64 * 1024];
    let mut s_read = server;
    let mut c_write = client;
    loop {
        let n = match s_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        down.fetch_add(n as u64, Ordering::SeqCst);
        if c_write.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = c_write.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}
