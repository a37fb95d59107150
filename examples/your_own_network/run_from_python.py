"""The same study from Python: the objects themselves instead of import paths."""

import safs_optuna as so

from data import load_data
from model import make_model

if __name__ == "__main__":  # workers are spawned processes: they import this file again
    results = so.run("study.toml", model=make_model, data=load_data, workers=2)
    print(results)
