"""Ceilings on what one job may ask for, checked from the spec alone before anything runs.

Each refusal names the field and the limit (a 422). The model's size is computed from the spec:
the largest network its search space can sample, on the dataset's input width (user data's
width is unknown until read, so one feature is assumed: the count is then a lower bound).
"""

from __future__ import annotations

from lightning_modules.datasets import dataset_of
from service.settings import Settings
from tune.space import candidate_values
from tune.spec import JobSpec

GATES = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}


def recurrent_parameters(cell: str, inputs: int, hidden: int, layers: int, directions: int) -> int:
    """Weights of a torch.nn RNN/GRU/LSTM stack: per layer and direction, gates x (in x H + H x
    H + 2 H) (PyTorch keeps two bias vectors)."""
    total = 0
    for layer in range(layers):
        width = inputs if layer == 0 else hidden * directions
        total += directions * GATES[cell] * (width * hidden + hidden * hidden + 2 * hidden)
    return total


def largest_model(spec: JobSpec) -> int:
    """Parameters of the largest network the job can train (fixed settings or search space),
    on the input width and outputs the dataset's entry declares (`lightning_modules.datasets`)."""

    def worst(field: str, key=None):  # a searched field's fixed value is never used
        values = [getattr(spec.model, field)]
        if field in spec.space:
            values = [v for v in candidate_values(spec.space[field]) if v is not None] or values
        return max(values, key=key)

    cell = worst("cell_type", key=lambda c: GATES.get(c, 4))
    hidden, layers = int(worst("hidden_size")), int(worst("num_layers"))
    dataset = dataset_of(spec.data)
    inputs, outputs = dataset.inputs(spec.data), dataset.outputs(spec.data)
    if spec.task == "language_model":  # characters embedded, read one way
        emb = int(worst("embedding_dim"))
        rnn = recurrent_parameters(cell, emb, hidden, layers, 1)
        return inputs * emb + rnn + (hidden + 1) * outputs
    directions = 2 if worst("bidirectional") else 1
    rnn = recurrent_parameters(cell, inputs, hidden, layers, directions)
    return rnn + (hidden * directions + 1) * outputs


def ceiling_problems(spec: JobSpec, s: Settings) -> list[tuple[str, str]]:
    problems = []
    params = largest_model(spec)
    if params > s.max_parameters:
        where = "search_space" if set(spec.space) & {"hidden_size", "num_layers"} else "model"
        problems.append(
            (
                f"{where}.hidden_size",
                f"the largest model has {params:,} parameters, the limit is {s.max_parameters:,}",
            )
        )
    threads = spec.trainer.threads
    if threads is not None and threads > max(1, int(spec.resources.cpus)):
        problems.append(
            ("trainer.threads", f"{threads} threads, the trial's CPUs are {spec.resources.cpus:g}")
        )
    dataset = dataset_of(spec.data)
    examples = dataset.generated(spec.data)
    if examples and examples[1] > s.max_generated_examples:
        problems.append(
            (examples[0], f"{examples[1]:,} examples, the limit is {s.max_generated_examples:,}")
        )
    length = dataset.steps(spec.data)
    if length and length[1] > s.max_sequence_length:
        problems.append(
            (length[0], f"{length[1]:,} steps per sequence, the limit is {s.max_sequence_length:,}")
        )
    return problems
