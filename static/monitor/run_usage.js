// A live run's resource chart follows the run: every few seconds while the
// run is queued or running and the tab is visible, then once more at its end.
(function () {
  "use strict";
  const box = document.querySelector("[data-run-usage]");
  if (!box || box.dataset.active !== "1") return;
  const url = box.dataset.runUsage;
  let timer = setInterval(refresh, 3000);

  async function refresh() {
    if (document.hidden) return;
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const data = await response.json();
      box.innerHTML = data.html;
      if (!data.active) {
        clearInterval(timer);
        timer = null;
      }
    } catch (err) {
      // A missed refresh is retried at the next tick.
    }
  }
})();
