import pytest

from emfm.config import TrainConfig, apply_overrides
from emfm.errors import ConfigError


def test_defaults_follow_the_protocol_and_test_defaults_to_train():
    c = TrainConfig(backbone="dinov2-s", train="lucchi_pp,vnc")
    assert c.train == ("lucchi_pp", "vnc") and c.test == ("lucchi_pp", "vnc")
    assert (c.lr, c.weight_decay, c.batch_size, c.patience) == (None, 1e-4, 2, 20)  # lr None: the head's own
    lora = TrainConfig(backbone="dinov2-s", train="vnc", adapter="lora")
    assert lora.adapter_settings == {"rank": 16, "alpha": 32, "dropout": 0.0, "layout": "separate"}


def test_yaml_round_trip_with_overrides(tmp_path):
    c = TrainConfig(backbone="dinov2-s", train=["vnc"], epochs=3)
    path = tmp_path / "c.yaml"
    path.write_text(c.to_yaml())
    again = TrainConfig.from_yaml(path, ["epochs=7", "head=deconv"])
    assert again.epochs == 7 and again.head == "deconv" and again.train == ("vnc",)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"adapter": "full"}, "unknown adapter 'full'"), ({"epochs": 0}, "epochs must be >= 1, got 0"),
     ({"weight_decay": -1}, "weight_decay must be >= 0"), ({"epochs": "ten"}, "epochs must be an integer"),
     ({"max_train_slices": -1}, "max_train_slices must be >= 1"), ({"grad_clip": -0.5}, "grad_clip must be >= 0"),
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


def test_flat_adapter_keys_fold_into_the_chosen_adapters_settings():
    lora = TrainConfig.from_dict({"backbone": "b", "train": "vnc", "adapter": "lora", "lora_rank": 4, "lora_alpha": 8})
    assert lora.adapter_settings == {"rank": 4, "alpha": 8, "dropout": 0.0, "layout": "separate"}
    # A study's shared defaults may set LoRA keys; they do not apply to (and do not break) frozen runs.
    frozen = TrainConfig.from_dict({"backbone": "b", "train": "vnc", "lora_rank": 4})
    assert frozen.adapter == "frozen" and frozen.adapter_settings == {}
    nested = TrainConfig.from_dict(
        {"backbone": "b", "train": "vnc", "adapter": "lora", "adapter_settings": {"rank": 2}}
    )
    assert nested.adapter_settings["rank"] == 2
    again = TrainConfig.from_dict(nested.to_dict())
    assert again == nested


@pytest.mark.parametrize(
    "data,match",
    [({"adapter": "lora", "adapter_settings": {"rnk": 2}}, r"unknown LoRA setting key 'rnk' \(did you mean 'rank'\?\)"),
     ({"adapter": "lora", "lora_dropout": 1.5}, "lora_dropout must be >= 0 and <= 0.99"),
     ({"adapter": "lora", "lora_rank": 0}, "lora_rank must be >= 1"),
     ({"adapter": "lor"}, "unknown adapter 'lor'. Did you mean 'lora'")],
)
def test_adapter_settings_are_checked_by_the_adapter(data, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_dict({"backbone": "b", "train": "vnc", **data})


def test_a_number_typed_as_yaml_1_1_string_is_read_as_a_number():
    assert TrainConfig.from_dict({"backbone": "b", "train": "vnc", "lr": "5e-4"}).lr == 5e-4
    with pytest.raises(ConfigError, match="lr must be a number, got 'fast'"):
        TrainConfig.from_dict({"backbone": "b", "train": "vnc", "lr": "fast"})


def test_crops_per_set_is_kept_for_joint_runs_only_and_needs_crops():
    joint = TrainConfig(backbone="b", train="lucchi_pp,vnc", crop=224, crops_per_set=True)
    assert joint.crops_per_set and joint.to_dict()["crops_per_set"] is True
    single = TrainConfig(backbone="b", train="vnc", crop=224, crops_per_set=True)
    # one set: nothing to count per set, so the same run (and study run id) as without it
    assert not single.crops_per_set and single.to_dict() == TrainConfig(backbone="b", train="vnc", crop=224).to_dict()
    assert "crops_per_set" not in TrainConfig(backbone="b", train="lucchi_pp,vnc", crop=224).to_dict()
    with pytest.raises(ConfigError, match="crops_per_set counts random crops, which need crop"):
        TrainConfig(backbone="b", train="lucchi_pp,vnc", crops_per_set=True)
