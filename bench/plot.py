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


def derived(result: dict) -> tuple[list[dict], dict | None]:
    """Headline rows and a bar chart for the comparison benchmarks whose scripts do not write
    them (one size each: the plot compares the two sides)."""
    name = result["benchmark"]
    if name == "training-throughput":
        ref, ours = result["reference"], result["signoff"]
        rows = [
            {
                "figure": f"training tokens/s, {result['steps']} steps (Signoff vs plain loop)",
                "value": round(ours["tokens_per_second"], 1),
                "unit": "tokens/s",
                "baseline": round(ref["tokens_per_second"], 1),
                "ratio": round(result["ratio"], 2),
                "target": f">= {result['target_ratio']}x at equal or better eval loss",
                "verdict": result["verdict"],
            },
            {
                "figure": "final eval loss (Signoff vs plain loop)",
                "value": round(ours["eval_loss"], 4),
                "baseline": round(ref["eval_loss"], 4),
                "ratio": round(ours["eval_loss"] / ref["eval_loss"], 3),
            },
            {
                "figure": "peak memory (Signoff vs plain loop)",
                "value": round(ours["peak_rss_mib"]),
                "unit": "MiB",
                "baseline": round(ref["peak_rss_mib"]),
                "ratio": round(ours["peak_rss_mib"] / ref["peak_rss_mib"], 2),
            },
        ]
        bars = {
            "title": f"Training, {result['steps']} optimizer steps, same data and LoRA",
            "kind": "bar",
            "y": "tokens/s",
            "series": {
                "plain transformers+peft loop": ref["tokens_per_second"],
                "Signoff (packed, shared prefix)": ours["tokens_per_second"],
            },
        }
        return rows, bars
    if name == "generate":
        un = result["unmerged"]
        rows, series = [], {"unmerged p50": un["p50_ms"], "unmerged p95": un["p95_ms"]}
        for mode, label in (("merged", "adapter merged"), ("workers2", "2 worker processes")):
            if mode not in result:  # results written before that mode existed
                continue
            other = result[mode]
            rows += [
                {
                    "figure": f"generate p95, {label} vs one process unmerged",
                    "value": round(other["p95_ms"]),
                    "unit": "ms",
                    "baseline": round(un["p95_ms"]),
                    "ratio": round(other["p95_ms"] / un["p95_ms"], 2),
                },
                {
                    "figure": f"generate requests/s, {label} vs one process unmerged",
                    "value": round(other["requests_per_second"], 3),
                    "unit": "req/s",
                    "baseline": round(un["requests_per_second"], 3),
                    "ratio": round(other["requests_per_second"] / un["requests_per_second"], 2),
                },
            ]
            series[f"{mode} p50"] = other["p50_ms"]
            series[f"{mode} p95"] = other["p95_ms"]
        bars = {
            "title": f"Generate, {result['max_new_tokens']} new tokens, "
            f"concurrency {result['concurrency']}",
            "kind": "bar",
            "y": "ms",
            "series": series,
        }
        return rows, bars
    if name == "orchestration":
        parts = result["parts_median_s"]
        return [], {
            "title": "Orchestration: POST to first optimizer step (medians)",
            "kind": "bar",
            "y": "seconds",
            "series": dict(parts),
        }
    return [], None


def plot_curve(name: str, curve: dict, out_dir: Path = PLOTS) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    if curve.get("kind") == "bar":
        labels = list(curve["series"])
        values = [curve["series"][label] for label in labels]
        ax.barh(labels, values, color="#0b57d0")
        for y, value in enumerate(values):
            ax.annotate(
                f"{value:,.3g}",
                (value, y),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
            )
        ax.set_xlim(0, max(values) * 1.15)
        ax.set_xlabel(curve.get("y", ""))
        ax.set_title(curve.get("title", name), fontsize=9, loc="right")
        ax.invert_yaxis()
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        return path
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
    curve = result.get("curve") or derived(result)[1]
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
