//! Text that leaves berth (events, conditions, log lines): bounded in size and free of
//! credentials.

/// `s` cut to at most `max` bytes on a character boundary, with `…` and the original size
/// when it was cut.
pub fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let tail = format!("… ({} bytes)", s.len());
    let mut end = max.saturating_sub(tail.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{tail}", &s[..end])
}

/// `s` with the user information of every URL in it (`scheme://user:password@host`)
/// replaced by `***`, and the values of query parameters that commonly carry secrets
/// (`token`, `access_token`, `password`, `secret`, `key`, `sig`, `signature`) too.
pub fn redact(s: &str) -> String {
    redact_query_secrets(&berth_providers::bounds::replace_userinfo(s, "***@"))
}

fn redact_query_secrets(s: &str) -> String {
    const KEYS: [&str; 7] = [
        "token",
        "access_token",
        "password",
        "secret",
        "key",
        "sig",
        "signature",
    ];
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let Some(i) = rest.find(['?', '&']) else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        let Some(eq) = rest.find('=') else {
            continue;
        };
        let name = &rest[..eq];
        if KEYS.iter().any(|k| name.eq_ignore_ascii_case(k)) {
            out.push_str(name);
            out.push_str("=***");
            let end = rest[eq + 1..]
                .find(|c: char| c == '&' || c == '#' || c.is_whitespace() || c == '"')
                .map_or(rest.len(), |e| eq + 1 + e);
            rest = &rest[end..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_on_a_char_boundary_and_says_how_big_it_was() {
        assert_eq!(bounded("short", 10), "short");
        let long = "é".repeat(2000);
        let b = bounded(&long, 1024);
        assert!(b.len() <= 1024, "{}", b.len());
        assert!(b.ends_with("… (4000 bytes)"), "{b}");
        let big = "x".repeat(5 << 20);
        assert!(bounded(&big, 1024).len() <= 1024);
    }

    #[test]
    fn credentials_in_urls_are_removed() {
        assert_eq!(
            redact("error sending request for url (http://admin:s3cret@127.0.0.1:9/v1/x): refused"),
            "error sending request for url (http://***@127.0.0.1:9/v1/x): refused"
        );
        assert_eq!(
            redact("https://user@host/p and https://other:pw@h2"),
            "https://***@host/p and https://***@h2"
        );
        assert_eq!(redact("no url here"), "no url here");
        assert_eq!(
            redact("GET http://h/v1?cluster=c&token=abc&x=1 failed"),
            "GET http://h/v1?cluster=c&token=*** &x=1 failed".replace("*** &", "***&")
        );
        assert!(!redact("http://h/?password=hunter2").contains("hunter2"));
    }
}
