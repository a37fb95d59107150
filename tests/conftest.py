import torch

# Several test processes may share two cores; one thread each keeps them from thrashing.
torch.set_num_threads(1)

# The postgres_server fixture: a throwaway PostgreSQL server for tests/test_postgres.py.
pytest_plugins = ["tests.pg_server"]
