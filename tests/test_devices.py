"""Devices, precision and the fast CPU path: resolution, refusal before any run, same numbers, same structure."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from gantrack import Config, GantrackError, train
from gantrack.analysis import load_runs
from gantrack.config import preset
from gantrack.contract import CELLS, GP_LOSS, TAG_DEVICE, TAG_PRECISION, contract_keys
from gantrack.device import check_precision, resolve_device
from gantrack.harness import build_gan, gan_step
from gantrack.models import KerasBatchNorm2d, OneChannelConv2d

from conftest import cli_in_process

yes, no = (lambda: True), (lambda: False)
needs_bf16 = pytest.mark.skipif(
    not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()),
    reason="this CPU has no bfloat16 instructions",
)


def test_auto_prefers_cuda_then_mps_then_cpu():
    assert resolve_device("auto", cuda=yes, mps=yes) == torch.device("cuda")
    assert resolve_device("auto", cuda=no, mps=yes) == torch.device("mps")
    assert resolve_device("auto", cuda=no, mps=no) == torch.device("cpu")
    assert resolve_device("cpu", cuda=yes, mps=yes) == torch.device("cpu")


@pytest.mark.parametrize(
    "name, message",
    [
        ("cuda", "no usable CUDA GPU"),
        ("cuda:0", "no usable CUDA GPU"),
        ("cuda:x", "expected cuda or cuda:N"),
        ("mps", "device 'mps'"),
        ("tpu", "unknown device 'tpu'"),
    ],
)
def test_unavailable_or_unknown_devices_are_refused_in_one_line(name, message):
    with pytest.raises(GantrackError, match=message) as e:
        resolve_device(name, cuda=no, mps=no)
    assert "\n" not in str(e.value)


def test_bf16_needs_hardware_support_and_unknown_precisions_are_refused():
    cpu = torch.device("cpu")
    check_precision("bf16", cpu, cpu_bf16=yes)  # accepted
    check_precision("fp32", cpu, cpu_bf16=no)  # fp32 needs nothing
    with pytest.raises(GantrackError, match="no bfloat16 instructions"):
        check_precision("bf16", cpu, cpu_bf16=no)
    with pytest.raises(GantrackError, match="unknown precision 'fp16'"):
        check_precision("fp16", cpu)


def test_cli_refuses_a_missing_device_before_any_run_exists(tmp_path, capsys, monkeypatch):
    # cuda:99 does not exist on any machine: the message differs with or without CUDA, the outcome does not
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    p = subprocess.run(  # once through a real process: the exit code as the shell sees it
        [sys.executable, "-m", "gantrack.cli", "train", "--tracking-uri", uri, "--set", "device=cuda:99"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and p.stderr.startswith("gantrack: error:"), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    for setting in ("precision=fp16", "device=mps" if sys.platform != "darwin" else "device=x"):
        args = ["train", "--tracking-uri", uri, "--steps", "2", "--set", setting]
        code, _, err = cli_in_process(args, capsys, monkeypatch)
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gantrack: error:"), err
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store was even opened


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_one_channel_conv_is_conv2d_forward_and_backward(layout):
    torch.manual_seed(0)
    ref = nn.Conv2d(24, 1, 7, padding=3)
    fast = OneChannelConv2d(24, 7)
    fast.load_state_dict(ref.state_dict())  # the same parameters, the same names
    x = torch.randn(5, 24, 28, 28).contiguous(memory_format=layout)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = ref(xa), fast(xb)
    torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-5)
    ya.tanh().sum().backward()
    yb.tanh().sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-5, atol=1e-6)
    # a sum over batch and pixels with cancellations: rounding scales with the summands, not the result
    scale = ref.weight.grad.abs().max().item()
    torch.testing.assert_close(fast.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(fast.bias.grad, ref.bias.grad, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():  # the snapshots' shifted-add sum: the same convolution
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-5, atol=1e-5)
        x16 = x.to(torch.bfloat16)
        y16 = fast.to(torch.bfloat16)(x16)
        assert y16.dtype == torch.bfloat16 and y16.shape == (5, 1, 28, 28)
        torch.testing.assert_close(y16.float(), ref(x16.float()), rtol=0.02, atol=0.02)


def test_one_pass_batchnorm_keeps_kerass_zero_debiased_statistics():
    """Against the definition: EMA from zero with decay 0.99 of the unbiased batch variance, divided by 1 - 0.99^t."""
    torch.manual_seed(0)
    bn = KerasBatchNorm2d(6, eps=1e-3, decay=0.99)
    biased_m, biased_v = torch.zeros(6), torch.zeros(6)
    for t in range(1, 4):
        x = torch.randn(8, 6, 5, 5) * t + t
        y = bn(x)
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=1)
        biased_m, biased_v = 0.99 * biased_m + 0.01 * mean, 0.99 * biased_v + 0.01 * var
        torch.testing.assert_close(bn.running_mean, biased_m / (1 - 0.99**t))
        torch.testing.assert_close(bn.running_var, biased_v / (1 - 0.99**t))
        # normalised with the batch's own (biased) variance, as training-mode BatchNorm does
        vb = x.var(dim=(0, 2, 3), correction=0)
        expect = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(vb.view(1, -1, 1, 1) + 1e-3)
        torch.testing.assert_close(y, expect, rtol=1e-4, atol=1e-4)


def test_fast_path_gives_the_reference_numbers_to_float_rounding():
    """One step from the same state: every loss, probe cell and gradient norm agrees to float rounding.

    (Later steps drift apart: BatchNorm's backward cancels large terms and Adam's first updates are
    nearly sign(gradient), so rounding-level differences grow, as between two thread counts' curves.)"""
    cfg = preset("stable").replace(width=0.25, d_width=0.5, batch_size=32, device="cpu")
    for arch in ("bn", "nobn"):
        fast, ref = build_gan(cfg.replace(arch=arch)), build_gan(cfg.replace(arch=arch, fast_path=False))
        assert fast.real.is_contiguous(memory_format=torch.channels_last)
        assert fast.G.body[0].weight.is_contiguous(memory_format=torch.channels_last)
        a, b = gan_step(fast), gan_step(ref)
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), f"{arch} {k}"


def test_same_seed_same_device_same_curve():
    cfg = preset("stable").replace(width=0.125, d_width=0.25, batch_size=16, device="cpu")
    a, b = build_gan(cfg), build_gan(cfg)
    for _ in range(3):
        ma, mb = gan_step(a), gan_step(b)
        assert ma == mb


@pytest.mark.skipif(
    not torch.cpu._is_avx512_bf16_supported() and not torch.cpu._is_amx_tile_supported(),
    reason="this CPU has no bfloat16 instructions",
)
def test_bf16_run_logs_the_same_structure_in_float32(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    kw = dict(width=0.0625, batch_size=16, steps=12, sample_every=0, experiment="bf16", device="cpu")
    fp32 = train(Config(**kw), tracking_uri=uri, quiet=True)
    bf16 = train(Config(precision="bf16", **kw), tracking_uri=uri, quiet=True)
    rs = load_runs("bf16", tracking_uri=uri, progress=False)
    keys = {rid: set(rs.metrics.loc[rs.metrics["run_id"] == rid, "key"].astype(str)) for rid in (fp32, bf16)}
    assert keys[fp32] == keys[bf16] and set(contract_keys()) - {GP_LOSS} <= keys[bf16]
    a, b = rs.per_sample(fp32), rs.per_sample(bf16)
    assert set(a) == set(b) == {"steps", *CELLS}
    for cell in CELLS:
        assert b[cell].dtype == np.float32 and b[cell].shape == a[cell].shape and np.isfinite(b[cell]).all()
    # bf16 really ran: the first step's scores differ from fp32's, by bfloat16's rounding and no more
    diff = np.abs(b["dbatch_before"][0] - a["dbatch_before"][0])
    assert 0 < diff.max() < 0.05
    client = MlflowClient(uri)
    tags = {rid: client.get_run(rid).data.tags for rid in (fp32, bf16)}
    assert tags[bf16][TAG_PRECISION] == "bf16" and tags[fp32][TAG_PRECISION] == "fp32"
    assert tags[bf16][TAG_DEVICE] == "cpu"
    assert tags[bf16]["gantrack.config_hash"] != tags[fp32]["gantrack.config_hash"]


def test_runs_stored_before_the_device_fields_keep_their_identity():
    # the hash a stored chapter10-full run (stable, seed 2) was given before device/precision existed
    assert preset("stable").replace(experiment="chapter10-full", seed=2).config_hash() == "e287b70330607c30"
    base = preset("stable")
    assert base.replace(device="cpu", fast_path=False).config_hash() == base.config_hash()  # where, not what
    assert base.replace(precision="bf16").config_hash() != base.config_hash()


@pytest.mark.skipif(
    not torch.cpu._is_avx512_bf16_supported() and not torch.cpu._is_amx_tile_supported(),
    reason="this CPU has no bfloat16 instructions",
)
def test_user_loop_probes_inside_autocast_keep_float32_scores(tmp_path):
    from gantrack.loop import LoopProbes

    torch.manual_seed(0)
    D = nn.Sequential(
        nn.Conv2d(1, 4, 4, 2, 1), nn.BatchNorm2d(4), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(4 * 14 * 14, 1)
    )
    G = nn.Sequential(nn.Linear(8, 28 * 28), nn.Tanh(), nn.Unflatten(1, (1, 28, 28)))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # G's step scores D's own fake batch: the order is d-first-same-batch
    with LoopProbes(D, order="d-first-same-batch", experiment="loop-bf16", tracking_uri=uri) as probes:
        for _ in range(4):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                fake = G(torch.randn(8, 8))
                scores = D(fake.detach())
                assert scores.dtype == torch.bfloat16  # the user's loop really runs in bf16
                probes.d_step(fake.detach(), scores)
                probes.g_step(fake, D(fake))
                probes.end_step()
    rs = load_runs("loop-bf16", tracking_uri=uri, progress=False)
    ps = rs.per_sample(probes.run_id)
    assert all(ps[c].dtype == np.float32 and ps[c].shape == (4, 8) for c in CELLS)
    assert set(contract_keys()) - {GP_LOSS, "loss/d", "loss/d_real", "acc/real", "prob/real"} <= set(
        rs.metrics["key"].astype(str)
    )


def test_keep_freed_memory_applies_in_a_process_of_its_own():
    code = "from gantrack.allocator import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ)
    expect = "True" if sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") else "False"
    assert out.stdout.strip() == expect, out.stderr
