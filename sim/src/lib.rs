//! `shoal sim`: a deterministic discrete-event simulator of one channel's swarm.
//!
//! It runs the real [`swarm::peer::Peer`] state machines — a source signing pieces,
//! seeds, viewers and hostile peers — over modelled links (see [`engine`] for the exact
//! link model), and reports the figures of `shared/docs/measuring.md` as a [`Report`].
//! A run is a pure function of its [`Scenario`] (including `rng_seed`): no wall clock,
//! no thread timing, no hash-order dependence reaches the result (the engine runs
//! its shards on two threads, and the figures are the same on one).

mod attacker;
mod engine;
pub mod plot;
mod report;
mod scenario;
mod verify;

pub use report::{Percentiles, Report, StartupPercentiles};
pub use scenario::{Attack, Scenario, reference_upload_mix};

/// Runs `scenario`, on two threads where the machine has two cores. `progress` is
/// called now and then with (simulated µs, events).
pub fn run<'a>(scenario: &'a Scenario, progress: Option<&'a mut dyn FnMut(u64, u64)>) -> Result<Report, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    run_on_threads(scenario, cores, progress)
}

/// [`run`] on at most `threads` threads. The figures are the same for any number.
pub fn run_on_threads<'a>(
    scenario: &'a Scenario,
    threads: usize,
    progress: Option<&'a mut dyn FnMut(u64, u64)>,
) -> Result<Report, String> {
    scenario.validate()?;
    let started = std::time::Instant::now();
    let outcome = engine::Engine::new(scenario, progress).run(threads >= 2);
    Ok(report::build(scenario, &outcome, started.elapsed().as_secs_f64()))
}
