"""LAHCSampler: replayed state, parallel and resumed chains, moves, repeats, first trial, and the
rules of each variant (textbook, paper-code)."""

from __future__ import annotations

import math
import random
import textwrap
import warnings
from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from safs_optuna.samplers import LAHCSampler
from safs_optuna.samplers.lahc import VARIANTS
from safs_optuna.samplers.lahc._chain import replay as _replay, value_score as _value_score

optuna.logging.set_verbosity(optuna.logging.WARNING)

OPS = ["relu", "tanh", "swish", "gelu", "elu"]
SCORE = {"relu": 0.0, "tanh": 0.3, "swish": 1.0, "gelu": 0.8, "elu": 0.5}
SITES = [f"block{i}.act" for i in range(4)]


def suggest(trial: optuna.Trial, sites: list[str] = SITES, ops: list[str] = OPS) -> dict[str, Any]:
    return {f"{s}.left": trial.suggest_categorical(f"{s}.left", ops) for s in sites}


def score(params: dict[str, Any]) -> float:
    # Separable, with a site weight so that different configurations rarely tie.
    return sum(SCORE[v] * (1 + 0.1 * i) for i, (_, v) in enumerate(sorted(params.items())))


def make_study(storage: Any, direction: str = "maximize", **sampler_kwargs: Any) -> optuna.Study:
    sampler_kwargs.setdefault("seed", 0)
    return optuna.create_study(
        storage=storage,
        study_name="lahc",
        load_if_exists=True,
        direction=direction,
        sampler=LAHCSampler(**sampler_kwargs),
    )


def run(study: optuna.Study, n: int, objective: Callable[[optuna.Trial], float] | None = None) -> None:
    objective = objective or (lambda t: score(suggest(t)))
    for _ in range(n):
        trial = study.ask()
        study.tell(trial, objective(trial))


def chain(study: optuna.Study) -> list[tuple[dict[str, Any], float | None]]:
    return [(t.params, t.value) for t in study.trials if t.state == TrialState.COMPLETE]


def changed(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(n for n in a if a[n] != b[n])


def is_swap(parent: dict[str, Any], child: dict[str, Any]) -> bool:
    diff = changed(parent, child)
    sites = sorted({n.rpartition(".")[0] for n in diff})
    if len(sites) != 2:
        return False
    a, b = sites
    return all(
        child[f"{a}.{r}"] == parent[f"{b}.{r}"] and child[f"{b}.{r}"] == parent[f"{a}.{r}"]
        for r in {n.rpartition(".")[2] for n in parent if n.startswith(a + ".")}
    )


def sqlite(tmp_path: Any, name: str = "lahc") -> str:
    return f"sqlite:///{tmp_path / name}.db"


# ----------------------------------------------------------------------------- replay & workers


def test_same_seed_same_chain_and_seed_matters() -> None:
    a, b, c = (make_study(optuna.storages.InMemoryStorage(), seed=s) for s in (3, 3, 4))
    for study in (a, b, c):
        run(study, 20)
    assert chain(a) == chain(b)
    assert chain(a) != chain(c)
    # every proposal is a new configuration while unseen neighbours exist
    keys = [tuple(sorted(p.items())) for p, _ in chain(a)]
    assert len(set(keys)) == len(keys)


def test_interleaved_processes_continue_one_chain(tmp_path: Any) -> None:
    reference = make_study(optuna.storages.InMemoryStorage())
    run(reference, 20)
    url = sqlite(tmp_path)
    # two "processes": separate study objects and sampler instances on one storage
    workers = [make_study(url), make_study(url)]
    for i in range(20):
        run(workers[i % 2], 1)
    assert chain(workers[0]) == chain(reference)


def test_overlapping_asks_never_duplicate(tmp_path: Any) -> None:
    def overlapped(url: str) -> list[tuple[dict[str, Any], float | None]]:
        a, b = make_study(url), make_study(url)
        for _ in range(12):
            ta = a.ask()
            suggest(ta)
            tb = b.ask()  # asked while ta is RUNNING
            suggest(tb)
            a.tell(ta, score(ta.params))
            b.tell(tb, score(tb.params))
        return chain(a)

    trials = overlapped(sqlite(tmp_path, "one"))
    keys = [tuple(sorted(p.items())) for p, _ in trials]
    assert len(trials) == 24
    assert len(set(keys)) == len(keys)
    # the second worker did not repeat the initial (still running) configuration but moved from it
    assert trials[0][0] == {f"{s}.left": "relu" for s in SITES}
    assert len(changed(trials[0][0], trials[1][0])) == 1
    assert overlapped(sqlite(tmp_path, "two")) == trials


def test_a_trial_asked_before_the_first_suggests_waits_for_it(tmp_path: Any) -> None:
    # Two workers start together: the second trial is asked while the first has no parameters
    # yet. It waits for them and moves away from them instead of repeating the initial ones.
    import threading
    import time

    url = sqlite(tmp_path)
    a, b = make_study(url), make_study(url)
    first = a.ask()
    timer = threading.Timer(0.3, lambda: suggest(first))
    timer.start()
    start = time.monotonic()
    second = b.ask()
    params = suggest(second)
    waited = time.monotonic() - start
    timer.join()
    assert first.params == {f"{s}.left": "relu" for s in SITES}
    assert waited >= 0.25
    assert len(changed(first.params, params)) in (1, 2)  # one node changed, or a swap


def test_a_trial_beside_a_silent_first_one_starts_at_random(tmp_path: Any, monkeypatch: Any) -> None:
    # The first trial never suggests: after the wait the second draws a random configuration,
    # a different one per trial, instead of repeating the initial one.
    from safs_optuna.samplers import claims

    monkeypatch.setattr(claims, "_ANCHOR_WAIT_S", 0.05)
    study = make_study(sqlite(tmp_path))
    study.ask()
    drawn = [suggest(study.ask()) for _ in range(3)]
    initial = {f"{s}.left": "relu" for s in SITES}
    assert all(params != initial for params in drawn)
    assert len({tuple(sorted(p.items())) for p in drawn}) == 3


def test_restart_continues_the_same_chain(tmp_path: Any) -> None:
    reference = make_study(optuna.storages.InMemoryStorage())
    run(reference, 20)
    url = sqlite(tmp_path)
    run(make_study(url), 7)
    run(make_study(url), 13)  # "restarted": new study object, new sampler, same seed and storage
    assert chain(make_study(url)) == chain(reference)


def test_killed_trial_retry_continues_the_same_chain(tmp_path: Any) -> None:
    reference = make_study(optuna.storages.InMemoryStorage())
    run(reference, 12)
    url = sqlite(tmp_path)
    study = make_study(url)
    run(study, 5)
    killed = study.ask()
    suggest(killed)  # the worker died here: its trial is left RUNNING
    study = make_study(url)  # a new worker process
    study._storage.set_trial_state_values(killed._trial_id, TrialState.FAIL)  # what heartbeat does
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Optuna 4.9 renamed RetryFailedTrialCallback; both re-queue the trial the same way.
        retry_class = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
        retry = (retry_class or optuna.storages.RetryFailedTrialCallback)()
    retry(study, study._storage.get_trial(killed._trial_id))
    run(study, 7)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 12
    assert study.trials[6].params == killed.params  # the retry ran the killed trial's params
    assert chain(study) == chain(reference)


def test_hyperband_pruner_does_not_hide_trials_from_the_chain() -> None:
    # HyperbandPruner hands samplers a study filtered to one bracket; the chain must be the whole study's.
    plain = make_study(optuna.storages.InMemoryStorage())
    run(plain, 15)
    banded = optuna.create_study(
        direction="maximize", sampler=LAHCSampler(seed=0), pruner=optuna.pruners.HyperbandPruner()
    )
    run(banded, 15)
    assert chain(banded) == chain(plain)


# ----------------------------------------------------------------------------- first trial


def test_first_trial_is_all_relu_and_rule_for_other_params() -> None:
    study = make_study(optuna.storages.InMemoryStorage())
    trial = study.ask()
    params = suggest(trial)
    binary = trial.suggest_categorical("block0.binary", ["add", "left", "mul"])
    flag = trial.suggest_categorical("augment", [False, True])
    n = trial.suggest_int("n", 1, 9)
    lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    wd = trial.suggest_float("wd", 0.0, 1.0, step=0.25)
    assert params == {f"{s}.left": "relu" for s in SITES}
    assert binary == "left" and flag is False
    assert n == 5 and wd == 0.5 and lr == pytest.approx(1e-3)


def test_initial_params_override_and_are_validated() -> None:
    study = make_study(optuna.storages.InMemoryStorage(), initial_params={"block1.act.left": "gelu"})
    params = suggest(study.ask())
    assert params["block1.act.left"] == "gelu" and params["block0.act.left"] == "relu"

    bad = make_study(optuna.storages.InMemoryStorage(), initial_params={"block0.act.left": "foo"})
    with pytest.raises(ValueError, match=r"'foo'.*valid: 'relu', 'tanh'"):
        suggest(bad.ask())


def test_enqueued_first_trial_is_respected() -> None:
    study = make_study(optuna.storages.InMemoryStorage(), swap_probability=0.0)
    first = {f"{s}.left": "tanh" for s in SITES}
    study.enqueue_trial(first)
    run(study, 3)
    assert study.trials[0].params == first
    assert len(changed(first, study.trials[1].params)) == 1  # the chain starts from it


# ----------------------------------------------------------------------------- acceptance


def _hand_made_study(direction: str, sign: float) -> optuna.Study:
    """Values (L = 3) chosen so that late acceptance, a PRUNED and a FAIL trial all matter."""
    study = make_study(optuna.storages.InMemoryStorage(), direction=direction, swap_probability=0.0)
    dists = {f"{s}.left": CategoricalDistribution(OPS) for s in SITES[:2]}
    values = [1.0, 3.0, 2.0, "pruned", 2.5, 1.5, 2.2, "fail", 2.1]
    for i, value in enumerate(values):
        params = {"block0.act.left": OPS[i % 5], "block1.act.left": OPS[i // 5]}
        if value == "pruned":
            study.add_trial(create_trial(state=TrialState.PRUNED, params=params, distributions=dists))
        elif value == "fail":
            study.add_trial(create_trial(state=TrialState.FAIL, params=params, distributions=dists))
        else:
            study.add_trial(create_trial(value=sign * value, params=params, distributions=dists))
    return study


@pytest.mark.parametrize("direction,sign", [("maximize", 1.0), ("minimize", -1.0)])
def test_acceptance_rule_hand_made_sequence(direction: str, sign: float) -> None:
    study = _hand_made_study(direction, sign)
    trials = study.trials
    # current solution after each trial:   1   3: better   2: worse but >= history[1]=1
    # pruned: rejected   2.5: >= current 2   1.5: rejected   2.2: worse but >= history[2]=2
    # fail: ignored   2.1: < history[0]=2.2 and < current 2.2: rejected
    expected_current = [0, 1, 2, 2, 4, 4, 6, 6, 6]
    for i, want in enumerate(expected_current):
        state = _replay(trials[: i + 1], 3, _value_score(direction == "maximize"))
        assert state.current is not None and state.current.number == want, i
    state = _replay(trials, 3, _value_score(direction == "maximize"))
    assert state.position == 8  # FAIL is not an iteration
    # the history holds scores (the value, negated when minimizing) and their trials
    assert [score for score, _ in state.history] == [2.2, 2.5, 2.2]
    # and the next proposal is a neighbour of that current solution (trial 6)
    proposal = suggest(study.ask(), SITES[:2])
    assert len(changed(trials[6].params, proposal)) == 1


def test_history_length_one_is_a_hill_climber() -> None:
    study = make_study(optuna.storages.InMemoryStorage(), history_length=1)
    run(study, 30)
    values = [v for _, v in chain(study)]
    state = _replay(study.trials, 1, _value_score(True))
    assert state.current is not None and state.value == max(values)


# ----------------------------------------------------------------------------- moves & repeats


def test_no_repeats_until_the_small_space_is_exhausted() -> None:
    sites, ops = ["a", "b", "c"], ["relu", "tanh", "sin"]
    study = make_study(optuna.storages.InMemoryStorage(), seed=1)
    run(study, 27, lambda t: score({k: "relu" for k in suggest(t, sites, ops)}))  # flat: all accepted
    keys = {tuple(sorted(p.items())) for p, _ in chain(study)}
    assert len(keys) == 27  # all 3**3 configurations, none twice


def test_canonical_key_merges_equivalent_configurations() -> None:
    def key(params: dict[str, Any]) -> tuple:
        # binary "left" ignores the right operand: those configurations are one
        return tuple(
            (s, b, params[f"{s}.left"], None if b == "left" else params[f"{s}.right"])
            for s, b in ((s, params[f"{s}.binary"]) for s in ("a", "b"))
        )

    def objective(trial: optuna.Trial) -> float:
        for s in ("a", "b"):
            trial.suggest_categorical(f"{s}.binary", ["left", "add"])
            trial.suggest_categorical(f"{s}.left", ["relu", "tanh"])
            trial.suggest_categorical(f"{s}.right", ["x", "sin"])
        return 1.0

    study = make_study(optuna.storages.InMemoryStorage(), canonical_key=key, seed=2)
    run(study, 36, objective)  # (2 + 2 * 2) ** 2 = 36 classes among 64 raw configurations
    assert len({key(p) for p, _ in chain(study)}) == 36


def test_moves_change_one_node_or_swap_two_sites() -> None:
    flat = lambda t: score({k: "relu" for k in suggest(t)})  # noqa: E731  every candidate accepted
    never = make_study(optuna.storages.InMemoryStorage(), swap_probability=0.0)
    run(never, 25, flat)
    always = make_study(optuna.storages.InMemoryStorage(), swap_probability=1.0)
    run(always, 25, flat)
    for study in (never, always):
        trials = chain(study)
        for (parent, _), (child, _) in zip(trials, trials[1:]):
            assert len(changed(parent, child)) == 1 or is_swap(parent, child)
    assert not any(is_swap(p, c) for (p, _), (c, _) in zip(chain(never), chain(never)[1:]))
    swaps = sum(is_swap(p, c) for (p, _), (c, _) in zip(chain(always), chain(always)[1:]))
    assert swaps >= 10  # p = 1: every move is a swap once two sites differ, unless it is a repeat


def test_int_and_float_params_move_and_stay_in_range() -> None:
    dists = {
        "n": IntDistribution(1, 20),
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "momentum": FloatDistribution(0.5, 0.99),
        "wd": FloatDistribution(0.0, 1.0, step=0.1),
        "k": IntDistribution(0, 12, step=3),
    }

    def objective(trial: optuna.Trial) -> float:
        for name, dist in dists.items():
            if isinstance(dist, IntDistribution):
                trial.suggest_int(name, dist.low, dist.high, step=dist.step)
            else:
                trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
        return 0.0  # flat: every candidate accepted, so each trial moves from the previous one

    study = make_study(optuna.storages.InMemoryStorage(), seed=5)
    run(study, 60, objective)
    trials = chain(study)
    for params, _ in trials:
        for name, dist in dists.items():
            assert dist._contains(dist.to_internal_repr(params[name])), (name, params[name])
        assert isinstance(params["n"], int) and isinstance(params["k"], int)
    for (parent, _), (child, _) in zip(trials, trials[1:]):
        assert len(changed(parent, child)) == 1
    for name in dists:
        assert len({p[name] for p, _ in trials}) >= 3, name
    # steps are local: 10 % of the (log) range, not a jump across it
    lr_steps = [
        abs(math.log10(c["lr"]) - math.log10(p["lr"]))
        for (p, _), (c, _) in zip(trials, trials[1:])
        if p["lr"] != c["lr"]
    ]
    assert max(lr_steps) < 1.5


def test_minimize_direction_climbs_down() -> None:
    study = make_study(optuna.storages.InMemoryStorage(), direction="minimize")
    run(study, 60, lambda t: -score(suggest(t)))
    assert study.trials[0].value == 0.0
    assert study.best_value == pytest.approx(-score({f"{s}.left": "swish" for s in SITES}))


def test_finds_the_optimum_of_a_separable_objective() -> None:
    study = make_study(optuna.storages.InMemoryStorage(), seed=7)
    run(study, 60)
    optimum = score({f"{s}.left": "swish" for s in SITES})
    assert study.trials[0].value == 0.0 < optimum
    assert study.best_value == pytest.approx(optimum)
    assert study.best_params == {f"{s}.left": "swish" for s in SITES}


def test_pruned_trials_are_rejected_and_the_chain_goes_on() -> None:
    study = make_study(optuna.storages.InMemoryStorage())
    for _ in range(20):
        trial = study.ask()
        params = suggest(trial)
        if "elu" in params.values():
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, score(params))
    state = _replay(study.trials, 3, _value_score(True))
    assert any(t.state == TrialState.PRUNED for t in study.trials)
    assert state.current is not None and state.current.state == TrialState.COMPLETE
    assert state.position == 20


def test_dynamic_params_fall_outside_the_relative_search_space() -> None:
    from optuna.search_space import intersection_search_space

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial)
        if trial.number % 3 != 1:  # a conditional param: not in every trial
            trial.suggest_float("extra", 0.0, 1.0)
        return score(params)

    study = make_study(optuna.storages.InMemoryStorage())
    for _ in range(12):
        trial = study.ask()
        study.tell(trial, objective(trial))
        finished = [t for t in study.trials if t.state.is_finished()]
        # the sampler's incremental intersection equals Optuna's full one
        assert study.sampler.infer_relative_search_space(study, trial) == intersection_search_space(
            finished, include_pruned=True
        )
    assert "extra" not in study.sampler.infer_relative_search_space(study, study.trials[-1])
    # outside the relative space a param keeps the current solution's value (first: the midpoint)
    assert {t.params["extra"] for t in study.trials if "extra" in t.params} == {0.5}


# ----------------------------------------------------------------------------- API


def test_docstring_example_runs() -> None:
    doc = LAHCSampler.__doc__ or ""
    code = doc.split(".. code-block:: python")[1].split("Args:")[0]
    exec(textwrap.dedent(code), {})


def test_invalid_arguments_and_multi_objective() -> None:
    with pytest.raises(ValueError, match="history_length"):
        LAHCSampler(history_length=0)
    with pytest.raises(ValueError, match="swap_probability"):
        LAHCSampler(swap_probability=1.5)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=LAHCSampler(seed=0))
    with pytest.raises(ValueError, match="multi-objective"):
        suggest(study.ask())


def test_reseed_rng_changes_proposals() -> None:
    a = make_study(optuna.storages.InMemoryStorage(), seed=0)
    b = make_study(optuna.storages.InMemoryStorage(), seed=0)
    b.sampler.reseed_rng()
    run(a, 15)
    run(b, 15)
    assert chain(a)[0] == chain(b)[0]  # the first trial is the rule, not random
    assert chain(a) != chain(b)


# ----------------------------------------------------------------------------- variant paper-code


def test_variants_and_the_bad_variant_error() -> None:
    assert VARIANTS == ("textbook", "paper-code")
    assert LAHCSampler().variant == "textbook"
    assert LAHCSampler(variant="paper-code").variant == "paper-code"
    with pytest.raises(ValueError, match=r"unknown LAHC variant 'paper'; valid: 'textbook', 'paper-code'"):
        LAHCSampler(variant="paper")


# Values (L = 3) where the two variants part: a tie with the history entry (trial 2), a history
# entry that must not get worse (trial 4), a tie with the current solution (trials 4, 9), a
# PRUNED and a FAIL trial.
_VARIANT_VALUES: list[float | str] = [1.0, 3.0, 1.0, 2.0, 2.0, "pruned", 1.5, 2.5, "fail", 2.5]


def _variant_study(variant: str, direction: str = "maximize", sign: float = 1.0) -> optuna.Study:
    study = make_study(optuna.storages.InMemoryStorage(), direction=direction, variant=variant)
    dists = {f"{s}.left": CategoricalDistribution(OPS) for s in SITES}
    for i, value in enumerate(_VARIANT_VALUES):
        params = {f"{s}.left": OPS[(i + j) % 5] for j, s in enumerate(SITES)}
        if isinstance(value, str):
            state = TrialState.PRUNED if value == "pruned" else TrialState.FAIL
            study.add_trial(create_trial(state=state, params=params, distributions=dists))
        else:
            study.add_trial(create_trial(value=sign * value, params=params, distributions=dists))
    return study


@pytest.mark.parametrize("direction,sign", [("maximize", 1.0), ("minimize", -1.0)])
@pytest.mark.parametrize(
    "variant, currents, history, thresholds",
    [
        # trial 2 ties history[1] = 1: accepted (>=)     history[0] := current 2 at trial 4
        ("textbook", [0, 1, 2, 3, 4, 4, 4, 7, 7, 9], [(2.5, 7), (2.5, 9), (2.0, 4)], {2: 0, 3: 2, 4: 3}),
        # trial 2 ties history[1] = 1: rejected (>)     history[0] stays 3: 2 is not better
        ("paper-code", [0, 1, 1, 3, 4, 4, 4, 7, 7, 9], [(3.0, 1), (3.0, 1), (2.0, 3)], {2: 0, 3: 0, 4: 3}),
    ],
)
def test_acceptance_and_history_rules_of_each_variant(
    variant: str,
    currents: list[int],
    history: list[tuple[float, int]],
    thresholds: dict[int, int],
    direction: str,
    sign: float,
) -> None:
    study = _variant_study(variant, direction, sign)
    trials = study.trials
    for i, want in enumerate(currents):
        chain = _replay(trials[: i + 1], 3, _value_score(direction == "maximize"), variant)
        assert chain.current is not None and chain.current.number == want, i
    chain = _replay(trials, 3, _value_score(direction == "maximize"), variant)
    # scores: the value, negated when minimizing, so the same numbers in both directions
    assert [(s, t.number) for s, t in chain.history] == history
    # the trial each candidate is compared with (paper-code: trial 2 ties trial 0 and is rejected,
    # since beating a history entry is strict there; trial 4 ties the current trial 3: accepted)
    for number, want in thresholds.items():
        reference = study.sampler.threshold_trial(study, trials[number])
        assert reference is not None and reference.number == want, number


def _lahc_package_loop(energies: list[float], history_length: int) -> list[tuple[int, list[float], int]]:
    """The loop of ``LateAcceptanceHillClimber.run`` (lahc 1.0.5, lahc/_lahc.py:127-185) with the
    energy of the k-th state scripted: (current state, energy history, step_idle) after each
    candidate. Transcribed, and checked against the package itself on random sequences."""
    energy = energies[0]
    prev_state, prev_energy = 0, energy
    history = [energy] * history_length
    idle = 0
    out = []
    for step, energy in enumerate(energies[1:]):
        idle = idle + 1 if energy >= prev_energy else 0
        v = step % history_length
        late = history[v]
        if energy < late or energy <= prev_energy:
            prev_state, prev_energy = step + 1, energy
        else:
            energy = prev_energy
        if energy < late:
            history[v] = energy
        out.append((prev_state, list(history), idle))
    return out


def test_paper_code_replay_equals_the_lahc_package_loop() -> None:
    rng = random.Random(0)
    dists = {"x": CategoricalDistribution([0])}
    differs = 0
    for _ in range(200):
        n, length = rng.randint(2, 25), rng.randint(1, 4)
        # small integers, so ties with the history and with the current solution are frequent
        values = [float(rng.randint(0, 4)) for _ in range(n)]
        pruned = {i for i in range(1, n) if rng.random() < 0.1}
        trials = []
        for i, v in enumerate(values):
            if i in pruned:
                trial = create_trial(state=TrialState.PRUNED, params={"x": 0}, distributions=dists)
            else:
                trial = create_trial(value=v, params={"x": 0}, distributions=dists)
            trial.number = i
            trials.append(trial)
        # the SAFS code minimizes 1 / accuracy; -value orders the same way; PRUNED never wins
        energies = [math.inf if i in pruned else -v for i, v in enumerate(values)]
        for k, (current, history, idle) in enumerate(_lahc_package_loop(energies, length), start=2):
            chain = _replay(trials[:k], length, _value_score(True), "paper-code")
            assert chain.current is not None and chain.current.number == current
            assert [-s for s, _ in chain.history] == history
            assert chain.idle == idle
        textbook = _replay(trials, length, _value_score(True), "textbook")
        differs += textbook.current is not None and textbook.current.number != current
    assert differs > 0  # the comparison tells the variants apart


def _reassign_then_swap(parent: dict[str, Any], child: dict[str, Any]) -> bool:
    """Whether ``child`` is ``parent`` with one site set to any value, then two sites (possibly
    the same one) swapped."""
    names = sorted(parent)
    for c in names:
        for value in OPS:
            step = {**parent, c: value}
            for a in names:
                for b in names:
                    swapped = {**step, a: step[b], b: step[a]}
                    if swapped == child:
                        return True
    return False


def test_paper_code_move_is_one_reassignment_and_one_swap_and_repeats_are_evaluated() -> None:
    flat = lambda t: score({k: "relu" for k in suggest(t)})  # noqa: E731  every candidate ties: accepted
    study = make_study(optuna.storages.InMemoryStorage(), variant="paper-code", seed=3)
    run(study, 60, flat)
    trials = chain(study)
    assert len(trials) == 60  # every proposal was run, repeats included
    pairs = list(zip([p for p, _ in trials], [p for p, _ in trials[1:]]))
    assert all(_reassign_then_swap(parent, child) for parent, child in pairs)
    # neither half alone explains every move, and either may be a no-op
    assert any(len(changed(parent, child)) == 2 and not is_swap(parent, child) for parent, child in pairs)
    assert any(is_swap(parent, child) for parent, child in pairs)
    assert any(parent == child for parent, child in pairs)  # the current solution, evaluated again
    keys = [tuple(sorted(p.items())) for p, _ in trials]
    assert len(set(keys)) < len(keys)
    # the textbook variant on the same objective never repeats a configuration
    textbook = make_study(optuna.storages.InMemoryStorage(), seed=3)
    run(textbook, 60, flat)
    keys = [tuple(sorted(p.items())) for p, _ in chain(textbook)]
    assert len(set(keys)) == len(keys)


def test_paper_code_move_changes_at_most_three_sites_statistically() -> None:
    # One re-assignment (a site, a value: any of 5) and one swap (two sites: any of 4 each).
    study = make_study(optuna.storages.InMemoryStorage(), variant="paper-code", seed=0)
    first = {f"{s}.left": op for s, op in zip(SITES, OPS)}  # four different values
    study.enqueue_trial(first)
    run(study, 1)
    counts: dict[int, int] = {}
    for seed in range(400):
        study.sampler = LAHCSampler(variant="paper-code", seed=seed)
        trial = study.ask()
        n_changed = len(changed(first, suggest(trial)))
        counts[n_changed] = counts.get(n_changed, 0) + 1
        study.tell(trial, state=TrialState.FAIL)  # FAIL trials leave the chain where it is
    assert set(counts) <= {0, 1, 2, 3} and all(counts.get(k, 0) > 0 for k in (0, 1, 2, 3))
    # P(no change) = P(same value) * P(a == b) = 1/5 * 1/4 = 5 %
    assert 0.02 < counts[0] / 400 < 0.09


def test_paper_code_starts_at_random_unless_told() -> None:
    firsts = []
    for seed in range(5):
        study = make_study(optuna.storages.InMemoryStorage(), variant="paper-code", seed=seed)
        firsts.append(tuple(sorted(suggest(study.ask()).items())))
    assert len(set(firsts)) > 1
    again = make_study(optuna.storages.InMemoryStorage(), variant="paper-code", seed=0)
    assert tuple(sorted(suggest(again.ask()).items())) == firsts[0]  # seeded
    # initial_params still fix what they name
    told = make_study(
        optuna.storages.InMemoryStorage(), variant="paper-code", initial_params={"block0.act.left": "gelu"}
    )
    assert suggest(told.ask())["block0.act.left"] == "gelu"
    # and an enqueued trial (the pipeline's start) is the first trial; the chain starts from it
    enqueued = make_study(optuna.storages.InMemoryStorage(), variant="paper-code")
    start = {f"{s}.left": "relu" for s in SITES}
    enqueued.enqueue_trial(start)
    run(enqueued, 3)
    assert enqueued.trials[0].params == start
    assert _reassign_then_swap(start, enqueued.trials[1].params)


def test_paper_code_resume_and_parallel_workers_continue_one_chain(tmp_path: Any) -> None:
    reference = make_study(optuna.storages.InMemoryStorage(), variant="paper-code")
    run(reference, 20)
    url = sqlite(tmp_path, "resumed")
    run(make_study(url, variant="paper-code"), 7)
    run(make_study(url, variant="paper-code"), 13)  # a new process: new study object and sampler
    assert chain(make_study(url, variant="paper-code")) == chain(reference)
    url = sqlite(tmp_path, "interleaved")
    workers = [make_study(url, variant="paper-code"), make_study(url, variant="paper-code")]
    for i in range(20):
        run(workers[i % 2], 1)
    assert chain(workers[0]) == chain(reference)


def test_lahc_package_stopping_rule() -> None:
    study = make_study(optuna.storages.InMemoryStorage(), variant="paper-code")
    values = iter([1.0, 2.0, 3.0, 4.0, 5.0, 5.0])
    run(study, 5, lambda t: (suggest(t), next(values))[1])
    # 4 candidates, each strictly better than the current solution: never idle
    assert not study.sampler.lahc_package_would_stop(study, steps_minimum=3)
    run(study, 1, lambda t: (suggest(t), next(values))[1])  # a tie: not strictly better
    assert study.sampler.lahc_package_would_stop(study, steps_minimum=3)
    assert not study.sampler.lahc_package_would_stop(study, steps_minimum=5)
    # the SAFS code's default (steps_minimum 20): at least 22 evaluations
    flat = make_study(optuna.storages.InMemoryStorage(), variant="paper-code")
    run(flat, 21, lambda t: (suggest(t), 0.0)[1])
    assert not flat.sampler.lahc_package_would_stop(flat)
    run(flat, 1, lambda t: (suggest(t), 0.0)[1])
    assert flat.sampler.lahc_package_would_stop(flat)



def test_a_proposal_matching_a_trial_whose_claim_is_still_partial_clashes():
    # A trial that moved from a first trial still being suggested claims fewer parameters and
    # takes the rest later: any proposal that agrees with what it has may end up equal to it.
    from optuna.trial import create_trial

    from safs_optuna.samplers.claims import CLAIM_ATTR as _CLAIM_ATTR, matches_partial as _matches_partial

    space = {f"s{i}.left": CategoricalDistribution(["relu", "selu"]) for i in range(4)}
    claim = {"s0.left": "selu", "s1.left": "relu"}
    partial = create_trial(state=TrialState.RUNNING, system_attrs={_CLAIM_ATTR: claim})
    partial.number = 2
    same = {"s0.left": "selu", "s1.left": "relu", "s2.left": "relu", "s3.left": "relu"}
    other = {**same, "s1.left": "selu"}
    assert _matches_partial([partial], same, space, number=8)
    assert not _matches_partial([partial], other, space, number=8)
    assert not _matches_partial([partial], same, space, number=2)  # its own claim
    full = create_trial(state=TrialState.RUNNING, system_attrs={_CLAIM_ATTR: same})
    full.number = 3
    assert not _matches_partial([full], same, space, number=8)  # a whole key: the taken keys' job


def test_an_int_midpoint_rounds_the_same_on_every_optuna_version() -> None:
    # Optuna's own search-space transform rounds an int halfway between two steps to the even one
    # in 4.0 and up in 5.x; the sampler rounds the same way on both, so the first trial (and every
    # draw after it) is the same on each Optuna that CI runs.
    trial = make_study(optuna.storages.InMemoryStorage()).ask()
    assert trial.suggest_int("a", 0, 5) == 2  # Optuna 5.x's transform: 3
    assert trial.suggest_int("b", 2, 7) == 4  # Optuna 5.x's transform: 5
    assert trial.suggest_int("c", 0, 10, step=2) == 4  # 5, between 4 and 6; Optuna 5.x: 6
