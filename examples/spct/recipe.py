"""Train the embedded judge with SPCT on a LoRA adapter: cold start, RFT, rule-based GRPO, meta RM, held-out eval.

Stages are resumable (each skips what ``--work`` already holds) and stop cleanly at ``--deadline`` seconds, so the
recipe fits GPU slots of 10 minutes; see examples/spct/README.md for the commands and the figures.

    python examples/spct/recipe.py --base SmolLM2-135M-Instruct.Q4_1.gguf --work /tmp/spct --stages sft,rft
    python examples/spct/recipe.py --scale tiny --work /tmp/spct-tiny     # a CPU smoke run on the embedded judge
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from grm_plugin.spct.recipe import SCALES, STAGES, Recipe


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=None, help="the judge to start from: a .gguf file or a model folder "
                        "(default: the embedded SmolLM2 judge, converted once)")
    parser.add_argument("--work", type=Path, default=Path("spct-work"))
    parser.add_argument("--scale", choices=sorted(SCALES), default="tiny")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--deadline", type=float, default=None, help="seconds from now after which no stage starts "
                        "and a running one saves and stops")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a scale setting")
    parser.add_argument("--out", type=Path, default=None, help="copy results.json and the adapters here at the end, "
                        "as flat files (<stage>.safetensors), which --resume reads back")
    parser.add_argument("--resume", type=Path, default=None, help="a folder --out wrote: continue from its state")
    args = parser.parse_args(argv)
    base = args.base
    if base is None:
        from grm_plugin.embedded import ensure_embedded_model

        base = str(ensure_embedded_model())
    scale = dict(SCALES[args.scale])
    for setting in args.set:
        key, _, value = setting.partition("=")
        if key not in scale:
            parser.error(f"--set {setting}: unknown key; expected one of {sorted(scale)}")
        scale[key] = type(scale[key])(value)
    if args.resume is not None:
        restore(args.resume, args.work)
    deadline = time.time() + args.deadline if args.deadline else None
    recipe = Recipe(base, args.work, scale, deadline=deadline)
    try:
        recipe.run(args.stages.split(","))
    finally:
        if args.out is not None:
            export(args.work, args.out)


ADAPTER_STAGES = ("sft", "rft", "rl")


def export(work: Path, out: Path) -> None:
    """Flat files, few of them (a device machine returns at most 8): results.json, rl_pool.json, the latest finished
    adapter stage as <stage>.safetensors with <stage>.card.json, rl_partial.safetensors while GRPO is unfinished, and
    meta.safetensors (the meta RM's head)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "rl_pool.json"):
        if (work / name).exists():
            shutil.copy(work / name, out / name)
    latest = next((stage for stage in reversed(ADAPTER_STAGES) if (work / stage / "card.json").exists()), None)
    if latest is not None:
        shutil.copy(work / latest / "adapter.safetensors", out / f"{latest}.safetensors")
        shutil.copy(work / latest / "card.json", out / f"{latest}.card.json")
    if (work / "rl_partial" / "adapter.safetensors").exists():
        shutil.copy(work / "rl_partial" / "adapter.safetensors", out / "rl_partial.safetensors")
    if (work / "meta" / "meta_head.safetensors").exists():
        shutil.copy(work / "meta" / "meta_head.safetensors", out / "meta.safetensors")


def restore(source: Path, work: Path) -> None:
    """The inverse of export, for a run continued on a fresh machine; what work already holds wins."""
    work.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "rl_pool.json"):
        if (source / name).exists() and not (work / name).exists():
            shutil.copy(source / name, work / name)
    for stage in (*ADAPTER_STAGES, "rl_partial"):
        file = source / f"{stage}.safetensors"
        if file.exists() and not (work / stage / "adapter.safetensors").exists():
            (work / stage).mkdir(parents=True, exist_ok=True)
            shutil.copy(file, work / stage / "adapter.safetensors")
            card = source / f"{stage}.card.json"
            (work / stage / "card.json").write_text(card.read_text() if card.exists() else json.dumps(
                {"stage": stage, "restored_from": str(source)}))
    if (source / "meta.safetensors").exists() and not (work / "meta" / "meta_head.safetensors").exists():
        (work / "meta").mkdir(parents=True, exist_ok=True)
        shutil.copy(source / "meta.safetensors", work / "meta" / "meta_head.safetensors")


if __name__ == "__main__":
    main()
