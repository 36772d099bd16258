"""The ``grm`` command line: ``grm score`` judges JSONL requests; ``grm simulate-judge`` runs the simulated judge."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Optional

import typer
from pydantic import ConfigDict, ValidationError

from . import __version__
from .batching import balanced_chunks
from .errors import format_validation_error
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


Parts = list[tuple[list[int], ScoreResult]]  # the judged chunks of one input line: response indices and result


async def _score_all(reward: GRMReward, lines: list[tuple[int, InputLine]], progress: Any
                     ) -> list[tuple[dict[str, Any], Parts]]:
    """Judge every line; per line its JSONL output and the results it was built from (for ``--table``)."""
    cfg = reward.config
    window = max(1, cfg.max_concurrency * 4)

    async def one(number: int, line: InputLine) -> tuple[dict[str, Any], Parts]:
        planned = _line_requests(line, cfg.mode, cfg.max_responses_per_call)
        results = await reward.ascore([req for _, req in planned])
        if progress is not None:
            progress.update(1)
        parts = [(chunk, res) for (chunk, _), res in zip(planned, results)]
        return _line_output(number, line, parts, cfg.seed), parts

    outputs: list[tuple[dict[str, Any], Parts]] = []
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


# --- the --table view ---------------------------------------------------------------------------------------------
PROMPT_CHARS = 100
RESPONSE_CHARS = 90
CRITIQUE_CHARS = 600


def _one_line(text: str, limit: int, ellipsis: str = "\u2026", encoding: str | None = None) -> str:
    """``text`` on one line (whitespace collapsed), cut to ``limit`` characters with an ellipsis; characters the
    output ``encoding`` (when given) cannot show become '?'."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[:max(0, limit - len(ellipsis))].rstrip() + ellipsis
    return flat.encode(encoding, "replace").decode(encoding) if encoding else flat


def _prompt_text(prompt: Any) -> str:
    """A string prompt, or the last user turn of a chat prompt."""
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if m.role == "user"]
    return (users[-1] if users else prompt[-1]).text()


def _response_text(response: Any) -> str:
    """A string response, or an agent turn's messages: texts, tool calls as ``[calls name]``, tool results."""
    if isinstance(response, str):
        return response
    pieces = []
    for message in response:
        text = message.text()
        if message.role in ("tool", "function"):
            pieces.append(f"[{message.name or 'tool'}: {text}]")
            continue
        if text:
            pieces.append(text)
        for call in message.tool_calls or []:
            name = (call.get("function") or {}).get("name") or call.get("name") or "tool"
            pieces.append(f"[calls {name}]")
    return " ".join(pieces)


def _first_valid_critique(parts: Parts) -> tuple[str, str] | None:
    """The first valid judgement's critique, and how its slots ('Response 1', ...) map to the table's numbers."""
    for chunk, result in parts:
        for judgement in result.judgements:
            if judgement.valid and judgement.critique.strip():
                slots = [chunk[i] + 1 for i in judgement.order] if judgement.order else [i + 1 for i in chunk]
                mapping = ""
                if slots != list(range(1, len(slots) + 1)):
                    mapping = ", ".join(f"Response {s} = #{n}" for s, n in enumerate(slots, start=1))
                return judgement.critique, mapping
    return None


def print_table(scored: list[tuple[InputLine, dict[str, Any], Parts]], file: Any = None) -> None:
    """Print one table per input line: its responses (numbered from 1 in input order), reward, votes, the best one,
    and the first valid critique. Plain ASCII where the output encoding is not UTF-8."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    stream = file or sys.stdout
    encoding = getattr(stream, "encoding", None) or "utf-8"
    plain = not encoding.lower().replace("-", "").replace("_", "").startswith("utf")
    ellipsis, star, dash = ("...", "*", "-") if plain else ("\u2026", "\u2605", "\u2014")

    def cut(text: str, limit: int) -> str:
        return _one_line(text, limit, ellipsis, encoding if plain else None)

    console = Console(file=stream, highlight=False, emoji=False, soft_wrap=False, safe_box=plain)
    for index, (line, out, parts) in enumerate(scored):
        if index:
            console.print()
        title = Text(f"line {out['line']}", style="bold")
        if line.id is not None:
            ident = line.id if isinstance(line.id, str) else json.dumps(line.id, ensure_ascii=False)
            title.append(f"  id {cut(ident, 40)}", style="bold")
        room = console.width - len(title.plain) - 2
        title.append(f"  {cut(_prompt_text(line.prompt), max(20, min(PROMPT_CHARS, room)))}")
        console.print(title, no_wrap=True, overflow="ellipsis")
        rows = []
        for i, response in enumerate(line.responses):
            reward, votes = out["rewards"][i], out["votes"][i]
            rows.append((str(i + 1), _response_text(response), dash if reward is None else f"{reward:.2f}",
                         dash if votes is None else str(votes), f"{star} best" if out["best"] == i else ""))
        # The response column takes what the other columns leave of the console's width (3 columns of padding
        # between columns) and is cut to one line with an ellipsis; the numbers are never cut.
        headers = ("#", "response", "reward", "votes", "best")
        widths = [max(len(headers[c]), *(len(r[c]) for r in rows)) for c in range(len(headers))]
        room = console.width - 3 * (len(headers) - 1) - sum(widths) + widths[1]
        response_chars = max(12, min(RESPONSE_CHARS, room))
        table = Table(box=box.ASCII2 if plain else box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        for header in headers:
            table.add_column(header, justify="right" if header in ("#", "reward", "votes") else "left",
                             no_wrap=True)
        for i, (number, response, reward_text, votes_text, best) in enumerate(rows):
            table.add_row(number, Text(cut(response, response_chars)), reward_text, votes_text,
                          best, style="bold" if out["best"] == i else None)
        console.print(table)
        console.print(Text(f"{out['valid_samples']} of {out['samples']} judgements valid", style="dim"))
        found = _first_valid_critique(parts)
        if found is None:
            errors = [j["error"] for j in out["judgements"] if j["error"]]
            reason = f": {cut(errors[0], 200)}" if errors else ""
            console.print(Text(f"no valid judgement{reason}", style="yellow"))
            continue
        critique, mapping = found
        label = "critique" + (f" ({mapping})" if mapping else "") + ": "
        wrapped = textwrap.fill(label + cut(critique, CRITIQUE_CHARS), width=max(20, console.width),
                                initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False)
        body = Text(wrapped)
        body.stylize("bold", 2, 2 + len("critique"))
        console.print(body, soft_wrap=True)


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
    table: bool = typer.Option(False, "--table", "-t", help="Print a readable table per input line to stdout "
                               "instead of JSONL: id and prompt, each response (truncated, numbered from 1), its "
                               "reward and votes, the best one, and the first valid critique. With --output the "
                               "JSONL is still written to the file."),
) -> None:
    """Score JSONL requests: rewards, votes, principles and critiques per line, in input order.

    Writes JSONL (one line per input line) to stdout or --output; --table prints a table for people to read instead.
    """
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
        scored = asyncio.run(_score_all(reward, lines, progress))
    except GRMError as exc:
        raise _fail(f"error: {exc}", 1) from None
    finally:
        if progress is not None:
            progress.close()
    text = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o, _ in scored)
    if output is not None:
        _write_atomically(output, text)
    if table:
        print_table([(line, o, parts) for (_, line), (o, parts) in zip(lines, scored)])
    elif output is None:
        sys.stdout.write(text)
        sys.stdout.flush()


@app.command("eval")
def evaluate(
    data: str = typer.Option(..., "--data", "-d", help="JSONL/JSON/parquet file, a saved datasets folder, or a hub id "
                             "(pairwise: prompt, chosen, rejected[, subset]; multi: prompt, responses, best)."),
    k: str = typer.Option("1,2,4,8", "--k", help="Comma-separated k values; one set of max(k) samples per item."),
    out: Path = typer.Option(Path("grm-eval"), "--out", "-o", help="Folder for report.json, report.md, scaling.png "
                             "and the resumable samples.jsonl."),
    limit: Optional[int] = typer.Option(None, help="Only the first N items."),
    draws: int = typer.Option(200, help="Random k-subsets per item for each k below max(k)."),
    position_bias: bool = typer.Option(True, "--position-bias/--no-position-bias",
                                       help="Also measure accuracy with the better response first vs second."),
    meta_rm: Optional[Path] = typer.Option(None, "--meta-rm", help="A local sequence-classification meta RM folder: "
                                           "the report adds meta@k (top ceil(k/2) samples by meta score, voted)."),
    model: Optional[str] = typer.Option(None, help="Judge model name on the server."),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible judge endpoint."),
    template: Optional[str] = typer.Option(None, help="deepseek-grm, deepseek-grm-single, tagged, or a file."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML/JSON config file (GRMConfig fields)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Measure a judge: expected accuracy at each k (voting@k from one set of samples), per subset, position bias.

    Resumable: samples are appended to OUT/samples.jsonl as they finish; run the same command again to continue.
    """
    from .evaluation import load_items, run_eval

    try:
        ks = sorted({int(x) for x in k.split(",") if x.strip()})
        if not ks or ks[0] < 1:
            raise ValueError
    except ValueError:
        raise _fail(f"error: --k: expected comma-separated positive integers, got {k!r}", 2) from None
    try:
        meta = None
        if meta_rm is not None:
            if not meta_rm.is_dir():
                raise _fail(f"error: --meta-rm: {str(meta_rm)!r} is not a folder with a sequence-classification model", 2)
            from .meta_rm import TransformersMetaRM

            meta = TransformersMetaRM(str(meta_rm))
        reward = GRMReward(config_file=str(config) if config else None, model=model, base_url=base_url,
                           template=template, meta_rm=meta)
        items = load_items(data, limit=limit)
    except (GRMError, ImportError, OSError) as exc:
        raise _fail(f"error: {exc}", 2) from None
    if not items:
        raise _fail(f"error: --data: {data!r} holds no items", 2)
    progress = None
    if not quiet:
        from tqdm import tqdm

        progress = tqdm(total=len(items), unit="item", desc=f"judging (k={ks[-1]})", file=sys.stderr)
    try:
        run_eval(reward, items, ks, out, draws=draws, with_position_bias=position_bias, progress=progress)
    except GRMError as exc:
        raise _fail(f"error: {exc} (samples so far are kept in {out / 'samples.jsonl'}; run again to resume)", 1) \
            from None
    finally:
        if progress is not None:
            progress.close()
    typer.echo((out / "report.md").read_text())
    typer.echo(f"wrote {out / 'report.json'}, {out / 'report.md'}, {out / 'scaling.png'}")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind (127.0.0.1: this machine only; 0.0.0.0: all)."),
    port: int = typer.Option(8000, help="Port."),
    api_key: Optional[str] = typer.Option(None, envvar="GRM_SERVE_API_KEY",
                                          help="Require 'Authorization: Bearer <key>' (env GRM_SERVE_API_KEY)."),
    batch_window_ms: float = typer.Option(15.0, help="How long single rollouts are gathered into one judge batch."),
    max_batch: int = typer.Option(64, help="Most rollouts judged together."),
    max_items: int = typer.Option(1024, help="Most rollouts (or ScoreRequests) in one HTTP request."),
    max_body_bytes: int = typer.Option(8 * 1024 * 1024, help="Largest accepted request body."),
    request_timeout: float = typer.Option(600.0, help="Seconds before an unanswered request gets a 503."),
    no_label_reference: bool = typer.Option(False, "--no-label-reference",
                                            help="Do not show OpenRLHF labels to the judge as reference answers."),
    invalid_reward: Optional[float] = typer.Option(None, help="Reward when no judgement parses "
                                                   "(default: the middle of the score range)."),
    workers: int = typer.Option(1, help="Server processes (each with its own micro-batcher and engine client)."),
    meta_rm: Optional[Path] = typer.Option(None, "--meta-rm", help="A local sequence-classification meta RM folder: "
                                           "guided voting for /get_reward and /v1/score, and POST /classify "
                                           "(vLLM's classification API) for remote HTTPMetaRM clients."),
    k: Optional[int] = typer.Option(None, help="Judgements sampled per request (voting)."),
    model: Optional[str] = typer.Option(None, help="Judge model name on the server."),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible judge endpoint, e.g. http://localhost:8001/v1."),
    mode: Optional[str] = typer.Option(None, help="'group' (rollouts of one prompt judged together) or 'pointwise'."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML/JSON config file (GRMConfig fields)."),
) -> None:
    """Serve the GRM over HTTP: OpenRLHF's remote reward model (POST /get_reward), POST /v1/score, /health, /metrics.

    OpenRLHF: --reward.remote_url http://HOST:PORT/get_reward (comma-separate several replicas).
    """
    try:
        from .server import ServeSettings
        from .server import serve as run

        settings = ServeSettings(host=host, port=port, api_key=api_key, batch_window_ms=batch_window_ms,
                                 max_batch=max_batch, max_items=max_items, max_body_bytes=max_body_bytes,
                                 request_timeout_s=request_timeout, labels_as_reference=not no_label_reference,
                                 invalid_reward=invalid_reward, workers=workers)
        meta = None
        if meta_rm is not None:
            if workers > 1:
                raise _fail("error: --meta-rm runs with one worker (--workers 1)", 2)
            if not meta_rm.is_dir():
                raise _fail(f"error: --meta-rm: {str(meta_rm)!r} is not a folder with a sequence-classification model", 2)
            from .meta_rm import TransformersMetaRM

            meta = TransformersMetaRM(str(meta_rm))
        reward = GRMReward(config_file=str(config) if config else None, k=k, model=model, base_url=base_url,
                           mode=mode, meta_rm=meta)
        if workers > 1:  # worker processes rebuild both from the environment (grm_plugin.server.app_from_env)
            judge = {"GRM_K": k, "GRM_MODEL": model, "GRM_BASE_URL": base_url, "GRM_MODE": mode,
                     "GRM_CONFIG_FILE": str(config.resolve()) if config else None}
            os.environ.update({name: str(value) for name, value in judge.items() if value is not None})
            for name, value in settings.model_dump(exclude_none=True).items():
                if name == "api_key":
                    value = settings.api_key.get_secret_value()
                os.environ[f"GRM_SERVE_{name.upper()}"] = str(value)
    except ImportError as exc:
        raise _fail(f"error: {exc}", 2) from None
    except ValidationError as exc:
        raise _fail(f"error: {format_validation_error(exc, 'serve settings')}", 2) from None
    except GRMError as exc:
        raise _fail(f"error: {exc}", 2) from None
    run(reward, settings, meta)


@app.command("simulate-judge")
def simulate_judge(
    port: int = typer.Option(8123, help="Port on 127.0.0.1."),
    noise: float = typer.Option(1.0, help="Standard deviation of the score noise."),
    position_bias: float = typer.Option(0.0, help="Points added to whatever response is shown first."),
) -> None:
    """Run the simulated judge (an OpenAI-compatible stand-in for a language model, for trying things out)."""
    from .simulated_judge import main as run

    run(["--port", str(port), "--noise", str(noise), "--settings", json.dumps({"position_bias": position_bias})])


PLUGIN_FILES = {"swift": ("swift_plugin", "grm_swift_plugin.py")}  # under grm_plugin/adapters/


@app.command("plugin-path")
def plugin_path(
    framework: str = typer.Argument(..., help="The framework: swift (ms-swift's --external_plugins)."),
) -> None:
    """Print the path of the plugin file a framework loads by path, e.g.
    `swift rlhf ... --external_plugins "$(grm plugin-path swift)" --reward_funcs grm`."""
    if framework not in PLUGIN_FILES:
        raise _fail(f"error: no plugin file for {framework!r}; choose from: {', '.join(sorted(PLUGIN_FILES))}", 2)
    import grm_plugin.adapters

    typer.echo(str(Path(grm_plugin.adapters.__file__).resolve().parent.joinpath(*PLUGIN_FILES[framework])))


def _add_spct() -> None:
    from .spct.cli import app as spct_app

    app.add_typer(spct_app, name="spct")


_add_spct()

if __name__ == "__main__":  # pragma: no cover
    app()
