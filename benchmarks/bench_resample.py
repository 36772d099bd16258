"""Valid votes per request with re-sampling of invalid judgements (``resample_invalid``), against the simulated judge
answering unparseable output a fixed share of the time (distinct requests of 2 responses, k=8).

    python benchmarks/bench_resample.py --requests 200 --k 8 --invalid-rate 0.2   # writes results/resample.json

Per setting: mean valid samples voted per request, requests voting fewer than k, judge samples drawn per request
(first attempts + replacements), judge HTTP requests per request, and the first-attempt parse-valid rate.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import print_table, write_report  # noqa: E402

from grm_plugin import GRMReward, ScoreRequest  # noqa: E402
from grm_plugin.testing.simulated_judge import SimulatedJudge, with_quality  # noqa: E402


def run(judge: SimulatedJudge, requests: list[ScoreRequest], k: int, **settings) -> dict:
    judge.reset()
    reward = GRMReward(base_url=judge.base_url, model="sim", k=k, cache_size=0, max_concurrency=64, **settings)
    started = time.perf_counter()
    results = reward.score(requests)
    seconds = time.perf_counter() - started
    stats = judge.stats()
    n = len(results)
    return {
        "valid_votes_per_request": statistics.fmean(r.voted_samples for r in results),
        "requests_below_k": sum(r.voted_samples < k for r in results),
        "samples_per_request": stats["completions"] / n,
        "judge_http_requests_per_request": stats["requests"] / n,
        "resampled_per_request": statistics.fmean(r.resampled for r in results),
        "first_attempt_valid_rate": sum(r.valid_samples for r in results) / sum(r.samples for r in results),
        "no_valid_vote": sum(r.votes is None for r in results),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--invalid-rate", type=float, default=0.2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "resample.json"))
    args = parser.parse_args()
    requests = [ScoreRequest(prompt=f"question {i}: which answer is better?",
                             responses=[with_quality(f"answer A{i}", 7), with_quality(f"answer B{i}", 4)])
                for i in range(args.requests)]
    rows, report = [], {"requests": args.requests, "k": args.k, "invalid_rate": args.invalid_rate, "settings": {}}
    with SimulatedJudge(noise=1.0, invalid_rate=args.invalid_rate, seed=0) as judge:
        for name, settings in [("resample_invalid=False (before)", {"resample_invalid": False}),
                               ("resample_invalid=True (default)", {}),
                               ("resample_invalid=True, max_resamples=2", {"max_resamples": 2})]:
            figures = run(judge, requests, args.k, **settings)
            report["settings"][name] = figures
            rows.append([name, f"{figures['valid_votes_per_request']:.2f}", figures["requests_below_k"],
                         f"{figures['samples_per_request']:.2f}", f"{figures['judge_http_requests_per_request']:.2f}",
                         f"{figures['first_attempt_valid_rate']:.3f}", figures["no_valid_vote"]])
    print(f"{args.requests} distinct requests, k={args.k}, simulated judge invalid {args.invalid_rate:.0%} of samples")
    print_table(["setting", "valid votes / request", f"requests < {args.k}", "samples drawn / request",
                 "judge HTTP requests / request", "first-attempt valid rate", "no valid vote"], rows)
    write_report(report, args.out)


if __name__ == "__main__":
    main()
