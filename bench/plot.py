"""Draws the figures of a capsule-bench run (bench/results/latest.json) as
PNGs, one per section of docs/performance.md, with the targets as lines.

Usage: plot.py RESULTS.json OUT_DIR. Prints the path of each PNG written.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

CAPSULE = "#2b6cb0"
OTHER = "#a0aec0"
TARGET = "#c53030"


def color(subject):
    return CAPSULE if subject.startswith("Capsule") else OTHER


def measured(entries):
    return [e for e in entries if e.get("value") is not None]


def bars(ax, names, values, colors, fmt, xerr_hi=None):
    y = range(len(names))
    ax.barh(y, values, color=colors)
    if xerr_hi is not None:
        ax.scatter(xerr_hi, y, marker="|", s=200, color="black", zorder=3, label="p99")
    ax.set_yticks(list(y))
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    for i, v in enumerate(values):
        # Right of the p99 tick, where there is one.
        x = max(v, xerr_hi[i]) if xerr_hi is not None else v
        ax.annotate(fmt(v), (x, i), xytext=(6, 0), textcoords="offset points", va="center", fontsize=8)


def target_line(ax, x, label):
    ax.axvline(x, color=TARGET, linestyle="--", linewidth=1)
    ax.annotate(label, (x, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                textcoords="offset points", color=TARGET, fontsize=8)


def latency(entries, title, path, targets=()):
    rows = measured(entries)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
    bars(ax, [e["subject"] for e in rows], [e["value"]["p50_ms"] for e in rows],
         [color(e["subject"]) for e in rows], lambda v: f"{v:.1f} ms",
         [e["value"]["p99_ms"] for e in rows])
    ax.set_xscale("log")
    lows = [e["value"]["p50_ms"] for e in rows] + [x for x, _ in targets]
    highs = [e["value"]["p99_ms"] for e in rows] + [x for x, _ in targets]
    ax.set_xlim(min(lows) / 2, max(highs) * 2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("milliseconds, log scale (bar: p50, tick: p99)")
    for x, label in targets:
        target_line(ax, x, label)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput(entries, path):
    rows = measured(entries)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
    bars(ax, [e["subject"] for e in rows], [e["value"]["per_second"] for e in rows],
         [color(e["subject"]) for e in rows], lambda v: f"{v:.0f}/s")
    clients = rows[0]["value"]["clients"]
    target_line(ax, 200, "target 200/s")
    ax.set_xlabel(f"sandboxes created per second, {clients} concurrent clients")
    ax.set_title("Creation throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def memory(entries, path):
    # At or below zero the sandboxes were lost in the host's noise.
    rows = [e for e in measured(entries) if e["value"]["host_bytes_per_sandbox"] > 0]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
    mib = 1024 * 1024
    bars(ax, [f'{e["subject"]} ({e["value"]["count"]})' for e in rows],
         [e["value"]["host_bytes_per_sandbox"] / mib for e in rows],
         [color(e["subject"]) for e in rows], lambda v: f"{v:.2f} MiB")
    target_line(ax, 2048 / 1000, "target: 1,000 in 2 GiB")
    ax.set_xlabel("host memory per idle sandbox, MiB (number of sandboxes in brackets)")
    ax.set_title("Host memory per idle sandbox")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def snapshots(entries, path):
    rows = [e["value"] for e in measured(entries)]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.5))
    labels = [f'{r["data_mb"]} MiB written' for r in rows]
    x = range(len(rows))
    width = 0.38
    for offset, key, name, shade in [(-width / 2, "snapshot", "snapshot", CAPSULE),
                                     (width / 2, "create_from_snapshot", "create from snapshot", "#63b3ed")]:
        xs = [i + offset for i in x]
        p50 = [r[key]["p50_ms"] for r in rows]
        ax.bar(xs, p50, width, label=f"{name} (p50)", color=shade)
        ax.scatter(xs, [r[key]["p99_ms"] for r in rows], marker="_", s=300, color="black", zorder=3)
        for xi, v in zip(xs, p50):
            ax.annotate(f"{v:.1f}", (xi, v), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)
    ax.axhline(100, color=TARGET, linestyle="--", linewidth=1, label="target 100 ms")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels)
    ax.set_ylabel("milliseconds (bar: p50, tick: p99)")
    ax.set_title("Capsule: snapshot and create from snapshot, by data written")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    results = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    written = [
        latency(results["create"], "Create a sandbox and run `echo hi` in it", out / "perf-create.png",
                [(3, "pooled target 3 ms"), (15, "cold target 15 ms")]),
        latency(results["exec"], "Run `echo hi` in a live sandbox", out / "perf-exec.png"),
        throughput(results["throughput"], out / "perf-throughput.png"),
        memory(results["idle_memory"], out / "perf-memory.png"),
        snapshots(results["snapshot"], out / "perf-snapshot.png"),
    ]
    for path in written:
        if path is not None:
            print(path)


if __name__ == "__main__":
    main()
