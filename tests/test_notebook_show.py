"""NotebookRun.show: saves a figure in the run folder and displays it as an image/png output."""

import base64

import pytest

from opsef_core.notebook import start_notebook_run
from opsef_core.viz import display_png, figure_png, new_figure


def _figure():
    fig = new_figure((2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    return fig


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    return InteractiveShell.instance()


def test_show_saves_and_displays_png(tmp_path, shell):
    from IPython.utils.capture import capture_output

    run = start_notebook_run("demo", {"out_root": str(tmp_path)})
    with capture_output() as captured:
        assert run.show(_figure(), "curve") is None  # nothing to print after the image
    png = run.folder / "curve.png"
    assert png.is_file() and "curve.png" in run.outputs
    assert len(captured.outputs) == 1
    data = captured.outputs[0].data
    shown = data["image/png"]  # base64 text, as in a notebook file
    assert base64.b64decode(shown) == png.read_bytes()  # the saved file is what is shown
    assert "<Figure size" not in data.get("text/plain", "")

    # a PNG already on disk (a run folder's montage) is shown as it is, not saved again
    with capture_output() as captured:
        run.show(png)
    assert len(captured.outputs) == 1 and "image/png" in captured.outputs[0].data
    assert run.outputs.count("curve.png") == 1


def test_show_needs_a_name_for_a_figure(tmp_path):
    run = start_notebook_run("demo", {"out_root": str(tmp_path)})
    with pytest.raises(ValueError, match="name"):
        run.show(_figure())


def test_outside_ipython_only_saves(tmp_path, monkeypatch):
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    run = start_notebook_run("demo", {"out_root": str(tmp_path)})
    run.show(_figure(), "quiet")
    assert (run.folder / "quiet.png").is_file()
    display_png(b"not shown")  # no shell: nothing happens


def test_figure_png_is_a_png():
    assert figure_png(_figure())[:8] == b"\x89PNG\r\n\x1a\n"


def test_explorer_without_widget_displays_an_image(shell):
    from IPython.display import display
    from IPython.utils.capture import capture_output

    from opsef_core.widgets import Explorer

    with capture_output() as captured:
        display(Explorer(figure=_figure()))
    assert len(captured.outputs) == 1 and "image/png" in captured.outputs[0].data
