"""Key maps: runs logged by other loops, read under gantrack's metric names.

A key map says which of the user's metric keys holds which contract key (``contract``), e.g.
``{"loss/d_fake": "errD_fake", "loss/g": "errG"}``. ``load_runs(..., key_map=...)`` renames the
user's keys on the way in, so ``oscillation``, ``explain`` and the report read them as their own.
Presets cover common layouts; ``gantrack keymaps`` lists them.
"""

from __future__ import annotations

from . import contract as C
from .errors import GantrackError

PRESETS: dict[str, tuple[str, dict[str, str]]] = {
    "pytorch-dcgan": (
        "pytorch/examples DCGAN, its variables logged as metrics: errD_real, errD_fake, errG, D_x, D_G_z1, D_G_z2",
        {
            C.D_REAL: "errD_real",
            C.D_FAKE: "errD_fake",
            C.G_LOSS: "errG",
            C.PROB_REAL: "D_x",
            C.PROB_FAKE: "D_G_z1",
            C.PROB_GEN: "D_G_z2",
        },
    ),
    "lightning-gan": (
        "Lightning's GAN template (self.log): real_loss, fake_loss, g_loss",
        {C.D_REAL: "real_loss", C.D_FAKE: "fake_loss", C.G_LOSS: "g_loss"},
    ),
    "mimicry": (
        "Mimicry (kwotsin/mimicry) TensorBoard scalars: errD (D's summed loss), errG, D(x), D(G(z))",
        {C.D_LOSS: "errD", C.G_LOSS: "errG", C.PROB_REAL: "D(x)", C.PROB_FAKE: "D(G(z))"},
    ),
    "pix2pix": (
        "pytorch-CycleGAN-and-pix2pix loss_log.txt: D_real, D_fake (D's two halves), G_GAN (G's adversarial loss)",
        {C.D_REAL: "D_real", C.D_FAKE: "D_fake", C.G_LOSS: "G_GAN"},
    ),
    "stylegan2-ada": (
        "StyleGAN2-ADA stats.jsonl: Loss/G/loss, Loss/D/loss (summed); Loss/scores/* are mean logits, not losses",
        {C.G_LOSS: "Loss/G/loss", C.D_LOSS: "Loss/D/loss"},
    ),
    "keras-dcgan": (
        "the book's Keras loop logged as d1 (real), d2 (fake), g",
        {C.D_REAL: "d1", C.D_FAKE: "d2", C.G_LOSS: "g"},
    ),
}
REQUIRED = (C.D_FAKE, C.G_LOSS)


def preset(name: str) -> dict[str, str]:
    if name not in PRESETS:
        raise GantrackError(f"unknown key map {name!r}; choose one of: {', '.join(PRESETS)}")
    return dict(PRESETS[name][1])


def parse(items: list[str], preset_name: str | None = None) -> dict[str, str]:
    """``--keymap NAME`` then ``--key contract=user`` items (later ones win) → {contract: user}."""
    out = preset(preset_name) if preset_name else {}
    for item in items:
        contract_key, sep, user_key = item.partition("=")
        if not sep or not contract_key.strip() or not user_key.strip():
            raise GantrackError(f"--key expects CONTRACT_KEY=YOUR_KEY (e.g. loss/d_fake=errD_fake), got {item!r}")
        out[contract_key.strip()] = user_key.strip()
    return out


def check(key_map: dict[str, str], logged: dict[str, set[str]]) -> dict[str, str]:
    """Validate ``key_map`` against the keys each run logged (``{run_id: keys}``); returns
    {user key: contract key} for renaming. Every problem is one line naming the key and the runs."""
    if not isinstance(key_map, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in key_map.items()):
        raise GantrackError("key_map must map contract keys to your keys, e.g. {'loss/d_fake': 'errD_fake'}")
    known = set(C.contract_keys())
    for contract_key in key_map:
        if contract_key not in known:
            raise GantrackError(f"key map: {contract_key!r} is not a gantrack metric (e.g. loss/d_fake, loss/g)")
    users: dict[str, str] = {}
    for contract_key, user_key in key_map.items():
        if user_key in users:
            raise GantrackError(f"key map: {users[user_key]} and {contract_key} both map to {user_key!r}")
        users[user_key] = contract_key
    runs = sorted(logged)
    for contract_key, user_key in key_map.items():
        lacking = [r for r in runs if user_key not in logged[r]]
        if lacking and len(lacking) == len(runs):
            raise GantrackError(f"key map: no run logged {user_key!r} (for {contract_key}); runs: {_names(runs)}")
    for need in REQUIRED:
        if need not in key_map:
            lacking = [r for r in runs if need not in logged[r]]
            if lacking:
                raise GantrackError(
                    f"key map leaves {need} unmapped and run(s) {_names(lacking)} do not log it: "
                    f"add --key {need}=YOUR_KEY"
                )
    return users


def _names(runs: list[str], shown: int = 3) -> str:
    return ", ".join(runs[:shown]) + (f" and {len(runs) - shown} more" if len(runs) > shown else "")
