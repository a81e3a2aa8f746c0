"""PATE with Confident-GNMax: Papernot, Song, Mironov, Raghunathan, Talwar & Erlingsson,
"Scalable private learning with PATE", ICLR 2018 (Algorithm 1).

Algorithm:
  1. M teachers on disjoint shards of the private data (as in PATE);
  2. for each public query x (the public pool in a seeded order), with votes n_j(x):
       if max_j n_j(x) + N(0, sigma1^2) >= T:  answer argmax_j (n_j(x) + N(0, sigma2^2))
       else:                                   answer nothing (the query is dropped);
  3. train the student on the answered queries (supervised; the paper's semi-supervised VAT
     student is not reproduced).
Accounting (data-dependent RDP, benchmark/privacy/pate.py): every query pays the threshold
step (Theorem 6 on its binary outcome, or lambda / (2 sigma1^2)); answered queries also pay
GNMax (Theorem 6 with Prop. 7, or lambda / sigma2^2). Queries are processed while the composed
epsilon stays within the target, up to ``queries``. One ``pate_data_dependent`` event records
the whole release; its epsilon depends on the private votes and is not itself private (the
paper's smooth-sensitivity release of it is not implemented).
"""
import numpy as np
import torch

from benchmark import Method
from benchmark.privacy import ledger as L
from benchmark.privacy import pate as P


class PATEGNMax(Method):
    """PATE with Confident-GNMax aggregation and data-dependent RDP accounting."""

    name = "pate-gnmax"
    family = "dp-training"
    needs = {"private_data", "public_data"}
    privacy_unit = "record"
    adjacency = "add/remove one record"
    citation = "Papernot et al., ICLR 2018"
    hparams = {"teachers": 40, "threshold": 20.0, "sigma1": 8.0, "sigma2": 4.0, "queries": 1000, "teacher_min_steps": 100,
               "student_epochs": 30, "student_lr": 1e-3, "student_batch_size": 32, "student_min_steps": 300}
    tiny = {"teachers": 4, "threshold": 1.0, "queries": 20, "teacher_min_steps": 5, "student_epochs": 1, "student_min_steps": 5}

    def fit(self, ctx):
        h = ctx.hparams
        (pool,) = ctx.public_data.tensors
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(ctx.seed))[:h["queries"]]
        queries = pool[order]
        votes = P.teacher_votes(ctx, h["teachers"], queries, h["teacher_min_steps"])

        rng = np.random.default_rng([ctx.seed, 2018])
        answered = P.confident_screen(votes, h["threshold"], h["sigma1"], rng)
        per_query = P.confident_gnmax_release_rdp(votes, answered, h["threshold"], h["sigma1"], h["sigma2"], L.ORDERS)
        n = P.largest_affordable_prefix(
            per_query, lambda r: ctx.ledger.remaining_ok([L.pate_data_dependent(L.ORDERS, r)]))
        answered = answered[:n]
        if n > 0:
            ctx.ledger.record(L.pate_data_dependent(
                L.ORDERS, per_query[:n].sum(0), note=P.NOT_PRIVATE_NOTE, aggregator="Confident-GNMax",
                threshold=h["threshold"], sigma1=h["sigma1"], sigma2=h["sigma2"],
                queries_asked=n, queries_answered=int(answered.sum())))
        idx = np.flatnonzero(answered)
        labels = P.gnmax(votes[idx], h["sigma2"], rng)

        ctx.metrics.update(queries_asked=n, queries_answered=int(len(idx)), teachers=h["teachers"])
        return P.train_student(ctx, queries[torch.as_tensor(idx, dtype=torch.long)], labels, h["student_epochs"],
                               h["student_lr"], h["student_batch_size"], h["student_min_steps"])
