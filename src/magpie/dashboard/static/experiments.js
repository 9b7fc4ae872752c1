// The campaign page's cumulative conversions chart: one line per arm, drawn with the bundled Chart.js.
(function () {
  "use strict";
  function draw() {
    document.querySelectorAll("script[data-experiment-chart]").forEach(function (block) {
      var id = block.getAttribute("data-experiment-chart");
      var series = JSON.parse(block.textContent);
      var names = JSON.parse(document.querySelector('script[data-experiment-names="' + id + '"]').textContent);
      var days = {};
      series.forEach(function (points) { points.forEach(function (p) { days[p[0]] = true; }); });
      var labels = Object.keys(days).map(Number).sort(function (a, b) { return a - b; });
      var colors = ["#a3a9b5", "#2f6fde", "#1b9e63", "#d68a1a", "#8a4fd6", "#d64545"];
      var datasets = series.map(function (points, i) {
        var byDay = {};
        points.forEach(function (p) { byDay[p[0]] = p[1]; });
        var last = 0;
        return {
          type: "line", label: names[i], borderColor: colors[i % colors.length],
          backgroundColor: colors[i % colors.length], pointRadius: 2, tension: 0.1,
          data: labels.map(function (d) { if (d in byDay) { last = byDay[d]; } return last; })
        };
      });
      new window.Chart(document.getElementById(id), {
        data: { labels: labels.map(function (d) { return new Date(d).toISOString().slice(0, 10); }), datasets: datasets },
        options: { animation: false, maintainAspectRatio: false,
                   scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
                   plugins: { legend: { position: "bottom" } } }
      });
    });
  }
  // Chart.js is loaded once per page: dashboard.js may have asked for it already (loading it twice would
  // replace window.Chart, and with it the registry of the charts drawn so far).
  function start() {
    if (window.Chart) { draw(); return; }
    var script = document.querySelector('script[src$="/vendor/chart.umd.min.js"]');
    if (!script) {
      script = document.createElement("script");
      script.src = "/dashboard/static/vendor/chart.umd.min.js";
      document.head.appendChild(script);
    }
    script.addEventListener("load", draw);
  }
  // After the page's load event: by then dashboard.js (which runs after this script) has loaded Chart.js.
  if (document.readyState === "complete") { start(); } else { window.addEventListener("load", start); }
})();
