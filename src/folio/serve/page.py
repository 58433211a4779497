"""The web page served at `/`: one self-contained HTML file, no build step, talking to the JSON API."""

PAGE = """<!doctype html>
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
  pre#gen-out { white-space: pre-wrap; background: #f8f8f8; padding: 1rem; min-height: 4rem; }
  .token { padding: 0 .15rem; border-radius: .2rem; }
  table.attention td { width: 1.4rem; height: 1.4rem; padding: 0; }
  table.attention th { font-weight: normal; font-size: .8rem; }
  table.attention th.col { writing-mode: vertical-rl; }
  .error { color: #b00; }
  #cap-view { position: relative; display: inline-block; }
  #cap-view img, #cap-view canvas { width: 256px; height: 256px; image-rendering: pixelated; display: block; }
  #cap-view canvas { position: absolute; left: 0; top: 0; }
  #cap-words span { cursor: pointer; padding: .1rem .3rem; margin-right: .2rem; border: 1px solid #ccc; border-radius: .2rem; }
  #cap-words span.active { background: #333; color: #fff; }
</style>
</head>
<body>
<h1>Folio</h1>
<nav>
  <button data-tab="generate" class="active">Generate</button>
  <button data-tab="classify">Classify</button>
  <button data-tab="translate">Translate</button>
  <button data-tab="caption">Caption</button>
</nav>

<section id="generate" class="active">
  <label>Model <select id="gen-model"></select></label>
  <textarea id="gen-prompt">ROMEO:</textarea>
  <label>Temperature <input id="gen-temperature" type="range" min="0.1" max="2" step="0.1" value="0.8">
    <span id="gen-temperature-value">0.8</span></label>
  <label>Top-p <input id="gen-top-p" type="range" min="0.1" max="1" step="0.05" value="0.95">
    <span id="gen-top-p-value">0.95</span></label>
  <label>Characters <input id="gen-length" type="number" min="1" max="4096" value="300"></label>
  <button id="gen-run">Generate</button>
  <pre id="gen-out"></pre>
</section>

<section id="classify">
  <label>Model <select id="cls-model"></select></label>
  <textarea id="cls-text">A wonderful, moving film.</textarea>
  <button id="cls-run">Classify</button>
  <p id="cls-label"></p>
  <p id="cls-tokens"></p>
</section>

<section id="translate">
  <label>Model <select id="tr-model"></select></label>
  <input type="text" id="tr-text" value="">
  <label>Beam <input id="tr-beam" type="number" min="1" max="16" value="5"></label>
  <button id="tr-run">Translate</button>
  <p id="tr-out"></p>
  <div id="tr-attention"></div>
</section>

<section id="caption">
  <label>Model <select id="cap-model"></select></label>
  <input type="file" id="cap-file" accept="image/*">
  <label>Beam <input id="cap-beam" type="number" min="1" max="16" value="3"></label>
  <button id="cap-run">Describe</button>
  <p id="cap-out"></p>
  <p id="cap-words"></p>
  <div id="cap-view"><img id="cap-image" alt=""><canvas id="cap-canvas" width="256" height="256"></canvas></div>
</section>

<script>
const $ = (id) => document.getElementById(id);
document.querySelectorAll("nav button").forEach((b) => b.onclick = () => {
  document.querySelectorAll("nav button, section").forEach((e) => e.classList.remove("active"));
  b.classList.add("active");
  $(b.dataset.tab).classList.add("active");
});
for (const id of ["gen-temperature", "gen-top-p"]) $(id).oninput = () => $(id + "-value").textContent = $(id).value;

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

fetch("/v1/models").then((r) => r.json()).then(({data: models}) => {
  for (const [task, select] of [["lm", "gen-model"], ["classify", "cls-model"], ["translate", "tr-model"], ["caption", "cap-model"]]) {
    for (const m of models.filter((m) => m.task === task)) select && $(select).add(new Option(m.id, m.id));
  }
});

$("gen-run").onclick = async () => {
  const out = $("gen-out");
  out.classList.remove("error");
  delete out.dataset.done;  // set again only when this run's stream has ended
  out.textContent = $("gen-prompt").value;
  try {
    const response = await post("/v1/generate", {model: $("gen-model").value || null, prompt: $("gen-prompt").value,
      max_new_tokens: Number($("gen-length").value), temperature: Number($("gen-temperature").value),
      top_p: Number($("gen-top-p").value)});
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf("\\n\\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = event.split("\\n").find((line) => line.startsWith("data: "));
        if (!data) continue;
        if (event.startsWith("event: error")) throw new Error(JSON.parse(data.slice(6)).detail);
        if (!event.startsWith("event:")) out.textContent += JSON.parse(data.slice(6)).text;
      }
    }
    out.dataset.done = "true";
  } catch (error) { fail(out, error); }
};

$("cls-run").onclick = async () => {
  const label = $("cls-label"), tokens = $("cls-tokens");
  label.classList.remove("error");
  tokens.innerHTML = "";  // an error must not leave the last text's colours standing
  try {
    const {results: [r]} = await (await post("/v1/classify", {model: $("cls-model").value || null,
      texts: [$("cls-text").value], explain: true})).json();
    label.textContent = `${r.label} (${r.probability.toFixed(3)})`;
    const scale = Math.max(...r.scores.map(Math.abs)) || 1;
    r.tokens.forEach((token, i) => {
      const span = document.createElement("span");
      const s = r.scores[i] / scale;
      span.className = "token";
      span.textContent = token + " ";
      span.title = r.scores[i].toFixed(4);
      span.style.background = s >= 0 ? `rgba(0,160,0,${s})` : `rgba(200,0,0,${-s})`;
      tokens.appendChild(span);
    });
  } catch (error) { fail(label, error); }
};

$("tr-run").onclick = async () => {
  const out = $("tr-out"), grid = $("tr-attention");
  out.classList.remove("error");
  grid.innerHTML = "";
  try {
    const {results: [r]} = await (await post("/v1/translate", {model: $("tr-model").value || null,
      texts: [$("tr-text").value], beam_size: Number($("tr-beam").value), attention: true})).json();
    out.textContent = r.translation;
    if (!r.attention) return;
    const table = document.createElement("table");
    table.className = "attention";
    const head = table.insertRow();
    head.insertCell().textContent = "";
    for (const s of r.source_tokens) { const th = document.createElement("th"); th.className = "col"; th.textContent = s; head.appendChild(th); }
    r.attention.forEach((row, i) => {
      const tr = table.insertRow();
      const th = document.createElement("th"); th.textContent = r.target_tokens[i] ?? ""; tr.appendChild(th);
      row.forEach((w) => { const td = tr.insertCell(); td.style.background = `rgba(40,60,200,${w})`; td.title = w; });
    });
    grid.appendChild(table);
  } catch (error) { fail(out, error); }
};

function showAttention(grid) {  // one word's (g × g) weights as a translucent layer over the image
  const canvas = $("cap-canvas"), context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  if (!grid) return;
  const g = grid.length, top = Math.max(...grid.flat()) || 1;
  const edge = (i) => Math.round(i * canvas.width / g);  // whole pixels: overlapping cells would draw dark seams
  grid.forEach((row, y) => row.forEach((w, x) => {
    context.fillStyle = `rgba(0,0,0,${0.75 * (1 - w / top)})`;
    context.fillRect(edge(x), edge(y), edge(x + 1) - edge(x), edge(y + 1) - edge(y));
  }));
}

$("cap-run").onclick = async () => {
  const out = $("cap-out"), words = $("cap-words"), file = $("cap-file").files[0];
  out.classList.remove("error");
  words.innerHTML = "";
  showAttention(null);
  if (!file) { out.textContent = "choose an image first"; return; }
  try {
    const data = await new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(new Error("cannot read " + file.name));
      reader.readAsDataURL(file);
    });
    $("cap-image").src = data;
    const {results: [r]} = await (await post("/v1/caption", {model: $("cap-model").value || null,
      images: [data.slice(data.indexOf(",") + 1)], beam_size: Number($("cap-beam").value), attention: true})).json();
    out.textContent = r.caption;
    r.words.forEach((word, i) => {
      const span = document.createElement("span");
      span.textContent = word;
      span.onclick = () => {
        words.querySelectorAll("span").forEach((s) => s.classList.remove("active"));
        span.classList.add("active");
        showAttention(r.attention[i]);
      };
      words.appendChild(span);
    });
    words.firstChild?.click();
  } catch (error) { fail(out, error); }
};
</script>
</body>
</html>
"""
