// Loaded after RequireJS and before the ipywidgets HTML manager (see _config.yml).
// 1. The manager resolves its icon fonts through RequireJS's baseUrl: point it at this folder
//    (the book's own copy, laid out as on a CDN), whatever the page's depth.
// 2. The manager typesets widget labels with MathJax 2's MathJax.Hub.Queue; the book serves
//    MathJax 3, so give it that one entry point (a no-op until MathJax 3 is ready).
(function () {
  var here = document.currentScript.src.replace(/[^/]*$/, "");
  require.config({ baseUrl: here + "widgets/" });

  function install() {
    var mj = window.MathJax;
    if (mj && !mj.Hub) {
      mj.Hub = {
        Queue: function (job) {
          var el = job && job[2];
          if (el && mj.typesetPromise) { mj.typesetPromise([el]).catch(function () {}); }
        },
      };
    }
  }
  install();
  document.addEventListener("DOMContentLoaded", install);
  window.addEventListener("load", install);
})();
