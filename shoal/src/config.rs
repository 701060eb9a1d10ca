//! Settings from a TOML file. Every service's flag is also a setting: `--config FILE`
//! (or `SHOAL_CONFIG`) reads the file's section named after the command (`[tracker]`,
//! `[ingest]`, `[seeder]`, `[viewer]`, `[up]`, ...), each key a flag's long name
//! (`listen`, `database-url` or `database_url`). A flag on the command line wins over
//! its `SHOAL_*` environment variable, which wins over the file, which wins over the
//! built-in default (`shoal COMMAND --help` lists every flag, its variable and its
//! default). `--print-config` prints the settings in effect, as TOML, with where each
//! came from, and exits.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// The services whose every flag also has an environment variable.
const SERVICES: [&str; 5] = ["up", "tracker", "ingest", "seeder", "viewer"];

/// `cmd` with an environment variable for every service flag that has none:
/// `SHOAL_<COMMAND>_<FLAG>` (`shoal tracker --flush-interval` ← `SHOAL_TRACKER_FLUSH_INTERVAL`),
/// shown by `--help` like the hand-named ones.
pub(crate) fn with_env(cmd: Command) -> Command {
    fn add(c: Command, prefix: &str) -> Command {
        let ids: Vec<(String, String)> = c
            .get_arguments()
            .filter(|a| a.get_env().is_none() && a.get_long().is_some() && !a.is_global_set())
            .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
            .map(|a| (a.get_id().to_string(), format!("{prefix}_{}", a.get_id().as_str().to_uppercase())))
            .collect();
        let mut c = c;
        for (id, var) in ids {
            c = c.mut_arg(id, |a| a.env(var));
        }
        let subs: Vec<String> = c.get_subcommands().map(|s| s.get_name().to_owned()).collect();
        for name in subs {
            let p = prefix.to_owned();
            c = c.mut_subcommand(name, |s| add(s, &p));
        }
        c
    }
    let mut cmd = cmd;
    for service in SERVICES {
        let prefix = format!("SHOAL_{}", service.to_uppercase());
        cmd = cmd.mut_subcommand(service, |s| add(s, &prefix));
    }
    cmd
}

/// The deepest subcommand of `m` with its path of names and its `Command`.
fn deepest<'a>(cmd: &'a Command, m: &'a ArgMatches) -> (Vec<String>, &'a Command, &'a ArgMatches) {
    let (mut names, mut c, mut m) = (Vec::new(), cmd, m);
    while let Some((name, sub)) = m.subcommand() {
        let Some(next) = c.find_subcommand(name) else { break };
        names.push(name.to_owned());
        (c, m) = (next, sub);
    }
    (names, c, m)
}

/// `argv` with the config file's settings appended as flags, for those neither given
/// as flags nor set in the environment. Unchanged without a config file (or when
/// clap will refuse the arguments anyway: it says why).
pub(crate) fn apply(cmd: &Command, argv: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    // Leniently: a required flag may be in the file.
    let Ok(m) = cmd.clone().ignore_errors(true).try_get_matches_from(&argv) else { return Ok(argv) };
    let Some(path) = m.get_one::<PathBuf>("config").cloned() else { return Ok(argv) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading the config file {}", path.display()))?;
    let table: toml::Table = text.parse().with_context(|| format!("{} is not valid TOML", path.display()))?;
    let sections: Vec<&str> = cmd.get_subcommands().map(Command::get_name).collect();
    for key in table.keys() {
        if !sections.contains(&key.as_str()) {
            bail!("{}: [{key}] is not a command's section (sections: {})", path.display(), sections.join(", "));
        }
    }
    let (names, c, sub) = deepest(cmd, &m);
    let Some(section) = names.first().and_then(|n| table.get(n)) else { return Ok(argv) };
    let toml::Value::Table(section) = section else {
        bail!("{}: [{}] must be a table of settings", path.display(), names[0]);
    };
    // A section serves a command and its subcommands (`[ingest]` for `shoal ingest` and
    // `shoal ingest add-channel`): a key of one of them is skipped by the others; a key
    // of none is a mistake.
    fn longs(c: &Command, out: &mut Vec<String>) {
        out.extend(c.get_arguments().filter_map(|a| a.get_long()).map(str::to_owned));
        for s in c.get_subcommands() {
            longs(s, out);
        }
    }
    let mut known = Vec::new();
    if let Some(top) = cmd.find_subcommand(&names[0]) {
        longs(top, &mut known);
    }
    let mut argv = argv;
    for (key, value) in section {
        let id = key.replace('-', "_");
        let Some(arg) = c.get_arguments().find(|a| a.get_id() == id.as_str() && a.get_long().is_some()) else {
            if known.iter().any(|l| l.replace('-', "_") == id) {
                continue;
            }
            known.sort();
            known.dedup();
            bail!("{}: [{}] has no setting {key:?} (settings: {})", path.display(), names[0], known.join(", "));
        };
        if matches!(sub.value_source(&id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue;
        }
        let long = format!("--{}", arg.get_long().unwrap_or_default());
        let scalar = |v: &toml::Value| -> anyhow::Result<String> {
            Ok(match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => bail!("{}: {key} = {} is not a plain value", path.display(), other.type_str()),
            })
        };
        match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(b)) => {
                if *b {
                    argv.push(long.into());
                }
            }
            (ArgAction::SetTrue, other) => {
                bail!("{}: {key} is a {}, must be true or false", path.display(), other.type_str())
            }
            (_, toml::Value::Array(items)) => {
                for v in items {
                    argv.push(long.clone().into());
                    argv.push(scalar(v)?.into());
                }
            }
            (_, v) => {
                argv.push(long.into());
                argv.push(scalar(v)?.into());
            }
        }
    }
    Ok(argv)
}

/// The settings in effect for the command in `m`, as TOML with each one's source.
/// `given`: the arguments as typed (what is in `m` beyond them came from the file).
pub(crate) fn print(cmd: &Command, m: &ArgMatches, given: &[OsString]) -> String {
    let (names, c, sub) = deepest(cmd, m);
    let mut out = format!("# shoal {} — settings in effect\n[{}]\n", names.join(" "), names.first().map_or("", |n| n));
    for arg in c.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "version" | "config" | "print_config") || arg.is_hide_set() {
            continue;
        }
        let Some(long) = arg.get_long() else { continue };
        let source = match sub.value_source(id) {
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        let typed = given.iter().filter_map(|a| a.to_str()).any(|a| {
            a == format!("--{long}")
                || a.starts_with(&format!("--{long}="))
                || arg.get_short().is_some_and(|s| a == format!("-{s}"))
        });
        let from_file = source == "flag" && !typed;
        let source = if from_file { "config file" } else { source };
        let values: Vec<String> =
            sub.get_raw(id).map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect()).unwrap_or_default();
        let secret = arg.is_hide_env_values_set();
        let line = match (values.as_slice(), arg.get_action()) {
            ([], _) => format!("# {long} =   ({source})"),
            (_, _) if secret => format!("# {long} = \"…\"   ({source}, not shown)"),
            ([v], ArgAction::SetTrue) => format!("{long} = {v}   # {source}"),
            ([v], _) => format!("{long} = {}   # {source}", toml_string(v)),
            (vs, _) => {
                format!("{long} = [{}]   # {source}", vs.iter().map(|v| toml_string(v)).collect::<Vec<_>>().join(", "))
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn toml_string(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}
