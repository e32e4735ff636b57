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
