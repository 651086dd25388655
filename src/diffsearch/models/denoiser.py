"""Model wrappers: parameterisation (epsilon / sample / v_prediction), guidance and NFE counting.

A ``Denoiser`` turns any network ``fn(x, t, cond) -> tensor`` into the two predictions the solvers
integrate, noise ``eps`` and data ``x0`` (s3_spec.md 1.1). Solvers never see ``fn``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from diffsearch.errors import DiffsearchError
from diffsearch.models.noise_schedules import NoiseSchedule, noise_schedule_from

if TYPE_CHECKING:
    import torch

    from diffsearch.models.blocks import BlockRunner
    from diffsearch.models.quantize import LayerQuantizer
    from diffsearch.models.subnet import ElasticNetwork

PredictionType = Literal["epsilon", "sample", "v_prediction"]
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


class Denoiser:
    """A network plus its noise schedule and parameterisation, evaluated in continuous time t.

    Args:
        fn: the network, ``fn(x, t, cond) -> tensor``. For discrete schedules ``t`` is the
            diffusers-style timestep value (float tensor in ``[0, N-1]``), for continuous ones
            ``t`` in ``(0, 1]``; ``t`` has one entry per batch row.
        noise_schedule: a ``NoiseSchedule`` or a dict (ours with ``kind``, or diffusers-style).
        prediction_type: what ``fn`` predicts, in diffusers' words.
        data_shape: the shape of one sample (without the batch dimension).
        num_classes: number of classes of a class-conditional model (labels ``0..num_classes-1``).
        null_cond: the unconditional input used for classifier-free guidance: a scalar label
            (e.g. ``num_classes`` for label dropout) or a tensor with a leading batch dimension of 1.
        data_mean: the mean of the data, used by the ``mean_x0`` analytical first step.
        name: a display name; fingerprint: identifies the weights (for caches and artifacts).
        modules: the ``torch.nn.Module``s ``fn`` runs, moved by ``to(device)``. ``fn`` receives
            ``x`` on ``device``; a network without modules must handle the device itself.
        data_range: (low, high) of real data; samples beyond it (by a margin) are counted and, past a
            share, fail a search evaluation. No metric clamps. None: no range check.
        reference_data: a callable returning real data (images, or (images, labels)), the
            FID / KID reference. None: pass reference statistics instead.
        floor_data: a callable returning real data the reference does not hold (the real-vs-real
            noise floor of FID / KID). None: ``reference_data``.
        objective: the default objective metric (chosen by benchmarks/discrimination.py). None: by
            what the model offers (``frechet_exact`` with ``truth``, else ``fd_teacher``).
        teacher_features: the feature space of ``fd_teacher`` / ``kid_teacher``. None: ``raw``.
        truth: an object with the exact moments of the data (``moments(alpha, sigma)``), as gmm's.
        feature_extractor: the feature extractor (registered name or module) of image metrics.
        decode: maps samples to data space (a latent model's VAE decoder). None: the identity.
        blocks: the ``BlockRunner`` of a network with named, skippable blocks; plans with block
            modes need one. ``fn`` must route its blocks through it.
        quantizer: the ``LayerQuantizer`` of a network with quantisable layers (its ``layout`` declares
            their names and sizes); plans with kind ``bits`` need one. ``fn`` must call the network
            through it.
        elastic: the supernet of a once-for-all model (``ElasticNetwork``: its ``space`` of
            sub-networks and ``set_active``); plans with ``subnet`` configurations need one.

    Example:
        >>> import torch
        >>> d = Denoiser(lambda x, t, c: torch.zeros_like(x), {"beta_schedule": "linear"},
        ...              data_shape=(2,))
        >>> eps, x0 = d.predict(torch.ones(3, 2), 0.5)
        >>> d.nfe
        1
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        noise_schedule: NoiseSchedule | dict[str, Any],
        prediction_type: PredictionType = "epsilon",
        *,
        data_shape: tuple[int, ...] | None = None,
        num_classes: int | None = None,
        null_cond: Any = None,
        data_mean: torch.Tensor | None = None,
        name: str = "model",
        fingerprint: str | None = None,
        modules: tuple[Any, ...] = (),
        data_range: tuple[float, float] | None = None,
        reference_data: Callable[[], Any] | None = None,
        truth: Any = None,
        feature_extractor: Any = "raw",
        decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
        blocks: BlockRunner | None = None,
        floor_data: Callable[[], Any] | None = None,
        objective: str | None = None,
        teacher_features: str | None = None,
        quantizer: LayerQuantizer | None = None,
        elastic: ElasticNetwork | None = None,
    ) -> None:
        if prediction_type not in PREDICTION_TYPES:
            raise DiffsearchError(
                f"prediction_type {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}"
            )
        self.fn = fn
        self.noise_schedule = noise_schedule_from(noise_schedule)
        self.prediction_type = prediction_type
        self.data_shape = tuple(data_shape) if data_shape is not None else None
        self.num_classes = num_classes
        self.null_cond = null_cond
        self.data_mean = data_mean
        self.name = name
        self.fingerprint = fingerprint or f"{name}-{self.noise_schedule.fingerprint}"
        self.fingerprint_is_content_hash = fingerprint is not None  # only such models use the evaluation cache
        self.nfe = 0
        self.modules = tuple(modules)
        self.device = "cpu"
        self.data_range = tuple(data_range) if data_range is not None else None
        self.reference_data = reference_data
        self.truth = truth
        self.feature_extractor = feature_extractor
        self.decode = decode
        self.blocks = blocks
        self.floor_data = floor_data
        self.objective = objective
        self.teacher_features = teacher_features
        self.quantizer = quantizer
        self.elastic = elastic

    def to(self, device: str) -> Denoiser:
        """Move the network's modules and tensors to ``device`` (see ``resolve_device``); returns self."""
        import torch

        target = resolve_device(device)
        for module in self.modules:
            module.to(target)
        if isinstance(self.null_cond, torch.Tensor):
            self.null_cond = self.null_cond.to(target)
        if self.data_mean is not None:
            self.data_mean = self.data_mean.to(target)
        self.device = target
        return self

    def network(self, x: torch.Tensor, t: float, cond: Any = None, guidance: float | None = None, config: Any = None):
        """One network evaluation at continuous time ``t``, with classifier-free guidance.

        Guidance is ``out_u + w (out_c - out_u)``, with cond and uncond batched into one call
        (one NFE). It is applied to the raw output, which equals guiding eps or x0 (all linear).
        ``config`` (a ``NetworkConfig``, None = full network) applies to this one call.
        """
        import torch

        self.configure(config)

        t_in = torch.full((x.shape[0],), float(self.noise_schedule.model_time(t)), dtype=x.dtype, device=x.device)
        if guidance is None or cond is None:
            if guidance is not None:
                raise DiffsearchError("guidance needs a condition (cond); pass labels or embeddings")
            self.nfe += 1
            return self.fn(x, t_in, cond)
        uncond = self.unconditional(cond)
        self.nfe += 1
        out = self.fn(torch.cat([x, x]), torch.cat([t_in, t_in]), torch.cat([cond, uncond]))
        out_c, out_u = out.chunk(2)
        return out_u + guidance * (out_c - out_u)

    def unconditional(self, cond: torch.Tensor) -> torch.Tensor:
        """The null condition matching ``cond``'s batch."""
        import torch

        if self.null_cond is None:
            raise DiffsearchError(f"model {self.name!r} has no unconditional input; guidance is not available")
        if isinstance(self.null_cond, torch.Tensor) and self.null_cond.ndim == cond.ndim:
            return self.null_cond.to(cond.device, cond.dtype).expand_as(cond)
        return torch.full_like(cond, self.null_cond)

    def configure(self, config: Any) -> None:
        """The declared hook: hand one evaluation's network configuration to the network's blocks."""
        from diffsearch.models.bits import BitsConfig
        from diffsearch.models.blocks import config_modes
        from diffsearch.models.subnet import config_subnet

        bits = config if isinstance(config, BitsConfig) else None
        if self.quantizer is not None:
            self.quantizer.configure(bits)
        elif bits is not None:
            raise DiffsearchError(f"model {self.name!r} declares no quantisable layers; a plan with bitwidths cannot run on it")
        subnet = config_subnet(config)
        if self.elastic is not None:
            self.elastic.set_active(subnet)
        elif subnet is not None:
            raise DiffsearchError(f"model {self.name!r} is not a supernet; a plan with sub-networks cannot run on it")
        modes = config_modes(config)
        if self.blocks is not None:
            self.blocks.configure(modes)
        elif modes:
            raise DiffsearchError(f"model {self.name!r} declares no blocks; a plan with block modes cannot run on it")

    def begin_sample(self) -> None:
        """Start a sampling run: forget the blocks' reuse cache of the previous one."""
        if self.blocks is not None:
            self.blocks.reset()

    def predict(self, x: torch.Tensor, t: float, cond: Any = None, guidance: float | None = None, config: Any = None):
        """Noise and data predictions (eps, x0) at continuous time ``t`` (s3_spec.md 1.1)."""
        alpha = float(self.noise_schedule.alpha(t))
        sigma = float(self.noise_schedule.sigma(t))
        out = self.network(x, t, cond, guidance, config)
        if self.prediction_type == "epsilon":
            return out, (x - sigma * out) / alpha
        if self.prediction_type == "sample":
            return (x - alpha * out) / sigma, out
        return alpha * out + sigma * x, alpha * x - sigma * out

    def reset_nfe(self) -> None:
        self.nfe = 0

    def __repr__(self) -> str:
        return f"Denoiser(name={self.name!r}, prediction_type={self.prediction_type!r}, noise_schedule={self.noise_schedule!r})"


def resolve_device(spec: str) -> str:
    """``auto`` (cuda when available, else cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; a clear error otherwise."""
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = spec.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not (kind == "cuda" and index.isdigit())):
        raise DiffsearchError(f"device {spec!r} is not one of auto, cpu, cuda, cuda:N, mps")
    if kind == "cuda" and not torch.cuda.is_available():
        raise DiffsearchError(f"device {spec!r}: CUDA is not available on this machine (torch {torch.__version__}); use cpu or auto")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise DiffsearchError(f"device {spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise DiffsearchError(f"device {spec!r}: MPS is not available on this machine; use cpu or auto")
    return spec
