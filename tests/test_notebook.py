"""notebooks/gsn.ipynb runs top to bottom (the quick study, here on 400 generator-drawn images in the GSN layout, so
that it takes seconds; the real data's quick study is `make reproduce ARGS=--quick`) and shows the report's
results."""

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "gsn.ipynb"


@pytest.mark.slow
def test_notebook_runs_the_quick_study(tmp_path, monkeypatch):
    from shapecount import synth

    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    synth.write_dataset(tmp_path / "gsn", 400, seed=1)
    monkeypatch.setenv("SHAPECOUNT_DATA", str(tmp_path / "gsn"))
    monkeypatch.setenv("SHAPECOUNT_CACHE", str(tmp_path / "cache"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "reproduce done in" in text and "| multitask" in text
    assert (tmp_path / "runs" / "notebook_quick" / "report.html").is_file()
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the report's figures, inline
