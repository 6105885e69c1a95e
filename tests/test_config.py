from dataclasses import dataclass

import pytest

from storyviz.config import Config, ConfigError, pick_preset


@dataclass(frozen=True)
class Inner(Config):
    width: int = 8
    rate: float = 0.5


@dataclass(frozen=True)
class Outer(Config):
    name: str = "x"
    layers: tuple[int, ...] = (1, 2)
    flag: bool = False
    inner: Inner = Inner()
    maybe: int | None = None
    pair: tuple[float, int] = (0.5, 2)


def test_json_round_trip_is_exact():
    config = Outer(name="y", layers=(3, 4, 5), flag=True, inner=Inner(width=16, rate=0.25), maybe=7, pair=(0.1, 3))
    assert Outer.from_json(config.to_json()) == config


def test_unknown_field_is_named():
    with pytest.raises(ConfigError, match="unknown field.*'widht'"):
        Outer.from_dict({"inner": {"widht": 3}})


def test_wrong_type_names_field():
    with pytest.raises(ConfigError, match=r"Outer\.inner\.width: expected an integer"):
        Outer.from_dict({"inner": {"width": "wide"}})


def test_overrides_parse_values_and_nested_keys():
    config = Outer().with_overrides(["inner.width=32", "flag=true", "layers=[7,8]", "name=big", "maybe=null"])
    assert config == Outer(name="big", layers=(7, 8), flag=True, inner=Inner(width=32), maybe=None)
    with pytest.raises(ConfigError, match="no field 'depth'"):
        Outer().with_overrides(["depth=3"])


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        Outer().name = "z"


def test_pick_preset_lists_names():
    with pytest.raises(ConfigError, match="available: tiny, small"):
        pick_preset({"tiny": Inner(), "small": Inner()}, "huge", "toy")


def test_fixed_length_tuples_convert_each_item():
    assert Outer().with_overrides(["pair=[0.9, 4]"]).pair == (0.9, 4)
    with pytest.raises(ConfigError, match=r"Outer\.pair: expected 2 items, got 3"):
        Outer.from_dict({"pair": [1, 2, 3]})
    with pytest.raises(ConfigError, match=r"Outer\.pair\[1\]: expected an integer"):
        Outer.from_dict({"pair": [1.0, "x"]})
