"""The run layer (issue 23): RunSpec is one validated description of a run, with a JSON round trip; the CLI, a batch
job and the web page all spell it and run it through `runs.execute`; concurrent page runs keep their own logs."""

import json
import sys
import threading

import pytest

import rewardsteer as rs
from rewardsteer.errors import RewardsteerError
from rewardsteer.runs import RunSpec, build, check, execute
from rewardsteer.runs.spec import spec_fields


@pytest.mark.parametrize("spec", [
    RunSpec(),
    RunSpec(model="mnist-flow", method="fk", particles=4, potential="diff", lam=3.5, max_nfe=64, seed=9),
    RunSpec(target=3, rewards=("proxies:3", "mnist-proxy-mlp-0"), heldouts=("none",), robust="light",
            aggregate="wco", standardize=True, max_seconds=2.5),
    RunSpec(model="moses-mdlm", rewards=("qed_sa_mw",), method="svdd", alpha=0.5),
    RunSpec(pipeline="some/folder", prompt="a red cube", rewards=("jpeg",), checkpoint=True, height=64, width=64),
])
def test_a_spec_survives_its_json_round_trip(spec):
    assert RunSpec.from_json(spec.to_json()) == spec
    assert RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert json.loads(spec.to_json()) == spec.to_dict()


def test_one_spec_has_many_spellings():
    want = RunSpec(target=3, rewards=("mnist-proxy-0", "mnist-proxy-1"), method="best_of_n", candidates=8,
                   max_nfe=64, max_seconds=30.0, standardize=False)
    job = {"target": "3", "rewards": "mnist-proxy-0;mnist-proxy-1", "method": "best_of_n", "candidates": 8.0,
           "budget": {"nfe": 64, "seconds": 30}, "raw": "true"}
    assert RunSpec.from_dict(job, list_separator=";") == want
    assert RunSpec.from_dict({"class": 3, "reward": ["mnist-proxy-0", "mnist-proxy-1"], "--method": "best_of_n",
                              "candidates": "8", "max-nfe": "64", "max_seconds": 30, "standardize": False}) == want
    # given keys are written even at their default (a batch job's id hashes what the job set)
    assert RunSpec.from_dict({"n": 4}).to_dict() == {"n": 4} and RunSpec().to_dict() == {}
    assert RunSpec().replace(n=2).to_argv() == ["--n", "2"]


@pytest.mark.parametrize("raw, message", [
    ({"class": 12}, "--class: 12 is not in the range 0<=x<=9"),
    ({"lr": "nan"}, "--lr must be a finite number; got nan"),
    ({"max_seconds": float("inf")}, "--max-seconds must be a finite number; got inf"),
    ({"n": 0}, "--n: 0 is not in the range 1<=x"),
    ({"n": 2.5}, "--n takes a whole number; got 2.5"),
    ({"method": "annealing"}, "--method: 'annealing' is not one of best_of_n, random_search"),
    ({"standardize": "maybe"}, "--standardize takes true or false; got 'maybe'"),
    ({"reward": [{"a": 1}]}, "--reward takes a string or a list of strings"),
    ({"budget": {"flops": 3}}, "'budget' is an object with keys from nfe, backward, reward_calls, seconds"),
    ({"colour": "red"}, "unknown option 'colour'; known: aggregate, alpha, amortized"),
    ({"class": 3, "target": 4}, "'target' repeats option 'class'"),
])
def test_bad_values_are_one_line_errors_naming_the_option(raw, message):
    with pytest.raises(RewardsteerError) as e:
        RunSpec.from_dict(raw)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_every_field_has_help_a_key_and_a_section():
    keys = [f.metadata["key"] for f in spec_fields()]
    assert len(keys) == len(set(keys)) == 39
    assert all(f.metadata["help"] and f.metadata["section"] for f in spec_fields())


def test_check_names_what_a_run_would_refuse_before_any_compute():
    for spec, message in [(RunSpec(model="mnist-gan"), "unknown generator 'mnist-gan'"),
                          (RunSpec(method="fk"), "--method fk steers a multi-step stochastic sampler"),
                          (RunSpec(rewards=("proxy:mnist-proxy-9",)), "mnist-proxy-9"),
                          (RunSpec(model="moses-mdlm", robust="none"), "--robust is an image option"),
                          (RunSpec(model="moses-mdlm", method="das"), "--method das needs a continuous generator"),
                          (RunSpec(pipeline="x", rewards=("jpeg",)), "--pipeline needs --prompt")]:
        with pytest.raises(RewardsteerError, match=message.replace("(", r"\(")):
            check(spec)


def test_build_picks_the_generator_the_method_needs():
    one = build(RunSpec(method="best_of_n", rewards=("mnist-proxy-0",), robust="none", heldouts=("none",)))
    assert one.method is rs.best_of_n and isinstance(one.generator, rs.OneStepGenerator)
    assert one.kwargs["candidates"] == 64 and one.kwargs["cond"] is None and one.heldout == {}
    particle = build(RunSpec(model="mnist-flow", method="svdd", steps=4, alpha=0.2))
    assert particle.method is rs.svdd and isinstance(particle.generator, rs.Sampler)
    assert particle.generator.num_steps == 4 and particle.kwargs["alpha"] == 0.2 and "lam" not in particle.kwargs
    assert {"mnist-judge", "mnist-judge-vit", "mnist-judge-rff", "realism", "diversity"} <= set(particle.heldout)


def test_execute_writes_what_the_cli_writes(tmp_path, run_cli):
    options = {"method": "best_of_n", "candidates": 8, "n": 2, "reward": ["mnist-proxy-0"], "robust": "none",
               "heldout": ["mnist-judge"], "seed": 3}
    result = execute(RunSpec.from_dict(options), tmp_path / "api", progress=False)
    assert set(result.files) == {"result", "grid", "trace"} and all(p.is_file() for p in result.files.values())
    cli = run_cli("run", *RunSpec.from_dict(options).to_argv(), "--out", str(tmp_path / "cli"), "--no-progress")
    assert cli.returncode == 0, cli.stderr
    api, by_cli = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("api", "cli"))
    assert api["scores"] == by_cli["scores"] and api["config"] == by_cli["config"]
    assert str(result.summary()).splitlines()[0] in cli.stdout


def test_two_page_runs_at_once_keep_their_own_summaries(tmp_path):
    from rewardsteer.serve import SteeringRun

    stdout = sys.stdout
    common = {"n": 2, "reward": ["mnist-proxy-0"], "robust": "none", "heldout": ["none"]}
    runs = [SteeringRun({**common, "method": "best_of_n", "candidates": 16, "class": 3, "seed": 1}, tmp_path / "a"),
            SteeringRun({**common, "method": "random_search", "candidates": 4, "iters": 3, "class": 5, "seed": 2},
                        tmp_path / "b")]
    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=lambda r=r: (barrier.wait(), r.start().wait(120))) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert all(r.error is None for r in runs) and sys.stdout is stdout
    first, second = (r.summary for r in runs)
    assert first[0].startswith("score (best_of_n,") and not any("random_search" in line for line in first)
    assert second[0].startswith("score (random_search,") and not any("best_of_n" in line for line in second)
    assert sum(line.startswith("cost:") for line in first) == sum(line.startswith("cost:") for line in second) == 1
    for run, method in zip(runs, ("best_of_n", "random_search")):
        assert json.loads((run.out / "result.json").read_text())["method"] == method
