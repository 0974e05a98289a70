"""Cluster the deepcomp benchmark data with scikit-learn and report SSE and time.

Usage (after `cargo run -p deepcomp-quant --example export_gaussian -- DIR`):
    python3 crates/quant/scripts/sklearn_compare.py DIR

The data are raw little-endian float32 written by the Rust example; they are
given to sklearn as float64 (exact widening) and the SSE is recomputed in
float64 from sklearn's labels and centres. Linear init = 32 centroids evenly
spaced on [min, max], exactly as deepcomp's Init::Linear.
"""
import sys, time
import numpy as np
from sklearn.cluster import KMeans

d = sys.argv[1] if len(sys.argv) > 1 else "target/quant-sklearn"
k = 32
for name in ["g235200", "g2359296"]:
    x = np.fromfile(f"{d}/{name}.f32", dtype="<f4").astype(np.float64).reshape(-1, 1)
    lin = np.linspace(x.min(), x.max(), k).reshape(-1, 1)
    for label, init in [("linear", lin), ("k-means++", "k-means++")]:
        best = None
        for rep in range(3):
            t = time.perf_counter()
            km = KMeans(n_clusters=k, init=init, n_init=1, random_state=0).fit(x)
            dt = time.perf_counter() - t
            best = dt if best is None else min(best, dt)
        c = km.cluster_centers_[:, 0]
        sse = float(((x[:, 0] - c[km.labels_]) ** 2).sum())
        print(f"{name} n={x.shape[0]} init={label}: sse={sse:.9e} inertia={km.inertia_:.9e} "
              f"iters={km.n_iter_} time(best of 3)={best:.3f}s")
