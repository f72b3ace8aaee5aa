"""A PyTorch Lightning callback on the same core as ``LoopProbes`` (extra: ``gantrack[lightning]``).

    class GAN(L.LightningModule):
        def training_step(self, batch, batch_idx):
            probes = getattr(self, "gantrack", None)    # set by the callback; None without it
            ...
            if probes: probes.g_step(fake, d_out)       # the scores the generator loss uses
            ...
            if probes: probes.d_step(fake.detach(), d_fake, d_real)   # before D's optimiser step
            ...

    trainer = L.Trainer(callbacks=[GantrackCallback(order="g-first", experiment="my-gan")],
                        log_every_n_steps=1)

The callback opens the MLflow run when fitting starts, gives the module ``self.gantrack`` (a
``LoopProbes`` on the module's ``discriminator``), closes each step after the batch, and ends the
run FINISHED, or FAILED with the reason when fitting raises. gantrack logs every step itself;
``log_every_n_steps=1`` is what makes Lightning's own logger per-step too (its default, 50, would
decimate your ``self.log`` curves and alias the D/G ping-pong away).

Steps: gantrack counts one step per batch (``end_step`` after the batch). Lightning's ``max_steps`` and
``global_step`` count optimiser steps, so with manual optimisation of two optimisers ``max_steps=20``
trains 10 batches: pass twice the batches you want, or use ``max_epochs`` / ``limit_train_batches``.
"""

from __future__ import annotations

from .errors import GantrackError
from .loop import LoopProbes

try:
    import lightning.pytorch as pl
except ImportError:  # one line that names the extra, not a traceback into Lightning
    raise GantrackError("gantrack.lightning needs PyTorch Lightning: pip install 'gantrack[lightning]'") from None


class GantrackCallback(pl.Callback):
    """``discriminator``: the attribute of your LightningModule that holds D; ``generator``: the one that
    holds G, for diversity snapshots (with ``latent=`` and ``reference=``); other keyword arguments go to
    ``LoopProbes`` (loss, order, outputs, g_context, experiment, tracking_uri, stop_on, ...). With
    ``stop_on``, a diagnosed failure mode sets ``trainer.should_stop``: Lightning ends the fit there."""

    def __init__(self, discriminator: str = "discriminator", generator: str | None = None, **probe_options):
        self.attribute, self.generator = discriminator, generator
        self.options = probe_options
        self.probes: LoopProbes | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        D = getattr(pl_module, self.attribute, None)
        if D is None:
            raise GantrackError(f"GantrackCallback: the module has no attribute {self.attribute!r} (its discriminator)")
        params = {k: v for k, v in dict(getattr(pl_module, "hparams", {}) or {}).items()}
        options = dict(self.options)
        if self.generator is not None:
            G = getattr(pl_module, self.generator, None)
            if G is None:
                raise GantrackError(f"GantrackCallback: the module has no attribute {self.generator!r} (its generator)")
            options["G"] = G
        self.probes = LoopProbes(D, params=params, **options)
        self.probes.start()
        pl_module.gantrack = self.probes

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.probes.end_step()  # its own step count: Lightning's global_step counts optimiser steps
        if self.probes.should_stop:
            trainer.should_stop = True

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.probes is not None and self.probes.run_id and not self.probes.closed:
            self.probes.finish()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.probes is not None and self.probes.run_id and not self.probes.closed:
            self.probes.fail(exception)
