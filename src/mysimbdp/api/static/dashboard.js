// Live refresh: fetch the panel's HTML every few seconds and swap it in, without reloading.
(function () {
  "use strict";
  const panel = document.getElementById("panel");
  const stamp = document.getElementById("updated");
  const every = Number(stamp.dataset.refreshMs) || 2000;
  let busy = false;

  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const answer = await fetch(panel.dataset.panelUrl, { credentials: "same-origin", cache: "no-store" });
      if (answer.status === 401 || answer.status === 403) {
        window.location.assign("/login");
        return;
      }
      if (answer.ok) {
        panel.innerHTML = await answer.text();
        stamp.textContent = "updated " + new Date().toISOString().slice(11, 19);
        stamp.classList.remove("stale");
      } else {
        stamp.classList.add("stale");
      }
    } catch (err) {
      stamp.classList.add("stale"); // the platform is restarting or gone; try again next time
    } finally {
      busy = false;
    }
  }

  window.setInterval(refresh, every);
})();
