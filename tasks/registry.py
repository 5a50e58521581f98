"""The model registry's rules: challenger and champion, decided by stored holdout scores.

Each training run registers a new version with the alias ``challenger``; ``champion`` is
the version with the best stored score (``ooc.score``) on the run's metric, the earlier one
of equal scores (see :func:`register`). MLflow has no compare-and-set for aliases, so
concurrent registrations settle by re-reading (:func:`_settle`).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

CHALLENGER, CHAMPION = "challenger", "champion"


@dataclass(frozen=True)
class Decision:
    """What registering a candidate decided, for the logs and the version's tags."""

    version: str | None
    promoted: bool
    metric: str
    direction: str
    score: float | None
    champion_version: str | None
    champion_score: float | None
    reason: str

    def tags(self) -> dict:
        """The version's tags; what is not known (no champion before) is left out, not
        written as a blank."""
        tags = {
            "ooc.promotion_metric": self.metric,
            "ooc.promotion_direction": self.direction,
            "ooc.score": None if self.score is None else repr(float(self.score)),
            "ooc.champion_version_before": self.champion_version,
            "ooc.champion_score_before": (
                None if self.champion_score is None else repr(float(self.champion_score))
            ),
            "ooc.promoted": str(self.promoted).lower(),
            "ooc.decision": self.reason,
        }
        return {key: value for key, value in tags.items() if value is not None}


WITHDRAWN = "ooc.withdrawn"


def _champion(client: MlflowClient, name: str):
    """The champion version, or None when there is none yet; any other error (the server
    is unreachable, a permission) is raised: "no champion" would crown the wrong model."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None  # no registered model of this name yet
        if err.error_code == "INVALID_PARAMETER_VALUE" and "alias" in str(err).lower():
            return None  # the model exists, the alias not yet
        raise


def _set_alias(client: MlflowClient, name: str, alias: str, version) -> None:
    """Set an alias, again if the store refuses it for a concurrent write.

    Two writers setting the same alias at once can both try to insert it: the store's
    unique constraint then fails one of them (``IntegrityError`` from an MLflow server
    on sqlite). Setting an alias is idempotent, so the write is simply tried again.
    """
    for attempt in range(5):
        try:
            client.set_registered_model_alias(name, alias, version)
            return
        except MlflowException:
            if attempt == 4:
                raise
            time.sleep(0.05 * 2**attempt * (1 + random.random()))


def _score(version) -> float | None:
    try:
        score = float(version.tags.get("ooc.score") or "nan")
    except ValueError:
        return None
    return None if math.isnan(score) else score


def _same_terms(version, metric: str, direction: str) -> bool:
    """Scored on ``metric`` in ``direction``: comparable with a candidate that is."""
    tags = version.tags
    return (
        tags.get("ooc.promotion_metric") == metric
        and tags.get("ooc.promotion_direction", direction) == direction
        and _score(version) is not None
    )


def _withdrawn(version) -> bool:
    return version.tags.get(WITHDRAWN, "").lower() == "true"


def _ranked(versions, metric: str, direction: str) -> list:
    """The versions that may be champion, best first: comparable, not withdrawn; the
    better stored score first, and of equal scores the earlier version."""
    sign = -1.0 if direction == "max" else 1.0
    eligible = [v for v in versions if _same_terms(v, metric, direction) and not _withdrawn(v)]
    return sorted(eligible, key=lambda v: (sign * _score(v), int(v.version)))


def _versions(client: MlflowClient, name: str) -> list:
    return list(client.search_model_versions(f"name='{name}'"))


def _kept(champion, metric: str, direction: str) -> bool:
    """A champion without a score on these terms is left alone (not comparable), unless
    it is withdrawn."""
    return (
        champion is not None
        and not _withdrawn(champion)
        and not _same_terms(champion, metric, direction)
    )


def _judge(metric: str, direction: str, score, candidate, champion, ranked) -> tuple[bool, str]:
    """Whether ``candidate`` (a version, or None before registering) is champion by the
    rule, and why, from one reading of the champion and the ranked versions."""
    mine = str(candidate.version) if candidate is not None else None
    itself = champion is not None and str(champion.version) == mine
    if _kept(champion, metric, direction) and not itself:
        return False, f"not comparable on {metric}: champion v{champion.version} kept"
    others = [v for v in ranked if str(v.version) != mine]
    if not others:
        if score is None and champion is not None and not itself:
            return False, f"no {metric} score: champion v{champion.version} kept"
        return True, "first version"
    best = others[0]
    if score is None:
        return False, f"no {metric} score: champion v{best.version} kept"
    theirs = _score(best)
    better = score > theirs if direction == "max" else score < theirs
    if better:
        sign = ">" if direction == "max" else "<"
        return True, f"{metric} {score:.6g} {sign} {theirs:.6g} (v{best.version}): promoted"
    if score == theirs and mine is not None and int(mine) < int(best.version):
        return True, f"{metric} {score:.6g} = {theirs:.6g} (v{best.version}), earlier: promoted"
    sign = "<=" if direction == "max" else ">="
    return False, f"{metric} {score:.6g} {sign} {theirs:.6g}: champion v{best.version} kept"


def decide(name: str, metric: str, direction: str, score: float | None) -> Decision:
    """What registering a candidate with this score would decide, without writing.

    The rule is :func:`register`'s; a concurrent registration can still change the
    outcome, which :func:`register` settles.
    """
    if direction not in ("max", "min"):
        raise ValueError(f"promotion direction must be 'max' or 'min', got {direction!r}.")
    if score is not None and math.isnan(score):
        score = None
    client = MlflowClient()
    champion = _champion(client, name)
    ranked = _ranked(_versions(client, name), metric, direction)
    promoted, reason = _judge(metric, direction, score, None, champion, ranked)
    champ_version = str(champion.version) if champion is not None else None
    champ_score = _score(champion) if champion is not None else None
    return Decision(None, promoted, metric, direction, score, champ_version, champ_score, reason)


def _settle(client: MlflowClient, name: str, metric: str, direction: str, candidate):
    """Point ``champion`` at the best version by the rule until a fresh reading agrees.

    MLflow has no compare-and-set on aliases, so concurrent registrations can overwrite
    each other's choice. Each one re-reads after it writes and writes again while the
    alias is not the best version it sees; the last writer's reading then includes every
    version scored before it, and each later version's own reading includes all of
    them: once all registrations end, ``champion`` is the best version of the registry.
    Returns the final champion and the ranked versions of the reading that agreed.
    """
    for _ in range(20):
        champion = _champion(client, name)
        ranked = _ranked(_versions(client, name), metric, direction)
        if _kept(champion, metric, direction):
            return champion, ranked
        # No version has a comparable score: the first version becomes champion anyway.
        best = ranked[0] if ranked else champion or candidate
        if champion is not None and str(champion.version) == str(best.version):
            return champion, ranked
        _set_alias(client, name, CHAMPION, best.version)
    return _champion(client, name), ranked


def register(name: str, model_uri: str, decision: Decision) -> Decision:
    """Register ``model_uri`` as a new version: alias challenger, and champion by the rule.

    The rule: ``champion`` is the version with the best stored score (``ooc.score``) on
    the decision's metric and direction, the earlier one of equal scores; versions
    tagged ``ooc.withdrawn=true`` are left out, and a champion scored on another metric
    is kept. Safe when runs register at the same time (see :func:`_settle`). The returned
    decision, also the version's tags, is what this registration found.

    All or nothing: if any step fails, the new version is deleted again, and if it had
    become champion meanwhile, ``champion`` goes back to the best other version by the rule.
    """
    client = MlflowClient()
    from .tracking import quiet

    with quiet():
        version = mlflow.register_model(model_uri, name)
    number = str(version.version)
    metric, direction, score = decision.metric, decision.direction, decision.score
    try:
        before = _champion(client, name)
        # The score first: from here on, every registration ranks this version.
        scored = Decision(number, False, metric, direction, score, None, None, "").tags()
        for key in ("ooc.promotion_metric", "ooc.promotion_direction", "ooc.score"):
            if key in scored:
                client.set_model_version_tag(name, number, key, scored[key])
        _set_alias(client, name, CHALLENGER, number)
        mine = client.get_model_version(name, number)
        champion, ranked = _settle(client, name, metric, direction, mine)
        _, reason = _judge(metric, direction, score, mine, champion, ranked)
        promoted = champion is not None and str(champion.version) == number
        decision = Decision(
            number,
            promoted,
            metric,
            direction,
            score,
            str(before.version) if before is not None else None,
            _score(before) if before is not None else None,
            reason,
        )
        for key, value in decision.tags().items():
            client.set_model_version_tag(name, number, key, value)
    except Exception:
        _withdraw(client, name, number, metric, direction)
        raise
    mlflow.set_tags(
        {
            "ooc.registered_model": name,
            "ooc.registered_version": number,
            "ooc.promoted": str(decision.promoted).lower(),
            "ooc.decision": decision.reason,
        }
    )
    return decision


def _withdraw(client: MlflowClient, name: str, number: str, metric: str, direction: str) -> None:
    """Undo a registration that failed half way: never leave a model without a champion."""
    try:
        champion = _champion(client, name)
        if champion is not None and str(champion.version) == number:
            ranked = _ranked(_versions(client, name), metric, direction)
            others = [v for v in ranked if str(v.version) != number]
            if others:
                _set_alias(client, name, CHAMPION, others[0].version)
            else:
                client.delete_registered_model_alias(name, CHAMPION)
    finally:
        client.delete_model_version(name, number)


def champion_uri(name: str) -> tuple[str, str]:
    """The champion as a pinned URI (``models:/name/version``) and its version."""
    champion = _champion(MlflowClient(), name)
    if champion is None:
        raise LookupError(
            f"The registry has no '{CHAMPION}' for model {name!r} at {mlflow.get_tracking_uri()}:"
            " train a model first (`ooc train` / `ooc run`), or pass --model."
        )
    return f"models:/{name}/{champion.version}", str(champion.version)


def model_features(model_uri: str) -> list[str] | None:
    """The input column names in a logged model's signature."""
    from mlflow.models import get_model_info

    signature = get_model_info(model_uri).signature
    return signature.inputs.input_names() if signature is not None else None


def load_model(model_uri: str):
    """Load a logged sklearn model (a prediction stage loads it once, for every worker)."""
    return mlflow.sklearn.load_model(model_uri)
