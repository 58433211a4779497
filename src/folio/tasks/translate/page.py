"""`folio translate`'s tab on the web page at `/`: a translation and its attention grid (POST /v1/translate)."""

from folio.serve.api import PageTab

TAB = PageTab(
    id="translate",
    title="Translate",
    select="tr-model",
    html="""
  <label>Model <select id="tr-model"></select></label>
  <input type="text" id="tr-text" value="">
  <label>Beam <input id="tr-beam" type="number" min="1" max="16" value="5"></label>
  <button id="tr-run">Translate</button>
  <p id="tr-out"></p>
  <div id="tr-attention"></div>
""",
    style="""
table.attention td { width: 1.4rem; height: 1.4rem; padding: 0; }
table.attention th { font-weight: normal; font-size: .8rem; }
table.attention th.col { writing-mode: vertical-rl; }
""",
    script="""
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
""",
)
