"""PATE-FM: PATE with FixMatch teachers and student, for label DP (Malek, Mironov, Prasad, Shilov,
Tramer, "Antipodean Robustness to Label Privacy" / "Label Differential Privacy via ALIBI and
PATE-FM", NeurIPS 2021).

Under label DP the images are public, only the labels are private. Algorithm:
1. Split the private labels into M disjoint shards; teacher t is trained with FixMatch on the images
   of shard t *with* their labels plus all private images as unlabelled data (public features).
2. The student asks ``queries`` randomly chosen training images; each is answered by GNMax:
   argmax_j (n_j + N(0, sigma^2)) over the teachers' vote histogram n.
3. The student is trained with FixMatch on the answered queries (labelled) and all images
   (unlabelled).
Privacy: changing one label changes one teacher, hence one vote per query. Each answer is GNMax,
accounted with PATE's data-dependent RDP (Papernot et al. 2018, Thm 6 + Prop 7, min with the
data-independent lambda/sigma^2; benchmark/privacy/pate.py); queries are answered while the
composed epsilon fits the target; one ``pate_data_dependent`` event records the release. As in the
PATE papers, the data-dependent epsilon is not itself sanitised (no smooth sensitivity).
"""
import numpy as np
import torch

from benchmark import Method
from benchmark.privacy import ledger as L
from benchmark.privacy import pate as P
from benchmark.training import dataset_tensors, predict_logits
from benchmark.training.semisup import fixmatch_train


class PATEFM(Method):
    """PATE with FixMatch teachers (features public under label DP), GNMax votes, FixMatch student."""

    name = "pate-fm"
    family = "label-dp"
    needs = {"private_data"}
    privacy_unit = "label"
    adjacency = "replace-one label (features public)"
    citation = "Malek et al., NeurIPS 2021"
    hparams = {"teachers": 50, "sigma": 8.0, "queries": 400, "teacher_steps": 40, "student_steps": 200,
               "batch_size": 16, "mu": 2, "tau": 0.95, "lambda_u": 1.0, "lr": 0.03}
    tiny = {"teachers": 8, "queries": 10, "teacher_steps": 3, "student_steps": 3, "sigma": 4.0}

    def fit(self, ctx):
        h = ctx.hparams
        x, y = dataset_tensors(ctx.private_data)[:2]
        fm = dict(batch_size=h["batch_size"], mu=h["mu"], tau=h["tau"], lambda_u=h["lambda_u"], lr=h["lr"],
                  device=ctx.device, progress=ctx.progress)
        shard = torch.as_tensor(P.shard_assignment(len(y), h["teachers"], ctx.seed))
        g = torch.Generator().manual_seed(ctx.seed)
        q_idx = torch.randperm(len(y), generator=g)[:h["queries"]]
        votes = np.zeros((len(q_idx), ctx.num_classes), dtype=np.int64)
        for t in range(h["teachers"]):
            own = torch.nonzero(shard == t).flatten()
            if len(own) == 0:
                continue
            teacher = fixmatch_train(ctx.build_student(), x[own], y[own], x, steps=h["teacher_steps"],
                                     seed=ctx.seed * 1000 + t, desc=f"teacher {t}", **fm)
            pred = predict_logits(teacher, x[q_idx], ctx.device).argmax(1).numpy()
            np.add.at(votes, (np.arange(len(q_idx)), pred), 1)

        if ctx.private:
            per_query = P.gnmax_release_rdp(votes, h["sigma"], L.ORDERS)
            n = P.largest_affordable_prefix(
                per_query, lambda r: ctx.ledger.remaining_ok([L.pate_data_dependent(L.ORDERS, r)]))
            if n > 0:
                ctx.ledger.record(L.pate_data_dependent(L.ORDERS, per_query[:n].sum(0), note=P.NOT_PRIVATE_NOTE,
                                                        aggregator="GNMax", sigma=h["sigma"], queries_answered=n))
            labels = P.gnmax(votes[:n], h["sigma"], np.random.default_rng([ctx.seed, 2021]))
        else:
            n, labels = len(q_idx), votes.argmax(1)
        labels = torch.as_tensor(labels, dtype=torch.long)
        # (no agreement rate with the private labels in the metrics: it would be an unaccounted release)
        ctx.metrics.update(teachers=h["teachers"], queries_answered=int(n))
        if n == 0:
            raise RuntimeError("the budget affords no GNMax answer; raise sigma or epsilon")
        return fixmatch_train(ctx.build_student(), x[q_idx[:n]], labels, x, steps=h["student_steps"],
                              seed=ctx.seed * 1000 + 999, desc="student", **fm)
