"""Draw one PNG per benchmark from its JSON result: how the cost grows with size.

A result file may carry a `curve`:

    {"title": "...", "x": "pending outputs", "y": "claim latency (ms)", "xscale": "log",
     "series": {"p95": [[10000, 3.1], [100000, 4.0]], ...},
     "targets": {"p95 target": 15.0}}

    .venv/bin/python bench/plot.py bench/results/claims-postgres-*.json   # -> docs/benchmarks/
"""

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLOTS = ROOT / "docs" / "benchmarks"


def plot_curve(name: str, curve: dict, out_dir: Path = PLOTS) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    for label, points in curve["series"].items():
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", label=label)
    for label, value in (curve.get("targets") or {}).items():
        ax.axhline(value, linestyle="--", linewidth=1, color="grey")
        ax.annotate(
            label,
            (0.01, value),
            xycoords=("axes fraction", "data"),
            fontsize=8,
            color="grey",
            va="bottom",
        )
    if curve.get("xscale"):
        ax.set_xscale(curve["xscale"])
    if curve.get("yscale"):
        ax.set_yscale(curve["yscale"])
    ax.set_xlabel(curve.get("x", ""))
    ax.set_ylabel(curve.get("y", ""))
    ax.set_title(curve.get("title", name), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / f"{name}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_result(path: Path, out_dir: Path = PLOTS) -> Path | None:
    result = json.loads(Path(path).read_text())
    curve = result.get("curve")
    if not curve:
        return None
    return plot_curve(result["benchmark"], curve, out_dir)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("results", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=PLOTS)
    args = p.parse_args()
    for path in args.results:
        drawn = plot_result(path, args.out)
        print(f"{path}: {drawn.relative_to(ROOT) if drawn else 'no curve in this result'}")


if __name__ == "__main__":
    main()
