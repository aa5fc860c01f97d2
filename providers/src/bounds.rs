//! Bounds on what berth takes from outside and repeats: response bodies read with a cap,
//! server messages and quoted values truncated, URLs printed without credentials, and the
//! accepted form of a health-check path.
//!
//! Everything a provider puts into a [`ProviderError`](crate::ProviderError) can end up in a
//! log line, a Kubernetes event (the API server caps notes at 1 KiB) and a Service condition,
//! so none of it may be unbounded or carry a secret.

use reqwest::Url;
use std::error::Error as _;

/// The most berth reads of any response body.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// The most berth reads of an error response's body (it only wants the message).
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// The most characters of a server's own message kept in an error.
pub const MAX_MESSAGE_CHARS: usize = 256;
/// The most characters of a user's value quoted back in an error.
pub const MAX_QUOTED_CHARS: usize = 64;
/// The longest health-check path accepted.
pub const MAX_HEALTH_CHECK_PATH: usize = 1024;

/// `text` cut to at most `max` characters (on a character boundary), with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

/// A server's message as an error may carry it: trimmed, credentials in URLs removed, at
/// most [`MAX_MESSAGE_CHARS`] characters.
pub fn server_message(text: &str) -> String {
    truncate(&scrub_userinfo(text.trim()), MAX_MESSAGE_CHARS)
}

/// `value` quoted for an error message: the whole value when it is at most
/// [`MAX_QUOTED_CHARS`] characters, else its start and its size, e.g. `"aaaa…"…(10240 bytes)`.
pub fn quote(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED_CHARS) {
        None => format!("{value:?}"),
        Some((at, _)) => format!("{:?}…({} bytes)", &value[..at], value.len()),
    }
}

/// `url` as berth prints it: no user name, password, query or fragment (any of which may
/// hold a credential).
pub fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    // Both fail only for URLs that cannot have credentials (e.g. `mailto:`).
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// An endpoint as configured, for messages: redacted like [`redact_url`] when it parses,
/// else with any `user:password@` after a `://` removed, and bounded.
pub fn redact_endpoint(endpoint: &str) -> String {
    match Url::parse(endpoint) {
        Ok(u) => redact_url(&u),
        Err(_) => truncate(&scrub_userinfo(endpoint), MAX_MESSAGE_CHARS),
    }
}

/// `text` with the `user:password@` part of every `scheme://` authority removed.
pub fn scrub_userinfo(text: &str) -> String {
    replace_userinfo(text, "")
}

/// `text` with the `user:password@` part of every `scheme://` authority replaced by `with`
/// (e.g. `""` or `"***@"`).
pub fn replace_userinfo(text: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | ')' | '"' | '\'' | '<' | '>' | ',')
                    || c.is_whitespace()
            })
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(userinfo_end) => {
                out.push_str(with);
                out.push_str(&authority[userinfo_end + 1..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// A reqwest error's causes, outermost first, without repeats, without the request's URL
/// credentials (the caller names the request) and bounded.
pub fn describe(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        // hyper-util's "client error (Connect)" says nothing its source does not.
        let generic = text.starts_with("client error (");
        if !generic && !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    if e.is_timeout() && !parts.iter().any(|p| p.contains("timed out")) {
        parts.push("timed out".into());
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    let mut text = parts.join(": ");
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), &redact_url(url));
    }
    server_message(&text)
}

/// Whether `path` is a usable HTTP health-check path; `Err` says what is accepted.
pub fn check_health_check_path(path: &str) -> Result<(), String> {
    if path.starts_with('/')
        && path.chars().count() <= MAX_HEALTH_CHECK_PATH
        && !path.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        Ok(())
    } else {
        Err(format!(
            "invalid value {}: accepted values are HTTP paths starting with \"/\", at most \
             {MAX_HEALTH_CHECK_PATH} characters, without spaces or control characters",
            quote(path)
        ))
    }
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// It is (or says it is) larger than the cap; nothing more was read.
    TooLarge,
    /// The transport failed.
    Read(reqwest::Error),
}

/// The whole body of `resp`, or [`BodyError::TooLarge`] as soon as it is known to exceed
/// `cap` bytes (by its `Content-Length` or by counting chunks as they arrive): never more
/// than `cap` bytes are held. Dropping the response closes the connection.
pub(crate) async fn read_body(
    mut resp: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(BodyError::TooLarge);
    }
    // The chunks are kept as they arrive and joined once at the end: a growing buffer would
    // be copied at each doubling, holding one and a half times the cap while a body that
    // turns out too large is still being counted.
    let mut chunks = Vec::new();
    let mut len = 0usize;
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Read)? {
        if len + chunk.len() > cap {
            return Err(BodyError::TooLarge);
        }
        len += chunk.len();
        chunks.push(chunk);
    }
    let mut body = Vec::with_capacity(len);
    for chunk in chunks {
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// At most `cap` bytes from the start of `resp`'s body, and whether there was more. For
/// error bodies, where the start is what matters; a transport failure ends the read.
pub(crate) async fn read_prefix(mut resp: reqwest::Response, cap: usize) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return (body, true);
        }
        body.extend_from_slice(&chunk);
    }
    (body, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("ééééé", 2), "éé…");
        let long = "x".repeat(5_000_000);
        assert_eq!(server_message(&long).chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn quoting_bounds_long_values() {
        assert_eq!(quote("internal"), "\"internal\"");
        let q = quote(&"v".repeat(10_240));
        assert!(q.len() < 100, "{q}");
        assert!(q.ends_with("…(10240 bytes)"), "{q}");
        assert!(q.starts_with(&format!("\"{}\"", "v".repeat(64))), "{q}");
        // Multi-byte characters are cut on a boundary and the size is in bytes.
        let q = quote(&"é".repeat(100));
        assert!(q.ends_with("…(200 bytes)"), "{q}");
    }

    #[test]
    fn urls_lose_credentials_queries_and_fragments() {
        let u = Url::parse("http://user:pa55@lb.example:8080/api/v1?token=abc#frag").unwrap();
        assert_eq!(redact_url(&u), "http://lb.example:8080/api/v1");
        assert_eq!(
            redact_endpoint("https://tok@lb.example/"),
            "https://lb.example/"
        );
        assert_eq!(
            redact_endpoint("http://user:pa55@[bad"),
            "http://[bad",
            "unparsable endpoints are scrubbed too"
        );
        assert_eq!(
            scrub_userinfo("error sending request for url (http://a:b@127.0.0.1:9/x): refused"),
            "error sending request for url (http://127.0.0.1:9/x): refused"
        );
        assert_eq!(scrub_userinfo("no urls here: a@b"), "no urls here: a@b");
        assert_eq!(
            scrub_userinfo("two http://x@h1 and https://y:z@h2/p"),
            "two http://h1 and https://h2/p"
        );
    }

    #[test]
    fn health_check_paths() {
        for good in [
            "/",
            "/healthz",
            "/a/b?x=1",
            &format!("/{}", "p".repeat(1023)),
        ] {
            assert_eq!(check_health_check_path(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "healthz",
            "/a b",
            "/a\tb",
            "/a\u{7}b",
            "/a\nb",
            &format!("/{}", "p".repeat(1024)),
        ] {
            let e = check_health_check_path(bad).unwrap_err();
            assert!(e.contains("starting with \"/\""), "{e}");
            assert!(e.len() < 300, "{e}");
        }
    }
}
