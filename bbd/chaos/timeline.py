"""The run as a picture: faults as coloured bands, acknowledged operations per second and
latency as lines, each violation a red mark at the time of the first request involved."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from bbd.chaos.checker import Violation  # noqa: E402
from bbd.chaos.nemesis import Applied  # noqa: E402
from bbd.chaos.schedule import KINDS  # noqa: E402
from bbd.chaos.workload import ACKED, TIMED_OUT, Request  # noqa: E402

_COLOURS = dict(zip(KINDS, plt.get_cmap("tab10").colors, strict=False))


def draw(path: Path, requests: list[Request], faults: list[Applied],
         violations: list[Violation], title: str) -> None:
    end = max([r.end for r in requests] + [a.ready or a.start for a in faults] + [1.0])
    bin_seconds = max(1.0, round(end / 400))  # at most about 400 points per line
    bins = int(end // bin_seconds) + 1
    acked = [0] * bins
    timed_out = [0] * bins
    latencies: list[list[float]] = [[] for _ in range(bins)]
    for r in requests:
        b = int(r.end // bin_seconds)
        if r.outcome == ACKED:
            acked[b] += 1
            latencies[b].append((r.end - r.start) * 1e3)
        elif r.outcome == TIMED_OUT:
            timed_out[b] += 1
    xs = [b * bin_seconds for b in range(bins)]
    fig, ax = plt.subplots(figsize=(max(10, min(20, end / 12)), 5.5))
    for a in faults:
        stop = a.ready or a.undone or a.start
        ax.axvspan(a.start, stop, color=_COLOURS.get(a.fault.kind, "grey"), alpha=0.25, lw=0)
    ax.plot(xs, [n / bin_seconds for n in acked], color="black", lw=1,
            label="acknowledged/s")
    ax.plot(xs, [n / bin_seconds for n in timed_out], color="orange", lw=1,
            label="timed out/s")
    ax.set_xlabel(f"seconds since the load began ({bin_seconds:.0f} s bins)")
    ax.set_ylabel("operations per second")
    lat = ax.twinx()
    lat.plot(xs, [statistics.median(v) if v else float("nan") for v in latencies],
             color="tab:blue", lw=0.8, label="median latency")
    lat.plot(xs, [max(v) if v else float("nan") for v in latencies], color="tab:blue",
             lw=0.5, ls=":", label="max latency")
    lat.set_ylabel("latency of acknowledged operations (ms)")
    lat.set_yscale("log")
    for v in violations:
        if v.at is not None:
            ax.axvline(v.at, color="red", lw=1.5)
    handles = [Patch(color=_COLOURS[k], alpha=0.25, label=k) for k in KINDS
               if any(a.fault.kind == k for a in faults)]
    lines = ax.get_legend_handles_labels()[0] + lat.get_legend_handles_labels()[0]
    if any(v.at is not None for v in violations):
        lines.append(plt.Line2D([], [], color="red", label="violation"))
    ax.legend(handles=handles + lines, loc="upper center", bbox_to_anchor=(0.5, -0.13),
              fontsize=7, ncol=8, frameon=False)
    ax.set_xlim(0, end)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
