"""Fixtures of the napari plugin's tests: Qt offscreen, tiny random-backbone runs, a viewer.

Every test module here starts with ``pytest.importorskip`` of the ``napari`` extra, so the default
suite passes without it. Qt runs on the ``offscreen`` platform (no window appears). napari's Qt viewer
also needs an OpenGL context for its canvas, which ``offscreen`` gets only from an X display (GLX): CI
runs pytest under ``xvfb-run`` for that. Without one, :func:`viewer` is a ``ViewerModel`` (napari's
viewer minus Qt and the canvas), which is all the widget uses, so the widget's tests run either way;
only tests that need napari's window (the Plugins menu) are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _has_opengl() -> bool:
    from qtpy.QtGui import QOpenGLContext

    return bool(QOpenGLContext().create())


@pytest.fixture(scope="session")
def opengl(qapp) -> bool:
    """Whether Qt can make an OpenGL context here (napari's canvas needs one)."""
    return _has_opengl()


@pytest.fixture
def napari_window(request, opengl):
    """A real napari Viewer (napari's ``make_napari_viewer``); skipped without OpenGL."""
    if not opengl:
        pytest.skip("napari's Qt viewer needs OpenGL: run under xvfb-run (Debian package xvfb)")
    return request.getfixturevalue("make_napari_viewer")()


@pytest.fixture
def viewer(request, opengl):
    """napari's Viewer where OpenGL is available, else a ViewerModel: the widget sees the same layers API."""
    if opengl:
        return request.getfixturevalue("make_napari_viewer")()
    from napari.components import ViewerModel

    return ViewerModel()


@pytest.fixture
def run_a(tmp_path, tiny_backbone_dir) -> Path:
    from tests.predict.helpers import make_vit_run

    return make_vit_run(tmp_path / "run_a", tiny_backbone_dir, seed=0)


@pytest.fixture
def run_b(tmp_path, tiny_backbone_dir) -> Path:
    from tests.predict.helpers import make_vit_run

    return make_vit_run(tmp_path / "run_b", tiny_backbone_dir, seed=1)


@pytest.fixture
def stack():
    """A tiny EM-like stack (6, 40, 56), uint8."""
    from tests.predict.helpers import synthetic_volume

    return synthetic_volume(n=6, shape=(40, 56), seed=3)
