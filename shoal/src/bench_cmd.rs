//! `shoal bench`: measurements that are too slow or too noisy for the test suite.
//! Each writes JSON and prints a table; none asserts anything.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use sim::{Report, Scenario};

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// Run a big simulator scenario (default `ten-k`) and compare it with the targets.
    Sim {
        #[arg(long, default_value = "ten-k")]
        scenario: String,
        #[arg(long)]
        rng_seed: Option<u64>,
        /// Add this many attackers.
        #[arg(long)]
        attackers: Option<u32>,
        /// What they do (see `shoal sim --help`).
        #[arg(long, default_value = "forge", value_parser = clap::builder::PossibleValuesParser::new(sim::Attack::NAMES))]
        attack: String,
        /// Where to write `bench-sim-<scenario>[-<attack>x<attackers>].json`.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
    },
    /// Replay the recorded fixture across channels through the ingest media path.
    Ingest {
        #[arg(long, default_value_t = 8)]
        channels: usize,
        /// Times the feed is replayed per channel.
        #[arg(long, default_value_t = 30)]
        loops: u32,
        /// An FLV feed (H.264 + AAC) instead of the recorded 4 s fixture: e.g. the one
        /// `shoal bench ingest-vs-nginx` encodes, to split its cost into media path and
        /// the rest.
        #[arg(long)]
        feed: Option<PathBuf>,
        /// Where to write `bench-ingest.json`.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
    },
    /// The same ffmpeg feed over RTMP to `shoal ingest` and to nginx-rtmp (HLS on):
    /// CPU-seconds of each and their ratio.
    IngestVsNginx(crate::bench_nginx::VsNginxArgs),
    /// The tracker's announce path in process: announces per CPU-second, memory per peer.
    Tracker(crate::bench_tracker::TrackerBenchArgs),
    /// The swarm on real sockets (loopback, one process): seeders, viewers, delayed links.
    Swarm(crate::bench_swarm::SwarmBenchArgs),
    /// A seeder's egress: its LL-HLS origin against nginx serving the same files, and
    /// piece pushes to many TCP peers with a frame copied per peer or shared.
    Seeder(crate::bench_seeder::SeederBenchArgs),
    /// Watch pages in headless Chromium against `shoal up`: P2P share, latency,
    /// startup, rebuffering, forgeries, CPU.
    Browsers(crate::bench_browsers::BrowsersBenchArgs),
    /// Main/backup ingest as processes, N times: (a) one encoder to two ingests, the
    /// leading one SIGKILLed; (b) one feed moved from a killed ingest to the backup.
    /// Pieces lost, longest stall, seeder switch time.
    Failover(crate::bench_failover::FailoverBenchArgs),
}

impl BenchArgs {
    pub(crate) fn simulates(&self) -> bool {
        matches!(self.what, BenchWhat::Sim { .. })
    }
}

/// One figure against its target.
#[derive(Debug, Serialize)]
struct Check {
    figure: &'static str,
    measured: f64,
    target: String,
    met: bool,
}

#[derive(Debug, Serialize)]
struct BenchSim<'a> {
    report: &'a Report,
    checks: Vec<Check>,
}

pub(crate) fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        BenchWhat::Ingest { channels, loops, feed, out } => {
            crate::bench_ingest::run(channels.max(1), loops.max(1), feed, out)
        }
        BenchWhat::IngestVsNginx(a) => crate::bench_nginx::run(a),
        BenchWhat::Tracker(a) => crate::bench_tracker::run(a),
        BenchWhat::Swarm(a) => crate::bench_swarm::run(a),
        BenchWhat::Seeder(a) => crate::bench_seeder::run(a),
        BenchWhat::Browsers(a) => crate::bench_browsers::run(a),
        BenchWhat::Failover(a) => crate::bench_failover::run(a),
        BenchWhat::Sim { scenario, rng_seed, attackers, attack, out } => {
            let Some(mut sc) = Scenario::by_name(&scenario) else {
                bail!("unknown scenario {scenario:?}; known: {}", Scenario::NAMES.join(", "));
            };
            if let Some(seed) = rng_seed {
                sc.rng_seed = seed;
            }
            if let Some(a) = attackers {
                sc.attackers = a;
            }
            sc.attack = sim::Attack::by_name(&attack).with_context(|| format!("--attack {attack:?}"))?;
            let report = crate::sim_cmd::simulate(&sc)?;
            let checks = checks(&report);
            crate::sim_cmd::print_table(&report);
            println!();
            println!("{:<22} {:>12} {:>14}  met", "figure", "measured", "target");
            for c in &checks {
                println!(
                    "{:<22} {:>12.4} {:>14}  {}",
                    c.figure,
                    c.measured,
                    c.target,
                    if c.met { "yes" } else { "NO" }
                );
            }
            let attacked =
                if sc.attackers > 0 { format!("-{}x{}", sc.attack.name(), sc.attackers) } else { String::new() };
            let path = out.join(format!("bench-sim-{}{attacked}.json", sc.name));
            crate::machine::write_bench_json(&path, &BenchSim { report: &report, checks })?;
            Ok(())
        }
    }
}

/// The targets of the scaling issue (docs/measurements.md has them with the figures).
fn checks(r: &Report) -> Vec<Check> {
    let mut c = vec![
        check("latency p50 ms", r.latency_ms.p50 as f64, "<= 800", r.latency_ms.p50 <= 800),
        check("latency p99 ms", r.latency_ms.p99 as f64, "<= 1500", r.latency_ms.p99 <= 1_500),
        check("continuity", r.continuity, ">= 0.999", r.continuity >= 0.999),
        check("seed share", r.seed_share, "<= 0.01", r.seed_share <= 0.01),
        check("startup p99 ms", r.startup_ms.p99 as f64, "<= 2000", r.startup_ms.p99 <= 2_000),
        check("duplicate ratio", r.duplicate_ratio, "<= 0.05", r.duplicate_ratio <= 0.05),
        check("forged accepted", r.forged_pieces_accepted as f64, "= 0", r.forged_pieces_accepted == 0),
    ];
    if r.viewers >= 100_000 {
        c.push(check("wall s", r.wall_s, "<= 600", r.wall_s <= 600.0));
    }
    c
}

fn check(figure: &'static str, measured: f64, target: &str, met: bool) -> Check {
    Check { figure, measured, target: target.to_string(), met }
}
