"""``aligns:`` in a study: each method on every joint cell; single-set runs once, whatever the list."""

from __future__ import annotations

import pytest

from emfm.errors import ConfigError
from emfm.study.config import StudyConfig
from emfm.study.grid import expand_grid


def study(**kw):
    return StudyConfig.from_dict({"name": "s", "backbones": ["dinov2-s"], "train_sets": ["a", "b", "a,b"],
                                  "test_sets": ["a", "b"], "seeds": [0], "aligns": ["none", "mixed", "domain-bn"],
                                  **kw})


def test_aligns_multiply_joint_cells_only():
    specs = expand_grid(study())
    joint = [s for s in specs if len(s.config.train) == 2]
    assert sorted(s.config.align for s in joint) == ["domain-bn", "mixed", "none"]
    assert [s.config.align for s in specs if len(s.config.train) == 1] == ["none", "none"]
    assert sum("align-domain-bn" in s.run_id for s in specs) == 1


def test_an_unknown_method_names_the_nearest():
    with pytest.raises(ConfigError, match="Did you mean 'domain-bn'"):
        study(aligns=["domain_bn"])
