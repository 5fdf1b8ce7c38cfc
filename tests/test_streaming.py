"""The streamed data path of the classifiers (cxrlib.classify.StreamedImages): an arm is an index plan
over its source sets, decoded per batch, with the same bytes in the same batches as the in-memory path
(so the same weights), and peak memory bounded by the batch, not by the set."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrlib.classify import StreamedImages, predict, train_classifier
from cxrlib.data.labels import CHEXPERT_LABELS
from cxrlib.data.real import FileDataset
from toy_data import toy_set

LABELS = ("Cardiomegaly", "Edema")


def _files(folder, n, size, seed=0, noise=True):
    """``n`` PNG radiographs of ``size`` px on disk (random pixels, or flat ones: small files, fast to
    write) and their metadata (a real dataset's shape)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        p = folder / f"img{i}.png"
        img = rng.integers(0, 256, (size, size), dtype=np.uint8) if noise else np.full((size, size), i % 256, np.uint8)
        Image.fromarray(img).save(p, compress_level=1)
        rows.append({"image_id": f"i{i}", "patient_id": f"p{i}", "sex": "F", "age": 50.0, "path": str(p),
                     **{lab: float(rng.integers(0, 2)) for lab in CHEXPERT_LABELS}})
    return pd.DataFrame(rows)


def test_streamed_training_gives_the_in_memory_weights_bit_for_bit(tmp_path):
    """Same bytes, same batches, same arithmetic: streaming (in this process or in two DataLoader
    workers) changes where images are decoded, not what is computed."""
    files = FileDataset(_files(tmp_path / "png", 40, 24), size=16, name="files")  # decoded and resized per image
    arm, val = [toy_set(30, 1), files], toy_set(20, 2)
    assert len(StreamedImages(arm)) == 70 and torch.equal(StreamedImages(arm)[35][1], files.to_tensors()[0][5])
    runs = {w: train_classifier(train=arm, val=val, labels=LABELS, steps=6, eval_every=3, batch_size=16, seed=3,
                                data_workers=w, progress=False) for w in (None, 0, 2)}
    ref_model, ref_hist = runs[None]
    for w in (0, 2):
        model, hist = runs[w]
        assert all(torch.equal(a, b) for a, b in zip(ref_model.state_dict().values(), model.state_dict().values())), w
        pd.testing.assert_frame_equal(ref_hist.drop(columns=["seconds", "train_images_per_s"]),
                                      hist.drop(columns=["seconds", "train_images_per_s"]))
        np.testing.assert_array_equal(predict(ref_model, files), predict(model, files, data_workers=w))
    with pytest.raises(ValueError, match="data_workers"):
        train_classifier(train=arm, val=val, labels=LABELS, steps=2, data_workers=-1, progress=False)


CHILD = textwrap.dedent("""
    import json, resource, sys
    import pandas as pd
    from cxrlib.classify import train_classifier
    from cxrlib.data.real import FileDataset
    ds = FileDataset(pd.read_csv(sys.argv[1]), size=256, name="files")
    workers = None if sys.argv[2] == "memory" else 0
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    train_classifier(train=ds, val=None, labels=("Cardiomegaly", "Edema"), steps=3, batch_size=8, data_workers=workers,
                     progress=False)
    print(json.dumps({"before_kb": before, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
""")


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB is Linux's")
def test_a_streamed_set_larger_than_the_memory_bound_trains_within_it(tmp_path):
    """Peak memory of training on 4,000 images of 256 px (250 MB as uint8) over the peak of the same
    training on 400 of them (the model, activations and threads) is the set's cost. The bound is half
    the set: streamed, the cost stays under it (measured: ~3 MB); in memory, it exceeds it (~210 MB)."""
    n, size = 4000, 256
    set_mb = n * size * size / 2**20
    meta = _files(tmp_path / "png", n, size, noise=False)
    meta.to_csv(tmp_path / "large.csv", index=False)
    meta.iloc[:400].to_csv(tmp_path / "small.csv", index=False)

    def growth(csv, path):
        out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / csv), path], capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        return (r["peak_kb"] - r["before_kb"]) / 1024

    base = growth("small.csv", "stream")
    streamed, in_memory = growth("large.csv", "stream") - base, growth("large.csv", "memory") - base
    bound = set_mb / 2
    assert streamed < bound < in_memory, (streamed, in_memory, bound)
