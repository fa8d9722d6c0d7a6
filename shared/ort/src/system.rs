//! What the settings leave to the machine: physical cores (ONNX Runtime's default thread
//! count), the memory budget's default (the cgroup limit, Lambda's memory size, physical
//! memory) and this process's resident size. Linux files; elsewhere the callers' fallbacks.

use embedfn_core::memory::default_limit;
use embedfn_core::Settings;

use crate::ort_backend::SessionOptions;

/// The memory budget from the settings: `MAX_MEMORY`, else detected; and where it came from.
pub fn memory_budget(settings: &Settings) -> (u64, &'static str) {
    match settings.max_memory {
        Some(bytes) => (bytes, "MAX_MEMORY"),
        None => detected_memory(cgroup_limit(), settings.lambda_memory_mb, physical_memory()),
    }
}

/// ONNX Runtime's intra-op threads: `ORT_INTRA_THREADS`, else the physical cores.
pub fn intra_threads(settings: &Settings) -> usize {
    settings.intra_threads.unwrap_or_else(physical_cores)
}

/// Every session's options from the settings: threads, CUDA, spinning.
pub fn session_options(settings: &Settings) -> SessionOptions {
    let intra_threads = intra_threads(settings);
    SessionOptions {
        intra_threads,
        cuda: settings.cuda,
        spinning: settings.spinning.unwrap_or_else(|| {
            owns_cpus(
                settings.lambda_memory_mb.is_some(),
                cgroup_cpus(),
                intra_threads,
            )
        }),
    }
}

/// Whether the process has its CPUs to itself, so that ONNX Runtime's threads may spin between
/// pieces of work (a few percent per pass) without taking CPU from anyone: in Lambda (an
/// execution environment runs one function), or under a cgroup CPU quota of at least one whole
/// core per intra-op thread (a container sized for it). On a shared machine with no quota,
/// spinning threads burn the neighbours' CPU and slow everyone, so they sleep.
pub fn owns_cpus(in_lambda: bool, quota_cpus: Option<f64>, threads: usize) -> bool {
    in_lambda || quota_cpus.is_some_and(|q| q >= threads as f64)
}

/// The cgroup v2 CPU quota in CPUs (`cpu.max`: `quota period`; `max`: none).
fn cgroup_cpus() -> Option<f64> {
    parse_cpu_max(&std::fs::read_to_string("/sys/fs/cgroup/cpu.max").ok()?)
}

/// `cpu.max`'s `quota period` as CPUs; `max …` (no quota) is none.
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok()?;
    let period: f64 = parts.next().unwrap_or("100000").parse().ok()?;
    (period > 0.0).then(|| quota / period)
}

/// The default budget and where it came from (see [`default_limit`]).
pub fn detected_memory(
    cgroup: Option<u64>,
    lambda_mb: Option<u64>,
    physical: Option<u64>,
) -> (u64, &'static str) {
    let limit = default_limit(cgroup, lambda_mb, physical);
    let source = if default_limit(cgroup, None, physical) != default_limit(None, None, physical) {
        "the cgroup memory limit"
    } else if lambda_mb.is_some() {
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
    } else if physical.is_some() {
        "physical memory"
    } else {
        "a 4 GiB guess"
    };
    (limit, source)
}

/// The cgroup memory limit: v2 `memory.max`, else v1 `memory.limit_in_bytes`.
fn cgroup_limit() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| parse_cgroup(&std::fs::read_to_string(p).ok()?))
}

/// A cgroup limit file's value; `max` (no limit) is none.
fn parse_cgroup(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn physical_memory() -> Option<u64> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemTotal:")
}

/// A `kB` field of `/proc/meminfo` or `/proc/<pid>/status`, in bytes.
pub fn parse_meminfo(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// This process's resident memory now (`VmRSS`), in bytes.
pub fn resident_memory() -> Option<u64> {
    parse_meminfo(
        &std::fs::read_to_string("/proc/self/status").ok()?,
        "VmRSS:",
    )
}

/// Physical cores from `/proc/cpuinfo` (distinct physical id / core id pairs); logical CPUs
/// where that cannot be read. ONNX Runtime gains nothing from hyper-threads.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, usize::from);
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return logical;
    };
    let mut cores = std::collections::BTreeSet::new();
    let mut physical = "";
    for line in info.lines() {
        let mut kv = line.splitn(2, ':').map(str::trim);
        match (kv.next(), kv.next()) {
            (Some("physical id"), Some(v)) => physical = v,
            (Some("core id"), Some(v)) => {
                cores.insert((physical, v));
            }
            _ => {}
        }
    }
    if cores.is_empty() {
        logical
    } else {
        cores.len().min(logical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_spin_only_where_the_cpus_are_the_processs_own() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2.0));
        assert_eq!(parse_cpu_max("50000 100000"), Some(0.5));
        assert!(
            owns_cpus(true, None, 2),
            "Lambda: the environment is the function's"
        );
        assert!(!owns_cpus(false, None, 2), "no quota: a shared machine");
        assert!(owns_cpus(false, Some(2.0), 2));
        assert!(!owns_cpus(false, Some(1.5), 2), "fewer cores than threads");
    }

    #[test]
    fn detected_memory_names_its_source() {
        let g = 1u64 << 30;
        assert_eq!(
            detected_memory(Some(2 * g), Some(4096), Some(16 * g)),
            ((1.8 * g as f64) as u64, "the cgroup memory limit")
        );
        assert_eq!(
            detected_memory(None, Some(3008), Some(16 * g)).1,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
        );
        assert_eq!(
            detected_memory(parse_cgroup("max\n"), None, Some(16 * g)),
            ((14.4 * g as f64) as u64, "physical memory")
        );
        assert_eq!(parse_cgroup("1073741824\n"), Some(g));
        let meminfo = "MemTotal:       24576000 kB\nMemFree:        1000 kB\n";
        assert_eq!(parse_meminfo(meminfo, "MemTotal:"), Some(24_576_000 * 1024));
        assert!(resident_memory().is_some_and(|r| r > 0));
        assert!(physical_cores() >= 1);
    }
}
