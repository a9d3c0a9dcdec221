/* Charts from JSON blocks in the page (no inline script: the pages' CSP forbids it), and the live chart of
   a training job fed by its Server-Sent Events. */
(function () {
  "use strict";
  var COLORS = ["#0b5cad", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7b83"];

  function datasets(series) {
    return Object.keys(series).map(function (name, i) {
      return { label: name, data: series[name], backgroundColor: COLORS[i % COLORS.length],
               borderColor: COLORS[i % COLORS.length], spanGaps: true };
    });
  }

  function staticCharts(root) {
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      if (canvas.dataset.drawn) return;
      var source = document.getElementById(canvas.dataset.chart);
      if (!source || !window.Chart) return;
      var data = JSON.parse(source.textContent);
      new window.Chart(canvas, {
        type: canvas.dataset.kind || "bar",
        data: { labels: data.labels, datasets: datasets(data.series) },
        options: { animation: false, responsive: true, maintainAspectRatio: false }
      });
      canvas.dataset.drawn = "1";
    });
  }

  function liveJobChart(canvas) {
    if (!window.Chart || !window.EventSource || canvas.dataset.drawn) return;
    canvas.dataset.drawn = "1";
    var chart = new window.Chart(canvas, {
      type: "line",
      data: { labels: [], datasets: [] },
      options: { animation: false, responsive: true, maintainAspectRatio: false,
                 scales: { x: { title: { display: true, text: "epoch" } } } }
    });
    var status = document.getElementById("job-status");
    var progress = document.getElementById("job-progress");
    var latest = document.getElementById("job-latest");
    var source = new EventSource(canvas.dataset.live);

    function addPoint(data) {
      var metrics = data.metrics || {};
      var names = Object.keys(metrics);
      if (!names.length) return;
      var label = data.step && data.steps && data.step !== data.steps ? data.epoch + "." + data.step : String(data.epoch);
      chart.data.labels.push(label);
      var count = chart.data.labels.length;
      names.forEach(function (name) {
        var set = chart.data.datasets.find(function (d) { return d.label === name; });
        if (!set) {
          var color = COLORS[chart.data.datasets.length % COLORS.length];
          set = { label: name, data: [], borderColor: color, backgroundColor: color, spanGaps: true };
          chart.data.datasets.push(set);
        }
        while (set.data.length < count - 1) set.data.push(null);
        set.data.push(metrics[name]);
      });
      chart.update();
      canvas.dataset.points = String(count);
      latest.textContent = "Epoch " + data.epoch + (data.epochs ? " of " + data.epochs : "") + ": " +
        names.map(function (n) { return n + " " + Number(metrics[n]).toPrecision(4); }).join(", ");
    }

    source.addEventListener("progress", function (event) {
      var data = JSON.parse(event.data);
      if (progress && typeof data.progress === "number") progress.value = data.progress;
      addPoint(data);
    });
    source.addEventListener("status", function (event) {
      var data = JSON.parse(event.data);
      if (status) {
        status.textContent = data.status;
        status.className = "status status-" + data.status;
      }
      if (["succeeded", "failed", "cancelled"].indexOf(data.status) >= 0) {
        source.close();
        if (progress && data.status === "succeeded") progress.value = 1;
      }
    });
  }

  function init(root) {
    staticCharts(root);
    root.querySelectorAll("canvas[data-live]").forEach(liveJobChart);
  }

  document.addEventListener("DOMContentLoaded", function () {
    init(document);
    if (window.htmx) window.htmx.onLoad(function (element) { if (element.querySelectorAll) init(element); });
  });
})();
