import pytest

from gantrack.config import PRESETS, Config, apply_overrides, parse_set, preset, resolve
from gantrack.errors import GantrackError


def test_presets_are_valid_configs():
    for name in PRESETS:
        cfg = resolve(name)
        assert isinstance(cfg, Config)
    assert preset("mode-collapse").latent_dim == 1
    assert preset("convergence-failure").schedule == "joint"
    a = preset("convergence-failure-adam")
    assert (a.lr, a.beta1) == (1e-3, 0.9)
    s = preset("stable")
    assert (s.lr, s.beta1, s.latent_dim, s.batch_size, s.epochs) == (2e-4, 0.5, 50, 128, 10)


def test_overrides_from_strings_and_toml(tmp_path):
    cfg = resolve("stable", overrides=parse_set(["lr=1e-3", "probes=false", "steps=7", "loss=hinge"]))
    assert cfg.lr == 1e-3 and cfg.probes is False and cfg.steps == 7 and cfg.loss == "hinge"
    (tmp_path / "c.toml").write_text('preset = "mode-collapse"\nseed = 5\nwidth = 0.5\n')
    cfg = resolve(None, str(tmp_path / "c.toml"), {"seed": "6"})
    assert cfg.latent_dim == 1 and cfg.seed == 6 and cfg.width == 0.5


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"loss": "vanilla"}, "unknown loss"),
        ({"batch_size": "0"}, "batch_size must be"),
        ({"latent_dim": "-3"}, "latent_dim must be positive"),
        ({"lr": "nan"}, "lr must be a positive"),
        ({"lr": "abc"}, "expected float"),
        ({"learning_rate": "1"}, "unknown config key"),
        ({"batch_size": "100000000"}, "absurdly large"),
        ({"dataset": "mnist"}, "needs data_path"),
        ({"model": "mlp"}, "does not fit"),
    ],
)
def test_bad_values_are_one_line_errors(overrides, match):
    with pytest.raises(GantrackError, match=match):
        resolve("stable", overrides=overrides)


def test_bad_files_and_presets(tmp_path):
    with pytest.raises(GantrackError, match="unknown preset"):
        resolve("stabel")
    with pytest.raises(GantrackError, match="not found"):
        resolve(None, str(tmp_path / "none.toml"))
    (tmp_path / "bad.toml").write_text("seed = = 3")
    with pytest.raises(GantrackError, match="not valid TOML"):
        resolve(None, str(tmp_path / "bad.toml"))
    (tmp_path / "typed.toml").write_text("seed = 'one'")
    with pytest.raises(GantrackError, match="seed: expected int"):
        resolve(None, str(tmp_path / "typed.toml"))
    with pytest.raises(GantrackError, match="key=value"):
        parse_set(["lr"])


def test_config_hash_ignores_presentation_only_fields():
    a = Config()
    assert a.config_hash() == apply_overrides(a, {"experiment": "other", "flush_every": 5}).config_hash()
    assert a.config_hash() != apply_overrides(a, {"seed": 2}).config_hash()


def test_wrong_typed_values_given_to_the_api_are_one_line_errors():
    from gantrack.config import validate

    for change, match in (
        (dict(steps="3000"), "steps: expected int, got '3000'"),
        (dict(lr="1e-3"), "lr: expected float, got '1e-3'"),
        (dict(probes=1), "probes: expected bool, got 1"),
        (dict(batch_size=True), "batch_size: expected int, got True"),
    ):
        with pytest.raises(GantrackError, match=match):
            validate(preset("stable").replace(**change))
    assert validate(preset("stable").replace(lr=1)).lr == 1  # an int where a float goes is a number


def test_ring_preset_players_have_three_hidden_layers():
    from torch import nn

    from gantrack.models import build

    D, G = build(preset("ring-2d"), data_dim=2)
    assert [m.out_features for m in D.modules() if isinstance(m, nn.Linear)] == [128, 128, 128, 1]
    assert [m.out_features for m in G.modules() if isinstance(m, nn.Linear)] == [128, 128, 128, 2]
    D1, _ = build(preset("quadratic-1d"), data_dim=2)  # chapter 6's one hidden layer stays the default
    assert sum(isinstance(m, nn.Linear) for m in D1.modules()) == 2
    assert preset("ring-2d").config_hash() != preset("ring-2d").replace(mlp_layers=1).config_hash()
    with pytest.raises(GantrackError, match="mlp_layers must be positive"):
        resolve("ring-2d", overrides={"mlp_layers": "0"})
