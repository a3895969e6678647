"""`pushgen train`, `pushgen evaluate`, `pushgen rank`: who gets which products."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import PushgenError
from ..evaluate import check_evaluate_args, evaluate_store
from ..ranker import (DEFAULT_EVENT_WEIGHTS, RankRules, TrainParams, check_params, check_rules,
                      rank_campaign, train)
from ..store import open_store
from ..store import ranking as rank_store
from .app import DEFAULT_DB, DbOption, app

console = Console()


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[note]}"), TimeRemainingColumn(), console=console,
                    transient=False)


def _warn(lines: list[str]) -> None:
    for line in lines:
        console.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)


def _event_weights(pairs: list[str]) -> dict[str, float]:
    weights = dict(DEFAULT_EVENT_WEIGHTS)
    for pair in pairs:
        kind, sep, value = pair.partition("=")
        try:
            if not sep or not kind.strip():
                raise ValueError
            weights[kind.strip()] = float(value)
        except ValueError:
            raise PushgenError(f"--event-weight {pair!r}: expected KIND=NUMBER, e.g. "
                               "purchase=5") from None
    return weights


def _params(loss, components, epochs, learning_rate, item_alpha, user_alpha, threads,
            user_feature, event_weight, half_life, rating_threshold, early_stopping,
            validation, meta_weight, seed) -> TrainParams:
    return TrainParams(loss=loss, components=components, epochs=epochs,
                       learning_rate=learning_rate, item_alpha=item_alpha,
                       user_alpha=user_alpha, threads=threads,
                       user_features=tuple(user_feature or ()),
                       event_weights=_event_weights(event_weight or []),
                       half_life_days=half_life, rating_threshold=rating_threshold,
                       early_stopping=early_stopping,
                       validation=validation if validation is not None else
                       (0.1 if early_stopping else 0.0),
                       meta_weight=meta_weight, cold_meta_weight=meta_weight, seed=seed)


_Loss = Annotated[str, typer.Option(help="warp (ranking), bpr, logistic or warp-kos.")]
_Comp = Annotated[int, typer.Option("--components", help="Embedding size.")]
_Epochs = Annotated[int, typer.Option(help="Training epochs.")]
_Lr = Annotated[float, typer.Option("--lr", help="Learning rate.")]
_IAlpha = Annotated[float, typer.Option("--item-alpha", help="L2 penalty on item features.")]
_UAlpha = Annotated[float, typer.Option("--user-alpha", help="L2 penalty on user features.")]
_Threads = Annotated[int, typer.Option(help="Training threads.")]
_UFeat = Annotated[Optional[list[str]], typer.Option(
    "--user-feature", help="Extra user attribute used as a feature (repeatable).")]
_EW = Annotated[Optional[list[str]], typer.Option(
    "--event-weight", help="KIND=WEIGHT, e.g. purchase=5 (repeatable). "
    "Defaults: purchase=5 cart=3 view=1 rating=1.")]
_HL = Annotated[Optional[float], typer.Option("--half-life",
                                              help="Halve an event's weight every N days.")]
_RT = Annotated[float, typer.Option("--rating-threshold",
                                    help="Ratings count as positive from this value.")]
_ES = Annotated[bool, typer.Option("--early-stopping/--no-early-stopping",
                                   help="Stop when validation precision stops improving.")]
_Val = Annotated[Optional[float], typer.Option(
    "--validation", help="Fraction of interactions held out for validation (0.1 with "
    "--early-stopping).")]
_MW = Annotated[float, typer.Option("--meta-weight",
                                    help="Total weight of profile/catalog features per row "
                                    "(identity = 1).")]
_Seed = Annotated[int, typer.Option(help="Random seed.")]


@app.command("train")
def train_cmd(
    db: DbOption = DEFAULT_DB,
    loss: _Loss = "warp", components: _Comp = 32, epochs: _Epochs = 20,
    learning_rate: _Lr = 0.05, item_alpha: _IAlpha = 1e-6, user_alpha: _UAlpha = 1e-6,
    threads: _Threads = 2, user_feature: _UFeat = None, event_weight: _EW = None,
    half_life: _HL = None, rating_threshold: _RT = 4.0, early_stopping: _ES = False,
    validation: _Val = None, meta_weight: _MW = 0.25, seed: _Seed = 42,
) -> None:
    """Train the LightFM hybrid ranker on the store's events and save a new model.

    Example: [bold]pushgen train --epochs 30 --event-weight purchase=8 --half-life 60[/]
    """
    store = open_store(db, create=False)
    params = _params(loss, components, epochs, learning_rate, item_alpha, user_alpha, threads,
                     user_feature, event_weight, half_life, rating_threshold, early_stopping,
                     validation, meta_weight, seed)
    _warn(check_params(store, params))
    with _progress() as bar:
        task = bar.add_task("training", total=params.epochs, note="")

        def on_epoch(epoch: int, total: int, metrics: dict[str, float]) -> None:
            note = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
            bar.update(task, completed=epoch, note=note)

        record = train(store, params, progress=on_epoch)
    console.print(f"wrote model [bold]{record.id}[/] to {record.path} "
                  f"({record.n_users} users, {record.n_items} items with interactions)",
                  soft_wrap=True)
    t = Table(title="metrics", show_header=False)
    for key, value in record.metrics.items():
        t.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(t)


@app.command("evaluate")
def evaluate_cmd(
    db: DbOption = DEFAULT_DB,
    split: Annotated[str, typer.Option(help="random | time | cold-users | cold-items.")] = "random",
    k: Annotated[int, typer.Option("--k", help="List length for the @k metrics.")] = 10,
    fraction: Annotated[float, typer.Option(help="Share held out for testing.")] = 0.2,
    epochs: _Epochs = 20, components: _Comp = 32, meta_weight: _MW = 0.25,
    user_feature: _UFeat = None, seed: _Seed = 42,
) -> None:
    """Compare the hybrid ranker with random, popularity and LightFM without features.

    Example: [bold]pushgen evaluate --split cold-users --k 5[/]
    """
    try:
        check_evaluate_args(split, k, fraction)
    except PushgenError as exc:
        raise PushgenError(str(exc).replace("unknown split", "--split")) from None
    store = open_store(db, create=False)
    params = TrainParams(epochs=epochs, components=components, meta_weight=meta_weight,
                         cold_meta_weight=meta_weight, user_features=tuple(user_feature or ()),
                         seed=seed)
    _warn(check_params(store, params))
    with console.status("evaluating") as status:
        rows = evaluate_store(store, split, k, params, fraction, seed,
                              on_scorer=lambda name: status.update(f"training {name}"))
    users = rows[0].users if rows else 0
    t = Table(title=f"{split} split, {fraction:.0%} held out, top {k}, {users} test users",
              caption="cover = share of the catalog recommended; div = intra-list "
                      "category diversity", padding=(0, 1))
    for col in ("model", "p", "recall", "ndcg", "auc", "cover", "div", "secs"):
        t.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    names = {"lightfm (no features)": "cf (no features)"}
    for m in rows:
        t.add_row(names.get(m.name, m.name), f"{m.precision:.3f}", f"{m.recall:.3f}",
                  f"{m.ndcg:.3f}", f"{m.auc:.3f}", f"{m.coverage:.2f}",
                  "-" if m.diversity is None else f"{m.diversity:.2f}", f"{m.seconds:.1f}")
    console.print(t)


@app.command("rank")
def rank_cmd(
    campaign: Annotated[str, typer.Option("--campaign", help="Campaign name.")],
    db: DbOption = DEFAULT_DB,
    top_k: Annotated[int, typer.Option("--top-k", help="Items per user.")] = 5,
    include_category: Annotated[Optional[list[str]], typer.Option(
        "--include-category", help="Only these categories (repeatable).")] = None,
    exclude_category: Annotated[Optional[list[str]], typer.Option(
        "--exclude-category", help="Never these categories (repeatable).")] = None,
    min_price: Annotated[Optional[float], typer.Option(help="Lowest current price.")] = None,
    max_price: Annotated[Optional[float], typer.Option(help="Highest current price.")] = None,
    min_discount: Annotated[Optional[float], typer.Option(
        help="Only items at least this many percent off.")] = None,
    max_per_category: Annotated[Optional[int], typer.Option(
        help="At most N items of one category per list.")] = None,
    pin: Annotated[Optional[list[str]], typer.Option(
        "--pin", help="SKU placed first for everyone (repeatable).")] = None,
    block: Annotated[Optional[list[str]], typer.Option(
        "--block", help="SKU never recommended (repeatable).")] = None,
    keep_purchased: Annotated[bool, typer.Option(
        "--keep-purchased", help="Allow items the user already bought.")] = False,
    model: Annotated[Optional[int], typer.Option("--model", help="Model id (default: latest).")
                     ] = None,
    examples: Annotated[int, typer.Option(help="Example rows to print.")] = 3,
) -> None:
    """Rank products for every user and store them as the campaign's recommendations.

    Example: [bold]pushgen rank --campaign spring --top-k 5 --exclude-category gift-cards
    --max-per-category 2 --min-discount 10[/]
    """
    store = open_store(db, create=False)
    rules = RankRules(drop_purchased=not keep_purchased,
                      include_categories=list(include_category or []),
                      exclude_categories=list(exclude_category or []), min_price=min_price,
                      max_price=max_price, min_discount=min_discount,
                      max_per_category=max_per_category, pinned=list(pin or []),
                      blocked=list(block or []))
    if examples < 0:
        raise PushgenError(f"--examples must be 0 or more (got {examples})")
    _warn(check_rules(store, rules, top_k))
    n_users = len(rank_store.user_ids_all(store))
    with _progress() as bar:
        task = bar.add_task("ranking", total=n_users, note="")
        summary = rank_campaign(store, campaign, k=top_k, rules=rules, model_id=model,
                                progress=lambda n: bar.advance(task, n))
    console.print(f"wrote {summary.rows} recommendations for {summary.users} users to "
                  f"campaign [bold]{campaign}[/] (model {summary.model_id}, "
                  f"{summary.seconds:.1f} s)", soft_wrap=True)
    t = Table(title="users by source")
    t.add_column("source")
    t.add_column("users", justify="right")
    for source, n in summary.by_source.items():
        t.add_row(source, str(n))
    if summary.no_items:
        t.add_row("no eligible item", str(summary.no_items))
    console.print(t)
    rows = rank_store.recommendation_rows(store, summary.campaign_id,
                                          rank_store.user_ids_all(store)[:examples])
    external = rank_store.users_external_ids(store, sorted({r["user_id"] for r in rows}))
    if rows:
        ex = Table(title="examples")
        for col in ("user", "rank", "sku", "title", "score", "source", "reason"):
            ex.add_column(col)
        for r in rows:
            ex.add_row(external.get(r["user_id"], str(r["user_id"])), str(r["rank"]), r["sku"], r["title"],
                       f"{r['score']:.2f}", r["source"], r["reason"])
        console.print(ex)
