"""Balanced orderings against independent random shuffles at small k, with a judge that favours the first slot.

The simulated judge (an OpenAI-compatible stand-in for a language model, not a model) scores each response as its
hidden quality plus Gaussian noise, plus ``--position-bias`` for whichever response is shown first. Each item is a
pair whose qualities differ by ``--gap``; accuracy is how often the voted best response is the better one (ties
broken by GRMReward's seeded coin). Random shuffles leave the bias in wherever both samples showed the same response
first; balanced orderings show each response first equally often when k is even.

    python benchmarks/bench_balanced_orderings.py            # 400 pairs, k = 2, 4, 8, 5 seeds
"""

from __future__ import annotations

import argparse
import platform
import statistics
from pathlib import Path

from _report import print_table, write_report

from grm_plugin import GRMReward
from grm_plugin.testing.simulated_judge import SimulatedJudge, quality_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--ks", default="2,4,8")
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--gap", type=float, default=1.0)
    parser.add_argument("--position-bias", type=float, default=1.5)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "balanced_orderings.json"))
    args = parser.parse_args()
    rows = []
    with SimulatedJudge(noise=args.noise, position_bias=args.position_bias, seed=0) as judge:
        for k in [int(k) for k in args.ks.split(",")]:
            row = {"k": k}
            for ordering in ("random", "balanced"):
                accuracies, imbalance = [], []
                for seed in range(args.seeds):
                    requests, better = quality_pairs(args.pairs, seed=seed, gap=args.gap)
                    results = GRMReward(base_url=judge.base_url, model="simulated-judge", k=k, seed=seed,
                                        ordering=ordering).score(requests)
                    accuracies.append(sum(r.best == b for r, b in zip(results, better)) / args.pairs)
                    imbalance.append(statistics.mean(r.slot_imbalance for r in results))
                row[ordering] = {"accuracy_mean": statistics.mean(accuracies), "accuracy_min": min(accuracies),
                                 "accuracy_max": max(accuracies), "slot_imbalance_mean": statistics.mean(imbalance)}
            rows.append(row)
    print(f"simulated judge, noise {args.noise}, first-slot bias {args.position_bias}, gap {args.gap}, {args.pairs} pairs, "
          f"{args.seeds} seeds")
    print_table(["k", "random: accuracy (min-max)", "slot imbalance", "balanced: accuracy (min-max)", "slot imbalance"],
                [[r["k"]] + [item for o in ("random", "balanced") for item in (
                    f"{r[o]['accuracy_mean']:.3f} ({r[o]['accuracy_min']:.3f}-{r[o]['accuracy_max']:.3f})",
                    f"{r[o]['slot_imbalance_mean']:.2f}")] for r in rows])
    write_report({"benchmark": "balanced_orderings", "settings": vars(args), "python": platform.python_version(),
                  "rows": rows}, args.out)


if __name__ == "__main__":
    main()
