//! Webhook signatures and the retry schedule (no SQL: the receiver's side can use it
//! too). A delivery is a JSON `POST` with
//!
//! - `Shoal-Event-Id: evt_…` — the same in every attempt: receivers deduplicate by it;
//! - `Shoal-Signature: t=UNIX,v1=HEX` — HMAC-SHA256 under the endpoint's secret of
//!   `"{t}.{body}"` (Stripe's scheme): [`verify`] checks it and refuses a `t` more than
//!   [`TOLERANCE_S`] from now, so a captured delivery can't be replayed later.
//!
//! A failed attempt (no answer in 10 s, or not 2xx) is retried after
//! [`retry_after`]: 10 s, 30 s, 90 s, … tripling up to 6 h, [`MAX_ATTEMPTS`] in all
//! (over about three days), then the delivery is marked failed.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use swarm::piece::encode_hex;

pub const SIGNATURE_HEADER: &str = "shoal-signature";
pub const EVENT_ID_HEADER: &str = "shoal-event-id";
pub const EVENT_TYPE_HEADER: &str = "shoal-event-type";
/// How far a signature's time may be from the receiver's clock, seconds.
pub const TOLERANCE_S: i64 = 300;
/// Attempts before a delivery is given up.
pub const MAX_ATTEMPTS: i64 = 20;

/// Event types.
pub const INVOICE_FINALIZED: &str = "invoice.finalized";
pub const INVOICE_VOIDED: &str = "invoice.voided";
pub const LICENCE_EXPIRING: &str = "licence.expiring";
pub const LICENCE_EXPIRED: &str = "licence.expired";
pub const USAGE_ANOMALY: &str = "usage.anomaly";
/// How long before its end a licence is announced as expiring, seconds.
pub const EXPIRING_NOTICE_S: i64 = 7 * 86_400;

fn mac(secret: &str, t: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `Shoal-Signature` header for `body` sent at `t`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", encode_hex(&mac(secret, t, body).finalize().into_bytes()))
}

/// Checks a `Shoal-Signature` header against `body` (in constant time), and that its
/// time is within [`TOLERANCE_S`] of `now`.
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64) -> Result<(), &'static str> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.push(v),
            _ => {}
        }
    }
    let t = t.ok_or("no t= in the signature header")?;
    if (now - t).abs() > TOLERANCE_S {
        return Err("signature too old or from the future");
    }
    let ok = sigs.iter().any(|s| decode_hex(s).is_some_and(|bytes| mac(secret, t, body).verify_slice(&bytes).is_ok()));
    if ok { Ok(()) } else { Err("no v1 signature matches") }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
}

/// Seconds to wait after the `attempts`-th failed attempt (1-based).
pub fn retry_after(attempts: i64) -> i64 {
    let exp = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
    10i64.saturating_mul(3i64.saturating_pow(exp)).min(6 * 3_600)
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    encode_hex(&b)
}

/// A new endpoint secret: `whsec_` and 256 random bits.
pub fn new_secret() -> String {
    format!("whsec_{}", random_hex(32))
}

/// A new event id: `evt_` and 128 random bits.
pub fn new_event_id() -> String {
    format!("evt_{}", random_hex(16))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_refuse_tampering_replay_and_garbage() {
        let body = br#"{"id":"evt_1"}"#;
        let h = sign("whsec_a", 1_000, body);
        assert!(h.starts_with("t=1000,v1=") && h.len() == "t=1000,v1=".len() + 64, "{h}");
        assert_eq!(verify("whsec_a", &h, body, 1_000 + TOLERANCE_S), Ok(()));
        assert!(verify("whsec_b", &h, body, 1_000).is_err(), "another secret");
        assert!(verify("whsec_a", &h, br#"{"id":"evt_2"}"#, 1_000).is_err(), "another body");
        assert!(verify("whsec_a", &h, body, 1_000 + TOLERANCE_S + 1).is_err(), "replayed later");
        let moved = h.replace("t=1000", "t=1001");
        assert!(verify("whsec_a", &moved, body, 1_000).is_err(), "the time is signed too");
        for bad in ["", "t=x", "v1=00", "t=1000,v1=zz", "t=1000,v1=abc", "t=1000"] {
            assert!(verify("whsec_a", bad, body, 1_000).is_err(), "{bad:?}");
        }
        let rolled = format!("t=1000,v1={},v1={}", "00".repeat(32), &h["t=1000,v1=".len()..]);
        assert_eq!(verify("whsec_a", &rolled, body, 1_000), Ok(()), "any v1 may match (secret rollover)");
    }

    #[test]
    fn retries_triple_up_to_six_hours_for_about_three_days() {
        assert_eq!((1..=5).map(retry_after).collect::<Vec<_>>(), [10, 30, 90, 270, 810]);
        assert_eq!(retry_after(12), 6 * 3_600);
        assert_eq!(retry_after(i64::MAX), 6 * 3_600);
        let total: i64 = (1..MAX_ATTEMPTS).map(retry_after).sum();
        assert!((3 * 86_400..4 * 86_400).contains(&total), "{total}");
        assert_ne!(new_secret(), new_secret());
        assert!(new_event_id().starts_with("evt_"));
    }
}
