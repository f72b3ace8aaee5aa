"""Runs gantrack did not log: a loop that calls plain ``mlflow.log_metric`` under its own names, then
the analysis of those runs through a key map.

The loop is a small GAN on a 2-D ring of Gaussians that logs what the pytorch/examples DCGAN prints
(errD_real, errD_fake, errG, D_x, D_G_z1, D_G_z2) — no gantrack in it. The analysis maps those names
onto gantrack's (the ``pytorch-dcgan`` preset: ``gantrack keymaps``) and writes the report; the
factors that need probe cells are named there as not measurable, with how to add them.

    python examples/foreign_runs.py --experiment foreign
    gantrack report --experiment foreign --keymap pytorch-dcgan      # the same from the shell
"""

import argparse
import os

import mlflow
import torch
from matplotlib.figure import Figure  # no pyplot: the figure goes to MLflow, never to a screen
from torch import nn

from gantrack import keymaps
from gantrack.analysis import build_report, explain, load_runs
from gantrack.tracking import resolve_tracking_uri


def train_without_gantrack(steps: int, seed: int, experiment: str, uri: str) -> tuple[str, nn.Module]:
    """Somebody's GAN loop: nothing but MLflow's own logging (the losses and D's outputs each step, a
    scatter of G's final samples over the ring as a figure). Returns the run id and the trained G."""
    torch.manual_seed(seed)
    D = nn.Sequential(
        nn.Linear(2, 64), nn.LeakyReLU(0.2), nn.Linear(64, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1), nn.Sigmoid()
    )
    G = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    opt_d = torch.optim.Adam(D.parameters(), 1e-3, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(G.parameters(), 1e-3, betas=(0.5, 0.999))
    bce = nn.BCELoss()
    angles = torch.arange(8) * (2 * torch.pi / 8)
    centres = torch.stack([angles.cos(), angles.sin()], 1) * 2
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"ring-s{seed}") as run:
        mlflow.log_params({"seed": seed, "steps": steps})
        for step in range(1, steps + 1):
            real = centres[torch.randint(0, 8, (128,))] + 0.05 * torch.randn(128, 2)
            fake = G(torch.randn(128, 4))
            out_real, out_fake = D(real).view(-1), D(fake.detach()).view(-1)
            errD_real, errD_fake = bce(out_real, torch.ones(128)), bce(out_fake, torch.zeros(128))
            opt_d.zero_grad()
            (errD_real + errD_fake).backward()
            opt_d.step()
            out_gen = D(fake).view(-1)
            errG = bce(out_gen, torch.ones(128))
            opt_g.zero_grad()
            errG.backward()
            opt_g.step()
            mlflow.log_metrics(
                {
                    "errD_real": errD_real.item(),
                    "errD_fake": errD_fake.item(),
                    "errG": errG.item(),
                    "D_x": out_real.mean().item(),
                    "D_G_z1": out_fake.mean().item(),
                    "D_G_z2": out_gen.mean().item(),
                },
                step=step,
            )
        with torch.no_grad():
            points = G(torch.randn(1000, 4)).numpy()
        fig = Figure(figsize=(4, 4))
        ax = fig.subplots()
        ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5, label="G")
        ax.scatter(centres[:, 0], centres[:, 1], marker="x", color="red", label="modes")
        ax.set(xlim=(-3, 3), ylim=(-3, 3), aspect="equal", title=f"step {steps}")
        mlflow.log_figure(fig, "samples/final.png")
    return run.info.run_id, G


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000, help="about 20 s a seed; at 400 G has not found the ring")
    ap.add_argument("--tracking-uri")
    ap.add_argument("--experiment", default="foreign")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--out", help="report folder (default ./reports/<experiment>)")
    opt = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = resolve_tracking_uri(opt.tracking_uri)
    ids = [train_without_gantrack(opt.steps, int(s), opt.experiment, uri)[0] for s in opt.seeds.split(",")]
    key_map = keymaps.preset("pytorch-dcgan")
    rs = load_runs(opt.experiment, tracking_uri=uri, key_map=key_map, progress=False)
    for rid in ids:
        s = explain(rs, rid, n_boot=200)["summary"].iloc[0]
        print(
            f"{rid[:8]}: std(g)/std(d_fake) = {s['ratio']:.2f} [{s['ratio_lo']:.2f}, {s['ratio_hi']:.2f}], "
            f"simple law at the implied operating point p̄ = {s['p_bar']:.3f}: {s['predicted_link_simple']:.2f}; "
            f"missing for the factors: {s['missing_probes'][:60]}..."
        )
    rep = build_report(opt.experiment, tracking_uri=uri, out_dir=opt.out, key_map=key_map, progress=False)
    print(f"report: {rep.html}")
    return ids, rep


if __name__ == "__main__":
    main()
