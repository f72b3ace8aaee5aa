"""Loops as people write them, by hand (not gantrack's harness): a mis-declared order, logits passed as
probabilities, extra metrics, critic steps, a conditional D, NaN scores, Lightning without Lightning."""

import logging
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from gantrack import GantrackError, LoopProbes
from gantrack import contract as C
from gantrack.analysis import explain, load_runs


def mlp(inp: int, out: int = 1) -> nn.Module:
    return nn.Sequential(nn.Linear(inp, 16), nn.LeakyReLU(0.2), nn.Linear(16, out))


def same_batch_loop(probes: LoopProbes, steps: int = 3, seed: int = 0):
    """pytorch/examples' DCGAN order: D on a fake batch, D's update, G scored on that same batch."""
    torch.manual_seed(seed)
    D, G = probes.D, mlp(2, 4)
    opt_d, opt_g = torch.optim.Adam(D.parameters(), 1e-3), torch.optim.Adam(G.parameters(), 1e-3)
    bce = nn.BCEWithLogitsLoss()
    for _ in range(steps):
        real, fake = torch.randn(16, 4) + 1, G(torch.randn(16, 2))
        s_real, s_fake = D(real), D(fake.detach())
        probes.d_step(fake.detach(), s_fake, s_real)
        opt_d.zero_grad()
        (bce(s_real, torch.ones_like(s_real)) + bce(s_fake, torch.zeros_like(s_fake))).backward()
        opt_d.step()
        s_gen = D(fake)
        probes.g_step(fake, s_gen)
        opt_g.zero_grad()
        bce(s_gen, torch.ones_like(s_gen)).backward()
        opt_g.step()
        probes.end_step()


@pytest.mark.parametrize(
    "declared, message",
    [
        ("g-first", "d_step\\(\\) came before g_step\\(\\) but the order is 'g-first'"),
        ("d-first", "declare order='d-first-same-batch'"),
    ],
)
def test_an_order_the_calls_contradict_is_refused(declared, message, store):
    probes = LoopProbes(mlp(4), order=declared, experiment="orders", tracking_uri=store)
    with pytest.raises(GantrackError, match=message):
        with probes:
            same_batch_loop(probes)
    run = MlflowClient(store).get_run(probes.run_id)
    assert run.info.status == "FAILED" and run.data.tags[C.TAG_ORDER] == declared
    correct = LoopProbes(mlp(4), order="d-first-same-batch", experiment="orders", tracking_uri=store)
    with correct:
        same_batch_loop(correct)
    assert MlflowClient(store).get_run(correct.run_id).info.status == "FINISHED"


def test_logits_passed_as_probabilities_are_one_line(store):
    D = mlp(4)
    probes = LoopProbes(D, outputs="probabilities", order="d-first-same-batch", experiment="p", tracking_uri=store)
    x = torch.randn(8, 4) * 10
    with pytest.raises(GantrackError, match="outputs='probabilities' needs D\\(x\\) in \\[0, 1\\]") as e:
        with probes:
            probes.d_step(x, D(x) * 50)  # logits well outside [0, 1]
    assert "\n" not in str(e.value) and "outputs='logits'" in str(e.value)
    assert MlflowClient(store).get_run(probes.run_id).info.status == "FAILED"


def wgan_gp_ring(C_: nn.Module, probes: LoopProbes | None, steps: int = 30, n_critic: int = 5, seed: int = 0):
    """WGAN-GP on the 8-Gaussian ring with five critic steps per generator step."""
    from gantrack.data import TOYS

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    G = mlp(2, 2)
    opt_c = torch.optim.Adam(C_.parameters(), 1e-4, betas=(0.0, 0.9))
    opt_g = torch.optim.Adam(G.parameters(), 1e-4, betas=(0.0, 0.9))
    for _ in range(steps):
        for _ in range(n_critic):
            real, fake = TOYS["ring-2d"](32, gen), G(torch.randn(32, 2, generator=gen)).detach()
            c_real, c_fake = C_(real), C_(fake)
            eps = torch.rand(32, 1, generator=gen)
            mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
            grad = torch.autograd.grad(C_(mix).sum(), mix, create_graph=True)[0]
            gp = ((grad.norm(dim=1) - 1) ** 2).mean()
            if probes:
                probes.d_step(fake, c_fake, c_real)  # every critic step: the last one is kept
            opt_c.zero_grad()
            (c_fake.mean() - c_real.mean() + 10 * gp).backward()
            opt_c.step()
        x = G(torch.randn(32, 2, generator=gen))
        c_gen = C_(x)
        if probes:
            probes.g_step(x, c_gen)
            probes.log_metrics({C.GP_LOSS: gp.item()})
        opt_g.zero_grad()
        (-c_gen.mean()).backward()
        opt_g.step()
        if probes:
            probes.end_step()
    return G


def test_critic_steps_and_own_metrics_in_a_wgan_gp_loop(store):
    torch.manual_seed(1)
    probes = LoopProbes(mlp(2), loss="wgan-gp", order="d-first", experiment="wgan", tracking_uri=store)
    with probes:
        G = wgan_gp_ring(probes.D, probes)
    torch.manual_seed(1)
    plain = wgan_gp_ring(mlp(2), None)  # the same training without probes
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), plain.state_dict().values()))
    rs = load_runs("wgan", tracking_uri=store, progress=False)
    keys = set(rs.metrics["key"].astype(str))
    assert C.GP_LOSS in keys and {C.D_FAKE, C.G_LOSS, C.probe_key("gbatch_before", "g")} <= keys
    gp = rs.metrics[rs.metrics["key"] == C.GP_LOSS]
    assert sorted(gp["step"]) == list(range(1, 31))  # at the step the generator update belongs to
    f = explain(rs, probes.run_id, n_boot=50, min_length=16)["factors"].set_index("factor")["estimate"]
    assert f["residual"] == pytest.approx(1.0, rel=1e-6)  # the logged curves are the probe cells
    assert f["link"] == pytest.approx(1.0, rel=1e-6)  # WGAN: g = -d_fake, a mirror


def test_critic_steps_varying_in_number_keep_d_before_the_last_one(store, caplog):
    """The probes copy D only from the fewest critic steps a step has had so far: a step with more is
    measured exactly, a step with fewer has NaN before-update cells and a warning, never stale ones."""
    import copy

    from gantrack.data import TOYS

    torch.manual_seed(2)
    gen = torch.Generator().manual_seed(2)
    critic, G = mlp(2), mlp(2, 2)
    opt_c = torch.optim.Adam(critic.parameters(), 1e-3, betas=(0.0, 0.9))
    opt_g = torch.optim.Adam(G.parameters(), 1e-3, betas=(0.0, 0.9))
    counts = [3, 5, 3, 4, 2, 3]
    expected = []  # D before its last critic update, scoring G's batch
    probes = LoopProbes(critic, loss="wgan-gp", order="d-first", experiment="critics", tracking_uri=store)
    with probes:
        for n_critic in counts:
            for i in range(n_critic):
                real, fake = TOYS["ring-2d"](16, gen), G(torch.randn(16, 2, generator=gen)).detach()
                c_real, c_fake = critic(real), critic(fake)
                probes.d_step(fake, c_fake, c_real)
                if i == n_critic - 1:
                    before = copy.deepcopy(critic)
                opt_c.zero_grad()
                (c_fake.mean() - c_real.mean()).backward()
                opt_c.step()
            x = G(torch.randn(16, 2, generator=gen))
            c_gen = critic(x)
            with torch.no_grad():
                expected.append(float(before(x).mean()))
            probes.g_step(x, c_gen)
            opt_g.zero_grad()
            (-c_gen.mean()).backward()
            opt_g.step()
            probes.end_step()
    said = [r.getMessage() for r in caplog.records if "critic steps before G's" in r.getMessage()]
    assert len(said) == 1 and "step 5: 2 critic steps before G's where earlier steps had at least 3" in said[0]
    rs = load_runs("critics", tracking_uri=store, progress=False)
    m = rs.metrics[rs.metrics["key"] == C.probe_key("gbatch_before", "p")].sort_values("step")
    got = m["value"].to_numpy()
    assert len(got) == len(counts)
    for step, (g, e) in enumerate(zip(got, expected), start=1):
        if step == 5:  # two critic steps after steps with three: D before the second was not kept
            assert np.isnan(g)
        else:
            assert g == pytest.approx(e, rel=1e-5, abs=1e-6), step


class CondD(nn.Module):
    """D(x, y): an embedding of the label added to the input."""

    def __init__(self):
        super().__init__()
        self.embed, self.body = nn.Embedding(3, 4), mlp(4)

    def forward(self, x, y):
        return self.body(x + self.embed(y))


def test_a_conditional_d_takes_its_labels_in_the_probe_passes(store):
    torch.manual_seed(0)
    D = CondD()
    probes = LoopProbes(D, order="d-first", experiment="cond", tracking_uri=store)
    opt = torch.optim.SGD(D.parameters(), 0.01)
    with probes:
        for _ in range(40):
            y, x = torch.randint(0, 3, (8,)), torch.randn(8, 4)
            s = D(x, y)
            probes.d_step(x, s, D(x + 1, y), d_inputs=(y,))
            opt.zero_grad()
            s.mean().backward()
            opt.step()
            y2, x2 = torch.randint(0, 3, (8,)), torch.randn(8, 4)
            probes.g_step(x2, D(x2, y2), d_inputs=(y2,))
            probes.end_step()
    rs = load_runs("cond", tracking_uri=store, progress=False)
    f = explain(rs, probes.run_id, n_boot=50, min_length=16)["factors"].set_index("factor")["estimate"]
    assert np.isfinite(f[["link", "context", "timing", "sampling"]].astype(float)).all()
    bad = LoopProbes(CondD(), order="d-first", experiment="cond", tracking_uri=store)
    with pytest.raises(GantrackError, match="d_inputs\\[0\\] has 4 rows for a batch of 8"):
        with bad:
            x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
            bad.d_step(x, bad.D(x, y), d_inputs=(y[:4],))


def test_nan_scores_are_logged_tagged_and_said_once(store, caplog):
    D = mlp(4)
    probes = LoopProbes(D, order="d-first-same-batch", experiment="nan", tracking_uri=store)
    with caplog.at_level(logging.WARNING, logger="gantrack"), probes:
        for i in range(4):
            x = torch.randn(8, 4)
            s = D(x).detach()
            if i >= 1:
                s[0] = math.nan
            probes.d_step(x, s)
            probes.g_step(x, s)
            probes.end_step()
    run = MlflowClient(store).get_run(probes.run_id)
    assert run.info.status == "FINISHED" and run.data.tags[C.TAG_NONFINITE_STEP] == "2"
    assert sum("non-finite" in r.getMessage() for r in caplog.records) == 1


def test_gantrack_lightning_without_lightning_names_the_extra():
    code = "import sys; sys.modules['lightning'] = None; import gantrack.lightning"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert "pip install 'gantrack[lightning]'" in last and "ModuleNotFoundError" not in out.stderr


def test_a_wgan_gp_report_says_the_link_is_one_and_draws_no_probability_space(store, tmp_path):
    from gantrack.analysis import build_report

    probes = LoopProbes(mlp(2), loss="wgan-gp", order="d-first", experiment="wrep", tracking_uri=store)
    with probes:
        wgan_gp_ring(probes.D, probes, steps=60)
    rep = build_report("wrep", tracking_uri=store, out_dir=tmp_path, progress=False, n_boot=30, workers=1)
    md = rep.markdown.read_text()
    assert "link is 1 by construction" in md and "## How d_fake and g differ" in md
    assert "The law —" not in md and "## The law against the measurements" not in md  # nothing to test
    assert "(critic)" in md  # no operating point in probability for a critic's mean
    assert rep.analysis.runs[probes.run_id].implied.empty  # no probability-space curves


def test_a_hinge_run_logs_and_reports_its_margin_violations(store, tmp_path):
    from gantrack.analysis import build_report

    torch.manual_seed(0)
    D = mlp(4)
    probes = LoopProbes(D, loss="hinge", order="d-first-same-batch", experiment="hinge", tracking_uri=store)
    opt = torch.optim.SGD(D.parameters(), 0.05)
    with probes:
        for _ in range(60):
            real, fake = torch.randn(16, 4) + 0.5, torch.randn(16, 4)
            s_real, s_fake = D(real), D(fake)
            probes.d_step(fake, s_fake, s_real)
            opt.zero_grad()
            (torch.relu(1 - s_real).mean() + torch.relu(1 + s_fake).mean()).backward()
            opt.step()
            got = probes.g_step(fake, D(fake)) or probes.end_step()
            # the share of fakes inside the margin, where d_fake = relu(1 + c) moves at all
            assert got[C.MARGIN_FAKE] == pytest.approx((s_fake.detach() > -1).float().mean().item())
            assert got[C.MARGIN_REAL] == pytest.approx((s_real.detach() < 1).float().mean().item())
    rep = build_report("hinge", tracking_uri=store, out_dir=tmp_path, progress=False, n_boot=30, workers=1)
    assert "of D's fakes sit inside the margin" in rep.markdown.read_text()
