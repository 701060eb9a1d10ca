//! `shoal bench seeder`: a seeder's two egress paths, each against a reference in the
//! same run.
//!
//! 1. **LL-HLS origin.** A seeder's HLS server (`seeder::serve`, in a child process)
//!    holding a window of a 3 Mbit/s channel (6 segments of 20 parts and an open
//!    segment), and nginx serving the very same playlist, parts and segments as static
//!    files (written by that child, `sendfile` on, one worker). The same load in turn
//!    on each: `--clients` keep-alive connections, each asking again as soon as it has
//!    its answer — parts of the live edge, one request in ten the playlist (a blocking
//!    reload `?_HLS_msn=&_HLS_part=` for a part that exists: answered at once, so this
//!    measures serving, not waiting), one in ten a whole segment. Figure: response
//!    bytes per server CPU-second (the server's user + system time from `/proc`), and
//!    shoal's over nginx's (target ≥ 1.0).
//! 2. **Swarm pushes.** One process writes 50 ms pieces, each to `--peers` TCP
//!    connections (a sink process reads and discards), as the shell's writer tasks do:
//!    once encoding a frame per connection (the shell before pieces kept their wire
//!    form), once sharing the piece's own buffer behind a 5-byte head (now). Figure:
//!    bytes written per CPU-second of the writing process, and the ratio.
//!
//! Writes `bench-seeder.json`, prints tables, asserts nothing. Needs nginx for part 1
//! (`apt-get install -y nginx-light`); part 2 runs anywhere.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Buf;
use net::hls::Hls;
use serde::Serialize;
use swarm::piece::{ChannelKeypair, Piece, PieceFlags, TS_PACKET_LEN, filler_payload};
use swarm::wire::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::bench_nginx::{Reaped, free_port, proc_cpu, wait_for_port};

#[derive(Debug, clap::Args)]
pub(crate) struct SeederBenchArgs {
    /// HLS clients (keep-alive connections) loading each server.
    #[arg(long, default_value_t = 2_000)]
    clients: usize,
    /// Seconds of load on each server per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Runs (servers alternate within each); the tables give each and the median ratio.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// TCP peers each piece is pushed to.
    #[arg(long, default_value_t = 1_000)]
    peers: usize,
    /// Pieces (50 ms of 3 Mbit/s) pushed to every peer per run.
    #[arg(long, default_value_t = 100)]
    pieces: u64,
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    /// Worker threads of the seeder's HTTP runtime: 0 is tokio's default (a thread per
    /// core, as `shoal seeder` runs), 1 a single-threaded runtime (as nginx's one worker).
    #[arg(long, default_value_t = 0)]
    server_threads: usize,
    /// Threads of their own the seeder's HTTP serves connections on, each a
    /// single-threaded runtime (`shoal seeder --http-threads`, whose default this is); 0: on
    /// the runtime above.
    #[arg(long, default_value_t = 1)]
    http_threads: usize,
    /// Skip the HLS comparison (no nginx here).
    #[arg(long)]
    no_hls: bool,
    /// Serve the seeder's parts by copying them into each socket (`writev`) instead of
    /// from their spool file (`sendfile`): the figure before zero-copy sends.
    #[arg(long)]
    no_spool: bool,
    /// Where to write `bench-seeder.json`.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// (internal) serve a seeder's HLS window, writing the same files into this directory.
    #[arg(long, hide = true)]
    serve_hls: Option<PathBuf>,
    /// (internal) accept connections and discard what they send.
    #[arg(long, hide = true)]
    sink: bool,
}

#[derive(Debug, Serialize)]
struct HlsRun {
    shoal: Served,
    nginx: Served,
    /// shoal's bytes per CPU-second over nginx's.
    ratio: f64,
}

#[derive(Debug, Serialize)]
struct Served {
    requests: u64,
    errors: u64,
    bytes: u64,
    cpu_s: f64,
    mbytes_per_cpu_s: f64,
}

#[derive(Debug, Serialize)]
struct PushRun {
    copied: Pushed,
    shared: Pushed,
    /// shared over copied, bytes per CPU-second.
    ratio: f64,
}

#[derive(Debug, Serialize)]
struct Pushed {
    bytes: u64,
    cpu_s: f64,
    mbytes_per_cpu_s: f64,
}

#[derive(Debug, Serialize)]
struct SeederBench {
    clients: usize,
    seconds: u64,
    peers: usize,
    pieces: u64,
    piece_bytes: usize,
    /// Whether the seeder sent its parts from their spool files (`sendfile`).
    spooled: bool,
    hls_runs: Vec<HlsRun>,
    /// Median of shoal/nginx bytes per CPU-second (target ≥ 1.0); absent without nginx.
    hls_ratio_median: Option<f64>,
    push_runs: Vec<PushRun>,
    /// Median of shared/copied bytes per CPU-second.
    push_ratio_median: f64,
}

/// A 3 Mbit/s channel's 50 ms piece: 100 TS packets.
const PACKETS: usize = 100;

pub(crate) fn run(a: SeederBenchArgs) -> anyhow::Result<()> {
    if let Some(dir) = &a.serve_hls {
        return serve_hls(dir, a.server_threads, a.http_threads, !a.no_spool);
    }
    if a.sink {
        return sink();
    }
    let mut hls_runs = Vec::new();
    if !a.no_hls {
        if Command::new(&a.nginx).arg("-v").stderr(Stdio::null()).status().is_err() {
            bail!("nginx not found at {}: apt-get install -y nginx-light (or --no-hls)", a.nginx.display());
        }
        hls_runs = hls_bench(&a)?;
    }
    let push_runs = push_bench(&a)?;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let r = SeederBench {
        clients: a.clients,
        seconds: a.seconds,
        peers: a.peers,
        pieces: a.pieces,
        piece_bytes: PACKETS * TS_PACKET_LEN,
        spooled: !a.no_spool,
        hls_ratio_median: median(hls_runs.iter().map(|r| r.ratio).collect()),
        push_ratio_median: median(push_runs.iter().map(|r| r.ratio).collect()).unwrap_or(0.0),
        hls_runs,
        push_runs,
    };
    if let Some(m) = r.hls_ratio_median {
        let how = if a.no_spool { "parts copied per client" } else { "parts sent from their spool" };
        println!("HLS: median shoal/nginx bytes per CPU-second: {m:.2}   (target ≥ 1.0; {how})");
    }
    println!("pushes: median shared/copied bytes per CPU-second: {:.2}", r.push_ratio_median);
    crate::machine::write_bench_json(&a.out.join("bench-seeder.json"), &r)
}

/// The pieces of the window both HLS servers hold: 7 segment starts, the last open.
fn window() -> Vec<Piece> {
    let key = ChannelKeypair::from_secret_bytes(&[0x5e; 32]);
    (0..145u64)
        .map(|seq| {
            let flags = if seq % 20 == 0 { PieceFlags::SEGMENT_START } else { PieceFlags::NONE };
            key.sign_piece(seq, 1_800_000_000_000_000 + seq * 50_000, flags, filler_payload(PACKETS, seq))
                .expect("filler payloads are whole TS packets")
        })
        .collect()
}

/// The child: a seeder's HLS over the window, and the same files for nginx.
fn serve_hls(dir: &Path, threads: usize, http_threads: usize, spool: bool) -> anyhow::Result<()> {
    let hls = Hls::new("bench");
    let hls = Arc::new(if spool { hls } else { hls.without_spool() });
    for p in window() {
        hls.push(&p);
    }
    let playlist = String::from_utf8(hls.playlist().context("the window makes a playlist")?.to_vec())?;
    let files = dir.join("hls/bench");
    std::fs::create_dir_all(&files)?;
    std::fs::write(files.join("live.m3u8"), &playlist)?;
    for uri in uris(&playlist) {
        let name = uri.trim_end_matches(".ts");
        let bytes: Vec<u8> = match name.split_once('.') {
            Some((n, k)) => hls.part(n.parse()?, k.parse()?).context("listed part")?.concat(),
            None => hls.segment(name.parse()?).context("listed segment")?.concat(),
        };
        std::fs::write(files.join(&uri), bytes)?;
    }
    let rt = match threads {
        0 => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build()?,
    };
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("SERVING {}", listener.local_addr()?.port());
        let metrics = net::NodeMetrics::new(swarm::wire::Role::Seed);
        seeder::serve(listener, http_threads, hls, metrics, Arc::default(), Arc::default()).await;
        Ok(())
    })
}

/// The files a playlist lists: parts (`#EXT-X-PART:…URI="n.k.ts"`) and segments
/// (`n.ts` lines); not the preload hint, which does not exist yet.
fn uris(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .filter_map(|l| match l.strip_prefix("#EXT-X-PART:") {
            Some(attrs) => attrs.split_once("URI=\"").and_then(|(_, rest)| rest.split('"').next()).map(str::to_owned),
            None => (!l.starts_with('#') && l.ends_with(".ts")).then(|| l.to_owned()),
        })
        .collect()
}

fn hls_bench(a: &SeederBenchArgs) -> anyhow::Result<Vec<HlsRun>> {
    let dir = std::env::temp_dir().join(format!("shoal-bench-seeder-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (threads, http_threads) = (a.server_threads.to_string(), a.http_threads.to_string());
    let dir_arg = dir.display().to_string();
    let mut args = vec!["--serve-hls", &dir_arg, "--server-threads", &threads, "--http-threads", &http_threads];
    if a.no_spool {
        args.push("--no-spool");
    }
    let (shoal, shoal_port) = child(&args, "SERVING ")?;
    let nginx_port = free_port()?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&dir, nginx_port))?;
    let mut nginx =
        Reaped(Command::new(&a.nginx).arg("-c").arg(&conf).arg("-p").arg(&dir).stderr(Stdio::null()).spawn()?);
    wait_for_port(nginx_port, &mut nginx.0)?;
    let playlist = std::fs::read_to_string(dir.join("hls/bench/live.m3u8"))?;
    let all = uris(&playlist);
    let parts: Vec<&String> = all.iter().filter(|u| u.matches('.').count() == 2).collect();
    let segments: Vec<&String> = all.iter().filter(|u| u.matches('.').count() == 1).collect();
    let last = parts.last().context("the playlist lists parts")?.trim_end_matches(".ts");
    let (msn, part) = last.split_once('.').context("n.k")?;
    // The request mix: one in ten the playlist (a blocking reload that can be answered
    // at once), one in ten a segment, the rest parts of the live edge.
    let mut paths = Vec::new();
    for i in 0..parts.len().max(1) * 10 {
        paths.push(match i % 10 {
            0 => format!("/hls/bench/live.m3u8?_HLS_msn={msn}&_HLS_part={part}"),
            5 => format!("/hls/bench/{}", segments[i / 10 % segments.len().max(1)]),
            _ => format!("/hls/bench/{}", parts[i % parts.len()]),
        });
    }
    let paths = Arc::new(paths);
    println!(
        "HLS: {} clients, {} s each, a window of {} parts and {} segments (3 Mbit/s)",
        a.clients,
        a.seconds,
        parts.len(),
        segments.len()
    );
    println!("{:<5} {:>16} {:>16} {:>8}", "run", "shoal MB/CPU-s", "nginx MB/CPU-s", "ratio");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (shoal_at, nginx_at) =
        (SocketAddr::from(([127, 0, 0, 1], shoal_port)), SocketAddr::from(([127, 0, 0, 1], nginx_port)));
    // Unmeasured: both servers first meet the load (connection state allocated, the
    // allocator's arenas grown), so the runs compare steady states.
    rt.block_on(load(shoal_at, shoal.0.id(), a, WARM_UP, &paths))?;
    rt.block_on(load(nginx_at, nginx.0.id(), a, WARM_UP, &paths))?;
    let mut runs = Vec::new();
    let seconds = Duration::from_secs(a.seconds);
    for i in 0..a.runs.max(1) {
        let s = rt.block_on(load(shoal_at, shoal.0.id(), a, seconds, &paths))?;
        let n = rt.block_on(load(nginx_at, nginx.0.id(), a, seconds, &paths))?;
        let run = HlsRun { ratio: ratio(s.mbytes_per_cpu_s, n.mbytes_per_cpu_s), shoal: s, nginx: n };
        println!(
            "{:<5} {:>16.1} {:>16.1} {:>8.2}",
            i + 1,
            run.shoal.mbytes_per_cpu_s,
            run.nginx.mbytes_per_cpu_s,
            run.ratio
        );
        runs.push(run);
    }
    drop((shoal, nginx));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(runs)
}

/// This binary as `shoal bench seeder ARGS` (a server for the bench), and the port it
/// says it listens on (its first line: `SAYS PORT`).
fn child(args: &[&str], says: &str) -> anyhow::Result<(Reaped, u16)> {
    use std::io::BufRead;
    let mut c = Reaped(
        Command::new(std::env::current_exe()?).args(["bench", "seeder"]).args(args).stdout(Stdio::piped()).spawn()?,
    );
    let stdout = c.0.stdout.take().context("stdout is piped")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let port = line.trim().strip_prefix(says).with_context(|| format!("`bench seeder {args:?}` did not start"))?;
    Ok((c, port.parse()?))
}

fn nginx_conf(dir: &Path, port: u16) -> String {
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
         events {{ worker_connections 20000; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n\
           keepalive_requests 1000000;\n  keepalive_timeout 60s;\n\
           types {{ video/mp2t ts; application/vnd.apple.mpegurl m3u8; }}\n\
           server {{\n    listen 127.0.0.1:{port};\n    root {dir};\n\
             location / {{ add_header Cache-Control no-cache; add_header Access-Control-Allow-Origin *; }}\n  }}\n}}\n",
        dir = dir.display()
    )
}

/// Load on each server before the measured runs.
const WARM_UP: Duration = Duration::from_secs(3);

/// `--clients` connections asking `paths` in turn for `seconds`; the server's CPU
/// (the process and its children) over that time.
async fn load(
    addr: SocketAddr,
    pid: u32,
    a: &SeederBenchArgs,
    seconds: Duration,
    paths: &Arc<Vec<String>>,
) -> anyhow::Result<Served> {
    let (bytes, requests, errors) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut conns = Vec::with_capacity(a.clients);
    for _ in 0..a.clients {
        let s = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        let _ = s.set_nodelay(true);
        conns.push(s);
    }
    let cpu0 = server_cpu(pid);
    let deadline = Instant::now() + seconds;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, s) in conns.into_iter().enumerate() {
        let (paths, bytes, requests, errors) = (paths.clone(), bytes.clone(), requests.clone(), errors.clone());
        tasks.spawn(async move {
            if client(s, &paths, i * 7, deadline, &bytes, &requests).await.is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let cpu_s = server_cpu(pid).saturating_sub(cpu0).as_secs_f64();
    let bytes = bytes.load(Ordering::Relaxed);
    Ok(Served {
        requests: requests.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        bytes,
        cpu_s,
        mbytes_per_cpu_s: per_cpu_s(bytes, cpu_s),
    })
}

/// The server's CPU: the process and its children (nginx's worker).
fn server_cpu(pid: u32) -> Duration {
    crate::bench_nginx::tree_cpu(pid)
}

/// One keep-alive connection: a request, its whole answer (Content-Length), the next.
async fn client(
    mut s: TcpStream,
    paths: &[String],
    mut i: usize,
    deadline: Instant,
    bytes: &AtomicU64,
    requests: &AtomicU64,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    while Instant::now() < deadline {
        let path = &paths[i % paths.len()];
        i += 1;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes()).await?;
        let mut have = 0;
        let (head_end, len) = loop {
            let n = s.read(&mut buf[have..]).await?;
            if n == 0 {
                bail!("closed mid-answer");
            }
            have += n;
            if let Some(p) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&buf[..p])?;
                if !head.starts_with("HTTP/1.1 200") {
                    bail!("{}", head.lines().next().unwrap_or(""));
                }
                let len = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .context("no content-length")?
                    .parse::<usize>()?;
                break (p + 4, len);
            }
            if have == buf.len() {
                bail!("header over 64 KiB");
            }
        };
        let mut body = have - head_end;
        while body < len {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                bail!("closed mid-body");
            }
            body += n;
        }
        bytes.fetch_add(len as u64, Ordering::Relaxed);
        requests.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// The child: accepts connections and discards what arrives.
fn sink() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("SINK {}", listener.local_addr()?.port());
        loop {
            let (mut s, _) = listener.accept().await?;
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    })
}

fn push_bench(a: &SeederBenchArgs) -> anyhow::Result<Vec<PushRun>> {
    let (sink, port) = child(&["--sink"], "SINK ")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let pieces: Vec<Piece> = window().into_iter().take(a.pieces.min(145) as usize).collect();
    println!(
        "pushes: {} pieces of {} bytes to each of {} TCP peers per variant",
        pieces.len(),
        PACKETS * TS_PACKET_LEN,
        a.peers
    );
    println!("{:<5} {:>18} {:>18} {:>8}", "run", "copied MB/CPU-s", "shared MB/CPU-s", "ratio");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut runs = Vec::new();
    for i in 0..a.runs.max(1) {
        let copied = rt.block_on(push(addr, a.peers, &pieces, false))?;
        let shared = rt.block_on(push(addr, a.peers, &pieces, true))?;
        let run = PushRun { ratio: ratio(shared.mbytes_per_cpu_s, copied.mbytes_per_cpu_s), copied, shared };
        println!(
            "{:<5} {:>18.1} {:>18.1} {:>8.2}",
            i + 1,
            run.copied.mbytes_per_cpu_s,
            run.shared.mbytes_per_cpu_s,
            run.ratio
        );
        runs.push(run);
    }
    drop(sink);
    Ok(runs)
}

/// Every piece to every peer through a writer task per connection, as the shell does;
/// `shared`: the piece's own buffer behind a frame head, else a frame encoded per peer.
async fn push(addr: SocketAddr, peers: usize, pieces: &[Piece], shared: bool) -> anyhow::Result<Pushed> {
    type Frame = bytes::buf::Chain<bytes::Bytes, bytes::Bytes>;
    let mut queues = Vec::with_capacity(peers);
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..peers {
        let mut s = TcpStream::connect(addr).await?;
        let _ = s.set_nodelay(true);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Frame>();
        queues.push(tx);
        writers.spawn(async move {
            while let Some(mut f) = rx.recv().await {
                if s.write_all_buf(&mut f).await.is_err() {
                    break;
                }
            }
        });
    }
    let cpu0 = own_cpu();
    let mut written = 0u64;
    for p in pieces {
        let msg = Message::Piece(p.clone());
        for q in &queues {
            let frame = if shared {
                msg.to_frame()
            } else {
                let mut v = Vec::with_capacity(msg.encoded_len());
                msg.encode(&mut v);
                bytes::Bytes::from(v).chain(bytes::Bytes::new())
            };
            written += frame.remaining() as u64;
            let _ = q.send(frame);
        }
        // A piece every 50 ms at most: let the writers drain between pieces.
        tokio::task::yield_now().await;
    }
    drop(queues);
    while writers.join_next().await.is_some() {}
    let cpu_s = own_cpu().saturating_sub(cpu0).as_secs_f64();
    Ok(Pushed { bytes: written, cpu_s, mbytes_per_cpu_s: per_cpu_s(written, cpu_s) })
}

/// MB per CPU-second; 0 when less CPU was used than `/proc` can tell (10 ms ticks):
/// run longer.
fn per_cpu_s(bytes: u64, cpu_s: f64) -> f64 {
    if cpu_s < 0.05 { 0.0 } else { bytes as f64 / 1e6 / cpu_s }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn own_cpu() -> Duration {
    proc_cpu("self").map_or(Duration::ZERO, |(t, _)| t)
}
