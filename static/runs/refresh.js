// Dashboard, task list, task page and run list: while something shown is live
// (a queued or running run), fetch the page's live part again and swap it in;
// stop once nothing is. Without this script a reload shows the same truth.
(function () {
  "use strict";
  var region = document.getElementById("live-region");
  if (!region || !window.fetch) return;
  var note = document.querySelector("[data-live-note]");
  var VISIBLE_MS = 1500;
  var HIDDEN_MS = 15000; // a background tab needs no fresh progress bars
  var MAX_FAILURES = 20;
  var timer = null;
  var busy = false;
  var failures = 0;

  function isLive() {
    return region.dataset.live === "1" && failures < MAX_FAILURES;
  }

  function schedule(delay) {
    clearTimeout(timer);
    if (note) note.hidden = !isLive();
    if (!isLive()) return;
    timer = setTimeout(refresh, delay !== undefined ? delay : document.hidden ? HIDDEN_MS : VISIBLE_MS);
  }

  function refresh() {
    if (busy) return;
    busy = true;
    fetch(region.dataset.refresh, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        // A lapsed session answers with the login page: stop, a reload will ask.
        if (!response.ok || type.indexOf("json") < 0) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        failures = 0;
        // Keep the focus where it was when the user is on a button in here.
        var focused = document.activeElement && region.contains(document.activeElement);
        if (!focused) region.innerHTML = data.html;
        region.dataset.live = data.live ? "1" : "0";
      })
      .catch(function () {
        failures += 1;
      })
      .then(function () {
        busy = false;
        schedule();
      });
  }

  document.addEventListener("visibilitychange", function () {
    // Back to a visible tab: catch up at once rather than after the slow interval.
    if (!document.hidden) schedule(0);
  });
  schedule();
})();
