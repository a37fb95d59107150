import torch

# Several test processes may share two cores; one thread each keeps them from thrashing.
torch.set_num_threads(1)
