"""Your data: a function returning ``(train, val, test)`` map-style datasets.

Here the 12 000 Fashion-MNIST images that ship with safs-optuna (so the example runs offline),
served as plain ``Dataset``s with a per-item transform, as your own data would be. ``val`` is
``None``: safs-optuna then holds out ``[data] val_size`` of ``train`` for validation.
"""

import numpy as np
import torch
from torch.utils.data import Dataset


class Images(Dataset):
    """uint8 images, served normalised (the transform runs per item, in a DataLoader)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = torch.from_numpy(images), torch.from_numpy(labels).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return (self.images[i][None].float() / 255.0 - 0.286) / 0.353, int(self.labels[i])


def load_data():
    from importlib import resources

    with resources.as_file(resources.files("safs_optuna") / "datasets" / "fashion_mnist_quickstart.npz") as f:
        with np.load(f) as z:
            train = Images(z["x_train"], z["y_train"])
            test = Images(z["x_test"], z["y_test"])
    return train, None, test
