import sys

import numpy as np

a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
ka, kb = set(a.files), set(b.files)
if ka != kb:
    print("keys only in a:", sorted(ka - kb)[:20])
    print("keys only in b:", sorted(kb - ka)[:20])
n_eq = 0
for k in sorted(ka & kb):
    x, y = a[k], b[k]
    if x.shape != y.shape or x.dtype != y.dtype:
        print(f"{k}: shape/dtype {x.shape}{x.dtype} vs {y.shape}{y.dtype}")
        continue
    if x.dtype.kind in "fc":
        if np.array_equal(x, y, equal_nan=True):
            n_eq += 1
        else:
            d = np.nanmax(np.abs(x.astype(np.float64) - y.astype(np.float64)))
            print(f"{k}: max |diff| {d:.3g}")
    elif np.array_equal(x, y):
        n_eq += 1
    else:
        print(f"{k}: differs")
print(f"{n_eq} of {len(ka & kb)} bit-identical")
