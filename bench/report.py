"""The benchmark's outputs: ratios against the baselines of the same invocation with their
targets, the printed table, and the plot."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from contenders import BATCHED, EMBEDFN, FLOOR, LAMBDA, NO_BATCHING, SEED, TRACT, WASM, WASM_NO_SNAPSHOT  # noqa: E402

COLORS = {FLOOR: "#7f7f7f", EMBEDFN: "#d62728", NO_BATCHING: "#ff9896", LAMBDA: "#ff7f0e", WASM: "#9467bd", WASM_NO_SNAPSHOT: "#c5b0d5", TRACT: "#8c564b",
          SEED: "#1f77b4", BATCHED: "#17becf"}
MIB = 1024


def _workload(rows, contender, key):
    """A contender's figures on a workload, or None when it did not run it."""
    return rows.get(contender, {}).get("workloads", {}).get(key)


def _ratio(name, num, den, target=None):
    """One ratio; `target` is (op, bound) with op "<=" or ">=", None for information only."""
    value = num / den if num is not None and den else None
    ok = None
    if target and value is not None:
        ok = value <= target[1] if target[0] == "<=" else value >= target[1]
    return {"name": name, "value": value, "target": f"{target[0]} {target[1]:g}" if target else "",
            "ok": ok}


def _get(entry, field):
    return entry[field] if entry else None


def ratios(rows):
    """Every ratio the benchmark judges, plus informative ones (no target)."""
    out = [_ratio("embedfn / floor, p50 latency, (a) 32 texts per request",
                  _get(_workload(rows, EMBEDFN, "a"), "p50_ms"), _get(_workload(rows, FLOOR, "a"), "p50_ms"),
                  ("<=", 1.10))]
    for key in "abcde":
        out.append(_ratio(f"embedfn / seed-style Python, throughput ({key})",
                          _get(_workload(rows, EMBEDFN, key), "throughput_per_s"),
                          _get(_workload(rows, SEED, key), "throughput_per_s"), (">=", 2)))
    for key in "abcde":
        out.append(_ratio(f"embedfn / batched Python, throughput ({key})",
                          _get(_workload(rows, EMBEDFN, key), "throughput_per_s"),
                          _get(_workload(rows, BATCHED, key), "throughput_per_s")))
    for python in (p for p in (SEED, BATCHED) if p in rows):
        out.append(_ratio(f"embedfn / {python}, peak RSS", rows[EMBEDFN]["peak_rss_kib"],
                          rows[python]["peak_rss_kib"], ("<=", 0.5)))
    for server in (s for s in (EMBEDFN, LAMBDA) if s in rows):
        out.append(_ratio(f"{server} cold start / ORT session creation", rows[server]["cold_start_s"],
                          rows[FLOOR]["cold_start_s"], ("<=", 1.2)))
    for key in "abcd":
        out.append(_ratio(f"Lambda path / native, p50 latency ({key})",
                          _get(_workload(rows, LAMBDA, key), "p50_ms"), _get(_workload(rows, EMBEDFN, key), "p50_ms")))
    if NO_BATCHING in rows:
        out.append(_ratio("dynamic batching on / off, throughput (e)",
                          _get(_workload(rows, EMBEDFN, "e"), "throughput_per_s"),
                          _get(_workload(rows, NO_BATCHING, "e"), "throughput_per_s")))
    if WASM in rows:
        for key in "abcd":
            out.append(_ratio(f"Wasm host / native, p50 latency ({key})", _get(_workload(rows, WASM, key), "p50_ms"),
                              _get(_workload(rows, EMBEDFN, key), "p50_ms"), ("<=", 1.25)))
        out.append(_ratio("Wasm host without / with snapshot, p50 latency (b)",
                          _get(_workload(rows, WASM_NO_SNAPSHOT, "b"), "p50_ms"), _get(_workload(rows, WASM, "b"), "p50_ms")))
    if TRACT in rows:
        # Hosted Spin's goals: one text within 3x of native, 32 texts within 5x.
        for key, what, target in (("b", "one text", ("<=", 3)), ("a", "32 texts", ("<=", 5)),
                                  ("f", "2,000-token text", None), ("d", "rerank of 100", None),
                                  ("c", "4 long texts, jina-tiny", None)):
            out.append(_ratio(f"tract in Wasm / native, p50, {what} ({key})",
                              _get(_workload(rows, TRACT, key), "p50_ms"), _get(_workload(rows, EMBEDFN, key), "p50_ms"),
                              target))
    return out


def _verdict(r):
    if r["value"] is None:
        return "n/a"
    return {True: "ok", False: "MISSED", None: ""}[r["ok"]]


def _unit(w):
    return "docs/s" if w["path"] == "/api/rerank" else "texts/s"


def table(results):
    """The printed report: figures per workload, processes, ratios with targets."""
    rows, lines = results["contenders"], []
    m = results["machine"]
    lines.append(f"embedfn benchmark: {m['cpu']}, {m['physical_cores']} physical cores / {m['logical_cpus']} logical, "
                 f"{'quick' if results['quick'] else 'full'} run, {results['seconds']:.0f} s")
    if "onnxruntime" in results:
        o = results["onnxruntime"]
        lines.append(f"ONNX Runtime: embedfn {o['embedfn']}, Python contenders (the floor) {o['python']}")
    lines.append("throughput: median over repetitions of items / request time (sequential workloads) or / wall "
                 "time (e); p50/p99: over every request (floor: every session.run)")
    for key, w in results["workloads"].items():
        lines.append("")
        lines.append(f"{w['title']}  [{w['model']}, {w['reps']} reps x {w['requests_per_rep']} requests]")
        lines.append(f"  {'contender':31} {_unit(w):>10} {'p50 ms':>9} {'p99 ms':>9} {'requests':>9}")
        for c, row in rows.items():
            f = row["workloads"].get(key)
            if f:
                lines.append(f"  {c:31} {f['throughput_per_s']:10.1f} {f['p50_ms']:9.2f} {f['p99_ms']:9.2f} "
                             f"{f['requests']:9d}")
    lines.append("")
    lines.append("processes (MiniLM instance; floor: session creation alone, RSS of session + runs)")
    lines.append(f"  {'contender':31} {'cold start s':>13} {'peak RSS MiB':>13}")
    for c, row in rows.items():
        lines.append(f"  {c:31} {row['cold_start_s']:13.3f} {row['peak_rss_kib'] / MIB:13.1f}")
    tract = rows.get(TRACT, {}).get("tract")
    if tract:
        lines.append("")
        lines.append(f"tract build (pre-initialised, wasmtime serve -W max-memory-size=128 MiB): instantiation "
                     f"{tract['instantiation_ms']:.2f} ms (p50 of a no-inference request, minus native's)")
        for model_name, f in tract["models"].items():
            memory = f"{f['memory_high_water_mib']:.1f}" if f["memory_high_water_mib"] else "-"
            lines.append(f"  {model_name:20} component {f['component_mib']:6.1f} MiB, linear memory high-water "
                         f"{memory} MiB")
    lines.append("")
    lines.append("ratios (same invocation)")
    lines.append(f"  {'':58} {'value':>8} {'target':>8}  verdict")
    for r in results["ratios"]:
        value = f"{r['value']:.2f}x" if r["value"] is not None else "-"
        lines.append(f"  {r['name']:58} {value:>8} {r['target']:>8}  {_verdict(r)}")
    return "\n".join(lines)


def _bars(ax, names, values, notes):
    """Horizontal bars, one per contender (colours as in the legend), top to bottom, each
    followed by its note."""
    y = list(range(len(names)))[::-1]
    ax.barh(y, values, color=[COLORS[c] for c in names])
    ax.set_yticks([])
    for yi, v, note in zip(y, values, notes):
        ax.text(v, yi, "  " + note, va="center", fontsize=9)
    ax.set_xlim(0, max(values) * 1.6)  # room for the notes
    ax.tick_params(axis="x", labelsize=8)


def _throughput_panel(ax, results, key):
    w = results["workloads"][key]
    figures = [(c, row["workloads"][key]) for c, row in results["contenders"].items() if key in row["workloads"]]
    _bars(ax, [c for c, _ in figures], [f["throughput_per_s"] for _, f in figures],
          [f"{f['throughput_per_s']:,.0f}  (p50 {f['p50_ms']:.1f} ms)" for _, f in figures])
    seed = dict(figures).get(SEED)
    if seed:
        target = 2 * seed["throughput_per_s"]
        ax.axvline(target, color=COLORS[SEED], ls=":", lw=1.5, label="target: 2x seed-style")
        ax.set_xlim(0, max(ax.get_xlim()[1], target * 1.1))
        ax.legend(fontsize=8, loc="lower right")
    ax.set_title(w["title"], fontsize=10)
    ax.set_xlabel(f"{_unit(w)}, higher is better", fontsize=8)


def _ratio_panel(ax, results):
    judged = [r for r in results["ratios"] if r["target"]]
    cells = [[r["name"], f"{r['value']:.2f}x" if r["value"] is not None else "-", r["target"], _verdict(r)]
             for r in judged]
    colors = [["white"] * 3 + [{"ok": "#b7e4b0", "MISSED": "#f4a6a6"}.get(c[3], "#eeeeee")] for c in cells]
    ax.axis("off")
    t = ax.table(cellText=cells, cellColours=colors, colLabels=["ratio (same invocation)", "value", "target", ""],
                 colWidths=[0.6, 0.12, 0.12, 0.12], loc="upper center", cellLoc="left")
    t.auto_set_font_size(False)
    t.set_fontsize(9)
    t.scale(1, 1.3)
    ax.set_title("targets", fontsize=10)


def plot(results, path):
    """Throughput per workload, cold start and RSS per contender, and the targets, in one PNG."""
    rows = results["contenders"]
    names = list(rows)
    fig = plt.figure(figsize=(22, 14), layout="constrained")
    grid = fig.add_gridspec(3, 12, height_ratios=[1, 1, 0.75])
    # Row 1: four workloads; row 2: the others, cold start and RSS.
    second = len(results["workloads"]) - 4 + 2
    panels = [fig.add_subplot(grid[0, i * 3:i * 3 + 3]) for i in range(4)]
    panels += [fig.add_subplot(grid[1, i * 12 // second:(i + 1) * 12 // second]) for i in range(second)]
    for ax, key in zip(panels, results["workloads"]):
        _throughput_panel(ax, results, key)
    ax = panels[-2]
    _bars(ax, names, [rows[c]["cold_start_s"] for c in names], [f"{rows[c]['cold_start_s']:.2f} s" for c in names])
    ax.axvline(rows[FLOOR]["cold_start_s"] * 1.2, color="black", ls="--", lw=1, label="1.2x session creation")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("cold start: exec -> first answer (floor: ORT session creation)", fontsize=10)
    ax.set_xlabel("seconds, lower is better", fontsize=8)
    ax = panels[-1]
    _bars(ax, names, [rows[c]["peak_rss_kib"] / MIB for c in names], [f"{rows[c]['peak_rss_kib'] / MIB:.0f} MiB" for c in names])
    ax.set_title("peak RSS (VmHWM) of the MiniLM instance (floor: session + runs)", fontsize=10)
    ax.set_xlabel("MiB, lower is better", fontsize=8)
    _ratio_panel(fig.add_subplot(grid[2, 2:10]), results)
    m = results["machine"]
    fig.legend(handles=[Patch(color=COLORS[c], label=c) for c in names], loc="outside upper center",
               ncols=len(names), fontsize=11, frameon=False, title_fontsize=14,
               title=f"embedfn benchmark: {m['cpu']}, {m['physical_cores']} physical cores, "
                     f"{'quick' if results['quick'] else 'full'} run")
    fig.savefig(path, dpi=90)
    plt.close(fig)
