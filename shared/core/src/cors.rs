//! Cross-origin requests from browsers: none are allowed unless `CORS_ALLOW_ORIGINS` lists
//! origins (or `*`). A listed origin's requests get `Access-Control-Allow-Origin` (and `Vary:
//! Origin`), and its preflight `OPTIONS` on any route of the table answers 204 with the route's
//! methods and the headers clients send (`Authorization`, `Content-Type`); anything else is
//! answered as if CORS did not exist, so a browser refuses it.

/// The origins whose browser requests are allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    origins: Vec<String>,
}

impl Cors {
    /// `CORS_ALLOW_ORIGINS`: origins separated by commas (`https://app.example`), or `*`.
    pub fn parse(value: &str) -> Self {
        Self {
            origins: value
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_string())
                .filter(|o| !o.is_empty())
                .collect(),
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`, when it is allowed.
    fn allow(&self, headers: &[(&str, &str)]) -> Option<String> {
        let origin = header(headers, "origin")?;
        if self.origins.iter().any(|o| o == "*") {
            return Some("*".into());
        }
        self.origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
            .then(|| origin.to_string())
    }

    /// The CORS headers of a reply to a request with these headers (none unless its origin is
    /// allowed).
    pub fn headers(&self, headers: &[(&str, &str)]) -> Vec<(&'static str, String)> {
        self.allow(headers).map_or_else(Vec::new, |origin| {
            vec![
                ("access-control-allow-origin", origin),
                ("vary", "Origin".into()),
            ]
        })
    }

    /// The headers of a 204 answer to a preflight (`OPTIONS` with
    /// `Access-Control-Request-Method`) from an allowed origin, for a route that takes
    /// `methods`; `None` for anything else.
    pub fn preflight(
        &self,
        headers: &[(&str, &str)],
        methods: &[&str],
    ) -> Option<Vec<(&'static str, String)>> {
        header(headers, "access-control-request-method")?;
        let mut out = self.headers(headers);
        if out.is_empty() {
            return None;
        }
        out.push(("access-control-allow-methods", methods.join(", ")));
        out.push((
            "access-control-allow-headers",
            "authorization, content-type".into(),
        ));
        out.push(("access-control-max-age", "600".into()));
        Some(out)
    }
}

fn header<'a>(headers: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM_APP: &[(&str, &str)] = &[("Origin", "https://app.example")];

    #[test]
    fn nothing_is_allowed_unless_listed() {
        assert!(Cors::default().headers(FROM_APP).is_empty());
        let cors = Cors::parse(" https://app.example/ , https://other.example");
        assert_eq!(cors.headers(FROM_APP)[0].1, "https://app.example");
        assert!(cors
            .headers(&[("Origin", "https://evil.example")])
            .is_empty());
        assert!(cors.headers(&[]).is_empty());
        assert_eq!(Cors::parse("*").headers(FROM_APP)[0].1, "*");
    }

    #[test]
    fn a_preflight_from_a_listed_origin_names_the_routes_methods() {
        let cors = Cors::parse("https://app.example");
        let preflight = [
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "POST"),
        ];
        let h = cors.preflight(&preflight, &["POST"]).unwrap();
        assert!(h.contains(&("access-control-allow-methods", "POST".into())));
        assert!(
            cors.preflight(FROM_APP, &["POST"]).is_none(),
            "not a preflight"
        );
        assert!(Cors::default().preflight(&preflight, &["POST"]).is_none());
    }
}
