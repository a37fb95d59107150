"""``python -m safs_optuna.config > config.md`` writes the config reference."""

from safs_optuna.config.reference import main

main()
