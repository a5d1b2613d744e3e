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


def test_recipes_depart_from_each_other_only_where_they_say():
    fast, proto = make_config("multitask", "fast"), make_config("multitask", "protocol")
    changed = {k for k, v in fast.to_dict().items() if proto.to_dict()[k] != v}
    assert changed == {"schedule", "lr", "warmup_epochs", "epochs", "amp"}
    assert fast.schedule == "cosine" and fast.lr == 2e-3 and fast.epochs == 40 and fast.amp
    # every recipe x experiment is a valid config, and an explicit override beats the recipe
    best = make_config("multitask", "best")
    changed = {k for k, v in best.to_dict().items() if fast.to_dict()[k] != v}
    assert changed == {"synth_per_epoch", "holdout", "head_hidden", "head_dropout1", "head_dropout2"}
    assert best.synth_per_epoch == 160000 and best.holdout == 1000 and best.head_hidden == 256
    assert best.head_dropout1 == best.head_dropout2 == 0.0
    # the default: best with fewer synthetic images per epoch in a time budget, with the convolutions' faster lr
    budget = make_config("multitask")
    assert budget == make_config("multitask", "budget")
    changed = {k for k, v in budget.to_dict().items() if best.to_dict()[k] != v}
    assert changed == {"synth_per_epoch", "minutes", "conv_lr_scale"} and budget.synth_per_epoch == 45000
    assert budget.minutes == 9 and budget.conv_lr_scale == 3
    for recipe in ("protocol", "fast", "best", "quick", "budget"):
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


def test_time_budget_needs_a_schedule_the_first_epoch_does_not_depend_on():
    with pytest.raises(ConfigError, match="minutes needs warmup_epochs >= 1"):
        make_config(overrides={"minutes": 5, "schedule": "cosine", "warmup_epochs": 0})
    with pytest.raises(ConfigError, match="minutes and relu_leak"):
        make_config("multitask", "fast", {"minutes": 5, "relu_leak": 0.1})
    with pytest.raises(ConfigError, match="minutes must be >= 0"):
        make_config(overrides={"minutes": -1})


def test_head_depth_must_be_positive():
    with pytest.raises(ConfigError, match="head_depth must be >= 1, got 0"):
        make_config(overrides={"head_depth": 0})


def test_conv_widths_are_three_channel_counts_and_the_default_is_the_fixed_backbone():
    assert make_config().fixed_backbone() and make_config().widths() == (8, 16, 32)
    wide = make_config(overrides={"conv_widths": "32,64,64"})
    assert not wide.fixed_backbone() and wide.widths() == (32, 64, 64)
    for bad in ("8,16", "8,16,0", "8,x,32", "8,16,32,64"):
        with pytest.raises(ConfigError, match="conv_widths must be three channel counts"):
            make_config(overrides={"conv_widths": bad})


def test_options_that_shape_synthetic_images_need_synthetic_images():
    # The fast recipe trains on real images only, so these options would silently do nothing there.
    for key, value in (("synth_hidden", 0.5), ("aux_anchor", 1.0)):
        with pytest.raises(ConfigError, match=f"{key} needs synthetic images"):
            make_config("multitask", "fast", {key: value})
        assert getattr(make_config("multitask", "best", {key: value}), key) == value


@pytest.mark.parametrize("key, value", [("minutes", "inf"), ("lr", "nan"), ("synth_hidden", "nan"),
                                        ("lambda_cnt", "inf")])
def test_float_keys_must_be_finite(key, value):
    with pytest.raises(ConfigError, match=f"{key} must be a finite number"):
        make_config("multitask", "best", parse_set([f"{key}={value}"]))
