//! The watch page browsers open: `GET /watch/{channel}` (the page, with an embed
//! snippet) and `GET /watch/watch.js` (its player: hls.js and a stats overlay, built
//! from `web/watch/` by `web/build.mjs` and committed, so a `cargo build` needs no
//! Node; a test rebuilds it and compares). Nothing is fetched from elsewhere: the page
//! works with no internet.

use httpkit::Body;
use hyper::{Response, StatusCode};

const PAGE: &str = include_str!("../assets/watch.html");
const PLAYER: &str = include_str!("../assets/watch.js");

/// The answer for `path` if it is the watch page of `channel` or its player; `host` is
/// the request's `Host` (for the embed snippet's absolute URL).
pub fn answer(path: &str, channel: &str, host: Option<&str>) -> Option<Response<Body>> {
    let rest = path.strip_prefix("/watch/")?;
    if rest == "watch.js" {
        let player = bytes::Bytes::from_static(PLAYER.as_bytes());
        return Some(reply(StatusCode::OK, "text/javascript; charset=utf-8", Body::full(player)));
    }
    if rest != channel {
        return Some(reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Body::full(format!("this seeder carries /watch/{channel}\n")),
        ));
    }
    // The channel name is the operator's (checked to be a path segment at creation);
    // escaped anyway, as is the host a client sent.
    let origin = host.map(|h| format!("http://{}", escape(h))).unwrap_or_default();
    let page = PAGE.replace("{{CHANNEL}}", &escape(channel)).replace("{{ORIGIN}}", &origin);
    Some(reply(StatusCode::OK, "text/html; charset=utf-8", Body::full(page)))
}

fn reply(status: StatusCode, ctype: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
    r
}

/// HTML-escaped text (for an attribute or element content).
fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: Response<Body>) -> String {
        match r.into_body() {
            Body::Full(parts) => parts.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect(),
            _ => panic!("a whole body"),
        }
    }

    #[test]
    fn the_page_names_its_channel_and_player_and_nothing_from_elsewhere() {
        let r = answer("/watch/demo", "demo", Some("10.0.0.5:8730")).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let page = text(r);
        assert!(page.contains(r#"data-src="/hls/demo/live.m3u8""#), "{page}");
        assert!(page.contains(r#"<script src="/watch/watch.js">"#));
        assert!(page.contains("http://10.0.0.5:8730/watch/demo"), "the embed snippet: {page}");
        assert!(!page.contains("https://"), "nothing from a CDN");
        assert_eq!(answer("/watch/other", "demo", None).unwrap().status(), StatusCode::NOT_FOUND);
        assert_eq!(answer("/watch/watch.js", "demo", None).unwrap().status(), StatusCode::OK);
        assert!(answer("/hls/demo/live.m3u8", "demo", None).is_none());
        let evil = answer("/watch/demo", "demo", Some("x\"><script>")).unwrap();
        let evil = text(evil);
        assert!(!evil.contains("\"><script>"), "the Host header is escaped");
    }
}
