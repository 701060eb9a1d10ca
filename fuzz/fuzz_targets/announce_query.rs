//! Any query string through the tracker's announce and scrape parsers (what reaches the
//! tracker from anyone on the internet, up to its 4 KiB limit): a request or an error,
//! never a panic, and nothing parsed larger than what was sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm::announce::{MAX_QUERY_LEN, MAX_SCRAPE_HASHES, parse_announce, parse_scrape};

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    if query.len() > MAX_QUERY_LEN {
        return;
    }
    if let Ok(a) = parse_announce(query) {
        // Nothing parsed is larger than what was sent.
        assert!(a.token.as_ref().is_none_or(|t| t.len() <= query.len()));
    }
    if let Ok(hashes) = parse_scrape(query) {
        assert!(hashes.len() <= MAX_SCRAPE_HASHES);
    }
});
