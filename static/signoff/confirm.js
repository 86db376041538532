// Destructive and outward actions ask first. A form (plain or htmx) with `data-confirm` is not
// sent until the person agrees to the server's sentence naming the consequence. Where a select
// in the form picks what the action applies to, the chosen <option>'s own `data-confirm` (also
// written by the server) is asked instead, so the question names the version actually chosen.
(function () {
  "use strict";

  function question(form) {
    var options = form.querySelectorAll("select option:checked[data-confirm]");
    if (options.length) return options[0].getAttribute("data-confirm");
    return form.getAttribute("data-confirm");
  }

  // Capture phase on the document: runs before htmx's own listener on the form, so a refusal
  // stops both the browser's submit and htmx's request.
  document.addEventListener(
    "submit",
    function (event) {
      var form = event.target;
      if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-confirm")) return;
      var text = question(form);
      if (text && !window.confirm(text)) {
        event.preventDefault();
        event.stopImmediatePropagation();
      }
    },
    true
  );
})();
