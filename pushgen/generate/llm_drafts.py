"""LLM drafting for one batch of customers: plan -> answer -> assemble -> check -> repair.

Every assembled draft goes through the same checks as a template draft, plus
``llm.placeholders``. A draft that fails gets one repair of the pieces at fault, but only
for failures a model can fix (facts, length, banned phrases, emoji, format, placeholders,
a link the model wrote itself); never for an HTTP error or a problem with what pushgen
added (deep link, opt-out line, unsubscribe link, postal address). What still fails falls
back to the campaign's template, flagged for the reviewer; a failure the model cannot fix
keeps the LLM draft with its failing check, flagged. In offline mode (batch drafting) a
draft whose answers are not there yet is held back (``None``) for a later run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..channels import find_urls
from ..errors import PushgenError
from ..messages import CheckResult, Message, MessageContext, checks_pass
from .blocks import PLACEHOLDER, Assembler, Planner, Slot
from .llm import Answer, LLMGenerator
from .templates import render

Checker = Callable[[Message, MessageContext, list[str]], list[CheckResult]]

# Checks of what pushgen itself adds: a repair cannot change them.
NOT_MODEL_FIXABLE = frozenset({"guard.deep_link", "push.deep_link", "sms.opt_out",
                               "email.unsubscribe", "email.postal_address", "email.html",
                               "email.text"})
_QUOTED_RE = re.compile(r"'([^']{2,80})'")


@dataclass
class Drafted:
    """One draft ready for the store (``drafting_pool.draft_row`` turns it into a row)."""

    ctx: MessageContext
    message: Message
    checks: list[CheckResult]
    provenance: dict[str, Any]


@dataclass
class DrafterStats:
    llm_drafts: int = 0        # drafts whose copy came from the model
    repaired: int = 0
    fallbacks: int = 0
    waiting: int = 0           # offline: held back until their answers arrive
    repair_requests: int = 0   # distinct repair prompts
    tokens_prompt: int = 0
    tokens_completion: int = 0
    passed_through: int = 0    # drafts that went through the LLM path (for saved-by-blocks)


def model_fixable(check: CheckResult, model_texts: Sequence[str]) -> bool:
    """Whether a repair prompt can fix this failed check."""
    if check.name == "guard.links":   # a link the model wrote itself, or one pushgen built?
        return any(find_urls(t) for t in model_texts)
    return check.name not in NOT_MODEL_FIXABLE


class LLMDrafter:
    """Drafts with one LLMGenerator for one campaign run, batch after batch."""

    def __init__(self, gen: LLMGenerator, mode: str, *,
                 template_dirs: Sequence[Any] | None = None) -> None:
        self.gen, self.mode, self.template_dirs = gen, mode, template_dirs
        self.planner = Planner(gen.prompts, mode, template_dirs)
        self.assembler = Assembler(template_dirs)
        self.stats = DrafterStats()
        self._repairs: dict[str, Slot] = {}      # answer key -> its repaired slot (this run)

    # -- one batch --

    def draft(self, contexts: list[MessageContext], check: Checker,
              forbidden: dict[int, list[str]]) -> list[Drafted | None]:
        """A Drafted per context, in order (None: waiting for a batch answer)."""
        plans = [self.planner.slots(ctx) for ctx in contexts]
        answers = self.gen.answer_many(s.request for plan in plans for s in plan)
        first = [a for a in answers.values() if a.kind != "missing"]
        if first and all(a.kind == "http" for a in first) and not self.gen.offline:
            # A dead endpoint or wrong setup: stop rather than quietly fall back for everyone.
            raise PushgenError(f"the LLM answered none of {len(first)} request(s) of this "
                               f"batch ({first[0].error}); nothing of this batch was saved")
        self.stats.passed_through += len(contexts)
        out: list[Drafted | None] = [None] * len(contexts)
        repair: dict[int, dict[int, list[str]]] = {}     # ctx index -> slot index -> feedback
        results: dict[int, tuple[list[tuple[Slot, Answer]], Any]] = {}
        for i, (ctx, plan) in enumerate(zip(contexts, plans)):
            pieces = [(s, answers[self.gen.key(s.request)]) for s in plan]
            verdict = self._try(ctx, pieces, check, forbidden)
            results[i] = (pieces, verdict)
            if verdict.kind == "repair":
                repair[i] = verdict.feedback
            elif verdict.kind != "waiting":
                out[i] = self._finish(ctx, pieces, verdict, check, forbidden, repaired=False)
            else:
                self.stats.waiting += 1
        if repair:
            self._repair(contexts, repair, results, out, check, forbidden)
        return out

    # -- steps --

    @dataclass
    class _Verdict:
        kind: str                   # ok | fail (no repair) | repair | broken | waiting
        message: Message | None = None
        checks: list[CheckResult] = field(default_factory=list)
        template: str = ""
        reason: str = ""
        feedback: dict[int, list[str]] = field(default_factory=dict)

    def _try(self, ctx: MessageContext, pieces: list[tuple[Slot, Answer]], check: Checker,
             forbidden: dict[int, list[str]]) -> "LLMDrafter._Verdict":
        V = LLMDrafter._Verdict
        if any(a.kind == "missing" for _, a in pieces):
            return V("waiting")
        broken = [(n, a) for n, (_, a) in enumerate(pieces) if a.fields is None]
        if broken:
            if all(a.kind == "output" for _, a in broken):   # invalid JSON: a model can fix
                return V("repair", reason=broken[0][1].error or "",
                         feedback={n: [f"format: {a.error}"] for n, a in broken})
            return V("broken", reason=broken[0][1].error or "no answer")
        assembled = self.assembler.assemble(
            ctx, [(s, a.key, a.fields or {}) for s, a in pieces])
        message = assembled.rendered.message
        checks = check(message, ctx, forbidden.get(ctx.recipient.user_id, []))
        checks.append(assembled.placeholders)
        template = f"{assembled.rendered.template_name}@{assembled.rendered.template_version}"
        if checks_pass(checks):
            return V("ok", message, checks, template)
        failed = [c for c in checks if not c.ok and c.severity == "error"]
        texts = [v for _, a in pieces for v in (a.fields or {}).values()]
        if all(model_fixable(c, texts) for c in failed):
            return V("repair", message, checks, template,
                     reason="; ".join(c.name for c in failed),
                     feedback=self._feedback(ctx, pieces, failed, forbidden))
        cannot = [c.name for c in failed if not model_fixable(c, texts)]
        return V("fail", message, checks, template,
                 reason=f"not repaired: {', '.join(cannot)} concerns what pushgen adds, "
                        "not what the model wrote")

    def _feedback(self, ctx: MessageContext, pieces: list[tuple[Slot, Answer]],
                  failed: list[CheckResult], forbidden: dict[int, list[str]]
                  ) -> dict[int, list[str]]:
        """Failed checks per piece at fault: a check quoting a piece's text goes to that
        piece, any other to every piece. In blocks mode the customer's name and contact
        data are taken out first (they never go into a prompt)."""
        secrets = [v for v in forbidden.get(ctx.recipient.user_id, []) if len(v) >= 3]
        person = [x for x in (ctx.recipient.name or "").split() if len(x) >= 2]
        out: dict[int, list[str]] = {}
        for c in failed:
            line = f"{c.name}: {c.message}"
            if c.name == "llm.placeholders":
                for n, (slot, _) in enumerate(pieces):
                    if slot.request.block_key in c.message or slot.role == "user":
                        out.setdefault(n, []).append(line)
                continue
            quoted = [q.casefold() for q in _QUOTED_RE.findall(c.message)]
            at_fault = [n for n, (_, a) in enumerate(pieces)
                        if quoted and any(q in v.casefold() for q in quoted
                                          for v in (a.fields or {}).values())]
            for n in at_fault or range(len(pieces)):
                out.setdefault(n, []).append(line)
        if self.mode == "blocks":
            for n, lines in out.items():
                scrubbed = []
                for line in lines:
                    for value in secrets:
                        line = line.replace(value, "…")
                    for word in person:   # Chinese names have no word boundaries
                        line = (re.sub(rf"\b{re.escape(word)}\b", PLACEHOLDER, line)
                                if word.isascii() else line.replace(word, PLACEHOLDER))
                    scrubbed.append(line)
                out[n] = scrubbed
        return out

    def _repair(self, contexts: list[MessageContext], repair: dict[int, dict[int, list[str]]],
                results: dict[int, tuple[list[tuple[Slot, Answer]], Any]],
                out: list[Drafted | None], check: Checker,
                forbidden: dict[int, list[str]]) -> None:
        """One repair round for the drafts in ``repair``, then the fallback."""
        new_slots: dict[int, list[Slot]] = {}
        for i, per_slot in repair.items():
            pieces = results[i][0]
            slots = []
            for n, (slot, ans) in enumerate(pieces):
                if n in per_slot:
                    fixed = self._repairs.get(ans.key)
                    if fixed is None:
                        fixed = self.planner.repair(slot, contexts[i], per_slot[n])
                        self._repairs[ans.key] = fixed
                        self.stats.repair_requests += 1
                    slots.append(fixed)
                else:
                    slots.append(slot)
            new_slots[i] = slots
        answers = self.gen.answer_many(s.request for slots in new_slots.values() for s in slots)
        for i, slots in new_slots.items():
            ctx = contexts[i]
            first_pieces, first = results[i]
            pieces = [(s, answers[self.gen.key(s.request)]) for s in slots]
            verdict = self._try(ctx, pieces, check, forbidden)
            if verdict.kind == "waiting":
                self.stats.waiting += 1
                continue
            costs = first_pieces + [p for p in pieces if p not in first_pieces]
            if verdict.kind == "ok":
                self.stats.repaired += 1
                out[i] = self._finish(ctx, costs, verdict, check, forbidden, repaired=True,
                                      used=pieces)
            else:
                verdict.kind = "broken"
                verdict.reason = (f"LLM draft failed after one repair ({verdict.reason or '-'})"
                                  f"; first failures: {first.reason}")
                out[i] = self._finish(ctx, costs, verdict, check, forbidden, repaired=True,
                                      used=pieces)

    def _finish(self, ctx: MessageContext, pieces: list[tuple[Slot, Answer]], verdict: Any,
                check: Checker, forbidden: dict[int, list[str]], *, repaired: bool,
                used: list[tuple[Slot, Answer]] | None = None) -> Drafted:
        """The row data: the LLM draft, or the template draft when the LLM one is broken."""
        used = used if used is not None else pieces
        tp = tc = 0
        for _, a in pieces:    # every new answer's cost is carried by one draft
            tp, tc = tp + a.tokens_prompt, tc + a.tokens_completion
            a.tokens_prompt = a.tokens_completion = 0
        self.stats.tokens_prompt += tp
        self.stats.tokens_completion += tc
        hashes = [a.prompt_hash for _, a in used]
        prov: dict[str, Any] = {
            "model": self.gen.model, "tokens_prompt": tp, "tokens_completion": tc,
            "prompt_hash": hashes[0] if len(hashes) == 1 else
            hashlib.sha256("\n".join(hashes).encode()).hexdigest(),
            "llm_meta": {
                "mode": self.mode, "endpoint": self.gen.endpoint, "repaired": repaired,
                "response_format": sorted({a.response_format for _, a in used
                                           if a.response_format}),
                "blocks": [{"role": s.role, "key": s.request.block_key,
                            "hash": a.prompt_hash[:16], "cached": a.cached,
                            "format": a.response_format, "ok": a.fields is not None}
                           for s, a in used]}}
        if verdict.kind in ("ok", "fail"):
            self.stats.llm_drafts += 1
            if verdict.kind == "fail":
                prov["flag"] = verdict.reason[:600]
            return Drafted(ctx, verdict.message, verdict.checks,
                           dict(prov, generator="llm", template_name=verdict.template))
        self.stats.fallbacks += 1
        rendered = render(ctx, template=ctx.settings.template, template_dirs=self.template_dirs)
        checks = check(rendered.message, ctx, forbidden.get(ctx.recipient.user_id, []))
        prov.update(generator="llm_fallback_template",
                    template_name=f"{rendered.template_name}@{rendered.template_version}",
                    flag=(f"LLM draft not used ({verdict.reason[:500]}); template copy "
                          "used instead"))
        return Drafted(ctx, rendered.message, checks, prov)


__all__ = ["LLMDrafter", "Drafted", "DrafterStats", "model_fixable", "NOT_MODEL_FIXABLE"]
