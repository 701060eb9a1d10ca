//! Any request body through the admin API's parsers and checks (`catalogue::requests`:
//! what an account's client — or anyone holding a leaked API token — sends the
//! tracker): a checked value or a reason, never a panic.
#![no_main]

use catalogue::requests::{AddLicense, CreateChannel, Rotate, parse, parse_or_default};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&now, body)) = data.split_first() else { return };
    let now = i64::from(now) << 24;
    if let Ok(c) = parse::<CreateChannel>(body) {
        let _ = c.channel_id();
        let _ = catalogue::valid_channel_name(&c.name);
    }
    if let Ok(r) = parse_or_default::<Rotate>(body)
        && let Ok(Some(until)) = r.previous_until(now)
    {
        assert!(until > now);
    }
    if let Ok(l) = parse::<AddLicense>(body)
        && let Ok((from, Some(until))) = l.period(now)
    {
        assert!(until > from);
    }
});
