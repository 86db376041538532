// Signoff reviewer workbench: keys, the correction editor's live diff, the lease countdown and
// its renewal. The server renders every state; htmx swaps #workbench after each decision, so
// this script keeps no item state of its own beyond the panel in view.
(function () {
  "use strict";

  // Renew when this little is left, and only for someone still at work: an abandoned tab must
  // not hold an item forever, so after IDLE_LIMIT_MS without input the lease runs out.
  var RENEW_WHEN_LEFT_FRACTION = 0.4;
  var RENEW_MIN_LEFT_S = 30;
  var IDLE_LIMIT_MS = 10 * 60 * 1000;
  // Larger edits than this (token pairs) fall back to a coarse diff: a quadratic table for a
  // very long output would freeze typing. The stored diff is always the server's exact one.
  var MAX_DIFF_CELLS = 2000000;

  var lastActivity = Date.now();
  var busy = false;
  var lease = null; // {id, expiresAt (ms, local clock), seconds, renewUrl, renewing, lost}
  var timer = null;

  function $(selector, root) { return (root || document).querySelector(selector); }
  function workbench() { return document.getElementById("workbench"); }
  function csrfToken() {
    var field = $("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }
  function alertBox(message) {
    var box = document.getElementById("wb-alert");
    if (!box) return;
    box.textContent = message;
    box.hidden = !message;
  }

  // ---- word diff (same tokens as reviews/diffing.py: runs of spaces, words, single signs) ----
  var TOKEN = /\s+|[\p{L}\p{N}\p{M}_]+|[^\p{L}\p{N}\p{M}_\s]/gu;
  function tokenize(text) { return text.match(TOKEN) || []; }

  function wordDiff(original, corrected) {
    var a = tokenize(original), b = tokenize(corrected);
    var start = 0;
    while (start < a.length && start < b.length && a[start] === b[start]) start++;
    var endA = a.length, endB = b.length;
    while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) { endA--; endB--; }
    var chunks = [];
    if (start > 0) chunks.push(["equal", a.slice(0, start).join("")]);
    var midA = a.slice(start, endA), midB = b.slice(start, endB);
    if ((midA.length + 1) * (midB.length + 1) > MAX_DIFF_CELLS) {
      if (midA.length) chunks.push(["delete", midA.join("")]);
      if (midB.length) chunks.push(["insert", midB.join("")]);
    } else {
      chunks = chunks.concat(lcsDiff(midA, midB));
    }
    if (endA < a.length) chunks.push(["equal", a.slice(endA).join("")]);
    return chunks;
  }

  function lcsDiff(a, b) {
    var n = a.length, m = b.length, i, j;
    var width = m + 1;
    var table = new Uint32Array((n + 1) * width);
    for (i = n - 1; i >= 0; i--) {
      for (j = m - 1; j >= 0; j--) {
        table[i * width + j] = a[i] === b[j]
          ? table[(i + 1) * width + j + 1] + 1
          : Math.max(table[(i + 1) * width + j], table[i * width + j + 1]);
      }
    }
    var out = [];
    function push(op, text) {
      var last = out[out.length - 1];
      if (last && last[0] === op) last[1] += text; else out.push([op, text]);
    }
    i = 0; j = 0;
    while (i < n && j < m) {
      if (a[i] === b[j]) { push("equal", a[i]); i++; j++; }
      else if (table[(i + 1) * width + j] >= table[i * width + j + 1]) { push("delete", a[i]); i++; }
      else { push("insert", b[j]); j++; }
    }
    while (i < n) push("delete", a[i++]);
    while (j < m) push("insert", b[j++]);
    return out;
  }

  function renderDiff() {
    var editor = $("#id_corrected_output"), target = $("#diff"), original = $("#original-output");
    if (!editor || !target || !original) return;
    var chunks = wordDiff(original.textContent, editor.value.replace(/\r\n/g, "\n"));
    target.textContent = "";
    var changed = 0;
    chunks.forEach(function (chunk) {
      if (chunk[0] === "equal") { target.appendChild(document.createTextNode(chunk[1])); return; }
      var el = document.createElement(chunk[0] === "delete" ? "del" : "ins");
      el.textContent = chunk[1];
      target.appendChild(el);
      if (/\S/.test(chunk[1])) changed++;
    });
    var summary = $("#diff-summary");
    if (summary) summary.textContent = changed ? "(" + changed + " change" + (changed > 1 ? "s" : "") + ")" : "(no changes yet)";
  }

  // ---- panels ----
  function closePanels() {
    ["#editor", "#reason-panel"].forEach(function (sel) { var p = $(sel); if (p) p.hidden = true; });
    var title = document.getElementById("wb-title");
    if (title) title.focus();
  }

  function openEditor() {
    var panel = $("#editor"), editor = $("#id_corrected_output");
    if (!panel || !editor) return;
    var reason = $("#reason-panel");
    if (reason) reason.hidden = true;
    panel.hidden = false;
    renderDiff();
    editor.focus({ preventScroll: true });
    editor.setSelectionRange(editor.value.length, editor.value.length);
    // Bring the whole editor into view, diff included: the diff shows the original too.
    panel.scrollIntoView({ block: "nearest" });
  }

  function openReason(decision) {
    var panel = $("#reason-panel"), box = $("#id_reason"), submit = $("[data-submit-reason]");
    if (!panel || !box || !submit) return;
    var editor = $("#editor");
    if (editor) editor.hidden = true;
    submit.value = decision;
    submit.firstChild.textContent = decision === "escalate" ? "Escalate " : "Reject ";
    var verb = $("[data-reason-verb]");
    if (verb) verb.textContent = decision;
    panel.hidden = false;
    box.focus({ preventScroll: true });
    panel.scrollIntoView({ block: "nearest" });
  }

  function submitWith(button) {
    // A click, not form.requestSubmit(button): htmx learns which button submitted the form
    // (and so the decision) from the click.
    if (!button || busy) return;
    button.click();
  }

  // ---- keys ----
  function isTyping(target) {
    return target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
  }

  function toggleHelp() {
    var help = document.getElementById("help");
    if (!help) return;
    if (help.open) help.close(); else help.showModal();
  }

  document.addEventListener("keydown", function (event) {
    lastActivity = Date.now();
    if (!workbench()) return;
    var help = document.getElementById("help");
    if (help && help.open) {
      if (event.key === "?") { event.preventDefault(); help.close(); }
      return; // Esc closes the dialog natively.
    }
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      var inReason = event.target && event.target.id === "id_reason";
      var button = inReason ? $("[data-submit-reason]") : $("[data-submit-correction]");
      var panel = inReason ? $("#reason-panel") : $("#editor");
      if (panel && !panel.hidden) { event.preventDefault(); submitWith(button); }
      return;
    }
    if (event.key === "Escape") {
      var open = ($("#editor") && !$("#editor").hidden) || ($("#reason-panel") && !$("#reason-panel").hidden);
      if (open) { event.preventDefault(); closePanels(); }
      return;
    }
    if (isTyping(event.target) || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "?") { event.preventDefault(); toggleHelp(); return; }
    if (!workbench().dataset.lease || busy) return;
    switch (event.key) {
      case "a": event.preventDefault(); submitWith($('button[data-key="a"]')); break;
      case "e": event.preventDefault(); openEditor(); break;
      case "r": event.preventDefault(); openReason("reject"); break;
      case "x":
        if ($('button[data-key="x"]')) { event.preventDefault(); openReason("escalate"); }
        break;
      case "s": {
        event.preventDefault();
        submitWith($('button[data-key="s"]'));
        break;
      }
    }
  });

  document.addEventListener("click", function (event) {
    var target = event.target.closest ? event.target.closest("button") : null;
    if (!target) return;
    if (target.hasAttribute("data-open")) {
      if (target.dataset.open === "editor") openEditor(); else openReason(target.dataset.decision);
    } else if (target.hasAttribute("data-close")) {
      closePanels();
    } else if (target.hasAttribute("data-help")) {
      toggleHelp();
    } else if (target.dataset.copy) {
      copyText(document.getElementById(target.dataset.copy), target);
    }
  });

  document.addEventListener("input", function (event) {
    lastActivity = Date.now();
    if (event.target && event.target.id === "id_corrected_output") renderDiff();
  });
  ["pointerdown", "wheel", "focusin"].forEach(function (name) {
    document.addEventListener(name, function () { lastActivity = Date.now(); }, { passive: true });
  });

  function copyText(field, button) {
    if (!field) return;
    field.focus();
    field.select();
    var done = function () { button.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
    } else {
      document.execCommand("copy");
      done();
    }
  }

  // ---- lease countdown and renewal ----
  function readLease() {
    var wb = workbench();
    if (!wb || !wb.dataset.lease) { lease = null; return; }
    // Count down on the local clock from the server's "seconds left", so a skewed client clock
    // does not matter.
    var left = Date.parse(wb.dataset.expires) - Date.parse(wb.dataset.serverNow);
    lease = {
      id: wb.dataset.lease,
      expiresAt: Date.now() + left,
      seconds: parseInt(wb.dataset.leaseSeconds, 10) || 300,
      renewUrl: wb.dataset.renewUrl,
      renewing: false,
      lost: false,
    };
  }

  function format(seconds) {
    var s = Math.max(0, Math.round(seconds));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  function tick() {
    if (!lease) return;
    var left = (lease.expiresAt - Date.now()) / 1000;
    var countdown = $("[data-countdown]"), box = $("[data-lease-box]");
    if (countdown) countdown.textContent = format(left);
    if (box) {
      box.classList.toggle("warn", left < 60 && left > 0);
      box.classList.toggle("bad", left <= 0 || lease.lost);
    }
    if (lease.lost) return;
    if (left <= 0) {
      alertBox("Your lease on this item ran out: someone else may take it. Copy anything you typed before you submit.");
      return;
    }
    var active = Date.now() - lastActivity < IDLE_LIMIT_MS && document.visibilityState !== "hidden";
    // Never more than half the lease, or a short lease would renew on every tick.
    var threshold = Math.min(
      Math.max(RENEW_MIN_LEFT_S, lease.seconds * RENEW_WHEN_LEFT_FRACTION), lease.seconds / 2);
    if (active && left < threshold && !lease.renewing) renew(lease);
  }

  function renew(current) {
    current.renewing = true;
    fetch(current.renewUrl, {
      method: "POST",
      headers: { "X-CSRFToken": csrfToken(), "X-Requested-With": "fetch" },
      credentials: "same-origin",
    }).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; });
    }).then(function (result) {
      if (current !== lease) return; // the item changed meanwhile
      if (result.ok) {
        current.expiresAt = Date.now() + result.body.seconds_left * 1000;
      } else {
        current.lost = true;
        alertBox("This item's lease was lost (" + (result.body.detail || "unknown reason") +
          "). Copy anything you typed; your next decision moves you on to another item.");
      }
    }).catch(function () {
      // Offline for a moment: try again on a later tick.
    }).finally(function () { current.renewing = false; });
  }

  // ---- after each swap ----
  function onNewItem() {
    alertBox("");
    readLease();
    var editor = $("#editor");
    if (editor && !editor.hidden) renderDiff();
    var focusTarget = $("#workbench [aria-invalid=true]") ||
      (editor && !editor.hidden ? $("#id_corrected_output") : null) ||
      ($("#reason-panel") && !$("#reason-panel").hidden ? $("#id_reason") : null) ||
      document.getElementById("wb-title");
    if (focusTarget) focusTarget.focus();
  }

  document.addEventListener("htmx:beforeRequest", function () { busy = true; });
  document.addEventListener("htmx:afterRequest", function () { busy = false; });
  // After an outerHTML swap the events fire on the new nodes: compare the panel itself.
  var shownPanel = null;
  document.addEventListener("htmx:afterSettle", function () {
    var current = workbench();
    if (current && current !== shownPanel) { shownPanel = current; onNewItem(); }
  });
  document.addEventListener("htmx:responseError", function () {
    alertBox("The server could not record that (an error on our side). Your text is still here; try again.");
  });
  document.addEventListener("htmx:sendError", function () {
    alertBox("No connection to the server. Your text is still here; try again when you are back online.");
  });

  function start() {
    shownPanel = workbench();
    readLease();
    var editor = $("#editor");
    if (editor && !editor.hidden) renderDiff();
    if (!timer) timer = setInterval(tick, 1000);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
