//! `shoal admin`: the operator's command line.
//!
//! Two kinds of commands. The platform's own (`account`, `token`, `plan`) open the
//! catalogue directly (`--database-url`): they make the accounts and the first API
//! tokens that everything else needs. An account's (`channel`, `license`, `usage`,
//! `invoice`, `audit`, `plans`) go through the tracker's admin API with that account's
//! token, so they see and change only its own. `channel create` makes the channel's
//! signing key here, in the key directory (it never leaves this machine; copy it to the
//! ingest nodes), and sends only the public key.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use catalogue::calendar::Month;
use catalogue::db::{Db, Plan, Price};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    /// The tracker's base URL (http only: run it on the tracker's host or through a tunnel).
    #[arg(long, env = "SHOAL_TRACKER_URL", default_value = "http://127.0.0.1:8700")]
    tracker: String,
    /// The account's API token (`shoal admin account create` prints the first one).
    #[arg(long, env = "SHOAL_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The catalogue, for the platform's commands (`account`, `token`, `plan create`).
    #[arg(long, env = "SHOAL_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    cmd: AdminCmd,
}

#[derive(Debug, Subcommand)]
enum AdminCmd {
    /// Accounts (platform; needs --database-url).
    #[command(subcommand)]
    Account(AccountCmd),
    /// API tokens (platform; needs --database-url).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Plans licences are sold on (`create`: platform, needs --database-url).
    #[command(subcommand)]
    Plan(PlanCmd),
    /// The account's channels and stream keys.
    #[command(subcommand)]
    Channel(ChannelCmd),
    /// The account's licences.
    #[command(subcommand)]
    License(LicenseCmd),
    /// Usage per channel in [FROM, TO) (Unix seconds): hour by hour, or summed with
    /// unique viewers over the whole period (--summary).
    Usage {
        #[command(flatten)]
        period: Period,
        #[arg(long)]
        summary: bool,
        /// Per UTC day (with unique viewers per day).
        #[arg(long)]
        daily: bool,
        #[arg(long)]
        csv: bool,
    },
    /// Invoices: the account's (`list`, `preview`, `show`), and issuing them (`finalize`,
    /// `void`: platform, need --database-url).
    #[command(subcommand)]
    Invoice(InvoiceCmd),
    /// The account's webhook endpoints and their deliveries.
    #[command(subcommand)]
    Webhook(WebhookCmd),
    /// The account's latest audit entries.
    Audit,
}

#[derive(Debug, Subcommand)]
enum WebhookCmd {
    /// The account's endpoints.
    List,
    /// A new endpoint (its signing secret is printed once).
    Create { url: String },
    /// Stop sending to an endpoint.
    Disable { id: i64 },
    /// The latest deliveries and how each went.
    Deliveries,
}

#[derive(Debug, Subcommand)]
enum AccountCmd {
    /// Create an account and its first API token (printed once).
    Create { name: String },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// A new API token for an account (printed once).
    Create {
        #[arg(long)]
        account: String,
        #[arg(long, default_value = "cli")]
        label: String,
    },
}

#[derive(Debug, Subcommand)]
enum PlanCmd {
    /// The plans the account may buy, each at its current price version.
    List,
    /// Create a plan (platform).
    Create(NewPlan),
    /// A new price for a plan: its next version (platform). Running licences keep the
    /// version they were sold on; licences added from now on take this one.
    Reprice {
        name: String,
        #[command(flatten)]
        price: PriceArgs,
    },
    /// Let an account buy a plan that is not offered to all (platform).
    Grant {
        name: String,
        #[arg(long)]
        account: String,
    },
}

#[derive(Debug, Args)]
struct NewPlan {
    name: String,
    /// Licences on it allow ads.
    #[arg(long)]
    commercial: bool,
    /// Only accounts it is granted to may buy it (`plan grant`); by default every account may.
    #[arg(long)]
    private: bool,
    #[command(flatten)]
    price: PriceArgs,
}

#[derive(Debug, Args)]
struct PriceArgs {
    #[arg(long, default_value = "EUR")]
    currency: String,
    #[arg(long)]
    monthly_price_cents: i64,
    #[arg(long, default_value_t = 0)]
    included_viewer_hours: i64,
    #[arg(long, default_value_t = 0)]
    overage_cents_per_viewer_hour: i64,
}

impl PriceArgs {
    fn price(self) -> Price {
        Price {
            currency: self.currency,
            monthly_price_cents: self.monthly_price_cents,
            included_viewer_hours: self.included_viewer_hours,
            overage_cents_per_viewer_hour: self.overage_cents_per_viewer_hour,
        }
    }
}

#[derive(Debug, Subcommand)]
enum ChannelCmd {
    /// The account's channels and whether each may publish.
    List,
    /// Create a channel: its signing key in the key directory, the stream key printed once.
    Create {
        name: String,
        /// It carries ads (it then needs a commercial licence).
        #[arg(long)]
        ads: bool,
        /// Where the signing key is written (copy it to the ingest nodes' key directory).
        #[arg(long, env = "SHOAL_INGEST_KEY_DIR", default_value = "shoal-data/keys")]
        key_dir: PathBuf,
    },
    /// Stop publishing and watching. A channel with a licence running or to come needs
    /// --licences: `end` ends it now, `keep` keeps it (and its bill) while the channel is off.
    Disable {
        name: String,
        #[arg(long, value_parser = ["end", "keep"])]
        licences: Option<String>,
    },
    /// Allow publishing and watching again.
    Enable { name: String },
    /// Delete the channel: no longer listed, watched, published or changed (its usage,
    /// licences and invoices stay; its name and key stay taken). A channel with a
    /// licence running or to come needs --licences end.
    Delete {
        name: String,
        #[arg(long, value_parser = ["end"])]
        licences: Option<String>,
    },
    /// A new stream key (printed once); the old one keeps working for --grace-seconds.
    RotateKey {
        name: String,
        #[arg(long, default_value_t = 0)]
        grace_seconds: u32,
    },
}

#[derive(Debug, Subcommand)]
enum LicenseCmd {
    /// The account's licences.
    List,
    /// License a channel on a plan the account may buy (billed pro rata), starting now
    /// or within the last hour.
    Add(NewLicense),
    /// License an account's channel on any plan from any time (platform).
    Grant {
        #[arg(long)]
        account: String,
        #[command(flatten)]
        licence: NewLicense,
    },
    /// End a licence now.
    End { id: i64 },
}

#[derive(Debug, Args)]
struct NewLicense {
    channel: String,
    #[arg(long)]
    plan: String,
    /// Unix seconds (default: now).
    #[arg(long)]
    from: Option<i64>,
    /// Unix seconds (default: open-ended).
    #[arg(long)]
    until: Option<i64>,
}

#[derive(Debug, Subcommand)]
enum InvoiceCmd {
    /// The account's issued invoices and credit notes.
    List {
        #[arg(long)]
        csv: bool,
    },
    /// What finalizing a calendar month would issue (one invoice per currency); writes nothing.
    Preview {
        /// YYYY-MM (UTC).
        #[arg(long)]
        month: String,
        #[arg(long)]
        csv: bool,
    },
    /// One issued invoice or credit note.
    Show {
        number: String,
        #[arg(long)]
        csv: bool,
        /// A printable HTML page (save it, open it in a browser, print to PDF).
        #[arg(long, conflicts_with = "csv")]
        html: bool,
    },
    /// Issue a month's invoices once it has ended (platform): numbered in the issuer's
    /// gapless series, immutable. Already issued ones are shown, not issued twice.
    Finalize {
        /// YYYY-MM (UTC).
        #[arg(long)]
        month: String,
        /// One account (default: every account).
        #[arg(long)]
        account: Option<String>,
        /// Whose series the numbers come from (A-Z, 0-9; numbers are ISSUER-000001, …).
        #[arg(long, env = "SHOAL_INVOICE_ISSUER", default_value = "SHOAL")]
        issuer: String,
    },
    /// Void a finalized invoice and issue its credit note (platform); the month can
    /// then be finalized again.
    Void {
        number: String,
        /// Why (kept on the invoice and in the audit log).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Args)]
struct Period {
    #[arg(long)]
    from: i64,
    #[arg(long)]
    to: i64,
}

pub(crate) fn run(a: AdminArgs) -> anyhow::Result<()> {
    let api = Api { base: a.tracker.clone(), token: a.token.clone() };
    match a.cmd {
        AdminCmd::Account(AccountCmd::Create { name }) => with_db(&a.database_url, |db, now| async move {
            let id = db.create_account(&name, now).await?;
            let token = db.create_api_token(id, "first", now).await?;
            db.audit(now, Some(id), "shoal admin (catalogue)", "account.create", &name, "").await?;
            println!("account {name} created (id {id})");
            println!("API token (shown once): {token}");
            Ok(())
        }),
        AdminCmd::Token(TokenCmd::Create { account, label }) => with_db(&a.database_url, |db, now| async move {
            let id = db.account_by_name(&account).await?;
            let token = db.create_api_token(id, &label, now).await?;
            db.audit(now, Some(id), "shoal admin (catalogue)", "token.create", &label, "").await?;
            println!("API token for {account} (shown once): {token}");
            Ok(())
        }),
        AdminCmd::Plan(PlanCmd::Create(p)) => with_db(&a.database_url, |db, now| async move {
            let plan = Plan { name: p.name, commercial: p.commercial, offered: !p.private, price: p.price.price() };
            let id = db.create_plan(&plan, now).await?;
            db.audit(now, None, "shoal admin (catalogue)", "plan.create", &plan.name, "version 1").await?;
            println!("plan {} created (id {id})", plan.name);
            Ok(())
        }),
        AdminCmd::Plan(PlanCmd::Reprice { name, price }) => with_db(&a.database_url, |db, now| async move {
            let p = db.reprice_plan(&name, &price.price(), now).await?;
            let detail = format!("version {}: {:?}", p.version, p.plan.price);
            db.audit(now, None, "shoal admin (catalogue)", "plan.reprice", &name, &detail).await?;
            println!("plan {name} is at version {} from now on; running licences keep theirs", p.version);
            Ok(())
        }),
        AdminCmd::Plan(PlanCmd::Grant { name, account }) => with_db(&a.database_url, |db, now| async move {
            let id = db.account_by_name(&account).await?;
            db.grant_plan(id, &name, now).await?;
            db.audit(now, Some(id), "shoal admin (catalogue)", "plan.grant", &name, "").await?;
            println!("{account} may buy plan {name}");
            Ok(())
        }),
        AdminCmd::Plan(PlanCmd::List) => print(api.call("GET", "/v1/plans", None)?),
        AdminCmd::Channel(ChannelCmd::List) => print(api.call("GET", "/v1/channels", None)?),
        AdminCmd::Channel(ChannelCmd::Create { name, ads, key_dir }) => create_channel(&api, &name, ads, key_dir),
        AdminCmd::Channel(ChannelCmd::Disable { name, licences }) => {
            let body = licences.map(|l| json!({ "licences": l }));
            print(api.call("POST", &format!("/v1/channels/{name}/disable"), body.as_ref())?)
        }
        AdminCmd::Channel(ChannelCmd::Delete { name, licences }) => {
            let body = licences.map(|l| json!({ "licences": l }));
            print(api.call("DELETE", &format!("/v1/channels/{name}"), body.as_ref())?)
        }
        AdminCmd::Channel(ChannelCmd::Enable { name }) => {
            print(api.call("POST", &format!("/v1/channels/{name}/enable"), None)?)
        }
        AdminCmd::Channel(ChannelCmd::RotateKey { name, grace_seconds }) => {
            let body = json!({ "grace_seconds": grace_seconds });
            let v = api.call("POST", &format!("/v1/channels/{name}/stream-key"), Some(&body))?;
            println!("new stream key for {name} (shown once): {}", v["stream_key"].as_str().unwrap_or("?"));
            match v["previous_key_valid_until"].as_i64() {
                Some(t) => println!("the previous key works until {t} (Unix time)"),
                None => println!("the previous key no longer works"),
            }
            Ok(())
        }
        AdminCmd::License(LicenseCmd::List) => print(api.call("GET", "/v1/licenses", None)?),
        AdminCmd::License(LicenseCmd::Add(NewLicense { channel, plan, from, until })) => {
            let body = json!({ "plan": plan, "valid_from": from, "valid_until": until });
            print(api.call("POST", &format!("/v1/channels/{channel}/licenses"), Some(&body))?)
        }
        AdminCmd::License(LicenseCmd::Grant { account, licence: l }) => {
            with_db(&a.database_url, |db, now| async move {
                let account_id = db.account_by_name(&account).await?;
                let channel = db.channel_of(account_id, &l.channel).await?;
                let plan = db.plan(&l.plan).await?;
                let from = l.from.unwrap_or(now);
                let id = db.add_license(channel, plan.id, from, l.until, now).await?;
                let detail =
                    format!("licence {id} on plan {} v{}, from {from} until {:?}", l.plan, plan.version, l.until);
                db.audit(now, Some(account_id), "shoal admin (catalogue)", "license.grant", &l.channel, &detail)
                    .await?;
                println!("licence {id}: {} on {} (v{}) from {from}", l.channel, l.plan, plan.version);
                Ok(())
            })
        }
        AdminCmd::License(LicenseCmd::End { id }) => {
            print(api.call("POST", &format!("/v1/licenses/{id}/end"), None)?)
        }
        AdminCmd::Usage { period: p, summary, daily, csv } => {
            let path = match (summary, daily) {
                (_, true) => format!("/v1/usage/summary?from={}&to={}&by=day", p.from, p.to),
                (true, false) => format!("/v1/usage/summary?from={}&to={}", p.from, p.to),
                (false, false) => format!("/v1/usage?from={}&to={}", p.from, p.to),
            };
            api.show(path, csv)
        }
        AdminCmd::Invoice(cmd) => invoice(&api, &a.database_url, cmd),
        AdminCmd::Webhook(WebhookCmd::List) => print(api.call("GET", "/v1/webhooks", None)?),
        AdminCmd::Webhook(WebhookCmd::Create { url }) => {
            let v = api.call("POST", "/v1/webhooks", Some(&json!({ "url": url })))?;
            println!("endpoint {} for {}", v["id"], v["url"].as_str().unwrap_or("?"));
            println!("signing secret (shown once): {}", v["secret"].as_str().unwrap_or("?"));
            Ok(())
        }
        AdminCmd::Webhook(WebhookCmd::Disable { id }) => {
            print(api.call("POST", &format!("/v1/webhooks/{id}/disable"), None)?)
        }
        AdminCmd::Webhook(WebhookCmd::Deliveries) => print(api.call("GET", "/v1/webhooks/deliveries", None)?),
        AdminCmd::Audit => print(api.call("GET", "/v1/audit", None)?),
    }
}

fn invoice(api: &Api, database_url: &Option<String>, cmd: InvoiceCmd) -> anyhow::Result<()> {
    match cmd {
        InvoiceCmd::List { csv } => api.show("/v1/invoices".into(), csv),
        InvoiceCmd::Preview { month, csv } => api.show(format!("/v1/invoices/preview?month={month}"), csv),
        InvoiceCmd::Show { number, csv, html } => {
            if html {
                api.raw(&format!("/v1/invoices/{number}?format=html"))
            } else {
                api.show(format!("/v1/invoices/{number}"), csv)
            }
        }
        InvoiceCmd::Finalize { month, account, issuer } => with_db(database_url, |db, now| async move {
            let month = Month::parse(&month).map_err(catalogue::db::DbError::Invalid)?;
            let accounts = match account {
                Some(name) => vec![(db.account_by_name(&name).await?, name)],
                None => db.accounts().await?,
            };
            for (id, name) in accounts {
                for inv in db.finalize_invoices(id, month, &issuer, now).await? {
                    let number = inv.number.clone().unwrap_or_default();
                    // A repeated run shows what it issued before; only new ones are audited.
                    if inv.issued_at == Some(now) {
                        let detail = format!("{month}, {} {} cents", inv.currency, inv.total_cents);
                        db.audit(now, Some(id), "shoal admin (catalogue)", "invoice.finalize", &number, &detail)
                            .await?;
                    }
                    println!("{name}\t{number}\t{month}\t{}\t{}", inv.currency, inv.total_cents);
                }
            }
            Ok(())
        }),
        InvoiceCmd::Void { number, reason } => with_db(database_url, |db, now| async move {
            let credit = db.void_invoice(&number, &reason, now).await?;
            let credit_number = credit.number.clone().unwrap_or_default();
            let detail = format!("credit note {credit_number}: {reason}");
            db.audit(now, Some(credit.account_id), "shoal admin (catalogue)", "invoice.void", &number, &detail).await?;
            println!("{number} voided; credit note {credit_number} ({} {} cents)", credit.currency, credit.total_cents);
            Ok(())
        }),
    }
}

fn print(v: Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// Runs `f` against the catalogue (platform commands).
fn with_db<F, Fut>(url: &Option<String>, f: F) -> anyhow::Result<()>
where
    F: FnOnce(Db, i64) -> Fut,
    Fut: Future<Output = Result<(), catalogue::db::DbError>>,
{
    let Some(url) = url else {
        bail!("this command opens the catalogue: give --database-url (or SHOAL_DATABASE_URL)");
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let db = Db::open(url).await.context("opening the catalogue")?;
        f(db, tracker::http::unix_now() as i64).await.map_err(anyhow::Error::from)
    })
}

fn create_channel(api: &Api, name: &str, ads: bool, key_dir: PathBuf) -> anyhow::Result<()> {
    let keys = catalogue::secrets::KeyDir::new(&key_dir);
    let key = keys.create(name).map_err(anyhow::Error::msg).context("writing the signing key")?;
    let body = json!({ "name": name, "public_key": key.id().to_hex(), "carries_ads": ads });
    let v = match api.call("POST", "/v1/channels", Some(&body)) {
        Ok(v) => v,
        Err(e) => {
            // Not created: don't leave a key behind that a retry would trip over.
            let _ = std::fs::remove_file(keys.path(name));
            return Err(e);
        }
    };
    let stream_key = v["stream_key"].as_str().unwrap_or("?");
    println!("channel {name} created");
    println!("signing key: {} (copy it to the ingest nodes' key directory, mode 0600)", keys.path(name).display());
    println!("stream key (shown once): {stream_key}");
    println!("tracker info_hash: {}", v["info_hash"].as_str().unwrap_or("?"));
    println!("push:  rtmp://INGEST:1935/live/{stream_key}");
    println!("  or:  srt://INGEST:8890?streamid=#!::r=live/{stream_key},m=publish");
    if ads {
        println!(
            "it carries ads: add a commercial licence before publishing (shoal admin license add {name} --plan …)"
        );
    }
    Ok(())
}

/// The admin API over plain HTTP/1.1, one connection per call.
#[derive(Debug)]
struct Api {
    base: String,
    token: Option<String>,
}

impl Api {
    /// A call whose answer is JSON; an error status becomes the error it says.
    /// `GET path`, printed: JSON pretty, or with `csv` the CSV as it comes.
    fn show(&self, path: String, csv: bool) -> anyhow::Result<()> {
        if csv {
            self.raw(&format!("{path}{}format=csv", if path.contains('?') { '&' } else { '?' }))
        } else {
            print(self.call("GET", &path, None)?)
        }
    }

    /// `GET path`, its body written to stdout as it is.
    fn raw(&self, path: &str) -> anyhow::Result<()> {
        let (status, body) = self.request("GET", path, None)?;
        self.check(status, &body)?;
        std::io::stdout().write_all(&body)?;
        Ok(())
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let (status, bytes) = self.request(method, path, body)?;
        self.check(status, &bytes)?;
        serde_json::from_slice(&bytes).with_context(|| format!("{method} {path}: the answer is not JSON"))
    }

    fn check(&self, status: u16, body: &[u8]) -> anyhow::Result<()> {
        if (200..300).contains(&status) {
            return Ok(());
        }
        let why = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
        bail!("the tracker answered {status}: {why}")
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Vec<u8>)> {
        let Some(token) = &self.token else {
            bail!("give the account's API token: --token or SHOAL_API_TOKEN");
        };
        let Some(host) = self.base.strip_prefix("http://").map(|h| h.trim_end_matches('/')) else {
            bail!("--tracker {}: only http://HOST:PORT is supported", self.base);
        };
        let addr = if host.contains(':') { host.to_owned() } else { format!("{host}:80") };
        let mut s = TcpStream::connect(&addr).with_context(|| format!("connecting to the tracker at {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).context("reading the tracker's answer")?;
        parse_response(&raw).context("the tracker's answer is not HTTP")
    }
}

/// (status, body) of an HTTP/1.1 response read to the end of the connection.
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("no end of headers");
    };
    let head = std::str::from_utf8(&raw[..end])?;
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).context("no status")?;
    let body = &raw[end + 4..];
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let (mut out, mut rest) = (Vec::new(), body);
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else { bail!("bad chunk") };
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..eol])?.split(';').next().unwrap_or("").trim(), 16)?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok((status, out));
        }
        if rest.len() < size + 2 {
            bail!("short chunk");
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::parse_response;

    #[test]
    fn responses_plain_and_chunked() {
        let plain = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (201, b"{}".to_vec()));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, b"abcde".to_vec()));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nab").is_err());
    }
}
