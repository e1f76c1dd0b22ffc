"""`ketch VERB --help` prints the verb's usage and touches no state."""

from __future__ import annotations

from pathlib import Path

import pytest

from ketch.cli.main import main


@pytest.mark.parametrize(
    "argv", [["images", "--help"], ["run", "-h"], ["network", "create", "--help"], ["build", "--help"]]
)
def test_help_prints_usage_and_makes_nothing(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    monkeypatch.setenv("KETCH_ROOT", str(root))
    monkeypatch.setenv("KETCH_RUNROOT", str(tmp_path / "run"))
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ketch {' '.join(a for a in argv if not a.startswith('-'))} [OPTIONS]")
    assert "--help, -h" in out
    assert not root.exists() and not (tmp_path / "run").exists()
