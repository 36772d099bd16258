"""`grm eval` figures on the simulated judge: the voting@k curve from one set of k_max samples per item, and
position bias with and without a judge that favours the first slot.

    python benchmarks/bench_eval.py      # prints a table, writes results/eval_simulated.json (+ report folders)

The simulated judge scores each response by its hidden quality plus Gaussian noise (``--noise``), plus
``--position-bias`` points for whatever response is shown first; items are pairs whose qualities differ by ``--gap``.
"""

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from _report import print_table, write_report

from grm_plugin import GRMReward
from grm_plugin.evaluation import run_eval
from grm_plugin.preferences import load_preferences
from grm_plugin.testing.simulated_judge import SimulatedJudge, quality_pairs


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--k", default="1,2,4,8,16")
    parser.add_argument("--noise", type=float, default=1.5)
    parser.add_argument("--gap", type=float, default=1.0)
    parser.add_argument("--position-bias", type=float, default=1.0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "eval_simulated.json"))
    args = parser.parse_args(argv)
    ks = [int(x) for x in args.k.split(",")]
    requests, better = quality_pairs(args.items, seed=0, gap=args.gap)
    rows = [{"id": str(i), "prompt": r.prompt, "chosen": r.responses[b], "rejected": r.responses[1 - b],
             "subset": "even" if i % 2 == 0 else "odd"} for i, (r, b) in enumerate(zip(requests, better))]
    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "pairs.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        items = load_preferences(str(data))
        for name, bias in (("unbiased judge", 0.0), (f"first-slot bias +{args.position_bias:g}", args.position_bias)):
            with SimulatedJudge(noise=args.noise, position_bias=bias, seed=0) as judge:
                reward = GRMReward(base_url=judge.base_url, model="sim")
                started = time.perf_counter()
                report = run_eval(reward, items, ks, Path(folder) / name.replace(" ", "_"))
                report["total_wall_s"] = time.perf_counter() - started
                report["engine_requests"] = judge.stats()["requests"]
            runs[name] = report
    header = ["judge", *[f"k={k}" for k in ks], "better first", "better second", "flip rate", "engine requests"]
    table = []
    for name, report in runs.items():
        bias = report["position_bias"]
        table.append([name, *[f"{row['accuracy']:.3f} [{row['ci95'][0]:.2f}, {row['ci95'][1]:.2f}]"
                              for row in report["curve"]],
                      f"{bias['accuracy_better_first']:.3f}", f"{bias['accuracy_better_second']:.3f}",
                      f"{bias['flip_rate']:.3f}", report["engine_requests"]])
    print(f"Simulated judge, {args.items} pairs, quality gap {args.gap:g}, noise {args.noise:g}; expected accuracy "
          "[95% CI]; shuffled per sample")
    print_table(header, table)
    report = {"settings": vars(args), "python": sys.version.split()[0], "platform": platform.platform(),
              "runs": runs}
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
