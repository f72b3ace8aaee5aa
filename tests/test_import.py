"""`gantrack import`: the chapter's Keras console, TensorBoard, StyleGAN2-ADA's stats.jsonl, pix2pix's
loss_log.txt and CSV, on small files made here (tests/data/make_book_logs.py for the book logs; the
others are written by the tests in each tool's format), then diagnosed and reported unchanged."""

import json
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gantrack import contract as C
from gantrack.analysis import diagnose, load_runs
from gantrack.cli import main as cli
from gantrack.importers import import_file

DATA = Path(__file__).parent / "data"


def store_dir(store: str) -> Path:
    return Path(store[len("sqlite:///") :]).parent


def _history(store, run_id, key):
    return sorted((m.step, m.value) for m in MlflowClient(store).get_metric_history(run_id, key))


def test_book_logs_of_a_stable_and_a_combined_batch_run_get_their_verdicts(store, capsys):
    assert (
        cli(
            [
                "import",
                "book-log",
                str(DATA / "book_log_stable.txt"),
                str(DATA / "book_log_combined.txt"),
                "--experiment",
                "book",
                "--tracking-uri",
                store,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "loss/d_real <- d1" in out and "divided by 100" in out and "out of reach" in out
    rs = load_runs("book", tracking_uri=store, progress=False)
    assert len(rs.runs) == 2 and set(rs.runs[f"tags.{C.TAG_SOURCE}"]) == {"book-log"}
    stable = rs.runs.loc[rs.runs["name"] == "book_log_stable", "run_id"].iloc[0]
    h = _history(store, stable, C.ACC_REAL)
    assert [s for s, _ in h] == list(range(1, 451)) and h[0][1] == pytest.approx(0.43)  # every step, percent / 100
    table = diagnose(rs).set_index("run_name")
    assert table.loc["book_log_stable", "verdict"] == "stable"
    combined = table.loc["book_log_combined"]
    assert combined["verdict"] == "convergence-failure" and "g ≈ 0" in combined["subtype"]
    assert 10 <= combined["onset_step"] <= 40  # the book: steps 20-30; the goal: within 10 steps of it
    assert "div/*" in table.loc["book_log_stable", "missing"]
    from gantrack.analysis import build_report

    rep = build_report("book", tracking_uri=store, out_dir=store_dir(store) / "rep", progress=False, n_boot=100)
    md = rep.markdown.read_text()
    assert "book_log_stable" in md and "**convergence-failure**" in md
    # importing the same files again changes nothing
    assert (
        cli(["import", "book-log", str(DATA / "book_log_stable.txt"), "--experiment", "book", "--tracking-uri", store])
        == 0
    )
    assert "already imported" in capsys.readouterr().out
    assert (
        len(load_runs("book", tracking_uri=store, filter="tags.`gantrack.kind` = 'import'", progress=False).runs) == 2
    )


def test_a_book_log_with_garbage_lines_skips_and_counts_them(store, tmp_path, caplog):
    log = tmp_path / "keras.txt"
    log.write_text(
        "Epoch 1/10\n>1, d1=0.5, d2=0.6 g=1.0, a1=50, a2=60\nWARNING: something\n>2, d1=oops\n"
        ">2, d1=0.4, d2=0.5 g=1.1, a1=55, a2=65\n"
    )
    run_id, fresh = import_file("book-log", log, "garbage", tracking_uri=store, say=lambda *_: None)
    assert fresh and _history(store, run_id, C.G_LOSS) == [(1, 1.0), (2, 1.1)]
    assert any("3 lines or records could not be read" in r.getMessage() for r in caplog.records)


def test_tensorboard_event_files_are_read_whole_and_a_truncated_one_keeps_what_precedes_the_cut(
    store, tmp_path, caplog
):
    from torch.utils.tensorboard import SummaryWriter

    folder = tmp_path / "tb"
    w = SummaryWriter(str(folder))
    for step in range(1, 12_001):  # more than EventAccumulator's default 10,000 scalars a tag
        w.add_scalar("errD", 0.5 + 1e-5 * step, step)
        w.add_scalar("errG", 1.5, step)
        if step % 1000 == 0:
            w.add_scalar("D(x)", 0.7, step)
    w.close()
    run_id, _ = import_file(
        "tensorboard",
        folder,
        "tb",
        tracking_uri=store,
        key_map={"loss/d": "errD", "loss/g": "errG", "prob/real": "D(x)"},
        say=lambda *_: None,
    )
    assert [s for s, _ in _history(store, run_id, C.G_LOSS)] == list(range(1, 12_001))
    assert len(_history(store, run_id, C.PROB_REAL)) == 12
    event = next(folder.glob("events.out.tfevents.*"))
    cut = tmp_path / "cut" / event.name
    cut.parent.mkdir()
    cut.write_bytes(event.read_bytes()[: event.stat().st_size // 2])
    run_cut, _ = import_file(
        "tensorboard", cut, "tb", tracking_uri=store, say=lambda *_: None, key_map={"loss/g": "errG"}
    )
    n = len(_history(store, run_cut, C.G_LOSS))
    assert 4000 < n < 8000 and any("truncated" in r.getMessage() for r in caplog.records)


def test_stylegan_jsonl_pix2pix_loss_log_and_csv(store, tmp_path, capsys):
    stats = tmp_path / "stats.jsonl"
    with stats.open("w") as f:
        for tick in range(1, 31):
            f.write(
                json.dumps(
                    {
                        "Loss/G/loss": {"num": 64, "mean": 1.0 + 0.01 * tick, "std": 0.1},
                        "Loss/D/loss": {"num": 64, "mean": 0.8, "std": 0.1},
                        "Loss/scores/fake": {"num": 64, "mean": -0.5, "std": 1.0},
                        "Progress/kimg": {"num": 1, "mean": 4.0 * tick, "std": 0},
                        "timestamp": 1.7e9 + tick,
                    }
                )
                + "\n"
            )
    run_j, _ = import_file("jsonl", stats, "sg", tracking_uri=store, say=print)
    out = capsys.readouterr().out
    assert "loss/g <- Loss/G/loss" in out and "no separate d_real and d_fake" in out
    assert _history(store, run_j, C.G_LOSS)[0] == (4000, pytest.approx(1.01))
    assert len(_history(store, run_j, "Loss/scores/fake")) == 30  # logits keep their own name

    log = tmp_path / "loss_log.txt"
    lines = ["================ Training Loss (Mon Dec  1 10:00:00 2026) ================"]
    lines += [
        f"(epoch: {1 + i // 10}, iters: {100 * (i % 10 + 1)}, time: 0.05, data: 0.2) G_GAN: {1 + i / 100:.3f} "
        f"G_L1: 10.0 D_real: 0.4 D_fake: 0.3 "
        for i in range(40)
    ]
    log.write_text("\n".join(lines) + "\n")
    run_l, _ = import_file("loss-log", log, "p2p", tracking_uri=store, say=lambda *_: None)
    assert [s for s, _ in _history(store, run_l, C.D_FAKE)] == list(range(1, 41))
    assert len(_history(store, run_l, "G_L1")) == 40

    table = tmp_path / "training.csv"
    table.write_text("epoch,d_loss,g_loss,d_acc\n" + "".join(f"{i},{0.5},{1.0 + i},{0.7}\n" for i in range(50)))
    run_c, _ = import_file(
        "csv", table, "csv", tracking_uri=store, key_map={"loss/d": "d_loss", "loss/g": "g_loss"}, say=lambda *_: None
    )
    assert _history(store, run_c, C.G_LOSS)[-1] == (49, 50.0)


@pytest.mark.parametrize(
    "fmt, content, args, message",
    [
        ("book-log", "", [], "empty file"),
        ("csv", "a,b\n1,2\n", [], "no step column"),
        ("csv", "step,g\n1,2\n", ["--key", "loss/g=errG"], "key map names 'errG'"),
        ("book-log", "nothing here\n", [], "no book-log data found"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_run_left_running(store, tmp_path, capsys, fmt, content, args, message):
    path = tmp_path / "input.txt"
    path.write_text(content)
    assert cli(["import", fmt, str(path), "--experiment", "bad", "--tracking-uri", store, *args]) == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if not ln.startswith("20")]  # MLflow's INFO
    assert len(err) == 1 and message in err[0] and str(path) in err[0]
    exp = MlflowClient(store).get_experiment_by_name("bad")
    assert exp is None or not MlflowClient(store).search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")


def test_a_folder_without_event_files_is_one_line(store, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli(["import", "tensorboard", str(tmp_path / "empty"), "--tracking-uri", store]) == 2
    assert "no TensorBoard event files" in capsys.readouterr().err


def test_watch_follows_a_growing_keras_log_into_one_run(store, tmp_path):
    log = tmp_path / "live.txt"
    log.write_text(">1, d1=0.5, d2=0.6 g=1.0, a1=50, a2=60\n")

    def keras():
        for step in range(2, 31):
            time.sleep(0.02)
            with log.open("a") as f:
                f.write(f">{step}, d1=0.5, d2=0.6 g={1 + step / 100:.3f}, a1=50, a2=60\n")

    writer = threading.Thread(target=keras)
    writer.start()
    run_id, _ = import_file(
        "book-log", log, "live", tracking_uri=store, follow=True, every=0.2, idle=1.5, say=lambda *_: None
    )
    writer.join()
    assert [s for s, _ in _history(store, run_id, C.G_LOSS)] == list(range(1, 31))
    assert MlflowClient(store).get_run(run_id).info.status == "FINISHED"
