"""The epoch loop of :func:`raddiag.training.trainer.train` as named steps: ``start_epoch``,
``train_epoch`` (``train_step`` per batch, ``optimizer_step`` per accumulated group),
``end_epoch`` (validation, best weights, metrics) and ``checkpoint``."""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from .checkpoint import rng_state, save_checkpoint, set_rng_state
from .prefetch import Prefetcher, loading_plan, step_threads
from .metrics import macro_auc
from raddiag.task import task_loss, validation_loss

from .runfiles import append_metrics
from .trainer import LAST, _autocast, _check_finite_loss, _null, _save_weights_atomic, log, validate


class TrainLoop:
    """The moving parts of one training run and its named steps: :meth:`start_epoch`,
    :meth:`train_epoch` (:meth:`train_step` per batch, :meth:`optimizer_step` per accumulated
    group), :meth:`end_epoch` (validation, best weights, metrics) and :meth:`checkpoint`."""

    def __init__(self, d, run, cfg, model, optimizer, scheduler, sampler, state, batches_per_epoch, max_steps,
                 key_slice_attention_loss):
        self.d, self.run, self.cfg, self.tc = d, run, cfg, cfg.train
        self.model, self.optimizer, self.scheduler, self.sampler = model, optimizer, scheduler, sampler
        self.state, self.batches_per_epoch, self.max_steps = state, batches_per_epoch, max_steps
        self.key_slice_attention_loss = key_slice_attention_loss
        self.train_model = model
        if d.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.train_model = DDP(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None,
                                   find_unused_parameters=cfg.model.encoder == "resnet")
        self.writer = None
        if d.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run.tensorboard))
        self.loss_fn = task_loss(cfg.data.task)      # BCE, or cross-entropy for data.task=multiclass
        self.need_details = self.tc.key_slice_loss > 0

    def checkpoint(self, epoch: int, batches_done: int, loss_sum: float = 0.0, loss_n: int = 0) -> None:
        if not self.d.is_main:
            return
        st = dict(self.state, epoch=epoch, batches_done=batches_done, loss_sum=loss_sum, loss_n=loss_n)
        save_checkpoint(self.run.checkpoints / LAST, {
            **st, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng_state(), "sampler": self.sampler.state_dict(),
            "world_size": self.d.world_size, "batch_size": self.tc.batch_size, "config": self.cfg.to_dict(),
        })

    def start_epoch(self, epoch: int, loader, train_ds, ckpt: Optional[dict], stream: bool):
        """``(batch iterator, first batch, resuming)``: the epoch's order, from a checkpoint's
        position and random state when it was taken in this epoch."""
        self.sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        resuming = ckpt is not None and epoch == ckpt["epoch"]
        start_batch = self.state["batches_done"] if resuming else 0
        self.sampler.set_start(start_batch * self.tc.batch_size)
        self.model.train()
        # The train loader draws its workers' seed from its own generator (make_loader's seed),
        # so creating its iterator leaves torch's RNG alone; a loader without one draws from it:
        # a checkpoint taken at an epoch boundary was saved before that draw, one mid-epoch after.
        if resuming and start_batch == 0:
            set_rng_state(ckpt["rng"])
        it = iter(loader)
        if stream:   # a stream cannot seek: read past the batches already trained on
            for _ in range(start_batch):
                next(it)
        if resuming and start_batch > 0:
            set_rng_state(ckpt["rng"])
        if loading_plan(self.d.device, loader.num_workers, self.tc.prefetch)[1]:
            it = Prefetcher(it, self.tc.prefetch)   # the next batch loads during the step (training.prefetch)
        return it, start_batch, resuming

    def open_ahead(self, epoch: int, loader, train_ds, stream: bool):
        """Epoch ``epoch``'s batch iterator (:meth:`start_epoch`), opened before the epoch ahead of it
        validates, so that the loader's worker processes load its first batches meanwhile; ``None``
        without worker processes. Otherwise a worker starts an epoch's first batch only when the
        epoch asks for it, and the step waits for it: 15-25 ms of the demo recipe's ~1 s epochs
        (issue 29). Opening changes no draw: the loader seeds its workers from its own generator."""
        if loader.num_workers == 0:
            return None
        return self.start_epoch(epoch, loader, train_ds, None, stream)[0]

    def train_step(self, batch: dict, epoch: int, group_len: int, sync: bool) -> torch.Tensor:
        """Forward and backward of one batch (gradients accumulate over ``group_len`` batches)."""
        d, tc = self.d, self.tc
        inputs = {k: batch[k].to(d.device) for k in self.model.input_keys}
        target = batch["labels"].to(d.device)
        with (self.train_model.no_sync() if not sync else _null()):
            with _autocast(self.cfg, d.device):
                out = self.train_model(**inputs, return_details=self.need_details)
                logits = out.logits if self.need_details else out
                loss = self.loss_fn(logits.float(), target)
                if self.need_details and out.slice_attention is not None:
                    loss = loss + tc.key_slice_loss * self.key_slice_attention_loss(
                        out.slice_attention.float(), batch["key_slice"].to(d.device), batch["slice_mask"].to(d.device))
            _check_finite_loss(loss, batch, epoch, self.state["step"])
            (loss / group_len).backward()
        return loss

    def optimizer_step(self, loss: torch.Tensor) -> bool:
        """Clip, step, schedule, log; True when ``max_steps`` is reached."""
        if self.tc.clip_norm and self.tc.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state["step"] += 1
        if self.writer is not None:
            self.writer.add_scalar("train/loss_step", float(loss.detach()), self.state["step"])
            self.writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.state["step"])
        return self.max_steps is not None and self.state["step"] >= self.max_steps

    def train_epoch(self, epoch: int, it, start_batch: int, loss_sum: float, loss_n: int, progress: bool,
                    threads: Optional[int] = None):
        """The epoch's batches from ``start_batch``: ``(loss_sum, loss_n, batches done, stop)``;
        the step on ``threads`` intra-op threads (default: torch's; ``training.prefetch.loading_plan``)."""
        with step_threads(threads or torch.get_num_threads()):
            return self._epoch(epoch, it, start_batch, loss_sum, loss_n, progress)

    def _epoch(self, epoch: int, it, start_batch: int, loss_sum: float, loss_n: int, progress: bool):
        d, tc, n = self.d, self.tc, self.batches_per_epoch
        bar = None
        if progress and d.is_main:
            from tqdm import tqdm

            bar = tqdm(total=n, initial=start_batch, desc=f"epoch {epoch + 1}/{tc.epochs}", unit="batch",
                       dynamic_ncols=True)
        b, stop = start_batch, False
        self.optimizer.zero_grad(set_to_none=True)
        try:
            b, stop, loss_sum, loss_n = self._batches(epoch, it, b, loss_sum, loss_n, bar)
        finally:
            if isinstance(it, Prefetcher):
                it.close()
        if bar is not None:
            bar.close()
        return loss_sum, loss_n, b, stop

    def _batches(self, epoch: int, it, b: int, loss_sum: float, loss_n: int, bar):
        """Train on the batches of ``it`` from batch ``b``: ``(batches done, stop, loss_sum, loss_n)``."""
        tc, n, stop = self.tc, self.batches_per_epoch, False
        for batch in it:
            group_start = (b // tc.grad_accum) * tc.grad_accum
            group_len = min(tc.grad_accum, n - group_start)
            last_in_group = b == group_start + group_len - 1
            loss = self.train_step(batch, epoch, group_len, sync=(not self.d.enabled) or last_in_group)
            loss_sum += float(loss.detach())
            loss_n += 1
            b += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
            if not last_in_group:
                continue
            if self.optimizer_step(loss):
                stop = True
                break
            if tc.checkpoint_every and self.state["step"] % tc.checkpoint_every == 0 and b < n:
                self.checkpoint(epoch, b, loss_sum, loss_n)
        return b, stop, loss_sum, loss_n

    def mean_loss(self, loss_sum: float, loss_n: int) -> float:
        """The epoch's training loss over every rank's batches."""
        tl = torch.tensor([loss_sum, float(loss_n)], dtype=torch.float64)
        if self.d.enabled:
            torch.distributed.all_reduce(tl)
        return float(tl[0] / max(tl[1], 1))

    def stop_mid_epoch(self, epoch: int, b: int, loss_sum: float, loss_n: int) -> None:
        """``max_steps`` reached inside an epoch: save where we are, and the weights while no epoch
        has validated (none is best yet, so the run's weights are the latest: a resumed run stopped
        again replaces those of its earlier stop)."""
        self.checkpoint(epoch, b, loss_sum, loss_n)
        if self.d.is_main and self.state["best_epoch"] < 0:
            _save_weights_atomic(self.model, self.run)
        self.d.barrier()

    def end_epoch(self, epoch: int, val_ds, train_loss: float, t0: float) -> dict:
        """Validate, keep the best weights, early stopping, the metrics row and logs."""
        state, d = self.state, self.d
        scores, yval = validate(self.model, val_ds, self.cfg, d)
        auc = macro_auc(scores, yval)
        vloss = validation_loss(scores, yval, self.cfg.data.task)
        improved = (np.isfinite(auc) and auc > state["best_val_auc"]) or not state["have_best"]
        if improved:
            if np.isfinite(auc):
                state["best_val_auc"] = float(auc)
            state["best_epoch"] = epoch
            state["bad_epochs"] = 0
            state["have_best"] = True
            if d.is_main:
                _save_weights_atomic(self.model, self.run)
        else:
            state["bad_epochs"] += 1
        if self.tc.early_stop and state["bad_epochs"] >= self.tc.early_stop:
            state["stopped_early"] = True
        row = {"epoch": epoch + 1, "step": state["step"], "train_loss": train_loss, "val_loss": vloss,
               "val_auc": auc, "lr": self.scheduler.get_last_lr()[0],
               "best_val_auc": state["best_val_auc"], "seconds": round(time.time() - t0, 3)}
        if d.is_main:
            append_metrics(self.run, row)
            self.writer.add_scalar("train/loss", train_loss, epoch + 1)
            self.writer.add_scalar("val/loss", vloss, epoch + 1)
            self.writer.add_scalar("val/auc", auc, epoch + 1)
            self.writer.flush()
            log.info("epoch %d: train loss %.4f, val loss %.4f, val macro AUC %.4f", epoch + 1, train_loss, vloss, auc)
        return row

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
