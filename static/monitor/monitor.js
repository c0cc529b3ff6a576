// The monitor page refreshes its sections while the tab is visible: the
// server renders them again (/monitor/live) and this swaps them in.
(function () {
  "use strict";
  const root = document.querySelector("[data-monitor-live]");
  if (!root) return;
  const url = root.dataset.monitorLive;
  const note = document.querySelector("[data-monitor-note]");
  // Host figures move quickly; history only every PROCESS_CHECK_INTERVAL.
  const every = 5000;
  let timer = null;
  let busy = false;

  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(response.status);
      const data = await response.json();
      for (const [name, html] of Object.entries(data.html)) {
        const section = root.querySelector(`[data-section="${name}"]`);
        if (section) section.innerHTML = html;
      }
      if (note) note.classList.remove("stale");
    } catch (err) {
      if (note) note.classList.add("stale");
    } finally {
      busy = false;
    }
  }

  function start() {
    if (timer === null) timer = setInterval(refresh, every);
  }
  function stop() {
    clearInterval(timer);
    timer = null;
  }
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      stop();
    } else {
      refresh();
      start();
    }
  });
  start();
})();
