"""`folio classify`'s tab on the web page at `/`: a text's label, each token coloured by its contribution
(POST /v1/classify)."""

from folio.serve.api import PageTab

TAB = PageTab(
    id="classify",
    title="Classify",
    select="cls-model",
    html="""
  <label>Model <select id="cls-model"></select></label>
  <textarea id="cls-text">A wonderful, moving film.</textarea>
  <button id="cls-run">Classify</button>
  <p id="cls-label"></p>
  <p id="cls-tokens"></p>
""",
    style="""
.token { padding: 0 .15rem; border-radius: .2rem; }
""",
    script="""
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
""",
)
