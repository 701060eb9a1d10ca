//! `shoal sim`: run a named scenario, override any field, print a table, write JSON.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use sim::{Report, Scenario};

#[derive(Debug, Args)]
pub(crate) struct SimArgs {
    /// Reference scenario of measuring.md to start from.
    #[arg(long, default_value = "small")]
    scenario: String,
    /// Write the measuring.md JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Seed of every random choice; the same seed gives the same figures.
    #[arg(long)]
    rng_seed: Option<u64>,
    /// Add this many hostile peers (what they do: --attack).
    #[arg(long)]
    attackers: Option<u32>,
    /// What the attackers do: forge (forged and tampered pieces), withhold (claim the
    /// best parent profile, take subscriptions, send nothing), liar (the same claims,
    /// genuine pieces 1.2 s late).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(sim::Attack::NAMES))]
    attack: Option<String>,
    #[arg(long)]
    viewers: Option<u32>,
    #[arg(long)]
    seeds: Option<u32>,
    #[arg(long)]
    bitrate_kbps: Option<u32>,
    #[arg(long)]
    warmup_s: Option<u32>,
    #[arg(long)]
    window_s: Option<u32>,
    /// Share of viewers replaced per minute (0.1 = 10 %/min).
    #[arg(long)]
    churn_per_min: Option<f64>,
    #[arg(long)]
    loss: Option<f64>,
    #[arg(long)]
    playout_delay_ms: Option<u32>,
    #[arg(long)]
    piece_ms: Option<u32>,
    #[arg(long)]
    n_substreams: Option<u8>,
    /// Override any other scenario field: `--set field=value` (TOML value syntax is not
    /// needed: numbers and strings as JSON).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<String>,
    /// Print the resolved scenario as JSON and exit.
    #[arg(long)]
    print_scenario: bool,
    /// Write SVG pictures here: latency CDF, seed egress over time (and, with
    /// `--sweep`, seed egress against audience size).
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// Run the scenario once per audience size and compare seed egress with a CDN's.
    #[arg(long)]
    sweep: bool,
    /// Audience sizes of `--sweep`.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000,100000")]
    sweep_viewers: Vec<u32>,
}

pub(crate) fn run(args: SimArgs) -> anyhow::Result<()> {
    let scenario = resolve(&args)?;
    if args.print_scenario {
        println!("{}", serde_json::to_string_pretty(&scenario)?);
        return Ok(());
    }
    if let Some(dir) = &args.plot {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if args.sweep {
        return sweep(&args, &scenario);
    }
    let report = simulate(&scenario)?;
    print_table(&report);
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report)?;
        crate::write_atomic(path, &json)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(dir) = &args.plot {
        write_svg(dir, "latency_cdf.svg", &sim::plot::latency_cdf(&report))?;
        write_svg(dir, "seed_egress.svg", &sim::plot::seed_egress_over_time(&report))?;
    }
    Ok(())
}

fn sweep(args: &SimArgs, base: &Scenario) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for &viewers in &args.sweep_viewers {
        let sc = Scenario { viewers, name: format!("{}@{viewers}", base.name), ..base.clone() };
        eprintln!("sweep: {viewers} viewers");
        let r = simulate(&sc)?;
        print_table(&r);
        println!();
        runs.push(r);
    }
    println!("{:>9} {:>16} {:>16} {:>11} {:>10}", "viewers", "seed Mbit/s", "CDN Mbit/s", "seed share", "p99 ms");
    for r in &runs {
        let seed_mbps = r.seed_upload_bytes as f64 * 8.0 / 1e6 / f64::from(r.window_s.max(1));
        let cdn_mbps = f64::from(r.viewers) * f64::from(r.bitrate_kbps) / 1e3;
        println!("{:>9} {seed_mbps:>16.1} {cdn_mbps:>16.1} {:>11.4} {:>10}", r.viewers, r.seed_share, r.latency_ms.p99);
    }
    if let Some(path) = &args.json {
        crate::write_atomic(path, &serde_json::to_vec_pretty(&runs)?)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(dir) = &args.plot {
        write_svg(dir, "seed_egress_vs_viewers.svg", &sim::plot::seed_egress_vs_viewers(&runs))?;
    }
    Ok(())
}

fn write_svg(dir: &std::path::Path, name: &str, chart: &sim::plot::Chart) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, chart.to_svg()).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// The glibc tunables for a big run: malloc's heap backed by transparent huge pages
/// (`hugetlb=1`), and freed memory kept rather than handed back to the kernel and
/// faulted in, zeroed, again (`trim_threshold` at 4 GiB, `mmap_threshold` at 32 MiB so
/// the per-peer buffers of a few hundred KiB come from the heap, not from `mmap`), and
/// a longer per-thread cache of freed blocks (`tcache_count`): the run frees and
/// allocates millions of messages a second of the same few sizes. Each one is read by
/// glibc once at start (checked with `ld.so --list-tunables`).
const MALLOC_TUNABLES: &str = "glibc.malloc.hugetlb=1:glibc.malloc.trim_threshold=4294967295:\
glibc.malloc.mmap_threshold=33554432:glibc.malloc.tcache_count=1000";

/// Runs this very command again under [`MALLOC_TUNABLES`] (transparent huge pages
/// first among them), and returns its exit code; `None` where that does not apply (not glibc, already asked,
/// `SHOAL_SIM_SMALL_PAGES` set, or the re-run could not start: then the caller runs it
/// here, with small pages).
///
/// Why: a big scenario's state (≈ 30 KiB per peer, 3–6 GiB at 100,000 viewers) is read
/// at random, one peer per event, so with 4 KiB pages nearly every event also misses
/// the TLB. Linux here gives huge pages only where a program asks (`madvise`), and
/// glibc asks only with this tunable, which it reads once at process start. Measured
/// (`hundred-k` cut to 18 s, same figures to the byte): 405 s → 325 s, 7 % more memory.
pub(crate) fn rerun_with_malloc_tunables(argv: &[std::ffi::OsString]) -> Option<std::process::ExitCode> {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) || std::env::var_os("SHOAL_SIM_SMALL_PAGES").is_some() {
        return None;
    }
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if tunables.contains("glibc.malloc.hugetlb") {
        return None;
    }
    let tunables =
        if tunables.is_empty() { MALLOC_TUNABLES.to_string() } else { format!("{tunables}:{MALLOC_TUNABLES}") };
    let exe = std::env::current_exe().ok()?;
    match std::process::Command::new(exe).args(argv.iter().skip(1)).env("GLIBC_TUNABLES", tunables).status() {
        Ok(status) => Some(match status.code() {
            Some(0) => std::process::ExitCode::SUCCESS,
            Some(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => std::process::ExitCode::FAILURE, // killed by a signal
        }),
        Err(e) => {
            eprintln!("sim: could not re-run with huge pages ({e}); running with small pages");
            None
        }
    }
}

/// Runs one scenario with progress on stderr for runs longer than a few seconds.
pub(crate) fn simulate(scenario: &Scenario) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut last = Instant::now();
    let end_us = scenario.end_ms() * 1000;
    let show_progress = std::io::stderr().is_terminal() || std::env::var_os("SHOAL_PROGRESS").is_some();
    let mut progress = |sim_us: u64, events: u64| {
        if last.elapsed() >= Duration::from_secs(2) {
            last = Instant::now();
            if show_progress || started.elapsed() >= Duration::from_secs(4) {
                eprintln!(
                    "sim: {:.1}/{:.1} s simulated, {events} events, {:.0} s wall",
                    sim_us as f64 / 1e6,
                    end_us as f64 / 1e6,
                    started.elapsed().as_secs_f64()
                );
            }
        }
    };
    sim::run(scenario, Some(&mut progress)).map_err(anyhow::Error::msg)
}

pub(crate) fn resolve(args: &SimArgs) -> anyhow::Result<Scenario> {
    let Some(mut sc) = Scenario::by_name(&args.scenario) else {
        bail!("unknown scenario {:?}; known: {}", args.scenario, Scenario::NAMES.join(", "));
    };
    macro_rules! over {
        ($($f:ident),*) => { $(if let Some(v) = args.$f { sc.$f = v; })* };
    }
    over!(rng_seed, attackers, viewers, seeds, bitrate_kbps, warmup_s, window_s, churn_per_min, loss);
    over!(playout_delay_ms, piece_ms, n_substreams);
    if let Some(a) = &args.attack {
        sc.attack = sim::Attack::by_name(a).with_context(|| format!("--attack {a:?}"))?;
    }
    if !args.set.is_empty() {
        let mut value = serde_json::to_value(&sc)?;
        for kv in &args.set {
            let (k, v) = kv.split_once('=').with_context(|| format!("--set {kv:?}: expected FIELD=VALUE"))?;
            let obj = value.as_object_mut().context("scenario serialises as an object")?;
            if !obj.contains_key(k) {
                bail!("--set {k}: no such scenario field (see --print-scenario)");
            }
            let parsed = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
            obj.insert(k.to_string(), parsed);
        }
        sc = serde_json::from_value(value).context("--set gave a field a value of the wrong type")?;
    }
    sc.validate().map_err(anyhow::Error::msg)?;
    Ok(sc)
}

pub(crate) fn print_table(r: &Report) {
    let rows = [
        ("scenario", r.scenario.clone()),
        ("viewers / seeds / attackers", format!("{} / {} / {} ({})", r.viewers, r.seeds, r.attackers, r.attack)),
        ("measured viewers × window pieces", format!("{} × {}", r.measured_viewers, r.window_pieces)),
        (
            "latency p50 / p95 / p99 / max",
            format!("{} / {} / {} / {} ms", r.latency_ms.p50, r.latency_ms.p95, r.latency_ms.p99, r.latency_ms.max),
        ),
        ("continuity", format!("{:.5} ({} pairs missing)", r.continuity, r.missing_pairs)),
        ("seed share", format!("{:.4}", r.seed_share)),
        ("duplicate ratio", format!("{:.4}", r.duplicate_ratio)),
        (
            "startup p50 / p99",
            format!("{} / {} ms ({} never started)", r.startup_ms.p50, r.startup_ms.p99, r.never_started),
        ),
        ("forged sent / accepted", format!("{} / {}", r.forged_pieces_sent, r.forged_pieces_accepted)),
        (
            "slots retaken / stalls / refused",
            format!("{} / {} / {}", r.seed_children_unvouched, r.parents_stalled, r.connections_refused),
        ),
        ("events, wall, peak memory", format!("{} in {:.2} s, {} MiB", r.events, r.wall_s, r.peak_rss_mib)),
    ];
    for (k, v) in rows {
        println!("{k:<34} {v}");
    }
}
