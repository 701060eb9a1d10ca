//! What machine a benchmark ran on. Wall times, and even CPU ratios against a peer, move
//! between machines (docs/measurements.md: the same `hundred-k` simulation in 455 s on one
//! 2-vCPU machine and 918 s on another; ingest at 0.38× and 0.83× nginx-rtmp's CPU), so
//! every bench's JSON says where it was measured.

use std::path::Path;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Machine {
    /// `model name` of `/proc/cpuinfo` (a VM often shows only the vendor's family name).
    cpu: Option<String>,
    /// `cpu family` and `model` of `/proc/cpuinfo`: which generation the name hides
    /// (AMD family 25 is Zen 3/4, 26 is Zen 5).
    cpu_family: Option<u32>,
    cpu_model: Option<u32>,
    logical_cpus: usize,
    memory_gib: Option<f64>,
    kernel: Option<String>,
}

impl Machine {
    /// This machine, from `/proc` (fields it cannot read are `None`).
    fn this() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Self::from_texts(
            &read("/proc/cpuinfo"),
            &read("/proc/meminfo"),
            &read("/proc/sys/kernel/osrelease"),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        )
    }

    fn from_texts(cpuinfo: &str, meminfo: &str, kernel: &str, logical_cpus: usize) -> Self {
        // The first processor's block describes them all on the machines we run on.
        let field = |name: &str| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
        };
        let memory_gib = meminfo.lines().find_map(|l| {
            let kib: f64 = l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse().ok()?;
            Some((kib / (1024.0 * 1024.0) * 10.0).round() / 10.0)
        });
        let kernel = kernel.trim();
        Machine {
            cpu: field("model name").filter(|s| !s.is_empty()),
            cpu_family: field("cpu family").and_then(|s| s.parse().ok()),
            cpu_model: field("model").and_then(|s| s.parse().ok()),
            logical_cpus,
            memory_gib,
            kernel: (!kernel.is_empty()).then(|| kernel.to_string()),
        }
    }

    /// One line for the console: `AMD EPYC (family 26 model 2), 2 CPUs, 23.4 GiB`.
    fn summary(&self) -> String {
        let mut s = self.cpu.clone().unwrap_or_else(|| "unknown CPU".to_string());
        if let (Some(f), Some(m)) = (self.cpu_family, self.cpu_model) {
            s.push_str(&format!(" (family {f} model {m})"));
        }
        s.push_str(&format!(", {} CPUs", self.logical_cpus));
        if let Some(g) = self.memory_gib {
            s.push_str(&format!(", {g} GiB"));
        }
        s
    }
}

#[derive(Serialize)]
struct WithMachine<'a, T> {
    machine: Machine,
    #[serde(flatten)]
    report: &'a T,
}

/// Writes a bench's report (a struct: its fields stay at the top level) with a
/// `machine` field added, making the directory if need be, and says where.
pub(crate) fn write_bench_json<T: Serialize>(path: &Path, report: &T) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let machine = Machine::this();
    let summary = machine.summary();
    crate::write_atomic(path, &serde_json::to_vec_pretty(&WithMachine { machine, report })?)?;
    eprintln!("measured on: {summary}");
    eprintln!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n\
                           model name\t: AMD EPYC\nflags\t\t: fpu avx512f\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\n";

    #[test]
    fn reads_cpu_memory_and_kernel() {
        let m = Machine::from_texts(CPUINFO, "MemTotal:       24590116 kB\nMemFree: 1 kB\n", "6.1.0-40-amd64\n", 2);
        assert_eq!(m.cpu.as_deref(), Some("AMD EPYC"));
        assert_eq!((m.cpu_family, m.cpu_model), (Some(26), Some(2)));
        assert_eq!(m.memory_gib, Some(23.5));
        assert_eq!(m.kernel.as_deref(), Some("6.1.0-40-amd64"));
        assert_eq!(m.summary(), "AMD EPYC (family 26 model 2), 2 CPUs, 23.5 GiB");
    }

    #[test]
    fn unreadable_proc_gives_unknowns_not_errors() {
        let m = Machine::from_texts("", "garbage", "", 1);
        assert_eq!(
            m,
            Machine { cpu: None, cpu_family: None, cpu_model: None, logical_cpus: 1, memory_gib: None, kernel: None }
        );
        assert_eq!(m.summary(), "unknown CPU, 1 CPUs");
    }

    #[test]
    fn the_machine_sits_beside_the_report_fields() {
        #[derive(Serialize)]
        struct R {
            wall_s: f64,
        }
        let dir = std::env::temp_dir().join(format!("shoal-machine-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bench-x.json");
        write_bench_json(&path, &R { wall_s: 1.5 }).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["wall_s"], 1.5);
        assert!(v["machine"]["logical_cpus"].as_u64().is_some_and(|n| n >= 1), "{v}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
