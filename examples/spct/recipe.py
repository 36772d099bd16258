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


FILES = {"sft": "adapter.safetensors", "rft": "adapter.safetensors", "rl": "adapter.safetensors",
         "rl_partial": "adapter.safetensors", "meta": "meta_head.safetensors"}


def export(work: Path, out: Path) -> None:
    """Flat files (a device machine returns few files, two folders deep at most): results.json, rl_pool.json and
    <stage>.safetensors per finished stage."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "rl_pool.json"):
        if (work / name).exists():
            shutil.copy(work / name, out / name)
    for stage, name in FILES.items():
        if (work / stage / name).exists():
            shutil.copy(work / stage / name, out / f"{stage}.safetensors")


def restore(source: Path, work: Path) -> None:
    """The inverse of export, for a run continued on a fresh machine; what work already holds wins."""
    work.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "rl_pool.json"):
        if (source / name).exists() and not (work / name).exists():
            shutil.copy(source / name, work / name)
    for stage, name in FILES.items():
        file = source / f"{stage}.safetensors"
        if file.exists() and not (work / stage / name).exists():
            (work / stage).mkdir(parents=True, exist_ok=True)
            shutil.copy(file, work / stage / name)
            if name == "adapter.safetensors":
                (work / stage / "card.json").write_text(json.dumps({"stage": stage, "restored_from": str(source)}))


if __name__ == "__main__":
    main()
