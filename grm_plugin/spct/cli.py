"""``grm spct``: the SPCT recipes from the command line (synthetic data, rejective fine-tuning, rule-based RL, meta RM).

Every stage writes into ``--out``: its data (JSONL), statistics (JSON) and, when it trains, the model folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ..cli_options import CONFIG, JUDGE_MODEL, JUDGE_URL, LIMIT, QUIET
from ..errors import GRMError

app = typer.Typer(help="SPCT training recipes: synth -> rft -> rl -> meta (paper: Self-Principled Critique Tuning).",
                  no_args_is_help=True, add_completion=False)


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _progress(total: int, desc: str, quiet: bool) -> Any:
    if quiet:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="item", desc=desc, file=sys.stderr)


def _items(data: str, limit: Optional[int]) -> list[Any]:
    from ..preferences import load_preferences

    try:
        items = load_preferences(data, limit=limit)
    except (GRMError, ImportError, OSError) as exc:
        raise _fail(f"--data: {exc}") from None
    if not items:
        raise _fail(f"--data: {data!r} holds no items")
    return items


def _judge(model: Optional[str], base_url: Optional[str], config_file: Optional[Path], **settings: Any) -> Any:
    from ..config import GRMConfig
    from ..grm import GRMReward

    try:
        config = GRMConfig.load(str(config_file) if config_file else None, model=model, base_url=base_url, **settings)
        return GRMReward(config)
    except (GRMError, ImportError) as exc:
        raise _fail(str(exc)) from None


def _policy(policy: Optional[str], judge: Any) -> str:
    """The model to train: --policy, else the local judge's own model (SPCT trains the judge on its own samples)."""
    if policy:
        return policy
    if judge.config.resolved_engine() == "transformers":
        return judge.config.model or "embedded"
    raise _fail("--policy: the judge is served over HTTP; name the local model folder to train with --policy")


MAX_STEPS = typer.Option(-1, help="Training steps (-1: whole epochs).")
EPOCHS = typer.Option(1.0, help="Training epochs.")
BATCH_SIZE = typer.Option(8, help="Per-device batch size.")


def _sampled(build: Any, items: list[Any], desc: str, quiet: bool) -> Any:
    """Run ``build(progress)`` (a sampling stage) with a progress bar; an engine failure exits with code 1."""
    progress = _progress(len(items), desc, quiet)
    try:
        return build(progress)
    except GRMError as exc:
        raise _fail(str(exc), 1) from None
    finally:
        if progress is not None:
            progress.close()


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", "-o", help="JSONL file to write."),
    n: int = typer.Option(200, "--n", help="Items to write."),
    seed: int = typer.Option(0, help="Different seeds give disjoint-looking sets (training vs held-out)."),
    responses: str = typer.Option("2-4", help="Responses per item, LOW-HIGH."),
    kinds: Optional[str] = typer.Option(None, help="Comma-separated kinds or groups: 'default' (arithmetic, "
                                        "unit_conversion, string_manipulation, instruction_format; the default), "
                                        "'curriculum' (format_words, length_limit, matches_reference, refusal, "
                                        "keyword, language, list_count), 'all'."),
    split: Optional[str] = typer.Option(None, help="Write judge-training items of grm_plugin.judgedata instead: "
                                        "'train', 'heldout' (training families, fresh items, no training prompt), "
                                        "'heldout_templates' or 'heldout_families' (--kinds then names families)."),
) -> None:
    """Write synthetic verifiable preference items (one correct response among wrong ones), or judge-training items
    with rationales (--split)."""
    from ..preferences import synthetic_preferences, write_preferences

    try:
        low, _, high = responses.partition("-")
        span = (int(low), int(high or low))
        chosen = [k.strip() for k in kinds.split(",")] if kinds else None
        if split is not None:
            from ..judgedata import heldout_items, judge_items

            if split == "train":
                items = judge_items(n, seed=seed, split="train", n_responses=span, families=chosen)
            else:
                items = heldout_items(n, split=split, seed=seed, n_responses=span,  # type: ignore[arg-type]
                                      families=chosen)
        else:
            items = synthetic_preferences(n, seed=seed, n_responses=span, kinds=chosen)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    write_preferences(items, out)
    typer.echo(f"wrote {len(items)} items to {out}")


@app.command()
def rft(
    data: str = typer.Option(..., "--data", "-d", help="Preference items (JSONL/parquet/datasets; see README)."),
    out: Path = typer.Option(Path("spct-rft"), "--out", "-o", help="Folder for rft.jsonl, stats.json and model/."),
    n_rft: int = typer.Option(3, "--n-rft", help="Judgements sampled per item (paper: 3)."),
    hinted: bool = typer.Option(False, "--hinted/--no-hinted", help="Give items whose samples were all wrong one "
                                "hinted sample ('The best response is: Response j'), kept if correct."),
    temperature: Optional[float] = typer.Option(None, help="Sampling temperature (default 0.5)."),
    train: bool = typer.Option(True, "--train/--no-train", help="Fine-tune on the kept judgements (TRL SFTTrainer)."),
    policy: Optional[str] = typer.Option(None, help="Model folder to fine-tune (default: the local judge's model)."),
    max_steps: int = MAX_STEPS,
    epochs: float = EPOCHS,
    lr: float = typer.Option(1e-5, "--lr", help="Learning rate."),
    batch_size: int = BATCH_SIZE,
    limit: Optional[int] = LIMIT,
    model: Optional[str] = JUDGE_MODEL, base_url: Optional[str] = JUDGE_URL, config: Optional[Path] = CONFIG,
    quiet: bool = QUIET,
) -> None:
    """Rejective fine-tuning: sample N_RFT judgements per item, keep the correct ones, fine-tune on them."""
    from .data import build_rft_dataset
    from .train import train_sft

    items = _items(data, limit)
    judge = _judge(model, base_url, config)
    target = _policy(policy, judge) if train else None
    rows, stats = _sampled(lambda progress: build_rft_dataset(
        judge, items, out / "rft.jsonl", n_rft=n_rft, hinted=hinted, temperature=temperature, progress=progress),
        items, f"sampling (N_RFT={n_rft})", quiet)
    (out / "stats.json").write_text(json.dumps(stats.as_dict(), indent=2) + "\n", encoding="utf-8")
    typer.echo(json.dumps(stats.as_dict()))
    if train and target is not None:
        if not rows:
            raise _fail("no judgement was kept (every item too easy or all samples wrong): nothing to fine-tune on", 1)
        folder = train_sft(target, rows, out / "model", max_steps=max_steps, epochs=epochs, learning_rate=lr,
                           batch_size=batch_size, disable_tqdm=quiet)
        typer.echo(f"fine-tuned judge: {folder}")


@app.command()
def rl(
    data: str = typer.Option(..., "--data", "-d", help="Preference items (JSONL/parquet/datasets)."),
    policy: str = typer.Option(..., "--policy", help="The judge model folder to train (e.g. the RFT output)."),
    out: Path = typer.Option(Path("spct-rl"), "--out", "-o", help="Folder for the trained model."),
    num_generations: int = typer.Option(4, help="GRPO group size (paper: 4)."),
    beta: float = typer.Option(0.08, help="KL coefficient (paper: 0.08 for 27B, 0.002 for 16B)."),
    max_steps: int = MAX_STEPS,
    epochs: float = EPOCHS,
    lr: float = typer.Option(1e-6, "--lr", help="Learning rate."),
    batch_size: int = typer.Option(8, help="Per-device batch size (a multiple of num_generations)."),
    max_completion_length: int = typer.Option(512, help="Token budget of one generated judgement."),
    limit: Optional[int] = LIMIT,
    template: str = typer.Option("deepseek-grm", help="Judge prompt template."),
    quiet: bool = QUIET,
) -> None:
    """Rule-based online RL: GRPO on judge prompts with the Eq. 11 reward (+1 correct, -1 otherwise)."""
    from .data import build_rl_dataset
    from .train import train_rl

    items = _items(data, limit)
    try:
        rows = build_rl_dataset(items, template=template)
        folder = train_rl(policy, rows, out, num_generations=num_generations, beta=beta, max_steps=max_steps,
                          epochs=epochs, learning_rate=lr, batch_size=batch_size,
                          max_completion_length=max_completion_length, disable_tqdm=quiet)
    except (GRMError, ValueError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"RL-trained judge: {folder}")


@app.command()
def meta(
    data: str = typer.Option(..., "--data", "-d", help="Preference items (JSONL/parquet/datasets)."),
    out: Path = typer.Option(Path("spct-meta"), "--out", "-o", help="Folder for meta.jsonl and model/."),
    k: int = typer.Option(8, "--k", help="Judgements sampled per item to label."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Model folder to start the classifier from "
                                             "(default: the local judge's model)."),
    max_steps: int = MAX_STEPS,
    epochs: float = EPOCHS,
    lr: float = typer.Option(2e-5, "--lr", help="Learning rate."),
    batch_size: int = BATCH_SIZE,
    limit: Optional[int] = LIMIT,
    model: Optional[str] = JUDGE_MODEL, base_url: Optional[str] = JUDGE_URL, config: Optional[Path] = CONFIG,
    quiet: bool = QUIET,
) -> None:
    """Meta RM: label k sampled judgements per item correct/incorrect (Eq. 10) and train a classifier (BCE);
    use it with `grm eval --meta-rm OUT/model` or GRMReward(meta_rm=TransformersMetaRM(OUT/model))."""
    from .data import build_meta_dataset
    from .train import train_meta_rm

    items = _items(data, limit)
    judge = _judge(model, base_url, config)
    start = _policy(base_model, judge)
    rows = _sampled(lambda progress: build_meta_dataset(judge, items, out / "meta.jsonl", k=k, progress=progress),
                    items, f"sampling (k={k})", quiet)
    positives = sum(r["label"] for r in rows)
    typer.echo(json.dumps({"rows": len(rows), "correct_share": positives / len(rows) if rows else 0.0}))
    if not rows or positives in (0, len(rows)):
        raise _fail("the labels are all the same (or there are none): a meta RM cannot learn from them", 1)
    folder = train_meta_rm(start, rows, out / "model", max_steps=max_steps, epochs=epochs, learning_rate=lr,
                           batch_size=batch_size, disable_tqdm=quiet)
    typer.echo(f"meta RM: {folder}")
