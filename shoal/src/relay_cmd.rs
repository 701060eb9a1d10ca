//! `shoal relay`: an FLV feed on stdin (`ffmpeg … -f flv -`) pushed over RTMP to ingest
//! nodes as an encoder with a main and a backup output pushes it: `--mode backup` sends
//! to the first URL and, when that connection fails, waits `--retry-ms` and goes on to
//! the next with the same clock (sequence headers first); `--mode all` sends to every
//! URL at once, each output reconnecting on its own. What was encoded while an output
//! was down is not sent late (live frames are lost, as an encoder loses them). Each
//! connection is printed, `RELAY connected I URL` (I counts from 0 in `--to` order), so
//! that scripts and tests can time a failover.

use std::io::{Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use ingest::rtmp_client::RtmpPublisher;

#[derive(Debug, clap::Args)]
pub(crate) struct RelayArgs {
    /// An ingest's publish URL, rtmp://HOST:PORT/APP/STREAM_KEY; repeated: main first.
    #[arg(long = "to", required = true)]
    to: Vec<String>,
    /// `backup`: the first URL, the next when it fails; `all`: every URL at once.
    #[arg(long, default_value = "backup", value_parser = ["backup", "all"])]
    mode: String,
    /// How long a failed output waits before it connects again (or moves on).
    #[arg(long, default_value_t = 1_500)]
    retry_ms: u64,
}

/// An FLV tag: (kind, timestamp ms, body).
type Tag = (u8, u32, Vec<u8>);

/// Where one `--to` URL publishes.
#[derive(Debug, Clone)]
struct Target {
    url: String,
    addr: SocketAddr,
    app: String,
    key: String,
}

fn target(url: &str) -> anyhow::Result<Target> {
    let rest = url.strip_prefix("rtmp://").with_context(|| format!("--to {url}: not an rtmp:// URL"))?;
    let mut parts = rest.splitn(3, '/');
    let (host, app, key) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if app.is_empty() || key.is_empty() {
        bail!("--to {url}: expected rtmp://HOST:PORT/APP/STREAM_KEY");
    }
    let addr = host
        .to_socket_addrs()
        .with_context(|| format!("--to {url}: resolving {host}"))?
        .next()
        .with_context(|| format!("--to {url}: {host} has no address"))?;
    Ok(Target { url: url.to_owned(), addr, app: app.to_owned(), key: key.to_owned() })
}

pub(crate) fn run(a: RelayArgs) -> anyhow::Result<()> {
    let targets = a.to.iter().map(|u| target(u)).collect::<anyhow::Result<Vec<_>>>()?;
    let retry = Duration::from_millis(a.retry_ms);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let tags = flv_tags(std::io::stdin())?;
    rt.block_on(async move {
        if a.mode == "all" { fan_out(tags, targets, retry).await } else { relay(tags, targets, retry).await }
    })
}

/// Says a connection was made (stdout, a line at once).
fn connected(i: usize, t: &Target) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "RELAY connected {i} {}", t.url);
    let _ = out.flush();
}

/// FLV tags from a byte stream, as they come; the channel ends with the stream. The
/// header is read before it returns (not FLV: an error).
fn flv_tags(mut from: impl Read + Send + 'static) -> anyhow::Result<tokio::sync::mpsc::Receiver<Tag>> {
    let mut header = [0u8; 13]; // FLV header, then the first PreviousTagSize
    from.read_exact(&mut header).context("reading the FLV header from stdin")?;
    if &header[..3] != b"FLV" {
        bail!("stdin is not FLV (ffmpeg … -f flv -)");
    }
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    std::thread::spawn(move || {
        let mut head = [0u8; 11];
        while from.read_exact(&mut head).is_ok() {
            let size = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
            let ts = u32::from_be_bytes([head[7], head[4], head[5], head[6]]);
            let mut body = vec![0u8; size + 4]; // and the PreviousTagSize after it
            if from.read_exact(&mut body).is_err() {
                return;
            }
            body.truncate(size);
            if tx.blocking_send((head[0], ts, body)).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Keeps the first sequence header (AVC/AAC packet type 0) of each track: an encoder
/// sends them first on every connection.
fn keep_config(configs: &mut Vec<Tag>, tag: &Tag) {
    let (kind, _, body) = tag;
    if (*kind == 8 || *kind == 9) && body.get(1) == Some(&0) && configs.iter().all(|c| c.0 != *kind) {
        configs.push(tag.clone());
    }
}

async fn publish(t: &Target) -> anyhow::Result<RtmpPublisher> {
    RtmpPublisher::connect(t.addr, &t.app, &t.key).await.with_context(|| format!("publishing to {}", t.url))
}

/// `--mode backup`. Returns when the feed ends, or with an error when no output is left.
async fn relay(mut rx: tokio::sync::mpsc::Receiver<Tag>, targets: Vec<Target>, retry: Duration) -> anyhow::Result<()> {
    let mut configs: Vec<Tag> = Vec::new();
    let mut at = 0;
    let mut p = publish(&targets[0]).await?;
    connected(0, &targets[0]);
    while let Some(tag) = rx.recv().await {
        keep_config(&mut configs, &tag);
        let (kind, ts, body) = tag;
        if kind == 18 || p.send_tag(kind, ts, &body).await.is_ok() {
            continue; // script data (onMetaData) is the ingest's to ignore; not resent
        }
        tracing::warn!(url = %targets[at].url, "output failed; the next after the retry delay");
        at += 1;
        let Some(next) = targets.get(at) else { bail!("every output failed") };
        tokio::time::sleep(retry).await;
        while rx.try_recv().is_ok() {} // what was encoded meanwhile is not sent late
        p = publish(next).await?;
        for (kind, ts, body) in &configs {
            p.send_tag(*kind, *ts, body).await.with_context(|| format!("sending to {}", next.url))?;
        }
        connected(at, next);
    }
    Ok(())
}

/// `--mode all`. Returns when the feed ends.
async fn fan_out(
    mut rx: tokio::sync::mpsc::Receiver<Tag>,
    targets: Vec<Target>,
    retry: Duration,
) -> anyhow::Result<()> {
    let (tx, _) = tokio::sync::broadcast::channel::<Tag>(4096);
    let configs = Arc::new(Mutex::new(Vec::<Tag>::new()));
    for (i, t) in targets.into_iter().enumerate() {
        let (mut feed, configs) = (tx.subscribe(), configs.clone());
        tokio::spawn(async move {
            loop {
                let Ok(mut p) = publish(&t).await else {
                    tokio::time::sleep(retry).await;
                    continue;
                };
                let headers = configs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                let mut ok = true;
                for (kind, ts, body) in &headers {
                    ok &= p.send_tag(*kind, *ts, body).await.is_ok();
                }
                connected(i, &t);
                feed = feed.resubscribe(); // from now on: what was encoded meanwhile is lost
                while ok {
                    match feed.recv().await {
                        Ok((18, _, _)) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Ok((kind, ts, body)) => ok = p.send_tag(kind, ts, &body).await.is_ok(),
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
                tracing::warn!(url = %t.url, "output failed; connecting again after the retry delay");
                tokio::time::sleep(retry).await;
            }
        });
    }
    while let Some(tag) = rx.recv().await {
        keep_config(&mut configs.lock().unwrap_or_else(std::sync::PoisonError::into_inner), &tag);
        let _ = tx.send(tag);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_say_where_and_what_to_publish() {
        let t = target("rtmp://127.0.0.1:1935/live/abc/def").unwrap();
        assert_eq!((t.addr.port(), t.app.as_str(), t.key.as_str()), (1935, "live", "abc/def"));
        for bad in ["http://127.0.0.1:1935/live/k", "rtmp://127.0.0.1:1935/live", "rtmp://127.0.0.1:1935//k"] {
            assert!(target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_feed_that_is_not_flv_is_refused() {
        assert!(flv_tags(&b"not an flv stream at all"[..]).is_err());
        assert!(flv_tags(&b"FLV"[..]).is_err(), "cut short");
    }
}
