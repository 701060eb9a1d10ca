//! `shoal bench ingest-vs-nginx`: the same ffmpeg feed pushed over real RTMP sockets to
//! `shoal ingest` and to nginx with `libnginx-mod-rtmp` (HLS on) side by side, and the
//! CPU-seconds each server spent on it. ffmpeg's `tee` muxer sends identical bytes to
//! both; the feed is copied (`-c copy`), never re-encoded, so the figure is the
//! servers' cost per media second and not ffmpeg's. Ingest holds a feed to its clock
//! (a feed more than 200 ms ahead is paused, and with it the tee), so both servers
//! take the media at real time and a run lasts as long as the media: ffmpeg reading
//! faster (`--readrate`) only makes the feed arrive in bursts.
//!
//! Writes `bench-ingest-vs-nginx.json`, prints a table, asserts nothing. Needs ffmpeg
//! and nginx with the RTMP module (`apt-get install -y ffmpeg nginx-light
//! libnginx-mod-rtmp`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use catalogue::file::ChannelFile;
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub(crate) struct VsNginxArgs {
    /// Channels pushed at once (one ffmpeg each).
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// Times the feed is replayed per channel.
    #[arg(long, default_value_t = 30)]
    loops: u32,
    /// The FLV feed (H.264 + AAC). Default: 10 s of 1280x720 25 fps `testsrc2` at
    /// 3 Mbit/s + AAC, encoded once into the output directory.
    #[arg(long)]
    feed: Option<PathBuf>,
    /// Measurements (fresh servers each time); the table gives each and the median ratio.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// `shoal ingest --piece-ms`: media per piece, so signatures per second.
    #[arg(long, default_value_t = 50)]
    piece_ms: u32,
    /// ffmpeg reads the feed at this many times real time (`-readrate`; 0: as fast as
    /// it can). Ingest pauses a feed that runs ahead of its clock (and the tee with
    /// it): above 1, the feed arrives in bursts at real time on average; 1 is an
    /// encoder's steady pace.
    #[arg(long, default_value_t = 1.0)]
    readrate: f64,
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    #[arg(long, default_value = "/usr/lib/nginx/modules/ngx_rtmp_module.so")]
    rtmp_module: PathBuf,
    /// Where to write `bench-ingest-vs-nginx.json` (and the generated feed).
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Another `shoal` build (say, the commit before a change) whose ingest is fed the
    /// same bytes in the same run, a third output of the tee: its CPU is shown beside
    /// this build's, so a change is measured under the very load the other build saw
    /// (runs apart on a shared machine differ by ±15 %).
    #[arg(long)]
    baseline: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Server {
    cpu_s: f64,
    /// What the server produced from the feed, to show it did the work.
    outputs: u64,
    output_mbytes: f64,
}

#[derive(Debug, Serialize)]
struct VsNginx {
    channels: usize,
    piece_ms: u32,
    /// ffmpeg's `-readrate` (0: full speed).
    readrate: f64,
    feed: String,
    feed_mbit_s: f64,
    media_seconds_per_channel: f64,
    bytes_fed_per_server_mbytes: f64,
    runs: Vec<Run>,
    /// Median over the runs of shoal CPU-seconds / nginx-rtmp CPU-seconds (target ≤ 0.5).
    cpu_ratio_median: f64,
    /// `--baseline`: the binary, and the median over the runs of this build's CPU over
    /// the baseline's in the same run.
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_vs_baseline_median: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Run {
    wall_s: f64,
    shoal: Server,
    nginx_rtmp_hls: Server,
    cpu_ratio: f64,
    /// `--baseline`'s ingest in the same run, and its CPU over nginx-rtmp's.
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<Server>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_cpu_ratio: Option<f64>,
}

/// Kills and reaps a child when dropped, so an error path leaves no server behind.
pub(crate) struct Reaped(pub(crate) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn run(a: VsNginxArgs) -> anyhow::Result<()> {
    for (tool, path) in [("ffmpeg", Path::new("ffmpeg")), ("nginx", a.nginx.as_path())] {
        if Command::new(path).arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            bail!("{tool} not found at {}: apt-get install -y ffmpeg nginx-light libnginx-mod-rtmp", path.display());
        }
    }
    if !a.rtmp_module.exists() {
        bail!("{} missing: apt-get install -y libnginx-mod-rtmp", a.rtmp_module.display());
    }
    std::fs::create_dir_all(&a.out)?;
    let feed = match &a.feed {
        Some(f) => f.clone(),
        None => default_feed(&a.out)?,
    };
    let feed_len = std::fs::metadata(&feed).with_context(|| format!("{}", feed.display()))?.len();
    let feed_s = probe_duration(&feed)?;
    let loops = f64::from(a.loops.max(1));
    println!(
        "{} channels × {:.0} s of a {:.1} Mbit/s feed at {} to both; shoal pieces of {} ms",
        a.channels,
        feed_s * loops,
        feed_len as f64 * 8.0 / feed_s / 1e6,
        if a.readrate > 0.0 { format!("{}x real time", a.readrate) } else { "full speed".into() },
        a.piece_ms
    );
    print!(
        "{:<5} {:>14} {:>14} {:>9} {:>13} {:>13}",
        "run", "shoal CPU s", "nginx CPU s", "ratio", "shoal pieces", "nginx frags"
    );
    if a.baseline.is_some() {
        print!(" {:>14} {:>9} {:>12}", "baseline CPU s", "its ratio", "vs baseline");
    }
    println!();
    let mut runs = Vec::new();
    for i in 0..a.runs.max(1) {
        let work = scratch_dir()?;
        let result = measure(&a, &feed, &work);
        let _ = std::fs::remove_dir_all(&work);
        let (wall, shoal, nginx, baseline) = result?;
        let run = Run {
            wall_s: wall.as_secs_f64(),
            cpu_ratio: shoal.cpu_s / nginx.cpu_s.max(0.01),
            baseline_cpu_ratio: baseline.as_ref().map(|b| b.cpu_s / nginx.cpu_s.max(0.01)),
            shoal,
            nginx_rtmp_hls: nginx,
            baseline,
        };
        print!(
            "{:<5} {:>14.2} {:>14.2} {:>9.3} {:>13} {:>13}",
            i + 1,
            run.shoal.cpu_s,
            run.nginx_rtmp_hls.cpu_s,
            run.cpu_ratio,
            run.shoal.outputs,
            run.nginx_rtmp_hls.outputs
        );
        if let (Some(b), Some(r)) = (&run.baseline, run.baseline_cpu_ratio) {
            print!(" {:>14.2} {:>9.3} {:>12.3}", b.cpu_s, r, run.shoal.cpu_s / b.cpu_s.max(0.01));
        }
        println!();
        runs.push(run);
    }
    let median = |mut v: Vec<f64>| -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratios: Vec<f64> = runs.iter().map(|r| r.cpu_ratio).collect();
    let vs_baseline: Vec<f64> =
        runs.iter().filter_map(|r| r.baseline.as_ref().map(|b| r.shoal.cpu_s / b.cpu_s.max(0.01))).collect();
    let r = VsNginx {
        channels: a.channels,
        piece_ms: a.piece_ms,
        readrate: a.readrate,
        feed: feed.display().to_string(),
        feed_mbit_s: feed_len as f64 * 8.0 / feed_s / 1e6,
        media_seconds_per_channel: feed_s * loops,
        bytes_fed_per_server_mbytes: feed_len as f64 * loops * a.channels as f64 / 1e6,
        cpu_ratio_median: median(ratios),
        baseline: a.baseline.as_ref().map(|b| b.display().to_string()),
        cpu_vs_baseline_median: (!vs_baseline.is_empty()).then(|| median(vs_baseline)),
        runs,
    };
    println!("median CPU ratio shoal/nginx-rtmp: {:.3}   (target ≤ 0.5)", r.cpu_ratio_median);
    if let Some(v) = r.cpu_vs_baseline_median {
        println!("median CPU of this build over the baseline's, same runs: {v:.3}");
    }
    let path = a.out.join("bench-ingest-vs-nginx.json");
    crate::machine::write_bench_json(&path, &r)?;
    Ok(())
}

/// Starts the servers, pushes the feed through ffmpeg's tee to each channel on all of
/// them, and returns (wall, shoal, nginx, baseline) once all have gone idle.
fn measure(a: &VsNginxArgs, feed: &Path, work: &Path) -> anyhow::Result<(Duration, Server, Server, Option<Server>)> {
    let data = work.join("shoal");
    let channels = ChannelFile::new(data.join("channels.json"), data.join("keys"));
    let mut keys = Vec::new();
    for i in 0..a.channels {
        keys.push(channels.create_channel(&format!("bench-{i}"), false, None).map_err(anyhow::Error::msg)?);
    }
    let shoal = Ingest::start(&std::env::current_exe()?, &data, a.piece_ms)?;
    let baseline = match &a.baseline {
        Some(exe) => {
            // The same channels, keys and stream keys: a copy of the data directory.
            let base = work.join("baseline");
            std::fs::create_dir_all(base.join("keys"))?;
            std::fs::copy(data.join("channels.json"), base.join("channels.json"))?;
            for e in std::fs::read_dir(data.join("keys"))? {
                let e = e?;
                std::fs::copy(e.path(), base.join("keys").join(e.file_name()))?;
            }
            Some(Ingest::start(exe, &base, a.piece_ms).with_context(|| format!("baseline {}", exe.display()))?)
        }
        None => None,
    };

    let nginx_port = free_port()?;
    let hls = work.join("hls");
    std::fs::create_dir_all(&hls)?;
    let conf = work.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&a.rtmp_module, work, &hls, nginx_port))?;
    let mut nginx = Reaped(
        Command::new(&a.nginx)
            .arg("-p")
            .arg(work)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(work.join("nginx-error.log"))
            .stdout(Stdio::null())
            .spawn()
            .context("starting nginx")?,
    );
    wait_for_port(nginx_port, &mut nginx.0)?;

    let nginx_pid = nginx.0.id();
    let cpu = |i: &Option<Ingest>| i.as_ref().map_or(Duration::ZERO, |i| tree_cpu(i.child.0.id()));
    let (shoal0, baseline0) = (tree_cpu(shoal.child.0.id()), cpu(&baseline));
    let nginx0 = tree_cpu(nginx_pid);
    let start = Instant::now();
    let mut pushers = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let mut tee = format!(
            "[f=flv:onfail=abort]rtmp://{}/live/{key}|[f=flv:onfail=abort]rtmp://127.0.0.1:{nginx_port}/live/bench-{i}",
            shoal.rtmp
        );
        if let Some(b) = &baseline {
            tee.push_str(&format!("|[f=flv:onfail=abort]rtmp://{}/live/{key}", b.rtmp));
        }
        pushers.push(Reaped(
            Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-stream_loop"])
                .arg((a.loops.max(1) - 1).to_string())
                .args(["-readrate", &a.readrate.max(0.0).to_string()])
                .arg("-i")
                .arg(feed)
                .args(["-map", "0", "-c", "copy", "-f", "tee", &tee])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting ffmpeg")?,
        ));
    }
    for mut p in pushers {
        let status = p.0.wait()?;
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = p.0.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            bail!("ffmpeg push failed ({status}): {err}");
        }
    }
    // The servers may still be working through what ffmpeg wrote before it exited:
    // read CPU until neither moves (10 ms ticks) over a 300 ms interval.
    let now = || (tree_cpu(shoal.child.0.id()), tree_cpu(nginx_pid), cpu(&baseline));
    let mut last = now();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(300));
        let next = now();
        if next == last {
            break;
        }
        last = next;
    }
    let (s, n, b) = last;
    let wall = start.elapsed();
    let (metrics, baseline) = match baseline {
        Some(base) => {
            let m = Metrics::fetch(base.http)?;
            (Metrics::fetch(shoal.http)?, Some(m.server((b - baseline0).as_secs_f64())))
        }
        None => (Metrics::fetch(shoal.http)?, None),
    };
    let metric = |name: &str| metrics.get(name);
    let (discontinuities, waited) =
        (metric("shoal_ingest_discontinuities_total "), metric("shoal_ingest_frames_before_keyframe_total "));
    if discontinuities > 0 {
        eprintln!("shoal: {discontinuities} timeline discontinuities, {waited} frames dropped waiting for a keyframe");
    }
    let (segments, hls_bytes) = count_ts(&hls);
    if segments == 0 || metric("shoal_ingest_pieces_total ") == 0 {
        bail!(
            "a server produced nothing: nginx HLS segments {segments}, shoal pieces {}",
            metric("shoal_ingest_pieces_total ")
        );
    }
    Ok((
        wall,
        metrics.server((s - shoal0).as_secs_f64()),
        Server { cpu_s: (n - nginx0).as_secs_f64(), outputs: segments, output_mbytes: hls_bytes as f64 / 1e6 },
        baseline,
    ))
}

/// A `shoal ingest` started for the bench: the process and where it listens.
struct Ingest {
    child: Reaped,
    rtmp: SocketAddr,
    http: SocketAddr,
}

impl Ingest {
    fn start(exe: &Path, data: &Path, piece_ms: u32) -> anyhow::Result<Ingest> {
        let mut child = Reaped(
            Command::new(exe)
                .args(["ingest", "--rtmp-listen", "127.0.0.1:0", "--srt-listen", "127.0.0.1:0"])
                .args(["--http-listen", "127.0.0.1:0", "--data-dir"])
                .arg(data)
                .arg("--piece-ms")
                .arg(piece_ms.to_string())
                .env("SHOAL_LOG", "warn")
                .stdout(Stdio::piped())
                .spawn()
                .with_context(|| format!("starting {} ingest", exe.display()))?,
        );
        wait_until_serving(&mut child.0)?;
        let ports: serde_json::Value = serde_json::from_slice(&std::fs::read(data.join("ports.json"))?)?;
        let addr = |k: &str| -> anyhow::Result<SocketAddr> {
            Ok(ports[k].as_str().context("ports.json")?.parse::<SocketAddr>()?)
        };
        Ok(Ingest { rtmp: addr("rtmp")?, http: addr("http")?, child })
    }
}

/// An ingest's `/metrics` page once the feed is over.
struct Metrics(String);

impl Metrics {
    fn fetch(http: SocketAddr) -> anyhow::Result<Metrics> {
        Ok(Metrics(http_get(http, "/metrics")?))
    }

    /// The value of an unlabelled sample (`name` ends with a space), 0 if absent.
    fn get(&self, name: &str) -> u64 {
        self.0.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0)
            as u64
    }

    fn server(&self, cpu_s: f64) -> Server {
        Server {
            cpu_s,
            outputs: self.get("shoal_ingest_pieces_total "),
            output_mbytes: self.get("shoal_ingest_piece_bytes_total ") as f64 / 1e6,
        }
    }
}

/// A common nginx-rtmp deployment: live application with HLS, 2 s fragments. Old
/// fragments are kept (`hls_cleanup off`) so the bench can count what was written;
/// the fragments go to the scratch directory (tmpfs where there is one).
fn nginx_conf(module: &Path, work: &Path, hls: &Path, port: u16) -> String {
    // As root, nginx's workers would switch to `nobody` and could not write the scratch dir.
    // One process, no master: a killed master left its worker running after the bench.
    let user = if std::env::var("USER").as_deref() == Ok("root") || is_root() { "user root;\n" } else { "" };
    format!(
        "load_module {module};\n{user}daemon off;\nmaster_process off;\nworker_processes 1;\npid {pid};\n\
         events {{ worker_connections 1024; }}\n\
         rtmp {{\n  server {{\n    listen 127.0.0.1:{port};\n    chunk_size 4096;\n\
         \x20   application live {{\n      live on;\n      hls on;\n      hls_path {hls};\n\
         \x20     hls_fragment 2s;\n      hls_playlist_length 10s;\n      hls_cleanup off;\n    }}\n  }}\n}}\n",
        module = module.display(),
        pid = work.join("nginx.pid").display(),
        hls = hls.display(),
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

fn scratch_dir() -> anyhow::Result<PathBuf> {
    let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let dir = base.join(format!("shoal-bench-nginx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("logs"))?;
    Ok(dir)
}

/// The generated default feed: encoded once, reused by later runs.
fn default_feed(out: &Path) -> anyhow::Result<PathBuf> {
    let path = out.join("feed-720p25-3mbit-10s.flv");
    if path.exists() {
        return Ok(path);
    }
    eprintln!("encoding the feed once into {} ...", path.display());
    let tmp = out.join("feed.partial.flv");
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "10"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-b:v", "3M", "-maxrate", "3M", "-bufsize", "3M"])
        .args(["-g", "50", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-f", "flv"])
        .arg(&tmp)
        .status()?;
    if !st.success() {
        bail!("ffmpeg could not encode the feed ({st})");
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

fn probe_duration(feed: &Path) -> anyhow::Result<f64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"])
        .arg(feed)
        .output()
        .context("ffprobe")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<f64>()
        .with_context(|| format!("ffprobe gave no duration for {}", feed.display()))
}

/// Waits for `shoal ingest` to print its `HTTP` line (it writes ports.json first).
fn wait_until_serving(child: &mut Child) -> anyhow::Result<()> {
    use std::io::BufRead;
    let stdout = child.stdout.take().context("stdout is piped")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        if line?.starts_with("HTTP") {
            // Keep draining its stdout so it never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return Ok(());
        }
    }
    bail!("shoal ingest exited before serving: {:?}", child.wait())
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A server that does not say when it listens: connect until it accepts (or it exits).
pub(crate) fn wait_for_port(port: u16, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(st) = child.try_wait()? {
            bail!("the server exited ({st}) before listening");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listened on {port} within 10 s")
}

/// User + system CPU of a process and its children, from `/proc` (Linux).
pub(crate) fn tree_cpu(root: u32) -> Duration {
    let mut total = proc_cpu(&root.to_string()).map_or(Duration::ZERO, |(t, _)| t);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.bytes().all(|b| b.is_ascii_digit())
                && let Some((t, ppid)) = proc_cpu(&name)
                && ppid == root
            {
                total += t;
            }
        }
    }
    total
}

/// (user + system CPU, parent pid) of `/proc/<pid>/stat`.
pub(crate) fn proc_cpu(pid: &str) -> Option<(Duration, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let num = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    // ppid, utime and stime are fields 4, 14 and 15 (1-based), i.e. 1, 11 and 12 after ')'.
    Some((Duration::from_millis((num(11)? + num(12)?) * 10), num(1)? as u32)) // USER_HZ is 100
}

fn count_ts(dir: &Path) -> (u64, u64) {
    let (mut n, mut bytes) = (0, 0);
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "ts") {
                n += 1;
                bytes += e.metadata().map_or(0, |m| m.len());
            }
        }
    }
    (n, bytes)
}

pub(crate) fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    Ok(raw)
}
