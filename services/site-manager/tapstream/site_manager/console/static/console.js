// Live pages without reload: every few seconds fetch this page again and swap its <main> in,
// unless the reader is typing or choosing (a focused field) or the tab is hidden. Nothing else.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !live.dataset.refresh) return;
  var every = parseInt(live.dataset.refresh, 10) || 3000;
  function busy() {
    var el = document.activeElement;
    return document.hidden || (el && /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName));
  }
  function refresh() {
    if (busy()) return setTimeout(refresh, every);
    fetch(location.href, { credentials: "same-origin", headers: { "X-Console-Refresh": "1" } })
      .then(function (r) {
        if (r.redirected || !r.ok) return null; // signed out or gone: leave the page as it is
        return r.text();
      })
      .then(function (html) {
        if (!html || busy()) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live");
        if (fresh) live.innerHTML = fresh.innerHTML;
        var updated = doc.getElementById("updated");
        var here = document.getElementById("updated");
        if (updated && here) here.textContent = updated.textContent;
        document.body.dataset.refreshed = String(Date.now());
      })
      .catch(function () { /* the site manager restarts: try again next time */ })
      .then(function () { setTimeout(refresh, every); });
  }
  setTimeout(refresh, every);
})();
