// The search box's suggestions: as the reader types, up to 8 completions from /api/suggest
// (titles, authors, popular queries) in a list under the box. Arrow keys move through it, Enter
// searches the one chosen, Escape closes it. Without this script the form works as it is.
(function () {
  "use strict";
  var input = document.getElementById("q");
  if (!input || !input.form || !window.fetch) {
    return;
  }
  var form = input.form;
  var list = document.createElement("ul");
  list.id = "q-suggestions";
  list.className = "suggestions";
  list.setAttribute("role", "listbox");
  list.setAttribute("aria-label", "Suggestions");
  list.hidden = true;
  form.appendChild(list);
  input.setAttribute("role", "combobox");
  input.setAttribute("aria-autocomplete", "list");
  input.setAttribute("aria-controls", list.id);
  input.setAttribute("aria-expanded", "false");

  var LABELS = { title: "title", author: "author", popular: "popular" };
  var items = [];
  var active = -1;
  var timer = null;
  var asked = 0;

  function close() {
    list.hidden = true;
    list.textContent = "";
    items = [];
    active = -1;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
  }

  function mark(index) {
    active = index;
    items.forEach(function (item, i) {
      item.setAttribute("aria-selected", i === index ? "true" : "false");
    });
    if (index >= 0) {
      input.setAttribute("aria-activedescendant", items[index].id);
    } else {
      input.removeAttribute("aria-activedescendant");
    }
  }

  function choose(index) {
    input.value = items[index].getAttribute("data-text");
    close();
    form.submit();
  }

  function show(suggestions) {
    close();
    if (!suggestions.length) {
      return;
    }
    suggestions.forEach(function (suggestion, i) {
      var item = document.createElement("li");
      item.id = "q-suggestion-" + i;
      item.setAttribute("role", "option");
      item.setAttribute("aria-selected", "false");
      item.setAttribute("data-text", suggestion.text);
      item.setAttribute("data-kind", suggestion.kind);
      // Text, never markup: what the index holds is shown as it is.
      var text = document.createElement("span");
      text.className = "text";
      text.textContent = suggestion.text;
      var kind = document.createElement("span");
      kind.className = "kind";
      kind.textContent = LABELS[suggestion.kind] || "";
      item.appendChild(text);
      item.appendChild(kind);
      item.addEventListener("mousedown", function (event) {
        event.preventDefault();
        choose(i);
      });
      list.appendChild(item);
      items.push(item);
    });
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
  }

  function ask() {
    var typed = input.value;
    if (!typed.trim()) {
      close();
      return;
    }
    var mine = ++asked;
    fetch("/api/suggest?q=" + encodeURIComponent(typed), {
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        return response.ok ? response.json() : [];
      })
      .then(function (suggestions) {
        // Only the answer to the latest keystroke is shown.
        if (mine === asked && document.activeElement === input) {
          show(Array.isArray(suggestions) ? suggestions : []);
        }
      })
      .catch(function () {});
  }

  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(ask, 120);
  });

  input.addEventListener("keydown", function (event) {
    if (list.hidden || !items.length) {
      return;
    }
    if (event.key === "ArrowDown") {
      event.preventDefault();
      mark((active + 1) % items.length);
    } else if (event.key === "ArrowUp") {
      event.preventDefault();
      mark(active <= 0 ? items.length - 1 : active - 1);
    } else if (event.key === "Enter" && active >= 0) {
      event.preventDefault();
      choose(active);
    } else if (event.key === "Escape") {
      close();
    }
  });

  input.addEventListener("blur", function () {
    setTimeout(close, 150);
  });
})();
