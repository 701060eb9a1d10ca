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
    /// Add this many peers that send forged and tampered pieces.
    #[arg(long)]
    attackers: Option<u32>,
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
}

pub(crate) fn run(args: SimArgs) -> anyhow::Result<()> {
    let scenario = resolve(&args)?;
    if args.print_scenario {
        println!("{}", serde_json::to_string_pretty(&scenario)?);
        return Ok(());
    }
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
    let report = sim::run(&scenario, Some(&mut progress)).map_err(anyhow::Error::msg)?;
    print_table(&report);
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report)?;
        crate::write_atomic(path, &json)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn resolve(args: &SimArgs) -> anyhow::Result<Scenario> {
    let Some(mut sc) = Scenario::by_name(&args.scenario) else {
        bail!("unknown scenario {:?}; known: {}", args.scenario, Scenario::NAMES.join(", "));
    };
    macro_rules! over {
        ($($f:ident),*) => { $(if let Some(v) = args.$f { sc.$f = v; })* };
    }
    over!(rng_seed, attackers, viewers, seeds, bitrate_kbps, warmup_s, window_s, churn_per_min, loss);
    over!(playout_delay_ms, piece_ms, n_substreams);
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

fn print_table(r: &Report) {
    let rows = [
        ("scenario", r.scenario.clone()),
        ("viewers / seeds / attackers", format!("{} / {} / {}", r.viewers, r.seeds, r.attackers)),
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
        ("events, wall", format!("{} in {:.2} s", r.events, r.wall_s)),
    ];
    for (k, v) in rows {
        println!("{k:<34} {v}");
    }
}
