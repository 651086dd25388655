"""``diffusers:<dir>``: a local diffusers UNet (+ scheduler config, + optional VAE) as a Denoiser.

The only model module that imports diffusers (lazily, inside functions). Accepted layouts:

* a pipeline directory: ``model_index.json`` with ``unet/`` and ``scheduler/`` (and ``vae/`` for
  latent pipelines, whose samples ``model.decode(latents)`` turns into images);
* a bare UNet directory: ``config.json`` + weights, with ``scheduler_config.json`` beside it or in
  ``scheduler/``.

The noise schedule (``beta_schedule``, ``beta_start``, ``beta_end``, ``num_train_timesteps``) and the
prediction type come from the scheduler config. Classifier-free guidance needs a null condition:
``null_cond.safetensors`` (tensor ``null_cond``) in the directory is used when present; otherwise a
``UNet2DConditionModel`` gets a zero embedding of shape ``(1, 1, cross_attention_dim)`` and a
class-conditional ``UNet2DModel`` has no guidance.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from diffsearch.errors import DiffsearchError
from diffsearch.models.blocks import BlockRunner
from diffsearch.models.denoiser import PREDICTION_TYPES, Denoiser

UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
NULL_COND_FILE = "null_cond.safetensors"
BLOCK_PATTERN = re.compile(r"^(down_blocks\.\d+|mid_block|up_blocks\.\d+)\.(resnets|attentions)\.\d+$")


class DiffusersDenoiser(Denoiser):
    """A Denoiser around a diffusers UNet (``unet``, optional ``vae``); blocks hooked, latents decoded."""

    def __init__(self, fn: Any, noise_schedule: Any, prediction_type: Any, *, unet: Any, vae: Any = None, **options: Any) -> None:
        self.unet, self.vae = unet, vae
        blocks = install_block_hooks(unet)
        decode = self.decode_latents if vae is not None else None
        super().__init__(fn, noise_schedule, prediction_type, decode=decode, blocks=blocks, **options)

    def decode_latents(self, latents):
        """Images from latents: the VAE decoder (latents divided by its ``scaling_factor``)."""
        import torch

        with torch.no_grad():
            scale = float(getattr(self.vae.config, "scaling_factor", 1.0))
            return self.vae.decode(latents.to(self.device, self.vae.dtype) / scale).sample.cpu()


def _require_diffusers() -> None:
    try:
        import diffusers  # noqa: F401
    except ImportError as error:
        raise DiffsearchError(f"diffusers models need the diffusers extra: pip install 'diffsearch[diffusers]' ({error})") from None


def _fail(directory: Path, message: str) -> DiffsearchError:
    return DiffsearchError(f"diffusers:{directory}: {message}")


def _read_json(directory: Path, path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise _fail(directory, f"missing {path.relative_to(directory)}")
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise _fail(directory, f"{path.relative_to(directory)} is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise _fail(directory, f"{path.relative_to(directory)} is not a JSON object")
    return value


def locate(directory: Path) -> tuple[Path, Path, Path | None]:
    """(unet dir, scheduler config file, vae dir or None) of a pipeline or bare UNet directory."""
    if not directory.is_dir():
        raise _fail(directory, "directory does not exist")
    if (directory / "model_index.json").is_file():
        index = _read_json(directory, directory / "model_index.json")
        vae = directory / "vae" if "vae" in index and (directory / "vae").is_dir() else None
        return directory / "unet", directory / "scheduler" / "scheduler_config.json", vae
    if not (directory / "config.json").is_file():
        raise _fail(directory, "neither a pipeline (model_index.json) nor a UNet directory (config.json)")
    for candidate in (directory / "scheduler_config.json", directory / "scheduler" / "scheduler_config.json"):
        if candidate.is_file():
            return directory, candidate, None
    raise _fail(directory, "a bare UNet directory needs scheduler_config.json beside it or in scheduler/")


def schedule_settings(directory: Path, scheduler_file: Path) -> tuple[dict[str, Any], str]:
    """(diffusers-style noise schedule dict, prediction type) from the scheduler config."""
    config = _read_json(directory, scheduler_file)
    prediction_type = config.get("prediction_type", "epsilon")
    if prediction_type not in PREDICTION_TYPES:
        raise _fail(directory, f"prediction_type {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")
    if config.get("trained_betas") is not None:
        raise _fail(directory, "trained_betas is not supported; the scheduler config needs beta_schedule")
    keys = ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps")
    return {key: config[key] for key in keys if key in config}, prediction_type


def load_unet(directory: Path, unet_dir: Path):
    """The UNet in ``unet_dir`` (eval mode, CPU); refuses other model classes."""
    import diffusers

    class_name = _read_json(directory, unet_dir / "config.json").get("_class_name")
    if class_name not in UNET_CLASSES:
        raise _fail(directory, f"unet class {class_name!r} is not supported (allowed: {', '.join(UNET_CLASSES)})")
    try:
        return getattr(diffusers, class_name).from_pretrained(unet_dir).eval()
    except (OSError, ValueError, RuntimeError, TypeError) as error:
        raise _fail(directory, f"cannot load {class_name} from {unet_dir.name}/ ({str(error).splitlines()[0]})") from None


def load_vae(directory: Path, vae_dir: Path):
    """The AutoencoderKL in ``vae_dir`` (eval mode)."""
    import diffusers

    try:
        return diffusers.AutoencoderKL.from_pretrained(vae_dir).eval()
    except (OSError, ValueError, RuntimeError, TypeError) as error:
        raise _fail(directory, f"cannot load AutoencoderKL from vae/ ({str(error).splitlines()[0]})") from None


def network(unet) -> Any:
    """``fn(x, t, cond)`` for the UNet: class labels or encoder hidden states as ``cond``."""
    import torch

    conditional = type(unet).__name__ == "UNet2DConditionModel"

    @torch.no_grad()
    def fn(x, t, cond):
        if conditional:
            if cond is None:
                raise DiffsearchError("this UNet2DConditionModel needs cond (encoder_hidden_states)")
            return unet(x, t, encoder_hidden_states=cond).sample
        return unet(x, t, class_labels=cond).sample

    return fn


def null_condition(directory: Path, unet) -> Any:
    """The null condition for guidance: the saved tensor, else zeros (cross-attention) or None."""
    import torch

    path = directory / NULL_COND_FILE
    if path.is_file():
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        if "null_cond" not in tensors:
            raise _fail(directory, f"{NULL_COND_FILE} has no tensor named 'null_cond'")
        value = tensors["null_cond"]
        return int(value.item()) if value.ndim == 0 else value
    if type(unet).__name__ == "UNet2DConditionModel":
        return torch.zeros(1, 1, unet.config.cross_attention_dim)
    return None


def weights_fingerprint(unet_dir: Path) -> str:
    """A fast content hash: the config, and the size and first MiB of each weight file."""
    digest = hashlib.sha256((unet_dir / "config.json").read_bytes())
    for path in sorted(unet_dir.glob("*.safetensors")) + sorted(unet_dir.glob("*.bin")):
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def data_shape(unet, vae) -> tuple[int, ...]:
    """(channels, height, width) of one sample (latent for latent pipelines)."""
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    channels = unet.config.in_channels
    if vae is not None and vae.config.latent_channels != channels:
        raise DiffsearchError(f"vae latent_channels {vae.config.latent_channels} != unet in_channels {channels}")
    return channels, height, width


def load_diffusers_model(directory: str | Path) -> DiffusersDenoiser:
    """A Denoiser from a local diffusers pipeline or UNet directory (nothing is downloaded).

    Raises:
        DiffsearchError: the directory is missing, malformed, or holds an unsupported model.
    """
    _require_diffusers()
    directory = Path(directory)
    unet_dir, scheduler_file, vae_dir = locate(directory)
    noise_schedule, prediction_type = schedule_settings(directory, scheduler_file)
    unet = load_unet(directory, unet_dir)
    vae = load_vae(directory, vae_dir) if vae_dir is not None else None
    null_cond = null_condition(directory, unet)
    return DiffusersDenoiser(
        network(unet), noise_schedule, prediction_type, unet=unet, vae=vae, data_shape=data_shape(unet, vae),
        num_classes=real_classes(directory, unet, null_cond), null_cond=null_cond,
        name=directory.name or str(directory), fingerprint=weights_fingerprint(unet_dir),
        modules=tuple(module for module in (unet, vae) if module is not None),
    )


def real_classes(directory: Path, unet, null_cond: Any) -> int | None:
    """The classes to sample: ``num_class_embeds``, less the null label when one is declared (the last)."""
    embeddings = getattr(unet.config, "num_class_embeds", None)
    if embeddings is None or not isinstance(null_cond, int):
        return embeddings
    if null_cond != embeddings - 1:
        raise _fail(directory, f"null label {null_cond} must be the last class embedding ({embeddings - 1}); labels 0..{embeddings - 2} are the classes")
    return embeddings - 1


def block_modules(unet) -> dict[str, Any]:
    """The UNet's named blocks: residual blocks and (residual) attention layers, in execution order."""
    return {
        name: module for name, module in unet.named_modules()
        if BLOCK_PATTERN.match(name) and getattr(module, "residual_connection", True)
    }


def block_shortcut(module, args: tuple, kwargs: dict) -> Any:
    """What a skipped block returns: a resnet's shortcut path, the identity for attention."""
    hidden = args[0] if args else kwargs.get("hidden_states", kwargs.get("input_tensor"))
    if type(module).__name__ != "ResnetBlock2D":
        if type(module).__name__ == "Transformer2DModel":
            return _transformer_output(hidden, kwargs.get("return_dict", True))
        return hidden
    if module.upsample is not None:
        hidden = module.upsample(hidden)
    elif module.downsample is not None:
        hidden = module.downsample(hidden)
    if module.conv_shortcut is not None:
        hidden = module.conv_shortcut(hidden)
    return hidden / module.output_scale_factor


def _transformer_output(hidden, return_dict: bool) -> Any:
    if not return_dict:
        return (hidden,)
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    return Transformer2DModelOutput(sample=hidden)


def install_block_hooks(unet) -> BlockRunner:
    """Route the UNet's named blocks through one ``BlockRunner`` (idempotent: returns the installed one)."""
    if isinstance(getattr(unet, "_diffsearch_blocks", None), BlockRunner):
        return unet._diffsearch_blocks
    modules = block_modules(unet)
    runner = BlockRunner(tuple(modules))
    unet._diffsearch_previous_forwards = {name: module.__dict__.get("forward") for name, module in modules.items()}
    for name, module in modules.items():
        module.forward = _wrapped_forward(runner, name, module, module.forward)
    unet._diffsearch_blocks = runner
    return runner


def _wrapped_forward(runner: BlockRunner, name: str, module, forward):
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return runner.run(name, lambda: forward(*args, **kwargs), lambda: block_shortcut(module, args, kwargs))

    return wrapped


def remove_block_hooks(unet) -> None:
    """Undo ``install_block_hooks``: each module's ``forward`` is what it was before."""
    if getattr(unet, "_diffsearch_blocks", None) is None:
        return
    previous = unet._diffsearch_previous_forwards
    for name, module in block_modules(unet).items():
        module.__dict__.pop("forward", None)
        if previous.get(name) is not None:
            module.forward = previous[name]
    del unet._diffsearch_blocks, unet._diffsearch_previous_forwards
