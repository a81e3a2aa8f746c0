"""PATE with the Laplace noisy max (LNMax): Papernot, Abadi, Erlingsson, Goodfellow & Talwar,
"Semi-supervised knowledge transfer for deep learning from private training data", ICLR 2017.

Algorithm:
  1. split the private data into M disjoint shards (each record to an independent uniform teacher);
     train one teacher per shard (teacher architecture and recipe, through the teacher cache);
  2. for public queries x_1, x_2, ... (the public pool in a seeded order): votes n_j(x) = #teachers
     predicting j; label f(x) = argmax_j (n_j(x) + Lap(1 / gamma));
  3. train the student on the labelled queries (supervised; the paper's semi-supervised GAN student
     is not reproduced).
Mechanism and accounting: each query is (2 gamma)-DP (one record changes one teacher's vote).
The per-query cost is the data-dependent moments-accountant bound (the paper's Theorem 3, as
RDP), or the data-independent one where smaller; queries are answered while the composed
epsilon stays within the target, up to ``queries``. One ``pate_data_dependent`` event records
the whole release; its epsilon depends on the private votes and is not itself private (as
in the paper).
"""
import numpy as np
import torch

from benchmark import Method
from benchmark.privacy import ledger as L
from benchmark.privacy import pate as P


class PATE(Method):
    """PATE (LNMax aggregation, data-dependent moments accountant)."""

    name = "pate"
    family = "dp-training"
    needs = {"private_data", "public_data"}
    privacy_unit = "record"
    adjacency = "add/remove one record"
    citation = "Papernot et al., ICLR 2017"
    hparams = {"teachers": 40, "gamma": 0.2, "queries": 1000, "teacher_min_steps": 100,
               "student_epochs": 30, "student_lr": 1e-3, "student_batch_size": 32, "student_min_steps": 300}
    tiny = {"teachers": 4, "queries": 20, "teacher_min_steps": 5, "student_epochs": 1, "student_min_steps": 5}

    def fit(self, ctx):
        h = ctx.hparams
        (pool,) = ctx.public_data.tensors
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(ctx.seed))[:h["queries"]]
        queries = pool[order]
        votes = P.teacher_votes(ctx, h["teachers"], queries, h["teacher_min_steps"])

        # privacy cost of each query, then the longest prefix of queries the budget affords
        per_query = P.lnmax_release_rdp(votes, h["gamma"], L.ORDERS)
        n = P.largest_affordable_prefix(
            per_query, lambda r: ctx.ledger.remaining_ok([L.pate_data_dependent(L.ORDERS, r)]))
        if n > 0:
            ctx.ledger.record(L.pate_data_dependent(L.ORDERS, per_query[:n].sum(0), note=P.NOT_PRIVATE_NOTE,
                                                    aggregator="LNMax", gamma=h["gamma"], queries=n))
        rng = np.random.default_rng([ctx.seed, 2017])
        labels = P.lnmax(votes[:n], h["gamma"], rng)

        ctx.metrics.update(queries_asked=n, queries_answered=n, teachers=h["teachers"],
                           teacher_consensus=float(np.mean(votes.max(1) / votes.sum(1))) if len(votes) else 0.0)
        return P.train_student(ctx, queries[:n], labels, h["student_epochs"], h["student_lr"],
                               h["student_batch_size"], h["student_min_steps"])
