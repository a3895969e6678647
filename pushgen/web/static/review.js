// pushgen review page: keyboard shortcuts, filter auto-submit, edit panel, live counters.
// Plain JS, no build step. The server stays the authority: counters only preview.
(function () {
  "use strict";
  const $ = (sel) => document.querySelector(sel);

  function typing(el) {
    return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT" ||
                  el.isContentEditable);
  }

  // Filters apply as soon as a menu changes.
  const filters = $("form[data-autosubmit]");
  if (filters) {
    filters.querySelectorAll("select").forEach((s) => s.addEventListener("change", () => filters.submit()));
    const apply = $("#apply-filters");
    if (apply) apply.hidden = true;
  }

  // Confirm bulk actions.
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (ev) => {
      if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
    });
  });

  // Edit panel.
  const panel = $("#edit-panel");
  function toggleEdit(show) {
    if (!panel) return;
    panel.hidden = show === undefined ? !panel.hidden : !show;
    if (!panel.hidden) {
      panel.scrollIntoView({ behavior: "smooth", block: "start" });
      const first = panel.querySelector("input[type=text], textarea");
      if (first) first.focus();
    }
  }
  document.querySelectorAll("[data-toggle-edit]").forEach((b) => b.addEventListener("click", () => toggleEdit()));

  // Help overlay.
  const help = $("#help");
  function toggleHelp(show) { if (help) help.hidden = show === undefined ? !help.hidden : !show; }
  document.querySelectorAll("[data-toggle-help]").forEach((b) => b.addEventListener("click", () => toggleHelp()));

  // Character counters; the SMS one asks the server (the one implementation of GSM-7 rules).
  document.querySelectorAll("[data-count-for]").forEach((span) => {
    const field = document.getElementById(span.dataset.countFor);
    if (!field) return;
    let timer = null;
    const update = () => {
      if (field.hasAttribute("data-sms-counter")) {
        clearTimeout(timer);
        timer = setTimeout(() => {
          fetch("/api/sms-info?text=" + encodeURIComponent(field.value), { credentials: "same-origin" })
            .then((r) => r.json())
            .then((i) => {
              span.textContent = `${i.encoding} · ${i.segments} segment${i.segments === 1 ? "" : "s"} · ${i.length}/${i.limit}`;
              span.classList.toggle("over", i.segments > 1);
            })
            .catch(() => { span.textContent = field.value.length + " characters"; });
        }, 150);
      } else {
        span.textContent = field.value.length + " characters";
      }
    };
    field.addEventListener("input", update);
    update();
  });

  // Keyboard: j/k next/previous, a approve, r reject, e edit, ? help, esc close.
  document.addEventListener("keydown", (ev) => {
    if (ev.metaKey || ev.ctrlKey || ev.altKey) return;
    if (ev.key === "Escape") {
      if (help && !help.hidden) { toggleHelp(false); return; }
      if (panel && !panel.hidden) { toggleEdit(false); document.activeElement.blur(); return; }
      if (typing(document.activeElement)) document.activeElement.blur();
      return;
    }
    if (typing(ev.target)) return;
    const go = (id) => { const a = document.getElementById(id); if (a) window.location.href = a.href; };
    switch (ev.key) {
      case "j": go("next-link"); break;
      case "k": go("prev-link"); break;
      case "a": {
        const btn = $("#approve-btn");
        if (btn && !btn.disabled) { ev.preventDefault(); $("#approve-form").submit(); }
        else if (btn) { btn.animate([{ transform: "translateX(-3px)" }, { transform: "translateX(3px)" }, { transform: "none" }], 200); }
        break;
      }
      case "r": {
        const reason = $("#reject-reason");
        if (reason) { ev.preventDefault(); reason.focus(); }
        break;
      }
      case "e": ev.preventDefault(); toggleEdit(true); break;
      case "?": toggleHelp(); break;
      default: return;
    }
  });

  // Keep the selected queue entry in view.
  const current = document.querySelector(".queue li.current");
  if (current) current.scrollIntoView({ block: "nearest" });
})();
