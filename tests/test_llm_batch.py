"""Issue 10, batch endpoints: ``--batch`` / ``--collect`` against a fake OpenAI Files +
Batches server on 127.0.0.1 (round trip, a batch still running, an expired batch with
partial results, failed lines, a restart in the middle), and ``--batch-file`` /
``--import-batch-results`` for vLLM ``run-batch``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fake_openai as fake
from _shop import build_shop, copy_shop, drafts, rows
from fake_openai import FakeOpenAI, completion
from pushgen.cli import app
from pushgen.store import open_store
from pushgen.store import llm_batches

WIDE = {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_shop(tmp_path_factory.mktemp("batchshop"), users=120, items=40)


@pytest.fixture
def shop(trained: Path, tmp_path: Path) -> Path:
    return copy_shop(trained, tmp_path)


def _live_calls(server: FakeOpenAI) -> int:
    return sum(p.rstrip("/") == "/v1/chat/completions" for p in server.paths)


def _run(runner, shop: Path, *args: str, url: str | None = None):
    base = ["draft", "-c", "b", "--db", str(shop)]
    if url:
        base += ["--channel", "push", "--generator", "llm", "--model", "m", "--base-url", url]
    res = runner.invoke(app, base + list(args), env=WIDE)
    return res, " ".join(res.output.split())


def _consented(shop: Path) -> int:
    return rows(shop, "SELECT count(*) FROM users WHERE consent_push = 1")[0][0]


def test_batch_round_trip_with_zero_live_calls(shop: Path, runner) -> None:
    with FakeOpenAI() as server:
        res, out = _run(runner, shop, "--batch", url=server.url)
        assert res.exit_code == 0, res.output
        [row] = llm_batches.rows(open_store(shop), 1)
        assert row.batch_id in server.batches and row.kind == "api"
        assert f"Submitted batch {row.batch_id} with {row.requests} request(s)" in out
        assert server.batch_calls == ["POST /v1/files", "POST /v1/batches"]
        assert _live_calls(server) == 0 and rows(shop, "SELECT count(*) FROM drafts")[0][0] == 0
        # the uploaded file is the OpenAI batch format
        lines = [json.loads(x) for x in
                 server.files[row.input_file_id]["_data"].decode().splitlines()]
        assert {x["method"] for x in lines} == {"POST"} and \
            {x["url"] for x in lines} == {"/v1/chat/completions"}
        assert all(x["body"]["model"] == "m" and x["body"]["response_format"]["type"] ==
                   "json_schema" for x in lines)

        # still running: --collect says so and drafts nothing
        res, out = _run(runner, shop, "--collect")
        assert res.exit_code == 0 and "is in_progress" in out and "Nothing drafted yet" in out

        server.finish_batches()
        res, out = _run(runner, shop, "--collect")        # no other option needed
        assert res.exit_code == 0, res.output
        assert f"Collected {row.requests} answer(s)" in out
        assert "Every prompt has its answer" in out
        made = drafts(shop, "b")
        assert len(made) == _consented(shop) and all(d["generator"] == "llm" for d in made)
        assert _live_calls(server) == 0                  # everything came from the batch
        tp = rows(shop, "SELECT sum(tokens_prompt) FROM llm_runs")[0][0]
        assert tp > 0                                     # the batch's tokens are counted

        # and again: nothing new, nothing sent, nothing drafted twice
        res, out = _run(runner, shop, "--collect")
        assert res.exit_code == 0 and len(server.batches) == 1
        assert len(drafts(shop, "b")) == len(made)


def test_expired_batch_keeps_its_answers_and_sends_the_rest(shop: Path, runner) -> None:
    with FakeOpenAI() as server:
        _run(runner, shop, "--batch", url=server.url)
        [first] = server.batches.values()
        total = first["request_counts"]["total"] or len(
            server.files[first["input_file_id"]]["_data"].splitlines())
        server.finish_batches(expire_after=total // 2)
        res, out = _run(runner, shop, "--collect")
        assert res.exit_code == 0, res.output
        waiting = _consented(shop) - len(drafts(shop, "b"))
        assert 0 < len(drafts(shop, "b")) and waiting > 0
        assert "waiting for batch answers (not written yet)" in out
        # the unanswered half went out again as a new batch
        assert len(server.batches) == 2 and "Submitted batch" in out
        second = list(server.batches.values())[1]
        resent = len(server.files[second["input_file_id"]]["_data"].splitlines())
        assert resent == total - total // 2
        server.finish_batches()
        res, out = _run(runner, shop, "--collect")
        assert len(drafts(shop, "b")) == _consented(shop) and _live_calls(server) == 0


def test_failed_lines_are_retried_then_fall_back_to_the_template(shop: Path, runner) -> None:
    with FakeOpenAI() as server:
        _run(runner, shop, "--batch", url=server.url)
        server.default = fake.server_error(500)            # every line fails in the batch
        server.enqueue(fake.echo())                        # ... but the first
        server.finish_batches()
        res, out = _run(runner, shop, "--collect")
        assert res.exit_code == 0, res.output
        assert "failed (asked again in the next batch)" in out and len(server.batches) == 2
        server.finish_batches()                            # they fail a second time
        res, out = _run(runner, shop, "--collect")
        assert res.exit_code == 0, res.output
        made = drafts(shop, "b")
        assert len(made) == _consented(shop)               # nobody waits forever
        fallbacks = [d for d in made if d["generator"] == "llm_fallback_template"]
        assert fallbacks and all("no answer after 2 batch(es)" in d["flag"] for d in fallbacks)
        assert len(server.batches) == 2 and _live_calls(server) == 0


def test_restart_after_the_batch_was_created_but_not_recorded(shop: Path, runner,
                                                               monkeypatch) -> None:
    real_update = llm_batches.update

    class Killed(BaseException):
        """The process dies: nothing in pushgen may catch it."""

    def crash(db, row_id, **values):
        if "batch_id" in values:
            raise Killed("killed right after the provider created the batch")
        return real_update(db, row_id, **values)

    with FakeOpenAI() as server:
        monkeypatch.setattr(llm_batches, "update", crash)
        with pytest.raises(Killed):
            runner.invoke(app, ["draft", "-c", "b", "--db", str(shop), "--channel", "push",
                                "--generator", "llm", "--model", "m", "--base-url", server.url,
                                "--batch"], catch_exceptions=False)
        monkeypatch.setattr(llm_batches, "update", real_update)
        assert len(server.batches) == 1 and server.batch_calls.count("POST /v1/files") == 1
        # a new process: finds the batch by its submission id, uploads and creates nothing
        res, out = _run(runner, shop, "--collect")
        assert res.exit_code == 0, res.output
        assert len(server.batches) == 1 and server.batch_calls.count("POST /v1/files") == 1
        server.finish_batches()
        res, out = _run(runner, shop, "--collect")
        assert res.exit_code == 0 and len(drafts(shop, "b")) == _consented(shop)


def test_a_batch_that_fails_validation_is_one_clear_error(shop: Path, runner) -> None:
    with FakeOpenAI() as server:
        _run(runner, shop, "--batch", url=server.url)
        server.finish_batches(fail_validation="Model 'm' is not available for batch")
        res, out = _run(runner, shop, "--collect")
        assert res.exit_code == 1 and "Traceback" not in res.output
        assert "failed: line 1: Model 'm' is not available for batch" in out
        assert rows(shop, "SELECT count(*) FROM drafts")[0][0] == 0
        # fixed on the provider's side: the next run sends the requests again
        res, out = _run(runner, shop, "--collect")
        assert res.exit_code == 0 and len(server.batches) == 2


def _run_batch_file(path: Path, out: Path, *, broken_line: int | None = None) -> int:
    """What `vllm run-batch -i path -o out` does, with the fake's echo as the model."""
    lines = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        req = json.loads(raw)
        body = completion(req["body"], json.dumps(fake.echo_fields(req["body"])))
        lines.append(json.dumps({"id": f"vllm-{n}", "custom_id": req["custom_id"],
                                 "response": {"status_code": 200, "request_id": f"r{n}",
                                              "body": body}, "error": None}))
    if broken_line:
        lines[broken_line - 1] = lines[broken_line - 1][:40]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def test_batch_file_and_import_for_vllm(shop: Path, runner, tmp_path: Path) -> None:
    requests_file, results = tmp_path / "out.jsonl", tmp_path / "results.jsonl"
    common = ["--channel", "email", "--generator", "llm", "--model", "llama3"]
    res, out = _run(runner, shop, *common, "--batch-file", str(requests_file))
    assert res.exit_code == 0, res.output
    assert f"to {requests_file}" in out and "vllm run-batch" in out
    n = _run_batch_file(requests_file, results, broken_line=2)
    bad, out = _run(runner, shop, *common, "--import-batch-results", str(results))
    assert bad.exit_code == 1 and "results.jsonl:2: not a JSON object" in out
    assert rows(shop, "SELECT count(*) FROM llm_cache")[0][0] == 0     # nothing half-read
    _run_batch_file(requests_file, results)
    res, out = _run(runner, shop, *common, "--import-batch-results", str(results))
    assert res.exit_code == 0, res.output
    assert f"Collected {n} answer(s)" in out
    consented = rows(shop, "SELECT count(*) FROM users WHERE consent_email = 1 "
                           "AND email != ''")[0][0]
    made = drafts(shop, "b")
    assert len(made) == consented and all(d["passed"] for d in made)
    again, out = _run(runner, shop, *common, "--import-batch-results", str(results))
    assert again.exit_code == 0 and f"{n} already imported" in out
    assert len(drafts(shop, "b")) == consented


def test_results_are_read_line_by_line_and_stored_in_chunks(shop: Path, runner,
                                                           tmp_path: Path, monkeypatch) -> None:
    """A results file is never read whole: chunks of IMPORT_CHUNK lines, each its own
    transaction, after a first pass that refuses a broken line anywhere (here the last)
    before anything is stored; an over-long line is refused with its own line number."""
    from pushgen.generate import batch

    monkeypatch.setattr(batch, "IMPORT_CHUNK", 2)
    requests_file, results = tmp_path / "out.jsonl", tmp_path / "results.jsonl"
    common = ["--channel", "email", "--generator", "llm", "--model", "llama3"]
    assert _run(runner, shop, *common, "--batch-file", str(requests_file))[0].exit_code == 0
    n = _run_batch_file(requests_file, results)
    good = results.read_bytes().splitlines()
    results.write_bytes(b"\n".join(good + [b'{"custom_id": "x", "broken'] ) + b"\n")
    bad, out = _run(runner, shop, *common, "--import-batch-results", str(results))
    assert bad.exit_code == 1 and f"results.jsonl:{n + 1}: not a JSON object" in out
    assert rows(shop, "SELECT count(*) FROM llm_cache")[0][0] == 0
    monkeypatch.setattr(batch, "MAX_LINE_BYTES", max(len(x) for x in good) + 10)
    long_line = b'{"custom_id": "' + b"x" * (batch.MAX_LINE_BYTES + 50) + b'"}'
    results.write_bytes(b"\n".join(good[:3] + [long_line] + good[3:]) + b"\n")
    bad, out = _run(runner, shop, *common, "--import-batch-results", str(results))
    assert bad.exit_code == 1 and "results.jsonl:4: result line over" in out
    results.write_bytes(b"\n".join(good) + b"\n")
    res, out = _run(runner, shop, *common, "--import-batch-results", str(results))
    assert res.exit_code == 0 and f"Collected {n} answer(s)" in out and n > 4
    assert rows(shop, "SELECT count(*) FROM llm_cache")[0][0] == n


@pytest.mark.parametrize("chunk", [1, 5000])
def test_a_result_repeated_in_the_file_counts_once_wherever_the_chunks_fall(
        shop: Path, runner, tmp_path: Path, monkeypatch, chunk: int) -> None:
    from pushgen.generate import batch

    monkeypatch.setattr(batch, "IMPORT_CHUNK", chunk)
    requests_file, results = tmp_path / "out.jsonl", tmp_path / "results.jsonl"
    common = ["--channel", "email", "--generator", "llm", "--model", "llama3"]
    assert _run(runner, shop, *common, "--batch-file", str(requests_file))[0].exit_code == 0
    n = _run_batch_file(requests_file, results)
    good = results.read_bytes().splitlines()
    results.write_bytes(b"\n".join(line for x in good for line in (x, x)) + b"\n")
    res, out = _run(runner, shop, *common, "--import-batch-results", str(results))
    assert res.exit_code == 0, res.output
    assert f"Collected {n} answer(s), {n} already imported" in out
    prompt, completion_ = rows(shop, "SELECT sum(tokens_prompt), sum(tokens_completion) "
                                     "FROM llm_cache")[0]
    assert f"LLM tokens prompt / completion │ {prompt:,} / {completion_:,}" in out


def test_a_downloaded_output_file_is_spooled_to_disk(shop: Path, runner, monkeypatch) -> None:
    """Response bodies past SPOOL_IN_MEMORY wait in a temporary file: the whole round trip
    works with a 64-byte spool (every body, chat and file, goes through the disk)."""
    from pushgen.generate import llm_client

    monkeypatch.setattr(llm_client, "SPOOL_IN_MEMORY", 64)
    with FakeOpenAI() as server:
        assert _run(runner, shop, "--batch", url=server.url)[0].exit_code == 0
        server.finish_batches()
        res, out = _run(runner, shop, "--collect")
        assert res.exit_code == 0, res.output
        assert len(drafts(shop, "b")) == _consented(shop) and _live_calls(server) == 0


def test_batch_options_are_checked(shop: Path, runner, tmp_path: Path) -> None:
    res, out = _run(runner, shop, "--collect")
    assert res.exit_code == 1 and "has no batch to collect" in out
    res, out = _run(runner, shop, "--batch", "--batch-file", str(tmp_path / "x.jsonl"),
                    url="http://127.0.0.1:9/v1")
    assert res.exit_code == 1 and "one of --batch, --collect" in out
    res, out = _run(runner, shop, "--batch", "--dry-run", url="http://127.0.0.1:9/v1")
    assert res.exit_code == 1 and "--dry-run calls nothing" in out


def test_forgetting_a_customer_removes_their_per_user_batch_prompts(shop: Path, runner,
                                                                     tmp_path: Path) -> None:
    from pushgen.privacy import forget_customer

    res, _ = _run(runner, shop, "--channel", "sms", "--generator", "llm", "--model", "m",
                  "--llm-mode", "per-user", "--batch-file", str(tmp_path / "b.jsonl"))
    assert res.exit_code == 0, res.output
    name, ext = rows(shop, "SELECT u.name, u.external_id FROM users u WHERE u.consent_sms = 1 "
                           "AND u.phone != '' AND u.name LIKE '% %' ORDER BY u.id LIMIT 1")[0]
    first = name.split()[0]

    def stored() -> int:
        return rows(shop, "SELECT count(*) FROM llm_batch_requests WHERE instr(request, ?) > 0",
                    (first,))[0][0]

    assert stored() > 0                     # per-user prompts carry the first name
    forget_customer(open_store(shop), ext)
    assert stored() == 0


def test_a_result_line_of_exactly_the_limit_is_read(monkeypatch) -> None:
    from pushgen.errors import InputError
    from pushgen.generate import batch

    monkeypatch.setattr(batch, "MAX_LINE_BYTES", 100)
    raw = json.dumps({"custom_id": "x" * 83}).encode()
    assert len(raw) == 100
    assert batch._result(1, raw + b"\n", "f", True, batch.Collected()) == {"custom_id": "x" * 83}
    with pytest.raises(InputError, match="result line over 100 bytes"):
        batch._result(1, raw[:-2] + b'x"}\n', "f", True, batch.Collected())
