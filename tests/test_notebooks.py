"""The quick-start notebook runs top to bottom (on the tiny model) and shows rich output inline."""

from pathlib import Path

import nbclient
import nbformat

NOTEBOOK = Path(__file__).parents[1] / "docs" / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes_and_renders_rich_output(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    mime = [set(output.get("data", {})) for output in outputs]
    assert any("text/markdown" in kinds for kinds in mime)  # the SAE bank's metrics table, generations
    assert any({"text/html", "image/png"} <= kinds for kinds in mime)  # the flow graph, inline
