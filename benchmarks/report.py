"""The harness's results as a Markdown page and a bar chart (``docs/benchmarks.{md,png}``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

OURS = "manybrains"
_EXTRA_LABELS = {"efficiency": "efficiency", "peak_extra_mb": "peak extra MB",
                 "setup_s": "setup s", "first_s": "first call s"}


def _cells(results: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["workload"], c["library"]): c for c in results["cells"]}


def _columns(results: dict[str, Any]) -> tuple[list[str], list[str]]:
    present = {c["library"] for c in results["cells"]}
    libs = results["libraries"]
    ours_and_peers = [n for n, v in libs.items() if v["kind"] != "baseline" and n in present]
    baselines = [n for n, v in libs.items() if v["kind"] == "baseline" and n in present]
    return ours_and_peers, baselines


def _number(seconds: float) -> str:
    return f"{seconds:.3g}" if seconds < 100 else f"{seconds:.0f}"


def _cell_text(cell: dict[str, Any] | None, best: bool, repeat: int) -> str:
    if cell is None:
        return ""
    if cell["status"] != "ok":
        return cell["status"]
    text = _number(cell["median_s"])
    text = f"**{text}**" if best else text
    runs = len(cell["samples"])
    # a cell stopped early by the harness's time budget says how many runs it had
    return text if runs >= repeat else f"{text} ({runs} run{'s' if runs > 1 else ''})"


def _best_peer(results: dict[str, Any], key: str) -> dict[str, Any] | None:
    peers = [c for c in results["cells"] if c["workload"] == key and c["status"] == "ok"
             and c["kind"] == "peer"]
    return min(peers, key=lambda c: c["median_s"]) if peers else None


def markdown_table(results: dict[str, Any]) -> str:
    """Median seconds per workload and library; the fastest peer in bold."""
    cells = _cells(results)
    libs, baselines = _columns(results)
    head = ["workload", *libs, *baselines, "best peer", f"{OURS} / best peer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, workload in results["workloads"].items():
        best = _best_peer(results, key)
        ours = cells.get((key, OURS))
        row = [f"{key} {workload['title']}"]
        for lib in [*libs, *baselines]:
            row.append(_cell_text(cells.get((key, lib)), best is not None and
                                  best["library"] == lib, results["settings"]["repeat"]))
        row.append(best["library"] if best else "")
        ratio = ours.get("ratio_to_best_peer") if ours else None
        row.append(f"{ratio:.2f}x" if ratio else "")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _extras_table(results: dict[str, Any]) -> str:
    libs, baselines = _columns(results)
    cells = _cells(results)
    lines = []
    for key in results["workloads"]:
        names = sorted({name for c in results["cells"] if c["workload"] == key
                        and c["status"] == "ok" for name in c.get("extras", {})})
        for name in names:
            row = [f"{key}: {_EXTRA_LABELS.get(name, name)}"]
            for lib in [*libs, *baselines]:
                cell = cells.get((key, lib))
                value = cell.get("extras", {}).get(name) if cell else None
                row.append("" if value is None else f"{value:.3g}")
            lines.append("| " + " | ".join(row) + " |")
    if not lines:
        return ""
    head = ["measure", *libs, *baselines]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *lines])


def _behind(results: dict[str, Any]) -> list[str]:
    lines = []
    for key, workload in results["workloads"].items():
        ours = _cells(results).get((key, OURS))
        best = _best_peer(results, key)
        if ours and best and ours["status"] == "ok" and ours["ratio_to_best_peer"] > 1.05:
            lines.append(f"- {key} ({workload['title']}): {ours['median_s']:.3g} s against "
                         f"{best['library']}'s {best['median_s']:.3g} s "
                         f"({ours['ratio_to_best_peer']:.2f}x)")
    return lines


def _load_during(run: dict[str, Any], workers: int) -> list[str]:
    loads = sorted(run.get("load_average_during") or [])
    if not loads:
        return []
    line = (f"- 1-minute load average during the run (every 30 s): min {loads[0]:.2f}, median "
            f"{loads[len(loads) // 2]:.2f}, max {loads[-1]:.2f}")
    if loads[len(loads) // 2] > workers * 0.75:
        line += (". **Other work shared these CPUs during the run: every number here is "
                 "slower than on a quiet machine, and ratios measured minutes apart (such as "
                 "W2's efficiency against the serial loop) are unreliable.**")
    return [line]


def markdown(results: dict[str, Any], chart: str | None) -> str:
    m, run, settings = results["machine"], results["run"], results["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    load = run["load_average_before"]
    parts = [
        "# Benchmarks: manybrains against its peers",
        "",
        "Generated by `python -m benchmarks.harness` (see `benchmarks/`); do not edit by hand.",
        "",
        f"- Machine: {m['cpu_model']}, {m['usable_cpus']} usable of {m['logical_cpus']} "
        f"logical CPUs, {m['ram_gib']} GiB RAM, {m['os']}",
        f"- Python {m['python']} ({m['implementation']}); {versions}",
        f"- Run: {run['started']}, {run['duration_s'] / 60:.1f} min, load average "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min) at the start, "
        f"{run['load_average_after'][0]:.2f} at the end",
        *_load_during(run, settings["workers"]),
        f"- Each cell: a fresh process, {settings['workers']} workers, median of "
        f"{settings['repeat']} repeats; one BLAS/OpenMP thread per process everywhere.",
    ]
    if settings.get("tiny"):
        parts += ["", "**Tiny sizes: these numbers check that the harness runs; they measure "
                  "nothing.**"]
    if chart:
        parts += ["", f"![time relative to the fastest peer, per workload]({chart})"]
    parts += ["", "## Median seconds (lower is better)", "",
              "The fastest peer is in bold; the last column is manybrains' time divided by "
              "it (below 1: manybrains is faster). Baselines (a plain loop, asyncio, threads) "
              "are shown for scale and are not peers.", "", markdown_table(results)]
    extras = _extras_table(results)
    if extras:
        parts += ["", "## Other measures", "", extras]
    behind = _behind(results)
    parts += ["", "## Where manybrains is behind the fastest peer", "",
              *(behind or ["- nowhere by more than 5%"])]
    parts += ["", "## What each workload's clock covers", ""]
    parts += [f"- **{k}** {w['title']}: {w['clock']}. Sizes: "
              + ", ".join(f"{n}={v}" for n, v in w["sizes"].items())
              for k, w in results["workloads"].items()]
    parts += ["", "## How each library is driven", ""]
    present = {c["library"] for c in results["cells"]}
    parts += [f"- **{name}** ({lib['kind']}): {lib['how']}"
              for name, lib in results["libraries"].items() if name in present]
    problems = [c for c in results["cells"] if c["status"] != "ok"]
    if problems:
        parts += ["", "## Cells without a number", ""]
        parts += [f"- {c['workload']} {c['library']}: {c['status']}: "
                  f"{c.get('reason', '')[:300]}" for c in problems]
    return "\n".join(parts) + "\n"


def write_chart(results: dict[str, Any], path: Path) -> bool:
    """One bar group per workload: each library's time over the fastest peer's, log scale."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = _cells(results)
    libs, _ = _columns(results)
    keys = list(results["workloads"])
    width = 0.8 / max(1, len(libs))
    greys = plt.get_cmap("tab20c")
    fig, ax = plt.subplots(figsize=(max(8.0, 1.3 * len(keys)), 5.0))
    for i, lib in enumerate(libs):
        xs, ys = [], []
        for j, key in enumerate(keys):
            cell = cells.get((key, lib))
            if cell and cell["status"] == "ok" and cell.get("ratio_to_best_peer"):
                xs.append(j + (i - (len(libs) - 1) / 2) * width)
                ys.append(cell["ratio_to_best_peer"])
        ours = lib == OURS
        # bars grow from 1 (the fastest peer): up when slower, down when faster
        ax.bar(xs, [y - 1 for y in ys], width, bottom=1, label=lib,
               color="#d62728" if ours else greys(i % 16 + 4),
               edgecolor="black" if ours else "none", linewidth=1.2 if ours else 0,
               zorder=3 if ours else 2)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(keys)), keys)
    ax.set_ylabel("time / fastest peer's time (log; lower is better)")
    m = results["machine"]
    ax.set_title(f"manybrains vs peers: {m['usable_cpus']} CPUs ({m['cpu_model']}), "
                 f"Python {m['python']}", fontsize=10)
    ax.grid(axis="y", which="both", alpha=0.3, zorder=0)
    ax.legend(ncol=len(libs), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.07),
              frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write(results: dict[str, Any], folder: Path) -> None:
    chart = folder / "benchmarks.png"
    drawn = write_chart(results, chart)
    (folder / "benchmarks.md").write_text(markdown(results, chart.name if drawn else None))
