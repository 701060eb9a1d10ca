//! `shoal sim`: a deterministic discrete-event simulator of one channel's swarm.
//!
//! It runs the real [`swarm::peer::Peer`] state machines — a source signing pieces,
//! seeds, viewers and hostile peers — over modelled links (see [`engine`] for the exact
//! link model), and reports the figures of `shared/docs/measuring.md` as a [`Report`].
//! A run is a pure function of its [`Scenario`] (including `rng_seed`): no wall clock,
//! no thread, no hash-order dependence reaches the result.

mod attacker;
mod engine;
pub mod plot;
mod report;
mod scenario;
mod verify;

pub use report::{Percentiles, Report, StartupPercentiles};
pub use scenario::{Scenario, reference_upload_mix};

/// Runs `scenario`. `progress` is called now and then with (simulated µs, events).
pub fn run<'a>(scenario: &'a Scenario, progress: Option<&'a mut dyn FnMut(u64, u64)>) -> Result<Report, String> {
    scenario.validate()?;
    let started = std::time::Instant::now();
    let outcome = engine::Engine::new(scenario, progress).run();
    Ok(report::build(scenario, &outcome, started.elapsed().as_secs_f64()))
}
