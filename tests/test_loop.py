"""Probes in a user's own training loop: every update order, bit-identical training, misuse."""

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from gantrack import GantrackError
from gantrack.analysis import explain, load_runs
from gantrack.contract import PER_SAMPLE_ARTIFACT
from gantrack.loop import LoopProbes


def players(seed=0):
    torch.manual_seed(seed)
    D = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    G = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 4))
    return D, G


def user_loop(order, steps=40, probes=None, seed=0, models=None):
    """A plain PyTorch GAN loop in one of the four update orders; ``probes`` adds the marked lines."""
    D, G = models or players(seed)
    opt_d, opt_g = torch.optim.Adam(D.parameters(), 2e-3), torch.optim.Adam(G.parameters(), 2e-3)
    bce = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        real = 1.0 + 0.5 * torch.randn(32, 4, generator=gen)
        fake = G(torch.randn(32, 2, generator=gen))
        ones, zeros = torch.ones(32, 1), torch.zeros(32, 1)
        if order in ("d-first", "d-first-same-batch"):
            s_real, s_fake = D(real), D(fake.detach())
            d_loss = bce(s_real, ones) + bce(s_fake, zeros)
            if probes:
                probes.d_step(fake.detach(), s_fake, s_real)  # gantrack
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            if order == "d-first":
                fake = G(torch.randn(32, 2, generator=gen))
            s_gen = D(fake)
            g_loss = bce(s_gen, ones)
            if probes:
                probes.g_step(fake, s_gen)  # gantrack
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
        elif order == "g-first":
            s_gen = D(fake)
            g_loss = bce(s_gen, ones)
            if probes:
                probes.g_step(fake, s_gen)  # gantrack
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
            s_real, s_fake = D(real), D(fake.detach())
            d_loss = bce(s_real, ones) + bce(s_fake, zeros)
            if probes:
                probes.d_step(fake.detach(), s_fake, s_real)  # gantrack
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
        else:  # simultaneous: one forward pass, both updated after it
            s_real, s_fake = D(real), D(fake)
            d_loss = bce(s_real, ones) + bce(s_fake, zeros)
            g_loss = bce(s_fake, ones)
            if probes:
                probes.d_step(fake.detach(), s_fake, s_real)  # gantrack
                probes.g_step(fake, s_fake)  # gantrack
            opt_d.zero_grad()
            opt_g.zero_grad()
            d_grads = torch.autograd.grad(d_loss, list(D.parameters()), retain_graph=True)
            g_grads = torch.autograd.grad(g_loss, list(G.parameters()))
            for p, gr in zip(D.parameters(), d_grads):
                p.grad = gr
            for p, gr in zip(G.parameters(), g_grads):
                p.grad = gr
            opt_d.step()
            opt_g.step()
        if probes:
            probes.end_step()  # gantrack
        losses.append((d_loss.item(), g_loss.item()))
    return D, G, losses


ONE = {  # factors that are 1 by construction in each order
    "d-first": [],
    "d-first-same-batch": ["sampling"],
    "g-first": ["timing"],
    "simultaneous": ["context", "timing", "sampling"],
}


@pytest.mark.parametrize("order", list(ONE))
def test_every_update_order_gives_the_factors_it_allows(order, store):
    D, G = players()
    probes = LoopProbes(D, order=order, experiment="loop", tracking_uri=store, flush_every=16)
    with probes:
        user_loop(order, probes=probes, models=(D, G))
    rs = load_runs(run_ids=[probes.run_id], tracking_uri=store, progress=False)
    assert rs.runs["tags.gantrack.update_order"].iloc[0] == order
    ex = explain(rs, probes.run_id, n_boot=100, min_length=16)
    f = ex["factors"].set_index("factor")["estimate"]
    for name in ONE[order]:
        assert f[name] == pytest.approx(1.0, abs=1e-6), name
    for name in set(["link", "context", "timing", "sampling"]) - set(ONE[order]):
        assert np.isfinite(f[name]), name
    assert f["residual"] == pytest.approx(1.0, rel=1e-6)  # loss/g is the order's g cell
    if order == "simultaneous":
        assert f["link"] == pytest.approx(ex["summary"]["ratio"].iloc[0], rel=1e-6)
    s = ex["summary"].iloc[0]
    # per-sample probes were written and read: the law has numbers (pinned in test_pins)
    assert s["law_verdict"] != "unavailable" and np.isfinite(s["predicted_link"]), s["law_reason"]
    assert len(rs.per_sample(probes.run_id)["steps"]) == 40


@pytest.mark.parametrize("order", list(ONE))
def test_training_is_bit_identical_with_and_without_probes(order, store):
    D0, G0, plain = user_loop(order, steps=25)
    D, G = players()
    with LoopProbes(D, order=order, experiment="bits", tracking_uri=store) as probes:
        _, _, probed = user_loop(order, steps=25, probes=probes, models=(D, G))
    assert probed == plain
    for a, b in zip(
        list(D0.state_dict().values()) + list(G0.state_dict().values()),
        list(D.state_dict().values()) + list(G.state_dict().values()),
    ):
        assert torch.equal(a, b)


def test_probabilities_from_a_sigmoid_d_match_logits(store):
    D, _ = players()
    sigmoid_d = nn.Sequential(D, nn.Sigmoid())  # G's step scores D's own batch below: d-first-same-batch
    probes = LoopProbes(
        sigmoid_d, order="d-first-same-batch", outputs="probabilities", experiment="p", tracking_uri=store
    )
    with probes:
        x = torch.randn(8, 4)
        p = probes.D(x)
        probes.d_step(x, p)
        probes.g_step(x, p[:8])
        probes.end_step()
    m = MlflowClient(store).get_run(probes.run_id).data.metrics
    logit = D(x).detach()
    assert m["loss/d_fake"] == pytest.approx(torch.nn.functional.softplus(logit).mean().item(), rel=1e-4)


def test_misuse_is_a_clear_error_and_the_run_ends_failed_with_nothing_half_written(store):
    D, _ = players()
    with pytest.raises(GantrackError, match="no parameters|parameters"):
        LoopProbes(nn.Identity())
    with pytest.raises(GantrackError, match="unknown order"):
        LoopProbes(D, order="sideways")
    probes = LoopProbes(D, order="d-first", experiment="bad", tracking_uri=store)
    with pytest.raises(GantrackError, match="g_step\\(\\) without d_step"):
        with probes:
            x = torch.randn(8, 4)
            probes.d_step(x, D(x))
            x_gen = torch.randn(8, 4)  # d-first: G scores a fresh batch
            probes.g_step(x_gen, D(x_gen))
            probes.end_step()
            probes.g_step(x_gen, D(x_gen))  # the next step starts with G: wrong for d-first
    run = MlflowClient(store).get_run(probes.run_id)
    assert run.info.status == "FAILED" and "g_step() without d_step()" in run.data.tags["gantrack.failure"]
    assert PER_SAMPLE_ARTIFACT not in {a.path for a in MlflowClient(store).list_artifacts(probes.run_id, "probes")}
    other = LoopProbes(D, experiment="bad", tracking_uri=store)
    with pytest.raises(GantrackError, match="4 scores for a batch of 8"):
        with other:
            other.d_step(torch.randn(8, 4), D(torch.randn(4, 4)))
    with pytest.raises(GantrackError, match="end_step\\(\\) without"):
        with LoopProbes(D, experiment="bad", tracking_uri=store) as p3:
            p3.end_step()
    with pytest.raises(GantrackError, match="no run"):
        LoopProbes(D).d_step(torch.randn(8, 4), D(torch.randn(8, 4)))


def _probe_histories(store, run_id):
    c = MlflowClient(store)
    keys = [k for k in c.get_run(run_id).data.metrics if k.startswith("probe/")]
    return {k: [m.value for m in sorted(c.get_metric_history(run_id, k), key=lambda m: m.step)] for k in keys}


@pytest.mark.parametrize("order", ["d-first", "d-first-same-batch"])
def test_probe_cells_taken_from_the_loops_scores_equal_the_passes_they_replace(order, store, monkeypatch):
    import gantrack.loop as loop

    runs = {}
    for every in (1, loop.REUSE_CHECK_EVERY):  # 1: the pass runs every step; default: mostly reused
        monkeypatch.setattr(loop, "REUSE_CHECK_EVERY", every)
        D, G = players()
        with LoopProbes(D, order=order, experiment="reuse", tracking_uri=store) as probes:
            user_loop(order, steps=30, probes=probes, models=(D, G))
        runs[every] = _probe_histories(store, probes.run_id)
    passes, reused = runs.values()
    assert passes.keys() == reused.keys() and len(passes) == 15
    for key in passes:
        np.testing.assert_allclose(reused[key], passes[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_a_combined_d_batch_is_noticed_and_its_g_context_cell_measured_every_step(store):
    """D scores real and fake in one BatchNorm batch: its fake scores are not the G step's context,
    so the check at the first step must send every later step through the real pass."""
    D, G = players()
    opt_d = torch.optim.Adam(D.parameters(), 2e-3)
    bce = nn.BCEWithLogitsLoss()
    with LoopProbes(D, order="d-first-same-batch", experiment="combined", tracking_uri=store) as probes:
        for _ in range(8):
            real, fake = 1.0 + 0.5 * torch.randn(32, 4), G(torch.randn(32, 2)).detach()
            scores = D(torch.cat([real, fake]))
            probes.d_step(fake, scores[32:], scores[:32])
            opt_d.zero_grad()
            bce(scores, torch.cat([torch.ones(32, 1), torch.zeros(32, 1)])).backward()
            opt_d.step()
            probes.g_step(fake, D(fake))
            probes.end_step()
    h = _probe_histories(store, probes.run_id)
    before, gctx = np.array(h["probe/dbatch_before/p"]), np.array(h["probe/dbatch_before_gctx/p"])
    assert len(before) == 8 and (np.abs(before - gctx) > 1e-4).all()


class _PinnedBatchNorm(nn.Sequential):
    """A D whose train() keeps its BatchNorm in eval mode (a frozen-statistics D, as some loops have)."""

    def train(self, mode=True):
        super().train(mode)
        self[1].eval()
        return self


@pytest.mark.parametrize("pinned", [False, True])
def test_the_probe_passes_leave_every_layers_mode_as_the_loop_set_it(store, pinned):
    D, G = players(3)
    if pinned:
        D = _PinnedBatchNorm(*D)
        D.train()
    else:
        D[2].eval()  # a mixed-mode D: one layer in eval while D trains (the old probes reset it to D's mode)
    modes = [m.training for m in D.modules()]
    probes = LoopProbes(D, order="d-first", experiment="modes", tracking_uri=store)
    with probes:
        user_loop("d-first", steps=3, probes=probes, models=(D, G))
        assert [m.training for m in D.modules()] == modes
        assert [m.training for m in probes._copy.modules()] == modes  # the copy is put back too
    assert not probes._copy[1].training if pinned else probes._copy[1].training
