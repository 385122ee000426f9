// The console's one script: refreshes the list marked `data-refresh` every five seconds
// while its "Refresh" box is ticked and the page is visible. Nothing else needs it.
(function () {
  "use strict";
  var box = document.getElementById("auto-refresh");
  var target = document.querySelector("[data-refresh]");
  if (!box || !target) { return; }
  var busy = false;
  function refresh() {
    if (busy || !box.checked || document.hidden) { return; }
    busy = true;
    fetch(target.getAttribute("data-refresh"), {credentials: "same-origin"})
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (html) { if (html !== null) { target.innerHTML = html; } })
      .catch(function () { /* the next tick tries again */ })
      .then(function () { busy = false; });
  }
  window.setInterval(refresh, 5000);
}());
