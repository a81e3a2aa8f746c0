"""DGD: discriminative-generative distillation (Ge, Liu, Wang, Li & Zeng, IEEE TIP 2022,
"Learning privacy-preserving student networks via discriminative-generative distillation",
doi 10.1109/TIP.2022.3226416, arXiv 2409.02404).

Algorithm (the paper's two streams and its semi-supervised student):
  1. discriminative stream: a baseline classifier on the private data (here the benchmark's
     teacher, which is exactly that) and an ensemble of M teachers on disjoint private shards
     (PATE's shards, shared with the PATE rows through the teacher cache);
  2. generative stream: a generator trained data-free against the baseline classifier as a
     fixed discriminator (DAFL's one-hot + activation + information-entropy losses, the shared
     synthesizer); it makes n_synthetic samples, on which a VAE is trained;
  3. the first ``queries`` synthetic samples are labelled by the teacher ensemble through DP
     aggregation: GNMax, argmax_j (n_j(x) + N(0, sigma^2)) (Papernot et al., ICLR 2018);
  4. the rest are embedded by the VAE and reconstructed, giving (x, z, x_rec = Dec(z)) triples;
  5. student: cross-entropy on the privately labelled samples + tangent-normal adversarial
     regularisation (TNAR) on the reconstructions, the tangent space being the decoder's
     Jacobian at z (benchmark/synthesis/manifold.py).
Accounting: GNMax per query, data-dependent RDP (Theorem 6 + Prop. 7, min with lambda/sigma^2),
benchmark/privacy/pate.py; the longest prefix of queries that fits the budget is answered,
one ``pate_data_dependent`` event. The generator and VAE depend on the private data through the
non-private baseline classifier (the paper's design): that path is not in the ledger
(docs/data-free.md); the membership audit is what measures it.
"""
import numpy as np
import torch

from benchmark import Method
from benchmark.models import Generator
from benchmark.privacy import ledger as L
from benchmark.privacy import pate as P
from benchmark.synthesis.distill import save_sample_grid
from benchmark.synthesis.manifold import VAE, tangent_basis, tangent_normal_adversarial_loss, train_vae
from benchmark.synthesis.synthesizer import Synthesizer


class DGD(Method):
    name = "dgd"
    family = "dp-data-free"
    needs = {"private_data", "teacher"}
    privacy_unit = "record"
    adjacency = "add/remove one record (teacher-ensemble labels; the generator's baseline classifier is not covered)"
    citation = "Ge et al., IEEE TIP 2022"
    hparams = {"teachers": 40, "teacher_min_steps": 100, "sigma": 4.0, "queries": 500,
               "g_iters": 200, "g_batch_size": 64, "lr_g": 1e-2, "w_oh": 1.0, "w_act": 0.1, "w_balance": 5.0,
               "latent_dim": 64, "gen_channels": 32, "n_synthetic": 2048,
               "vae_latent": 8, "vae_steps": 300, "vae_lr": 2e-3,
               "student_steps": 300, "batch_size": 64, "lr_s": 2e-3,
               "w_tangent": 1.0, "w_normal": 1.0, "eps_tangent": 1.0, "eps_normal": 0.5}
    tiny = {"teachers": 3, "teacher_min_steps": 5, "queries": 16, "sigma": 8.0, "g_iters": 2, "n_synthetic": 64, "vae_steps": 3,
            "student_steps": 3, "batch_size": 16}

    def fit(self, ctx):
        hp, device = ctx.hparams, ctx.device
        baseline = ctx.teacher.eval().requires_grad_(False)
        student = ctx.build_student()

        # generative stream: data-free generator against the fixed baseline classifier
        G = Generator(ctx.input_shape, latent_dim=hp["latent_dim"], base_channels=hp["gen_channels"]).to(device)
        synth = Synthesizer(teacher=baseline, student=student, input_shape=ctx.input_shape,
                            num_classes=ctx.num_classes, mode="generator", generator=G, lr_g=hp["lr_g"],
                            weights={"oh": hp["w_oh"], "act": hp["w_act"], "balance": hp["w_balance"]},
                            batch_size=hp["g_batch_size"], g_steps=1, device=device)
        for _ in ctx.progress(range(hp["g_iters"]), desc="dgd generator"):
            synth.generator_step()
        synth.remove_hooks()
        G.eval()
        synthetic = torch.cat([synth.sample(min(512, hp["n_synthetic"] - i))[0]
                               for i in range(0, hp["n_synthetic"], 512)])
        save_sample_grid(ctx, synthetic)
        vae = train_vae(VAE(ctx.input_shape, hp["vae_latent"]).to(device), synthetic, hp["vae_steps"],
                        lr=hp["vae_lr"])

        # discriminative stream: teacher-ensemble votes on the first queries, GNMax under the budget
        n_q = min(hp["queries"], len(synthetic) // 2)
        queries, unlabelled = synthetic[:n_q], synthetic[n_q:]
        votes = P.teacher_votes(ctx, hp["teachers"], queries.cpu(), hp["teacher_min_steps"])
        per_query = P.gnmax_release_rdp(votes, hp["sigma"], L.ORDERS)
        n = P.largest_affordable_prefix(
            per_query, lambda r: ctx.ledger.remaining_ok([L.pate_data_dependent(L.ORDERS, r)]))
        if n > 0:
            ctx.ledger.record(L.pate_data_dependent(L.ORDERS, per_query[:n].sum(0), note=P.NOT_PRIVATE_NOTE,
                                                    aggregator="GNMax", sigma=hp["sigma"], queries_answered=n))
        rng = np.random.default_rng([ctx.seed, 2022])
        labels = torch.as_tensor(P.gnmax(votes[:n], hp["sigma"], rng), dtype=torch.long, device=device)
        labelled = queries[:n]
        ctx.metrics.update(queries_answered=n, teachers=hp["teachers"],
                           label_agreement_with_baseline=float((baseline(labelled).argmax(1) == labels)
                                                               .float().mean()) if n else 0.0)

        # semi-supervised student: CE on the private labels + TNAR on VAE reconstructions
        opt = torch.optim.Adam(student.parameters(), lr=hp["lr_s"])
        b = hp["batch_size"]
        for _ in ctx.progress(range(hp["student_steps"]), desc="dgd student"):
            student.train()
            loss = torch.zeros((), device=device)
            if n:
                idx = torch.randint(0, n, (min(b, n),), device=device)
                loss = loss + torch.nn.functional.cross_entropy(student(labelled[idx]), labels[idx])
            if hp["w_tangent"] or hp["w_normal"]:
                u = unlabelled[torch.randint(0, len(unlabelled), (b,), device=device)]
                with torch.no_grad():
                    z = vae.encode(u)[0]
                    x_rec = vae.decode(z)
                basis = tangent_basis(vae.decode, z)
                tar, nar = tangent_normal_adversarial_loss(student, x_rec, basis, hp["eps_tangent"],
                                                           hp["eps_normal"])
                loss = loss + hp["w_tangent"] * tar + hp["w_normal"] * nar
            opt.zero_grad()
            loss.backward()
            opt.step()
        return student.eval()
