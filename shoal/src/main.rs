//! `shoal`: one binary for every Shoal service. Subcommands arrive with their issues;
//! today: `up`, `sim`, `bench`, `ingest`, `tracker`, `admin`, `seeder` and `viewer`.

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod admin_cmd;
mod bench_browsers;
mod bench_cmd;
mod bench_failover;
mod bench_ingest;
mod bench_nginx;
mod bench_seeder;
mod bench_swarm;
mod bench_tracker;
mod config;
mod ingest_cmd;
mod machine;
mod node_cmd;
mod relay_cmd;
mod sim_cmd;
mod telemetry;
mod tracker_cmd;
mod up_cmd;

#[derive(Debug, Parser)]
#[command(name = "shoal", version, about = "Live TV carried by its own audience")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Settings file (TOML): a section per command (`[tracker]`, `[ingest]`, ...) whose
    /// keys are the command's long flags. Flags and SHOAL_* variables win over it.
    #[arg(long, global = true, env = "SHOAL_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Print the settings in effect (TOML, with where each came from) and exit.
    #[arg(long, global = true)]
    print_config: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A whole broadcaster on one machine: tracker, ingest and a seeder (demo channel).
    Up(up_cmd::UpArgs),
    /// Simulate a channel's swarm with the real peer state machines (deterministic).
    Sim(sim_cmd::SimArgs),
    /// Benchmarks: write JSON, print a table, assert nothing.
    Bench(bench_cmd::BenchArgs),
    /// Take RTMP feeds in, cut and sign pieces, stream them to seeders.
    Ingest(ingest_cmd::IngestArgs),
    /// Channels' swarms: peer lists for viewers and seeds (BitTorrent HTTP announce).
    Tracker(tracker_cmd::TrackerArgs),
    /// Accounts, channels, stream keys, licences, usage and invoices (the admin API).
    Admin(admin_cmd::AdminArgs),
    /// Inject a channel from ingest into its swarm (a seed node).
    Seeder(node_cmd::SeederArgs),
    /// Join a channel's swarm, re-share it, and play it out on /live.ts.
    Viewer(node_cmd::ViewerArgs),
    /// Push an FLV feed from stdin to ingests over RTMP, main then backup (or all at once).
    Relay(relay_cmd::RelayArgs),
}

impl Command {
    /// Whether it runs the simulator (whose memory wants huge pages).
    fn simulates(&self) -> bool {
        matches!(self, Command::Sim(_)) || matches!(self, Command::Bench(b) if b.simulates())
    }
}

/// The command line: the derived one, with an environment variable for every service flag.
fn cli_command() -> clap::Command {
    config::with_env(Cli::command())
}

fn main() -> ExitCode {
    let given: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let argv = match config::apply(&cli_command(), given.clone()) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if argv.iter().any(|a| a == "--print-config") {
        // Shown even while a required setting is missing (it shows as unset).
        if let Ok(m) = cli_command().ignore_errors(true).try_get_matches_from(&argv) {
            print!("{}", config::print(&cli_command(), &m, &given));
            return ExitCode::SUCCESS;
        }
    }
    let matches = cli_command().get_matches_from(&argv);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if cli.command.simulates()
        && let Some(code) = sim_cmd::rerun_with_malloc_tunables(&given)
    {
        return code;
    }
    let service = format!("shoal-{}", matches.subcommand_name().unwrap_or("shoal"));
    let telemetry = telemetry::init(&service);
    let result = match cli.command {
        Command::Up(args) => up_cmd::run(args),
        Command::Sim(args) => sim_cmd::run(args),
        Command::Bench(args) => bench_cmd::run(args),
        Command::Ingest(args) => ingest_cmd::run(args),
        Command::Tracker(args) => tracker_cmd::run(args),
        Command::Admin(args) => admin_cmd::run(args),
        Command::Seeder(args) => node_cmd::run_seeder(args),
        Command::Viewer(args) => node_cmd::run_viewer(args),
        Command::Relay(args) => relay_cmd::run(args),
    };
    drop(telemetry); // flushes traces before exiting
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves at Ctrl-C or SIGTERM (what an orchestrator sends to stop a service), so
/// either shuts down the same way (a seeder's or viewer's neighbours get a goodbye and
/// the tracker a `stopped`).
pub(crate) async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("listening for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically (temp file + rename), so a reader never sees
/// half a file.
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}
