//! The admin API's request bodies, parsed and checked with no database: what the
//! tracker's admin routes take from an account's client (and what `fuzz/admin_json`
//! throws anything at). Each parse gives a checked value or a reason for the 400.

use serde::Deserialize;
use swarm::piece::ChannelId;

/// Longest grace period of an old stream key after a rotation, seconds.
pub const MAX_GRACE_S: u32 = 86_400;

/// `POST /v1/channels`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    pub name: String,
    pub public_key: String,
    #[serde(default)]
    pub carries_ads: bool,
}

/// `POST /v1/channels/{name}/stream-key` (the body may be empty).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    #[serde(default, deserialize_with = "whole_u32")]
    pub grace_seconds: u32,
}

/// A JSON integer, written `35` or `35.0` (JSON Schema's `integer` is any number with
/// no fractional part, and clients write either).
fn whole_u32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    n.as_u64()
        .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX)).map(|f| f as u64))
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| serde::de::Error::custom(format!("{n}: a whole number of seconds, 0 or more")))
}

/// `POST /v1/channels/{name}/licenses`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddLicense {
    pub plan: String,
    pub valid_from: Option<i64>,
    pub valid_until: Option<i64>,
}

/// `POST /v1/channels/{name}/disable`: what becomes of the channel's licences.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disable {
    /// Required when the channel has a licence running or to come.
    pub licences: Option<OnDisable>,
}

/// A disabled channel's licences: ended now (a running one billed to now, one not
/// started revoked), or kept (billed on; the channel may be enabled again within them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDisable {
    End,
    Keep,
}

/// `POST /v1/webhooks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    pub url: String,
}

/// A JSON body, or why not.
pub fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    // A JSON object: serde would also build a struct from an array of its fields.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err("request body: a JSON object".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("request body: {e}"))
}

/// A JSON body that may be left empty (then the type's default).
pub fn parse_or_default<'a, T: Deserialize<'a> + Default>(body: &'a [u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse(body)
}

impl CreateChannel {
    /// The channel's public key, checked.
    pub fn channel_id(&self) -> Result<ChannelId, &'static str> {
        ChannelId::from_hex(&self.public_key).ok_or("public_key: the channel's Ed25519 public key, 64 hex characters")
    }
}

impl Rotate {
    /// Until when the previous key keeps working (`None`: not at all), from `now`.
    pub fn previous_until(&self, now: i64) -> Result<Option<i64>, String> {
        if self.grace_seconds > MAX_GRACE_S {
            return Err(format!("grace_seconds: at most {MAX_GRACE_S}"));
        }
        Ok((self.grace_seconds > 0).then(|| now.saturating_add(i64::from(self.grace_seconds))))
    }
}

/// How far back an account may start a licence it buys, seconds: clocks differ and a
/// show's start is typed in by hand. Earlier starts are the platform's to grant
/// (`shoal admin license grant`): they bill time already past.
pub const MAX_BACKDATE_S: i64 = 3_600;

impl AddLicense {
    /// `[from, until)`, `from` defaulting to `now` and at most [`MAX_BACKDATE_S`] before it.
    pub fn period(&self, now: i64) -> Result<(i64, Option<i64>), String> {
        let from = self.valid_from.unwrap_or(now);
        if from < now.saturating_sub(MAX_BACKDATE_S) {
            return Err(format!(
                "valid_from: at most {MAX_BACKDATE_S} s back; a licence from earlier is granted by the platform"
            ));
        }
        if self.valid_until.is_some_and(|u| u <= from) {
            return Err("valid_until must be after valid_from".into());
        }
        Ok((from, self.valid_until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked() {
        assert!(parse::<CreateChannel>(br#"{"name":"a","public_key":"00"}"#).unwrap().channel_id().is_err());
        assert!(parse::<CreateChannel>(br#"{"name":"a","public_key":"00","x":1}"#).is_err(), "unknown field");
        assert_eq!(parse_or_default::<Rotate>(b" ").unwrap().previous_until(10), Ok(None));
        assert_eq!(parse::<Rotate>(br#"{"grace_seconds":60}"#).unwrap().previous_until(10), Ok(Some(70)));
        assert!(parse::<Rotate>(br#"{"grace_seconds":86401}"#).unwrap().previous_until(10).is_err());
        assert_eq!(parse::<Rotate>(br#"{"grace_seconds":35.0}"#).unwrap().previous_until(10), Ok(Some(45)));
        assert!(parse::<Rotate>(br#"{"grace_seconds":3.5}"#).is_err());
        assert!(parse::<Rotate>(br#"{"grace_seconds":-1}"#).is_err());
        assert!(parse::<Rotate>(b"[60]").is_err(), "an array of the fields is not an object");
        let l = parse::<AddLicense>(br#"{"plan":"p","valid_from":5,"valid_until":5}"#).unwrap();
        assert!(l.period(0).is_err());
        assert_eq!(parse::<AddLicense>(br#"{"plan":"p"}"#).unwrap().period(7), Ok((7, None)));
        let back =
            |from: i64| parse::<AddLicense>(format!(r#"{{"plan":"p","valid_from":{from}}}"#).as_bytes()).unwrap();
        assert_eq!(back(10_000 - MAX_BACKDATE_S).period(10_000), Ok((10_000 - MAX_BACKDATE_S, None)));
        assert!(back(10_000 - MAX_BACKDATE_S - 1).period(10_000).unwrap_err().contains("granted by the platform"));
    }
}
