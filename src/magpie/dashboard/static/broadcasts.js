// The occurrence page: refresh its figures every two seconds without a reload, until it is over.
(function () {
  "use strict";
  var list = document.querySelector("[data-progress]");
  if (!list) return;
  var url = list.getAttribute("data-progress");
  var final = ["completed", "cancelled", "failed"];
  function show(name, value) {
    document.querySelectorAll('[data-field="' + name + '"]').forEach(function (el) {
      if (value === null || value === undefined) {
        el.textContent = "—";
      } else if (el.hasAttribute("data-words")) {
        // A state in the page's language, as the page wrote it.
        var words = JSON.parse(el.getAttribute("data-words"));
        el.textContent = words[value] || String(value);
        el.setAttribute("data-state", value);
      } else if (el.hasAttribute("data-time")) {
        el.textContent = new Date(value).toLocaleTimeString();
      } else {
        el.textContent = typeof value === "number" ? value.toLocaleString() : String(value);
      }
    });
  }
  function refresh() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data) return;
        Object.keys(data.progress).forEach(function (name) { show(name, data.progress[name]); });
        show("state", data.occurrence.state);
        if (final.indexOf(data.occurrence.state) < 0) {
          window.setTimeout(refresh, 2000);
        } else {
          // Over: the controls no longer apply.
          document.querySelectorAll(".actions").forEach(function (el) { el.hidden = true; });
        }
      })
      .catch(function () { window.setTimeout(refresh, 5000); });
  }
  window.setTimeout(refresh, 2000);
})();
