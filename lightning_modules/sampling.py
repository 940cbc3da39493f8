"""A character vocabulary and sampling from a `CharRNN`: plain torch, no Lightning.

What a character language model needs once trained; the serving bundle (`deploy.bundle.pyfunc`)
imports it without loading the training stack.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lightning_modules.models import CharRNN

UNKNOWN = "\ufffd"


class Vocabulary:
    def __init__(self, chars: list[str]) -> None:
        self.chars = [UNKNOWN, *sorted(set(chars) - {UNKNOWN})]
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor([self.index.get(c, 0) for c in text], dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


@torch.no_grad()
def generate(
    net: CharRNN,
    vocab: Vocabulary,
    prompt: str,
    n: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> str:
    """Continue `prompt` by `n` characters; temperature 0 is greedy, `top_k` keeps the k likeliest."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    ids = vocab.encode(prompt or "\n").to(device).unsqueeze(0)  # (1, P)
    logits, state = net(ids)
    out = []
    for _ in range(n):
        last = logits[0, -1].float()
        last[0] = -math.inf  # never emit the unknown-character slot
        if temperature <= 0:
            nxt = int(last.argmax())
        else:
            last = last / temperature
            if top_k is not None and top_k < last.numel():
                kth = torch.topk(last, top_k).values[-1]
                last = last.masked_fill(last < kth, -math.inf)
            probs = F.softmax(last, dim=-1).cpu()
            nxt = int(torch.multinomial(probs, 1, generator=generator))
        out.append(nxt)
        logits, state = net(torch.tensor([[nxt]], device=device), state)
    net.train(was_training)
    return vocab.decode(out)
