"""LAHCSampler on a toy activation search: one activation per layer plus a learning rate.

Parameters named ``<site>.<name>`` belong to one site (here a layer); a move changes one
parameter of one site, or swaps two layers' activations.
"""

import optuna
import optunahub

# How well each activation would do in a layer, and the best learning rate: a stand-in for
# training a network, so that the example runs in a second.
SCORE = {"relu": 0.0, "tanh": 0.3, "gelu": 0.8, "swish": 1.0}
BEST_LR = 3e-3


def objective(trial: optuna.Trial) -> float:
    activations = [trial.suggest_categorical(f"layer{i}.act", list(SCORE)) for i in range(3)]
    lr = trial.suggest_float("optimizer.lr", 1e-4, 1e-1, log=True)
    return sum(SCORE[a] for a in activations) - abs(lr - BEST_LR) * 10


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    module = optunahub.load_module("samplers/lahc")
    sampler = module.LAHCSampler(history_length=3, seed=0)

    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=40)

    print(f"First trial: {study.trials[0].params}")  # the all-"relu" start
    print(f"Best value: {study.best_value:.3f}")
    print(f"Best params: {study.best_params}")
