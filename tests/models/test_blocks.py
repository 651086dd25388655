"""Named blocks: skip equals the block with its residual branch zeroed (the network's own forward),
reuse equals the previous output replayed by a torch forward hook; the full network is unchanged."""

from __future__ import annotations

import copy

import pytest
import torch

import diffsearch
from diffsearch.models._digits_unet import BLOCK_NAMES
from diffsearch.models.blocks import BlocksConfig

diffusers = pytest.importorskip("diffusers")
from diffsearch.models.diffusers_adapter import block_modules, install_block_hooks, remove_block_hooks  # noqa: E402

TINY = dict(sample_size=8, layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4)


def attention_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(in_channels=1, out_channels=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), **TINY).eval()


def conditional_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        in_channels=4, out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8, attention_head_dim=2, **TINY,
    ).eval()


def zero_residual_branch(block) -> None:
    """Make the block's own forward return its shortcut: the last layer of the residual branch is zeroed."""
    last = {"ResnetBlock2D": "conv2", "ResBlock": "conv2", "Attention": "to_out.0", "Transformer2DModel": "proj_out"}[type(block).__name__]
    layer = block.get_submodule(last)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)


@pytest.fixture(scope="module")
def digits():
    return diffsearch.load_model("digits")


def digits_call(model, x, config=None, t=0.5):
    return model.network(x, t, torch.arange(len(x)) % 10, config=config)


@pytest.mark.parametrize("name", BLOCK_NAMES)
def test_digits_skip_equals_the_zeroed_block(digits, name):
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    reference_unet = copy.deepcopy(digits.unet)
    zero_residual_branch(getattr(reference_unet, name))
    reference_unet.blocks.configure(None)
    expected = reference_unet(x, torch.full((4,), 499.0), torch.arange(4) % 10)
    skipped = digits_call(digits, x, BlocksConfig(modes={name: "skip"}))
    torch.testing.assert_close(skipped, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(skipped, digits_call(digits, x))


def test_digits_reuse_equals_a_replayed_output(digits):
    x1, x2 = torch.randn(2, 4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    digits.begin_sample()
    digits_call(digits, x1, BlocksConfig(), t=0.6)
    reused = digits_call(digits, x2, BlocksConfig(modes={"down1": "reuse", "mid": "reuse", "up1": "reuse"}), t=0.4)
    digits.begin_sample()
    reference = copy.deepcopy(digits.unet)
    reference.blocks.configure(None)
    captured = {}
    handles = [reference.up1.register_forward_hook(lambda m, a, out: captured.setdefault("up1", out))]
    reference(x1, torch.full((4,), 599.0), torch.arange(4) % 10)
    handles.append(reference.up1.register_forward_hook(lambda m, a, out: captured["up1"]))
    expected = reference(x2, torch.full((4,), 399.0), torch.arange(4) % 10)
    for handle in handles:
        handle.remove()
    torch.testing.assert_close(reused, expected, rtol=1e-6, atol=1e-6)


def test_reuse_without_a_cached_output_is_a_clear_error(digits):
    digits.begin_sample()
    with pytest.raises(diffsearch.DiffsearchError, match="block 'mid' is reused before any evaluation"):
        digits_call(digits, torch.zeros(1, 1, 8, 8), BlocksConfig(modes={"mid": "reuse"}))


def unet_call(unet, x, t, conditional):
    kwargs = {"encoder_hidden_states": torch.ones(len(x), 3, 8)} if conditional else {}
    return unet(x, t, **kwargs).sample


@pytest.mark.parametrize("make", [attention_unet, conditional_unet], ids=["UNet2DModel", "UNet2DConditionModel"])
def test_diffusers_skip_equals_the_zeroed_block_and_hooks_come_off(make):
    unet, conditional = make(), make is conditional_unet
    x = torch.randn(2, unet.config.in_channels, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = unet_call(unet, x, 500, conditional)
        runner = install_block_hooks(unet)
        kinds = {type(module).__name__ for module in block_modules(unet).values()}
        assert {"ResnetBlock2D"} < kinds and kinds & {"Attention", "Transformer2DModel"}
        assert torch.equal(unet_call(unet, x, 500, conditional), plain)  # no configuration: the full network
        for name, module in block_modules(unet).items():
            reference = copy.deepcopy(unet)
            remove_block_hooks(reference)
            zero_residual_branch(reference.get_submodule(name))
            runner.configure({name: "skip"})
            torch.testing.assert_close(unet_call(unet, x, 500, conditional), unet_call(reference, x, 500, conditional),
                                       rtol=1e-5, atol=1e-5, msg=name)
        runner.reset()
        remove_block_hooks(unet)
        assert all("forward" not in module.__dict__ for module in unet.modules())
        assert torch.equal(unet_call(unet, x, 500, conditional), plain)


def test_diffusers_reuse_equals_a_replayed_output():
    unet = conditional_unet()
    x1, x2 = torch.randn(2, 2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    names = [n for n in block_modules(unet) if n.startswith(("down_blocks.1", "mid_block", "up_blocks.0"))]
    reference = copy.deepcopy(unet)
    with torch.no_grad():
        runner = install_block_hooks(unet)
        runner.configure({})
        unet_call(unet, x1, 700, True)
        runner.configure(dict.fromkeys(names, "reuse"))
        reused = unet_call(unet, x2, 300, True)
        captured, handles = {}, []
        for name in names:
            module = reference.get_submodule(name)
            handles.append(module.register_forward_hook(lambda m, a, out, name=name: captured.setdefault(name, out)))
        unet_call(reference, x1, 700, True)
        for name in names:
            handles.append(reference.get_submodule(name).register_forward_hook(lambda m, a, out, name=name: captured[name]))
        expected = unet_call(reference, x2, 300, True)
    torch.testing.assert_close(reused, expected, rtol=1e-6, atol=1e-6)
