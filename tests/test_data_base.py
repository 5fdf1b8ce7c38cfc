

def test_array_subset_is_the_generic_subset_in_one_indexing():
    import numpy as np
    import pandas as pd

    from cxrlib.data.base import ArrayDataset, CXRDataset

    rng = np.random.default_rng(0)
    meta = pd.DataFrame({"patient_id": [f"p{i}" for i in range(6)], "A": rng.integers(0, 2, 6).astype(float)})
    for images in (rng.integers(0, 256, (6, 4, 4)).astype(np.uint8), rng.random((6, 4, 4)).astype(np.float32)):
        ds = ArrayDataset(images, meta, label_names=["A"])
        for idx in ([4, 0, 4, 2], []):
            fast, generic = ds.subset(idx), CXRDataset.subset(ds, idx)
            assert fast.images.dtype == np.uint8 and np.array_equal(fast.images, generic.images)
            assert fast.meta.equals(generic.meta) and fast.label_names == generic.label_names
