"""`folio lm`'s tab on the web page at `/`: text generation, streamed as it is sampled (POST /v1/generate)."""

from folio.serve.api import PageTab

TAB = PageTab(
    id="generate",
    title="Generate",
    select="gen-model",
    html="""
  <label>Model <select id="gen-model"></select></label>
  <textarea id="gen-prompt">ROMEO:</textarea>
  <label>Temperature <input id="gen-temperature" type="range" min="0.1" max="2" step="0.1" value="0.8">
    <span id="gen-temperature-value">0.8</span></label>
  <label>Top-p <input id="gen-top-p" type="range" min="0.1" max="1" step="0.05" value="0.95">
    <span id="gen-top-p-value">0.95</span></label>
  <label>Characters <input id="gen-length" type="number" min="1" max="4096" value="300"></label>
  <button id="gen-run">Generate</button>
  <pre id="gen-out"></pre>
""",
    style="""
pre#gen-out { white-space: pre-wrap; background: #f8f8f8; padding: 1rem; min-height: 4rem; }
""",
    script="""
for (const id of ["gen-temperature", "gen-top-p"]) $(id).oninput = () => $(id + "-value").textContent = $(id).value;

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
""",
)
