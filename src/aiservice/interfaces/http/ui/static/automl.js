/* The AutoML study page swaps its part of the page in as the study runs (htmx polling); a chart whose
   canvas is swapped out is destroyed first, or Chart.js would keep every old one alive. */
(function () {
  "use strict";
  document.addEventListener("htmx:beforeCleanupElement", function (event) {
    var element = event.target;
    if (element && element.tagName === "CANVAS" && window.Chart) {
      var chart = window.Chart.getChart(element);
      if (chart) chart.destroy();
    }
  });
})();
