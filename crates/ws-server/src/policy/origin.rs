//! Which pages may open hub connections: the Origin policy.
//!
//! A browser sends the page's origin with every WebSocket it opens, and
//! sends the site's cookies along whatever page opened it. So a hub accepts
//! browsers only from origins it trusts: its own (the demo page), and those
//! listed with `--allowed-origin`; `*` trusts every origin and must be given
//! explicitly. Clients that send no Origin are not browsers and are accepted.

/// Whether a handshake with `origin`, made to the server named `host` (the
/// request's Host header), is allowed by the list `allowed`.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else { return true };
    let listed = allowed.iter().any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin));
    let own = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .zip(host)
        .is_some_and(|(origin_host, host)| origin_host.eq_ignore_ascii_case(host));
    listed || own
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_origin_listed_origins_and_non_browsers() {
        let none: Vec<String> = Vec::new();
        let host = Some("127.0.0.1:8080");
        assert!(origin_allowed(None, host, &none), "no Origin: not a browser");
        assert!(origin_allowed(Some("http://127.0.0.1:8080"), host, &none), "the demo page");
        assert!(origin_allowed(Some("https://127.0.0.1:8080"), host, &none));
        assert!(!origin_allowed(Some("http://evil.example"), host, &none));
        assert!(!origin_allowed(Some("null"), host, &none));
        assert!(!origin_allowed(Some("http://127.0.0.1:8081"), host, &none), "another port is another origin");
        assert!(!origin_allowed(Some("http://127.0.0.1:8080"), None, &none), "no Host, no own origin");

        let listed = vec!["https://app.example.com/".to_owned()];
        assert!(origin_allowed(Some("https://APP.example.com"), host, &listed));
        assert!(!origin_allowed(Some("http://app.example.com"), host, &listed), "the scheme counts");
        assert!(origin_allowed(Some("http://anything.example"), host, &["*".to_owned()]));
    }
}
