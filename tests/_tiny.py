"""A tiny study config for the pipeline tests: the quick-start data with minimal budgets."""

from pathlib import Path

TINY = """
name = "tiny"
seed = 0
threads = 1

[model]
name = "lenet5"

[data]
name = "quickstart"

[sparsity]
ratio = 0.99
scope = "layer"

[dense]
epochs = 1

[protocol]
optimizer = "adam"
lr = 0.001
batch_size = 256

[activations]
preset = "safs"
trials = {trials}
epochs = 1
fraction = 0.1

[hpo]
trials = 3
epochs = 1
fraction = 0.1

[final]
epochs = 1
"""


def write_config(folder: Path, trials: int = 3, name: str = "tiny") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(TINY.format(trials=trials).replace('name = "tiny"', f'name = "{name}"', 1))
    return path
