// The dashboard's only script of its own: how fresh the page is, and whether it is live.
// Pages are complete without it; htmx's SSE extension swaps the live region after each cycle.
(function () {
  "use strict";

  var base = null; // {age: seconds at render, at: performance.now() when it arrived}

  function format(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + " s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + " min " + (s % 60) + " s";
    var h = Math.floor(m / 60);
    if (h < 24) return h + " h " + (m % 60) + " min";
    return Math.floor(h / 24) + " d " + (h % 24) + " h";
  }

  function remember() {
    var age = document.querySelector(".freshness .age");
    base = age ? { age: parseFloat(age.getAttribute("data-age")), at: performance.now() } : null;
  }

  function tick() {
    var age = document.querySelector(".freshness .age");
    if (!age || !base) return;
    var seconds = base.age + (performance.now() - base.at) / 1000;
    age.textContent = format(seconds) + " ago";
    age.classList.toggle("stale", seconds > 30);
  }

  function state(text, cls) {
    var badge = document.getElementById("live-state");
    if (!badge) return;
    badge.textContent = text;
    badge.className = "live-state " + cls;
  }

  document.addEventListener("DOMContentLoaded", function () {
    remember();
    setInterval(tick, 1000);
  });
  document.body.addEventListener("htmx:afterSwap", remember);
  document.body.addEventListener("htmx:sseOpen", function () { state("live", "on"); });
  document.body.addEventListener("htmx:sseError", function () {
    state("reconnecting", "off");
  });
})();
