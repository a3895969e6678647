"""Schema of the pushgen database, as an ordered list of migrations.

Each migration runs once, inside a transaction together with the row that records it in
``_migrations``, so a database made by any earlier version upgrades in place on open.
Never edit a migration that has shipped: add a new one at the end.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations


class PushgenMigrations(Migrations):
    migrations_table = "_migrations"


migrations = PushgenMigrations("pushgen")


@migrations(name="0001_catalog")
def _catalog(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            external_id TEXT NOT NULL UNIQUE,
            name TEXT,
            email TEXT,
            phone TEXT,
            locale TEXT NOT NULL DEFAULT 'en-US',
            timezone TEXT,
            consent_email INTEGER NOT NULL DEFAULT 0,
            consent_sms INTEGER NOT NULL DEFAULT 0,
            consent_push INTEGER NOT NULL DEFAULT 0,
            attributes TEXT NOT NULL DEFAULT '{}',   -- JSON object: age_band, gender, region, tier, ...
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE items (
            id INTEGER PRIMARY KEY,
            sku TEXT NOT NULL UNIQUE,
            title TEXT NOT NULL,
            description TEXT,
            category TEXT,
            brand TEXT,
            price REAL,
            currency TEXT NOT NULL DEFAULT 'USD',
            sale_price REAL,
            stock INTEGER,
            url TEXT,
            image_url TEXT,
            active INTEGER NOT NULL DEFAULT 1,
            attributes TEXT NOT NULL DEFAULT '{}',   -- JSON object: tags (list), colour, ...
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            kind TEXT NOT NULL,          -- view | cart | purchase | rating | ...
            value REAL NOT NULL DEFAULT 1,
            ts TEXT NOT NULL,            -- ISO 8601, UTC
            UNIQUE (user_id, item_id, kind, ts)
        )"""
    )
    db.execute("CREATE INDEX events_user ON events(user_id)")
    db.execute("CREATE INDEX events_item ON events(item_id)")
    db.execute("CREATE INDEX events_ts ON events(ts)")


@migrations(name="0002_ranking")
def _ranking(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE models (
            id INTEGER PRIMARY KEY,
            version TEXT NOT NULL,       -- artifact format version
            path TEXT NOT NULL,          -- artifact file, relative to the database's folder
            created_at TEXT NOT NULL,
            params TEXT NOT NULL DEFAULT '{}',   -- JSON: loss, components, epochs, weights...
            metrics TEXT NOT NULL DEFAULT '{}',  -- JSON: validation metrics
            n_users INTEGER,
            n_items INTEGER
        )"""
    )
    db.execute(
        """
        CREATE TABLE campaigns (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            channel TEXT,                -- sms | push | email (set when drafting)
            config TEXT NOT NULL DEFAULT '{}',   -- JSON of the campaign TOML
            model_id INTEGER REFERENCES models(id),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE recommendations (
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            rank INTEGER NOT NULL,       -- 1 = best
            item_id INTEGER NOT NULL REFERENCES items(id),
            score REAL NOT NULL,
            reason TEXT NOT NULL,
            source TEXT NOT NULL,        -- model | cold_features | segment_popularity
            model_id INTEGER REFERENCES models(id),
            created_at TEXT NOT NULL,
            PRIMARY KEY (campaign_id, user_id, rank)
        )"""
    )


@migrations(name="0003_drafts")
def _drafts(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE drafts (
            id INTEGER PRIMARY KEY,
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            channel TEXT NOT NULL,
            variant INTEGER NOT NULL DEFAULT 1,
            locale TEXT NOT NULL,
            content TEXT NOT NULL,       -- JSON: sms {text} | push {title, body, deep_link}
                                         --       | email {subject, preheader, html, text}
            items TEXT NOT NULL,         -- JSON list: [{sku, title, score, reason, ...}]
            generator TEXT NOT NULL,     -- template | llm | llm_fallback_template
            template_name TEXT,
            model TEXT,
            prompt_hash TEXT,
            tokens_prompt INTEGER NOT NULL DEFAULT 0,
            tokens_completion INTEGER NOT NULL DEFAULT 0,
            checks TEXT NOT NULL DEFAULT '[]',   -- JSON list: [{name, ok, severity, message}]
            passed INTEGER NOT NULL DEFAULT 0,   -- 1 when no check with severity 'error' failed
            flag TEXT,                   -- why a reviewer should look (e.g. LLM fell back)
            status TEXT NOT NULL DEFAULT 'draft',  -- draft | approved | rejected | exported
            version INTEGER NOT NULL DEFAULT 1,    -- bumped on every change (optimistic locking)
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            exported_at TEXT,
            UNIQUE (campaign_id, user_id, variant)
        )"""
    )
    db.execute("CREATE INDEX drafts_status ON drafts(campaign_id, status)")
    db.execute("CREATE INDEX drafts_user ON drafts(user_id, exported_at)")
    db.execute(
        """
        CREATE TABLE review_events (
            id INTEGER PRIMARY KEY,
            draft_id INTEGER NOT NULL REFERENCES drafts(id) ON DELETE CASCADE,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,        -- approve | reject | edit | export | reopen
            at TEXT NOT NULL,
            status_before TEXT,
            status_after TEXT,
            before TEXT,                 -- JSON content before
            after TEXT,                  -- JSON content after
            reason TEXT
        )"""
    )
    db.execute("CREATE INDEX review_events_draft ON review_events(draft_id)")
    db.execute(
        """
        CREATE TABLE llm_cache (
            key TEXT PRIMARY KEY,        -- sha256 of model + messages + parameters
            model TEXT NOT NULL,
            request TEXT NOT NULL,       -- JSON
            response TEXT NOT NULL,      -- the raw assistant message content
            tokens_prompt INTEGER NOT NULL DEFAULT 0,
            tokens_completion INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL
        )"""
    )


@migrations(name="0100_rank_model_identity")
def _rank_model_identity(db: Database) -> None:
    """The database's own identity (model artifacts are named by it, so two databases in one
    folder never share a file), a content hash per model checked at load, and the validation
    table and blend weights chosen at training time."""
    import uuid

    from . import now_iso

    db.execute(
        """
        CREATE TABLE database_identity (
            id TEXT NOT NULL,            -- random hex id, created with this table
            created_at TEXT NOT NULL
        )"""
    )
    db.execute("INSERT INTO database_identity (id, created_at) VALUES (?, ?)",
               [uuid.uuid4().hex, now_iso()])
    db.execute("ALTER TABLE models ADD COLUMN sha256 TEXT")   # content hash of the artifact
    # JSON: the comparison table on the held-out slice, and the served blend (weights, repeat
    # default, note) that rank, draft and evaluate use.
    db.execute("ALTER TABLE models ADD COLUMN validation TEXT NOT NULL DEFAULT '{}'")
    db.execute("ALTER TABLE models ADD COLUMN blend TEXT NOT NULL DEFAULT '{}'")
