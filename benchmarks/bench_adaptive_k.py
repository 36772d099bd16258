"""Adaptive k against a fixed k=16 on the simulated judge: samples per request, agreement of the best response and
reward error.

The simulated judge (an OpenAI-compatible stand-in for a language model, not a model) scores each response as its
hidden quality plus Gaussian noise, plus a bias for the first slot. Requests hold 2 to 4 responses of qualities drawn
uniformly from 2..9. The judge draws every sample of a prompt from its own seed (``seed_per_sample``), so an adaptive
run's samples are the first samples of the fixed run: the agreement measures what stopping early changes, not the
sampling noise between two independent runs. Every run uses balanced orderings.

    python benchmarks/bench_adaptive_k.py            # 300 requests, noise 1.5, first-slot bias 0.5
    python benchmarks/bench_adaptive_k.py --noise 1.0 --out benchmarks/results/adaptive_k_noise1.json
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from pathlib import Path

from _report import print_table, write_report

from grm_plugin import GRMReward, ScoreRequest
from grm_plugin.testing.simulated_judge import SimulatedJudge, with_quality

VARIANTS = [  # (label, settings on top of k_max=16 and balanced orderings)
    ("exact, rounds of 2", {"k": 2, "round_size": 2, "stopping": "exact"}),
    ("exact, rounds of 4", {"k": 4, "round_size": 4, "stopping": "exact"}),
    ("statistical tol 0.5 @ 95%", {"k": 4, "round_size": 2, "stopping": "statistical", "stop_tolerance": 0.5,
                                   "stop_confidence": 0.95}),
    ("statistical tol 0.75 @ 90%", {"k": 4, "round_size": 2, "stopping": "statistical", "stop_tolerance": 0.75,
                                    "stop_confidence": 0.9}),
    ("statistical tol 1.0 @ 90%", {"k": 4, "round_size": 2, "stopping": "statistical", "stop_tolerance": 1.0,
                                   "stop_confidence": 0.9}),
    ("lead @ 95%, rounds of 2", {"k": 2, "round_size": 2, "stopping": "lead", "stop_confidence": 0.95}),
    ("lead @ 95%, k=4 then rounds of 2", {"k": 4, "round_size": 2, "stopping": "lead", "stop_confidence": 0.95}),
    ("lead @ 95%, rounds of 4", {"k": 4, "round_size": 4, "stopping": "lead", "stop_confidence": 0.95}),
    ("lead @ 99%, k=4 then rounds of 2", {"k": 4, "round_size": 2, "stopping": "lead", "stop_confidence": 0.99}),
]


def make_requests(count: int, seed: int) -> list[ScoreRequest]:
    rng = random.Random(seed)
    return [ScoreRequest(prompt=f"question {i}", responses=[with_quality(f"answer {j}", rng.uniform(2, 9))
                                                            for j in range(rng.choice([2, 3, 4]))])
            for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--noise", type=float, default=1.5)
    parser.add_argument("--position-bias", type=float, default=0.5)
    parser.add_argument("--k-max", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "adaptive_k.json"))
    args = parser.parse_args()
    requests = make_requests(args.requests, args.seed)
    rows = []
    with SimulatedJudge(noise=args.noise, position_bias=args.position_bias, seed=args.seed,
                        seed_per_sample=True) as judge:
        def run(**settings):
            judge.reset(forget_samples=True)
            started = time.perf_counter()
            reward = GRMReward(base_url=judge.base_url, model="simulated-judge", ordering="balanced", cache_size=0,
                               seed=args.seed, **settings)
            results = reward.score(requests)
            return results, judge.stats()["requests"], time.perf_counter() - started

        fixed, fixed_http, fixed_s = run(k=args.k_max)
        unique = [r.votes.count(max(r.votes)) == 1 for r in fixed]
        for label, settings in [(f"fixed k={args.k_max}", {"k": args.k_max})] + [
                (label, {**s, "k_max": args.k_max}) for label, s in VARIANTS]:
            results, http, seconds = (fixed, fixed_http, fixed_s) if "k_max" not in settings else run(**settings)
            samples = [r.samples for r in results]
            errors = [abs(a - b) for r, f in zip(results, fixed) for a, b in zip(r.rewards, f.rewards)]
            agree = [r.best == f.best for r, f in zip(results, fixed)]
            rows.append({
                "variant": label, "settings": settings,
                "samples_per_request": statistics.mean(samples),
                "saving_vs_fixed": 1 - sum(samples) / sum(r.samples for r in fixed),
                "http_requests_per_request": http / len(requests),
                "best_agreement": sum(agree) / len(agree),
                "best_agreement_unique_fixed_best": sum(a for a, u in zip(agree, unique) if u) / sum(unique),
                "reward_error_mean": statistics.mean(errors), "reward_error_p95": sorted(errors)[int(0.95 * len(errors))],
                "reward_error_max": max(errors), "stopped_early": sum(r.stopped_early for r in results) / len(results),
                "seconds": seconds,
            })
    print(f"simulated judge, noise {args.noise}, first-slot bias {args.position_bias}, {args.requests} requests of "
          f"2-4 responses, k_max {args.k_max}, balanced orderings")
    print_table(["variant", "samples/req", "saving", "HTTP req/req", "best agrees", "(unique best)", "|reward err| mean",
                 "p95", "max"],
                [[r["variant"], f"{r['samples_per_request']:.2f}", f"{r['saving_vs_fixed']:.1%}",
                  f"{r['http_requests_per_request']:.2f}", f"{r['best_agreement']:.1%}",
                  f"{r['best_agreement_unique_fixed_best']:.1%}", f"{r['reward_error_mean']:.3f}",
                  f"{r['reward_error_p95']:.3f}", f"{r['reward_error_max']:.3f}"] for r in rows])
    write_report({"benchmark": "adaptive_k", "settings": vars(args), "python": platform.python_version(),
                  "unique_fixed_best": sum(unique), "rows": rows}, args.out)


if __name__ == "__main__":
    main()
