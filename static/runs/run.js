// The run page: while the run is live, poll its live endpoint for state,
// progress and the log after the bytes already shown (a few times a second
// while the tab is seen, every few seconds while it is hidden or the run waits
// for its time); follow the end of the log unless the user scrolled up; load
// earlier parts of a long log on request. Once the run ends, ask once more a
// little later, for its retry or the runs it started next.
(function () {
  "use strict";
  var root = document.getElementById("run");
  if (!root || !window.fetch) return;

  var log = document.getElementById("log");
  var earlier = document.getElementById("log-earlier");
  var skipped = document.getElementById("log-skipped");
  var skippedBytes = document.getElementById("log-skipped-bytes");
  var sizeLabel = document.getElementById("log-size");
  var empty = document.getElementById("log-empty");
  var summary = document.getElementById("run-summary");
  var actions = document.getElementById("run-actions");
  var events = document.getElementById("run-events");
  var code = document.getElementById("run-code");
  var note = document.querySelector("[data-live-note]");

  // A line printed shows within this plus the time to store it (goal: half
  // a second). The endpoint renders nothing when only the log has moved.
  var VISIBLE_MS = 250;
  var HIDDEN_MS = 5000;
  var MAX_FAILURES = 30;
  // What follows a run's end (its retry, downstream runs) is written just
  // after the end itself: the page asks once more this long after it.
  var SETTLE_MS = 2000;
  // The page keeps at most this much log text; older text is dropped (while
  // following the end) and can be loaded again with "Load earlier".
  var MAX_CHARS = 2000000;

  var first = Number(root.dataset.logStart); // byte offset of the first text shown
  var offset = Number(root.dataset.logEnd); // byte offset after the last text shown
  var active = root.dataset.active === "1";
  // A run delayed until later: nothing moves for a while, so ask less often.
  var waiting = root.dataset.waiting === "1";
  // What the buttons were rendered for: "<status>:<cancel requested>".
  var state = root.dataset.state;
  // What the swapped parts were rendered from; the endpoint renders them
  // again only when it changes.
  var version = root.dataset.version || "";
  var failures = 0;
  var timer = null;
  // A page opened on an ended run has nothing to wait for.
  var settled = !active;
  // Text nodes of the log with the byte offset each starts at.
  var pieces = [];
  if (log.firstChild) pieces.push({ start: first, node: log.firstChild });

  function formatBytes(n) {
    var units = ["bytes", "KB", "MB", "GB", "TB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function atEnd() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 24;
  }

  function toEnd() {
    log.scrollTop = log.scrollHeight;
  }

  function showFirst() {
    earlier.hidden = first <= 0;
    skipped.hidden = first <= 0;
    skippedBytes.textContent = formatBytes(first);
  }

  function append(start, text) {
    if (!text) return;
    var node = document.createTextNode(text);
    log.appendChild(node);
    pieces.push({ start: start, node: node });
    if (empty) empty.hidden = true;
  }

  function trim() {
    var chars = 0;
    for (var i = 0; i < pieces.length; i++) chars += pieces[i].node.length;
    while (chars > MAX_CHARS && pieces.length > 1) {
      var gone = pieces.shift();
      chars -= gone.node.length;
      log.removeChild(gone.node);
      first = pieces[0].start;
    }
  }

  function reset(start, text) {
    pieces = [];
    log.textContent = "";
    first = start;
    append(start, text);
  }

  // The HTML last swapped into each part; the browser's own serialisation of
  // innerHTML differs from the server's, so compare with what came.
  var swapped = {};

  function swap(element, html) {
    if (!element || swapped[element.id] === html) return;
    swapped[element.id] = html;
    element.innerHTML = html;
  }

  function setText(id, text) {
    var element = document.getElementById(id);
    if (element && text != null && element.textContent !== text) element.textContent = text;
  }

  function apply(data) {
    var follow = atEnd();
    if (data.log.reset) reset(data.log.start, data.log.text);
    else append(data.log.start, data.log.text);
    offset = data.log.offset;
    if (follow) trim();
    showFirst();
    sizeLabel.textContent = formatBytes(data.log.size);
    if (data.html) {
      swap(summary, data.html.summary);
      swap(events, data.html.events);
      swap(code, data.html.code);
      // The buttons change only with the state; swapping them on every poll
      // could eat a click that lands between mousedown and mouseup.
      var next = data.status + ":" + data.cancel_requested;
      if (next !== state) {
        actions.innerHTML = data.html.actions;
        state = next;
      }
    }
    version = data.version;
    // The times that move with the clock alone, between two renders.
    setText("run-duration", data.duration);
    setText("wait-left", data.wait_left);
    active = data.active;
    waiting = data.waiting;
    if (follow) toEnd();
    return data.log.more;
  }

  function schedule(more) {
    clearTimeout(timer);
    var live = (active || more) && failures < MAX_FAILURES;
    if (note) note.hidden = !live;
    if (!live) {
      if (!settled && failures < MAX_FAILURES) {
        settled = true;
        timer = setTimeout(poll, SETTLE_MS);
      }
      return;
    }
    timer = setTimeout(poll, more ? 0 : document.hidden || waiting ? HIDDEN_MS : VISIBLE_MS);
  }

  function poll() {
    var more = false;
    var url = root.dataset.liveUrl + "?offset=" + offset;
    fetch(url + "&version=" + encodeURIComponent(version), {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        if (!response.ok || type.indexOf("json") < 0) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        failures = 0;
        more = apply(data);
      })
      .catch(function () {
        failures += 1;
      })
      .then(function () {
        schedule(more);
      });
  }

  earlier.addEventListener("click", function () {
    earlier.disabled = true;
    fetch(root.dataset.logUrl + "?before=" + first, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        // Keep the lines the user is reading where they are.
        var height = log.scrollHeight;
        var node = document.createTextNode(data.text);
        log.insertBefore(node, log.firstChild);
        pieces.unshift({ start: data.start, node: node });
        first = data.start;
        log.scrollTop += log.scrollHeight - height;
        showFirst();
      })
      .catch(function () {})
      .then(function () {
        earlier.disabled = false;
      });
  });

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && active) schedule(true);
  });

  toEnd();
  showFirst();
  schedule(false);
})();
