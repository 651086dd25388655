"""Deploy a searched schedule in diffusers: swap ``pipe.scheduler`` for a ``USFScheduler`` (runs offline)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

import diffsearch
from diffsearch.export.diffusers import USFScheduler, to_diffusers_timesteps

workdir = Path(tempfile.mkdtemp())

# 1. A local diffusers pipeline (here a tiny random one; use your own saved pipeline directory).
torch.set_num_threads(1)  # tiny model: threads only add overhead
torch.manual_seed(0)
unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
                   down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, norm_num_groups=4)
DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(workdir / "pipe")

# 2. A schedule artifact: normally `search run ...` writes best.json; here a 5-NFE UniPC preset.
model = diffsearch.load_model(f"diffusers:{workdir / 'pipe'}")
schedule = diffsearch.load_schedule("preset:unipc_bh2", nfe=5, model=model)
diffsearch.save_schedule(schedule, workdir / "best.json")

# 3. Swap the scheduler; the fingerprint check refuses artifacts searched for another noise schedule.
pipe = DDPMPipeline.from_pretrained(workdir / "pipe")
pipe.scheduler = USFScheduler.from_artifact(workdir / "best.json", scheduler_config=pipe.scheduler.config)
images = pipe(batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(0), output_type="np").images
print("images:", images.shape)

# The pipeline's samples are exactly diffsearch.sample's on the same noise.
x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
reference = (diffsearch.sample(model, schedule, x_T) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
print("max difference to diffsearch.sample:", float(abs(images - reference).max()))

# 4. Timesteps-only results on the integer grid also run on stock schedulers that take timesteps=.
grid = diffsearch.load_schedule("preset:dpmpp_2m", nfe=5, model=model, spacing="linspace")
print(to_diffusers_timesteps(grid, "DPMSolverMultistepScheduler"))
