"""``dataledger audit replay``'s usage errors exit 2 naming the argument or file, and its
reports land where asked (a hand-made bundle; the rule book judges hand-made events as
malformed, so the verdict here is step 6's)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from audit import cli
from tests.unit.audit import handmade as h


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="dataledger")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["audit", "replay", *argv])
    code: int = args.func(args)
    return code


@pytest.fixture
def trust(tmp_path: Path) -> Path:
    path = tmp_path / "trust.json"
    path.write_text(json.dumps(h.trust_doc()))
    return path


def test_a_missing_source_or_trust_is_a_usage_error(tmp_path: Path, trust: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as no_source:
        run("--trust", str(trust))
    assert no_source.value.code == 2
    with pytest.raises(SystemExit) as two_sources:
        run("--bundle", "b", "--database", "sqlite:///x.db", "--trust", str(trust))
    assert two_sources.value.code == 2
    capsys.readouterr()
    assert run("--bundle", str(tmp_path / "nowhere"), "--trust", str(trust)) == 2
    assert "--bundle" in capsys.readouterr().err
    assert run("--bundle", str(tmp_path), "--trust", str(tmp_path / "none.json")) == 2
    assert "--trust" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"origin": "x"}')
    assert run("--bundle", str(tmp_path), "--trust", str(tmp_path / "bad.json")) == 2
    assert run("--url", "http://127.0.0.1:9", "--trust", str(trust)) == 2
    assert "--token" in capsys.readouterr().err
    assert run("--database", f"sqlite:///{tmp_path / 'no.db'}", "--trust", str(trust)) == 2
    assert "no such file" in capsys.readouterr().err


def test_an_unreachable_platform_is_a_usage_error(trust: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--url", "http://127.0.0.1:9", "--token", "t", "--trust", str(trust)) == 2
    assert "platform http://127.0.0.1:9" in capsys.readouterr().err


def test_reports_are_written_and_the_verdict_printed(tmp_path: Path, trust: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    bundle = h.bundle(tmp_path / "b", h.events(6), [6])
    report, page = tmp_path / "r.json", tmp_path / "r.html"
    code = run("--bundle", str(bundle), "--trust", str(trust), "--json", str(report),
               "--html", str(page))
    printed = capsys.readouterr().out
    assert code == 1
    assert "FAILED: step 6 (business rules) at seq 1" in printed
    data = json.loads(report.read_text())
    assert data["failure"]["step"] == 6 and data["steps"][0]["status"] == "stopped"
    html = page.read_text()
    assert 'class="failure"' in html and "FAILED at step 6" in html
    assert run("--bundle", str(bundle), "--trust", str(trust), "--json",
               str(tmp_path / "no" / "r.json")) == 2


def test_a_trust_file_of_quorum_0_is_refused_unless_accepted_then_said_loudly(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Quorum 0: a log the operator rewrote and re-signed alone would pass. Refused (exit 2,
    one line) unless --accept-unwitnessed; then the verdict and the report say so."""
    trust = tmp_path / "trust0.json"
    trust.write_text(json.dumps({**h.trust_doc(), "quorum": 0}))
    bundle = h.bundle(tmp_path / "b", h.events(6), [h.Cut(6, witnesses=0)])
    assert run("--bundle", str(bundle), "--trust", str(trust)) == 2
    err = capsys.readouterr().err
    assert "quorum 0" in err and "--accept-unwitnessed" in err and err.count("\n") == 1
    report = tmp_path / "r.json"
    code = run("--bundle", str(bundle), "--trust", str(trust), "--accept-unwitnessed",
               "--json", str(report), "--html", str(tmp_path / "r.html"), "--quiet")
    printed = capsys.readouterr().out
    assert code == 1  # the hand-made events break the rule book (step 6)
    assert printed.splitlines()[-1].startswith("UNWITNESSED: the trust file's quorum is 0")
    data = json.loads(report.read_text())
    assert data["unwitnessed"] is True and data["notes"][0].startswith("UNWITNESSED")
    assert "UNWITNESSED: the trust file" in (tmp_path / "r.html").read_text()
