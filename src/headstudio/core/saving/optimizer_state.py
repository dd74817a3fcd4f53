"""Optimizer state kept resumable after an edit: each parameter's state follows it, groups stay whole.

``torch.optim.Optimizer.state_dict`` numbers parameters by their order across ``param_groups``; a
training script rebuilds the optimizer over ``model.parameters()`` (in groups) and loads that. So the
edited state lists the new parameters in the model's order, each in its old group (new ones in the
group of the old parameter whose name they share most), keeps the state of parameters the edit did not
change and none for replaced or new ones. A state that cannot be matched to the parameters is written
with empty per-parameter state and the same groups; a malformed one is kept as it was. Each is noted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from headstudio.core.saving.containers import WeightsChange

BUFFER_LEAVES = ("running_mean", "running_var", "num_batches_tracked")  # names of buffers, not parameters


def sync_optimizers(
    container: dict, change: WeightsChange, original: Mapping, weights: Mapping, notes: list[str]
) -> list[str]:
    """Edit every optimizer state in ``container`` (a value, or a list like Lightning's) in place."""
    old = _param_keys(original, change, change.before)
    new = _param_keys(weights, change, change.after)
    kept = {change.prefix + o: change.prefix + n for n, o in change.moved_from().items()}
    kept |= {change.prefix + k: change.prefix + k for k in change.untouched}
    kept |= {k: k for k in old if weights.get(k) is original[k]}  # outside the model (other modules)
    shapes = {k: tuple(original[k].shape) for k in old}
    changes: list[str] = []
    for name, value in list(container.items()):
        if _is_optimizer(value):
            container[name] = _synced(value, str(name), (old, new, kept, shapes), changes, notes)
        elif isinstance(value, list) and value and all(_is_optimizer(v) for v in value):
            context = (old, new, kept, shapes)
            container[name] = [
                _synced(v, f"{name}[{i}]", context, changes, notes) for i, v in enumerate(value)
            ]
    return changes


def _is_optimizer(value: Any) -> bool:
    return isinstance(value, Mapping) and "state" in value and "param_groups" in value


def _param_keys(state: Mapping, change: WeightsChange, model_state: Mapping) -> list[str]:
    """Parameter keys of a weights dict in order, shared tensors once (as ``named_parameters`` lists them)."""
    seen: set[tuple] = set()
    out = []
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            continue
        rel = k[len(change.prefix) :] if k.startswith(change.prefix) else None
        if rel is not None and rel in model_state:
            param = change.is_param(rel)
        else:  # outside the model (other modules, counters such as n_averaged): parameters are floats
            param = v.is_floating_point() and k.rsplit(".", 1)[-1] not in BUFFER_LEAVES
        ident = (v.data_ptr(), tuple(v.shape), v.dtype) if v.numel() else (id(v),)
        if param and ident not in seen:
            seen.add(ident)
            out.append(k)
    return out


def _malformed(osd: Mapping) -> str | None:
    """What is wrong with an optimizer state's structure, or None."""
    groups, state = osd.get("param_groups"), osd.get("state")
    if not isinstance(groups, list) or not all(isinstance(g, Mapping) for g in groups) or not groups:
        return "its param_groups is not a list of groups"
    flat = [i for g in groups for i in (g.get("params") if isinstance(g.get("params"), list) else [None])]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in flat) or len(set(flat)) != len(flat):
        return "its param_groups do not list distinct parameter numbers"
    if not isinstance(state, Mapping) or not all(k in set(flat) for k in state):
        return "its state names parameters that no group holds"
    if not all(isinstance(v, Mapping) for v in state.values()):
        return "its per-parameter state is not a dict per parameter"
    return None


def _synced(osd: Mapping, name: str, context: tuple, changes: list[str], notes: list[str]) -> Mapping:
    old, new, kept, shapes = context
    problem = _malformed(osd)
    if problem:
        notes.append(f"kept '{name}' as it was: {problem}; resuming from it will need a fresh optimizer")
        return osd
    flat = [i for g in osd["param_groups"] for i in g["params"]]
    if len(flat) != len(old):
        notes.append(
            f"kept '{name}' as it was: it holds {len(flat)} parameters, not the model's {len(old)}, "
            "so its entries cannot be matched to parameters; resuming from it may need a fresh optimizer"
        )
        return osd
    order, reason = _old_order(osd, old, shapes)
    if order is None:
        return _reset(osd, name, len(new) - len(old), reason, changes)
    return _remapped(osd, name, order, new, kept, changes)


def _old_order(osd: Mapping, old: list[str], shapes: dict) -> tuple[list[str] | None, str]:
    """The old parameter at each position of the optimizer's groups, or None and why it cannot be told.

    Named groups (``param_names``, torch >= 2.5) say it; otherwise each group lists its parameters in
    the model's order (``model.parameters()`` split by a rule, as timm's weight-decay groups are), so
    the groups interleave into the model's order: the one interleaving whose state sizes fit is taken.
    """
    groups, state = osd["param_groups"], osd["state"]
    names = [n for g in groups if isinstance(g.get("param_names"), list) for n in g["param_names"]]
    if len(names) == len(old) and set(names) == set(old):
        return names, ""
    if not state:
        return list(old), ""  # nothing to move: the groups' sizes are all that must fit
    constraints = [[_state_shape(state.get(i)) for i in g["params"]] for g in groups]
    picks = interleave(constraints, [shapes[o] for o in old])
    if picks is None:
        return None, "no order of its groups fits the sizes of its state"
    if picks == "ambiguous":
        return None, "several orders of its groups fit the sizes of its state"
    order: list[str] = [""] * len(old)
    cursor = [0] * len(groups)
    positions = [sum(len(g["params"]) for g in groups[:k]) for k in range(len(groups))]
    for p, k in enumerate(picks):
        order[positions[k] + cursor[k]] = old[p]
        cursor[k] += 1
    return order, ""


def _state_shape(entry: Mapping | None) -> tuple | None:
    """The parameter shape a state entry implies (None: no sizes in it); () never fits a parameter."""
    found = {tuple(v.shape) for v in (entry or {}).values() if isinstance(v, torch.Tensor) and v.ndim}
    return found.pop() if len(found) == 1 else (None if not found else ())


def interleave(groups: list[list[tuple | None]], targets: list[tuple]) -> list[int] | str | None:
    """Which group each target comes from, each group consumed in order and fitting its shapes.

    None when no interleaving fits, "ambiguous" when several do (then nothing can be trusted).
    """
    frontier: dict[tuple, tuple[int, Any]] = {(0,) * len(groups): (1, None)}
    history = []
    for shape in targets:
        step: dict[tuple, tuple[int, Any]] = {}
        for at, (count, _) in frontier.items():
            for k, group in enumerate(groups):
                i = at[k]
                if i < len(group) and group[i] in (None, shape):
                    nxt = (*at[:k], i + 1, *at[k + 1 :])
                    before = step.get(nxt, (0, (at, k)))
                    step[nxt] = (min(2, before[0] + count), before[1])
        if not step or len(step) > 100_000:
            return None
        history.append(step)
        frontier = step
    at = tuple(len(g) for g in groups)
    if at not in frontier:
        return None
    if frontier[at][0] > 1:
        return "ambiguous"
    picks = []
    for step in reversed(history):
        at, k = step[at][1]
        picks.append(k)
    return picks[::-1]


def _remapped(osd: Mapping, name: str, order: list, new: list, kept: dict, changes: list[str]) -> Mapping:
    groups, state = osd["param_groups"], osd["state"]
    flat = [(i, g) for g, group in enumerate(groups) for i in group["params"]]
    group_of = {o: g for o, (_, g) in zip(order, flat, strict=True)}
    index_of = {o: i for o, (i, _) in zip(order, flat, strict=True)}
    origin = {n: o for o, n in kept.items() if o in index_of}
    members: list[list[str]] = [[] for _ in groups]
    for n in new:
        members[group_of[origin[n]] if n in origin else _nearest_group(n, order, group_of)].append(n)
    out_groups, out_state, number = [], {}, 0
    for group, names in zip(groups, members, strict=True):
        numbers = []
        for n in names:
            if n in origin and index_of[origin[n]] in state:
                out_state[number] = state[index_of[origin[n]]]
            numbers.append(number)
            number += 1
        named = {"param_names": list(names)} if "param_names" in group else {}
        out_groups.append({**group, "params": numbers, **named})
    fresh = [n for n in new if n not in origin]
    if not state and [len(g) for g in members] == [len(g["params"]) for g in groups]:
        return osd  # no per-parameter state (plain SGD) and the same group sizes: it still fits
    if not fresh and len(new) == len(order) and all(n == origin.get(n) for n in new):
        return osd
    with_state = sum(1 for n in new if n in origin and index_of[origin[n]] in state)
    if state:
        changes.append(
            f"'{name}': kept the optimizer state of {with_state} unchanged parameters; "
            f"{len(fresh)} new or replaced parameter(s) ({', '.join(fresh[:2])}) start with fresh state"
        )
    else:
        changes.append(
            f"'{name}': param_groups now list the model's {len(new)} parameters (no state to keep)"
        )
    return {**osd, "state": out_state, "param_groups": out_groups}


def _nearest_group(name: str, old: list[str], group_of: dict[str, int]) -> int:
    """The group of the old parameter sharing the longest dotted prefix with ``name``, then its leaf
    (``weight``/``bias``: weight-decay groups split by it); later parameters win ties."""
    parts = name.split(".")

    def shared(other: str) -> tuple[int, bool]:
        count = 0
        for a, b in zip(parts, other.split("."), strict=False):
            if a != b:
                break
            count += 1
        return count, other.rsplit(".", 1)[-1] == parts[-1]

    best = max(reversed(old), key=shared, default=None)
    return group_of[best] if best is not None else len(set(group_of.values())) - 1


def _reset(osd: Mapping, name: str, delta: int, reason: str, changes: list[str]) -> Mapping:
    """The same groups, sized for the new parameters (the last group absorbs the difference), no state."""
    sizes = [len(g["params"]) for g in osd["param_groups"]]
    for g in range(len(sizes) - 1, -1, -1):
        take = max(-sizes[g], delta)
        sizes[g] += take
        delta -= take
        if delta >= 0:
            break
    sizes[-1] += max(delta, 0)
    out_groups, number = [], 0
    for group, size in zip(osd["param_groups"], sizes, strict=True):
        out_groups.append({**group, "params": list(range(number, number + size))})
        number += size
    changes.append(
        f"'{name}': its per-parameter state could not be matched to the parameters ({reason}); written "
        f"with empty per-parameter state and the same {len(sizes)} param group(s): training resumes with "
        "fresh optimizer moments"
    )
    return {**osd, "state": {}, "param_groups": out_groups}
