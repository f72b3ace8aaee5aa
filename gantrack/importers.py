"""Runs from where GAN people already log, turned into MLflow runs: ``gantrack import FORMAT PATH...``.

Formats (``FORMATS``), each a parser from a file to its series (source key → steps, values):

- ``book-log``: the console output of chapter 10's Keras listings — ``>%d, d1=%.3f, d2=%.3f g=%.3f,
  a1=%d, a2=%d`` (stable, mode collapse, the Adam defaults) and ``>%d, d=%.3f, g=%.3f, a=%d`` (the combined
  batch). The accuracies are printed as integer percent: they are divided by 100.
- ``tensorboard``: event files, or folders of them (every ``events.out.tfevents.*`` under it), read with
  full history by a record reader (``tensorboard`` extra for the protobufs; no TensorFlow). A truncated
  file keeps the records before the cut, with a warning.
- ``jsonl``: StyleGAN2-ADA's ``stats.jsonl`` (one JSON object a tick; each stat's ``mean``; the step is
  ``Progress/kimg`` in thousands of images, else the line number).
- ``loss-log``: pytorch-CycleGAN-and-pix2pix's ``loss_log.txt`` (``(epoch: 1, iters: 100, ...) G_GAN: 1.2
  D_real: 0.3 ...``; the step is the line's position, every logged line one step).
- ``csv``: one column per metric plus a step column (``step``, ``epoch``, ``iteration``, ``iter``, ``global_step``
  or ``--step-column``), as Keras's ``CSVLogger`` or a pandas export writes.

Every point is logged at its own step (never decimated), through ``log_batch`` in chunks of 1,000 (MLflow's
limit). Names are mapped to gantrack's contract with the key-map machinery (``gantrack.keymaps``: each
format's own map, or ``--keymap``/``--key``); the map is printed as the import runs and kept in the tag
``gantrack.key_map``; unmapped keys keep their names (characters MLflow refuses become ``_``). Tags say
where a run came from: ``gantrack.source`` (the format), ``gantrack.source_file`` and
``gantrack.source_hash`` (sha256 of the file). Re-importing a file with the same hash into the same
experiment is a no-op. What the source does not log (probe cells, accuracies, separate D losses) is said
in one line per run: which factors and diagnoses are out of reach.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import contract as C
from .errors import GantrackError
from .messages import warn


@dataclass
class Parsed:
    """A file's series: source key → (steps, values), in file order."""

    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    skipped: int = 0  # lines or records that could not be read
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, step: int, value: float) -> None:
        steps, values = self.series.setdefault(key, ([], []))
        steps.append(int(step))
        values.append(float(value))

    @property
    def points(self) -> int:
        return sum(len(s) for s, _ in self.series.values())


# --- the formats --------------------------------------------------------------------------------

_BOOK = re.compile(r"^>(\d+),\s*(.*)$")
_BOOK_FIELD = re.compile(r"([A-Za-z]\w*)=(-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf|-inf)")
BOOK_MAP = {C.D_REAL: "d1", C.D_FAKE: "d2", C.D_LOSS: "d", C.G_LOSS: "g", C.ACC_REAL: "a1", C.ACC_FAKE: "a2"}
BOOK_PERCENT = ("a1", "a2", "a")


def parse_book_log(path: Path) -> Parsed:
    """Chapter 10's console lines; anything else (Keras's progress, warnings) is skipped and counted."""
    out = Parsed()
    percent = False
    for line in _lines(path):
        m = _BOOK.match(line.strip())
        if not m:
            out.skipped += bool(line.strip())
            continue
        fields = dict(_BOOK_FIELD.findall(m.group(2)))
        if not fields or not ({"d1", "d2", "g"} <= fields.keys() or {"d", "g"} <= fields.keys()):
            out.skipped += 1
            continue
        step = int(m.group(1))
        for k, v in fields.items():
            value = float(v)
            if k in BOOK_PERCENT:
                value, percent = value / 100, True
            out.add(k, step, value)
    if percent:
        out.notes.append("accuracies a1, a2 (a) are printed as integer percent: divided by 100")
    if "a" in out.series:
        out.notes.append(
            "the combined batch prints one accuracy a over real and fake: kept as acc/d, not acc/real, acc/fake"
        )
    return out


_LOSS_LOG = re.compile(r"^\((.*?)\)\s*(.*)$")
_PAIR = re.compile(r"([A-Za-z_][\w/]*):\s*(-?[\d.]+(?:[eE][-+]?\d+)?|nan|inf)")


def parse_loss_log(path: Path) -> Parsed:
    """pix2pix/CycleGAN ``loss_log.txt``: one step per loss line; the header lines are skipped."""
    out = Parsed()
    step = 0
    for line in _lines(path):
        text = line.strip()
        if not text or text.startswith("="):  # the "==== Training Loss (...) ====" header
            continue
        m = _LOSS_LOG.match(text)
        pairs = _PAIR.findall(m.group(2)) if m else []
        if not pairs:
            out.skipped += 1
            continue
        step += 1
        for k, v in pairs:
            out.add(k, step, float(v))
        for k, v in _PAIR.findall(m.group(1)):  # epoch, iters, time, data
            if k in ("epoch", "iters"):
                out.add(f"progress/{k}", step, float(v))
    return out


def parse_jsonl(path: Path) -> Parsed:
    """StyleGAN2-ADA ``stats.jsonl``: each stat's ``mean`` (or a plain number), at ``Progress/kimg``."""
    out = Parsed()
    for i, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError
        except ValueError:
            out.skipped += 1
            continue
        kimg = row.get("Progress/kimg")
        step = i
        if isinstance(kimg, dict) and isinstance(kimg.get("mean"), (int, float)):
            step = int(round(1000 * kimg["mean"]))  # images seen: a step that grows with training
        for k, v in row.items():
            value = v.get("mean") if isinstance(v, dict) else v
            if isinstance(value, (int, float)) and not isinstance(value, bool) and k != "timestamp":
                out.add(k, step, float(value))
    if out.series:
        out.notes.append("step = images seen (Progress/kimg x 1000), as StyleGAN2-ADA counts training")
    return out


STEP_COLUMNS = ("step", "global_step", "iteration", "iter", "epoch")


def parse_csv(path: Path, step_column: str | None = None) -> Parsed:
    """One numeric column per metric and a step column; empty cells are skipped, not zeros."""
    out = Parsed()
    reader = csv.reader(_lines(path))  # whole lines: a followed file's unfinished line waits
    header = [h.strip() for h in next(reader, [])]
    if not header:
        raise GantrackError(f"{path}: empty CSV file")
    col = step_column or next((c for c in STEP_COLUMNS if c in header), None)
    if col is None or col not in header:
        wanted = repr(step_column) if step_column else "none of " + ", ".join(STEP_COLUMNS)
        raise GantrackError(
            f"{path}: no step column ({wanted} among {', '.join(header[:8])}); name it with --step-column"
        )
    si = header.index(col)
    for row in reader:
        try:
            if len(row) != len(header):
                raise ValueError
            step = int(float(row[si]))
        except ValueError:
            out.skipped += 1
            continue
        for name, cell in zip(header, row):
            if name == col or not cell.strip():
                continue
            try:
                out.add(name, step, float(cell))
            except ValueError:
                out.skipped += 1
    return out


# --- TensorBoard: a plain record reader --------------------------------------------------------


def _events(path: Path):
    """(raw Event bytes, truncated?) from one TFRecord file: u64 length, u32 masked CRC of it, the
    data, u32 masked CRC of the data. The CRCs are not checked (tbparse and EventAccumulator both
    spend most of their time on per-record Python work; the file is read once, sequentially)."""
    data = path.read_bytes()
    i, n = 0, len(data)
    records = []
    while i < n:
        if i + 12 > n:
            return records, True
        (length,) = struct.unpack_from("<Q", data, i)
        end = i + 12 + length + 4
        if end > n:
            return records, True
        records.append(data[i + 12 : i + 12 + length])
        i = end
    return records, False


def parse_tensorboard(path: Path) -> Parsed:
    """Every scalar of every event file under ``path``: TF1 ``simple_value`` and TF2 scalar tensors."""
    try:
        from tensorboard.compat.proto import event_pb2
    except ImportError:
        raise GantrackError("reading TensorBoard files needs the extra: pip install 'gantrack[tensorboard]'") from None
    files = sorted(path.rglob("events.out.tfevents.*")) if path.is_dir() else [path]
    if not files:
        raise GantrackError(f"{path}: no TensorBoard event files (events.out.tfevents.*) under this folder")
    out = Parsed()
    event = event_pb2.Event()
    for file in files:
        records, truncated = _events(file)
        if truncated:
            out.warnings.append(f"{file}: truncated; the {len(records)} records before the cut are kept")
        for raw in records:
            try:
                event.ParseFromString(raw)
            except Exception:
                out.skipped += 1
                continue
            if not event.HasField("summary"):
                continue
            for v in event.summary.value:
                kind = v.WhichOneof("value")
                if kind == "simple_value":
                    out.add(v.tag, event.step, v.simple_value)
                elif kind == "tensor" and v.metadata.plugin_data.plugin_name in ("scalars", ""):
                    t = v.tensor
                    if t.float_val:
                        out.add(v.tag, event.step, t.float_val[0])
                    elif t.double_val:
                        out.add(v.tag, event.step, t.double_val[0])
                    elif t.tensor_content and len(t.tensor_content) in (4, 8):
                        fmt = "<f" if len(t.tensor_content) == 4 else "<d"
                        out.add(v.tag, event.step, struct.unpack(fmt, t.tensor_content)[0])
    return out


def _preset(name: str) -> dict[str, str]:
    from .keymaps import preset

    return preset(name)


FORMATS = {  # name: (parser, what it reads, its default key map {contract: source})
    "book-log": (parse_book_log, "chapter 10's Keras console lines (>step, d1=, d2=, g=, a1=, a2=)", BOOK_MAP),
    "tensorboard": (parse_tensorboard, "TensorBoard event files or folders (TorchGAN, Mimicry, Lightning)", {}),
    "jsonl": (parse_jsonl, "StyleGAN2-ADA stats.jsonl", _preset("stylegan2-ada")),
    "loss-log": (parse_loss_log, "pytorch-CycleGAN-and-pix2pix loss_log.txt", _preset("pix2pix")),
    "csv": (parse_csv, "a CSV with a step column (Keras CSVLogger, pandas)", {}),
}


# --- into MLflow ---------------------------------------------------------------------------------


_FOLLOWED: set[Path] = set()  # files being followed (--watch): their unfinished last line waits


def _lines(path: Path):
    with _open(path) as f:
        for line in f:
            if path in _FOLLOWED and not line.endswith("\n"):
                return  # the writer is still on this line: "g=1.0" may become "g=1.05"
            yield line


def _open(path: Path):
    try:
        return path.open(newline="", errors="replace")
    except OSError as e:
        raise GantrackError(f"cannot read {path}: {e.strerror}") from None


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(path.rglob("events.out.tfevents.*")) if path.is_dir() else [path]
    for f in files:
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


_MLFLOW_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def mlflow_key(key: str) -> str:
    """A key MLflow accepts (alphanumerics, ``_ - . /`` and spaces): others become ``_``."""
    return _MLFLOW_KEY.sub("_", key).strip() or "_"


def key_map_for(fmt: str, parsed: Parsed, user_map: dict[str, str]) -> dict[str, str]:
    """{source key: contract key}: the format's own map where the file has its keys, then the user's
    (``{contract: source}``, later wins); a user entry naming a key the file lacks is one error."""
    known = set(C.contract_keys())
    mapping = {src: dst for dst, src in FORMATS[fmt][2].items() if src in parsed.series}
    for contract_key, source in user_map.items():
        if contract_key not in known:
            raise GantrackError(f"key map: {contract_key!r} is not a gantrack metric (e.g. loss/d_fake, loss/g)")
        if source not in parsed.series:
            have = ", ".join(sorted(parsed.series)[:10])
            raise GantrackError(f"key map names {source!r} (for {contract_key}), not in the file; it has: {have}")
        mapping = {s: d for s, d in mapping.items() if d != contract_key and s != source}
        mapping[source] = contract_key
    return mapping


def out_of_reach(mapped: set[str], loss: str) -> str:
    """What the imported keys cannot give: which factors, which diagnoses."""
    gaps = []
    if not any(C.is_probe_key(k) for k in mapped):
        gaps.append("no probe cells: the context, timing and sampling factors and the law are out of reach")
    if not {C.D_REAL, C.D_FAKE} <= mapped:
        gaps.append(
            "no separate d_real and d_fake" + (": D-wins is read from loss/d alone" if C.D_LOSS in mapped else "")
        )
    if not {C.ACC_REAL, C.ACC_FAKE} <= mapped:
        gaps.append("no acc/real, acc/fake: stable and oscillating cannot be told apart")
    if C.G_LOSS not in mapped:
        gaps.append("no loss/g: the explanation of d_fake against g is out of reach")
    gaps.append("no diversity snapshots: mode collapse cannot be diagnosed (only its loss signature)")
    return "; ".join(gaps)


def import_file(
    fmt: str,
    path: str | Path,
    experiment: str,
    name: str | None = None,
    tracking_uri: str | None = None,
    key_map: dict[str, str] | None = None,
    loss: str = "nsgan",
    step_column: str | None = None,
    follow: bool = False,
    every: float = 2.0,
    idle: float | None = None,
    say=print,
) -> tuple[str, bool]:
    """One file (or TensorBoard folder) as one MLflow run; returns (run id, imported now).

    A file whose sha256 was already imported into ``experiment`` is not imported again (its run id comes
    back). ``follow``: then keep reading the growing file every ``every`` seconds into the same run (new
    points only), until Ctrl-C or ``idle`` seconds without growth; the run stays RUNNING meanwhile, so
    ``gantrack report``/``diagnose`` see it live, and ends FINISHED."""
    from .tracked_run import TrackedRun
    from .tracking import open_store

    if fmt not in FORMATS:
        raise GantrackError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if loss not in C.LOSS_FAMILIES:
        raise GantrackError(f"unknown loss {loss!r}; choose one of: {', '.join(C.LOSS_FAMILIES)}")
    p = Path(path)
    if not p.exists():
        raise GantrackError(f"{p}: no such file or folder")
    if p.is_file() and p.stat().st_size == 0 and not follow:
        raise GantrackError(f"{p}: empty file")
    if p.is_dir() and fmt != "tensorboard":
        raise GantrackError(f"{p} is a folder; {fmt} reads one file")
    if follow and fmt == "tensorboard":
        raise GantrackError("--watch follows line logs (book-log, loss-log, jsonl, csv), not event files")

    def read() -> Parsed:
        parser = FORMATS[fmt][0]
        return parser(p, step_column) if fmt == "csv" else parser(p)

    size = p.stat().st_size if p.is_file() else 0  # what this read saw: growth after it is followed
    if follow:
        _FOLLOWED.add(p)
    parsed = read()
    if not parsed.series and not follow:
        raise GantrackError(f"{p}: no {fmt} data found ({parsed.skipped} unreadable lines or records)")
    for w in parsed.warnings:
        warn("%s", w)
    if parsed.skipped:
        warn("%s: %d lines or records could not be read and were skipped", p, parsed.skipped)
    try:
        mapping = key_map_for(fmt, parsed, key_map or {})
    except GantrackError as e:
        raise GantrackError(f"{p}: {e}") from None
    digest = file_hash(p)  # bad input has failed by now, before the store is touched
    store = open_store(tracking_uri)
    exp = store.client.get_experiment_by_name(experiment)
    if exp is not None and not follow:
        same = store.client.search_runs([exp.experiment_id], f"tags.`{C.TAG_SOURCE_HASH}` = '{digest}'", max_results=1)
        if same:
            say(f"{p}: already imported as run {same[0].info.run_id} (same sha256): nothing to do")
            return same[0].info.run_id, False
    shown = ", ".join(f"{dst} <- {src}" for src, dst in mapping.items()) or "no key mapped"
    say(f"{p} ({fmt}): {shown}")
    for note in parsed.notes:
        say(f"  note: {note}")
    gaps = out_of_reach(set(mapping.values()), loss)
    say(f"  out of reach: {gaps}")
    tags = {
        C.TAG_KIND: "import",
        C.TAG_SOURCE: fmt,
        C.TAG_SOURCE_FILE: str(p.resolve()),
        C.TAG_SOURCE_HASH: digest,
        C.TAG_LOSS: loss,
        C.TAG_KEY_MAP: json.dumps({dst: src for src, dst in mapping.items()}),
        C.TAG_NOTE: f"Imported from {p.name} ({FORMATS[fmt][1]}). Out of reach: {gaps}.",
    }
    run = TrackedRun.create(store, experiment, tags, run_name=name or p.stem)
    logged: dict[str, int] = {}  # source key -> points logged (the file only grows)
    try:
        _log_new(run, parsed, mapping, logged)
        run.flush()
        if follow:
            _FOLLOWED.add(p)
            say(f"  run {run.run_id}: following {p} (Ctrl-C to stop)")
            quiet_since = time.monotonic()
            try:
                while idle is None or time.monotonic() - quiet_since < idle:
                    time.sleep(every)
                    if p.stat().st_size == size:
                        continue
                    size, quiet_since = p.stat().st_size, time.monotonic()
                    parsed = read()  # whole lines only: a line being written is read next time
                    mapping = {**key_map_for(fmt, parsed, key_map or {}), **mapping}
                    _log_new(run, parsed, mapping, logged)
                    run.flush()
            except KeyboardInterrupt:
                pass
            finally:
                _FOLLOWED.discard(p)
        run.set_tag(C.TAG_SOURCE_HASH, file_hash(p))
        run.finish()
    except BaseException as e:
        run.fail(e)
        raise
    say(f"  run {run.run_id}: {sum(logged.values())} points, {len(logged)} keys")
    return run.run_id, True


def _log_new(run, parsed: Parsed, mapping: dict[str, str], logged: dict[str, int]) -> None:
    ts = int(time.time() * 1000)
    for src, (steps, values) in parsed.series.items():
        done = logged.get(src, 0)
        if len(steps) > done:
            run.log_series(mapping.get(src) or mlflow_key(src), steps[done:], values[done:], ts)
            logged[src] = len(steps)
