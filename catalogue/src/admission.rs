//! The admission rule: may a channel be published and watched now, and if not, why —
//! decided in one place for the channel file and the SQL catalogue alike. Ingest asks
//! an [`Authorizer`] (stream key → [`Grant`]); the tracker asks a
//! [`crate::directory::ChannelDirectory`] (info-hash → [`crate::directory::Admission`]).

use std::sync::Arc;

use swarm::piece::ChannelKeypair;

/// A channel allowed to publish now.
#[derive(Debug, Clone)]
pub struct Grant {
    pub channel: String,
    pub key: Arc<ChannelKeypair>,
    /// Ad breaks are metered on this channel.
    pub carries_ads: bool,
    /// SRT publishers must encrypt with this passphrase (10-79 characters).
    pub srt_passphrase: Option<String>,
}

/// Why a publish was refused; [`Refusal::label`] is the bounded metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("unknown stream key: check the key in the encoder's stream settings")]
    UnknownKey,
    #[error("publish to rtmp://HOST/live/<stream-key> (application {0:?} is not served)")]
    BadApplication(String),
    #[error("channel {0} is disabled by its operator")]
    Disabled(String),
    #[error("channel {0} carries ads and has no commercial license: add one, or mark the channel ad-free")]
    LicenseRequired(String),
    #[error("channel {channel}'s commercial license expired at {until_unix} (Unix time): renew it")]
    LicenseExpired { channel: String, until_unix: u64 },
    #[error("channel {channel} has no usable signing key on this ingest node: {detail}")]
    NoSigningKey { channel: String, detail: String },
    #[error("channel {0} is already being published from another address; stop that encoder first")]
    AlreadyPublishing(String),
    #[error("the channel directory could not be read: {0}")]
    Directory(String),
}

impl Refusal {
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::UnknownKey => "unknown_key",
            Refusal::BadApplication(_) => "bad_application",
            Refusal::Disabled(_) => "channel_disabled",
            Refusal::LicenseRequired(_) => "license_required",
            Refusal::LicenseExpired { .. } => "license_expired",
            Refusal::NoSigningKey { .. } => "no_signing_key",
            Refusal::AlreadyPublishing(_) => "already_publishing",
            Refusal::Directory(_) => "directory_error",
        }
    }
}

/// Decides whether a stream key may publish, and with which channel key.
pub trait Authorizer: Send + Sync + std::fmt::Debug {
    /// Whether `stream_key` may publish at `now_unix`: its channel's name, or why not.
    /// Ingest asks this again for every live session each time the catalogue may have
    /// changed, so a leaked key that was rotated, a disabled channel or an ended
    /// licence stops a publisher already on air.
    fn check(&self, stream_key: &str, now_unix: u64) -> Result<String, Refusal>;
    /// [`Authorizer::check`], and the channel's signing key: what a new session needs.
    fn authorize(&self, stream_key: &str, now_unix: u64) -> Result<Grant, Refusal>;
}

/// Where a channel's commercial licence stands at the moment asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LicenceStanding {
    /// A commercial licence covers now.
    Current,
    /// The latest commercial licence ended at this Unix time.
    ExpiredAt(u64),
    /// No commercial licence ever covered it.
    None,
}

/// What the rule needs to know of a channel.
#[derive(Debug, Clone, Copy)]
pub struct Standing<'a> {
    pub name: &'a str,
    pub enabled: bool,
    pub carries_ads: bool,
    pub licence: LicenceStanding,
}

/// The rule: a disabled channel may not be published or watched; a channel that carries
/// ads needs a commercial licence covering now; ad-free channels are free.
pub fn admit(s: Standing<'_>) -> Result<(), Refusal> {
    if !s.enabled {
        return Err(Refusal::Disabled(s.name.to_owned()));
    }
    if s.carries_ads {
        match s.licence {
            LicenceStanding::Current => {}
            LicenceStanding::ExpiredAt(until_unix) => {
                return Err(Refusal::LicenseExpired { channel: s.name.to_owned(), until_unix });
            }
            LicenceStanding::None => return Err(Refusal::LicenseRequired(s.name.to_owned())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(enabled: bool, carries_ads: bool, licence: LicenceStanding, expect: Result<(), &str>) {
        let got = admit(Standing { name: "news", enabled, carries_ads, licence });
        assert_eq!(got.map_err(|r| r.label()), expect, "{enabled} {carries_ads} {licence:?}");
    }

    #[test]
    fn the_rule() {
        use LicenceStanding::*;
        check(true, false, None, Ok(()));
        check(true, false, ExpiredAt(5), Ok(()));
        check(false, false, Current, Err("channel_disabled"));
        check(false, true, Current, Err("channel_disabled"));
        check(true, true, Current, Ok(()));
        check(true, true, None, Err("license_required"));
        check(true, true, ExpiredAt(5), Err("license_expired"));
    }
}
