/* Draw every interactive figure of the page with vega-embed (served by the book).
 * Each <div class="gf-interactive"> holds its Vega-Lite specification in a
 * <script type="application/json" class="gf-spec"> block (lib.interactive).
 * data-gf-state on the div says "ready" once drawn (the browser test waits for it). */
(function () {
  "use strict";
  function draw(el) {
    var block = el.querySelector("script.gf-spec");
    if (!block || el.dataset.gfState) { return; }
    el.dataset.gfState = "drawing";
    var target = document.createElement("div");
    target.className = "gf-vega";
    el.appendChild(target);
    var spec;
    try {
      spec = JSON.parse(block.textContent);
    } catch (err) {
      el.dataset.gfState = "failed";
      console.error("interactive figure " + el.id + ": bad specification: " + err);
      return;
    }
    vegaEmbed(target, spec, { actions: false, renderer: "svg" }).then(function (result) {
      var note = el.querySelector(".gf-interactive-note");
      if (note) { note.hidden = true; }
      el.gfView = result.view;
      el.dataset.gfState = "ready";
    }).catch(function (err) {
      el.dataset.gfState = "failed";
      console.error("interactive figure " + el.id + ": " + err);
    });
  }
  function drawAll() {
    document.querySelectorAll("div.gf-interactive").forEach(draw);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
})();
