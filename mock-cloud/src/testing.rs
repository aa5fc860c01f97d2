//! A raw HTTP/1.1 client for tests that need to see exactly what a server sent (status
//! codes of failed requests, chunked bodies, `Status` objects), which typed clients hide.
//! Blocking and dependency-free, so any test (sync or inside `spawn_blocking`) can use it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The most of an answer that is read; anything longer is an error.
const MAX_RESPONSE: u64 = 64 << 20;
/// How long connecting, and each read or write, may take.
const TIMEOUT: Duration = Duration::from_secs(15);

/// One request: sent with `Connection: close`, so the answer ends with the connection.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub content_type: &'a str,
    pub accept: &'a str,
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// A JSON request (`Content-Type` and `Accept` `application/json`).
    pub fn json(method: &'a str, path: &'a str, body: &'a [u8]) -> Self {
        Request {
            method,
            path,
            content_type: "application/json",
            accept: "application/json",
            body,
        }
    }
}

/// Sends `req` to `addr` (`host:port`) and returns (status code, body); a chunked body is
/// decoded. Err on a transport failure or an answer that is not HTTP.
pub fn http(addr: &str, req: &Request<'_>) -> Result<(u16, String), String> {
    http_bytes(addr, req).map(|a| (a.code, String::from_utf8_lossy(&a.body).into_owned()))
}

/// A whole answer, body as bytes (protobuf bodies are not text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// [`http`], keeping the Content-Type and the body's bytes.
pub fn http_bytes(addr: &str, req: &Request<'_>) -> Result<Answer, String> {
    let sa: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut s =
        TcpStream::connect_timeout(&sa, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT)).ok();
    s.set_write_timeout(Some(TIMEOUT)).ok();
    let head = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {}\r\nAccept: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        req.method,
        req.path,
        req.content_type,
        req.accept,
        req.body.len()
    );
    // A server may answer (413, say) and close before the body is all sent: keep what it
    // said, and report the transport error only when there is no answer.
    let sent = s
        .write_all(head.as_bytes())
        .and_then(|_| s.write_all(req.body))
        .map_err(|e| format!("write to {addr}: {e}"));
    let mut resp = Vec::new();
    let read = (&mut s)
        .take(MAX_RESPONSE + 1)
        .read_to_end(&mut resp)
        .map_err(|e| format!("read from {addr}: {e}"));
    if resp.len() as u64 > MAX_RESPONSE {
        return Err(format!("answer from {addr} is over {MAX_RESPONSE} bytes"));
    }
    match parse_response(&resp) {
        Some(answer) => Ok(answer),
        None => {
            sent?;
            read?;
            Err(format!(
                "no HTTP answer from {addr}: {:?}",
                String::from_utf8_lossy(&resp[..resp.len().min(200)])
            ))
        }
    }
}

/// A complete HTTP/1.1 answer.
fn parse_response(resp: &[u8]) -> Option<Answer> {
    let end = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&resp[..end]);
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let body = &resp[end + 4..];
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Some(Answer {
        code,
        content_type,
        body,
    })
}

/// Decodes a chunked body, stopping at the last chunk or at the first malformed or
/// truncated one.
pub fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = s.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&s[..eol]);
        let size = size.split(';').next().unwrap_or("").trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        let rest = &s[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        s = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined_and_bad_chunks_end_them() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"), b"abcde");
        assert_eq!(dechunk(b"3\r\nabc\r\nzz\r\nde\r\n"), b"abc");
        assert_eq!(dechunk(b"9\r\nabc"), b"");
        assert_eq!(dechunk(b""), b"");
        // Sizes count bytes, not characters.
        assert_eq!(dechunk("4\r\nñé\r\n0\r\n\r\n".as_bytes()), "ñé".as_bytes());
    }

    #[test]
    fn responses_give_code_and_body() {
        let plain = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno";
        let a = parse_response(plain).unwrap();
        assert_eq!((a.code, &a.body[..]), (404, &b"no"[..]));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\ncontent-type: x/y\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        let a = parse_response(chunked).unwrap();
        assert_eq!(
            (a.code, a.content_type.as_str(), &a.body[..]),
            (200, "x/y", &b"ok"[..])
        );
        assert_eq!(parse_response(b"garbage"), None);
        assert_eq!(parse_response(b"HTTP/1.1 x\r\n\r\n"), None);
    }

    #[test]
    fn a_request_reaches_a_server_and_its_answer_comes_back() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().expect("accept");
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.ends_with(b"{}") {
                let n = c.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            c.write_all(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
                .expect("write");
            String::from_utf8_lossy(&got).into_owned()
        });
        let r = http(&addr, &Request::json("POST", "/x", b"{}"));
        let sent = server.join().expect("server");
        assert_eq!(r, Ok((201, "hello".to_string())));
        assert!(sent.starts_with("POST /x HTTP/1.1\r\n"), "{sent}");
        assert!(sent.contains("Content-Length: 2\r\n"), "{sent}");
        assert!(http("127.0.0.1:1", &Request::json("GET", "/", b"")).is_err());
    }
}
