"""`train.fit`'s data order is pinned: a change to how batches are drawn changes every trained model."""
import torch

from mtk.train import TrainConfig, epoch_loader


class Items(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return i


def batches(seed: int, epoch: int) -> list[list[int]]:
    loader = epoch_loader(Items(), TrainConfig(stage=1, batch_size=4, seed=seed), epoch, torch.Generator(), None,
                          [], False)
    loader.collate_fn = list
    return list(loader)


def test_one_process_draws_the_pinned_order():
    """The order of BatchSampler(RandomSampler(generator)) seeded by (seed, epoch). Found 2026-12-06: the
    multi-GPU change replaced DataLoader(shuffle=True, generator), which looks the same but draws another
    order, and no test saw it; a fresh-clone `make reproduce` then no longer gave the committed Table 1
    (README, Known issues). Changing this order is a change of every run's results: rerun and re-ship."""
    assert batches(0, 0) == [[4, 1, 7, 5], [3, 9, 0, 8], [6, 2]]
    assert batches(0, 1) == [[5, 6, 1, 2], [0, 8, 9, 3], [7, 4]]
    assert batches(1, 0) == [[7, 6, 9, 0], [5, 2, 1, 4], [3, 8]]
    assert batches(0, 0) == batches(0, 0)                     # seeded by (seed, epoch), not by what ran before
