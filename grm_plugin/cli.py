"""The ``grm`` command line: ``grm score`` judges JSONL requests; ``grm simulate-judge`` runs the simulated judge."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import typer
from pydantic import BaseModel, ConfigDict, ValidationError

from . import __version__
from .batching import balanced_chunks
from .config import GRMConfig
from .errors import GRMError
from .grm import GRMReward
from .types import ScoreRequest, ScoreResult
from .voting import pick_best

app = typer.Typer(help="grm-plugin: a generative reward model (principles, critiques, 1-10 scores, voting).",
                  no_args_is_help=True, add_completion=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"grm-plugin {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """grm-plugin command line."""


class InputLine(ScoreRequest):
    """One JSONL line of ``grm score``: a ScoreRequest plus an optional ``id``; other keys are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    id: Any = None


def _fail(message: str, code: int) -> "typer.Exit":
    typer.echo(message, err=True)
    return typer.Exit(code)


def read_lines(stream: Any) -> list[tuple[int, InputLine]]:
    """Parse and validate every line (bytes, UTF-8, a leading byte-order mark allowed) before any engine call."""
    lines = []
    for number, raw_bytes in enumerate(stream, start=1):
        try:
            raw = raw_bytes.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise _fail(f"error: line {number}: not valid UTF-8 (byte {exc.start + 1})", 2) from None
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _fail(f"error: line {number}: not valid JSON ({exc.msg} at column {exc.colno})", 2) from None
        if not isinstance(data, dict):
            raise _fail(f"error: line {number}: expected a JSON object with 'prompt' and 'responses', got "
                        f"{type(data).__name__}", 2)
        try:
            lines.append((number, InputLine.model_validate(data)))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise _fail(f"error: line {number}: field '{field}': {err['msg']}", 2) from None
    return lines


def _line_requests(line: InputLine, mode: str, max_per_call: int) -> list[tuple[list[int], ScoreRequest]]:
    indices = list(range(len(line.responses)))
    chunks = [[i] for i in indices] if mode == "pointwise" else balanced_chunks(indices, max_per_call)
    return [(chunk, ScoreRequest(prompt=line.prompt, responses=[line.responses[i] for i in chunk],
                                 reference=line.reference, principles=line.principles)) for chunk in chunks]


def _line_output(number: int, line: InputLine, parts: list[tuple[list[int], ScoreResult]], seed: int = 0
                 ) -> dict[str, Any]:
    n = len(line.responses)
    rewards: list[float | None] = [None] * n
    votes: list[int | None] = [None] * n
    judgements = []
    samples = valid = 0
    for chunk, result in parts:
        samples += result.samples
        valid += result.valid_samples
        for position, index in enumerate(chunk):
            rewards[index] = result.rewards[position]
            votes[index] = result.votes[position] if result.votes else None
        for j in result.judgements:
            judgements.append({"responses": chunk, "valid": j.valid, "scores": j.scores, "principles": j.principles,
                               "critique": j.critique, "error": j.error})
    if len(parts) == 1:
        best = parts[0][1].best
    else:  # responses judged in separate prompts: compare their rewards, ties broken by a seeded coin
        scored = [i for i, r in enumerate(rewards) if r is not None]
        rng = random.Random(f"{seed}:{number}")
        best = scored[pick_best([rewards[i] for i in scored], rng)] if scored else None
    out: dict[str, Any] = {"line": number}
    if line.id is not None:
        out["id"] = line.id
    out.update({"rewards": rewards, "votes": votes, "best": best, "samples": samples, "valid_samples": valid,
                "judgements": judgements})
    return out


async def _score_all(reward: GRMReward, lines: list[tuple[int, InputLine]], progress: Any) -> list[dict[str, Any]]:
    cfg = reward.config
    window = max(1, cfg.max_concurrency * 4)

    async def one(number: int, line: InputLine) -> dict[str, Any]:
        planned = _line_requests(line, cfg.mode, cfg.max_responses_per_call)
        results = await reward.ascore([req for _, req in planned])
        if progress is not None:
            progress.update(1)
        return _line_output(number, line, [(chunk, res) for (chunk, _), res in zip(planned, results)], cfg.seed)

    outputs: list[dict[str, Any]] = []
    try:
        for start in range(0, len(lines), window):
            tasks = [asyncio.ensure_future(one(n, line)) for n, line in lines[start:start + window]]
            try:
                outputs += await asyncio.gather(*tasks)
            except BaseException:
                # the run has failed: stop the other lines before their client is closed under them
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
    finally:
        await reward.aclose()
    return outputs


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if path.exists():  # keep the permissions of the file we replace; else what the umask allows
            mode = path.stat().st_mode & 0o777
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@app.command()
def score(
    input: str = typer.Option("-", "--input", "-i", help="JSONL file of requests ('-' = stdin). Each line: "
                              "{\"prompt\", \"responses\": [...], \"reference\"?, \"principles\"?, \"id\"?}."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write JSONL here (default: stdout). "
                                          "Written only when every line succeeded."),
    k: Optional[int] = typer.Option(None, help="Judgements sampled per request (voting)."),
    model: Optional[str] = typer.Option(None, help="Judge model name on the server."),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1."),
    template: Optional[str] = typer.Option(None, help="deepseek-grm, deepseek-grm-single, tagged, or a file."),
    mode: Optional[str] = typer.Option(None, help="'group' (a line's responses judged together) or 'pointwise'."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML/JSON config file (GRMConfig fields)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Score JSONL requests: rewards, votes, principles and critiques per line, in input order."""
    try:
        reward = GRMReward(config_file=str(config) if config else None, k=k, model=model, base_url=base_url,
                           template=template, mode=mode)
    except GRMError as exc:
        raise _fail(f"error: {exc}", 2) from None
    if input == "-":
        lines = read_lines(sys.stdin.buffer)
    else:
        source = Path(input)
        if not source.is_file():
            raise _fail(f"error: input file {input!r} does not exist", 2)
        with source.open("rb") as handle:
            lines = read_lines(handle)
    progress = None
    if not quiet and sys.stderr.isatty():
        from tqdm import tqdm

        progress = tqdm(total=len(lines), unit="line", desc="judging", file=sys.stderr)
    try:
        outputs = asyncio.run(_score_all(reward, lines, progress))
    except GRMError as exc:
        raise _fail(f"error: {exc}", 1) from None
    finally:
        if progress is not None:
            progress.close()
    text = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in outputs)
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        _write_atomically(output, text)


@app.command("simulate-judge")
def simulate_judge(
    port: int = typer.Option(8123, help="Port on 127.0.0.1."),
    noise: float = typer.Option(1.0, help="Standard deviation of the score noise."),
    position_bias: float = typer.Option(0.0, help="Points added to whatever response is shown first."),
) -> None:
    """Run the simulated judge (an OpenAI-compatible stand-in for a language model, for trying things out)."""
    from .simulated_judge import main as run

    run(["--port", str(port), "--noise", str(noise), "--settings", json.dumps({"position_bias": position_bias})])


if __name__ == "__main__":  # pragma: no cover
    app()
