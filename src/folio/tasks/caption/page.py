"""`folio caption`'s tab on the web page at `/`: an image's caption, and where the model looked for each word
(POST /v1/caption)."""

from folio.serve.api import PageTab

TAB = PageTab(
    id="caption",
    title="Caption",
    select="cap-model",
    html="""
  <label>Model <select id="cap-model"></select></label>
  <input type="file" id="cap-file" accept="image/*">
  <label>Beam <input id="cap-beam" type="number" min="1" max="16" value="3"></label>
  <button id="cap-run">Describe</button>
  <p id="cap-out"></p>
  <p id="cap-words"></p>
  <div id="cap-view"><img id="cap-image" alt=""><canvas id="cap-canvas" width="256" height="256"></canvas></div>
""",
    style="""
#cap-view { position: relative; display: inline-block; }
#cap-view img, #cap-view canvas { width: 256px; height: 256px; image-rendering: pixelated; display: block; }
#cap-view canvas { position: absolute; left: 0; top: 0; }
#cap-words span { cursor: pointer; padding: .1rem .3rem; margin-right: .2rem; border: 1px solid #ccc; border-radius: .2rem; }
#cap-words span.active { background: #333; color: #fff; }
""",
    script="""
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
""",
)
