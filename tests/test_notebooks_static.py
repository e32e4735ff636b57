"""Every notebook: committed without outputs, paired with its jupytext text version, one plain
``parameters`` cell followed by the cell that records the parameters."""

import ast

import jupytext
import nbformat
import pytest

from nbhelpers import NOTEBOOKS, parameters_cell

NOTEBOOK_FILES = sorted(NOTEBOOKS.glob("*.ipynb"))
EXPECTED = {"00_quickstart", "spheroid_clearing", "fucci_3d", "hcs_channels", "debris_brightfield"}


def test_every_workflow_has_a_notebook():
    assert EXPECTED <= {p.stem for p in NOTEBOOK_FILES}


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_notebook_is_stripped_and_paired(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"
    text = path.with_suffix(".py")
    assert text.is_file(), f"{path.name} has no paired jupytext file {text.name}"
    paired = jupytext.read(text)
    src = [(c.cell_type, c.source.strip()) for c in nb.cells]
    src_text = [(c.cell_type, c.source.strip()) for c in paired.cells]
    assert src == src_text, f"{path.name} and {text.name} are out of sync: run `jupytext --sync {text}`"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_parameters_cell_is_plain_and_recorded(path):
    nb = nbformat.read(path, as_version=4)
    i = parameters_cell(nb)
    tree = ast.parse(nb.cells[i].source)
    names = []
    for node in tree.body:
        assert isinstance(node, ast.Assign), f"{path.name}: parameters cell may hold only assignments"
        ast.literal_eval(node.value)  # plain values only
        names += [t.id for t in node.targets]
    assert "out_root" in names, f"{path.name}: parameters cell must define out_root"
    following = "\n".join(c.source for c in nb.cells[i + 1:i + 3])
    assert "start_notebook_run" in following, f"{path.name}: the cell after the parameters must record them"
    assert nb.cells[0].cell_type == "markdown", f"{path.name}: must open with what it does"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_figures_are_shown_one_way(path):
    """Figures are shown with ``run.show`` (an image/png output), never as a cell's bare Figure value
    nor through pyplot (``plt.show()`` shows nothing under papermill's Agg backend)."""
    nb = nbformat.read(path, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert any("run.show(" in src for src in code), f"{path.name}: shows no figure with run.show"
    for src in code:
        assert src.strip(), f"{path.name}: an empty code cell (Run All leaves it unnumbered)"
        assert "pyplot" not in src and "plt." not in src, f"{path.name}: uses pyplot:\n{src}"
        assert "IPython.display import Image" not in src, f"{path.name}: shows a PNG another way:\n{src}"
        last = src.strip().splitlines()[-1].split("#")[0].strip() if src.strip() else ""
        assert last not in {"fig", "explorer.figure", "browser.figure"}, f"{path.name}: a bare Figure as value:\n{src}"


def test_workflows_draw_without_pyplot():
    """Every workflow makes its figures with ``viz.new_figure`` (one way, no pyplot state)."""
    from nbhelpers import REPO

    for module in sorted((REPO / "opsef_core" / "workflows").glob("*.py")):
        assert "matplotlib.pyplot" not in module.read_text(), f"{module.name} draws with pyplot: use viz.new_figure"
