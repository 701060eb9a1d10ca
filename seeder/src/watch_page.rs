//! The watch page browsers open: `GET /watch/{channel}` (the page, with an embed
//! snippet) and `GET /watch/watch.js` (its player: hls.js and a stats overlay); for
//! sites with their own hls.js, `GET /watch/shoal-hls.js` (the swarm for their player)
//! and `GET /watch/{channel}.json` (what it joins with). The scripts are built from
//! `web/watch/` by `web/build.mjs` and committed, so a `cargo build` needs no Node; a
//! test rebuilds them and compares. Nothing is fetched from elsewhere: the page
//! works with no internet.

use httpkit::Body;
use hyper::{Response, StatusCode};

const PAGE: &str = include_str!("../assets/watch.html");
const PLAYER: &str = include_str!("../assets/watch.js");
/// The script for sites with their own hls.js (`web/watch/embed.ts`).
const EMBED: &str = include_str!("../assets/shoal-hls.js");

/// What a page needs to join the swarm (absent: it plays the HLS fallback only).
#[derive(Debug, Clone)]
pub struct PageSwarm {
    /// The channel's id (its public key), 64 hex digits: what pieces are verified with.
    pub channel_id: String,
    /// The tracker as the seeder reaches it, `http://HOST:PORT`.
    pub tracker: String,
    pub substreams: u8,
    /// The seeder's WebRTC host (its counters go to `/metrics`).
    pub host: Option<net::rtc::RtcHost>,
    /// STUN and TURN servers the page's connections use.
    pub ice_servers: Vec<net::rtc::IceServer>,
}

impl PageSwarm {
    /// The tracker's WebSocket as a page reaches it: the tracker's own address, unless
    /// that is loopback or unspecified while the page came from elsewhere (an
    /// all-in-one node reached by its LAN address): then the page's host, same port.
    pub fn tracker_ws(&self, page_host: Option<&str>) -> String {
        let base = self.tracker.trim_end_matches('/');
        let authority = base.strip_prefix("http://").unwrap_or(base);
        let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "8700"));
        let local = |h: &str| matches!(h, "127.0.0.1" | "localhost" | "[::1]" | "0.0.0.0" | "[::]");
        let page_host = page_host.map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name));
        let host = match page_host {
            Some(p) if local(host) && !local(p) => p,
            _ => host,
        };
        format!("ws://{host}:{port}/announce")
    }
}

/// The answer for `path` if it is the watch page of `channel` or its player; `host` is
/// the request's `Host` (for the embed snippet's absolute URL and the tracker's), and
/// `swarm` what the page needs to join the swarm.
pub fn answer(path: &str, channel: &str, host: Option<&str>, swarm: Option<&PageSwarm>) -> Option<Response<Body>> {
    let rest = path.strip_prefix("/watch/")?;
    if rest == "watch.js" || rest == "shoal-hls.js" {
        let script = if rest == "watch.js" { PLAYER } else { EMBED };
        let script = bytes::Bytes::from_static(script.as_bytes());
        return Some(reply(StatusCode::OK, "text/javascript; charset=utf-8", Body::full(script)));
    }
    if rest.strip_suffix(".json") == Some(channel) {
        // For shoal-hls.js on a broadcaster's own site: any origin may read it, as the HLS.
        let mut r = reply(StatusCode::OK, "application/json", Body::full(channel_json(channel, host, swarm)));
        r.headers_mut()
            .insert(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN, hyper::header::HeaderValue::from_static("*"));
        return Some(r);
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
    let (id, tracker, substreams, ice) = match swarm {
        Some(s) => (
            s.channel_id.clone(),
            s.tracker_ws(host),
            s.substreams.to_string(),
            net::rtc::IceServer::to_json(&s.ice_servers).to_string(),
        ),
        None => (String::new(), String::new(), String::new(), "[]".to_owned()),
    };
    let page = PAGE
        .replace("{{CHANNEL}}", &escape(channel))
        .replace("{{ORIGIN}}", &origin)
        .replace("{{CHANNEL_ID}}", &escape(&id))
        .replace("{{TRACKER}}", &escape(&tracker))
        .replace("{{SUBSTREAMS}}", &substreams)
        .replace("{{ICE_SERVERS}}", &escape(&ice));

    Some(reply(StatusCode::OK, "text/html; charset=utf-8", Body::full(page)))
}

/// What `shoal-hls.js` needs to play `channel`: its playlist and, when the seeder takes
/// pages over WebRTC, what a page joins the swarm with (else nulls: plain LL-HLS).
fn channel_json(channel: &str, host: Option<&str>, swarm: Option<&PageSwarm>) -> String {
    serde_json::json!({
        "src": format!("/hls/{channel}/live.m3u8"),
        "channel_id": swarm.map(|s| s.channel_id.clone()),
        "tracker": swarm.map(|s| s.tracker_ws(host)),
        "substreams": swarm.map_or(0, |s| s.substreams),
        "ice_servers": net::rtc::IceServer::to_json(swarm.map_or(&[], |s| &s.ice_servers)),
    })
    .to_string()
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
        let r = answer("/watch/demo", "demo", Some("10.0.0.5:8730"), None).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let page = text(r);
        assert!(page.contains(r#"data-src="/hls/demo/live.m3u8""#), "{page}");
        assert!(page.contains(r#"<script src="/watch/watch.js">"#));
        assert!(page.contains("http://10.0.0.5:8730/watch/demo"), "the embed snippet: {page}");
        assert!(!page.contains("https://"), "nothing from a CDN");
        assert!(page.contains(r#"data-tracker="""#), "no swarm: HLS only");
        assert_eq!(answer("/watch/other", "demo", None, None).unwrap().status(), StatusCode::NOT_FOUND);
        assert_eq!(answer("/watch/watch.js", "demo", None, None).unwrap().status(), StatusCode::OK);
        assert!(answer("/hls/demo/live.m3u8", "demo", None, None).is_none());
        let evil = answer("/watch/demo", "demo", Some("x\"><script>"), None).unwrap();
        let evil = text(evil);
        assert!(!evil.contains("\"><script>"), "the Host header is escaped");
    }

    /// A seeder's swarm as pages see it: channel ab…ab, a loopback tracker, one STUN server.
    fn swarm() -> PageSwarm {
        PageSwarm {
            channel_id: "ab".repeat(32),
            tracker: "http://127.0.0.1:8700".into(),
            substreams: 4,
            host: None,
            ice_servers: vec![net::rtc::IceServer::new("stun:stun.example.org", None, None).unwrap()],
        }
    }

    #[test]
    fn the_page_is_told_the_channel_and_the_trackers_websocket_as_it_can_reach_it() {
        let swarm = swarm();
        let page = text(answer("/watch/demo", "demo", Some("10.0.0.5:8730"), Some(&swarm)).unwrap());
        assert!(
            page.contains(r#"data-ice-servers="[{&quot;urls&quot;:&quot;stun:stun.example.org&quot;}]""#),
            "{page}"
        );
        assert!(page.contains(&format!(r#"data-channel-id="{}""#, "ab".repeat(32))), "{page}");
        assert!(page.contains(r#"data-tracker="ws://10.0.0.5:8700/announce""#), "{page}");
        assert!(page.contains(r#"data-substreams="4""#), "{page}");
        assert_eq!(swarm.tracker_ws(Some("127.0.0.1:8730")), "ws://127.0.0.1:8700/announce");
        assert_eq!(swarm.tracker_ws(None), "ws://127.0.0.1:8700/announce");
        let public = PageSwarm { tracker: "http://tracker.example:8700/".into(), ..swarm };
        assert_eq!(public.tracker_ws(Some("10.0.0.5:8730")), "ws://tracker.example:8700/announce");
    }

    #[test]
    fn a_site_with_its_own_player_gets_the_script_and_the_channel_from_any_origin() {
        let script = answer("/watch/shoal-hls.js", "demo", None, None).unwrap();
        assert_eq!(script.headers()[hyper::header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert!(text(script).contains("Shoal"));
        let swarm = swarm();
        let r = answer("/watch/demo.json", "demo", Some("10.0.0.5:8730"), Some(&swarm)).unwrap();
        assert_eq!(r.headers()[hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let v: serde_json::Value = serde_json::from_str(&text(r)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "src": "/hls/demo/live.m3u8",
                "channel_id": "ab".repeat(32),
                "tracker": "ws://10.0.0.5:8700/announce",
                "substreams": 4,
                "ice_servers": [{"urls": "stun:stun.example.org"}],
            })
        );
        // A seeder that takes no pages over WebRTC: the playlist only.
        let v: serde_json::Value =
            serde_json::from_str(&text(answer("/watch/demo.json", "demo", None, None).unwrap())).unwrap();
        assert_eq!(v["channel_id"], serde_json::Value::Null);
        assert_eq!(v["src"], "/hls/demo/live.m3u8");
        assert_eq!(answer("/watch/other.json", "demo", None, None).unwrap().status(), StatusCode::NOT_FOUND);
    }
}
