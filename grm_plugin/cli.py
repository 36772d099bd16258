"""The ``grm`` command line: ``grm score`` judges JSONL requests (its ``--table`` view is ``cli_table.py``),
``grm eval`` measures a judge, ``grm probe`` how it can be fooled, ``grm serve`` serves it, ``grm simulate-judge``
runs the simulated judge, ``grm spct`` trains one."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from pydantic import ConfigDict, ValidationError

from . import __version__
from .cache import write_atomically
from .cli_options import CONFIG, JUDGE_MODEL, JUDGE_URL, LIMIT, QUIET
from .cli_table import Parts, print_table
from .config import GRMConfig
from .errors import GRMError, format_validation_error
from .grm import GRMReward
from .reward import RowJudgements
from .types import ScoreRequest
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


async def _judge_line(reward: GRMReward, line: InputLine) -> RowJudgements:
    """Judge one input line's responses as the rows of one prompt: together in group mode (in balanced chunks of at
    most ``max_responses_per_call``), one by one in pointwise mode."""
    n = len(line.responses)
    return await reward.ajudge_rows([line.prompt] * n, list(line.responses),
                                    **{reward.reference_column: [line.reference] * n,
                                       reward.principles_column: [line.principles] * n})


def _parts(judged: RowJudgements) -> Parts:
    """Per judge request of a line, the indices of the responses it showed (in its order) and its result."""
    shown: list[list[int]] = [[] for _ in judged.requests]
    for row, slot in enumerate(judged.slots):
        shown[slot.request].append(row)
    return list(zip(shown, judged.results))


def _line_output(number: int, line: InputLine, judged: RowJudgements, parts: Parts, seed: int = 0) -> dict[str, Any]:
    """The JSONL output of one input line (``parts``: ``_parts(judged)``): rewards and votes per response, the best
    one, the counters and every judgement with the responses it saw."""
    rewards = judged.rewards()
    votes = [judged.results[s.request].votes[s.response] if judged.results[s.request].votes else None
             for s in judged.slots]
    judgements = [{"responses": chunk, "valid": j.valid, "scores": j.scores, "principles": j.principles,
                   "critique": j.critique, "error": j.error}
                  for chunk, result in parts for j in result.judgements]
    if len(judged.results) == 1:
        best = judged.results[0].best
    else:  # responses judged in separate prompts: compare their rewards, ties broken by a seeded coin
        scored = [i for i, r in enumerate(rewards) if r is not None]
        rng = random.Random(f"{seed}:{number}")
        best = scored[pick_best([rewards[i] for i in scored], rng)] if scored else None
    out: dict[str, Any] = {"line": number}
    if line.id is not None:
        out["id"] = line.id
    out.update({"rewards": rewards, "votes": votes, "best": best,
                "samples": sum(r.samples for r in judged.results),
                "valid_samples": sum(r.valid_samples for r in judged.results), "judgements": judgements})
    return out


async def _score_all(reward: GRMReward, lines: list[tuple[int, InputLine]], progress: Any
                     ) -> list[tuple[dict[str, Any], Parts]]:
    """Judge every line; per line its JSONL output and the results it was built from (for ``--table``)."""
    window = max(1, reward.config.max_concurrency * 4)

    async def one(number: int, line: InputLine) -> tuple[dict[str, Any], Parts]:
        judged = await _judge_line(reward, line)
        if progress is not None:
            progress.update(1)
        parts = _parts(judged)
        return _line_output(number, line, judged, parts, reward.config.seed), parts

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


@app.command()
def score(
    input: str = typer.Option("-", "--input", "-i", help="JSONL file of requests ('-' = stdin). Each line: "
                              "{\"prompt\", \"responses\": [...], \"reference\"?, \"principles\"?, \"id\"?}."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write JSONL here (default: stdout). "
                                          "Written only when every line succeeded."),
    k: Optional[int] = typer.Option(None, help="Judgements sampled per request (voting)."),
    model: Optional[str] = JUDGE_MODEL,
    base_url: Optional[str] = JUDGE_URL,
    template: Optional[str] = typer.Option(None, help="deepseek-grm, deepseek-grm-single, tagged, compact, or a file."),
    mode: Optional[str] = typer.Option(None, help="'group' (a line's responses judged together) or 'pointwise'."),
    config_file: Optional[Path] = CONFIG,
    quiet: bool = QUIET,
    table: bool = typer.Option(False, "--table", "-t", help="Print a readable table per input line to stdout "
                               "instead of JSONL: id and prompt, each response (truncated, numbered from 1), its "
                               "reward and votes, the best one, and the first valid critique. With --output the "
                               "JSONL is still written to the file."),
) -> None:
    """Score JSONL requests: rewards, votes, principles and critiques per line, in input order.

    Writes JSONL (one line per input line) to stdout or --output; --table prints a table for people to read instead.
    """
    try:  # flags over GRM_* environment variables over the config file (GRMConfig.load)
        config = GRMConfig.load(config_file, k=k, model=model, base_url=base_url, template=template, mode=mode)
        reward = GRMReward(config)
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
        write_atomically(output, text)
    if table:
        print_table([(line, o, parts) for (_, line), (o, parts) in zip(lines, scored)])
    elif output is None:
        sys.stdout.write(text)
        sys.stdout.flush()


def _load_meta_rm(folder: Optional[Path]) -> Any:
    """The ``--meta-rm`` folder's meta RM (None without the flag); exits with code 2 when it is not a folder."""
    if folder is None:
        return None
    if not folder.is_dir():
        raise _fail(f"error: --meta-rm: {str(folder)!r} is not a folder with a sequence-classification model", 2)
    from .meta_rm import TransformersMetaRM

    return TransformersMetaRM(str(folder))


def _resumable(run: Any, out: Path, chart: str, bar: dict[str, Any] | None) -> Any:
    """Run a resumable measurement (``grm eval``, ``grm probe``) under a progress bar (``bar``: tqdm's arguments;
    None: no bar), then print its report.md and what it wrote; an engine failure exits 1 saying how to resume."""
    progress = None
    if bar is not None:
        from tqdm import tqdm

        progress = tqdm(file=sys.stderr, **bar)
    try:
        result = run(progress)
    except GRMError as exc:
        raise _fail(f"error: {exc} (what was judged so far is kept in {out / 'samples.jsonl'}; run again to "
                    "resume)", 1) from None
    finally:
        if progress is not None:
            progress.close()
    typer.echo((out / "report.md").read_text())
    typer.echo(f"wrote {out / 'report.json'}, {out / 'report.md'}, {out / chart}")
    return result


@app.command("eval")
def evaluate(
    data: str = typer.Option(..., "--data", "-d", help="JSONL/JSON/parquet file, a saved datasets folder, or a hub id "
                             "(pairwise: prompt, chosen, rejected[, subset]; multi: prompt, responses, best)."),
    k: str = typer.Option("1,2,4,8", "--k", help="Comma-separated k values; one set of max(k) samples per item."),
    out: Path = typer.Option(Path("grm-eval"), "--out", "-o", help="Folder for report.json, report.md, scaling.png "
                             "and the resumable samples.jsonl."),
    limit: Optional[int] = LIMIT,
    draws: int = typer.Option(200, help="Random k-subsets per item for each k below max(k)."),
    position_bias: bool = typer.Option(True, "--position-bias/--no-position-bias",
                                       help="Also measure accuracy with the better response first vs second."),
    meta_rm: Optional[Path] = typer.Option(None, "--meta-rm", help="A local sequence-classification meta RM folder: "
                                           "the report adds meta@k (top ceil(k/2) samples by meta score, voted)."),
    model: Optional[str] = JUDGE_MODEL,
    base_url: Optional[str] = JUDGE_URL,
    template: Optional[str] = typer.Option(None, help="deepseek-grm, deepseek-grm-single, tagged, compact, or a file."),
    config_file: Optional[Path] = CONFIG,
    quiet: bool = QUIET,
) -> None:
    """Measure a judge: expected accuracy at each k (voting@k from one set of samples), per subset, position bias.

    Resumable: samples are appended to OUT/samples.jsonl as they finish; run the same command again to continue.
    """
    from .evaluation import run_eval
    from .preferences import load_preferences

    try:
        ks = sorted({int(x) for x in k.split(",") if x.strip()})
        if not ks or ks[0] < 1:
            raise ValueError
    except ValueError:
        raise _fail(f"error: --k: expected comma-separated positive integers, got {k!r}", 2) from None
    try:
        meta = _load_meta_rm(meta_rm)
        config = GRMConfig.load(config_file, model=model, base_url=base_url, template=template)
        reward = GRMReward(config, meta_rm=meta)
        items = load_preferences(data, limit=limit)
    except (GRMError, ImportError, OSError) as exc:
        raise _fail(f"error: {exc}", 2) from None
    if not items:
        raise _fail(f"error: --data: {data!r} holds no items", 2)
    _resumable(lambda progress: run_eval(reward, items, ks, out, draws=draws, with_position_bias=position_bias,
                                         progress=progress),
               out, "scaling.png", None if quiet else dict(total=len(items), unit="item", desc=f"judging (k={ks[-1]})"))


@app.command()
def probe(
    out: Path = typer.Option(Path("grm-probe"), "--out", "-o", help="Folder for report.json, report.md, probe.png and "
                             "the resumable samples.jsonl."),
    full: bool = typer.Option(False, "--full", help="All 48 questions in every class (864 judge calls) instead of "
                              "the default 12 questions, 4 per class (72 calls)."),
    fail_above: Optional[float] = typer.Option(None, "--fail-above", min=0.0, max=1.0,
                                               help="Exit 1 when any hack class's false preference rate is above "
                                                    "this (0..1), so a training script can refuse a hackable judge."),
    classes: Optional[str] = typer.Option(None, help="Comma-separated classes to probe (default: all)."),
    model: Optional[str] = JUDGE_MODEL,
    base_url: Optional[str] = JUDGE_URL,
    template: Optional[str] = typer.Option(None, help="deepseek-grm, deepseek-grm-single, tagged, compact, or a file."),
    config_file: Optional[Path] = CONFIG,
    quiet: bool = QUIET,
) -> None:
    """Measure how a judge can be fooled: the correct answer to each probe question against adversarial responses
    (master keys, instructions to the grader, fake scores blocks and wrappers, wrong or padded answers), both
    orders, one sample each. Prints the table; exit 1 with --fail-above when a class exceeds it.

    Resumable: judgements are appended to OUT/samples.jsonl as they finish; run the same command again to continue.
    """
    from .probe import CLASSES, exceeding, probe_pairs, run_probe

    names = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    try:
        count = len(probe_pairs(full=full, classes=names))
        config = GRMConfig.load(config_file, model=model, base_url=base_url, template=template)
        reward = GRMReward(config)
    except ValueError as exc:
        raise _fail(f"error: --classes: {exc} (known: {', '.join(CLASSES)})", 2) from None
    except (GRMError, ImportError, OSError) as exc:
        raise _fail(f"error: {exc}", 2) from None
    report = _resumable(lambda progress: run_probe(reward, out, full=full, classes=names, progress=progress),
                        out, "probe.png", None if quiet else dict(total=2 * count, unit="call",
                                                                   desc="probing (k=1, both orders)"))
    if fail_above is not None:
        over = exceeding(report, fail_above)
        if over:
            rates = ", ".join(f"{c} {report['classes'][c]['false_preference_rate']:.2f}" for c in over)
            raise _fail(f"error: the judge is hackable: false preference above {fail_above:g} in {rates}", 1)


@app.command()
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Interface to bind (127.0.0.1: this machine only; 0.0.0.0: all)."),
    port: int = typer.Option(8000, help="Port."),
    api_key: Optional[str] = typer.Option(None, envvar="GRM_SERVE_API_KEY",
                                          help="Require the key as 'Authorization: Bearer <key>' or '?api_key=<key>' "
                                               "in the URL. Prefer the env GRM_SERVE_API_KEY or --api-key-file: a "
                                               "command line is visible to every user of the machine (ps)."),
    api_key_file: Optional[Path] = typer.Option(None, envvar="GRM_SERVE_API_KEY_FILE",
                                                help="Read the API key from this file (first line)."),
    batch_window_ms: float = typer.Option(15.0, help="How long single rollouts are gathered into one judge batch."),
    group_size: str = typer.Option("auto", envvar="GRM_SERVE_GROUP_SIZE",
                                   help="Rollouts per prompt (OpenRLHF's n_samples_per_prompt): a prompt's rollouts "
                                        "are held until that many arrived and judged together; 'auto' learns it; 1 "
                                        "judges each rollout alone."),
    group_wait: float = typer.Option(60.0, envvar="GRM_SERVE_GROUP_WAIT_S",
                                     help="Seconds a prompt's first rollout waits for the rest of its group before the "
                                          "group is judged with what it has."),
    max_batch: int = typer.Option(64, help="Most rollouts judged together."),
    max_items: int = typer.Option(1024, help="Most rollouts (or ScoreRequests) in one HTTP request."),
    max_body_bytes: int = typer.Option(8 * 1024 * 1024, help="Largest accepted request body."),
    request_timeout: float = typer.Option(170.0, help="Seconds before an unanswered request gets a 503 (below "
                                                      "OpenRLHF's 180 s client timeout, so its client sees the 503)."),
    no_label_reference: bool = typer.Option(False, "--no-label-reference",
                                            help="Do not show OpenRLHF labels to the judge as reference answers."),
    invalid_reward: Optional[float] = typer.Option(None, help="Reward when no judgement parses "
                                                   "(default: the bottom of the score range: a judgement that cannot be read "
                                                   "is never a prize)."),
    workers: int = typer.Option(1, help="Server processes (each with its own micro-batcher and engine client)."),
    max_queue_wait: float = typer.Option(60.0, help="Load shedding: answer 503 + Retry-After at once while a new "
                                                    "rollout would wait longer than this many seconds."),
    drain_timeout: float = typer.Option(30.0, help="Seconds in-flight requests may finish after SIGTERM/SIGINT/SIGHUP "
                                                   "(a second signal exits at once)."),
    max_connections: int = typer.Option(4096, help="Open connections beyond this get 503."),
    meta_rm: Optional[Path] = typer.Option(None, "--meta-rm", help="A local sequence-classification meta RM folder: "
                                           "guided voting for /get_reward and /v1/score, and POST /classify "
                                           "(vLLM's classification API) for remote HTTPMetaRM clients."),
    k: Optional[int] = typer.Option(None, help="Judgements sampled per request (voting)."),
    model: Optional[str] = JUDGE_MODEL,
    base_url: Optional[str] = JUDGE_URL,
    mode: Optional[str] = typer.Option(None, help="'group' (rollouts of one prompt judged together) or 'pointwise'."),
    config_file: Optional[Path] = CONFIG,
) -> None:
    """Serve the GRM over HTTP: OpenRLHF's remote reward model (POST /get_reward), POST /v1/score, /health, /metrics.

    OpenRLHF: --reward.remote_url http://HOST:PORT/get_reward (comma-separate several replicas).
    """
    try:
        from .server import ServeSettings
        from .server import serve as run

        source = ctx.get_parameter_source("api_key")  # typer may bring its own click: compare by name
        if api_key is not None and getattr(source, "name", None) == "COMMANDLINE":
            typer.echo("warning: --api-key on the command line is visible to every user of this machine (ps); "
                       "prefer GRM_SERVE_API_KEY or --api-key-file", err=True)
        settings = ServeSettings(host=host, port=port, api_key=api_key, api_key_file=api_key_file,
                                 batch_window_ms=batch_window_ms, group_size=group_size, group_wait_s=group_wait,
                                 max_batch=max_batch, max_items=max_items,
                                 max_body_bytes=max_body_bytes, request_timeout_s=request_timeout,
                                 labels_as_reference=not no_label_reference, invalid_reward=invalid_reward,
                                 workers=workers, max_queue_wait_s=max_queue_wait, drain_timeout_s=drain_timeout,
                                 max_connections=max_connections)
        if workers > 1 and settings.group_size != 1:
            typer.echo(f"warning: with --workers {workers} each worker holds its own cohorts, so a prompt's rollouts "
                       "that reach different workers are judged in separate groups; use --workers 1 (one process "
                       "judges thousands of rollouts a second) or --group-size 1", err=True)
        if meta_rm is not None and workers > 1:
            raise _fail("error: --meta-rm runs with one worker (--workers 1)", 2)
        meta = _load_meta_rm(meta_rm)
        config = GRMConfig.load(config_file, k=k, model=model, base_url=base_url, mode=mode)
        reward = GRMReward(config, meta_rm=meta)
        if workers > 1:  # worker processes rebuild both from the environment (grm_plugin.server.app_from_env)
            judge = {"GRM_K": k, "GRM_MODEL": model, "GRM_BASE_URL": base_url, "GRM_MODE": mode,
                     "GRM_CONFIG_FILE": str(config_file.resolve()) if config_file else None}
            os.environ.update({name: str(value) for name, value in judge.items() if value is not None})
            os.environ.pop("GRM_SERVE_API_KEY_FILE", None)  # the key itself is handed over, read once here
            for name, value in settings.model_dump(exclude_none=True, exclude={"api_key_file"}).items():
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
    gullible: Optional[str] = typer.Option(None, help="Probe mode: comma-separated CLASS=RATE, the chance a probe "
                                           "response of that class fools the judge (e.g. master_key=0.8)."),
    knows_probe: bool = typer.Option(False, "--knows-probe", help="Probe mode, robust: knows the probe's answers."),
) -> None:
    """Run the simulated judge (an OpenAI-compatible stand-in for a language model, for trying things out)."""
    from .testing.simulated_judge import main as run

    settings: dict[str, Any] = {"position_bias": position_bias, "knows_probe": knows_probe}
    if gullible:
        try:
            settings["gullible"] = {name.strip(): float(rate) for name, rate in
                                    (part.split("=") for part in gullible.split(",") if part.strip())}
        except ValueError:
            raise _fail(f"error: --gullible: expected CLASS=RATE[,CLASS=RATE...], got {gullible!r}", 2) from None
    run(["--port", str(port), "--noise", str(noise), "--settings", json.dumps(settings)])


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
