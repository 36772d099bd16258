"""Accuracy of GRMReward's voted best response against k, on the simulated judge.

The simulated judge (an OpenAI-compatible stand-in for a language model) scores each response as its hidden
quality plus Gaussian noise. Each of the pairs differs in hidden quality by ``--gap``; with the default noise 1.8
one sample picks the better response about 65% of the time. The table shows how voting over k samples recovers it.

    python benchmarks/bench_voting_curve.py            # 200 pairs, k = 1, 2, 4, 8, 16
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from grm_plugin import GRMReward
from grm_plugin.testing.simulated_judge import SimulatedJudge, quality_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--ks", default="1,2,4,8,16")
    parser.add_argument("--noise", type=float, default=1.8)
    parser.add_argument("--gap", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, default=5, help="repeat with this many seeds and report the spread")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "voting_curve.json"))
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    rows = []
    with SimulatedJudge(noise=args.noise, seed=0) as judge:
        for k in ks:
            accuracies = []
            started = time.perf_counter()
            for seed in range(args.seeds):
                requests, better = quality_pairs(args.pairs, seed=seed, gap=args.gap)
                results = GRMReward(base_url=judge.base_url, model="simulated-judge", k=k, seed=seed).score(requests)
                accuracies.append(sum(r.best == b for r, b in zip(results, better)) / args.pairs)
            rows.append({"k": k, "accuracy_seed0": accuracies[0], "accuracy_mean": sum(accuracies) / len(accuracies),
                         "accuracy_min": min(accuracies), "accuracy_max": max(accuracies),
                         "seconds": time.perf_counter() - started})
    print(f"simulated judge, noise {args.noise}, gap {args.gap}, {args.pairs} pairs, {args.seeds} seeds")
    print(f"{'k':>4} {'seed 0':>8} {'mean':>8} {'min':>8} {'max':>8}")
    for r in rows:
        print(f"{r['k']:>4} {r['accuracy_seed0']:>8.3f} {r['accuracy_mean']:>8.3f} {r['accuracy_min']:>8.3f} "
              f"{r['accuracy_max']:>8.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "voting_curve", "settings": vars(args), "python": platform.python_version(),
                               "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
