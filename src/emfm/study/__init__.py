"""Studies: a grid of runs (backbones x adapters x heads x training sets x seeds), resumable, with
one results table and one report."""

from emfm.study.config import StudyConfig
from emfm.study.grid import RunSpec, expand_grid

__all__ = ["RunSpec", "StudyConfig", "expand_grid"]
