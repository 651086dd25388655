"""``load_model(spec)``: a registered name, ``diffusers:<dir>``, or a plug-in ``module:factory``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from diffsearch.errors import DiffsearchError
from diffsearch.models.denoiser import Denoiser
from diffsearch.registry import Registry

MODELS: Registry[Any] = Registry("model")
MODELS.register("gmm", "diffsearch.models.gmm:build_gmm")
MODELS.register("digits", "diffsearch.models.digits:build_digits")
MODELS.register("digits_ofa", "diffsearch.models.digits_ofa:build_digits_ofa")


def register_model(name: str, factory: Any = None):
    """Register a factory ``() -> Denoiser`` under ``name`` (usable as ``--model name``)."""
    return MODELS.register(name, factory)


def load_model(spec: str | Denoiser) -> Denoiser:
    """A Denoiser from a registered name, ``diffusers:<local dir>``, or ``module:factory``.

    ``module`` is a dotted import path or a path to a ``.py`` file; ``factory`` is called without
    arguments and must return a ``Denoiser``.

    Example:
        >>> load_model("gmm").name
        'gmm'
    """
    if isinstance(spec, Denoiser):
        return spec
    if spec.startswith("diffusers:"):
        return _load_diffusers(spec.removeprefix("diffusers:"))
    if ":" in spec:
        return _call_factory(spec)
    return _check(MODELS.get(spec)(), spec)


def _load_diffusers(directory: str) -> Denoiser:
    try:
        module = importlib.import_module("diffsearch.models.diffusers_adapter")
    except ImportError as error:
        raise DiffsearchError(f"diffusers models need the diffusers extra: pip install 'diffsearch[diffusers]' ({error})") from None
    return module.load_diffusers_model(directory)


def _call_factory(spec: str) -> Denoiser:
    target, _, attribute = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise DiffsearchError(f"--model {spec}: file {target} does not exist")
        module_name = f"diffsearch_plugin_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        loader_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as error:
            raise DiffsearchError(f"--model {spec}: cannot import {target!r} ({error})") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise DiffsearchError(f"--model {spec}: {target} has no callable {attribute!r}")
    return _check(factory(), spec)


def _check(model: Any, spec: str) -> Denoiser:
    if not isinstance(model, Denoiser):
        raise DiffsearchError(f"--model {spec}: the factory returned {type(model).__name__}, not a diffsearch.Denoiser")
    return model
