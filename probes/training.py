"""Fitting a linear probe: a seeded class-balanced split, then logistic regression two ways.

``sklearn`` is L2-regularised logistic regression (lbfgs) with balanced class weights; ``torch``
is the published recipe (``Linear(d, 1)``, BCE with logits, Adam lr 1e-3, batch 64, 5 epochs,
keep the epoch with the best validation accuracy).

With ``groups`` (e.g. the positions of one trace share a group), the split is drawn over groups,
so no trace has positions on both sides and the validation metrics are not inflated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from torch import Tensor

Method = Literal["sklearn", "torch"]


@dataclass
class Fit:
    """A fitted direction and bias, and the metrics on the training and validation parts."""

    weight: Float[Tensor, " d_model"]
    bias: float
    metrics: dict[str, float]


def balanced_split(
    labels: Int[Tensor, " n"],
    val_fraction: float = 0.2,
    seed: int = 42,
    max_per_class: int | None = None,
) -> tuple[Int[Tensor, " n_train"], Int[Tensor, " n_val"]]:
    """Indices of a train and a validation part with equal class counts (the smaller class's).

    Each class is subsampled to the size of the smaller one (and to ``max_per_class``), then
    split ``1 - val_fraction`` / ``val_fraction`` per class, so both parts stay balanced.
    """
    labels = torch.as_tensor(labels).long()
    classes = sorted(set(labels.tolist()))
    if classes != [0, 1]:
        raise ValueError(
            f"a refusal probe needs both labels 0 and 1, got {classes}: give examples of "
            "both classes (e.g. refused harmful and benign)"
        )
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    gen = torch.Generator().manual_seed(seed)
    per_class = min(int((labels == c).sum()) for c in classes)
    if max_per_class is not None:
        per_class = min(per_class, max_per_class)
    n_val = max(1, round(per_class * val_fraction))
    if per_class - n_val < 1:
        raise ValueError(
            f"only {per_class} examples in the smaller class: a probe needs at least 2 a class"
        )
    train, val = [], []
    for c in classes:
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)][:per_class]
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.cat(train), torch.cat(val)


def _group_split(
    y: Tensor, groups: Tensor, val_fraction: float, seed: int, max_per_class: int | None
) -> tuple[Tensor, Tensor]:
    """``balanced_split`` over groups (one label each), returned as example indices."""
    if len(groups) != len(y):
        raise ValueError(f"got {len(groups)} group ids for {len(y)} examples: give one each")
    ids, inverse = torch.unique(groups, return_inverse=True)
    group_y = torch.full((len(ids),), -1, dtype=torch.long)
    group_y[inverse] = y
    if not torch.equal(group_y[inverse], y):
        raise ValueError("examples of one group have different labels: a group has one label")
    train, val = balanced_split(group_y, val_fraction, seed, max_per_class)
    member = torch.arange(len(y))
    return member[torch.isin(inverse, train)], member[torch.isin(inverse, val)]


def _metrics(w: Tensor, b: float, x: Tensor, y: Tensor, prefix: str) -> dict[str, float]:
    logit = x @ w + b
    acc = float(((logit > 0).long() == y).float().mean())
    auroc = float(roc_auc_score(y.numpy(), logit.numpy())) if len(set(y.tolist())) == 2 else np.nan
    return {f"{prefix}_accuracy": acc, f"{prefix}_auroc": auroc}


def _fit_sklearn(x: Tensor, y: Tensor, seed: int, c: float) -> tuple[Tensor, float]:
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
    clf.fit(x.double().numpy(), y.numpy())
    return torch.tensor(clf.coef_[0], dtype=torch.float32), float(clf.intercept_[0])


def _fit_torch(
    x: Tensor, y: Tensor, xv: Tensor, yv: Tensor, seed: int, epochs: int, lr: float, batch: int
) -> tuple[Tensor, float]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    lin = torch.nn.Linear(x.shape[1], 1)
    opt = torch.optim.Adam(lin.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    best = (-1.0, lin.weight.detach()[0].clone(), float(lin.bias.detach()))
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            loss = loss_fn(lin(x[idx]).squeeze(-1), y[idx].float())
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = float(((lin(xv).squeeze(-1) > 0).long() == yv).float().mean())
        if acc > best[0]:  # the published recipe keeps the best validation epoch
            best = (acc, lin.weight.detach()[0].clone(), float(lin.bias.detach()))
    return best[1], best[2]


def fit_probe(
    features: Float[Tensor, "n d_model"],
    labels: Int[Tensor, " n"],
    method: Method = "sklearn",
    seed: int = 42,
    val_fraction: float = 0.2,
    max_per_class: int | None = None,
    c: float = 1.0,
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 64,
    groups: Int[Tensor, " n"] | None = None,
) -> Fit:
    """Fit a logistic-regression probe on a balanced split and measure it on both parts.

    ``groups`` gives each example a group id (e.g. the trace a position comes from): the
    balanced split is then drawn over groups, each group keeping its examples together. Classes
    are then balanced in groups, not examples (``sklearn`` reweights them; ``torch`` does not).
    """
    x = torch.as_tensor(features).float().cpu()
    y = torch.as_tensor(labels).long().cpu()
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(
            f"features must be [n, d_model] with one label each, got {tuple(x.shape)} features "
            f"and {len(y)} labels"
        )
    if groups is None:
        train, val = balanced_split(y, val_fraction, seed, max_per_class)
    else:
        groups = torch.as_tensor(groups).long().cpu()
        train, val = _group_split(y, groups, val_fraction, seed, max_per_class)
    if method == "sklearn":
        w, b = _fit_sklearn(x[train], y[train], seed, c)
    elif method == "torch":
        w, b = _fit_torch(x[train], y[train], x[val], y[val], seed, epochs, lr, batch_size)
    else:
        raise ValueError(f"unknown probe method {method!r}; choose 'sklearn' or 'torch'")
    metrics = _metrics(w, b, x[train], y[train], "train") | _metrics(w, b, x[val], y[val], "val")
    metrics |= {"n_train": float(len(train)), "n_val": float(len(val))}
    return Fit(w, b, metrics)
