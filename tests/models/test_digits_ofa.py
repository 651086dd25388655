"""digits_ofa: the sliced supernet forward equals the materialised sub-network's exactly, the
sub-network stands alone, training is bit-reproducible, and plans run sub-networks per evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffsearch
from diffsearch.errors import DiffsearchError
from diffsearch.evaluators.cost import macs_per_call, plan_cost
from diffsearch.models.digits import DigitsUNet, digits_network
from diffsearch.models.digits_ofa import (
    DigitsSubnet, DigitsSupernet, ElasticResBlock, OFATrainConfig, PhaseConfig, SubnetArchitecture,
    train_digits_ofa,
)
from diffsearch.models.subnet import SubnetConfig
from diffsearch.solvers.plan import Plan
from diffsearch.testing.models import untrained_digits_ofa, untrained_supernet


@pytest.fixture(scope="module")
def supernet():
    return untrained_supernet()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The registered builder on weights written by the training script's writer."""
    return untrained_digits_ofa(tmp_path_factory.mktemp("ofa"))


def inputs(batch: int = 6):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(batch, 1, 8, 8, generator=generator), torch.rand(batch, generator=generator) * 999, torch.arange(batch) % 11


def test_sliced_forward_equals_materialised_subnet_exactly(supernet):
    rng = np.random.default_rng(0)
    configs = [supernet.space.largest(), supernet.space.smallest()] + [supernet.space.random(rng) for _ in range(8)]
    x, t, labels = inputs()
    for config in configs:
        supernet.set_active(config)
        subnet = supernet.get_active_subnet()
        assert torch.equal(supernet(x, t, labels), subnet(x, t, labels)), config.label()
    supernet.set_active(None)


def test_materialised_subnet_stands_alone_and_rebuilds_from_its_config(supernet):
    config = SubnetConfig(depth=(1, 2, 1, 3, 2), width=(0.5, 0.75, 1.0, 0.5, 0.75), kernel=(3, 3, 3, 3, 5))
    supernet.set_active(config)
    subnet = supernet.get_active_subnet()
    supernet.set_active(None)
    assert not any(isinstance(m, ElasticResBlock) for m in subnet.modules())
    supernet_storage = {p.untyped_storage().data_ptr() for p in supernet.parameters()}
    assert not supernet_storage & {p.untyped_storage().data_ptr() for p in subnet.parameters()}
    assert [len(subnet.stages[name]) for name in subnet.stages] == list(config.depth)
    rebuilt = DigitsSubnet(SubnetArchitecture.model_validate_json(subnet.config.model_dump_json()))
    rebuilt.load_state_dict(subnet.state_dict())
    x, t, labels = inputs()
    assert torch.equal(rebuilt(x, t, labels), subnet(x, t, labels))


def test_largest_is_at_least_digits_and_the_range_is_wide(model):
    digits = diffsearch.Denoiser(digits_network(DigitsUNet()), model.noise_schedule, data_shape=(1, 8, 8), num_classes=10)
    space = model.elastic.space
    largest, smallest = macs_per_call(model, space.largest()), macs_per_call(model, space.smallest())
    assert largest == macs_per_call(model) >= macs_per_call(digits)
    assert smallest < 0.25 * largest


def test_a_subnet_outside_the_space_is_refused_naming_the_allowed_values(supernet):
    bad = SubnetConfig(depth=(1,) * 5, width=(0.3,) + (1.0,) * 4, kernel=(3,) * 5)
    with pytest.raises(DiffsearchError, match="width of stage 'down0' is 0.3; allowed: 0.5, 0.75, 1"):
        supernet.set_active(bad)
    with pytest.raises(DiffsearchError, match="kernel of stage 'down1' is 5; allowed: 3"):
        supernet.set_active(SubnetConfig(depth=(1,) * 5, width=(1.0,) * 5, kernel=(5,) * 5))


def test_training_is_bit_reproducible_with_one_thread():
    phases = (PhaseConfig(elastic=(), steps=2, learning_rate=1e-3, warmup_steps=1, random_subnets=0),
              PhaseConfig(elastic=("kernel", "depth", "width"), steps=2, learning_rate=1e-3, warmup_steps=1))
    config = OFATrainConfig(phases=phases, batch_size=4)
    first, info = train_digits_ofa(config, log_every=0)
    second, _ = train_digits_ofa(config, log_every=0)
    assert info["steps_done"] == 4
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert not torch.equal(first.state_dict()["conv_in.weight"], DigitsSupernet().state_dict()["conv_in.weight"])


def test_a_plan_runs_one_subnet_per_evaluation_as_the_materialised_networks_do(model):
    supernet = model.elastic
    schedule = diffsearch.load_schedule("preset:dpmpp_2m", nfe=4, model=model)
    space = model.elastic.space
    configs = (space.smallest(), space.smallest(), space.random(np.random.default_rng(3)), space.largest())
    plan = Plan.model_validate_json(Plan(schedule=schedule, network=configs).model_dump_json())
    x_T = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(5)
    sampled = diffsearch.sample(model, plan, x_T, labels)
    subnets = []
    for config in configs:
        supernet.set_active(config)
        subnets.append(supernet.get_active_subnet())
    supernet.set_active(None)
    calls = iter(subnets)
    replay = diffsearch.Denoiser(lambda x, t, c: digits_network(next(calls))(x, t, c), model.noise_schedule, data_shape=(1, 8, 8), num_classes=10)
    assert torch.equal(sampled, diffsearch.sample(replay, schedule, x_T, labels))
    assert plan.fingerprint != Plan(schedule=schedule).fingerprint
    assert plan.subnets() == list(dict.fromkeys(configs))
    cost = plan_cost(model, plan)
    assert cost["macs_ratio"] == pytest.approx(sum(macs_per_call(model, c) for c in configs) / (4 * macs_per_call(model)))


def test_a_subnet_plan_on_a_model_without_supernet_is_refused(gmm):
    schedule = diffsearch.load_schedule("preset:ddim", nfe=2, model=gmm)
    config = SubnetConfig(depth=(1,) * 5, width=(1.0,) * 5, kernel=(3,) * 5)
    with pytest.raises(DiffsearchError, match="not a supernet"):
        diffsearch.sample(gmm, Plan(schedule=schedule, network=(config, config)), torch.randn(2, 8))


def test_exported_subnet_weights_load_and_run_without_the_supernet(model, tmp_path):
    from diffsearch.export.subnets import export_subnet_weights, load_subnet

    schedule = diffsearch.load_schedule("preset:ddim", nfe=2, model=model)
    small = model.elastic.space.smallest()
    plan = Plan(schedule=schedule, network=(small, model.elastic.space.largest()))
    paths = export_subnet_weights(model, plan, tmp_path / "subnets")
    assert [p.name for p in paths] == [f"{small.label()}.safetensors", f"{model.elastic.space.largest().label()}.safetensors"]
    standalone = load_subnet(paths[0])
    assert isinstance(standalone, DigitsSubnet)
    x, t, labels = inputs()
    model.elastic.set_active(small)
    assert torch.equal(standalone(x, t, labels), model.elastic(x, t, labels))
    model.elastic.set_active(None)
    with pytest.raises(DiffsearchError, match="runs no sub-networks"):
        export_subnet_weights(model, Plan(schedule=schedule), tmp_path / "none")


def test_macs_per_call_are_the_materialised_subnets_own(tmp_path):
    from torch.utils.flop_counter import FlopCounterMode

    model = untrained_digits_ofa(tmp_path)  # fresh: nothing materialised yet
    small = model.elastic.space.smallest()
    counted = macs_per_call(model, small)
    model.elastic.set_active(small)
    subnet = model.elastic.get_active_subnet()
    model.elastic.set_active(None)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        subnet(torch.zeros(1, 1, 8, 8), torch.full((1,), 500.0), torch.zeros(1, dtype=torch.long))
    assert counted == counter.get_total_flops() / 2
