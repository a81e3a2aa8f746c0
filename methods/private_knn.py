"""Private-kNN: Zhu, Yu, Chandraker & Wang, "Private-kNN: Practical differential privacy for
computer vision", CVPR 2020.

Algorithm (first iteration of the paper, HOG features):
  1. features phi(.) that cost no privacy: HOG of each image (a fixed function of one image);
  2. for each public query x (the public pool in a seeded order):
       screening: Poisson-subsample the private set (rate gamma); votes n_j = #labels j among the
                  k nearest sampled records to phi(x); continue only if max_j n_j + N(0, sigma1^2) >= T;
       aggregation: on a fresh Poisson subsample, votes as above; label argmax_j (n_j + N(0, sigma2^2));
  3. train the student on the answered queries (supervised).
Mechanism and accounting: one record changes at most one neighbour vote of a query (L2 sensitivity
sqrt 2 for the histogram, 1 for its max). Each step is a Poisson-subsampled Gaussian mechanism
(Mironov et al. 2019, via the ledger): screening with noise multiplier sigma1 on every query,
aggregation with sigma2 / sqrt 2 on answered queries, as in the paper's analysis. The paper
reuses one subsample for both steps; we draw independent subsamples so that composing the two
subsampled mechanisms separately is valid. sigma2 (and sigma1 = ratio * sigma2) is calibrated so
that ``queries`` screened-and-answered queries fit the budget: the worst case, so the run can
never overspend. This is a data-independent (truly DP) guarantee; the paper's data-dependent
analysis of the screening step is not used because amplification by subsampling needs a bound
that holds for every pair of neighbouring datasets.
"""
import math

import numpy as np
import torch

from benchmark import Method
from benchmark.privacy import knn as K
from benchmark.privacy import ledger as L
from benchmark.privacy import pate as P
from benchmark.training import dataset_tensors
from benchmark.training.teachers import cached_features, source_digest


class PrivateKNN(Method):
    """Private-kNN (Poisson-subsampled kNN votes, noisy screening + Gaussian noisy max)."""

    name = "private-knn"
    family = "dp-training"
    needs = {"private_data", "public_data"}
    privacy_unit = "record"
    adjacency = "add/remove one record"
    citation = "Zhu et al., CVPR 2020"
    hparams = {"k": 20, "gamma": 0.2, "queries": 300, "threshold_frac": 0.6, "sigma1_ratio": 2.0,
               "features": "hog", "chunk": 50,
               "student_epochs": 30, "student_lr": 1e-3, "student_batch_size": 32, "student_min_steps": 300}
    tiny = {"queries": 20, "student_epochs": 1, "student_min_steps": 5}

    def fit(self, ctx):
        h = ctx.hparams
        gamma, k = h["gamma"], h["k"]
        x, y = dataset_tensors(ctx.private_data)[:2]
        (pool,) = ctx.public_data.tensors
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(ctx.seed))[:h["queries"]]
        queries = pool[order]
        q_total = len(queries)

        def planned(s):  # worst case: every query screened and answered
            return [L.subsampled_gaussian(h["sigma1_ratio"] * s, gamma, q_total),
                    L.subsampled_gaussian(s / math.sqrt(2), gamma, q_total)]
        sigma2 = L.calibrate_noise(planned, ctx.epsilon, ctx.delta, prior_events=ctx.ledger.events)
        sigma1, threshold = h["sigma1_ratio"] * sigma2, h["threshold_frac"] * k

        params = {"code": source_digest(K)}  # HOG / pixels: fixed transforms, cached across cells
        fx = cached_features(h["features"], params, x, lambda imgs: K.features(imgs, h["features"]))
        fq = cached_features(h["features"], params, queries, lambda imgs: K.features(imgs, h["features"]))
        gen = torch.Generator().manual_seed(ctx.seed)
        rng = np.random.default_rng([ctx.seed, 2020])
        answered_idx, labels = [], []
        for s in ctx.progress(range(0, q_total, h["chunk"]), desc="private-knn queries"):
            fqc = fq[s:s + h["chunk"]]
            screen_votes = K.subsampled_knn_votes(fqc, fx, y, ctx.num_classes, k, gamma, gen).numpy()
            ctx.ledger.record(L.subsampled_gaussian(sigma1, gamma, steps=len(fqc)))
            ok = np.flatnonzero(P.confident_screen(screen_votes, threshold, sigma1, rng))
            if len(ok) == 0:
                continue
            votes = K.subsampled_knn_votes(fqc[torch.as_tensor(ok)], fx, y, ctx.num_classes, k, gamma, gen).numpy()
            ctx.ledger.record(L.subsampled_gaussian(sigma2 / math.sqrt(2), gamma, steps=len(ok)))
            labels.append(P.gnmax(votes, sigma2, rng))
            answered_idx.append(ok + s)

        idx = np.concatenate(answered_idx) if answered_idx else np.zeros(0, dtype=np.int64)
        labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
        ctx.metrics.update(queries_asked=q_total, queries_answered=int(len(idx)), sigma1=sigma1, sigma2=sigma2)
        return P.train_student(ctx, queries[torch.as_tensor(idx, dtype=torch.long)], labels, h["student_epochs"],
                               h["student_lr"], h["student_batch_size"], h["student_min_steps"])
