"""load_model: registered names, plug-in modules and files, and the errors users see."""

from __future__ import annotations

import textwrap

import pytest

from diffsearch.errors import DiffsearchError
from diffsearch.models import MODELS, Denoiser, load_model, register_model

PLUGIN = textwrap.dedent(
    """
    import torch
    from diffsearch.models import Denoiser

    def make():
        return Denoiser(lambda x, t, c: torch.zeros_like(x), {"beta_schedule": "linear"}, data_shape=(2,), name="plugin")

    def not_a_model():
        return {"name": "plugin"}

    value = 3
    """
)


def test_registered_name():
    model = load_model("gmm")
    assert isinstance(model, Denoiser) and model.name == "gmm"
    assert load_model(model) is model


def test_register_model_makes_a_name_loadable(monkeypatch):
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))
    register_model("tiny_test_model", lambda: Denoiser(lambda x, t, c: x, {"kind": "vp_linear"}, name="tiny"))
    assert load_model("tiny_test_model").name == "tiny"


def test_package_module_factory(tmp_path, monkeypatch):
    package = tmp_path / "diffsearch_test_plugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = load_model("diffsearch_test_plugins.models:make")
    assert isinstance(model, Denoiser) and model.name == "plugin"


def test_file_factory(tmp_path):
    path = tmp_path / "my_model.py"
    path.write_text(PLUGIN)
    model = load_model(f"{path}:make")
    assert isinstance(model, Denoiser) and model.name == "plugin"


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(DiffsearchError) as error:
        load_model("gmn")
    message = str(error.value)
    assert "gmn" in message and "gmm" in message
    assert all(name in message for name in MODELS.names())


def test_missing_file(tmp_path):
    with pytest.raises(DiffsearchError, match="does not exist"):
        load_model(f"{tmp_path / 'absent.py'}:make")


def test_missing_module():
    with pytest.raises(DiffsearchError, match="cannot import"):
        load_model("diffsearch_no_such_module_xyz:make")


@pytest.mark.parametrize("attribute", ["absent", "value"])
def test_missing_or_non_callable_factory(tmp_path, attribute):
    path = tmp_path / "my_model.py"
    path.write_text(PLUGIN)
    with pytest.raises(DiffsearchError, match=f"no callable '{attribute}'"):
        load_model(f"{path}:{attribute}")


def test_factory_returning_a_non_denoiser(tmp_path):
    path = tmp_path / "my_model.py"
    path.write_text(PLUGIN)
    with pytest.raises(DiffsearchError, match="returned dict, not a diffsearch.Denoiser"):
        load_model(f"{path}:not_a_model")
