// The live Trends panel: follows /live/trends (Server-Sent Events) and rebuilds the panel's lists
// in place when they change, with the same markup the server renders (templates/trends.html).
// Text is set with textContent, never as markup. EventSource reconnects on its own after a
// dropped connection; after an answer that is not a stream (a 503 when the instance has too many
// open, a 502 during a restart) it gives up, so the script opens a new one, waiting longer each
// time. An update that comes while keyboard focus is inside the panel waits until focus leaves
// it, so that a reader tabbing through the links does not lose their place. Without this script
// the panel is what the server rendered.
(function () {
  "use strict";
  var panel = document.getElementById("trends");
  var lists = panel && panel.querySelector(".live-lists");
  if (!lists || !window.EventSource || !window.JSON) {
    return;
  }
  var TREND_BOOKS = 3;

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  function bookItem(book, rank) {
    var item = element("li");
    var link = element("a", "title", String(book.title));
    link.href = "/books/" + encodeURIComponent(book.id) + "?from=trends&rank=" + rank;
    item.appendChild(link);
    item.appendChild(document.createTextNode(" "));
    item.appendChild(element("span", "by", "\u2014 " + String(book.author)));
    return item;
  }

  function trendItem(trend) {
    var item = element("li");
    var link = element("a", "trend", String(trend.query));
    link.href = "/?q=" + encodeURIComponent(trend.query);
    item.appendChild(link);
    item.appendChild(document.createTextNode(" "));
    var count = element("span", "trend-count", String(trend.count));
    count.title = "searches";
    count.appendChild(element("span", "visually-hidden", " searches"));
    item.appendChild(count);
    var books = Array.isArray(trend.books) ? trend.books.slice(0, TREND_BOOKS) : [];
    if (books.length) {
      var list = element("ul", "trend-books");
      books.forEach(function (book, rank) {
        list.appendChild(bookItem(book, rank));
      });
      item.appendChild(list);
    }
    return item;
  }

  // What the panel shows, to leave it alone (and screen readers quiet) when nothing changed.
  function signature(trends, books) {
    return JSON.stringify([
      trends.map(function (t) {
        return [String(t.query), String(t.count), (t.books || []).slice(0, TREND_BOOKS).map(function (b) { return String(b.id); })];
      }),
      books.map(function (b) { return String(b.id); }),
    ]);
  }

  function shown() {
    var trends = [];
    lists.querySelectorAll("ol.trends > li").forEach(function (item) {
      var link = item.querySelector("a.trend");
      var count = item.querySelector(".trend-count");
      trends.push({
        query: link ? link.textContent : "",
        count: count ? count.firstChild.textContent : "",
        books: Array.prototype.map.call(item.querySelectorAll(".trend-books a.title"), function (a) {
          return { id: (a.getAttribute("href").match(/^\/books\/(\d+)/) || [])[1] };
        }),
      });
    });
    var books = Array.prototype.map.call(lists.querySelectorAll("ol.viewed-books a.title"), function (a) {
      return { id: (a.getAttribute("href").match(/^\/books\/(\d+)/) || [])[1] };
    });
    return signature(trends, books);
  }

  var current = shown();

  var pending = null;

  function render(data) {
    if (lists.contains(document.activeElement)) {
      pending = data;
      return;
    }
    pending = null;
    var trends = Array.isArray(data.trends) ? data.trends : [];
    var books = Array.isArray(data.books) ? data.books : [];
    var next = signature(trends, books);
    if (next === current) {
      return;
    }
    current = next;
    var fresh = document.createDocumentFragment();
    if (!trends.length) {
      fresh.appendChild(element("p", "empty", lists.getAttribute("data-empty") || "Nothing is trending yet."));
    } else {
      var list = element("ol", "trends");
      list.setAttribute("aria-label", "Searched now");
      trends.forEach(function (trend) {
        list.appendChild(trendItem(trend));
      });
      fresh.appendChild(list);
    }
    if (books.length) {
      var heading = element("h3", "viewed-title", "Most viewed now");
      heading.id = "viewed-title";
      fresh.appendChild(heading);
      var viewed = element("ol", "viewed-books");
      viewed.setAttribute("aria-labelledby", "viewed-title");
      books.forEach(function (book, rank) {
        viewed.appendChild(bookItem(book, rank));
      });
      fresh.appendChild(viewed);
    }
    lists.textContent = "";
    lists.appendChild(fresh);
  }

  lists.addEventListener("focusout", function (event) {
    if (pending && !lists.contains(event.relatedTarget)) {
      render(pending);
    }
  });

  var FIRST_WAIT = 2000;
  var LONGEST_WAIT = 60000;
  var wait = FIRST_WAIT;

  function connect() {
    var source = new EventSource("/live/trends");
    source.addEventListener("trends", function (event) {
      wait = FIRST_WAIT;
      try {
        render(JSON.parse(event.data));
      } catch (e) {
        // A malformed event: the panel stays as it is.
      }
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        setTimeout(connect, wait);
        wait = Math.min(wait * 2, LONGEST_WAIT);
      }
    });
  }

  connect();
})();
