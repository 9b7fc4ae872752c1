// Progressive enhancement only: every page works without this file.
(function () {
  "use strict";

  // The environment switcher submits on change (a "Go" button shows without JavaScript).
  document.querySelectorAll("[data-env-switch]").forEach(function (select) {
    select.addEventListener("change", function () {
      window.location.href = "/dashboard/" + encodeURIComponent(select.value) + "/";
    });
  });

  // Copy buttons (the new API key).
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var input = document.getElementById(button.getAttribute("data-copy"));
      var done = function () {
        var note = button.parentElement.querySelector(".copied");
        if (note) note.textContent = "Copied";
      };
      input.select();
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(input.value).then(done, function () { document.execCommand("copy"); done(); });
      } else {
        document.execCommand("copy");
        done();
      }
    });
  });
  document.querySelectorAll("[data-select-all]").forEach(function (input) {
    input.addEventListener("focus", function () { input.select(); });
  });

  // Charts: the data sits in a JSON script beside each canvas.
  var blocks = document.querySelectorAll("script[data-chart]");
  if (!blocks.length) return;
  var script = document.createElement("script");
  script.src = "/dashboard/static/vendor/chart.umd.min.js";
  script.onload = function () {
    blocks.forEach(function (block) {
      var data = JSON.parse(block.textContent);
      var canvas = document.getElementById(block.getAttribute("data-chart"));
      var datasets = [
        { type: "bar", label: "Sent", data: data.sent, backgroundColor: "#2f6fde", stack: "o" },
        { type: "bar", label: "Failed", data: data.failed, backgroundColor: "#d64545", stack: "o" },
        { type: "bar", label: "Unknown", data: data.unknown, backgroundColor: "#e8932b", stack: "o" },
        { type: "bar", label: "Excluded", data: data.excluded, backgroundColor: "#a3a9b5", stack: "o" }
      ];
      // Clicks exist for pushes only: Kakao and text message charts have no click line.
      if (data.clicks) {
        datasets.push({ type: "line", label: "Unique clicks", data: data.clicks, borderColor: "#1b9e63",
          backgroundColor: "#1b9e63", tension: 0.2, pointRadius: 2 });
      }
      new window.Chart(canvas, {
        data: { labels: data.labels, datasets: datasets },
        options: {
          animation: false,
          maintainAspectRatio: false,
          interaction: { mode: "index", intersect: false },
          scales: { x: { stacked: true, ticks: { maxRotation: 0, autoSkipPadding: 12 } },
                    y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
          plugins: { legend: { position: "bottom" } }
        }
      });
    });
  };
  document.head.appendChild(script);
})();
