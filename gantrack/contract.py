"""What a run means: metric keys, probe cells, tags, artifacts and factor names.

The harness writes these names, the analysis reads them and the MLflow UI shows them: they are
the contract between the three (docs/design.md §3). Everything else imports them from here.
"""

from __future__ import annotations

# --- per-step losses and diagnostics ----------------------------------------------------------
D_REAL, D_FAKE, D_LOSS, G_LOSS = "loss/d_real", "loss/d_fake", "loss/d", "loss/g"
GP_LOSS = "loss/gp"  # WGAN-GP's gradient penalty
LOSS_KEYS = (D_REAL, D_FAKE, G_LOSS)
LOSS_COMPONENTS = (D_REAL, D_FAKE, D_LOSS, G_LOSS, GP_LOSS)  # every loss/* key (a NaN in one stops the run)
ACC_REAL, ACC_FAKE = "acc/real", "acc/fake"
PROB_REAL, PROB_FAKE, PROB_GEN = "prob/real", "prob/fake", "prob/gen"
# gradient norms of each update (``grad_norms``): D on its real half (book schedule), D's whole update, G's
GRAD_D_REAL, GRAD_D, GRAD_G = "grad/d_real_norm", "grad/d_norm", "grad/g_norm"
WEIGHTS_D, WEIGHTS_G = "weights/d_norm", "weights/g_norm"  # parameter norms after the step
DIAGNOSTIC_KEYS = (GRAD_D_REAL, GRAD_D, GRAD_G, WEIGHTS_D, WEIGHTS_G)
# hinge: the share of D's fakes (reals) inside the margin, 1 + c > 0 (1 - c > 0), where d_fake (d_real) moves
MARGIN_FAKE, MARGIN_REAL = "margin/fake", "margin/real"

# --- sample diversity (gantrack.diversity), logged at each snapshot of G's samples ---------------
DIV_NDB, DIV_JS = "div/ndb", "div/js"  # NDB/K and JS over K-means bins of the reference
DIV_COVERAGE, DIV_COVERAGE_CEILING, DIV_DENSITY = "div/coverage", "div/coverage_ceiling", "div/density"
DIV_DUPLICATES = "div/duplicates"  # share of samples with a near-duplicate (real-calibrated threshold)
DIV_MODES, DIV_QUALITY = "div/modes", "div/quality"  # ring-2d: modes covered of 8, share within 3 sigma
DIV_MODES_KEPT = "div/modes_kept"  # ring-2d: modes whose nearest-mode cell holds >= 1/4 of its share
DIV_BATCH_BINS = "div/batch_bins"  # every step: effective number of bins G's training batch occupies
DIV_BATCH_BINS_NULL = "div/batch_bins_null"  # logged once: the same for real batches of that size
DIVERSITY_KEYS = (
    DIV_BATCH_BINS,
    DIV_BATCH_BINS_NULL,
    DIV_NDB,
    DIV_JS,
    DIV_COVERAGE,
    DIV_COVERAGE_CEILING,
    DIV_DENSITY,
    DIV_DUPLICATES,
    DIV_MODES,
    DIV_QUALITY,
    DIV_MODES_KEPT,
)

# --- the diagnosis (gantrack.diagnosis), logged by the online detector -----------------------------
VERDICTS = ("stable", "mode-collapse", "convergence-failure", "oscillating", "diverged", "stalled", "undecided")
FAILURE_MODES = ("mode-collapse", "convergence-failure", "diverged", "stalled")  # what stop_on may name
DIAG_CODE, DIAG_ONSET = "diagnosis/code", "diagnosis/onset_step"  # code: index into VERDICTS

# --- probe cells --------------------------------------------------------------------------------
# A cell is (batch, discriminator, BatchNorm context). Batches: "dbatch" = D's fake half batch,
# "gbatch" = G's full batch. Discriminators: "before" = D as it computed d_fake, "after" = D as it
# computed g. Context: the D step's (the fakes alone in train mode on the book schedule, inside
# the mixed real+fake batch on the joint schedule) or the G step's (an all-fake batch on its own
# batch statistics, or on moving statistics with d_bn_in_g_step="moving").
#   dbatch_before       D's batch, D before, D-step context   (the training forward: loss/d_fake)
#   dbatch_before_gctx  D's batch, D before, G-step context   (new: separates context from timing)
#   dbatch_after        D's batch, D after,  G-step context
#   gbatch_before       G's batch, D before, G-step context
#   gbatch_after        G's batch, D after,  G-step context   (the training forward: loss/g)
CELLS = ("dbatch_before", "dbatch_before_gctx", "dbatch_after", "gbatch_before", "gbatch_after")
CELL_STATS = ("p", "d_fake", "g")  # mean D output, batch d_fake and batch g of the cell


def contract_keys() -> list[str]:
    """Every per-step metric key of the contract (what a key map may map to)."""
    keys = [D_REAL, D_FAKE, D_LOSS, G_LOSS, GP_LOSS, ACC_REAL, ACC_FAKE, PROB_REAL, PROB_FAKE, PROB_GEN]
    return keys + [probe_key(c, s) for c in CELLS for s in CELL_STATS]


def per_step_keys() -> list[str]:
    """Every per-step metric key gantrack logs: the contract plus the harness's gradient and weight norms,
    the hinge family's margin shares and, with a diversity reference, ``div/batch_bins``."""
    return contract_keys() + list(DIAGNOSTIC_KEYS) + [MARGIN_FAKE, MARGIN_REAL, DIV_BATCH_BINS]


def snapshot_keys() -> list[str]:
    """Keys logged at diversity snapshots, once, or at detector decisions — not every step."""
    return [k for k in DIVERSITY_KEYS if k != DIV_BATCH_BINS] + [DIAG_CODE, DIAG_ONSET]


def is_probe_key(key: str) -> bool:
    return key.startswith(probe_key("", "").split("/", 1)[0] + "/")


def probe_key(cell: str, stat: str) -> str:
    """``probe/<cell>/<stat>``, e.g. ``probe/dbatch_before/g``."""
    return f"probe/{cell}/{stat}"


# --- the explanation's factors ---------------------------------------------------------------
# std(g)/std(d_fake) telescopes through the cells, one difference at a time:
# ``ratio`` = std(g)/std(d_fake) of the logged curves: the one name it has everywhere (summary column,
# MLflow metric ``explain/ratio``, report tables)
FACTORS = {  # name: ((numerator cell, stat), (denominator cell, stat)); "loss" = the logged curves
    "ratio": (("loss", G_LOSS), ("loss", D_FAKE)),
    "link": (("dbatch_before", "g"), ("dbatch_before", "d_fake")),  # g- vs d-link, same everything else
    "context": (("dbatch_before_gctx", "g"), ("dbatch_before", "g")),  # BatchNorm context only
    "timing": (("dbatch_after", "g"), ("dbatch_before_gctx", "g")),  # D's update only
    "sampling": (("gbatch_after", "g"), ("dbatch_after", "g")),  # the batch only
}
FACTOR_NAMES = ("link", "context", "timing", "sampling", "residual")  # ratio = their product, in this order

# --- update orders (tag gantrack.update_order) ----------------------------------------------------
# The harness is "d-first" (the book). In the other orders some factors are 1 by construction: D
# does not change between the two measurements (no timing) and G's batch is scored by D before its
# update, so the loss/g cell is gbatch_before.
UPDATE_ORDERS = ("d-first", "d-first-same-batch", "g-first", "simultaneous")
NO_TIMING = ("g-first", "simultaneous")


def factor_chain(order: str) -> dict[str, tuple | None]:
    """The factors for an update order; ``None`` marks a factor that is 1 by construction."""
    if order not in NO_TIMING:
        return dict(FACTORS)
    return {
        "ratio": FACTORS["ratio"],
        "link": FACTORS["link"],
        "context": FACTORS["context"],
        "timing": None,
        "sampling": (("gbatch_before", "g"), ("dbatch_before_gctx", "g")),
    }


def g_cell(order: str) -> str:
    """The probe cell whose g is the logged loss/g."""
    return "gbatch_before" if order in NO_TIMING else "gbatch_after"


# --- names the tags take ----------------------------------------------------------------------
LOSS_FAMILIES = ("nsgan", "minimax", "lsgan", "wgan-gp", "hinge")  # gantrack.loss; the book's nsgan first
MIRROR_FAMILIES = ("minimax", "wgan-gp")  # g = -d_fake as functions of D's output: the link is 1 by construction
PROBABILITY_FAMILIES = ("nsgan", "minimax")  # D's output is a probability (an implied D(G(z)) exists)
CURVE_LABELS = {  # what d_fake and g are, per family (the figures' legends)
    "nsgan": ("-log(1 - D(G(z)))", "-log D(G(z))"),
    "minimax": ("-log(1 - D(G(z)))", "log(1 - D(G(z)))"),
    "lsgan": ("D(G(z))²", "(D(G(z)) - 1)²"),
    "wgan-gp": ("C(G(z))", "-C(G(z))"),
    "hinge": ("relu(1 + C(G(z)))", "-C(G(z))"),
}
IMAGE_DATASETS = ("mnist-eights", "mnist")  # gantrack.dataset: 28×28 images for the DCGAN
TOY_DATASETS = {"quadratic-1d": 2, "ring-2d": 2, "dirac": 1}  # low-dimensional toys: name → data dimension
DATASETS = IMAGE_DATASETS + tuple(TOY_DATASETS)

# --- tags (what gantrack sets on runs; the analysis reads them as ``tags.<name>``) ---------------
TAG_SCENARIO, TAG_LOSS, TAG_SEED = "gantrack.scenario", "gantrack.loss", "gantrack.seed"
TAG_DATASET, TAG_VERSION, TAG_STEPS = "gantrack.dataset", "gantrack.version", "gantrack.steps"
TAG_SCHEDULE, TAG_BN_IN_G = "gantrack.schedule", "gantrack.d_bn_in_g_step"
TAG_ORDER = "gantrack.update_order"
TAG_ARCH, TAG_PRECISION, TAG_DEVICE = "gantrack.arch", "gantrack.precision", "gantrack.device"
TAG_KIND, TAG_FAILURE, TAG_HASH = "gantrack.kind", "gantrack.failure", "gantrack.config_hash"
TAG_STATUS = "gantrack.status"  # training → finished | failed | killed
TAG_RESUMED_FROM = "gantrack.resumed_from_step"
TAG_NONFINITE_STEP = "gantrack.nonfinite_step"  # first step with a NaN/inf loss
TAG_LOOP_SECONDS, TAG_LOOP_CPU_SECONDS = "gantrack.loop_seconds", "gantrack.loop_cpu_seconds"
TAG_THREADS = "gantrack.threads"  # torch threads the run trained with (gantrack.cores)
TAG_SYNCED_FROM = "gantrack.synced_from"  # the spool file a run's metrics were uploaded from
TAG_SWEEP_KEY, TAG_SWEEP_RESULT = "gantrack.sweep_key", "gantrack.sweep_result"
# who trains a run, and when it last wrote: a RUNNING run whose process is gone is an orphan
TAG_HOST, TAG_PID, TAG_HEARTBEAT = "gantrack.host", "gantrack.pid", "gantrack.heartbeat"  # heartbeat: unix s
TAG_DIAGNOSIS = "gantrack.diagnosis"  # the detector's verdict (contract VERDICTS), set as soon as it decides
TAG_STOPPED = "gantrack.stopped"  # "<verdict> at step <k>": the run was ended early by stop_on
# imported runs (gantrack.importers): the format, the file and its sha256 (a re-import is a no-op), the key map
TAG_SOURCE, TAG_SOURCE_FILE, TAG_SOURCE_HASH = "gantrack.source", "gantrack.source_file", "gantrack.source_hash"
TAG_KEY_MAP = "gantrack.key_map"  # JSON {contract key: the source's key}
KINDS = ("user-loop", "sweep", "report", "import")  # gantrack.kind; harness runs have none
# MLflow's own tags that gantrack writes
TAG_NOTE, TAG_PARENT, TAG_GIT_COMMIT = "mlflow.note.content", "mlflow.parentRunId", "mlflow.source.git.commit"
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"  # opens as model training

# --- metrics of other runs ---------------------------------------------------------------------
SWEEP_FINISHED, SWEEP_SECONDS = "sweep/finished_runs", "sweep/seconds"  # on a sweep's parent run
OSC_PREFIX, EXPLAIN_PREFIX = "osc", "explain"  # analysis results logged back: osc/<key>/<measure>, explain/<name>


def tag_names() -> list[str]:
    """Every tag name gantrack sets (the contract test checks runs against it)."""
    return sorted(v for k, v in globals().items() if k.startswith("TAG_") and isinstance(v, str))


# --- artifacts ---------------------------------------------------------------------------------
PER_SAMPLE_ARTIFACT = "probes/per_sample.npz"  # float32 raw D scores (logits for BCE), one array per cell
CONFIG_ARTIFACT = "config.json"
