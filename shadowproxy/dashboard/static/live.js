// shadowproxy dashboard: swap in the report as the server pushes it (server-sent events).
(function () {
  "use strict";
  var main = document.getElementById("report");
  var status = document.createElement("div");
  status.id = "live-status";
  status.className = "meta";
  status.textContent = "connecting…";
  document.body.insertBefore(status, main);

  function openExamples() {
    var ids = {};
    main.querySelectorAll("details.example[open]").forEach(function (d) { ids[d.dataset.id] = true; });
    return ids;
  }

  var events = new EventSource("events");
  events.addEventListener("report", function (ev) {
    var data = JSON.parse(ev.data);
    var open = openExamples();
    main.innerHTML = data.html;
    main.querySelectorAll("details.example").forEach(function (d) {
      if (open[d.dataset.id]) { d.open = true; }
    });
    status.textContent = "live · " + data.used + " records · verdict " + data.verdict +
      " · updated " + new Date().toLocaleTimeString();
    status.dataset.version = String(data.version);
  });
  events.onerror = function () { status.textContent = "disconnected, reconnecting…"; };
})();
