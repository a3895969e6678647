"""The local review web page (``pushgen review serve``): Flask, server-rendered, no build step.

It listens on loopback only, unless ``--allow-remote`` (then every page needs the token,
reads too). Every write needs the token printed at start-up, sent in the POST body or the
``X-Pushgen-Token`` header, and a browser write must come from this page itself (its
``Origin``/``Referer``). Opening ``/?token=...`` moves the token into an HttpOnly,
SameSite=Strict cookie by a redirect, so it leaves the address bar and the access log
(which also redacts it); the page then embeds it in its forms. The cookie alone never
authorises a write, so another site cannot make the browser post on the reviewer's behalf.
Email previews show no remote image (a tracking pixel would fire) until the reviewer asks.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import secrets
import sqlite3
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import (Flask, abort, flash, g, get_flashed_messages, jsonify, redirect,
                   render_template, request, url_for)
from werkzeug.wrappers import Response

from .. import review as rv
from ..channels import sms_info
from ..errors import PushgenError
from ..messages import CHANNEL_FIELDS
from ..store import assignments as assignment_store
from ..store import open_store
from ..store import reviews as store
from ..store.outcomes import consent_note
from ..store.reviews import MAX_ID

COOKIE = "pushgen_token"
FILTERS = ("campaign", "channel", "status", "failed_check", "locale")
PUSH_TITLE_CUT = 40   # most lock screens cut a notification title near 40-50 characters
PAGE_SIZE = 100
MAX_PAGE = 10**9      # a larger page number would overflow SQLite's OFFSET
MIN_TOKEN_CHARS = 16
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cut_title(title: str, limit: int = PUSH_TITLE_CUT) -> str:
    """The title as a lock screen shows it: cut at ``limit`` characters with an ellipsis."""
    return title if len(title) <= limit else title[: limit - 1].rstrip() + "…"


def create_app(db_path: str | os.PathLike[str], token: str, *,
               trusted_hosts: list[str] | None = None, remote: bool = False) -> Flask:
    """The review app for the database at ``db_path``; writes need ``token``.

    ``trusted_hosts`` limits the Host header (``serve`` passes the loopback names when bound
    to loopback, which stops DNS-rebinding pages from reading the queue). ``remote``: the
    page is reachable from other machines, so reads need the token too."""
    if not token:
        raise PushgenError("the review page needs a non-empty write token")
    app = Flask(__name__)
    app.config.update(SECRET_KEY=secrets.token_bytes(32), TRUSTED_HOSTS=trusted_hosts,
                      PUSHGEN_DB=str(db_path), PUSHGEN_TOKEN=token, PUSHGEN_REMOTE=remote,
                      SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_HTTPONLY=True,
                      TEMPLATES_AUTO_RELOAD=False)
    app.jinja_env.globals.update(cut_title=cut_title, sms_info=sms_info,
                                 CHANNEL_FIELDS=CHANNEL_FIELDS, PUSH_TITLE_CUT=PUSH_TITLE_CUT)

    def valid(candidate: str | None) -> bool:
        return bool(candidate) and hmac.compare_digest(candidate.encode(), token.encode())

    def db():
        if "db" not in g:
            g.db = open_store(app.config["PUSHGEN_DB"], create=False)
        return g.db

    @app.teardown_appcontext
    def _close(exc: BaseException | None) -> None:
        conn = g.pop("db", None)
        if conn is not None:
            conn.close()

    @app.before_request
    def _auth() -> Response | None:
        given = request.args.get("token")
        if given is not None and request.method == "GET":
            # Move the token from the address bar into a cookie, then drop it from the URL.
            args = {k: v for k, v in request.args.items() if k != "token"}
            target = request.path + ("?" + urlencode(args) if args else "")
            resp = redirect(target)
            if valid(given):
                resp.set_cookie(COOKIE, given, httponly=True, samesite="Strict",
                                secure=request.is_secure)
            else:
                flash("That link's token is wrong: the page is read-only. Use the URL printed "
                      "by `pushgen review serve`.", "error")
            return resp
        g.can_write = valid(request.cookies.get(COOKIE))
        if remote and not g.can_write and request.endpoint != "static" and \
                request.method != "POST":
            abort(403, description="this review page is shared beyond this machine "
                                   "(--allow-remote): open the link with the token printed by "
                                   "`pushgen review serve`")
        if request.method == "POST":
            sent = request.form.get("token") or request.headers.get("X-Pushgen-Token")
            if not valid(sent):
                abort(403, description="write token missing or wrong: open the URL printed "
                                       "by `pushgen review serve`")
            foreign = _foreign_origin()
            if foreign:
                abort(403, description=f"write refused: it came from {foreign}, not from "
                                       "this review page")
            actor = request.headers.get("X-Pushgen-Actor")
            if actor is not None:
                try:
                    g.actor = rv.actor_name(actor)
                except PushgenError as exc:
                    abort(400, description=str(exc))
        return None

    @app.after_request
    def _headers(resp: Response) -> Response:
        # Email HTML is shown in <iframe sandbox srcdoc>, which inherits this policy: no
        # scripts anywhere but our own file, inline styles allowed for the email markup, and
        # no remote images (a tracking pixel would tell the sender the email was opened)
        # unless the reviewer asked for them on this page (?images=1).
        images = "'self' data:" + (" https: http:" if request.args.get("images") == "1"
                                   else "")
        resp.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            f"img-src {images}; connect-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; font-src 'self'")
        resp.headers["X-Frame-Options"] = "DENY"
        # same-origin: our own forms carry an Origin the write check can read; other sites
        # never learn this page's address.
        resp.headers["Referrer-Policy"] = "same-origin"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        if request.endpoint != "static":
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(403)
    def _forbidden(err: Any) -> tuple[str, int]:
        return render_template("error.html", code=403, message=err.description), 403

    @app.errorhandler(400)
    def _bad_request(err: Any) -> Response:
        # Plain text: a 400 may come from an untrusted Host header, where no URL can be built.
        return Response(f"400 Bad Request: {err.description}\n", status=400,
                        mimetype="text/plain")

    @app.errorhandler(404)
    def _not_found(err: Any) -> tuple[str, int]:
        return render_template("error.html", code=404, message="no such page or draft"), 404

    def filters_from(source: Any) -> dict[str, str]:
        out = {k: (source.get(k) or "").strip() for k in FILTERS}
        if "status" not in source:
            out["status"] = "draft"  # the queue: what still needs a decision
        return out

    def query_args(filters: dict[str, str]) -> dict[str, str]:
        # status="" means "any status" and must survive the round trip, unlike other blanks.
        return {k: v for k, v in filters.items() if v or k == "status"}

    def none_blank(filters: dict[str, str]) -> dict[str, str | None]:
        return {k: (v or None) for k, v in filters.items()}

    @app.get("/")
    def index() -> str:
        f = filters_from(request.args)
        try:
            page = min(max(int(request.args.get("page", "0") or 0), 0), MAX_PAGE)
        except ValueError:
            page = 0  # a mangled link shows the first page rather than an error
        conn = db()
        drafts: list[rv.DraftView] = []
        total = 0
        counts = rv.QueueCounts({s: 0 for s in rv.STATUSES}, {})
        try:
            counts = rv.queue_counts(conn, f["campaign"] or None)
            drafts = rv.list_drafts(conn, **none_blank(f), limit=PAGE_SIZE,
                                    offset=page * PAGE_SIZE)
            total = rv.count_drafts(conn, **none_blank(f))
        except PushgenError as exc:
            flash(str(exc), "error")
        selected = None
        want = request.args.get("id", type=int)
        if want is not None and not 1 <= want <= MAX_ID:
            flash(f"no draft with id {want}", "error")
        elif want is not None:
            try:
                selected = rv.get_draft(conn, want)
            except PushgenError as exc:
                flash(str(exc), "error")
        elif drafts:
            selected = rv.get_draft(conn, drafts[0].id)
        ids = [d.id for d in drafts]
        prev_id = next_id = None
        if selected is not None and selected.id in ids:
            i = ids.index(selected.id)
            prev_id = ids[i - 1] if i > 0 else None
            next_id = ids[i + 1] if i + 1 < len(ids) else None
        passing = 0
        split: dict[int, int] = {}
        if f["campaign"] and f["campaign"] in store.campaign_names(conn):
            cid = rv.campaign_id(conn, f["campaign"])
            passing = len(store.approvable_drafts(conn, cid))
            split = assignment_store.split(conn, cid)
        consent_why = None
        if selected is not None and not selected.consent:
            consent_why = consent_note(conn, selected.user_id, selected.channel)
        options = {
            "campaign": store.campaign_names(conn),
            "channel": store.distinct_values(conn, "channel"),
            "status": list(rv.STATUSES),
            "locale": store.distinct_values(conn, "locale"),
            "failed_check": sorted(store.failed_check_counts(conn)),
        }
        return render_template(
            "index.html", f=f, args=query_args(f), drafts=drafts, total=total, page=page,
            page_size=PAGE_SIZE, counts=counts, d=selected, prev_id=prev_id, next_id=next_id,
            options=options, passing=passing, can_write=g.can_write, split=split,
            consent_why=consent_why,
            images=request.args.get("images") == "1",
            token=token if g.can_write else "", db_name=Path(app.config["PUSHGEN_DB"]).name,
            messages=get_flashed_messages(with_categories=True))

    def back(filters: dict[str, str], draft_id: int | None) -> Response:
        args = query_args(filters)
        if draft_id is not None:
            args["id"] = str(draft_id)
        return redirect(url_for("index", **args))

    def after_decision(conn, filters: dict[str, str], draft_id: int) -> int | None:
        """The draft to show next: the following one in the filtered queue."""
        try:
            ids = rv.queue_ids(conn, **{**none_blank(filters),
                                        "status": filters["status"] or None})
        except PushgenError:
            return None
        later = [i for i in ids if i > draft_id]
        if later:
            return later[0]
        earlier = [i for i in ids if i < draft_id]
        return earlier[-1] if earlier else (draft_id if draft_id in ids else None)

    def version() -> int | None:
        raw = (request.form.get("version") or "").strip()
        if not raw:
            return None
        try:
            return int(raw)
        except ValueError:
            abort(Response(f"version must be a whole number, not {raw!r}; reload the page "
                           "and try again", status=400, mimetype="text/plain"))

    @app.post(f"/drafts/<int(max={MAX_ID}):draft_id>/<action>")
    def act(draft_id: int, action: str) -> Response:
        f = filters_from(request.form)
        conn = db()
        show: int | None = draft_id
        try:
            if action == "approve":
                rv.approve(conn, draft_id, actor=_actor(), expected_version=version())
                flash(f"Approved draft {draft_id}.", "success")
                show = after_decision(conn, f, draft_id)
            elif action == "reject":
                reason = request.form.get("reason", "")
                rv.reject(conn, draft_id, actor=_actor(), reason=reason,
                          expected_version=version())
                flash(f"Rejected draft {draft_id}: {reason.strip()}", "success")
                show = after_decision(conn, f, draft_id)
            elif action == "reopen":
                rv.reopen(conn, draft_id, actor=_actor(), expected_version=version(),
                          reason=request.form.get("reason") or None)
                flash(f"Draft {draft_id} is back in review.", "success")
            elif action == "edit":
                d = rv.get_draft(conn, draft_id)
                changes = {k: request.form[k].replace("\r\n", "\n")
                           for k in CHANNEL_FIELDS[d.channel] if k in request.form}
                result = rv.edit(conn, draft_id, changes, actor=_actor(),
                                 expected_version=version(),
                                 reason=request.form.get("reason") or None)
                _flash_edit(result)
            else:
                abort(404)
        except PushgenError as exc:
            flash(str(exc), "error")
        except sqlite3.OperationalError as exc:  # e.g. an export holds the write lock
            flash(f"The database is busy ({exc}); nothing was changed, try again.", "error")
        return back(f, show)

    @app.post("/approve-all")
    def approve_all() -> Response:
        f = filters_from(request.form)
        campaign = request.form.get("campaign", "")
        try:
            n = rv.approve_all_passing(db(), campaign, actor=_actor())
            flash(f"Approved {n} draft(s) of {campaign} that pass every check.", "success")
        except PushgenError as exc:
            flash(str(exc), "error")
        return back(f, None)

    @app.get("/results")
    def results() -> str:
        """The Results tab: a campaign's funnel, variants, uplift and send times (read-only;
        with --allow-remote it needs the token cookie like every page)."""
        from ..results.page import context
        from ..results.report import campaign_results

        conn = db()
        names = store.campaign_names(conn)
        wanted = (request.args.get("campaign") or "").strip()
        campaign = wanted or (names[0] if names else "")
        extra: dict[str, Any] = {}
        if campaign:
            try:
                extra = context(campaign_results(conn, campaign))
            except PushgenError as exc:
                flash(str(exc), "error")
        return render_template("results.html", names=names, campaign=campaign,
                               can_write=g.can_write,
                               messages=get_flashed_messages(with_categories=True), **extra)

    @app.get("/api/sms-info")
    def api_sms_info() -> Response:
        """Live counter for the edit form, computed by the one SMS rule implementation."""
        return jsonify(sms_info(request.args.get("text", "")).to_dict())

    return app


def _actor() -> str:
    """The reviewer named by the X-Pushgen-Actor header (checked in ``_auth``), else the
    user running the server."""
    return g.get("actor") or rv.default_actor()


def _foreign_origin() -> str | None:
    """The other site a browser write came from, or None when it came from this page (or
    from a client that sends neither Origin nor Referer, such as curl with the token).
    Hosts are compared, not schemes: behind the HTTPS proxy ``--allow-remote`` asks for,
    the page is https:// while this server sees http://."""
    own = request.host.lower()
    origin = request.headers.get("Origin")
    if origin is not None:
        return None if urlsplit(origin).netloc.lower() == own else (origin or
                                                                     "an unknown origin")
    referer = request.headers.get("Referer")
    if referer:
        parts = urlsplit(referer)
        if parts.netloc.lower() != own:
            return f"{parts.scheme}://{parts.netloc}"
    return None


class _QuietTokenHandler:
    """Mixed into werkzeug's request handler: the access log never shows a token."""

    _TOKEN_RE = re.compile(r"([?&]token=)[^&\s\"']*")

    def log(self, type: str, message: str, *args: Any) -> None:
        args = tuple(self._TOKEN_RE.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                     for a in args)
        super().log(type, self._TOKEN_RE.sub(r"\1[redacted]", message), *args)  # type: ignore[misc]


def _flash_edit(result: rv.EditResult) -> None:
    d = result.draft
    if not result.changed:
        flash(f"Draft {d.id}: nothing changed.", "info")
        return
    failing = d.blocking_checks
    if failing:
        flash(f"Saved draft {d.id} ({', '.join(result.changed)}), but it fails "
              + "; ".join(f"{c.name}: {c.message}" for c in failing)
              + ". It cannot be approved until every check passes.", "error")
    else:
        flash(f"Saved draft {d.id} ({', '.join(result.changed)}); every check passes; "
              f"status {d.status}.", "success")


def check_bind(host: str, port: int, *, allow_remote: bool = False) -> bool:
    """Refuse a port outside 1-65535 and a non-loopback host without ``allow_remote``;
    return whether the host is loopback."""
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise PushgenError(f"--port {port} is not a port: use 1-65535 (default 8765)")
    loopback = _is_loopback(host)
    if not loopback and not allow_remote:
        raise PushgenError(
            f"--host {host} would show every draft (names, emails, phone numbers) to other "
            "machines; the review page listens on 127.0.0.1 only. If you must share it, add "
            "--allow-remote (then every page needs the token link, and it travels "
            "unencrypted: put it behind an HTTPS proxy)")
    return loopback


def serve(db_path: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8765,
          token: str | None = None, *, allow_remote: bool = False) -> None:
    """Run the review page with werkzeug's threaded server until Ctrl-C."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    loopback = check_bind(host, port, allow_remote=allow_remote)
    if token is not None and len(token.strip()) < MIN_TOKEN_CHARS:
        raise PushgenError(f"the write token must have at least {MIN_TOKEN_CHARS} characters "
                           "(leave PUSHGEN_TOKEN unset for a random one)")
    token = token.strip() if token else secrets.token_urlsafe(24)
    trusted = LOOPBACK_NAMES if loopback else None
    app = create_app(db_path, token, trusted_hosts=trusted, remote=not loopback)
    handler = type("RequestHandler", (_QuietTokenHandler, WSGIRequestHandler), {})
    try:
        server = make_server(host, port, app, threaded=True, request_handler=handler)
    except (OSError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise PushgenError(f"cannot listen on {host}:{port}: {reason} (choose another "
                           "--port)") from None
    real_port = server.socket.getsockname()[1]
    shown = host if host not in ("0.0.0.0", "::") else "127.0.0.1"
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    if not loopback:
        print(f"!! WARNING: serving on a non-loopback address ({host}, --allow-remote): every "
              "page needs the token link, and the token travels unencrypted over plain HTTP.",
              file=sys.stderr, flush=True)
    print(f"Reviewing {db_path}", flush=True)
    print(f"Open: http://{shown}:{real_port}/?token={token}", flush=True)
    print("Writes (approve, reject, edit) need that token. Ctrl-C to stop.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


__all__ = ["create_app", "serve", "check_bind", "cut_title"]
