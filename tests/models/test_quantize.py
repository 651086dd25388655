"""Fake quantisation: at most 2^b levels per channel, torchao's per-channel symmetric grid, exact packing,
the full-precision path untouched, 8 bits everywhere close to full precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import diffsearch
from diffsearch.errors import DiffsearchError
from diffsearch.models.bits import BITWIDTHS, BitsConfig
from diffsearch.models.quantize import (
    activation_qparams,
    fake_quantize_activation,
    fake_quantize_weight,
    pack_integers,
    quantize_weight,
    unpack_integers,
)


@pytest.fixture(scope="module")
def digits():
    return diffsearch.load_model("digits")


@pytest.mark.parametrize("bits", BITWIDTHS)
def test_at_most_two_to_the_b_levels_per_channel(bits):
    weight = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(bits))
    quantized = fake_quantize_weight(weight, bits)
    for channel in quantized.reshape(16, -1):
        assert len(torch.unique(channel)) <= 2**bits - 1  # the restricted symmetric grid: 2^b - 1 <= 2^b levels
    assert (quantized - weight).abs().max() <= weight.abs().amax() / (2 ** (bits - 1) - 1) / 2 + 1e-6


@pytest.mark.parametrize("bits", BITWIDTHS)
def test_matches_torchao_per_channel_symmetric(bits):
    quant_primitives = pytest.importorskip("torchao.quantization.quant_primitives")
    weight = torch.randn(12, 5, 3, 3, generator=torch.Generator().manual_seed(10 + bits))
    levels = 2 ** (bits - 1) - 1
    block = (1, *weight.shape[1:])
    scale, zero = quant_primitives.choose_qparams_affine(weight, quant_primitives.MappingType.SYMMETRIC, block, torch.int8,
                                                         quant_min=-levels, quant_max=levels)
    q_reference = quant_primitives.quantize_affine(weight, block, scale, zero, torch.int8, quant_min=-levels, quant_max=levels)
    reference = quant_primitives.dequantize_affine(q_reference, block, scale, zero, torch.int8, quant_min=-levels, quant_max=levels)
    q, scales = quantize_weight(weight, bits)
    torch.testing.assert_close(scales, scale.reshape(-1), rtol=1e-6, atol=0)
    assert (q == q_reference).float().mean() > 0.999  # ties of round-half-even may differ in the last bit
    torch.testing.assert_close(fake_quantize_weight(weight, bits), reference, rtol=0, atol=float(scales.max()) * 1.001)


@settings(max_examples=40, deadline=None)
@given(bits=st.sampled_from(BITWIDTHS), count=st.integers(1, 50), seed=st.integers(0, 1000))
def test_packing_round_trips_in_ceil_n_b_over_8_bytes(bits, count, seed):
    levels = 2 ** (bits - 1) - 1
    q = torch.from_numpy(np.random.default_rng(seed).integers(-levels, levels + 1, count).astype(np.int8))
    packed = pack_integers(q, bits)
    assert packed.nbytes == -(-count * bits // 8)
    assert torch.equal(unpack_integers(packed, bits, count), q)


def test_activation_fake_quant_is_within_half_a_step():
    x = torch.linspace(-0.5, 3.0, 1001)
    scale, zero = activation_qparams(-0.5, 3.0)
    assert 0 <= zero <= 255
    error = (fake_quantize_activation(x, -0.5, 3.0) - x).abs().max()
    assert error <= scale / 2 + 1e-6 and fake_quantize_activation(torch.zeros(1), -0.5, 3.0).item() == 0.0


def test_full_precision_path_is_bit_identical(digits):
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(8) % 10
    digits.unet.blocks.configure(None)
    direct = digits.unet(x, torch.full((8,), 499.0), labels)
    assert torch.equal(digits.network(x, 0.5, labels), direct)
    digits.network(x, 0.5, labels, config=BitsConfig(weights={"mid.conv1": 2}))
    assert torch.equal(digits.network(x, 0.5, labels), direct)  # nothing stays behind after a quantised call
    assert torch.equal(digits.unet.mid.conv1.weight, digits.quantizer.module.mid.conv1.weight)


def test_eight_bits_everywhere_is_close_and_two_bits_is_not(digits):
    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(32) % 10
    names = digits.quantizer.layout.names
    full = digits.network(x, 0.3, labels)
    eight = digits.network(x, 0.3, labels, config=BitsConfig(weights=dict.fromkeys(names, 8)))
    two = digits.network(x, 0.3, labels, config=BitsConfig(weights=dict.fromkeys(names, 2)))
    relative = lambda y: float((y - full).norm() / full.norm())  # noqa: E731
    assert relative(eight) < 0.01 < 0.2 < relative(two)


def test_unknown_layers_and_bits_are_refused(digits):
    with pytest.raises(DiffsearchError, match="unknown layer"):
        digits.network(torch.zeros(1, 1, 8, 8), 0.5, None, config=BitsConfig(weights={"nope": 4}))
    with pytest.raises(ValueError, match="not among"):
        BitsConfig(weights={"conv_in": 5})
    gmm = diffsearch.load_model("gmm")
    with pytest.raises(DiffsearchError, match="no quantisable layers"):
        gmm.network(torch.zeros(1, 8), 0.5, config=BitsConfig())


def test_digits_declares_its_layers(digits):
    layout = digits.quantizer.layout
    parameters = sum(p.numel() for p in digits.unet.parameters())
    assert layout.total_weights + layout.other_params == parameters
    assert len(layout.names) == 24 and layout.names[2] == "conv_in" and layout.names[-1] == "conv_out"
    assert layout.weight_bytes({}, activations=0) == 4 * parameters
