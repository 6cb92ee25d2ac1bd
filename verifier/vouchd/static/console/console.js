// Vouch console: live regions. Every element with data-live="URL" is refreshed from URL (a
// server-rendered HTML fragment of the same origin) every few seconds while the page is
// visible. No other script runs on the console's pages.
"use strict";
(function () {
  var PERIOD_MS = 3000;
  function refresh(region) {
    if (document.hidden) { return; }
    fetch(region.getAttribute("data-live"), {
      credentials: "same-origin",
      headers: { "Vouch-Live": "1" },
      cache: "no-store"
    }).then(function (response) {
      if (response.status === 401 || response.status === 403) {
        window.location.assign("/ui/sign-in");
        return null;
      }
      return response.ok ? response.text() : null;
    }).then(function (html) {
      if (html !== null && html !== region.getAttribute("data-shown")) {
        region.setAttribute("data-shown", html);
        region.innerHTML = html;
      }
    }).catch(function () { /* the next round tries again */ });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var regions = document.querySelectorAll("[data-live]");
    Array.prototype.forEach.call(regions, function (region) {
      window.setInterval(function () { refresh(region); }, PERIOD_MS);
    });
  });
}());
