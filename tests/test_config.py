"""Study configs: the shipped files, defaults, every kind of error, overrides, paths, round trips."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import pytest

from safs_optuna.config import (
    PRUNERS,
    SAMPLERS,
    ConfigError,
    ProtocolConfig,
    StudyConfig,
    load_config,
    parse_config,
    to_dict,
)

STUDIES = Path(__file__).resolve().parent.parent / "studies"
SHIPPED = sorted(STUDIES.glob("*.toml"))


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error(tmp_path: Path, text: str, overrides: dict | None = None) -> str:
    """The message of the ConfigError that ``text`` (after ``name = "s"``) raises."""
    path = write(tmp_path, 'name = "s"\n' + text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


# --- the shipped configs --------------------------------------------------------------------


def test_every_promised_config_is_shipped():
    assert {p.stem for p in SHIPPED} >= {
        "quickstart",
        "lenet5_mnist",
        "lenet5_fashion_mnist",
        "vgg16_cifar10",
        "resnet18_cifar10",
        "efficientnet_b0_imagenet16",
    }


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_config_parses_and_round_trips(path):
    config = load_config(path)
    assert config.name == path.stem
    assert config.path == path
    assert config.storage == f"sqlite:///{STUDIES / path.stem}.db"
    assert config.artifacts == str(STUDIES / f"{path.stem}.artifacts")
    # The paper's allocation, except in the variant of the quick start made to show another.
    scope = "lamp" if path.stem == "quickstart_strong" else "layer"
    assert config.sparsity.ratio == 0.99 and config.sparsity.scope == scope
    assert config.ablations is True
    assert parse_config(to_dict(config), path) == config


def test_quickstart_strong_is_the_quickstart_with_another_allocation():
    plain, strong = (to_dict(load_config(STUDIES / f"{n}.toml")) for n in ("quickstart", "quickstart_strong"))
    for d in (plain, strong):
        for key in ("name", "storage", "artifacts", "path"):
            d.pop(key, None)
        d["sparsity"].pop("scope")
    assert plain == strong


def test_quickstart_is_small_and_offline():
    config = load_config(STUDIES / "quickstart.toml")
    assert (config.model.name, config.data.name, config.device) == ("lenet5", "quickstart", "cpu")
    assert config.protocol.optimizer == "adam" and config.protocol.lr == 1e-3
    a, h = config.activations, config.hpo
    # Whole-data epochs of the whole pipeline with ablations: a few minutes on 2 CPU cores
    # ("auto" candidate epochs are at most a full fine-tune's, "final" protocols exactly one).
    per_candidate = config.final.epochs if a.epochs == "auto" else a.epochs
    per_protocol = config.final.epochs if h.epochs == "final" else h.epochs
    epochs = (config.dense.epochs + 4 * config.final.epochs + a.trials * per_candidate * a.fraction
              + 2 * h.trials * per_protocol * h.fraction)
    # Worst case, nothing pruned and every candidate at its ceiling; the pruners stop most
    # candidates and protocols after 1 or 2 epochs in practice (benchmarks/quickstart.py).
    assert epochs <= 300, epochs


# The commit of github.com/automl/SAFS whose lines the paper configs cite.
SAFS_COMMIT = "ac03fa1195c5e6c5c49d76db39291c51da34c688"


def _commented_entries(text: str) -> list[str]:
    """Each key or table line of a TOML file joined with the comment lines that continue it."""
    entries: list[str] = []
    for line in text.splitlines():
        if line[:1] not in ("", "#", " "):
            entries.append(line)
        elif line.lstrip().startswith("#") and line.startswith(" ") and entries:
            entries[-1] += " " + line.strip()
    return entries


@pytest.mark.parametrize(
    "stem, optimizer, lr, schedule, augment, val_size",
    [
        # LeNet-5: Adam at 1e-3 with settings.py's weight decay, constant rate, MNIST's 10 000
        # held-out images (main.py:150-153, 187-188; utility.py:42-44).
        ("lenet5_mnist", "adam", 1e-3, "constant", False, 0.1666667),
        ("lenet5_fashion_mnist", "adam", 1e-3, "constant", False, 0.1666667),
        # CIFAR-10: SGD at 1e-3 (main.py:160, 168-169), a third held out as in 3-fold CV.
        ("vgg16_cifar10", "sgd", 1e-3, "step", True, 0.3333333),
        ("resnet18_cifar10", "sgd", 1e-3, "plateau", True, 0.3333333),
        # EfficientNet-B0: SGD at 1e-3 with cosine warm restarts, "cosine" the nearest here
        # (main.py:175-178, 199-200); no random augmentation in the code's loader.
        ("efficientnet_b0_imagenet16", "sgd", 1e-3, "cosine", False, 0.1),
    ],
)
def test_paper_configs_follow_the_paper_protocol(stem, optimizer, lr, schedule, augment, val_size):
    path = STUDIES / f"{stem}.toml"
    config = load_config(path)
    p = config.protocol
    assert (p.optimizer, p.lr, p.schedule, p.augment) == (optimizer, lr, schedule, augment)
    assert (p.weight_decay, p.batch_size) == (5e-4, 256)  # settings.py:76, main.py:64
    if optimizer == "sgd":
        assert p.momentum == 0.9
    assert config.data.val_size == val_size
    # --train_epochs for dense training and every full fine-tune, --optim_epochs for every
    # trial of both searches (train_lib.py:27-30).
    assert (config.dense.epochs, config.final.epochs) == (200, 200)
    a, h = config.activations, config.hpo
    assert (a.sampler, a.history, a.trials, a.epochs, a.fraction) == ("lahc", 3, 20, 80, 1.0)
    assert a.pruner == "incumbent"
    assert (h.trials, h.epochs, h.fraction) == (20, 80, 1.0)
    # Stage 2 always learns alpha and beta (pruning_lib.py:145), over the code's LR range.
    assert h.space.learn_scale == (True,)
    assert h.space.lr == (1e-4, 1e-1)

    text = path.read_text()
    assert SAFS_COMMIT in text, "the header names the commit the [code] comments quote"
    assert "issue #" not in text.lower() and "optuna_lib" not in text
    cited = [e for e in _commented_entries(text) if "[code]" in e]
    assert len(cited) >= 15
    for entry in cited:
        # Every [code] comment names the file and line(s) it quotes.
        assert re.search(r"[A-Za-z_/]+\.py:\d+", entry.split("[code]", 1)[1]), entry


# --- defaults and the schema -----------------------------------------------------------------


def test_a_config_of_only_a_name_is_the_schemas_defaults(tmp_path):
    path = write(tmp_path, 'name = "x"\n', "x.toml")
    config = load_config(path)
    assert config == StudyConfig(
        name="x",
        path=path,
        storage=f"sqlite:///{tmp_path}/x.db",
        artifacts=str(tmp_path / "x.artifacts"),
    )
    assert config.study_name("activations") == "x/activations"


def _every_key():
    """(table, key, type, spec, default) of every key of the schema, top level first."""
    from safs_optuna.config.walker import keys, tables

    for table, cls in [("", StudyConfig), *tables(StudyConfig).items()]:
        for key, (tp, spec, default) in keys(cls).items():
            if not (dataclasses.is_dataclass(tp) and spec.keys is None):
                yield table, key, tp, spec, default


def test_every_default_satisfies_its_own_rules(tmp_path):
    # The walker checks values against the same metadata, so a default outside its range or
    # choices would fail here, not only in a user's config that sets the key.
    from safs_optuna.config.walker import Context, value

    ctx = Context("<schema>", tmp_path, frozenset())
    checked = 0
    for table, key, tp, spec, default in _every_key():
        if default is dataclasses.MISSING or spec.path or spec.choices and spec.choices.forms:
            continue  # required, resolved against a folder, or checked with its other forms
        plain = list(default) if isinstance(default, tuple) else default
        assert value(tp, spec, plain, f"{table}.{key}", ctx) == default, (table, key)
        checked += 1
    assert checked > 40


def test_every_key_has_a_one_line_description():
    for table, key, _, spec, _ in _every_key():
        assert spec.doc.strip() and "\n" not in spec.doc, f"[{table}] {key} needs one line of meaning"


def test_the_protocol_keys_are_the_fields_of_hparams(tmp_path):
    from safs_optuna.config.walker import keys
    from safs_optuna.training import HParams

    assert list(keys(ProtocolConfig)) == [f.name for f in dataclasses.fields(HParams)]
    hparams = HParams(optimizer="sgd", lr=0.05, momentum=0.8, schedule="cosine", augment=True)
    protocol = ProtocolConfig(hparams)
    assert protocol.hparams() is hparams and protocol.lr == 0.05 and protocol.optimizer == "sgd"
    with pytest.raises(AttributeError):
        protocol.learning_rate
    # The file's keys, read into HParams and written back flat, as users write them.
    config = load_config(write(tmp_path, 'name = "x"\n[protocol]\noptimizer = "sgd"\nlr = 0.05\n'))
    assert config.protocol.hparams() == HParams(optimizer="sgd", lr=0.05)
    assert to_dict(config)["protocol"] == dataclasses.asdict(HParams(optimizer="sgd", lr=0.05))


def test_the_reference_lists_every_table_and_key():
    from safs_optuna.config import reference_markdown

    text = reference_markdown()
    for table, key, _, spec, _ in _every_key():
        section = text.split(f"## [{table}]\n" if table else "## Top level\n", 1)[1].split("\n## ", 1)[0]
        row = next(line for line in section.splitlines() if line.startswith(f"| `{key}` |"))
        assert spec.doc.replace("<", "\\<") in row
    assert "| `trials` | integer | `20` | `[1, 100 000]` |" in text
    assert "| `optimizer` | string | `\"adam\"` | `sgd`, `adam`" in text  # [protocol]: HParams' own default
    assert '| `epochs` | integer or "auto" | `"auto"` |' in text
    assert "| `learn_scale` | array of booleans | `[true]` | each of `true`, `false` |" in text
    assert "\\<module>:\\<callable>" in text  # not raw HTML to a markdown reader


def test_a_new_schema_field_is_enforced_and_documented(tmp_path):
    # A field declared once, with its metadata, is read, checked and listed with no other edit.
    from safs_optuna.config import reference_markdown
    from safs_optuna.config.spec import key
    from safs_optuna.config.walker import Context, build

    extra = dataclasses.make_dataclass(
        "ExtraConfig", [("widgets", int, key(3, "how many widgets to frobnicate", range=(1, 9)))], frozen=True)
    root = dataclasses.make_dataclass("Root", [("extra", extra, key(doc="a fake table", factory=extra))])
    text = reference_markdown(root)
    assert "## [extra]" in text
    assert "| `widgets` | integer | `3` | `[1, 9]` | how many widgets to frobnicate |" in text
    ctx = Context("fake.toml", tmp_path, frozenset())
    assert build(root, {"extra": {"widgets": 5}}, "", ctx, {}).extra.widgets == 5
    with pytest.raises(ConfigError, match=r"^fake.toml: \[extra\] widgets: must be in \[1, 9\], got 10$"):
        build(root, {"extra": {"widgets": 10}}, "", ctx, {})


def test_the_reference_command_prints_the_reference():
    import subprocess
    import sys

    from safs_optuna.config import reference_markdown

    out = subprocess.run([sys.executable, "-m", "safs_optuna.config"], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parent.parent).stdout
    assert out == reference_markdown()


def test_parse_config_without_a_file_resolves_against_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = parse_config({"name": "x"})
    assert config.path is None
    assert config.storage == f"sqlite:///{tmp_path}/x.db"
    with pytest.raises(ConfigError, match=r"^<config>: \[model\] name: unknown model"):
        parse_config({"name": "x", "model": {"name": "nope"}})


def test_values_are_typed_as_declared(tmp_path):
    config = load_config(
        write(
            tmp_path,
            'name = "x"\nseed = 7\n[protocol]\nlr = 1\n[sparsity]\nskip = ["0"]\n'
            '[activations]\nunary = ["relu", "sin"]\nbinary = ["left", "add"]\n'
            "[hpo.space]\nlr = [1, 2]\nlearn_scale = [true]\n",
        )
    )
    assert config.seed == 7
    assert config.protocol.lr == 1.0 and isinstance(config.protocol.lr, float)
    assert config.sparsity.skip == ("0",)
    assert config.activations.unary == ("relu", "sin")
    assert config.activations.binary == ("left", "add")
    assert config.hpo.space.lr == (1.0, 2.0) and all(isinstance(v, float) for v in config.hpo.space.lr)
    assert config.hpo.space.learn_scale == (True,)


# --- errors ---------------------------------------------------------------------------------


def test_unknown_key_suggests_the_close_one_and_lists_the_valid_ones(tmp_path):
    message = error(tmp_path, "[activations]\ntrails = 5\n")
    assert "[activations] trails: unknown key (did you mean 'trials'?)" in message
    for key in ("preset", "unary", "binary", "sampler", "pruner", "trials", "epochs", "fraction", "history"):
        assert key in message.split("valid keys of [activations]: ")[1]


@pytest.mark.parametrize(
    "text, where, suggestion",
    [
        ("nmae = 1\n", "nmae: unknown key", "name"),
        ("[activation]\ntrials = 3\n", "activation: unknown key", "activations"),
        ("[hpo.space]\noptimizer = ['sgd']\n", "[hpo.space] optimizer: unknown key", "optimizers"),
        ("[dense]\ncheckpoints = 'x.pt'\n", "[dense] checkpoints: unknown key", "checkpoint"),
    ],
)
def test_unknown_keys_everywhere(tmp_path, text, where, suggestion):
    message = error(tmp_path, text)
    assert where in message and f"did you mean {suggestion!r}?" in message


def test_unknown_key_without_a_close_match_still_lists_the_valid_keys(tmp_path):
    message = error(tmp_path, "[final]\nzzzzzz = 1\n")
    assert "[final] zzzzzz: unknown key; valid keys of [final]: epochs" in message


def test_unknown_names_list_the_registries(tmp_path):
    from safs_optuna.data import DATASETS
    from safs_optuna.models import MODELS
    from safs_optuna.operators import BINARY, UNARY

    message = error(tmp_path, "[model]\nname = 'lenet'\n")
    assert "[model] name: unknown model 'lenet' (did you mean 'lenet5'?); valid: " in message
    assert all(name in message for name in ("lenet5", "vgg16", "resnet18", "efficientnet_b0", *MODELS))

    message = error(tmp_path, "[data]\nname = 'cifar'\n")
    assert "[data] name: unknown dataset 'cifar' (did you mean 'cifar10'?)" in message
    assert all(name in message for name in (*DATASETS, "idx:<dir>"))

    message = error(tmp_path, "[activations]\nunary = ['relu', 'sine']\n")
    assert "[activations] unary: unknown unary operator 'sine' (did you mean 'sin'?)" in message
    assert all(name in message for name in UNARY)

    message = error(tmp_path, "[activations]\nbinary = ['left', 'plus']\n")
    assert "[activations] binary: unknown binary operator 'plus'" in message
    assert all(name in message for name in BINARY)


@pytest.mark.parametrize(
    "text, fragment, valid",
    [
        ("[activations]\nsampler = 'cmaes'\n", "[activations] sampler: unknown sampler 'cmaes'", SAMPLERS),
        ("[hpo]\nsampler = 'tpe2'\n", "[hpo] sampler: unknown sampler 'tpe2' (did you mean 'tpe'?)", SAMPLERS),
        ("[hpo]\npruner = 'hyperbnd'\n", "[hpo] pruner: unknown pruner 'hyperbnd'", PRUNERS),
        ("[activations]\npruner = 'sha'\n", "[activations] pruner: unknown pruner 'sha'", PRUNERS),
        ("[activations]\npreset = 'big'\n", "[activations] preset: unknown preset 'big'", ("safs", "core", "compact")),
        ("[sparsity]\nscope = 'net'\n", "[sparsity] scope: unknown scope 'net'", ("layer", "global")),
        ("[protocol]\noptimizer = 'lbfgs'\n", "[protocol] optimizer: unknown optimizer 'lbfgs'", ("sgd", "adam")),
        ("[protocol]\nschedule = 'cos'\n", "[protocol] schedule: unknown schedule 'cos'", ("cosine", "plateau")),
        ("[hpo.space]\noptimizers = ['sgd', 'lion']\n", "[hpo.space] optimizers: unknown optimizer 'lion'",
         ("sgd", "adam", "adamw", "rmsprop")),
        ("[hpo.space]\nschedules = ['cyclic']\n", "[hpo.space] schedules: unknown schedule 'cyclic'",
         ("constant", "cosine", "step", "plateau")),
        ("device = 'gpu'\n", "device: unknown device 'gpu'", ("cpu", "cuda", "cuda:N", "mps")),
    ],
)
def test_unknown_choices(tmp_path, text, fragment, valid):
    message = error(tmp_path, text)
    assert fragment in message
    assert all(name in message.split("valid: ")[1] for name in valid)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[activations]\ntrials = 0\n", "[activations] trials: must be in [1, 100 000], got 0"),
        ("[activations]\nepochs = 0\n", "[activations] epochs: must be in [1, 100 000], got 0"),
        ("[activations]\nhistory = 0\n", "[activations] history: must be in [1, 1000], got 0"),
        ("[activations]\nfraction = 0\n", "[activations] fraction: must be in [0.0001, 1.0], got 0.0"),
        ("[hpo]\nfraction = 1.5\n", "[hpo] fraction: must be in [0.0001, 1.0], got 1.5"),
        ("[hpo]\ntrials = -1\n", "[hpo] trials: must be in [1, 100 000], got -1"),
        ("[hpo]\nepochs = 0\n", "[hpo] epochs: must be in [1, 100 000], got 0"),
        ("[final]\nepochs = 0\n", "[final] epochs: must be in [1, 100 000], got 0"),
        ("[dense]\nepochs = 0\n", "[dense] epochs: must be in [1, 100 000] without a checkpoint"),
        ("[protocol]\nlr = 0\n", "[protocol] lr: must be in (0.0, 10.0], got 0.0"),
        ("[protocol]\nmomentum = 1.0\n", "[protocol] momentum: must be in [0.0, 1.0), got 1.0"),
        ("[protocol]\nweight_decay = -1e-4\n", "[protocol] weight_decay: must be in [0.0, 1.0], got -0.0001"),
        ("[protocol]\nbatch_size = 0\n", "[protocol] batch_size: must be in [1, 65 536], got 0"),
        ("[data]\nval_size = 0\n", "[data] val_size: must be in (0.0, 1.0), got 0.0"),
        ("[data]\nval_size = 1\n", "[data] val_size: must be in (0.0, 1.0), got 1.0"),
        ("[sparsity]\nratio = 1.0\n", "[sparsity] ratio: must be in (0.0, 1.0), got 1.0"),
        ("[sparsity]\nratio = -0.1\n", "[sparsity] ratio: must be in (0.0, 1.0), got -0.1"),
        ("[sparsity]\ngradual_epochs = -1\n",
         "[sparsity] gradual_epochs: must be in [0, 100 000], got -1 (0 = one-shot pruning)"),
        ("[hpo.space]\nlr = [0.1, 0.001]\n", "[hpo.space] lr: expected [low, high] with low < high, got [0.1, 0.001]"),
        ("[hpo.space]\nlr = [0.0, 0.1]\n", "[hpo.space] lr: is searched on a log scale, so low must be > 0"),
        ("[hpo.space]\nweight_decay = [0, 1e-2]\n", "[hpo.space] weight_decay: is searched on a log scale"),
        ("[hpo.space]\nmomentum = [0.5, 1.0]\n", "[hpo.space] momentum: must lie in [0.0, 1.0), got [0.5, 1.0]"),
        ("[hpo.space]\nmomentum = [0.9, 0.9]\n", "[hpo.space] momentum: expected [low, high] with low < high"),
        ("[hpo.space]\noptimizers = []\n", "[hpo.space] optimizers: needs at least one optimizer, got []"),
        ("[hpo.space]\nlearn_scale = [true, true]\n", "[hpo.space] learn_scale: true is listed twice"),
        ("[activations]\nunary = []\n", "[activations] unary: needs at least one unary operator, got []"),
        ("[data]\nname = 'imagenet16-0'\n", "[data] name: 'imagenet16-0': imagenet16 has 1 to 1000 classes"),
        ("threads = -1\n", "threads: must be in [0, 1024], got -1 (0 = automatic)"),
        ("seed = -1\n", "seed: must be in [0, 2**32), got -1"),
    ],
)
def test_out_of_range(tmp_path, text, fragment):
    assert fragment in error(tmp_path, text)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[activations]\ntrials = '5'\n", '[activations] trials: expected an integer, got "5" (string)'),
        ("[activations]\ntrials = true\n", "[activations] trials: expected an integer, got true (boolean)"),
        ("[final]\nepochs = 2.5\n", "[final] epochs: expected an integer, got 2.5 (float)"),
        ("[sparsity]\ngradual_epochs = 2.5\n", "[sparsity] gradual_epochs: expected an integer, got 2.5 (float)"),
        ("[protocol]\nlr = 'fast'\n", '[protocol] lr: expected a number, got "fast" (string)'),
        ("[protocol]\nlr = nan\n", "[protocol] lr: expected a finite number, got nan"),
        ("[protocol]\nnesterov = 1\n", "[protocol] nesterov: expected true or false, got 1 (integer)"),
        ("ablations = 'yes'\n", 'ablations: expected true or false, got "yes" (string)'),
        ("device = 0\n", "device: expected a string, got 0 (integer)"),
        ("[activations]\nunary = 'relu'\n", '[activations] unary: expected an array of strings, got "relu" (string)'),
        ("[activations]\nunary = ['relu', 1]\n", "[activations] unary: expected an array of strings"),
        ("[hpo.space]\nlr = [0.1]\n", "[hpo.space] lr: expected an array of 2 numbers [low, high], got [0.1]"),
        ("[hpo.space]\nlearn_scale = [1, 0]\n", "[hpo.space] learn_scale: expected an array of booleans"),
        ("model = 'lenet5'\n", '[model]: expected a table [model], got "lenet5" (string)'),
        ("[hpo]\nspace = 3\n", "[hpo.space]: expected a table [hpo.space], got 3 (integer)"),
        ("storage = 5\n", "storage: expected a string, got 5 (integer)"),
    ],
)
def test_wrong_types(tmp_path, text, fragment):
    assert fragment in error(tmp_path, text)


@pytest.mark.parametrize("name", ["my study", "a/b", "", "ü"])
def test_bad_name(tmp_path, name):
    path = write(tmp_path, f"name = {json.dumps(name)}\n")
    with pytest.raises(ConfigError, match="may only contain letters, digits"):
        load_config(path)


def test_name_is_required(tmp_path):
    path = write(tmp_path, "seed = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: name: is required")
    assert info.value.key == "name" and info.value.source == str(path)


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("foo://host/db", "unknown storage scheme 'foo' in 'foo://host/db'; valid: sqlite, postgresql"),
        ("postgres://u@h/db", "unknown storage scheme 'postgres' in 'postgres://u@h/db' (did you mean 'postgresql'?)"),
        ("studies/x.db", "expected a database URL such as sqlite:///study.db"),
        ("sqlite://x.db", "'sqlite://x.db' is not a SQLite URL: write sqlite:///relative/path.db"),
    ],
)
def test_bad_storage(tmp_path, url, fragment):
    message = error(tmp_path, f"storage = {json.dumps(url)}\n")
    assert f"storage: {fragment}" in message


def test_the_hparams_rules_are_config_errors(tmp_path):
    message = error(tmp_path, "[protocol]\noptimizer = 'adam'\nnesterov = true\n")
    assert "[protocol]: nesterov=True needs optimizer 'sgd'" in message


def test_dense_checkpoint(tmp_path):
    message = error(tmp_path, "[dense]\ncheckpoint = 'missing.pt'\n")
    assert f"[dense] checkpoint: no file {tmp_path / 'missing.pt'}" in message
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "dense.pt").write_bytes(b"x")
    config = load_config(write(tmp_path, 'name = "s"\n[dense]\ncheckpoint = "weights/dense.pt"\nepochs = 0\n'))
    assert config.dense.checkpoint == str(tmp_path / "weights" / "dense.pt")
    assert "[dense] epochs: must be in [0, 100 000], got -1" in error(tmp_path, "[dense]\ncheckpoint = 'weights/dense.pt'\nepochs = -1\n")


def test_idx_dataset_folder_is_resolved_and_must_exist(tmp_path):
    assert "[data] name: 'idx:nowhere': no folder" in error(tmp_path, "[data]\nname = 'idx:nowhere'\n")
    assert "idx: needs a folder" in error(tmp_path, "[data]\nname = 'idx:'\n")
    (tmp_path / "digits").mkdir()
    config = load_config(write(tmp_path, 'name = "s"\n[data]\nname = "idx:digits"\n'))
    assert config.data.name == f"idx:{tmp_path / 'digits'}"
    assert load_config(write(tmp_path, 'name = "s"\n[data]\nname = "imagenet16-1000"\n')).data.name == "imagenet16-1000"


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read the config"):
        load_config(tmp_path / "missing.toml")
    path = write(tmp_path, 'name = "s"\n[model\n')
    with pytest.raises(ConfigError, match=r"study\.toml: not valid TOML"):
        load_config(path)


def test_the_first_problem_is_reported(tmp_path):
    # Top level before tables, tables in file order of the pipeline, unknown keys before values.
    message = error(tmp_path, "seed = -5\n[model]\nname = 'bad'\n[final]\nepochs = 0\n")
    assert "seed:" in message and "[model]" not in message
    message = error(tmp_path, "[model]\nname = 'bad'\n[final]\nepochs = 0\n")
    assert "[model] name" in message and "[final]" not in message
    message = error(tmp_path, "[final]\nepochs = 0\n[activations]\ntrials = 0\n")
    assert "[activations] trials" in message
    message = error(tmp_path, "[hpo]\ntrials = 0\ntrails = 1\n")
    assert "[hpo] trails: unknown key" in message


def test_config_error_is_a_value_error_with_the_key(tmp_path):
    path = write(tmp_path, 'name = "s"\n[hpo.space]\nlr = [1, 0.5]\n')
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert isinstance(info.value, ConfigError)
    assert (info.value.source, info.value.key) == (str(path), "hpo.space.lr")
    assert "low < high" in info.value.problem


def test_config_error_crosses_process_boundaries_intact(tmp_path):
    import pickle
    from concurrent.futures import ProcessPoolExecutor

    path = write(tmp_path, 'name = "s"\n[hpo]\ntrials = 0\n')
    with ProcessPoolExecutor(1) as pool, pytest.raises(ConfigError) as info:
        pool.submit(load_config, path, {"final.epochs": 0}).result()
    assert info.value.key in ("hpo.trials", "final.epochs") and str(path) in str(info.value)
    again = pickle.loads(pickle.dumps(info.value))
    assert (str(again), again.key, again.problem, again.override) == (
        str(info.value), info.value.key, info.value.problem, info.value.override)


# --- overrides ------------------------------------------------------------------------------


def test_overrides_replace_file_values(tmp_path):
    path = write(tmp_path, 'name = "s"\ndevice = "cpu"\n[activations]\ntrials = 20\nepochs = 3\n')
    config = load_config(
        path,
        {
            "storage": "postgresql://user@db.example/safs",
            "device": "cuda:1",
            "threads": 2,
            "activations.trials": 5,
            "hpo.space.lr": [1e-3, 1e-2],
            "final": {"epochs": 7},
        },
    )
    assert config.storage == "postgresql://user@db.example/safs"
    assert (config.device, config.threads) == ("cuda:1", 2)
    assert (config.activations.trials, config.activations.epochs) == (5, 3)
    assert config.hpo.space.lr == (1e-3, 1e-2)
    assert config.final.epochs == 7
    assert load_config(path).activations.trials == 20  # the file is untouched


def test_overrides_are_validated_like_file_values(tmp_path):
    message = error(tmp_path, "", {"activations.trials": 0})
    assert "[activations] trials (override): must be in [1, 100 000], got 0" in message
    message = error(tmp_path, "", {"activations.trails": 5})
    assert "[activations] trails (override): unknown key (did you mean 'trials'?)" in message
    message = error(tmp_path, "", {"thread": 2})
    assert "thread (override): unknown key (did you mean 'threads'?)" in message
    message = error(tmp_path, "", {"device": "tpu"})
    assert "device (override): unknown device 'tpu'" in message
    message = error(tmp_path, "", {"threads": "2"})
    assert 'threads (override): expected an integer, got "2" (string)' in message
    message = error(tmp_path, "", {"name.first": "x"})
    assert "name (override): is not a table, so name.first cannot be set" in message
    message = error(tmp_path, "[final]\nepochs = 0\n", {"activations.trials": 3})
    assert "[final] epochs: must be in [1, 100 000]" in message and "(override)" not in message


def test_override_of_the_name_moves_the_default_storage(tmp_path):
    config = load_config(write(tmp_path, 'name = "s"\n'), {"name": "other"})
    assert config.storage == f"sqlite:///{tmp_path}/other.db"
    assert config.study_name("hpo") == "other/hpo"


# --- paths ----------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    path = write(
        folder,
        'name = "s"\nstorage = "sqlite:///db/s.db?timeout=30"\nartifacts = "../art"\n[data]\nroot = "data"\n',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(os.path.relpath(path))
    assert config.storage == f"sqlite:///{folder}/db/s.db?timeout=30"
    assert config.artifacts == str(tmp_path / "art")
    assert config.data.root == str(folder / "data")
    assert config.path == path


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////var/lib/safs/s.db",
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql://user:secret@host:5432/safs",
        "postgresql+psycopg2://user@host/safs",
        "mysql+pymysql://user@host/safs",
    ],
)
def test_absolute_and_server_urls_are_unchanged(tmp_path, url):
    assert load_config(write(tmp_path, f'name = "s"\nstorage = "{url}"\n')).storage == url


def test_parent_folders_in_sqlite_paths_are_normalised(tmp_path):
    (tmp_path / "a").mkdir()
    config = load_config(write(tmp_path / "a", 'name = "s"\nstorage = "sqlite:///../b/s.db"\n'))
    assert config.storage == f"sqlite:///{tmp_path}/b/s.db"


# --- round trip -----------------------------------------------------------------------------


def test_to_dict_round_trip(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"x")
    path = write(
        tmp_path,
        'name = "rt"\nseed = 3\ndevice = "cuda"\nthreads = 4\nablations = false\n'
        '[model]\nname = "resnet18"\n[data]\nname = "cifar10"\nroot = "d"\nval_size = 0.2\ndownload = true\n'
        '[sparsity]\nratio = 0.9\nscope = "global"\nskip = ["conv1"]\n[dense]\ncheckpoint = "w.pt"\n'
        '[protocol]\noptimizer = "sgd"\nlr = 0.1\nnesterov = true\nschedule = "cosine"\n'
        '[activations]\nunary = ["relu", "sin"]\nbinary = ["left", "max"]\nsampler = "random"\n'
        '[hpo]\npruner = "median"\n[hpo.space]\noptimizers = ["sgd"]\nlearn_scale = [true]\n[final]\nepochs = 3\n',
    )
    config = load_config(path)
    data = to_dict(config)
    assert "path" not in data
    assert data["activations"]["unary"] == ["relu", "sin"]
    assert data["hpo"]["space"]["lr"] == [1e-4, 1e-1]
    assert json.loads(json.dumps(data)) == data  # plain JSON data, e.g. for study user attrs
    assert parse_config(data, path) == config
    assert parse_config(json.loads(json.dumps(data)), path) == config
    assert to_dict(config.hpo) == data["hpo"]
    with pytest.raises(TypeError):
        to_dict({"name": "x"})


# --- [activations] lahc: the LAHC variant -----------------------------------------------------


def test_activations_lahc_variant(tmp_path):
    from safs_optuna.samplers.lahc import VARIANTS

    assert load_config(write(tmp_path, 'name = "s"\n')).activations.lahc == "textbook"
    for variant in VARIANTS:
        config = load_config(write(tmp_path, f'name = "s"\n[activations]\nlahc = "{variant}"\n'))
        assert config.activations.lahc == variant
    assert load_config(write(tmp_path, 'name = "s"\n'), {"activations.lahc": "paper-code"}).activations.lahc == (
        "paper-code"
    )
    message = error(tmp_path, '[activations]\nlahc = "paper"\n')
    assert "[activations] lahc: unknown LAHC variant 'paper'" in message
    assert "valid: textbook, paper-code" in message
    assert "lahc" in error(tmp_path, "[activations]\ntrails = 5\n").split("valid keys of [activations]: ")[1]
# --- upper bounds: a typo's extra digits fail with the valid range --------------------------


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("threads = 1025\n", "threads: must be in [0, 1024], got 1025 (0 = automatic)"),
        ("[sparsity]\nratio = 0\n", "[sparsity] ratio: must be in (0.0, 1.0), got 0.0 (0 would prune nothing"),
        ("[dense]\nepochs = 100001\n", "[dense] epochs: must be in [0, 100 000], got 100001"),
        ("[dense]\nepochs = 100001\ncheckpoint = 'w.pt'\n", "[dense] epochs: must be in [0, 100 000], got 100001"),
        ("[protocol]\nlr = 11\n", "[protocol] lr: must be in (0.0, 10.0], got 11.0"),
        ("[protocol]\nweight_decay = 2\n", "[protocol] weight_decay: must be in [0.0, 1.0], got 2.0"),
        ("[protocol]\nbatch_size = 65537\n", "[protocol] batch_size: must be in [1, 65 536], got 65537"),
        ("[activations]\ntrials = 100001\n", "[activations] trials: must be in [1, 100 000], got 100001"),
        ("[activations]\nepochs = 100001\n", "[activations] epochs: must be in [1, 100 000], got 100001"),
        ("[activations]\nhistory = 1001\n", "[activations] history: must be in [1, 1000], got 1001"),
        ("[activations]\nfraction = 5e-5\n", "[activations] fraction: must be in [0.0001, 1.0], got 5e-05 (a smaller"),
        ("[hpo]\ntrials = 100001\n", "[hpo] trials: must be in [1, 100 000], got 100001"),
        ("[hpo]\nepochs = 100001\n", "[hpo] epochs: must be in [1, 100 000], got 100001"),
        ("[hpo]\nfraction = 1e-5\n", "[hpo] fraction: must be in [0.0001, 1.0], got 1e-05"),
        ("[final]\nepochs = 100001\n", "[final] epochs: must be in [1, 100 000], got 100001"),
        ("[sparsity]\ngradual_epochs = 100001\n", "[sparsity] gradual_epochs: must be in [0, 100 000]"),
    ],
)
def test_upper_bounds(tmp_path, text, fragment):
    assert fragment in error(tmp_path, text)


@pytest.mark.parametrize(
    "text",
    [
        "threads = 1024\n",
        "[sparsity]\nratio = 1e-6\n",
        "[protocol]\nlr = 10\nweight_decay = 1\nbatch_size = 65536\n",
        "[activations]\ntrials = 100000\nepochs = 100000\nhistory = 1000\nfraction = 1e-4\n",
        "[hpo]\ntrials = 100000\nepochs = 100000\nfraction = 1e-4\n",
        "[final]\nepochs = 100000\n",
        "[dense]\nepochs = 100000\n",
        "[sparsity]\ngradual_epochs = 100000\n",
        "[sparsity]\ngradual_epochs = 0\n",
    ],
)
def test_the_bounds_themselves_are_valid(tmp_path, text):
    load_config(write(tmp_path, 'name = "s"\n' + text))


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("postgresql://u@h:99999/db", "malformed storage URL postgresql://u@h:99999/db"),
        ("postgresql://u@h:0/db", "port 0"),
        ("postgresql://u@[::1/db", "IPv6"),
        ("mysql://u:secret@h:x/db", "mysql://u:***@h:x/db"),
    ],
)
def test_malformed_server_urls_are_config_errors(tmp_path, url, fragment):
    message = error(tmp_path, f"storage = {json.dumps(url)}\n")
    assert f"storage: {fragment}" in message or ("storage: " in message and fragment in message)
    assert "secret" not in message


def test_a_config_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "s.toml"
    path.write_bytes(b'name = "s\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path)
