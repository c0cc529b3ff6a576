// The admin's script editor: Tab and Shift-Tab indent and dedent (every
// selected line when the selection spans lines) instead of leaving the field;
// Enter keeps the current line's indentation, one level more after a colon.
// Escape, then Tab, leaves the field, so the keyboard is never trapped.
(function () {
  "use strict";
  const INDENT = "    ";

  function lineStartOf(value, pos) {
    return value.lastIndexOf("\n", pos - 1) + 1;
  }

  // Indent or dedent the lines from the one holding `start` to the one
  // holding `end`, keeping them selected.
  function shiftLines(area, dedent) {
    const { selectionStart: start, value } = area;
    const block = area.selectionEnd !== start;
    // A selection that ends right after a newline does not take the next line.
    let end = area.selectionEnd;
    if (end > start && value[end - 1] === "\n") end -= 1;
    const first = lineStartOf(value, start);
    const lines = value.slice(first, end).split("\n");
    let removedFirst = 0;
    const shifted = lines.map(function (line, i) {
      if (!dedent) return INDENT + line;
      const remove = line.startsWith(INDENT) ? INDENT.length : line.match(/^ */)[0].length;
      if (i === 0) removedFirst = remove;
      return line.slice(remove);
    });
    const text = shifted.join("\n");
    // A block stays selected, whole lines; a caret stays on its character.
    area.setRangeText(text, first, first + lines.join("\n").length, "select");
    if (!block) {
      area.selectionStart = area.selectionEnd = Math.max(first, start - removedFirst);
    }
  }

  function onKeyDown(event) {
    const area = event.target;
    const { selectionStart: start, selectionEnd: end, value } = area;
    if (["Shift", "Control", "Alt", "Meta"].includes(event.key)) return;
    if (event.key === "Escape") {
      area.dataset.tabLeaves = "1";
      return;
    }
    if (event.key === "Tab") {
      if (area.dataset.tabLeaves === "1") {
        delete area.dataset.tabLeaves;
        return; // the browser moves the focus on
      }
      event.preventDefault();
      const multiline = value.slice(start, end).includes("\n");
      if (event.shiftKey || multiline) {
        shiftLines(area, event.shiftKey);
      } else {
        area.setRangeText(INDENT, start, end, "end");
      }
    } else if (event.key === "Enter" && !event.shiftKey && !event.ctrlKey && !event.metaKey) {
      const lineStart = lineStartOf(value, start);
      const before = value.slice(lineStart, start);
      let indent = before.match(/^ */)[0];
      if (before.trimEnd().endsWith(":")) indent += INDENT;
      event.preventDefault();
      area.setRangeText("\n" + indent, start, end, "end");
    }
    delete area.dataset.tabLeaves;
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("textarea.code-editor").forEach(function (area) {
      area.addEventListener("keydown", onKeyDown);
    });
  });
})();
