//! The catalogue: accounts, channels and their keys, stream-key hashes, licences, plans,
//! usage and invoices — what ingest and the tracker both read, so neither imports the
//! other.
//!
//! - [`admission`]: the one rule deciding whether a channel may be published and
//!   watched now ([`admission::admit`]), and ingest's [`admission::Authorizer`].
//! - [`secrets`]: stream-key hashes, seeder tokens, the channels' signing keys
//!   ([`secrets::KeyDir`]).
//! - [`file`]: the catalogue of a node without SQL, a JSON channel file.
//! - [`db`]: the catalogue in SQL (sqlx; SQLite embedded, PostgreSQL for fleets; the
//!   migrations in `migrations/`).
//! - [`directory`]: the admission of every channel, cached for announces
//!   ([`directory::ChannelDirectory`]) and publishes ([`directory::CatalogueAuthorizer`]).
//! - [`usage`] and [`hll`]: what metering writes, and unique-viewer sketches.
//! - [`export`]: usage and invoices as CSV, an invoice as printable HTML.
//! - [`calendar`]: UTC calendar months and dates (invoices cover calendar months).
//! - [`webhooks`]: webhook signatures (HMAC-SHA256, Stripe's scheme) and retry schedule.
//! - [`requests`]: the admin API's request bodies, parsed and checked.
//!
//! The SQL parts (`db`, the directory and publish check over it, `testing`) are the
//! default feature `sql`; ingest builds without it (it asks an `Authorizer` and never
//! talks SQL itself), and so does the fuzz build.

pub mod admission;
pub mod calendar;
#[cfg(feature = "sql")]
pub mod db;
#[cfg(feature = "sql")]
mod db_directory;
pub mod directory;
#[cfg(feature = "sql")]
pub mod export;
pub mod file;
pub mod hll;
pub mod requests;
pub mod secrets;
#[cfg(feature = "sql")]
pub mod testing;
pub mod usage;
pub mod webhooks;

/// Channel names: 1-64 of `a-z`, `0-9`, `-` and `_` (they appear in URLs and file names).
pub fn valid_channel_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}
