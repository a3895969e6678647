"""Model artifacts: one ``.npz`` per model next to the database, checked when loaded.

``train(db)`` fits the served model on the store's events (``training.fit_served``) and saves
it with its ``models`` row; ``load_served(db)`` brings it back.

An artifact lives in ``pushgen-models/<database id>/model-<model id>-<hash>.npz``: the folder
is named by the database's own identity (``database_identity`` table), so two databases in one
folder never share a file, and the content hash in the name means even a copied database
never overwrites its original's files. The ``models`` row records the full sha256, which is
checked at load: a file changed or swapped since training is refused with one line.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlite_utils import Database

from ..errors import PushgenError
from ..store import db_folder
from ..store import ranking as store
from .blend import Blend
from .features import FeatureSpace
from .popularity import Popularity
from .repeat import Cycles
from .training import Progress, ServedModel, Stage, TrainParams, check_params, fit_served, \
    load_log, new_model

ARTIFACT_VERSION = "pushgen-lightfm-2"
MODELS_FOLDER = "pushgen-models"
_MODEL_ARRAYS = ("user_embeddings", "user_biases", "item_embeddings", "item_biases")
_FIX = "rerun `pushgen train`"


@dataclass
class ModelRecord:
    """A row of ``models`` plus the artifact's absolute path."""

    id: int
    path: Path
    version: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    n_users: int
    n_items: int
    created_at: str = ""
    validation: dict[str, Any] | None = None
    blend: dict[str, Any] | None = None
    sha256: str | None = None


def _record(db: Database, row: dict[str, Any]) -> ModelRecord:
    return ModelRecord(row["id"], db_folder(db) / row["path"], row["version"], row["params"],
                       row["metrics"], row["n_users"] or 0, row["n_items"] or 0,
                       row["created_at"], row.get("validation") or {}, row.get("blend") or {},
                       row.get("sha256"))


def save_model(db: Database, served: ServedModel) -> ModelRecord:
    """Write the artifact and its ``models`` row together (a failure leaves neither)."""
    model = served.model
    if any(getattr(model, a, None) is None for a in _MODEL_ARRAYS):
        raise PushgenError("the model was never fitted (epochs must be at least 1)")
    identity = store.database_id(db)
    folder = db_folder(db) / MODELS_FOLDER / store.database_tag(db)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PushgenError(f"{folder}: cannot create the models folder ({exc})") from None
    written: list[Path] = []

    def write(model_id: int) -> tuple[str, str]:
        meta = {"version": ARTIFACT_VERSION, "model_id": model_id, "database_id": identity,
                "params": served.params.to_dict(), "features": served.space.to_dict(),
                "blend": served.blend.to_dict(), "cycles": served.cycles.to_dict(),
                "segments": served.popularity.segments}
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                 cycle_item_ids=served.cycles.item_ids, cycle_days=served.cycles.days,
                 **served.popularity.arrays(), **{a: getattr(model, a) for a in _MODEL_ARRAYS})
        data = buf.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        final = folder / f"model-{model_id}-{digest[:8]}.npz"
        tmp = final.with_suffix(".tmp")
        written.append(tmp)
        tmp.write_bytes(data)
        tmp.replace(final)
        written.append(final)
        return final.relative_to(db_folder(db)).as_posix(), digest

    try:
        model_id = store.insert_model(
            db, version=ARTIFACT_VERSION, params=served.params.to_dict(), metrics=served.metrics,
            validation=served.validation, blend=served.blend.to_dict(), n_users=served.n_users,
            n_items=served.n_items, write_artifact=write)
    except BaseException as exc:
        for f in written:      # the row was rolled back: leave no orphan file behind
            f.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise PushgenError(f"{folder}: cannot write the model artifact ({exc})") from None
        raise
    return _record(db, store.get_model(db, model_id))


def train(db: Database, params: TrainParams | None = None, progress: Progress | None = None,
          on_stage: Stage | None = None):
    """Train on the store's events (validating on the latest days), save the model and its
    blend, and return the ``ModelRecord``."""
    params = params or TrainParams()
    check_params(db, params)
    served = fit_served(store.user_rows(db), store.item_rows(db), load_log(db), params,
                        progress, on_stage)
    return save_model(db, served)


def model_record(db: Database, model_id: int | None = None) -> ModelRecord:
    """The ``models`` row ``model_id``, or the newest one whose artifact file exists."""
    if model_id is None:
        rows = store.models_with_path(db)
        row = next((r for r in rows if (db_folder(db) / r["path"]).is_file()),
                   rows[0] if rows else None)
    else:
        row = store.get_model(db, model_id)
    if row is None:
        if model_id is None:
            raise PushgenError("no trained model in this database: run `pushgen train` first")
        raise PushgenError(f"no model with id {model_id}: see `pushgen train` "
                           "(or omit --model to use the latest)")
    return _record(db, row)


def load_served(db: Database, model_id: int | None = None) -> tuple[ServedModel, ModelRecord]:
    """The model ``model_id`` (latest if None), checked against its ``models`` row.

    Refuses a missing, corrupt, changed or foreign artifact with a PushgenError saying what
    to do.
    """
    rec = model_record(db, model_id)
    path = rec.path
    if rec.version != ARTIFACT_VERSION:
        raise PushgenError(f"model {rec.id} was saved by an older pushgen (format "
                           f"{rec.version!r}); {_FIX}")
    if not path.is_file():
        raise PushgenError(f"{path}: model artifact of model {rec.id} is missing; {_FIX}")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != rec.sha256:
        raise PushgenError(f"{path}: the file does not match model {rec.id} of this database "
                           f"(content hash differs: changed or copied from another database); "
                           f"{_FIX}")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {name: np.asarray(z[name]) for name in z.files}
        meta = json.loads(bytes(arrays.pop("meta")).decode())
    except Exception as exc:  # zip, key, JSON or decode errors all mean "corrupt"
        raise PushgenError(f"{path}: model artifact is corrupt or unreadable "
                           f"({type(exc).__name__}: {exc}); {_FIX}") from None
    if meta.get("database_id") != store.database_id(db) or meta.get("model_id") != rec.id:
        raise PushgenError(f"{path}: artifact belongs to model {meta.get('model_id')} of "
                           f"another database, not model {rec.id} of this one; {_FIX}")
    try:
        space = FeatureSpace.from_dict(meta["features"])
        params = TrainParams.from_dict(meta["params"])
        blend = Blend.from_dict(meta["blend"])
        popularity = Popularity.from_arrays(arrays, meta["segments"])
        cycles = Cycles.from_parts(meta["cycles"], arrays["cycle_item_ids"],
                                   arrays["cycle_days"])
        weights = {a: np.asarray(arrays[a], np.float32) for a in _MODEL_ARRAYS}
    except (KeyError, TypeError, ValueError) as exc:
        raise PushgenError(f"{path}: artifact contents are invalid ({exc}); {_FIX}") from None
    expect = {"user_embeddings": (space.n_user_features, params.components),
              "user_biases": (space.n_user_features,),
              "item_embeddings": (space.n_item_features, params.components),
              "item_biases": (space.n_item_features,)}
    for a, shape in expect.items():
        if weights[a].shape != shape:
            raise PushgenError(f"{path}: {a} has shape {weights[a].shape}, the mappings need "
                               f"{shape}; {_FIX}")
    model = new_model(params)
    for a, v in weights.items():
        setattr(model, a, v)
    # A loaded model only scores: the optimiser's state (gradients and momentum, twice the
    # embeddings: 24 MB at 100k customers) is left empty instead of allocated.
    for side in ("item", "user"):
        for part in ("gradients", "momentum"):
            setattr(model, f"{side}_embedding_{part}",
                    np.zeros((0, params.components), np.float32))
            setattr(model, f"{side}_bias_{part}", np.zeros(0, np.float32))
    served = ServedModel(model, space, params, blend, popularity, cycles,
                         rec.validation or {}, rec.metrics)
    return served, rec


__all__ = ["ARTIFACT_VERSION", "MODELS_FOLDER", "ModelRecord", "train", "save_model",
           "model_record", "load_served"]
