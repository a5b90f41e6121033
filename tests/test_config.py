import pytest

from emfm.config import TrainConfig, apply_overrides
from emfm.errors import ConfigError


def test_defaults_follow_the_protocol_and_test_defaults_to_train():
    c = TrainConfig(backbone="dinov2-s", train="lucchi_pp,vnc")
    assert c.train == ("lucchi_pp", "vnc") and c.test == ("lucchi_pp", "vnc")
    assert (c.lr, c.weight_decay, c.batch_size, c.patience, c.lora_rank, c.lora_alpha) == (5e-5, 1e-4, 2, 20, 16, 32)


def test_yaml_round_trip_with_overrides(tmp_path):
    c = TrainConfig(backbone="dinov2-s", train=["vnc"], epochs=3)
    path = tmp_path / "c.yaml"
    path.write_text(c.to_yaml())
    again = TrainConfig.from_yaml(path, ["epochs=7", "head=deconv"])
    assert again.epochs == 7 and again.head == "deconv" and again.train == ("vnc",)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"adapter": "full"}, "unknown adapter 'full'"), ({"epochs": 0}, "epochs must be a positive"),
     ({"balance": True}, "--balance needs at least two"), ({"pairing": "sorted"}, "unknown pairing")],
)
def test_bad_values_say_the_fix(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(backbone="b", train="vnc", **kwargs)


def test_unknown_key_suggests_the_nearest():
    with pytest.raises(ConfigError, match=r"'epoch' \(did you mean 'epochs'\?\)"):
        TrainConfig.from_dict({"backbone": "b", "train": "vnc", "epoch": 3})
    with pytest.raises(ConfigError, match="not of the form key=value"):
        apply_overrides({}, ["epochs"])
