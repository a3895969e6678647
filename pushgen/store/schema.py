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


@migrations(name="0004_push_token_and_consent_log")
def _push_token_and_consent_log(db: Database) -> None:
    # A device token for push exports (APNs / FCM), imported with the users file.
    db.execute("ALTER TABLE users ADD COLUMN push_token TEXT")
    # Every consent change that did not come from a users file: an opt-out list from the
    # sending platform, an outcome (unsubscribed, complained, hard bounce). The users row
    # holds the current consent; this table says why it changed, for reviewers and audits.
    db.execute(
        """
        CREATE TABLE consent_events (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            channel TEXT NOT NULL,       -- sms | push | email
            consent INTEGER NOT NULL,    -- the new value: 0 (opted out) or 1
            source TEXT NOT NULL,        -- e.g. 'unsubscribe list esp-2026-12.csv:14'
            reason TEXT,                 -- unsubscribed | complained | bounced | ...
            at TEXT NOT NULL             -- when it happened (ISO 8601, UTC)
        )"""
    )
    db.execute("CREATE INDEX consent_events_user ON consent_events(user_id)")


@migrations(name="0005_meta")
def _meta(db: Database) -> None:
    # Small facts about the database itself (e.g. the day the demo shop's history ends).
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


@migrations(name="0006_erasures")
def _erasures(db: Database) -> None:
    # A customer erased on request (GDPR art. 17) keeps a users row with every personal field
    # emptied, so counts of past campaigns stay right; erased_at marks it.
    db.execute("ALTER TABLE users ADD COLUMN erased_at TEXT")
    # One row per erasure, holding no personal data: when, why (as the operator typed it),
    # how many rows of each table changed, and a keyed hash (HMAC with the shop secret) of the
    # external id, so an import can refuse to bring the same customer back by accident.
    db.execute(
        """
        CREATE TABLE erasures (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            reason TEXT,
            id_hash TEXT NOT NULL,
            counts TEXT NOT NULL DEFAULT '{}'   -- JSON: table -> rows deleted or scrubbed
        )"""
    )
    db.execute("CREATE INDEX erasures_id_hash ON erasures(id_hash)")


@migrations(name="0007_assignments")
def _assignments(db: Database) -> None:
    # Which variant of a campaign each customer gets (A/B), or 0 for the hold-out group that
    # gets nothing. Stored once, so reruns, regenerates and exports all agree.
    db.execute(
        """
        CREATE TABLE assignments (
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            variant INTEGER NOT NULL,    -- 1..N, or 0 = hold-out (no message)
            at TEXT NOT NULL,
            PRIMARY KEY (campaign_id, user_id)
        )"""
    )


@migrations(name="0200_import_event_quantity")
def _event_quantity(db: Database) -> None:
    # Units in one event: repeated identical lines of an export are summed into one event
    # (quantity 3), and a return of 2 units is kind 'return' with quantity 2. `value` keeps
    # its own meaning (a rating, or 1).
    db.execute("ALTER TABLE events ADD COLUMN quantity REAL NOT NULL DEFAULT 1")


@migrations(name="0300_safety_export_journal")
def _export_journal(db: Database) -> None:
    # One row per export, written (with the drafts marked exported) BEFORE its file gets its
    # final name. A run that dies between the two is reconciled by the next export: the
    # file exists -> the export stands; it does not -> its drafts go back to what they were.
    db.execute(
        """
        CREATE TABLE exports (
            id INTEGER PRIMARY KEY,
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
            channel TEXT NOT NULL,
            format TEXT NOT NULL,        -- csv | jsonl | eml
            path TEXT NOT NULL,          -- the final file (or .eml folder), absolute
            tmp_path TEXT NOT NULL,      -- where it is written before it is renamed to path
            state TEXT NOT NULL,         -- pending | done | undone
            drafts TEXT NOT NULL,        -- JSON: [{id, version, status_before, exported_at_before}]
            messages INTEGER NOT NULL,
            actor TEXT NOT NULL,
            send_at TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            note TEXT                    -- how a pending export was reconciled
        )"""
    )
    db.execute("CREATE INDEX exports_state ON exports(state)")


@migrations(name="0400_llm_cache_endpoint")
def _llm_cache_endpoint(db: Database) -> None:
    # The cache key now covers the endpoint (another server with the same model name is
    # another cache), and a row says which block it answers and how it was asked. Rows made
    # before this migration keep their old keys, which no new request matches.
    for column in ("endpoint", "block_key", "prompt_hash", "response_format", "source"):
        db.execute(f"ALTER TABLE llm_cache ADD COLUMN {column} TEXT")
    # Per endpoint and model: the structured-output kind it accepts (json_schema or, after
    # a refusal, json_object), so later runs do not ask again.
    db.execute(
        """
        CREATE TABLE llm_endpoints (
            endpoint TEXT NOT NULL,
            model TEXT NOT NULL,
            response_format TEXT NOT NULL,   -- json_schema | json_object
            updated_at TEXT NOT NULL,
            PRIMARY KEY (endpoint, model)
        )"""
    )


@migrations(name="0400_llm_runs")
def _llm_runs(db: Database) -> None:
    # What each LLM drafting run cost: requests sent, answers reused, tokens, estimated cost
    # (the price table's numbers at the time; NULL when the model had no price).
    db.execute(
        """
        CREATE TABLE llm_runs (
            id INTEGER PRIMARY KEY,
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
            mode TEXT NOT NULL,              -- blocks | per-user
            via TEXT NOT NULL,               -- live | batch | file
            model TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            drafts INTEGER NOT NULL DEFAULT 0,          -- LLM drafts written
            requests INTEGER NOT NULL DEFAULT 0,        -- distinct prompts the drafts needed
            cache_hits INTEGER NOT NULL DEFAULT 0,      -- ... answered from the cache
            calls INTEGER NOT NULL DEFAULT 0,           -- HTTP requests sent (retries included)
            saved_by_blocks INTEGER NOT NULL DEFAULT 0, -- drafts minus distinct prompts
            repaired INTEGER NOT NULL DEFAULT 0,
            fallbacks INTEGER NOT NULL DEFAULT 0,
            tokens_prompt INTEGER NOT NULL DEFAULT 0,
            tokens_completion INTEGER NOT NULL DEFAULT 0,
            price_input REAL,                -- per 1M tokens
            price_output REAL,
            formats TEXT NOT NULL DEFAULT '{}',  -- JSON: {json_schema: n, json_object: n}
            started_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX llm_runs_campaign ON llm_runs(campaign_id)")


@migrations(name="0400_llm_batches")
def _llm_batches(db: Database) -> None:
    # Batch submissions (OpenAI Batch API, or a JSONL file for vLLM run-batch) and the
    # requests in each, so a batch can be collected by a later process, any number of times.
    db.execute(
        """
        CREATE TABLE llm_batches (
            id INTEGER PRIMARY KEY,
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
            kind TEXT NOT NULL,              -- api | file
            submission TEXT NOT NULL UNIQUE, -- our id, also in the provider batch's metadata
            endpoint TEXT NOT NULL,
            model TEXT NOT NULL,
            mode TEXT NOT NULL,              -- blocks | per-user
            settings TEXT NOT NULL DEFAULT '{}',  -- JSON: temperature, prices, ...
            batch_id TEXT,                   -- the provider's batch id
            input_file_id TEXT,
            output_file_id TEXT,
            error_file_id TEXT,
            path TEXT,                       -- kind 'file': where the JSONL was written
            status TEXT NOT NULL,            -- preparing | uploaded | validating | in_progress
                                             -- | finalizing | completed | expired | failed
                                             -- | cancelled | written
            collected INTEGER NOT NULL DEFAULT 0,
            requests INTEGER NOT NULL DEFAULT 0,
            answered INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX llm_batches_campaign ON llm_batches(campaign_id, collected)")
    db.execute(
        """
        CREATE TABLE llm_batch_requests (
            batch INTEGER NOT NULL REFERENCES llm_batches(id) ON DELETE CASCADE,
            custom_id TEXT NOT NULL,         -- the cache key of the answer
            block_key TEXT,
            prompt_hash TEXT NOT NULL,
            request TEXT NOT NULL,           -- JSON: messages and parameters
            status TEXT NOT NULL DEFAULT 'pending',   -- pending | answered | failed
            error TEXT,
            PRIMARY KEY (batch, custom_id)
        )"""
    )
    db.execute("CREATE INDEX llm_batch_requests_key ON llm_batch_requests(custom_id, status)")


@migrations(name="0400_llm_draft_meta")
def _llm_draft_meta(db: Database) -> None:
    # An LLM draft's provenance beyond model and prompt hash: mode, the blocks it was
    # assembled from (key, hash, cached or not) and the structured-output kind used.
    db.execute("ALTER TABLE drafts ADD COLUMN llm_meta TEXT")


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


@migrations(name="0500_loop_outcomes_and_send_times")
def _outcomes_and_send_times(db: Database) -> None:
    # What the sending platform reports about each exported message. One row per (draft,
    # event, time, item): importing the same file again changes nothing.
    db.execute(
        """
        CREATE TABLE outcomes (
            id INTEGER PRIMARY KEY,
            draft_id INTEGER NOT NULL REFERENCES drafts(id) ON DELETE CASCADE,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            event TEXT NOT NULL,         -- sent | delivered | bounced | opened | clicked
                                         -- | converted | unsubscribed | complained
            ts TEXT NOT NULL,            -- ISO 8601, UTC
            detail TEXT,                 -- bounced: hard | soft (soft when the platform
                                         -- does not say)
            value REAL,                  -- converted: order value
            item_id INTEGER REFERENCES items(id) ON DELETE SET NULL,
            event_id INTEGER,            -- the events row this outcome created (click /
                                         -- purchase), NULL when the shop's data had it
            source TEXT NOT NULL,        -- file:line
            imported_at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE UNIQUE INDEX outcomes_key ON outcomes "
               "(draft_id, event, ts, ifnull(item_id, 0))")
    db.execute("CREATE INDEX outcomes_user ON outcomes(user_id)")
    # The planned send time of each exported message (the latest export wins), so results
    # can show when messages went out in the customers' local hours.
    db.execute(
        """
        CREATE TABLE send_times (
            draft_id INTEGER PRIMARY KEY REFERENCES drafts(id) ON DELETE CASCADE,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            export_id INTEGER REFERENCES exports(id) ON DELETE SET NULL,
            send_at TEXT NOT NULL,       -- UTC
            local_time TEXT NOT NULL,    -- ISO 8601 with the customer's offset
            timezone TEXT NOT NULL,      -- IANA name used (the shop's default when unknown)
            source TEXT NOT NULL,        -- own | segment | shop
            reason TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX send_times_user ON send_times(user_id)")
