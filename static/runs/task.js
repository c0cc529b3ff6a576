// The task page's run form: typing a delay or a time chooses that way to
// start, so the radio need not be clicked first. Without this script the
// radio decides, and the server says when its value is missing.
(function () {
  "use strict";
  var form = document.getElementById("start-choice");
  if (!form) return;
  ["delay", "at"].forEach(function (name) {
    var input = form.querySelector("input[name=" + name + "]");
    var radio = form.querySelector("input[name=start][value=" + name + "]");
    if (!input || !radio) return;
    function choose() {
      radio.checked = true;
    }
    input.addEventListener("focus", choose);
    input.addEventListener("input", choose);
  });
})();
