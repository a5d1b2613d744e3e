import json

import pytest

from shapecount.config import Config, ConfigError, apply_overrides, config_from_dict, make_config, parse_set


def test_presets():
    assert make_config("classification").lambda_cnt == 0
    r = make_config("regression")
    assert r.cls_weight == 0 and r.lambda_cnt == 1 and r.resolved_monitor() == "val_rmse"
    m = make_config("multitask", "protocol")
    assert m.lambda_cnt == 5 and m.lr == 1e-3 and m.batch_size == 64 and m.schedule == "constant"
    assert m.epochs == 100 and m.patience == 15 and m.seed == 1 and m.resolved_monitor() == "val_top1"
    assert m.amp is False and m == Config(**{k: getattr(m, k) for k in ("experiment", "cls_weight", "lambda_cnt")})


def test_fast_recipe_is_the_default_and_departs_only_in_schedule_and_dtype():
    fast, proto = make_config("multitask"), make_config("multitask", "protocol")
    assert fast == make_config("multitask", "fast")
    changed = {k for k, v in fast.to_dict().items() if proto.to_dict()[k] != v}
    assert changed == {"schedule", "lr", "warmup_epochs", "epochs", "amp"}
    assert fast.schedule == "cosine" and fast.lr == 2e-3 and fast.epochs == 40 and fast.amp
    # every recipe x experiment is a valid config, and an explicit override beats the recipe
    best = make_config("multitask", "best")
    changed = {k for k, v in best.to_dict().items() if fast.to_dict()[k] != v}
    assert changed == {"synth_per_epoch", "holdout", "head_hidden", "head_dropout1", "head_dropout2"}
    assert best.synth_per_epoch == 45000 and best.holdout == 1000 and best.head_hidden == 256
    assert best.head_dropout1 == best.head_dropout2 == 0.0
    for recipe in ("protocol", "fast", "best", "quick"):
        for exp in ("classification", "regression", "multitask"):
            make_config(exp, recipe)
    assert make_config("multitask", "fast", {"amp": False}).amp is False


def test_overrides_typed_and_strict():
    cfg = make_config("multitask", overrides=parse_set(["lr=0.002", "epochs=3", "amp=true"]))
    assert cfg.lr == 0.002 and cfg.epochs == 3 and cfg.amp is True
    with pytest.raises(ConfigError, match="unknown config key 'learning_rate'"):
        make_config(overrides={"learning_rate": 1})
    with pytest.raises(ConfigError, match="epochs expects int"):
        make_config(overrides={"epochs": "ten"})
    with pytest.raises(ConfigError, match="probability"):
        make_config(overrides={"aug_hflip": 2})
    with pytest.raises(ConfigError):
        make_config("nonsense")
    with pytest.raises(ConfigError):
        parse_set(["noequals"])
    with pytest.raises(ConfigError):
        Config(cls_weight=0, lambda_cnt=0)


def test_round_trip_through_json():
    cfg = make_config("regression", "quick", {"seed": 7})
    again = config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    bad = cfg.to_dict() | {"config_version": 999}
    with pytest.raises(ConfigError, match="version"):
        config_from_dict(bad)


def test_apply_overrides_accepts_dashes():
    assert apply_overrides({}, {"lambda-cnt": "2"}) == {"lambda_cnt": 2.0}


def test_renamed_key_loads_from_old_files_and_names_the_new_one_in_overrides():
    from shapecount.config import config_from_dict

    old = make_config("multitask", "fast").to_dict()
    old["bf16"] = old.pop("amp")  # a config.json or checkpoint written before the rename
    assert config_from_dict(old).amp is True
    with pytest.raises(ConfigError, match="'bf16' is now called 'amp'; pass amp=true"):
        make_config("multitask", overrides=parse_set(["bf16=true"]))
