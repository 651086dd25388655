"""Several objectives: the NSGA-II kernels against brute force and Optuna, the NFE-range space, a Pareto
search end to end (front, resume, export at a budget, plot) and the refused objective names."""

from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pytest
from optuna.study._multi_objective import _fast_non_domination_rank

from diffsearch.errors import DiffsearchError
from diffsearch.search import storage
from diffsearch.search.pareto import crowding_distance, dominates, non_dominated_ranks, nsga2_order, pareto_indices, spread
from diffsearch.search.runner import export_study, run_search
from diffsearch.spaces import build_space
from diffsearch.testing.spaces import SpaceContract


def brute_force_ranks(values: np.ndarray) -> np.ndarray:
    """Peel fronts by checking every pair: O(n^2) per front."""
    ranks, left, rank = np.full(len(values), -1), set(range(len(values))), 0
    while left:
        front = {i for i in left if not any(dominates(values[j], values[i]) for j in left if j != i)}
        ranks[list(front)] = rank
        left, rank = left - front, rank + 1
    return ranks


@pytest.mark.parametrize("seed", range(6))
def test_non_dominated_sort_matches_brute_force_and_optuna(seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 6, size=(40, 2 + seed % 2)).astype(float)  # small integers: ties and duplicates
    ranks = non_dominated_ranks(values)
    assert np.array_equal(ranks, brute_force_ranks(values))
    assert np.array_equal(ranks, _fast_non_domination_rank(values))


def test_crowding_distance_closed_case():
    values = np.array([[0.0, 4.0], [1.0, 3.0], [2.0, 2.0], [4.0, 0.0]])
    # f1 gaps over a span of 4: (2-0)/4, (4-1)/4; f2 gaps: (4-2)/4 for (1,3), (3-0)/4 for (2,2)
    assert np.allclose(crowding_distance(values), [math.inf, 1.0, 1.5, math.inf])
    assert nsga2_order(np.vstack([values, [[3.0, 3.0]]]))[:2] == [0, 3]  # boundaries first; the dominated point last
    assert nsga2_order(np.vstack([values, [[3.0, 3.0]]]))[-1] == 4


def test_pareto_indices_sorted_by_cost_and_spread_keeps_the_ends():
    values = np.array([[0.5, 6.0], [0.9, 4.0], [0.4, 8.0], [0.95, 6.0], [math.nan, 2.0]])
    assert pareto_indices(values) == [1, 0, 2]
    assert spread(list(range(10)), 4) == [0, 3, 6, 9]


def test_objective_vectors_and_baselines_at_each_cost():
    from diffsearch.search.pareto import objective_values, search_front
    from diffsearch.search.strategies import Record

    result, cost = {"teacher_error": 0.1, "seconds_per_sample": 0.002}, {"nfe": 4.0, "macs": 5.0}
    assert objective_values(["teacher_error", "seconds", "macs"], result, cost) == [0.1, 0.002, 5.0]
    assert math.isnan(objective_values(["fid", "nfe"], result, cost)[0])
    records = [Record(i, {}, v[0], str(i), {"origin": "initial" if i < 4 else "s"}, v)
               for i, v in enumerate([(0.5, 4.0), (0.4, 4.0), (0.2, 6.0), (0.3, 6.0), (0.35, 4.0), (0.1, 6.0)])]
    front, presets = search_front(records, 10)
    assert [r.number for r in front] == [4, 5] and [r.number for r in presets] == [1, 2]


class TestNfeRange(SpaceContract):
    budget_nfe, min_nfe = 6, 3

    @pytest.fixture(scope="class")
    def space(self, gmm):
        return build_space(gmm, {"space": "timesteps", "budget": "6nfe", "space_options": {"solver": "unipc_bh2", "min_nfe": 3}})

    def test_mutation_reaches_every_nfe_and_candidates_carry_theirs(self, space):
        rng, candidate, seen = np.random.default_rng(2), space.initial()[0][1], set()
        for _ in range(200):
            candidate = space.mutate(candidate, rng)
            assert space.decode(candidate).nfe == candidate["nfe"]
            seen.add(candidate["nfe"])
        assert seen == {3, 4, 5, 6}

    def test_initial_interleaves_every_nfe_and_costs_scale(self, space):
        initial = space.initial()
        assert [c["nfe"] for _, c in initial[:4]] == [6, 5, 4, 3] and initial[0][0].endswith("/6nfe")
        costs = [space.cost(c) for _, c in initial[:4]]
        assert [c["macs_ratio"] for c in costs] == [1.0, 5 / 6, 4 / 6, 3 / 6]
        assert costs[0]["macs"] == pytest.approx(2 * costs[3]["macs"])


def config(tmp_path, **overrides):
    base = {"model": "gmm", "space": "timesteps", "budget": "6nfe", "strategy": "evolution", "evals": 18, "search_samples": 200,
            "final_samples": 400, "final_seeds": 2, "final_front": 4, "objectives": "frechet_exact,nfe", "study": "pareto",
            "storage": f"sqlite:///{tmp_path}/s.db", "out": str(tmp_path / "best.json"), "progress": False, "space_options": {"min_nfe": 4}}
    return {**base, **overrides}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("pareto")
    return tmp_path, run_search(config(tmp_path))


def test_the_front_is_the_non_dominated_set_of_the_study(searched):
    tmp_path, result = searched
    study = storage.load_existing("pareto", f"sqlite:///{tmp_path}/s.db")
    assert len(study.directions) == 2
    optuna_front = {t.user_attrs["fingerprint"] for t in study.best_trials}  # Optuna's own Pareto front
    records = list({r.fingerprint: r for r in storage.history(study) if r.values}.values())
    ours = {records[i].fingerprint for i in pareto_indices(np.asarray([r.values for r in records]))}
    assert ours == optuna_front
    members = result.schedule.metrics["pareto"]["members"]
    vectors = np.asarray([[m["heldout"]["frechet_exact"], m["costs"]["nfe"]] for m in members])
    assert [m["heldout_front"] for m in members] == list(brute_force_ranks(vectors) == 0)
    assert all(m["schedule"]["timesteps"] and len(m["schedule"]["timesteps"]) == m["costs"]["nfe"] + 1 for m in members)
    assert any(m["preset"] for m in members) and any(not m["preset"] for m in members)


def test_export_at_a_budget_picks_the_best_member_within_it(searched, tmp_path):
    directory, result = searched
    members = result.schedule.metrics["pareto"]["members"]
    for budget, key, limit in (("4nfe", "nfe", 4), ("80%macs", "macs_ratio", 0.8)):
        path = export_study("pareto", f"sqlite:///{directory}/s.db", tmp_path / f"{budget}.json", budget=budget)
        exported = json.loads(path.read_text())
        fitting = [m for m in members if m["costs"][key] <= limit + 1e-9]
        assert exported["provenance"]["trial"] == min(fitting, key=lambda m: m["heldout"]["frechet_exact"])["trial"]
        assert len(exported["timesteps"]) - 1 <= 4
    with pytest.raises(DiffsearchError, match="no plan of the front costs at most 3nfe; the cheapest costs 4nfe"):
        export_study("pareto", f"sqlite:///{directory}/s.db", tmp_path / "none.json", budget="3nfe")


def test_show_writes_the_plot_and_the_front_table(searched, tmp_path):
    from diffsearch.search.pareto_report import pareto_tables

    directory, result = searched
    rows, written = pareto_tables(["pareto"], f"sqlite:///{directory}/s.db", str(tmp_path / "pareto.png"))
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    members = result.schedule.metrics["pareto"]["members"]
    assert [row["trial"] for row in rows if row["front"]] == [m["trial"] for m in members if m["heldout_front"]]


def test_resume_keeps_the_front_and_extends_it(tmp_path):
    run_search(config(tmp_path, evals=14, strategy="nsga2"))
    study = storage.load_existing("pareto", f"sqlite:///{tmp_path}/s.db")
    before = {t.number: t.values for t in study.trials if t.values}
    run_search(config(tmp_path, evals=18, strategy="nsga2"))
    study = storage.load_existing("pareto", f"sqlite:///{tmp_path}/s.db")
    assert {t.number: t.values for t in study.trials if t.number in before} == before
    assert len(study.directions) == 2 and storage.count_evaluations(study)["expensive"] == 18
    front = {t.number for t in study.best_trials}
    for number, values in before.items():  # an old member leaves the front only when a trial dominates it
        if number not in front:
            assert any(dominates(np.asarray(t.values), np.asarray(values)) for t in study.trials if t.values)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"objectives": "frechet_exact,flops"}, "unknown cost 'flops' in objectives; valid costs: macs, seconds, nfe"),
        ({"objectives": "nfe,frechet_exact"}, "the first objective is the quality metric, not the cost 'nfe'"),
        ({"objectives": "frechet_exact,nfe,nfe"}, "at most 2 distinct costs"),
        ({"objectives": "fid_inf,nfe"}, "unknown metric 'fid_inf'"),
        ({"objectives": "frechet_exact,nfe", "strategy": "s3"}, "strategy s3 searches one objective; with several objectives use"),
        ({"objectives": "frechet_exact,nfe", "metric": "fid"}, "metric fid and objectives frechet_exact,nfe disagree"),
        ({"objectives": None}, "space option min_nfe needs several objectives"),
    ],
)
def test_bad_objectives_are_refused_before_any_work(tmp_path, overrides, message):
    with pytest.raises(DiffsearchError, match=message.replace("(", "\\(").replace(")", "\\)")):
        run_search(config(tmp_path, **overrides))
    assert not (tmp_path / "s.db").exists()


def test_one_objective_is_the_single_objective_search(tmp_path):
    result = run_search(config(tmp_path, objectives=["frechet_exact"], evals=4, space_options={}, study=None,
                               storage=f"sqlite:///{tmp_path}/one.db"))
    study = optuna.load_study(study_name=result.study, storage=f"sqlite:///{tmp_path}/one.db")
    assert len(study.directions) == 1 and "pareto" not in result.schedule.metrics and result.schedule.nfe == 6
    assert result.study == "timesteps-dpmpp_2m-6nfe-gmm-evolution-seed0"


def test_command_line_refuses_a_bad_objective_in_one_line(tmp_path, capsys):
    from diffsearch.cli import main

    with pytest.raises(SystemExit) as exit_status:
        main(["run", "--model", "gmm", "--objectives", "frechet_exact,flops", "--storage", f"sqlite:///{tmp_path}/c.db"])
    assert exit_status.value.code == 2 and capsys.readouterr().err.strip().splitlines() == [
        "error: config: unknown cost 'flops' in objectives; valid costs: macs, seconds, nfe (after one metric)"]


def test_command_line_show_plot_and_export_budget(searched, tmp_path):
    from typer.testing import CliRunner

    from diffsearch.cli import app

    directory, _ = searched
    url = f"sqlite:///{directory}/s.db"
    shown = CliRunner().invoke(app, ["show", "--study", "pareto", "--storage", url, "--plot", str(tmp_path / "p.png"), "--plots", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "Pareto front of pareto" in shown.output and (tmp_path / "p.png").is_file()
    exported = CliRunner().invoke(app, ["export", "--study", "pareto", "--storage", url, "--budget", "5nfe", "-o", str(tmp_path / "b.json")])
    assert exported.exit_code == 0, exported.output
    assert len(json.loads((tmp_path / "b.json").read_text())["timesteps"]) <= 6


def test_the_service_job_config_takes_objectives(tmp_path):
    from diffsearch.service.jobs import service_config

    config = service_config({"model": "gmm", "budget": "6nfe", "objectives": "frechet_exact,macs"}, f"sqlite:///{tmp_path}/j.db", tmp_path)
    assert config.pareto and config.objectives == ["frechet_exact", "macs"] and config.strategy == "evolution" and config.study_name().endswith("-frechet_exact-macs-seed0")
    assert config.space_settings()["space_options"]["min_nfe"] == 3
    with pytest.raises(DiffsearchError, match="strategy s3 searches one objective"):
        service_config({"model": "gmm", "objectives": "frechet_exact,macs", "strategy": "s3"}, f"sqlite:///{tmp_path}/j.db", tmp_path)
