// Keyboard shortcuts of the review queue: j/k move, r/f decide the current item, x toggles it.
(function () {
  "use strict";
  var items = Array.prototype.slice.call(document.querySelectorAll("#queue .item"));
  var index = 0;
  function select(i) {
    if (!items.length) { return; }
    index = Math.max(0, Math.min(items.length - 1, i));
    items.forEach(function (el, n) { el.classList.toggle("current", n === index); });
    items[index].scrollIntoView({ block: "nearest" });
  }
  function decide(label) {
    var button = items[index] && items[index].querySelector("form.decide button[value='" + label + "']");
    if (button) { button.click(); }
  }
  // Heatmaps cost a model pass each: load one only when its panel is opened.
  document.querySelectorAll("details.heatmap").forEach(function (panel) {
    panel.addEventListener("toggle", function () {
      var img = panel.querySelector("img[data-src]");
      if (panel.open && img && !img.getAttribute("src")) { img.src = img.dataset.src; }
    });
  });
  document.addEventListener("keydown", function (event) {
    var tag = event.target && event.target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") { return; }
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (event.key === "j") { select(index + 1); }
    else if (event.key === "k") { select(index - 1); }
    else if (event.key === "r") { decide("real"); }
    else if (event.key === "f") { decide("fake"); }
    else if (event.key === "x" && items[index]) {
      var box = items[index].querySelector("input[type=checkbox]");
      box.checked = !box.checked;
    } else if (event.key === "h" && items[index]) {
      var panel = items[index].querySelector("details.heatmap");
      if (panel) { panel.open = !panel.open; }
    } else { return; }
    event.preventDefault();
  });
  select(0);
})();
