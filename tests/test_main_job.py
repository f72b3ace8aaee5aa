"""What the main job (`gantrack study chapter10`) trains on this machine, and that it says so first."""

import torch

from gantrack import studies
from gantrack.studies import BOOK, CHAPTER10, MAIN_JOB_CPU, QUICK, main_job_plan


def test_on_a_cpu_without_bf16_the_main_job_is_the_per_scenario_sizes_in_float32(monkeypatch):
    monkeypatch.setattr("gantrack.device._cpu_has_bf16", lambda: False)
    sizes, seeds, line = main_job_plan("cpu")
    assert sizes == MAIN_JOB_CPU and set(sizes) == set(CHAPTER10)
    assert seeds == studies.MAIN_JOB_CPU_SEEDS
    assert line.startswith("chapter10: CPU main job:") and "float32 (no bfloat16" in line
    for s, v in MAIN_JOB_CPU.items():
        assert s in line and studies._channels(v) in line


def test_on_a_cpu_with_bf16_the_scenarios_shown_safe_run_in_bfloat16_unless_a_precision_is_set(monkeypatch):
    monkeypatch.setattr("gantrack.device._cpu_has_bf16", lambda: True)
    sizes, _, line = main_job_plan("cpu")
    assert {s for s, v in sizes.items() if v.get("precision") == "bf16"} == set(studies.MAIN_JOB_BF16)
    assert "bfloat16" in line and "float32 elsewhere" in line
    assert {s: {k: x for k, x in v.items() if k != "precision"} for s, v in sizes.items()} == MAIN_JOB_CPU
    sizes, _, line = main_job_plan("cpu", precision="fp32")
    assert sizes == MAIN_JOB_CPU and "fp32 (as set)" in line


def test_on_a_gpu_the_main_job_is_the_books_sizes_over_three_seeds(monkeypatch):
    monkeypatch.setattr("gantrack.device.resolve_device", lambda name, **kw: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "Test GPU")
    sizes, seeds, line = main_job_plan("auto")
    assert sizes == dict.fromkeys(CHAPTER10, BOOK) and seeds == (1, 2, 3)
    assert line == "chapter10: the book's sizes on the GPU (Test GPU); seeds 1, 2, 3"
    assert main_job_plan("auto", seeds=[4])[1] == (4,)  # the user's seeds win


def test_quick_and_full_are_what_they_say():
    sizes, seeds, line = main_job_plan("cpu", quick=True)
    assert sizes == dict.fromkeys(CHAPTER10, QUICK) and seeds == (1, 2) and "--quick" in line
    sizes, seeds, line = main_job_plan("cpu", quick=False)
    assert sizes == dict.fromkeys(CHAPTER10, BOOK) and "the book's sizes" in line


def test_the_check_table_names_every_statement_not_reproduced_with_its_value():
    import pandas as pd

    from gantrack.studies import _checks_markdown

    rows = [
        ("stable", 1, "mean g (2nd half)", "1.0-2.0", "0.91", False),
        ("mode-collapse", 1, "mean fake accuracy (2nd half)", "many around 100 %", "99 %", True),
        ("mode-collapse", 1, "mean g (2nd half)", "(no figure given)", "1.4", None),
    ]
    t = pd.DataFrame(rows, columns=["scenario", "seed", "statistic", "tutorial", "measured", "agrees"])
    md = _checks_markdown(t.assign(run_id="r", arch="bn"))
    assert "1 of 2 checkable statements agree" in md
    assert md.count("\n- ") == 1 and "- stable (seed 1): mean g (2nd half) — tutorial: 1.0-2.0; measured: 0.91" in md
