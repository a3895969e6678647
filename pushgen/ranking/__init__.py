"""Who gets which products: the ranking package.

| module | holds |
|---|---|
| ``events.py`` | the shop's events as numpy columns; interaction weights; the day split |
| ``features.py`` | LightFM feature matrices from profiles and catalog rows |
| ``popularity.py`` | popularity overall and per profile segment |
| ``repeat.py`` | buy-again: purchase history, repurchase cycles, "due", the reason text |
| ``metrics.py`` | p/recall/NDCG/AUC at k with random tie-breaking (training and evaluation) |
| ``blend.py`` | the served blend of LightFM, popularity and buy-again, and its weight choice |
| ``training.py`` | ``TrainParams``, LightFM fitting, validation on the latest days, the blend |
| ``model_store.py`` | ``train`` (fit and save), artifacts named by the database's identity |
| ``rules.py`` | ``RankRules`` (a campaign's ``[rank]``), their checks, item filters |
| ``rank.py`` | ``Ranker`` (batch top-k), ``rank_campaign``, ``recommendations_for`` |
| ``explain.py`` | the reason a reviewer reads for each recommended item |
| ``evaluate.py`` | splits, baselines, both protocols, the comparison |
| ``topk.py`` | row-wise exact top-k of a dense score block |

Imports flow one way: events, features, topk, popularity, repeat -> metrics -> blend ->
training -> model_store; rules, explain -> rank -> evaluate.
"""

from .evaluate import Comparison, evaluate_store
from .events import DEFAULT_EVENT_WEIGHTS, EventLog
from .model_store import ARTIFACT_VERSION, ModelRecord, load_served, model_record, save_model, \
    train
from .rank import Catalog, RankResult, RankSummary, Ranker, load_ranker, rank_campaign, \
    recommend, recommendations_for
from .repeat import REPEAT_MODES
from .rules import RankRules, check_rules
from .training import ServedModel, TrainParams, check_params, fit_served

__all__ = ["TrainParams", "ServedModel", "ModelRecord", "RankRules", "RankResult",
           "RankSummary", "Ranker", "Catalog", "EventLog", "Comparison", "train", "fit_served",
           "check_params", "check_rules", "load_ranker", "load_served", "model_record",
           "save_model", "rank_campaign", "recommend", "recommendations_for", "evaluate_store",
           "DEFAULT_EVENT_WEIGHTS", "REPEAT_MODES", "ARTIFACT_VERSION"]
