"""`pushgen train`, `pushgen evaluate`, `pushgen rank`: who gets which products."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import PushgenError
from ..ranking import (DEFAULT_EVENT_WEIGHTS, REPEAT_MODES, RankRules, TrainParams, check_params,
                       check_rules, evaluate_store, rank_campaign, train)
from ..ranking.evaluate import PROTOCOLS, check_evaluate_args
from ..store import open_store
from ..store import ranking as rank_store
from .app import DEFAULT_DB, DbOption, app
from .output import JsonOption, print_json

console = Console()


def _progress(quiet: bool = False) -> Progress:
    """A progress bar; with ``--json`` it goes to stderr and disappears when done."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[note]}"), TimeRemainingColumn(),
                    console=Console(stderr=True) if quiet else console, transient=quiet)


def _warn(lines: list[str], quiet: bool = False) -> None:
    out = Console(stderr=True) if quiet else console     # --json keeps stdout for the document
    for line in lines:
        out.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)


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


_Loss = Annotated[str, typer.Option(help="warp (ranking), bpr, logistic or warp-kos.")]
_Comp = Annotated[int, typer.Option("--components", help="Embedding size.")]
_Epochs = Annotated[int, typer.Option(
    help="Most training epochs; early stopping on the held-out days picks the number.")]
_Lr = Annotated[float, typer.Option("--lr", help="Learning rate.")]
_IAlpha = Annotated[float, typer.Option("--item-alpha", help="L2 penalty on item features.")]
_UAlpha = Annotated[float, typer.Option("--user-alpha", help="L2 penalty on user features.")]
_Threads = Annotated[int, typer.Option(help="Training threads.")]
_UFeat = Annotated[Optional[list[str]], typer.Option(
    "--user-feature", help="Extra user attribute used as a feature (repeatable).")]
_EW = Annotated[Optional[list[str]], typer.Option(
    "--event-weight", help="KIND=WEIGHT, e.g. purchase=5 (repeatable). Defaults: purchase=5 "
    "cart=3 click=2 view=1 rating=1 return=-5 (a return cancels its purchase).")]
_HL = Annotated[Optional[float], typer.Option("--half-life",
                                              help="Halve an event's weight every N days.")]
_RT = Annotated[float, typer.Option("--rating-threshold",
                                    help="Ratings count as positive from this value.")]
_Holdout = Annotated[float, typer.Option(
    "--holdout", help="Share of the most recent days held out to validate, pick the epochs "
    "and choose the blend (0: no validation).")]
_MW = Annotated[float, typer.Option("--meta-weight",
                                    help="Total weight of profile/catalog features per row "
                                    "(identity = 1).")]
_Seed = Annotated[int, typer.Option(help="Random seed.")]


def _pct(x: float | None) -> str:
    if x is None:
        return "-"
    return "0%" if abs(x) < 0.005 else f"{x:+.0%}"


def print_validation(validation: dict[str, Any], blend: dict[str, Any]) -> None:
    """The comparison table of ``pushgen train`` and the lines that say what is served."""
    if validation.get("skipped"):
        console.print(f"[yellow]{escape(blend.get('note', ''))}[/]", soft_wrap=True)
    else:
        k, primary = validation["k"], validation["primary"]
        other = "new" if primary == "repeat" else "repeat"
        t = Table(title=f"Held-out days from {validation['holdout_from']} ({validation['days']} "
                        f"days, {validation['users']:,} customers), top {k}",
                  caption=f"main columns: {PROTOCOLS[primary]}; last two: {PROTOCOLS[other]}",
                  padding=(0, 1))
        for col in ("model", f"p@{k}", f"recall@{k}", f"ndcg@{k}", "vs pop",
                    f"{'new' if other == 'new' else 'rep.'} p@{k}", "vs pop"):
            t.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
        for row in validation["rows"]:
            m, o = row.get(primary), row.get(other)
            base = row["name"] == "popularity"
            cells = [row["name"]]
            cells += [f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['ndcg']:.3f}",
                      "" if base else _pct(m.get("lift"))] if m else ["-"] * 4
            cells += [f"{o['precision']:.3f}", "" if base else _pct(o.get("lift"))] \
                if o else ["-", "-"]
            style = "bold" if row["name"] == "served blend" else None
            t.add_row(*cells, style=style)
        console.print(t)
        console.print(f"served blend: {escape(validation['weights'][primary])}; "
                      f"{validation['epochs']} epochs", soft_wrap=True)
        if blend.get("note"):
            console.print(f"[yellow]{escape(blend['note'])}[/]", soft_wrap=True)
    if blend.get("repeat_reason"):
        console.print(escape(blend["repeat_reason"]), soft_wrap=True)


@app.command("train")
def train_cmd(
    db: DbOption = DEFAULT_DB,
    loss: _Loss = "warp", components: _Comp = 32, epochs: _Epochs = 20,
    learning_rate: _Lr = 0.05, item_alpha: _IAlpha = 1e-6, user_alpha: _UAlpha = 1e-6,
    threads: _Threads = 2, user_feature: _UFeat = None, event_weight: _EW = None,
    half_life: _HL = None, rating_threshold: _RT = 4.0, holdout: _Holdout = 0.15,
    meta_weight: _MW = 0.25, seed: _Seed = 42, as_json: JsonOption = False,
) -> None:
    """Train the ranker on the store's events, check it on the latest days, save a new model.

    The most recent days are held out: the LightFM hybrid trains on the rest with early
    stopping, and one table compares popularity, buy-again, LightFM without features, the
    hybrid and the blend of them pushgen will serve. Then the hybrid is retrained on every day.

    Example: [bold]pushgen train --holdout 0.2 --event-weight purchase=8 --half-life 60[/]
    """
    store = open_store(db, create=False)
    params = TrainParams(loss=loss, components=components, epochs=epochs,
                         learning_rate=learning_rate, item_alpha=item_alpha,
                         user_alpha=user_alpha, threads=threads,
                         user_features=tuple(user_feature or ()),
                         event_weights=_event_weights(event_weight or []),
                         half_life_days=half_life, rating_threshold=rating_threshold,
                         holdout=holdout, meta_weight=meta_weight, cold_meta_weight=meta_weight,
                         seed=seed)
    _warn(check_params(store, params), as_json)
    with _progress(as_json) as bar:
        task = bar.add_task("training", total=params.epochs, note="")

        def on_epoch(done: int, total: int, metrics: dict[str, float]) -> None:
            note = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
            bar.update(task, completed=done, total=total, **({"note": note} if note else {}))

        record = train(store, params, progress=on_epoch,
                       on_stage=lambda what: bar.update(task, description=what, note=""))
        bar.update(task, description="trained", completed=bar.tasks[0].total)
    if as_json:      # the model row: id, path, n_users, n_items, metrics, validation, blend
        print_json({"model": record})
        return
    print_validation(record.validation or {}, record.blend or {})
    console.print(f"wrote model [bold]{record.id}[/] to {record.path} ({record.n_users} users, "
                  f"{record.n_items} items with interactions, "
                  f"{record.metrics['train_seconds']:.0f} s)", soft_wrap=True)


@app.command("evaluate")
def evaluate_cmd(
    db: DbOption = DEFAULT_DB,
    split: Annotated[str, typer.Option(
        help="time (the latest days are the test) | random | cold-users | cold-items.")
    ] = "time",
    k: Annotated[int, typer.Option("--k", help="List length for the @k metrics.")] = 10,
    fraction: Annotated[float, typer.Option(help="Share held out for testing.")] = 0.2,
    epochs: _Epochs = 20, components: _Comp = 32, meta_weight: _MW = 0.25,
    holdout: _Holdout = 0.15, user_feature: _UFeat = None, seed: _Seed = 42,
    max_users: Annotated[int, typer.Option(
        "--max-users", help="Score a random sample of this many test customers (0: all).")
    ] = 20_000,
    as_json: JsonOption = False,
) -> None:
    """Compare what pushgen serves with random, popularity, buy-again and plain LightFM.

    Each model trains on the earlier part and is scored on the held-out part, twice: with
    repeats allowed (buying an item again counts) and with new items only (each customer's
    training items are left out). Ties are broken at random with a fixed seed.

    Example: [bold]pushgen evaluate --split cold-items --k 5[/]
    """
    try:
        check_evaluate_args(split, k, fraction)
    except PushgenError as exc:
        raise PushgenError(str(exc).replace("unknown split", "--split")) from None
    if max_users < 0:
        raise PushgenError(f"--max-users must be 0 (all) or more (got {max_users})")
    store = open_store(db, create=False)
    params = TrainParams(epochs=epochs, components=components, meta_weight=meta_weight,
                         cold_meta_weight=meta_weight, user_features=tuple(user_feature or ()),
                         holdout=holdout, seed=seed)
    _warn(check_params(store, params), as_json)
    with _progress(as_json) as bar:
        task = bar.add_task("evaluating", total=None, note="")

        def on_progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total or None)

        result = evaluate_store(store, split, k, params, fraction, seed, progress=on_progress,
                                max_users=max_users or None)
        bar.update(task, description="evaluated", total=1, completed=1)
    if as_json:
        print_json({
            "split": split, "k": k, "note": result.note, "users": result.users,
            "protocols": {p: PROTOCOLS[p] for p in result.rows},
            "rows": {p: [{"model": m.name, **m.as_dict(), "seconds": m.seconds} for m in rows]
                     for p, rows in result.rows.items()},
            "served_note": result.served.blend.note if result.served is not None else "",
            "seconds": result.seconds, "fit_seconds": result.fit_seconds})
        return
    names = {"no features": "cf (no features)"}
    for protocol, rows in result.rows.items():
        t = Table(title=f"{split} split ({escape(result.note) or f'{fraction:.0%} held out'}), "
                        f"{PROTOCOLS[protocol]}, top {k}, {result.users[protocol]:,} customers",
                  caption="cover = share of the catalog recommended; div = intra-list category "
                          "diversity; secs = training + scoring", padding=(0, 1))
        for col in ("model", "p", "recall", "ndcg", "auc", "cover", "div", "secs"):
            t.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
        for m in rows:
            t.add_row(names.get(m.name, m.name), f"{m.precision:.3f}", f"{m.recall:.3f}",
                      f"{m.ndcg:.3f}", f"{m.auc:.3f}", f"{m.coverage:.2f}",
                      "-" if m.diversity is None else f"{m.diversity:.2f}", f"{m.seconds:.1f}",
                      style="bold" if m.name == "served blend" else None)
        console.print(t)
    if result.served is not None and result.served.blend.note:
        console.print(f"[yellow]{escape(result.served.blend.note)}[/]", soft_wrap=True)
    console.print(f"evaluated in {result.seconds:.0f} s (training the compared models: "
                  f"{sum(result.fit_seconds.values()):.0f} s)")


@app.command("rank")
def rank_cmd(
    campaign: Annotated[str, typer.Option("--campaign", help="Campaign name.")],
    db: DbOption = DEFAULT_DB,
    top_k: Annotated[int, typer.Option("--top-k", help="Items per user.")] = 5,
    repeat: Annotated[Optional[str], typer.Option(
        "--repeat", help="May items the customer bought come back? never | due (once the "
        "item's repurchase cycle has passed) | always. Default: what training chose from "
        "your data.")] = None,
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
    model: Annotated[Optional[int], typer.Option("--model", help="Model id (default: latest).")
                     ] = None,
    examples: Annotated[int, typer.Option(help="Example rows to print.")] = 3,
    as_json: JsonOption = False,
) -> None:
    """Rank products for every user and store them as the campaign's recommendations.

    Example: [bold]pushgen rank --campaign spring --top-k 5 --repeat due
    --exclude-category gift-cards --max-per-category 2 --min-discount 10[/]
    """
    store = open_store(db, create=False)
    rules = RankRules(repeat=repeat, include_categories=list(include_category or []),
                      exclude_categories=list(exclude_category or []), min_price=min_price,
                      max_price=max_price, min_discount=min_discount,
                      max_per_category=max_per_category, pinned=list(pin or []),
                      blocked=list(block or []))
    if repeat is not None and repeat not in REPEAT_MODES:
        raise PushgenError(f"--repeat {repeat}: use one of {', '.join(REPEAT_MODES)}")
    if examples < 0:
        raise PushgenError(f"--examples must be 0 or more (got {examples})")
    _warn(check_rules(store, rules, top_k), as_json)
    n_users = len(rank_store.user_ids_all(store))
    with _progress(as_json) as bar:
        task = bar.add_task("ranking", total=n_users, note="")
        summary = rank_campaign(store, campaign, k=top_k, rules=rules, model_id=model,
                                progress=lambda n: bar.advance(task, n))
    rows = rank_store.recommendation_rows(store, summary.campaign_id,
                                          rank_store.user_ids_all(store)[:examples])
    external = rank_store.users_external_ids(store, sorted({r["user_id"] for r in rows}))
    if as_json:
        print_json({"summary": summary, "examples": [
            {"user": external.get(r["user_id"]), "rank": r["rank"], "sku": r["sku"],
             "title": r["title"], "score": r["score"], "source": r["source"],
             "reason": r["reason"]} for r in rows]})
        return
    console.print(f"wrote {summary.rows} recommendations for {summary.users} users to "
                  f"campaign [bold]{campaign}[/] (model {summary.model_id}, bought items: "
                  f"repeat = {summary.repeat}, {summary.seconds:.1f} s)", soft_wrap=True)
    if summary.note:
        console.print(f"[yellow]{escape(summary.note)}[/]", soft_wrap=True)
    t = Table(title="users by source")
    t.add_column("source")
    t.add_column("users", justify="right")
    for source, n in summary.by_source.items():
        t.add_row(source, str(n))
    if summary.no_items:
        t.add_row("no eligible item", str(summary.no_items))
    console.print(t)
    if rows:
        ex = Table(title="examples")
        for col in ("user", "rank", "sku", "title", "score", "source", "reason"):
            ex.add_column(col)
        for r in rows:
            ex.add_row(external.get(r["user_id"], str(r["user_id"])), str(r["rank"]), r["sku"],
                       r["title"], f"{r['score']:.2f}", r["source"], r["reason"])
        console.print(ex)
