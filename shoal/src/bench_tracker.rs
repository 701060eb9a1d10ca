//! `shoal bench tracker`: the tracker's announce path in process — query parsing,
//! channel admission, swarm update, peer choice and bencoding — over 100,000 peers in
//! 10,000 channels, on one thread. Reports announces per CPU-second and swarm memory
//! per peer, with metering on (every announce carries a `watched` counter). Writes
//! JSON, prints a table, asserts nothing.
//!
//! With `--vs-aquatic`, also the HTTP path: `aquatic_http_load_test` (aquatic's own load
//! tester, 10,000 torrents) drives `shoal tracker` and then `aquatic_http`, each pinned
//! to one core with the load tester on the other; reports responses per second and per
//! server CPU-second of each, and the ratios.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use catalogue::directory::StaticDirectory;
use catalogue::secrets::SeederTokens;
use serde::Serialize;
use swarm::piece::ChannelKeypair;
use tracker::Tracker;
use tracker::announce::percent_encode;
use tracker::store::StoreConfig;

#[derive(Debug, clap::Args)]
pub(crate) struct TrackerBenchArgs {
    #[arg(long, default_value_t = 100_000)]
    peers: u32,
    #[arg(long, default_value_t = 10_000)]
    channels: u32,
    /// Announces timed after the swarms are filled.
    #[arg(long, default_value_t = 2_000_000)]
    announces: u32,
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Also drive `shoal tracker` and `aquatic_http` over HTTP with
    /// `aquatic_http_load_test` (`cargo install aquatic_http aquatic_http_load_test`).
    #[arg(long)]
    vs_aquatic: bool,
    /// Directory holding `aquatic_http` and `aquatic_http_load_test` (default: PATH).
    #[arg(long)]
    aquatic_bin: Option<PathBuf>,
    /// Seconds each server is loaded.
    #[arg(long, default_value_t = 20)]
    duration: u32,
    /// Also the same announces with swarm membership shared through this Redis
    /// (`redis://HOST:PORT`), 64 in flight, and its ratio to memory.
    #[arg(long)]
    redis_url: Option<String>,
    /// Announces timed against Redis.
    #[arg(long, default_value_t = 200_000)]
    redis_announces: u32,
}

#[derive(Debug, Serialize)]
struct VsRedis {
    announces: u32,
    in_flight: usize,
    wall_s: f64,
    announces_per_s: f64,
    tracker_cpu_s: f64,
    announces_per_tracker_cpu_s: f64,
    /// Redis's own CPU for them, when it runs on this machine.
    redis_cpu_s: Option<f64>,
    /// Redis ÷ memory, announces per tracker CPU-second.
    ratio_per_tracker_cpu_s: f64,
    /// Redis ÷ memory, announces per CPU-second of tracker and Redis together.
    ratio_per_total_cpu_s: Option<f64>,
    /// Announces answered from memory because Redis failed or was slow.
    redis_errors: u64,
}

#[derive(Debug, Serialize)]
struct HttpRun {
    server: &'static str,
    responses_per_s: f64,
    server_cpu_s: f64,
    responses_per_cpu_s: f64,
    server_rss_mbytes: f64,
}

#[derive(Debug, Serialize)]
struct VsAquatic {
    duration_s: u32,
    pinned: bool,
    shoal: HttpRun,
    aquatic_http: HttpRun,
    /// shoal ÷ aquatic_http, responses per second with one core each (target ≥ 1.0).
    ratio_throughput: f64,
    /// shoal ÷ aquatic_http, responses per server CPU-second.
    ratio_per_cpu_s: f64,
    shoal_peers: u64,
    shoal_heap_bytes_per_peer: f64,
}

#[derive(Debug, Serialize)]
struct BenchTracker {
    peers: u32,
    channels: u32,
    announces: u32,
    cpu_s: f64,
    announces_per_cpu_s: f64,
    swarm_heap_bytes: usize,
    heap_bytes_per_peer: f64,
    rss_growth_bytes_per_peer: f64,
    answer_bytes_mean: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<VsAquatic>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<VsRedis>,
}

/// Resident set size of a process (`"self"` or a pid; Linux), bytes.
fn rss(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

pub(crate) fn run(a: TrackerBenchArgs) -> anyhow::Result<()> {
    let channels: Vec<_> = (0..a.channels.max(1)).map(|i| ChannelKeypair::from_secret_bytes(&seed(i)).id()).collect();
    let tracker = Tracker::new(StoreConfig::default(), Arc::new(dir_of(&channels)), SeederTokens::default());
    let hashes: Vec<String> = channels.iter().map(|c| percent_encode(&c.info_hash())).collect();
    let query = |peer: u32, slots: u32| {
        let mut id = *b"-SH0100-000000000000";
        id[8..12].copy_from_slice(&peer.to_be_bytes());
        format!(
            "info_hash={}&peer_id={}&port={}&uploaded=0&downloaded=0&left=0&compact=1&numwant=50&slots={}&reachable={}&watched={}",
            hashes[(peer % a.channels.max(1)) as usize],
            percent_encode(&id),
            1024 + peer % 60_000,
            slots % 8,
            u32::from(peer.is_multiple_of(2)),
            slots % 3_600,
        )
    };
    let ip = |peer: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + peer));
    let rss0 = rss("self");
    for p in 0..a.peers {
        tracker.announce(&query(p, 0), ip(p), 0, 0);
    }
    let rss_growth = rss("self").saturating_sub(rss0);
    let heap = tracker.swarms.heap_bytes();
    // Queries are built before timing, so the figure is the tracker's work.
    let queries: Vec<String> = (0..4096u32).map(|i| query((i * 7919) % a.peers.max(1), i)).collect();
    let cpu0 = crate::bench_nginx::proc_cpu("self").map_or(Duration::ZERO, |(t, _)| t);
    let start = Instant::now();
    let mut answer_bytes = 0usize;
    for i in 0..a.announces {
        let q = &queries[i as usize % queries.len()];
        let peer = (i as usize % queries.len()) as u32;
        let (_, body) = tracker.announce(q, ip(peer), 1, 0);
        answer_bytes += body.len();
    }
    let wall = start.elapsed();
    let cpu = crate::bench_nginx::proc_cpu("self")
        .map_or(Duration::ZERO, |(t, _)| t)
        .saturating_sub(cpu0)
        .max(Duration::from_millis(10));
    let peers = tracker.swarms.totals();
    let held = (peers.seeds + peers.viewers).max(1) as f64;
    let mut r = BenchTracker {
        peers: a.peers,
        channels: a.channels,
        announces: a.announces,
        cpu_s: cpu.as_secs_f64(),
        announces_per_cpu_s: f64::from(a.announces) / cpu.as_secs_f64(),
        swarm_heap_bytes: heap,
        heap_bytes_per_peer: heap as f64 / held,
        rss_growth_bytes_per_peer: rss_growth as f64 / held,
        answer_bytes_mean: answer_bytes as f64 / f64::from(a.announces.max(1)),
        http: None,
        redis: None,
    };
    println!("{:<36} {:>14}", "figure", "measured");
    println!("{:<36} {:>14}", "peers / channels", format!("{} / {}", r.peers, r.channels));
    println!("{:<36} {:>14.2}", "CPU seconds", r.cpu_s);
    println!("{:<36} {:>14.0}", "announces per CPU-second", r.announces_per_cpu_s);
    println!("{:<36} {:>14.1}", "swarm heap bytes per peer (≤ 64)", r.heap_bytes_per_peer);
    println!("{:<36} {:>14.1}", "RSS growth bytes per peer", r.rss_growth_bytes_per_peer);
    println!("{:<36} {:>14.0}", "answer bytes, mean", r.answer_bytes_mean);
    eprintln!("({:.2} s wall)", wall.as_secs_f64());
    // The in-process swarms are freed before the other runs.
    drop(tracker);
    if let Some(url) = &a.redis_url {
        let tracker = Tracker::new(StoreConfig::default(), Arc::new(dir_of(&channels)), SeederTokens::default());
        let v =
            vs_redis(&a, url, tracker, (0..a.peers).map(|p| query(p, 0)).collect(), queries, r.announces_per_cpu_s)?;
        println!("{:<36} {:>14.0}", "Redis: announces per second", v.announces_per_s);
        println!("{:<36} {:>14.0}", "Redis: announces per tracker CPU-s", v.announces_per_tracker_cpu_s);
        println!("{:<36} {:>14.2}", "Redis ÷ memory, per tracker CPU-s", v.ratio_per_tracker_cpu_s);
        if let Some(t) = v.ratio_per_total_cpu_s {
            println!("{:<36} {:>14.2}", "Redis ÷ memory, per total CPU-s", t);
        }
        println!("{:<36} {:>14}", "Redis: answered from memory", v.redis_errors);
        r.redis = Some(v);
    }
    if a.vs_aquatic {
        r.http = Some(vs_aquatic(&a)?);
    }
    let path = a.out.join("bench-tracker.json");
    crate::machine::write_bench_json(&path, &r)?;
    Ok(())
}

fn dir_of(channels: &[swarm::piece::ChannelId]) -> StaticDirectory {
    StaticDirectory::new(channels.iter().enumerate().map(|(i, id)| (format!("ch{i}"), *id)))
}

/// The announce path with membership in Redis: the swarms filled, then `redis_announces`
/// timed, 64 in flight (as many connections would), on one thread.
fn vs_redis(
    a: &TrackerBenchArgs,
    url: &str,
    tracker: Tracker,
    fill: Vec<String>,
    queries: Vec<String>,
    memory_per_cpu_s: f64,
) -> anyhow::Result<VsRedis> {
    use anyhow::Context;
    const IN_FLIGHT: usize = 64;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let prefix = format!("shoal-bench-{}", std::process::id());
        let shared = tracker::shared::SharedSwarms::connect(url, &prefix, StoreConfig::default())
            .await
            .context("connecting to Redis")?;
        shared.clear().await?;
        let tracker = Arc::new(tracker.with_shared(shared.clone()));
        let ip = |peer: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + peer));
        let run = |qs: Arc<Vec<String>>, n: u32, now_s: u32| {
            let tracker = tracker.clone();
            async move {
                let mut set = tokio::task::JoinSet::new();
                for i in 0..n {
                    if set.len() >= IN_FLIGHT {
                        set.join_next().await;
                    }
                    let (tracker, qs) = (tracker.clone(), qs.clone());
                    set.spawn(async move {
                        let q = &qs[i as usize % qs.len()];
                        tracker.announce_shared(q, ip(i), now_s, tracker::http::unix_now()).await;
                    });
                }
                while set.join_next().await.is_some() {}
            }
        };
        let fill_n = fill.len() as u32;
        run(Arc::new(fill), fill_n, 0).await;
        let redis_pid = redis_pid(url).await;
        let redis_cpu =
            |pid: &Option<String>| pid.as_deref().and_then(crate::bench_nginx::proc_cpu).map(|(t, _)| t.as_secs_f64());
        let errors0 = tracker.metrics.redis_errors.get();
        let (cpu0, rcpu0) =
            (crate::bench_nginx::proc_cpu("self").map_or(Duration::ZERO, |(t, _)| t), redis_cpu(&redis_pid));
        let start = Instant::now();
        run(Arc::new(queries), a.redis_announces, 1).await;
        let wall = start.elapsed().as_secs_f64();
        let cpu = crate::bench_nginx::proc_cpu("self")
            .map_or(Duration::ZERO, |(t, _)| t)
            .saturating_sub(cpu0)
            .as_secs_f64()
            .max(0.01);
        let rcpu = match (rcpu0, redis_cpu(&redis_pid)) {
            (Some(b), Some(e)) => Some(e - b),
            _ => None,
        };
        shared.clear().await?;
        let n = f64::from(a.redis_announces);
        Ok(VsRedis {
            announces: a.redis_announces,
            in_flight: IN_FLIGHT,
            wall_s: wall,
            announces_per_s: n / wall,
            tracker_cpu_s: cpu,
            announces_per_tracker_cpu_s: n / cpu,
            redis_cpu_s: rcpu,
            ratio_per_tracker_cpu_s: n / cpu / memory_per_cpu_s,
            ratio_per_total_cpu_s: rcpu.map(|r| n / (cpu + r) / memory_per_cpu_s),
            redis_errors: tracker.metrics.redis_errors.get() - errors0,
        })
    })
}

/// Redis's process id when it runs on this machine (its CPU time is then measured).
async fn redis_pid(url: &str) -> Option<String> {
    let host = url.trim_start_matches("redis://").split(['/', ':']).next().unwrap_or("");
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        return None;
    }
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await.ok()?;
    info.lines().find_map(|l| l.strip_prefix("process_id:")).map(|p| p.trim().to_owned())
}

fn seed(i: u32) -> [u8; 32] {
    let mut s = [7u8; 32];
    s[..4].copy_from_slice(&i.to_be_bytes());
    s
}

fn bin(dir: &Option<PathBuf>, name: &str) -> PathBuf {
    dir.as_ref().map_or_else(|| PathBuf::from(name), |d| d.join(name))
}

/// `taskset -c CPU` in front of a command where there are two or more CPUs.
fn pinned(cpu: usize, program: &std::path::Path) -> std::process::Command {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores >= 2 && std::process::Command::new("taskset").arg("-V").output().is_ok() {
        let mut c = std::process::Command::new("taskset");
        c.arg("-c").arg(cpu.to_string()).arg(program);
        c
    } else {
        std::process::Command::new(program)
    }
}

fn vs_aquatic(a: &TrackerBenchArgs) -> anyhow::Result<VsAquatic> {
    use anyhow::{Context, bail};
    use std::process::Stdio;

    let aquatic = bin(&a.aquatic_bin, "aquatic_http");
    let load = bin(&a.aquatic_bin, "aquatic_http_load_test");
    for b in [&aquatic, &load] {
        if std::process::Command::new(b).arg("-h").output().is_err() {
            bail!("{} not found: cargo install aquatic_http aquatic_http_load_test", b.display());
        }
    }
    let work = std::env::temp_dir().join(format!("shoal-bench-tracker-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let run_load = |port: u16| -> anyhow::Result<f64> {
        let cfg = String::from_utf8(std::process::Command::new(&load).arg("-p").output()?.stdout)?
            .replace("server_address = \"127.0.0.1:3000\"", &format!("server_address = \"127.0.0.1:{port}\""))
            .replace("duration = 0", &format!("duration = {}", a.duration))
            .replace("enable_tls = true", "enable_tls = false");
        let path = work.join("load-test.toml");
        std::fs::write(&path, cfg)?;
        let out = pinned(0, &load).arg("-c").arg(&path).output().context("running the load test")?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("Average responses per second: "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .with_context(|| format!("no summary from the load test: {text}"))
    };
    // Returns the run and the server's /metrics text, read just before it stops.
    let measure =
        |name: &'static str, mut server: std::process::Child, port: u16| -> anyhow::Result<(HttpRun, String)> {
            crate::bench_nginx::wait_for_port(port, &mut server)?;
            let pid = server.id().to_string();
            let cpu = || crate::bench_nginx::proc_cpu(&pid).map_or(Duration::ZERO, |(t, _)| t);
            let c0 = cpu();
            let result = run_load(port);
            let used = cpu().saturating_sub(c0).max(Duration::from_millis(10));
            let server_rss = rss(&pid);
            let metrics = crate::bench_nginx::http_get(([127, 0, 0, 1], port).into(), "/metrics").unwrap_or_default();
            let _ = server.kill();
            let _ = server.wait();
            let rps = result?;
            let run = HttpRun {
                server: name,
                responses_per_s: rps,
                server_cpu_s: used.as_secs_f64(),
                responses_per_cpu_s: rps * f64::from(a.duration) / used.as_secs_f64(),
                server_rss_mbytes: server_rss as f64 / 1e6,
            };
            Ok((run, metrics))
        };

    let port = crate::bench_nginx::free_port()?;
    let shoal = pinned(1, &std::env::current_exe()?)
        .args(["tracker", "--bench-any-info-hash", "--threads", "1", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(work.join("shoal"))
        .env("SHOAL_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let (shoal, metrics) = measure("shoal tracker", shoal, port)?;
    // Swarm memory per peer, as the tracker's own gauges had it at its last sweep.
    let gauge = |name: &str| {
        metrics.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0)
    };
    let peers = gauge("shoal_tracker_viewers ") + gauge("shoal_tracker_seeds ");
    let heap_per_peer = gauge("shoal_tracker_swarm_memory_bytes ") / peers.max(1.0);
    let port = crate::bench_nginx::free_port()?;
    let cfg = String::from_utf8(std::process::Command::new(&aquatic).arg("-p").output()?.stdout)?
        .replace("address = \"0.0.0.0:3000\"", &format!("address = \"127.0.0.1:{port}\""));
    let cfg_path = work.join("aquatic.toml");
    std::fs::write(&cfg_path, cfg)?;
    let aq = pinned(1, &aquatic).arg("-c").arg(&cfg_path).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let (aq_run, _) = measure("aquatic_http", aq, port)?;
    let _ = std::fs::remove_dir_all(&work);
    let v = VsAquatic {
        duration_s: a.duration,
        pinned: cores >= 2,
        ratio_throughput: shoal.responses_per_s / aq_run.responses_per_s.max(1.0),
        ratio_per_cpu_s: shoal.responses_per_cpu_s / aq_run.responses_per_cpu_s.max(1.0),
        shoal,
        aquatic_http: aq_run,
        shoal_peers: peers as u64,
        shoal_heap_bytes_per_peer: heap_per_peer,
    };
    println!();
    println!(
        "{:<16} {:>14} {:>12} {:>16} {:>10}",
        "over HTTP", "responses/s", "server CPU s", "per CPU-second", "RSS MB"
    );
    for r in [&v.shoal, &v.aquatic_http] {
        println!(
            "{:<16} {:>14.0} {:>12.2} {:>16.0} {:>10.1}",
            r.server, r.responses_per_s, r.server_cpu_s, r.responses_per_cpu_s, r.server_rss_mbytes
        );
    }
    println!(
        "shoal / aquatic_http: {:.2}x responses/s on one core (target ≥ 1.0), {:.2}x per CPU-second",
        v.ratio_throughput, v.ratio_per_cpu_s
    );
    Ok(v)
}
