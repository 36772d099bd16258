"""The terminal table of ``grm score --table``: per input line its prompt, each response (cut to the terminal's
width, numbered from 1 in input order, rendered as the judge saw it), its reward and votes, the best one, and the first
valid critique."""

from __future__ import annotations

import json
import sys
import textwrap
from typing import Any, Sequence

from .templates import render_response
from .types import ScoreRequest, ScoreResult

Parts = list[tuple[list[int], ScoreResult]]  # the judged chunks of one input line: response indices and result

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


def print_table(scored: Sequence[tuple[ScoreRequest, dict[str, Any], Parts]], file: Any = None) -> None:
    """Print one table per input line, given its request, its ``grm score`` JSONL output (``line``, ``id``,
    ``rewards``, ``votes``, ``best``, ...) and the judged chunks it was built from: its responses (numbered from 1 in
    input order), reward, votes, the best one, and the first valid critique. Plain ASCII where the output encoding
    is not UTF-8."""
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
        if out.get("id") is not None:
            ident = out["id"] if isinstance(out["id"], str) else json.dumps(out["id"], ensure_ascii=False)
            title.append(f"  id {cut(ident, 40)}", style="bold")
        room = console.width - len(title.plain) - 2
        title.append(f"  {cut(_prompt_text(line.prompt), max(20, min(PROMPT_CHARS, room)))}")
        console.print(title, no_wrap=True, overflow="ellipsis")
        rows = []
        for i, response in enumerate(line.responses):
            reward, votes = out["rewards"][i], out["votes"][i]
            rows.append((str(i + 1), render_response(response), dash if reward is None else f"{reward:.2f}",
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

