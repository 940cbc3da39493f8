"""How a job spends its budget on its data: how trials are scored, how long a trial trains, and
how much of the job's time the search may take.

On tens to hundreds of sequences an epoch may be one optimizer step, and a scheduler that stops
trials after one epoch stops them after one step. So on the user's own data a trial is sized in
steps: the batch never exceeds what a model trains on, a small training set gets a smaller
default batch, and the default length of a trial is at least `MIN_STEPS` optimizer steps (the
schedulers' first rung follows). What the spec sets stays as set.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from lightning_modules.config import TrainerConfig
from lightning_modules.data.splits import ValidationPlan
from tune.space import Choice
from tune.spec import JobSpec, SchedulerConfig

# A trial's default length: the reference runs (a bi-GRU-64 on 40 sequences, batch 8,
# 100 epochs: 500 steps; on 270 sequences, 30 epochs of batch 32: 270 steps) reach their
# accuracy within a few hundred steps.
MIN_STEPS = 400
MAX_DEFAULT_EPOCHS = 200
GRACE_FRACTION = 0.1  # ASHA's first rung / median stopping's grace: a tenth of a trial
# What the job needs after the search (testing, registering, figures, Ray's teardown), measured
# on the 2-core reference machine at 5-8 s for user data; the search stops this long before the
# budget ends.
FINAL_RESERVE_S = 8.0
FINAL_RESERVE_FRACTION = 0.03
# A refit trains the winner once more on all the data: about one fold model's training time,
# which the trials' own times put at 5-10% of a 300 s search on 2 cores
REFIT_RESERVE_FRACTION = 0.12


# Patching (`model.patch`: k steps fed as one input) is searched on long sequences, where a
# recurrent cell is weakest and slowest: from a median of PATCH_FROM_STEPS steps, patches of 1 and
# every power of two that leaves at least PATCH_MIN_STEPS steps.
PATCH_FROM_STEPS = 48
PATCH_MIN_STEPS = 12


def patch_choices(median_steps: float) -> list[int]:
    """The patch sizes searched on sequences of `median_steps` steps ([1]: none)."""
    if median_steps < PATCH_FROM_STEPS:
        return [1]
    return [1, *(p for p in (2, 4, 8, 16) if median_steps / p >= PATCH_MIN_STEPS)]


@dataclass(frozen=True)
class Protocol:
    """What a job on this data does besides the spec's own settings, said when it starts."""

    plan: ValidationPlan | None  # user data's validation; None: a built-in dataset's holdout
    notes: list[str] = field(default_factory=list)


def small_data_batch(train_size: int) -> int:
    """A default batch for `train_size` training sequences: about 8 steps an epoch, a power of
    two from 8 to the usual 64."""
    return int(min(64, max(8, 2 ** round(math.log2(max(train_size, 1) / 8)))))


def read_plan(spec: JobSpec) -> ValidationPlan | None:
    """Reads the job's data as a trial would (a sample of large data): unusable data fails
    here in one line, before any trial starts. Returns how its trials will be scored."""
    if spec.data.name != "sequences":
        return None
    from lightning_modules.data.inspect import SAMPLE_ABOVE_BYTES, describe
    from lightning_modules.data.reading import preflight

    d = describe(spec.data, with_digest=False)  # dataset_input hashes the files once
    large = d.format == "parquet" and d.bytes > SAMPLE_ABOVE_BYTES
    plan = preflight(spec.data, large=large)
    if large and plan.kind == "folds" and not plan.asked:  # a sample's size, not the data's
        held = round(d.rows * spec.data.val_fraction)
        return ValidationPlan("holdout", held, why=" (large)", median_steps=plan.median_steps)
    return plan


def adapt(spec: JobSpec, plan: ValidationPlan | None) -> tuple[JobSpec, Protocol]:
    """The spec with the data-sized defaults written in (batch, epochs, grace period) where the
    spec left them out, and what was chosen, one line each."""
    if plan is None:
        return spec, Protocol(None)
    notes = [f"validation: {plan.describe()}"]
    if plan.warning:
        notes.append(f"warning: {plan.warning}")
    train = max(1, plan.train_size)
    optim, budget, scheduler = spec.optim, spec.budget, spec.scheduler
    batch = optim.batch_size
    searched_batch = "batch_size" in spec.space
    if "batch_size" not in optim.model_fields_set and not searched_batch:
        batch = min(optim.batch_size, small_data_batch(train))
        if batch != optim.batch_size:
            optim = optim.model_copy(update={"batch_size": batch})
            notes.append(f"optim.batch_size: {batch} for {train} training sequences per model")
    steps = math.ceil(train / min(batch, train))
    epochs_set = budget.max_epochs is not None or "max_epochs" in spec.trainer.model_fields_set
    if not epochs_set:
        default = TrainerConfig.model_fields["max_epochs"].default
        epochs = min(MAX_DEFAULT_EPOCHS, max(default, math.ceil(MIN_STEPS / steps)))
        budget = budget.model_copy(update={"max_epochs": epochs})
        notes.append(
            f"budget.max_epochs: {epochs} ({steps} optimizer steps an epoch; at least "
            f"{MIN_STEPS} steps per trial unless stopped early)"
        )
    if "grace_period" not in scheduler.model_fields_set and scheduler.name in ("asha", "median"):
        default = SchedulerConfig.model_fields["grace_period"].default
        grace = max(default, round((budget.max_epochs or spec.max_epochs) * GRACE_FRACTION))
        if grace != scheduler.grace_period:
            scheduler = scheduler.model_copy(update={"grace_period": grace})
            notes.append(f"scheduler.grace_period: {grace} epochs before a trial can be stopped")
    update = {"optim": optim, "budget": budget, "scheduler": scheduler}
    space = spec.space
    patches = patch_choices(plan.median_steps)
    if len(patches) > 1 and spec.default_space and "patch" not in spec.model.model_fields_set:
        update["search_space"] = {**space, "patch": Choice(choice=patches)}
        notes.append(
            f"model.patch: searched over {patches} (a median of {plan.median_steps:.0f} steps; "
            "k steps are fed as one input)"
        )
    return spec.model_copy(update=update), Protocol(plan, notes)


def search_time_budget(spec: JobSpec, elapsed_s: float) -> float | None:
    """Seconds the search may take: the job's budget less what the job has used already and
    what it needs after the search. None without a budget."""
    total = spec.budget.time_budget_s
    if total is None:
        return None
    return max(1.0, total - elapsed_s - final_reserve(total, spec.registry.final_model == "refit"))


def final_reserve(total: float, refit: bool = False) -> float:
    """Seconds kept for after the search; a refit trains one more model in them."""
    share = REFIT_RESERVE_FRACTION if refit else FINAL_RESERVE_FRACTION
    return min(max(FINAL_RESERVE_S, share * total), 0.5 * total)


def process_start() -> float:
    """When this process started (`time.time()`): a job's clock starts with `rnntune run`."""
    import psutil

    return min(time.time(), psutil.Process().create_time())
