"""A plain diffusers denoising loop, shared by the deployment tests (USFScheduler, apply_plan)."""

from __future__ import annotations

from typing import Any

import torch


def diffusers_loop(unet: Any, scheduler: Any, x_T: torch.Tensor, steps: int, cond: Any = None, null: Any = None,
                   guidance: float | None = None) -> torch.Tensor:
    """``set_timesteps(steps)``, then one UNet call and one ``scheduler.step`` per timestep, as pipelines do.

    With ``cond`` (encoder hidden states) classifier-free guidance batches cond and ``null`` into one call.
    """
    scheduler.set_timesteps(steps)
    x = x_T * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t)
        with torch.no_grad():
            if cond is None:
                out = unet(model_input, t).sample
            else:
                both = unet(torch.cat([model_input] * 2), t, encoder_hidden_states=torch.cat([cond, null.expand_as(cond)])).sample
                out_c, out_u = both.chunk(2)
                out = out_u + guidance * (out_c - out_u)
        x = scheduler.step(out, t, x).prev_sample
    return x
