"""The generic annotation check of emfm._settings.Settings: every config's fields are checked against
their types when it is built, and a field's own, better-worded check wins where it has one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from emfm._settings import Settings, check_number
from emfm.config import TrainConfig
from emfm.errors import ConfigError
from emfm.predict.settings import PredictSettings


@dataclass(frozen=True)
class Toy(Settings):
    count: int = 1
    rate: float | None = None
    flag: bool = False
    kind: Literal["a", "b"] = "a"
    names: tuple[str, ...] = ()
    data_root: str | None = None

    def __post_init__(self) -> None:
        check_number("count", self.count, minimum=1, integer=True)


@pytest.mark.parametrize(
    "kwargs,message",
    [({"count": "ten"}, "count must be an integer, got 'ten'"),
     ({"count": 2.5}, "count must be an integer, got 2.5"),
     ({"count": True}, "count must be an integer, got True"),
     ({"count": 0}, "count must be >= 1, got 0"),
     ({"rate": "fast"}, "rate must be a number, got 'fast'"),
     ({"flag": "maybe"}, "flag must be true or false, got 'maybe'"),
     ({"kind": "c"}, "unknown kind 'c'; use one of 'a', 'b'"),
     ({"names": [1]}, "names (each) must be a string, got 1"),
     ({"names": {"x": 1}}, "names must be a list of strings, got {'x': 1}"),
     ({"data_root": 5}, "data_root must be a path, got 5")],
)
def test_wrong_types_name_the_field_and_what_it_takes(kwargs, message):
    with pytest.raises(ConfigError) as err:
        Toy(**kwargs)
    assert str(err.value) == message


def test_good_values_pass_and_numeric_strings_become_floats():
    toy = Toy(count=3, rate="5e-4", flag=True, kind="b", names="x,y", data_root="/data")
    assert toy.rate == 5e-4 and toy.names == "x,y"  # a tuple field's own code splits a string


def test_a_fields_own_message_wins_when_it_names_the_same_field():
    with pytest.raises(ConfigError, match=r"^device must be a name such as 'cpu'"):
        PredictSettings(device=0)  # PredictSettings' own check
    with pytest.raises(ConfigError, match=r"^unknown mode 3; use one of 'resize', 'tile'"):
        PredictSettings(mode=3)


def test_a_wrong_type_is_not_reported_as_the_error_it_leads_to():
    # balance="maybe" is truthy: the config's own check would say "--balance needs two training sets"
    with pytest.raises(ConfigError, match=r"^balance must be true or false, got 'maybe'$"):
        TrainConfig(backbone="b", train="vnc", balance="maybe")
    with pytest.raises(ConfigError, match=r"^train must be a list of strings, got 5$"):
        TrainConfig(backbone="b", train=5)  # the config's own code would fail iterating it
