"""The web page served at `/`: one self-contained HTML file, no build step, talking to the JSON API.

Its tabs are the tasks': each registered task with a `page` hook (`folio.tasks.TASKS`) brings a
`folio.serve.api.PageTab` (its section, style and script), and the page lists them in the registry's order, the
first one open. Here: the frame, the tab switching, the helpers every tab's script uses, and the model lists.
"""

from __future__ import annotations

import json
import textwrap

from folio.serve.api import PageTab
from folio.tasks import TASKS

HEAD = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Folio</title>
<link rel="icon" href="data:,">  <!-- no icon: stops the browser asking for /favicon.ico (a 404) -->
<style>
  body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  nav button { font-size: 1rem; padding: .4rem 1rem; border: 1px solid #999; background: #f4f4f4; cursor: pointer; }
  nav button.active { background: #333; color: #fff; }
  section { display: none; margin-top: 1rem; }
  section.active { display: block; }
  textarea, input[type=text] { width: 100%; font: inherit; box-sizing: border-box; }
  textarea { height: 6rem; }
  label { display: inline-block; margin: .5rem 1rem .5rem 0; }
  .error { color: #b00; }
"""

# What every tab's script may use: `$`, `post` and `fail` (see `PageTab`).
HELPERS = """const $ = (id) => document.getElementById(id);
document.querySelectorAll("nav button").forEach((b) => b.onclick = () => {
  document.querySelectorAll("nav button, section").forEach((e) => e.classList.remove("active"));
  b.classList.add("active");
  $(b.dataset.tab).classList.add("active");
});

async function post(path, body) {
  const response = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  if (!response.ok) {
    const text = await response.text();  // not always JSON: a proxy's or a crash's page is plain text
    let detail;
    try { detail = JSON.parse(text).detail; } catch { detail = text.trim() || `HTTP ${response.status}`; }
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return response;
}
function fail(element, error) { element.innerHTML = ""; element.textContent = error.message; element.classList.add("error"); }
"""


# The model lists: SELECTS (task → the id of its tab's <select>) is written in before this.
MODEL_LISTS = """fetch("/v1/models").then((r) => r.json()).then(({data: models}) => {
  for (const m of models) if (SELECTS[m.task]) $(SELECTS[m.task]).add(new Option(m.id, m.id));
});
"""


def registered_tabs() -> list[tuple[str, PageTab]]:
    """(task name, its tab) for every registered task that has one, in the registry's order."""
    return [(task.name, task.hook("page")) for task in TASKS.values() if task.page is not None]


def build_page(tabs: list[tuple[str, PageTab]]) -> str:
    """The page with these tabs, the first one open; each tab's model list is filled from `/v1/models`."""
    opened = [' class="active"'] + [""] * (len(tabs) - 1)
    selects = json.dumps({task: tab.select for task, tab in tabs})
    return "".join([
        HEAD, *(textwrap.indent(tab.style.strip("\n"), "  ") + "\n" for _, tab in tabs), "</style>\n</head>\n<body>\n<h1>Folio</h1>\n<nav>\n",
        *(f'  <button data-tab="{tab.id}"{o}>{tab.title}</button>\n' for (_, tab), o in zip(tabs, opened, strict=True)),
        "</nav>\n",
        *(f'\n<section id="{tab.id}"{o}>\n{tab.html.strip(chr(10))}\n</section>\n'
          for (_, tab), o in zip(tabs, opened, strict=True)),
        "\n<script>\n", HELPERS, f"\nconst SELECTS = {selects};\n", MODEL_LISTS,
        *(f"\n{tab.script.strip(chr(10))}\n" for _, tab in tabs), "</script>\n</body>\n</html>\n",
    ])
