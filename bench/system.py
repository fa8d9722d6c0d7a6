"""Facts about this machine and its processes, read from /proc as the Rust side reads them."""

import os


def physical_cores():
    """Distinct (physical id, core id) pairs in /proc/cpuinfo, at most the logical CPUs this
    process may use; the logical CPUs where /proc/cpuinfo names no cores (as embedfn does)."""
    logical = len(os.sched_getaffinity(0))
    cores, physical = set(), ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "physical id":
                physical = value
            elif key == "core id":
                cores.add((physical, value))
    return min(len(cores), logical) if cores else logical


def cpu_model():
    """The first `model name` in /proc/cpuinfo."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return "unknown"


def peak_rss_kib(pid="self"):
    """VmHWM (peak resident set size) of a live process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")
