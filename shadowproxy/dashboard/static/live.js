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
  // Each answer ends at once (the server holds no request open) and the EventSource asks again
  // after the server's `retry`: an error then is the normal end of an answer. Only when no answer
  // has come for a few seconds is the dashboard really unreachable.
  var lastAnswer = Date.now();
  events.addEventListener("open", function () { lastAnswer = Date.now(); });
  events.onerror = function () {
    if (events.readyState === EventSource.CLOSED || Date.now() - lastAnswer > 5000) {
      status.textContent = "disconnected, reconnecting…";
    }
  };
})();
