"""README's Python API example runs as written, on the real sample images."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"


def test_python_api_example_runs(tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture) -> None:
    section = README.read_text().split("## Python API", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CXRLENS_DATA", str(data_root))
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["heatmaps"].shape == (1, 14, 64, 64)
    assert (tmp_path / "runs" / "api" / "eval" / "metrics.json").is_file()
    assert capsys.readouterr().out.splitlines()[-1].startswith("[(")  # the top findings printed
    assert 0 <= namespace["metrics"]["classification_mean"]["auc"] <= 1
    assert len(namespace["result"].ranked()) == 14
