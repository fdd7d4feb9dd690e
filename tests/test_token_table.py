"""The VMGAHP_ERR_* tokens are one table (vmgahp.protocol.tokens.TABLE): the
constants, the hold/requeue decision, the hints ``vmgahp run`` prints and the
table in docs/admin.md all come from it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from vmgahp.protocol import tokens
from vmgahp.run.starter import explain_start_failure

TOP = Path(__file__).resolve().parents[1]
SCRIPT = TOP / "scripts" / "gen-token-table.py"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_token_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_admin_doc_table_is_the_token_table() -> None:
    gen = _generator()
    text = (TOP / "docs" / "admin.md").read_text()
    assert gen.render(text) == text, "docs/admin.md's token table is out of date: run scripts/gen-token-table.py"
    block = text[text.index(gen.BEGIN):text.index(gen.END)]
    rows = [line for line in block.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == [token.wire for token in tokens.TABLE]
    for row, token in zip(rows, tokens.TABLE, strict=True):
        assert (f"(subcode {token.hold_subcode})" in row) == token.holds, row
        assert row.rstrip(" |").endswith(token.hint), row


def test_the_script_checks_and_rewrites(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    gen = _generator()
    stale = f"before\n{gen.BEGIN}\n| old | row |\n{gen.END}\nafter\n"
    fresh = gen.render(stale)
    assert fresh.startswith(f"before\n{gen.BEGIN}\n") and fresh.endswith(f"{gen.END}\nafter\n")
    assert "| old | row |" not in fresh and gen.table() in fresh
    with pytest.raises(SystemExit):
        gen.render("no markers here\n")


def test_every_token_constant_is_in_the_table_once() -> None:
    constants = {value for name, value in vars(tokens).items()
                 if name.isupper() and isinstance(value, str) and value.startswith("VMGAHP_ERR_") and name != "_P"}
    wires = [token.wire for token in tokens.TABLE]
    assert len(wires) == len(set(wires))
    assert constants == set(wires)
    assert all(token.hint for token in tokens.TABLE)


def test_hold_subcodes_are_the_starters_order() -> None:
    holds = [token for token in tokens.TABLE if token.holds]
    assert [token.hold_subcode for token in holds] == list(range(len(holds))) == list(range(13))
    assert tuple(token.wire for token in holds) == tokens.HOLD_TOKENS


@pytest.mark.parametrize("token", tokens.TABLE, ids=lambda token: token.wire)
def test_vmgahp_run_explains_each_token_from_the_table(token: tokens.Token) -> None:
    held, text = explain_start_failure(token.wire)
    assert held == token.holds
    assert text.startswith(f"{token.hint}; on a pool the job would be ")
    if token.holds:
        assert f"HELD (HoldReasonCode 6 = FailedToCreateProcess, subcode {token.hold_subcode}," in text
    else:
        assert "REQUEUED" in text and "HasVM = false" in text


def test_an_unknown_token_is_a_requeue_without_a_hint() -> None:
    held, text = explain_start_failure("VMGAHP_ERR_SOMETHING_NEW")
    assert not held and text.startswith("on a pool the job would be REQUEUED")
