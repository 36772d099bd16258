"""Evaluation harness: how accurate a judge is, and how much voting over k samples buys.

Data: pairwise rows (RewardBench's ``prompt``, ``chosen``, ``rejected``, ``subset``) or multi-response rows
(``prompt``, ``responses``, ``best``), from JSONL/JSON, parquet or a ``datasets`` dataset. Each item is judged ONCE
with ``k_max`` samples (cached on disk, so an interrupted run resumes); the accuracy at every smaller k is computed
from random k-subsets of those samples (seeded), so a whole curve costs ``k_max`` samples per item. Accuracy is
*expected* accuracy: a tie between the best response and m-1 others at the top of the votes counts 1/m (the paper
breaks ties at random); an item without any valid sample counts 1/n (a random pick).
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from contextlib import aclosing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from .preferences import PreferenceItem, judged_chunks

# RewardBench's sections (subset -> section). Within a section subsets are weighted by their example counts,
# except Reasoning, where math-prm counts as much as all hep-* code subsets together; the overall score is the
# mean of the sections present.
REWARDBENCH_SECTIONS = {
    **dict.fromkeys(["alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"],
                    "Chat"),
    **dict.fromkeys(["mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst",
                     "llmbar-adver-GPTOut", "llmbar-adver-manual"], "Chat Hard"),
    **dict.fromkeys(["refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond",
                     "donotanswer"], "Safety"),
    **dict.fromkeys(["math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"], "Reasoning"),
}


@dataclass
class ItemSamples:
    """The k_max sampled judgements of one item: per sample the scores in original response order (None: the
    sample did not parse), plus the judge tokens spent."""

    id: str
    subset: str
    n: int
    best: int
    scores: list[Optional[list[int]]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    meta: list[Optional[float]] = field(default_factory=list)  # meta RM scores per sample, with a meta RM


# --- sampling (resumable) --------------------------------------------------------------------------------------------


def collect_samples(reward: Any, items: Sequence[PreferenceItem], cache_file: Path | None = None,
                    progress: Any = None, batch_size: int = 16) -> list[ItemSamples]:
    """Judge every item once with the reward's k samples (shuffled as configured); samples already in
    ``cache_file`` (JSONL, one line per item, keyed by item id and the judge's settings) are reused, and new ones are
    appended as they finish, so an interrupted run continues where it stopped."""
    from ._sync import run_sync

    return run_sync(acollect_samples(reward, items, cache_file, progress, batch_size))


def read_resumable(cache_file: Path | None, key: str) -> list[dict[str, Any]]:
    """The records of a resumable run's JSONL file written by the judge ``key`` (their ``judge`` field removed); a
    line cut by an interruption, and lines of other judges, are skipped."""
    records = []
    if cache_file is not None and cache_file.is_file():
        for line in cache_file.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by an interruption
                continue
            if record.pop("judge", None) == key:
                records.append(record)
    return records


async def acollect_samples(reward: Any, items: Sequence[PreferenceItem], cache_file: Path | None = None,
                           progress: Any = None, batch_size: int = 16) -> list[ItemSamples]:
    """``collect_samples`` in the caller's event loop."""
    key = reward.config.judge_fingerprint() if hasattr(reward, "config") else "reward"
    meta_rm = getattr(reward, "meta_rm", None)
    if meta_rm is not None:
        key += f"|meta:{getattr(meta_rm, 'name', type(meta_rm).__name__)}"
    done = {record["id"]: ItemSamples(**record) for record in read_resumable(cache_file, key)}
    out = {item.id: done[item.id] for item in items if item.id in done}
    todo = [item for item in items if item.id not in done]
    if progress is not None:
        progress.update(len(items) - len(todo))
    handle = cache_file.open("a", encoding="utf-8") if cache_file is not None else None
    try:
        async with aclosing(judged_chunks(reward, todo, batch_size, progress)) as chunks:
            async for judged in chunks:
                for item, _, result in judged:
                    samples = ItemSamples(item.id, item.subset, len(item.responses), item.best,
                                          [j.scores if j.valid else None for j in result.judgements],
                                          result.prompt_tokens, result.completion_tokens,
                                          [j.meta_score for j in result.judgements] if meta_rm is not None else [])
                    out[item.id] = samples
                    if handle is not None:
                        handle.write(json.dumps({**asdict(samples), "judge": key}) + "\n")
                        handle.flush()
    finally:
        if handle is not None:
            handle.close()
    return [out[item.id] for item in items]


# --- accuracy ---------------------------------------------------------------------------------------------------------


def expected_correct(votes: Sequence[float] | None, best: int, n: int) -> float:
    """1 if ``best`` alone has the most votes, 1/m if it ties with m-1 others, 0 otherwise; 1/n without votes."""
    if votes is None:
        return 1.0 / n
    top = max(votes)
    if votes[best] != top:
        return 0.0
    return 1.0 / sum(1 for v in votes if v == top)


def subsets(k_max: int, k: int, draws: int, seed: int) -> list[list[int]]:
    """The sample subsets used for accuracy at k, the same for every item: every k-subset of the k_max samples when
    there are at most ``draws`` of them (the exact expectation), else ``draws`` random k-subsets (seeded)."""
    if k >= k_max:
        return [list(range(k_max))]
    if math.comb(k_max, k) <= draws:
        return [list(c) for c in itertools.combinations(range(k_max), k)]
    rng = random.Random(f"{seed}:{k_max}:{k}")
    return [sorted(rng.sample(range(k_max), k)) for _ in range(draws)]


def item_accuracy(samples: ItemSamples, chosen: Sequence[Sequence[int]], meta: bool = False) -> float:
    """Expected accuracy of one item, averaged over the given sample subsets (votes = summed valid scores). With
    ``meta``, only the top ceil(k/2) valid samples of each subset by meta RM score are voted (meta@k)."""
    total = 0.0
    for subset in chosen:
        indices = [i for i in subset if i < len(samples.scores) and samples.scores[i] is not None]
        if meta:
            kept = sorted(indices, key=lambda i: (-(samples.meta[i] if samples.meta[i] is not None else -math.inf),
                                                  i))[:-(-len(subset) // 2)]
            indices = sorted(kept)
        valid = [samples.scores[i] for i in indices]
        votes = [sum(s[r] for s in valid) for r in range(samples.n)] if valid else None
        total += expected_correct(votes, samples.best, samples.n)
    return total / len(chosen)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _bootstrap_ci(values: Sequence[float], rng: random.Random, bootstrap: int) -> list[float]:
    """A 95% percentile interval of the mean, resampling ``values`` (items) ``bootstrap`` times."""
    boots = sorted(_mean([values[rng.randrange(len(values))] for _ in values]) for _ in range(bootstrap))
    return [boots[int(0.025 * (bootstrap - 1))], boots[int(0.975 * (bootstrap - 1))]]


def rewardbench_score(per_subset: dict[str, float], counts: dict[str, int]) -> dict[str, float] | None:
    """RewardBench's section scores and overall (mean of sections), or None when no subset is RewardBench's."""
    sections: dict[str, list[str]] = {}
    for subset in per_subset:
        if subset in REWARDBENCH_SECTIONS:
            sections.setdefault(REWARDBENCH_SECTIONS[subset], []).append(subset)
    if not sections:
        return None
    scores = {}
    for section, names in sections.items():
        if section == "Reasoning" and "math-prm" in names and len(names) > 1:
            code = [n for n in names if n != "math-prm"]
            code_score = sum(per_subset[n] * counts[n] for n in code) / sum(counts[n] for n in code)
            scores[section] = (per_subset["math-prm"] + code_score) / 2
        else:
            scores[section] = sum(per_subset[n] * counts[n] for n in names) / sum(counts[n] for n in names)
    scores["overall"] = _mean([v for k, v in scores.items()])
    return scores


def accuracy_curve(all_samples: Sequence[ItemSamples], ks: Sequence[int], draws: int = 200, seed: int = 0,
                   bootstrap: int = 1000) -> list[dict[str, Any]]:
    """Per k: overall and per-subset expected accuracy, a 95% bootstrap interval over items, RewardBench's
    weighting when its subsets are present."""
    k_max = max(len(s.scores) for s in all_samples)
    rows = []
    for k in ks:
        chosen = subsets(k_max, k, draws, seed)
        per_item = [item_accuracy(s, chosen) for s in all_samples]
        by_subset: dict[str, list[float]] = {}
        for s, value in zip(all_samples, per_item):
            by_subset.setdefault(s.subset, []).append(value)
        rng = random.Random(f"boot:{seed}:{k}")
        per_subset = {name: _mean(values) for name, values in sorted(by_subset.items())}
        row = {"k": k, "accuracy": _mean(per_item), "ci95": _bootstrap_ci(per_item, rng, bootstrap),
               "per_subset": per_subset,
               "rewardbench": rewardbench_score(per_subset, {n: len(v) for n, v in by_subset.items()})}
        if all(s.meta for s in all_samples):  # meta RM guided voting from the same samples
            meta_items = [item_accuracy(s, chosen, meta=True) for s in all_samples]
            row.update(meta_accuracy=_mean(meta_items), meta_ci95=_bootstrap_ci(meta_items, rng, bootstrap))
        rows.append(row)
    return rows


# --- position bias ---------------------------------------------------------------------------------------------------


def position_bias(reward: Any, items: Sequence[PreferenceItem]) -> dict[str, float] | None:
    """For pairwise items, with shuffling off and one sample: accuracy when the better response is shown first and
    when it is shown second, and how often the judge's preference flips when the order flips."""
    from ._sync import run_sync
    from .types import ScoreRequest

    pairs = [item for item in items if len(item.responses) == 2]
    if not pairs:
        return None
    fixed = reward.with_settings(k=1, k_max=None, shuffle=False, cache_size=0)
    requests = []
    for item in pairs:
        better, worse = item.responses[item.best], item.responses[1 - item.best]
        requests += [ScoreRequest(prompt=item.prompt, responses=[better, worse], reference=item.reference),
                     ScoreRequest(prompt=item.prompt, responses=[worse, better], reference=item.reference)]
    results = run_sync(fixed.ascore(requests))
    first, second, flips, both_valid = [], [], 0, 0
    for i in range(len(pairs)):
        a, b = results[2 * i], results[2 * i + 1]
        first.append(expected_correct(a.votes, 0, 2))
        second.append(expected_correct(b.votes, 1, 2))
        if a.votes is not None and b.votes is not None:
            both_valid += 1
            prefers_better_a = a.votes[0] > a.votes[1]
            prefers_better_b = b.votes[1] > b.votes[0]
            if prefers_better_a != prefers_better_b:
                flips += 1
    return {"pairs": len(pairs), "accuracy_better_first": _mean(first), "accuracy_better_second": _mean(second),
            "flip_rate": flips / both_valid if both_valid else float("nan")}


# --- the whole run and its report ------------------------------------------------------------------------------------


def run_eval(reward: Any, items: Sequence[PreferenceItem], ks: Sequence[int], out: Path, *, draws: int = 200,
             seed: int = 0, with_position_bias: bool = True, progress: Any = None) -> dict[str, Any]:
    """Judge ``items`` with ``max(ks)`` samples each (resumable from ``out/samples.jsonl``), compute the curve and
    position bias, and write ``report.json``, ``report.md`` and ``scaling.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    k_max = max(ks)
    sampler = reward.with_settings(k=k_max)
    started = time.perf_counter()
    samples = collect_samples(sampler, items, out / "samples.jsonl", progress=progress)
    wall = time.perf_counter() - started
    drawn = sum(len(s.scores) for s in samples)
    report = {
        "items": len(items), "k": list(ks), "k_max": k_max, "subset_draws": draws, "seed": seed,
        "judge": reward.config.public_dict() if hasattr(reward.config, "public_dict") else {},
        "parse_valid_rate": sum(1 for s in samples for x in s.scores if x is not None) / drawn if drawn else 0.0,
        "judge_tokens_per_item": (sum(s.prompt_tokens + s.completion_tokens for s in samples) / len(samples)
                                  if samples else 0.0),
        "wall_s": wall,
        "curve": accuracy_curve(samples, sorted(set(ks)), draws=draws, seed=seed),
        "position_bias": position_bias(reward, items) if with_position_bias else None,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "report.md").write_text(render_markdown(report))
    plot_curve(report, out / "scaling.png")
    return report


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# GRM evaluation: {report['items']} items, k up to {report['k_max']}", "",
             f"Parse-valid rate {report['parse_valid_rate']:.3f}; judge tokens per item "
             f"{report['judge_tokens_per_item']:.0f}; sampling wall time {report['wall_s']:.1f} s.", "",
             "| k | accuracy | 95% CI |" + (" meta@k | 95% CI |" if "meta_accuracy" in report["curve"][0] else ""),
             "|---|---|---|" + ("---|---|" if "meta_accuracy" in report["curve"][0] else "")]
    for row in report["curve"]:
        line = f"| {row['k']} | {row['accuracy']:.3f} | {row['ci95'][0]:.3f} - {row['ci95'][1]:.3f} |"
        if "meta_accuracy" in row:
            line += f" {row['meta_accuracy']:.3f} | {row['meta_ci95'][0]:.3f} - {row['meta_ci95'][1]:.3f} |"
        lines.append(line)
    subsets_ = sorted(report["curve"][0]["per_subset"])
    lines += ["", "| subset | " + " | ".join(f"k={r['k']}" for r in report["curve"]) + " |",
              "|---|" + "---|" * len(report["curve"])]
    for name in subsets_:
        lines.append(f"| {name} | " + " | ".join(f"{r['per_subset'][name]:.3f}" for r in report["curve"]) + " |")
    if report["curve"][0].get("rewardbench"):
        lines += ["", "RewardBench sections (k = " + ", ".join(str(r["k"]) for r in report["curve"]) + "):"]
        for section in report["curve"][0]["rewardbench"]:
            lines.append(f"- {section}: " + ", ".join(f"{r['rewardbench'][section]:.3f}" for r in report["curve"]))
    bias = report.get("position_bias")
    if bias:
        lines += ["", f"Position bias ({bias['pairs']} pairs, k=1, no shuffling): accuracy with the better response "
                      f"first {bias['accuracy_better_first']:.3f}, second {bias['accuracy_better_second']:.3f}; "
                      f"preference flips when the order flips: {bias['flip_rate']:.3f}."]
    return "\n".join(lines) + "\n"


def pyplot(what: str) -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or an ImportError saying ``what`` needs the eval extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"{what} needs matplotlib: pip install 'grm-plugin[eval]' ({exc})") from exc
    return plt


def plot_curve(report: dict[str, Any], path: Path) -> None:
    """Accuracy against k (log2 axis) with the 95% interval as a band."""
    plt = pyplot("the scaling plot")
    ks = [row["k"] for row in report["curve"]]
    acc = [row["accuracy"] for row in report["curve"]]
    low = [row["ci95"][0] for row in report["curve"]]
    high = [row["ci95"][1] for row in report["curve"]]
    figure, axis = plt.subplots(figsize=(5, 3.5), dpi=120)
    axis.plot(ks, acc, marker="o", label="voting@k")
    axis.fill_between(ks, low, high, alpha=0.2, label="95% CI")
    if "meta_accuracy" in report["curve"][0]:
        axis.plot(ks, [row["meta_accuracy"] for row in report["curve"]], marker="s", label="meta RM guided@k")
        axis.fill_between(ks, [row["meta_ci95"][0] for row in report["curve"]],
                          [row["meta_ci95"][1] for row in report["curve"]], alpha=0.15)
    axis.set_xscale("log", base=2)
    axis.set_xticks(ks, [str(k) for k in ks])
    axis.set_xlabel("k (sampled judgements)")
    axis.set_ylabel("expected accuracy")
    axis.set_title(f"Inference-time scaling ({report['items']} items)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


__all__ = ["ItemSamples", "pyplot", "read_resumable", "REWARDBENCH_SECTIONS", "accuracy_curve", "collect_samples",
           "acollect_samples", "expected_correct", "item_accuracy", "plot_curve", "position_bias", "render_markdown",
           "rewardbench_score", "run_eval", "subsets"]
