// osa-events dashboard: live refresh. Every few seconds, the page's <main> is fetched again
// (the server answers a request with the X-Osa-Live header with that fragment only) and
// swapped in place. Pages work without this script; it only saves the reload.
(function () {
  "use strict";
  var main = document.querySelector("main[data-refresh]");
  var status = document.getElementById("live");
  if (!main || !status) {
    return;
  }
  var every = Math.max(1000, Number(main.getAttribute("data-refresh")) || 5000);
  var busy = false;

  // Someone typing in a filter or holding a selection keeps the page still.
  function interacting() {
    var active = document.activeElement;
    if (active && main.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)) {
      return true;
    }
    var selection = window.getSelection && window.getSelection();
    return !!(selection && !selection.isCollapsed && main.contains(selection.anchorNode));
  }

  function show(text, ok) {
    status.textContent = text;
    status.className = ok ? "live ok" : "live bad";
  }

  function refresh() {
    if (busy || document.hidden || interacting()) {
      return;
    }
    busy = true;
    fetch(window.location.href, {
      headers: { "X-Osa-Live": "1" },
      credentials: "same-origin",
      cache: "no-store",
    })
      .then(function (response) {
        if (response.status === 401) {
          show("logged out: reload to log in", false);
          return null;
        }
        return response.text().then(function (html) {
          main.innerHTML = html;
          if (response.ok) {
            // UTC, as every time on the pages: HH:MM:SS.
            show("live · " + new Date().toISOString().slice(11, 19), true);
          } else {
            show("live · the last refresh failed (" + response.status + ")", false);
          }
        });
      })
      .catch(function () {
        show("live · cannot reach the dashboard, retrying", false);
      })
      .then(function () {
        busy = false;
      });
  }

  show("live", true);
  window.setInterval(refresh, every);
})();
