"""Sample diversity and the failure-mode diagnosis, on known answers: real against real, a collapse
to a few images, ring-2d's modes, a NaN run, a frozen run, a D that wins, and the online detector
stopping runs in the harness and in a hand-written loop."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from gantrack import GantrackError
from gantrack import contract as C
from gantrack import diversity as V
from gantrack.analysis import diagnose, load_runs
from gantrack.analysis.runs import RunSet
from gantrack.cli import main as cli
from gantrack.data import image_dataset, ring_2d
from gantrack.diagnosis import Detector, decide
from gantrack.loop import LoopProbes
from gantrack.stepstats import final_line


@pytest.fixture(scope="module")
def eights():
    return image_dataset("mnist-eights")


@pytest.fixture(scope="module")
def split_reference(eights):
    """Bins and balls from 4,851 eights; the other 1,000 are real samples the reference never saw."""
    order = torch.randperm(len(eights), generator=torch.Generator().manual_seed(3))
    fit, held = eights[order[:4851]], eights[order[4851:]]
    return V.Reference.fit(fit, centres=V.fit_bins(V._flat(fit))), held


# --- diversity ---------------------------------------------------------------------------------


def test_real_against_real_eights_is_no_collapse(split_reference):
    ref, held = split_reference
    m = V.snapshot_metrics(held, ref)
    assert m[C.DIV_NDB] <= 1 / 48  # Bonferroni-level test over the bins: at most one bin by chance
    assert m[C.DIV_JS] < 0.05
    assert abs(m[C.DIV_COVERAGE] - m[C.DIV_COVERAGE_CEILING]) < 0.08 and m[C.DIV_COVERAGE_CEILING] > 0.9
    assert m[C.DIV_DUPLICATES] < 0.03  # the threshold is the 1 % quantile of real-vs-real distances
    assert 0.8 < m[C.DIV_DENSITY] < 1.2


def test_a_collapse_to_five_images_is_seen_by_every_measure(split_reference):
    ref, held = split_reference
    g = torch.Generator().manual_seed(0)
    few = held[:5].repeat(200, 1, 1, 1) + 0.05 * torch.randn(1000, 1, 28, 28, generator=g)
    m = V.snapshot_metrics(few.clamp(-1, 1), ref)
    assert m[C.DIV_NDB] > 0.5 and m[C.DIV_JS] > 0.3
    assert m[C.DIV_DUPLICATES] > 0.9 and m[C.DIV_COVERAGE] < 0.2 * m[C.DIV_COVERAGE_CEILING]


def test_ndb_z_is_the_pooled_two_proportion_test_and_counts_the_bins_over_the_threshold(split_reference):
    """Half the bins emptied: each bin's z equals statsmodels' pooled two-proportion z-test, the emptied
    bins are the under-filled ones, and NDB counts exactly the bins with |z| above the threshold."""
    from statsmodels.stats.proportion import proportions_ztest

    ref, held = split_reference
    labels = V.assign(V._flat(held), ref.centres)
    keep = np.isin(labels, np.arange(len(ref.centres))[::2])
    out = V.ndb(held[torch.from_numpy(keep)], ref)
    n_s, counts = int(keep.sum()), np.bincount(labels[keep], minlength=len(ref.centres))
    for b in range(len(ref.centres)):
        z, _ = proportions_ztest([counts[b], round(ref.shares[b] * ref.n)], [n_s, ref.n])
        assert out["z"][b] == pytest.approx(z, rel=1e-6, abs=1e-9), b
    assert (out["z"][1::2] < 0).all() and (out["z"][::2] > 0).all()
    assert out["ndb"] == pytest.approx((np.abs(out["z"]) > ref.z_threshold).mean()) and out["ndb"] > 0.3


def test_effective_bins_known_answers(split_reference):
    ref, held = split_reference
    centres = torch.from_numpy(ref.centres)
    assert V.effective_bins(centres[:1].repeat(64, 1), ref.centres) == pytest.approx(1.0)
    assert V.effective_bins(centres.repeat(2, 1), ref.centres) == pytest.approx(len(ref.centres))
    assert V.effective_bins(centres[:4].repeat(16, 1), ref.centres) == pytest.approx(4.0)
    assert 30 < ref.batch_bins_null(128) < len(ref.centres)  # real batches of 128 spread widely


def test_bundled_bins_are_the_ones_make_bins_fits(eights):
    """The shipped centres reproduce a fresh fit's bin shares (kmeans2 is deterministic at seed 0)."""
    flat = V._flat(eights)
    shipped = np.bincount(V.assign(flat, V.bundled_bins()), minlength=58)
    fresh = np.bincount(V.assign(flat, V.fit_bins(flat, seed=0)), minlength=58)
    np.testing.assert_array_equal(np.sort(shipped), np.sort(fresh))


def test_ring_modes_and_quality_are_counted():
    g = torch.Generator().manual_seed(1)
    full = ring_2d(2500, g)
    assert V.ring_modes(full) == (8, pytest.approx(0.99, abs=0.01))
    three = full[(torch.atan2(full[:, 1], full[:, 0]) % (2 * math.pi)) < 2.5]  # the modes at 0, 45, 90, 135°
    assert V.ring_modes(three)[0] == 4
    off = full + torch.tensor([0.5, 0.0])
    assert V.ring_modes(off)[1] < 0.2
    ref = V.reference_for("ring-2d")
    m = V.snapshot_metrics(full, ref)
    assert m[C.DIV_MODES] == 8 and m[C.DIV_NDB] <= 0.02


def test_ring_modes_kept_count_dropped_modes_whether_samples_are_sharp_or_spread():
    g = torch.Generator().manual_seed(2)
    full = ring_2d(2500, g)
    assert V.ring_modes_kept(full) == 8
    angle = torch.atan2(full[:, 1], full[:, 0]) % (2 * math.pi)
    assert V.ring_modes_kept(full[angle < 2.5]) == 4  # the modes at 0, 45, 90, 135°
    # one mode thinned to 2 % of the samples (a sixth of its share): dropped; to a third of its share: kept
    cell = (angle > 2 * math.pi / 16) & (angle < 3 * 2 * math.pi / 16)  # the mode at 45°
    thin = torch.cat([full[~cell], full[cell][: int(0.02 * 2500)]])
    assert V.ring_modes_kept(thin) == 7
    third = torch.cat([full[~cell], full[cell][: int(cell.sum()) // 3]])
    assert V.ring_modes_kept(third) == 8
    # spread evenly around the circle, between the modes: few within 3 sigma of one, every cell kept
    theta = torch.rand(2500, generator=g) * 2 * math.pi
    spread = torch.stack([theta.cos(), theta.sin()], 1) * 2.0
    assert V.ring_modes(spread)[1] < 0.2 and V.ring_modes_kept(spread) == 8
    assert V.snapshot_metrics(full, V.reference_for("ring-2d"))[C.DIV_MODES_KEPT] == 8


@pytest.mark.parametrize(
    "kept, quality, verdict",
    [
        (6, 0.35, "mode-collapse"),  # dropped modes, G caught between the kept ones: still a collapse
        (8, 0.25, "stable"),  # spread between all 8 modes: poor, not collapsed
        (5, 0.02, "convergence-failure"),  # samples on no mode: G has not found the data (garbage rule)
    ],
)
def test_ring_collapse_reads_the_kept_modes_not_the_sharp_ones(kept, quality, verdict):
    steps, s = _series(1000)
    snap = steps[steps % 100 == 0]
    k = np.full(len(snap), float(kept))
    k[:2] = 1  # the warm-up snapshots never count
    snaps = {
        C.DIV_MODES_KEPT: (snap, k),
        C.DIV_MODES: (snap, np.full(len(snap), 3.0)),  # the 3-sigma count would say 3 of 8 in every case
        C.DIV_QUALITY: (snap, np.full(len(snap), quality)),
    }
    assert decide(steps, s, snaps).verdict == verdict


def test_bad_reference_data_is_one_clear_error():
    with pytest.raises(GantrackError, match=r"expected \[-1, 1\]"):
        V.Reference.fit(torch.rand(500, 1, 28, 28) * 255)
    with pytest.raises(GantrackError, match="at least 60"):
        V.Reference.fit(torch.rand(20, 1, 28, 28))
    with pytest.raises(GantrackError, match="NaN"):
        V.Reference.fit(torch.full((100, 2), float("nan")), kind="points")


# --- the rules on series with known answers --------------------------------------------------------


def _series(n=200, **curves):
    steps = np.arange(1, n + 1)
    rng = np.random.default_rng(0)
    base = {
        C.D_REAL: 0.65 + 0.05 * rng.standard_normal(n),
        C.D_FAKE: 0.65 + 0.05 * rng.standard_normal(n),
        C.G_LOSS: 1.2 + 0.2 * rng.standard_normal(n),
        C.ACC_REAL: np.clip(0.75 + 0.1 * rng.standard_normal(n), 0, 1),
        C.ACC_FAKE: np.clip(0.75 + 0.1 * rng.standard_normal(n), 0, 1),
    }
    base.update(curves)
    return steps, base


def _diverse_snapshots(steps):
    s = steps[steps % 20 == 0]
    return {
        C.DIV_DUPLICATES: (s, np.full(len(s), 0.01)),
        C.DIV_COVERAGE: (s, np.full(len(s), 0.9)),
        C.DIV_COVERAGE_CEILING: (s, np.full(len(s), 0.97)),
    }


def test_a_healthy_run_is_stable_with_its_evidence():
    steps, s = _series()
    d = decide(steps, s, _diverse_snapshots(steps))
    assert d.verdict == "stable" and not d.missing[1:]  # only grad/* may be missing
    assert any("tutorial" in e for e in d.evidence)


def test_a_nan_at_step_k_is_diverged_at_k():
    steps, s = _series()
    s[C.G_LOSS][119:] = np.nan
    d = decide(steps, s, nonfinite=(120, [C.G_LOSS]))
    assert (d.verdict, d.onset_step) == ("diverged", 120)
    det = Detector("nsgan")
    for i, k in enumerate(steps):
        det.add(int(k), {key: float(v[i]) for key, v in s.items()})
        if det.update() is not None:
            break
    assert det.decision.verdict == "diverged" and det.decision.onset_step == 120 and det.steps[-1] == 120


def test_frozen_losses_are_stalled():
    steps, s = _series()
    for k in (C.D_REAL, C.D_FAKE, C.G_LOSS):
        s[k][90:] = s[k][90]
    d = decide(steps, s)
    assert (d.verdict, d.onset_step) == ("stalled", 91)


def _d_wins_from(onset: int, g_level: float, loss: str = "nsgan", cells: tuple[float, float] | None = None):
    steps, s = _series()
    for k in (C.D_REAL, C.D_FAKE):
        s[k][onset - 1 :] = 0.002
    for k in (C.ACC_REAL, C.ACC_FAKE):
        s[k][onset - 1 :] = 1.0
    s[C.G_LOSS][onset - 1 :] = g_level
    if cells is not None:  # p of D's fakes in its own batch, and alone as the G step sees them
        s[C.probe_key("dbatch_before", "p")] = np.full(len(steps), cells[0])
        s[C.probe_key("dbatch_before_gctx", "p")] = np.full(len(steps), cells[1])
    return decide(steps, s, loss=loss)


@pytest.mark.parametrize(
    "g_level, loss, cells, subtype",
    [
        (12.0, "nsgan", None, "D wins, g rising"),
        (0.01, "nsgan", None, "d ≈ 0 and g ≈ 0: G's batch scored real (context cells not logged)"),
        (0.01, "nsgan", (0.004, 0.99), "d ≈ 0 and g ≈ 0: BatchNorm batch context"),
        # the same losses, but D scores its fakes fake alone too: the batch context is not the cause
        (
            0.01,
            "nsgan",
            (0.006, 0.006),
            "d ≈ 0 and g ≈ 0: not the batch context (D scores its fakes alike in and out of it)",
        ),
        # minimax: g = log(1 - D(G(z))) near 0 means D(G(z)) near 0, the saturating loss, not G's batch scored real
        (-0.0005, "minimax", (0.006, 0.006), "D wins, G's loss saturates"),
    ],
)
def test_d_winning_for_good_is_convergence_failure_with_its_onset_and_subtype(g_level, loss, cells, subtype):
    d = _d_wins_from(25, g_level, loss, cells)
    assert (d.verdict, d.subtype, d.onset_step) == ("convergence-failure", subtype, 25)
    if cells is None and g_level < 1:
        assert any("probe cells" in m for m in d.missing)  # the context factor would decide it


def test_a_gradient_coming_back_after_vanishing_is_not_an_explosion_but_a_blowup_is():
    n = 200
    steps, s = _series(n)
    g = np.full(n, 1e-8)  # D won at once: G's gradient vanished ...
    g[150:] = 0.2  # ... and came back to an ordinary size
    s[C.GRAD_G] = g
    assert decide(steps, s).verdict != "diverged"
    blowup = np.full(n, 0.5)
    blowup[120:] = 0.5 * 10 ** np.linspace(1, 6, n - 120)  # a thousandfold and past 1e4, for good
    s[C.GRAD_G] = blowup
    d = decide(steps, s)
    first = 120 + int(np.argmax(blowup[120:] > 1e4)) + 1
    assert (d.verdict, d.subtype, d.onset_step) == ("diverged", "exploding gradients", first)


@pytest.mark.parametrize("modes, verdict", [(5, "mode-collapse"), (7, "mode-collapse"), (8, "stable")])
def test_ring_modes_dropped_at_every_late_snapshot_are_a_collapse(modes, verdict):
    steps, s = _series(1000)
    snap = steps[steps % 100 == 0]
    covered = np.full(len(snap), float(modes))
    covered[:2] = 2  # the warm-up snapshots never count
    snaps = {C.DIV_MODES: (snap, covered), C.DIV_QUALITY: (snap, np.full(len(snap), 0.8))}
    assert decide(steps, s, snaps).verdict == verdict


def test_accuracy_of_one_with_fakes_at_p_0_2_is_not_d_winning():
    steps, s = _series(**{C.ACC_REAL: np.ones(200), C.ACC_FAKE: np.ones(200), C.D_FAKE: np.full(200, 0.22)})
    assert decide(steps, s).verdict != "convergence-failure"


def test_collapsed_snapshots_are_mode_collapse_from_the_first_collapsed_one():
    steps, s = _series()
    snaps = _diverse_snapshots(steps)
    st, dup = snaps[C.DIV_DUPLICATES]
    dup = dup.copy()
    dup[st >= 120] = 0.95
    cov = snaps[C.DIV_COVERAGE][1].copy()
    cov[st >= 120] = 0.05
    snaps[C.DIV_DUPLICATES], snaps[C.DIV_COVERAGE] = (st, dup), (st, cov)
    d = decide(steps, s, snaps)
    assert (d.verdict, d.onset_step, d.onset_resolution) == ("mode-collapse", 120, 20)


def test_a_collapse_that_lets_go_at_the_end_is_not_the_verdict_but_is_in_the_evidence():
    steps, s = _series()
    snaps = _diverse_snapshots(steps)
    st, dup = snaps[C.DIV_DUPLICATES]
    cov = snaps[C.DIV_COVERAGE][1].copy()
    dup, collapsed = dup.copy(), (st >= 80) & (st <= 160)  # collapsed at 80-160, diverse again at 180, 200
    dup[collapsed], cov[collapsed] = 0.95, 0.05
    snaps[C.DIV_DUPLICATES], snaps[C.DIV_COVERAGE] = (st, dup), (st, cov)
    d = decide(steps, s, snaps)
    assert d.verdict != "mode-collapse"
    assert "the rule held at snapshots 80–160, not at the last ones" in d.evidence


def test_the_verdict_at_the_end_names_the_online_one_it_replaces():
    # G collapsed at snapshots 80-160 and recovered: while training the detector said mode-collapse, at
    # the end the run is stable, and the last line a user reads says both
    steps, s = _series()
    snaps = _diverse_snapshots(steps)
    st, dup = snaps[C.DIV_DUPLICATES]
    cov = snaps[C.DIV_COVERAGE][1].copy()
    dup, collapsed = dup.copy(), (st >= 80) & (st <= 160)
    dup[collapsed], cov[collapsed] = 0.95, 0.05
    det = Detector("nsgan")
    for i, step in enumerate(steps):
        det.add(int(step), {k: float(v[i]) for k, v in s.items()})
        if step in st:
            j = int(np.flatnonzero(st == step)[0])
            det.add_snapshot(
                int(step), {C.DIV_DUPLICATES: dup[j], C.DIV_COVERAGE: cov[j], C.DIV_COVERAGE_CEILING: 0.97}
            )
        det.update()
    online = det.decision
    assert (online.verdict, online.onset_step) == ("mode-collapse", 80)
    final = det.final()
    assert final.verdict == "stable"
    assert (
        final_line(final, online)
        == "at the end: stable (while training: mode-collapse (few distinct samples) since step 80)"
    )
    assert final_line(final, final) == "at the end: stable"


def test_without_diversity_a_run_is_never_called_collapsed_and_says_what_is_missing():
    steps, s = _series()
    d = decide(steps, s)
    assert d.verdict == "stable" and any("div/*" in m for m in d.missing)
    s[C.ACC_FAKE][:] = 1.0  # the losses' mode-collapse signature: fake accuracy ≈ 100 %
    d = decide(steps, s)
    assert d.verdict == "undecided" and "mode-collapse signature" in d.subtype


def test_too_short_and_partial_runs_are_undecided_with_the_reason():
    steps, s = _series(n=30)
    d = decide(steps, s)
    assert d.verdict == "undecided" and "too short" in d.evidence[0]
    steps, s = _series()
    only = {C.D_LOSS: s[C.D_REAL], C.G_LOSS: s[C.G_LOSS]}  # a combined-batch log without accuracies
    d = decide(steps, only)
    assert d.verdict == "undecided" and any("acc/real" in m for m in d.missing)


# --- stored runs, the CLI, and the online detector ------------------------------------------------


def _d_wins_loop(probes, steps=120):
    """D separates real (around +3) from G's fakes (around -3) at once: D wins for good within steps."""
    torch.manual_seed(0)
    D = probes.D
    G = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
    opt_d = torch.optim.Adam(D.parameters(), 1e-2)
    bce = nn.BCEWithLogitsLoss()
    done = 0
    for _ in range(steps):
        real = 3 + 0.1 * torch.randn(64, 2)
        fake = G(torch.randn(64, 2)) - 3
        s_real, s_fake = D(real), D(fake.detach())
        loss = bce(s_real, torch.ones(64, 1)) + bce(s_fake, torch.zeros(64, 1))
        probes.d_step(fake.detach(), s_fake, s_real)
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
        probes.g_step(fake, D(fake))
        probes.end_step()
        done += 1
        if probes.should_stop:
            break
    return done


def test_loop_probes_stop_on_convergence_failure_ends_the_run_cleanly(store, caplog):
    D = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    probes = LoopProbes(
        D, order="d-first-same-batch", experiment="stop", tracking_uri=store, stop_on="convergence-failure"
    )
    with probes:
        done = _d_wins_loop(probes, steps=300)
    assert done < 300  # stopped early
    run = MlflowClient(store).get_run(probes.run_id)
    tags = run.data.tags
    assert run.info.status == "FINISHED" and tags[C.TAG_DIAGNOSIS] == "convergence-failure"
    assert tags[C.TAG_STOPPED] == f"convergence-failure at step {done}"
    assert tags[C.TAG_NOTE].startswith("**Diagnosis: convergence-failure")
    said = [r.getMessage() for r in caplog.records if "at the end:" in r.getMessage()]
    verdict_line = tags[C.TAG_NOTE].removeprefix("**Diagnosis: ").split(".** ")[0]  # the description's first line
    assert said == [f"gantrack: run {probes.run_id}: at the end: {verdict_line}"]
    assert C.PER_SAMPLE_ARTIFACT in {a.path for a in MlflowClient(store).list_artifacts(probes.run_id, "probes")}
    onset = run.data.metrics[C.DIAG_ONSET]
    latency = done - onset
    assert 0 < onset < done and latency <= 40  # decided within SUSTAIN (20) + EVERY (10) steps of the onset
    table = diagnose(load_runs(run_ids=[probes.run_id], tracking_uri=store, progress=False))
    assert table["verdict"].iloc[0] == "convergence-failure" and table["online"].iloc[0] == "convergence-failure"


def _snapshot_loop(D, G, reference, real, experiment, store, steps, batch):
    """A tiny d-first-same-batch loop with a diversity snapshot every 10 steps; returns its probes."""
    probes = LoopProbes(
        D,
        order="d-first-same-batch",
        G=G,
        latent=3,
        reference=reference,
        diversity_every=10,
        experiment=experiment,
        tracking_uri=store,
    )
    with probes:
        for _ in range(steps):
            fake = G(torch.randn(batch, 3))
            probes.d_step(fake.detach(), D(fake.detach()), D(real))
            probes.g_step(fake, D(fake))
            probes.end_step()
    return probes


def test_loop_probes_reference_checks_before_any_run_and_logs_diversity(store):
    G = nn.Sequential(nn.Linear(3, 2))
    D = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))
    with pytest.raises(GantrackError, match="values each"):
        LoopProbes(D, G=G, latent=3, reference=torch.randn(500, 5), experiment="ref", tracking_uri=store).start()
    with pytest.raises(GantrackError, match="need G and latent"):
        LoopProbes(D, reference=torch.randn(500, 2), tracking_uri=store)
    with pytest.raises(GantrackError, match="unknown mode 'collapse'"):
        LoopProbes(D, stop_on="collapse", tracking_uri=store)
    assert not MlflowClient(store).search_experiments(filter_string="name = 'ref'") or not MlflowClient(
        store
    ).search_runs([MlflowClient(store).get_experiment_by_name("ref").experiment_id])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(640, 2)), batch_size=64)
    probes = _snapshot_loop(D, G, loader, torch.randn(64, 2), "ref", store, steps=30, batch=64)
    hist = MlflowClient(store).get_metric_history(probes.run_id, C.DIV_COVERAGE)
    assert sorted(m.step for m in hist) == [10, 20, 30]
    # points, not images: each snapshot's scatter over the reference in the image grid (an image G's: next test)
    files = [f.path for f in MlflowClient(store).list_artifacts(probes.run_id, "images") if f.path.endswith(".png")]
    assert sorted(int(f.split("+step+")[1].split("+")[0]) for f in files) == [10, 20, 30]


def test_loop_probes_log_each_snapshot_as_a_sample_grid_on_the_step_slider(store):
    """An image G's diversity snapshots go to MLflow's image grid (key "samples") at their steps: 5 x 5 of
    the snapshot's samples, dark strokes on white as the book draws them."""
    G = nn.Sequential(nn.Linear(3, 64), nn.Tanh(), nn.Unflatten(1, (1, 8, 8)))
    D = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    reference = torch.rand(300, 1, 8, 8) * 2 - 1
    probes = _snapshot_loop(D, G, reference, reference[:16], "grid", store, steps=20, batch=16)
    client = MlflowClient(store)
    files = [f.path for f in client.list_artifacts(probes.run_id, "images") if f.path.endswith(".png")]
    assert sorted(int(f.split("+step+")[1].split("+")[0]) for f in files) == [10, 20]
    from PIL import Image

    img = np.asarray(Image.open(client.download_artifacts(probes.run_id, files[0])))
    assert img.shape[:2] == (40, 40)  # 5 x 5 tiles of 8 x 8
    assert img.dtype == np.uint8 and img.std() > 0


def test_image_grid_known_answers():
    from gantrack.samples import image_grid

    x = -torch.ones(2, 1, 4, 4)  # background (-1) everywhere ...
    x[1, 0, 0, 0] = 1.0  # ... one full-ink pixel in the second image
    g = image_grid(x)
    assert g.shape == (8, 8) and g.dtype == np.uint8  # 2 images on a 2 x 2 grid; empty places white
    assert g[0, 4] == 0 and (g == 255).sum() == 63  # the ink is dark, all else white
    rgb = image_grid(torch.zeros(1, 3, 4, 4))
    assert rgb.shape == (4, 4, 3) and (rgb == 128).all()  # 0 in [-1, 1] is mid-grey, colours as they are
    assert image_grid(torch.zeros(5, 2)) is None and image_grid(torch.zeros(5, 2, 4, 4)) is None


def test_snapshot_image_scatters_points_and_grids_images():
    from gantrack.samples import snapshot_image

    grid = snapshot_image(-torch.ones(30, 1, 4, 4))
    assert grid.shape == (20, 20) and (grid == 255).all()  # the first 25 of 30 images, no ink
    fake = torch.zeros(200, 2)  # every generated point at the origin, the reference far from it
    real = np.full((100, 2), 5.0, np.float32)
    pic = snapshot_image(fake, real, step=7)
    assert pic.dtype == np.uint8 and pic.ndim == 3 and pic.shape[2] == 3
    red = (pic[..., 0] > 200) & (pic[..., 1] < 80) & (pic[..., 2] < 80)  # generated: tab:red
    blue = (pic[..., 2] > 150) & (pic[..., 0] < 80)  # real: tab:blue
    assert red.any() and blue.any()
    # the data is drawn over G's points: where both sit at the origin, its pixels are the data's blue
    over = snapshot_image(torch.zeros(200, 2), np.zeros((100, 2), np.float32))
    h, w = over.shape[:2]
    centre = over[int(0.45 * h) : int(0.55 * h), int(0.45 * w) : int(0.6 * w)]
    assert ((centre[..., 2] > 150) & (centre[..., 0] < 80)).any()
    assert not ((centre[..., 0] > 200) & (centre[..., 1] < 80) & (centre[..., 2] < 80)).any()
    assert snapshot_image(torch.zeros(5, 3)) is None and snapshot_image(torch.zeros(5, 2, 3)) is None


def test_harness_logs_a_toys_scatter_to_the_image_grid(store):
    """ring-2d's picture is a scatter: the same PNG as the ``samples/`` file, in MLflow's image grid at its step."""
    from PIL import Image

    from gantrack import preset, train

    cfg = preset("ring-2d").replace(steps=20, sample_every=10, diversity_every=-1, experiment="toy", threads=1)
    run_id = train(cfg, tracking_uri=store, quiet=True)
    client = MlflowClient(store)
    files = sorted(f.path for f in client.list_artifacts(run_id, "images") if f.path.endswith(".png"))
    assert sorted(int(f.split("+step+")[1].split("+")[0]) for f in files) == [10, 20]
    saved = sorted(f.path for f in client.list_artifacts(run_id, "samples"))
    logged = np.asarray(Image.open(client.download_artifacts(run_id, files[-1])).convert("RGB"))
    kept = np.asarray(Image.open(client.download_artifacts(run_id, saved[-1])).convert("RGB"))
    assert logged.shape == kept.shape and (logged == kept).all()


def test_harness_stop_on_ends_a_combined_batch_run_cleanly_with_its_diagnosis(store):
    """The chapter's combined-batch failure at narrow width: D wins from about step 20 (docs/diagnosis.md),
    so the online detector must stop the run well before its 200 steps, with weights, samples and the
    per-sample probes saved and the verdict in the tag and the description."""
    from gantrack import preset, train

    cfg = preset("convergence-failure").replace(
        width=0.125, d_width=0.5, steps=200, stop_on="convergence-failure,diverged", experiment="stop", threads=1
    )
    run_id = train(cfg, tracking_uri=store, quiet=True)
    client = MlflowClient(store)
    run = client.get_run(run_id)
    tags = run.data.tags
    assert run.info.status == "FINISHED" and tags[C.TAG_DIAGNOSIS] == "convergence-failure"
    assert tags[C.TAG_NOTE].startswith("**Diagnosis: convergence-failure (d ≈ 0 and g ≈ 0: BatchNorm batch context)")
    step = int(tags[C.TAG_STOPPED].rsplit(" ", 1)[1])
    assert tags[C.TAG_STOPPED].startswith("convergence-failure at step") and step < 100
    assert max(m.step for m in client.get_metric_history(run_id, C.G_LOSS)) == step
    onset = run.data.metrics[C.DIAG_ONSET]
    assert 10 <= onset <= 40 and step - onset <= 40  # latency: SUSTAIN (20) steps to be sure, then <= EVERY
    saved = {a.path for folder in ("weights", "samples", "probes") for a in client.list_artifacts(run_id, folder)}
    assert {"weights/generator.pt", C.PER_SAMPLE_ARTIFACT} <= saved and any(p.startswith("samples/") for p in saved)
    assert any(a.path.startswith("images") for a in client.list_artifacts(run_id))  # mlflow.log_image


def test_cli_diagnose_prints_the_table_and_json(store, capsys):
    D = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    probes = LoopProbes(D, order="d-first-same-batch", experiment="cli-diag", tracking_uri=store)
    with probes:
        _d_wins_loop(probes, steps=80)
    assert cli(["diagnose", "--experiment", "cli-diag", "--tracking-uri", store, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "convergence-failure (D wins" in out and "since step" in out and "evidence:" in out
    assert cli(["diagnose", "--experiment", "cli-diag", "--tracking-uri", store, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["verdict"] == "convergence-failure" and rows[0]["run_id"] == probes.run_id


def test_cli_stop_on_unknown_mode_is_one_line_exit_2(store, capsys):
    assert cli(["train", "--preset", "dirac", "--stop-on", "collapse", "--tracking-uri", store]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown mode 'collapse'" in err[0]


def test_a_corrupt_series_is_one_line_in_its_row_and_the_other_runs_go_on():
    steps, s = _series()
    good = pd.DataFrame(
        [("good", k, int(t), 0, float(v)) for k, vals in s.items() for t, v in zip(steps, vals)],
        columns=["run_id", "key", "step", "timestamp", "value"],
    )
    bad = pd.DataFrame({"run_id": "bad", "key": C.G_LOSS, "step": [1, 2], "timestamp": 0, "value": ["x", "y"]})
    metrics = pd.concat([good, bad], ignore_index=True)
    runs = pd.DataFrame({"run_id": ["good", "bad", "empty"], "name": ["g", "b", "e"], "status": "FINISHED"})
    table = diagnose(RunSet(runs=runs, metrics=metrics), period=False).set_index("run_id")
    assert table.loc["good", "verdict"] == "stable"
    assert table.loc["bad", "verdict"] == "undecided" and "cannot read" in table.loc["bad", "evidence"]
    assert "no metrics" in table.loc["empty", "evidence"]


def test_tutorial_checks_state_the_mode_collapse_period_fake_accuracy_and_the_adam_onset():
    """Synthetic runs with known answers: g with a 25-step period and fake accuracy 98 % (the tutorial's
    mode collapse), and D's losses below 0.05 from step 3 (its Adam-defaults failure)."""
    from gantrack.studies import tutorial_checks

    n = 450
    steps = np.arange(1, n + 1)
    rng = np.random.default_rng(1)
    collapse = {
        C.D_REAL: 0.5 + 0.05 * rng.standard_normal(n),
        C.D_FAKE: 0.3 + 0.05 * rng.standard_normal(n),
        C.G_LOSS: 2 + np.sin(2 * np.pi * steps / 25) + 0.2 * rng.standard_normal(n),
        C.ACC_REAL: np.full(n, 0.7),
        C.ACC_FAKE: np.full(n, 0.98),
    }
    adam = {
        C.D_REAL: np.where(steps >= 3, 0.01, 0.7),
        C.D_FAKE: np.where(steps >= 3, 0.01, 0.7),
        C.G_LOSS: np.where(steps >= 3, 12.0, 1.0) + 0.1 * rng.standard_normal(n),
    }
    rows = [
        (rid, k, int(t), 0, float(v))
        for rid, run in (("mc", collapse), ("adam", adam))
        for k, vals in run.items()
        for t, v in zip(steps, vals)
    ]
    metrics = pd.DataFrame(rows, columns=["run_id", "key", "step", "timestamp", "value"])
    runs = pd.DataFrame(
        {
            "run_id": ["mc", "adam"],
            f"tags.{C.TAG_SCENARIO}": ["mode-collapse", "convergence-failure-adam"],
            f"tags.{C.TAG_SEED}": ["1", "1"],
            f"tags.{C.TAG_ARCH}": ["bn", "bn"],
            "status": "FINISHED",
        }
    )
    checks = tutorial_checks(RunSet(runs=runs, metrics=metrics)).set_index("statistic")
    period = checks.loc["dominant period of g [95 % CI] (after burn-in)"]
    assert period["agrees"] and period["measured"].startswith(("24.", "25.")) and " [" in period["measured"]
    assert checks.loc["mean fake accuracy (2nd half)", "agrees"]
    onset = checks.loc["step from which d_real, d_fake < 0.05 for good"]
    assert onset["measured"] == "3" and onset["agrees"]


def test_signatures_set_each_scenario_against_the_stable_run():
    steps, s = _series()
    snaps = _diverse_snapshots(steps)
    rows = [("st", k, int(t), 0, float(v)) for k, vals in s.items() for t, v in zip(steps, vals)]
    rows += [("st", k, int(t), 0, float(v)) for k, (st, vals) in snaps.items() for t, v in zip(st, vals)]
    collapsed = {C.DIV_DUPLICATES: 0.97, C.DIV_COVERAGE: 0.02, C.DIV_COVERAGE_CEILING: 0.97}
    rows += [("mc", k, int(t), 0, float(v)) for k, vals in s.items() for t, v in zip(steps, vals)]
    rows += [("mc", k, int(t), 0, collapsed[k]) for k, (st, _) in snaps.items() for t in st]
    metrics = pd.DataFrame(rows, columns=["run_id", "key", "step", "timestamp", "value"])
    runs = pd.DataFrame(
        {
            "run_id": ["mc", "st"],
            "name": ["m", "s"],
            "status": "FINISHED",
            f"tags.{C.TAG_SCENARIO}": ["mode-collapse", "stable"],
        }
    )
    rs = RunSet(runs=runs, metrics=metrics)
    table = diagnose(rs, period=False)
    from gantrack.analysis.failure_modes import signature_table, signatures

    sig = signatures(rs, table).set_index("run_id")
    assert sig.loc["mc", "verdict"] == "mode-collapse" and sig.loc["st", "verdict"] == "stable"
    assert sig.loc["mc", "duplicates"] == pytest.approx(0.97) and sig.loc["mc", "coverage"] == pytest.approx(
        0.02 / 0.97
    )
    assert sig.loc["st", "acc"] == pytest.approx(np.mean([s[C.ACC_REAL][100:].mean(), s[C.ACC_FAKE][100:].mean()]))
    out = signature_table(sig.reset_index())
    assert out["scenario"].tolist() == ["stable", "mode-collapse"] and out.loc[1, "duplicates"] == "0.97"


def test_samples_unlike_the_data_at_the_end_are_convergence_failure_not_stable():
    steps, s = _series()
    snaps = _diverse_snapshots(steps)
    st = snaps[C.DIV_COVERAGE][0]
    snaps[C.DIV_COVERAGE] = (st, np.full(len(st), 0.03))  # G's samples near almost no real sample
    d = decide(steps, s, snaps)
    assert (d.verdict, d.subtype) == ("convergence-failure", "G's samples are not like the data")
    assert decide(steps, s, snaps, final=False).verdict == "undecided"  # said at the end only
