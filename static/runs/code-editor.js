// Tab and Shift-Tab indent in the script editor instead of leaving the field;
// Enter keeps the current line's indentation.
(function () {
  "use strict";
  const INDENT = "    ";

  function onKeyDown(event) {
    const area = event.target;
    const { selectionStart: start, selectionEnd: end, value } = area;
    if (event.key === "Tab") {
      event.preventDefault();
      const lineStart = value.lastIndexOf("\n", start - 1) + 1;
      if (event.shiftKey) {
        const line = value.slice(lineStart);
        const remove = line.startsWith(INDENT) ? INDENT.length : line.match(/^ */)[0].length;
        area.setRangeText("", lineStart, lineStart + remove, "end");
        area.selectionStart = area.selectionEnd = Math.max(lineStart, start - remove);
      } else {
        area.setRangeText(INDENT, start, end, "end");
      }
    } else if (event.key === "Enter" && !event.shiftKey) {
      const lineStart = value.lastIndexOf("\n", start - 1) + 1;
      let indent = value.slice(lineStart, start).match(/^ */)[0];
      if (value.slice(lineStart, start).trimEnd().endsWith(":")) indent += INDENT;
      event.preventDefault();
      area.setRangeText("\n" + indent, start, end, "end");
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("textarea.code-editor").forEach(function (area) {
      area.addEventListener("keydown", onKeyDown);
    });
  });
})();
