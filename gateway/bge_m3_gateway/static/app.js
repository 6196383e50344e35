// The BGE-M3 playground: plain JavaScript, no build step, no external resources.
// It calls this gateway's own APIs: /info, /v1/m3/score, /v1/m3/embed, /tokenize, /v1/m3/explain
// and, when a cross-encoder is served, /v1/rerank.
"use strict";

const SCORES = ["dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense"];
const MAX_SHARE_URL = 8000; // longer links break in browsers and chat tools
const CUT_PREVIEW = 2000; // characters of never-read text shown after a cut passage
const $ = (id) => document.getElementById(id);

let served = null; // the gateway's /info, read once
let apiKey = sessionStorage.getItem("bge-m3-api-key") || "";
let last = null; // the latest results, for the ColBERT view

class PageError extends Error {}

function setStatus(message, kind) {
  const box = $("status");
  box.textContent = message;
  box.className = kind || "";
}

function messageOf(body) {
  if (!body) return "";
  if (typeof body.error === "string") return body.error;
  if (body.error && body.error.message) return body.error.message;
  return body.message || body.detail || "";
}

async function api(path, body) {
  const headers = { "content-type": "application/json" };
  if (apiKey) headers.authorization = "Bearer " + apiKey;
  const init = body === undefined ? { headers } : { method: "POST", headers, body: JSON.stringify(body) };
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new PageError(`Cannot reach the gateway at ${location.origin}: is it running? (${error.message})`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (error) {
    data = null;
  }
  if (response.status === 401) {
    $("key-box").hidden = false;
    throw new PageError("This gateway asks for an API key: enter it in the field above and run again.");
  }
  if (!response.ok) {
    const reason = messageOf(data) || response.statusText || "no reason given";
    throw new PageError(`The gateway refused ${path} (${response.status}): ${reason}`);
  }
  return data;
}

// ---- the form and the URL ----

function addPassage(text) {
  const item = $("passage-item").content.firstElementChild.cloneNode(true);
  item.querySelector("textarea").value = text || "";
  item.querySelector(".remove").addEventListener("click", () => {
    item.remove();
    numberPassages();
  });
  $("passages").appendChild(item);
  numberPassages();
}

function numberPassages() {
  document.querySelectorAll("#passages textarea").forEach((area, index) => {
    area.setAttribute("aria-label", `passage ${index + 1}`);
  });
}

function optionalInt(id) {
  const raw = $(id).value.trim();
  if (!raw) return null;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 2) throw new PageError(`${$(id).labels[0].textContent.trim()} must be a whole number of 2 or more.`);
  return value;
}

function readForm() {
  const query = $("query").value;
  const passages = [...document.querySelectorAll("#passages textarea")].map((a) => a.value).filter((t) => t.trim());
  if (!query.trim()) throw new PageError("Enter a query.");
  if (!passages.length) throw new PageError("Add at least one passage with some text.");
  const weights = ["w-dense", "w-sparse", "w-colbert"].map((id) => Number($(id).value));
  if (weights.some((w) => !Number.isFinite(w) || w < 0)) throw new PageError("Weights must be numbers of 0 or more.");
  if (weights[0] + weights[1] <= 0) throw new PageError("The dense and sparse weights must not both be 0.");
  return { query, passages, weights, queryLength: optionalInt("query-length"),
           passageLength: optionalInt("passage-length"), rankBy: $("rank-by").value };
}

function shareUrl(form) {
  const params = new URLSearchParams();
  params.set("q", form.query);
  form.passages.forEach((p) => params.append("p", p));
  params.set("w", form.weights.join(","));
  if (form.queryLength) params.set("ql", form.queryLength);
  if (form.passageLength) params.set("pl", form.passageLength);
  if (form.rankBy !== "colbert+sparse+dense") params.set("rank", form.rankBy);
  return `${location.pathname}?${params}`;
}

function fillFromUrl() {
  const params = new URLSearchParams(location.search);
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("key")) { // a key given in the fragment is kept for this tab and taken off the address
    apiKey = hash.get("key");
    sessionStorage.setItem("bge-m3-api-key", apiKey);
    history.replaceState(null, "", location.pathname + location.search);
  }
  $("query").value = params.get("q") || "";
  const passages = params.getAll("p");
  (passages.length ? passages : ["", ""]).forEach(addPassage);
  const weights = (params.get("w") || "").split(",").map(Number);
  if (weights.length === 3 && weights.every(Number.isFinite)) {
    ["w-dense", "w-sparse", "w-colbert"].forEach((id, i) => { $(id).value = weights[i]; });
  }
  if (params.get("ql")) $("query-length").value = params.get("ql");
  if (params.get("pl")) $("passage-length").value = params.get("pl");
  if (params.get("rank")) $("rank-by").value = params.get("rank");
  return params.has("q");
}

// ---- running ----

async function run() {
  let form;
  try {
    form = readForm();
  } catch (error) {
    setStatus(error.message, "error");
    return;
  }
  $("run").disabled = true;
  setStatus(`Scoring ${form.passages.length} passage(s)…`, "busy");
  try {
    if (!served) served = await api("/info");
    const lengths = { max_query_length: form.queryLength, max_passage_length: form.passageLength };
    const [scores, queryEmbedding, passageEmbeddings, tokens, cross] = await Promise.all([
      api("/v1/m3/score", { query: form.query, passages: form.passages, weights: form.weights, ...lengths }),
      api("/v1/m3/embed", { texts: [form.query], mode: "query", max_length: form.queryLength,
                            return_dense: false, return_sparse: true }),
      api("/v1/m3/embed", { texts: form.passages, mode: "passage", max_length: form.passageLength,
                            return_dense: false, return_sparse: true }),
      api("/tokenize", { inputs: [form.query, ...form.passages] }),
      served.reranker_id ? api("/v1/rerank", { query: form.query, documents: form.passages }) : null,
    ]);
    last = { form, scores: scores.scores, query: queryEmbedding.data[0], passages: passageEmbeddings.data,
             tokens, cross: crossScores(cross, form.passages.length) };
    render(last);
    shareLink(form);
    await showAlignment(last.order[0]);
    const cut = last.passages.filter((p) => p.truncated).length + (last.query.truncated ? 1 : 0);
    setStatus(`Scored ${form.passages.length} passage(s).` + (cut ? ` ${cut} text(s) were cut to the max length: see the marks.` : ""));
  } catch (error) {
    setStatus(error instanceof PageError ? error.message : `Something went wrong: ${error.message}`, "error");
  } finally {
    $("run").disabled = false;
  }
}

function crossScores(response, count) {
  if (!response) return null;
  const scores = new Array(count).fill(null);
  response.results.forEach((r) => { scores[r.index] = r.relevance_score; });
  return scores;
}

function shareLink(form) {
  const url = shareUrl(form);
  const link = $("share");
  if (url.length > MAX_SHARE_URL) {
    link.hidden = true;
    return;
  }
  history.replaceState(null, "", url);
  link.href = url;
  link.hidden = false;
}

// ---- rendering ----

const fmt = (x) => (x === null || x === undefined ? "–" : x.toFixed(4));

function rankKey(form) {
  return form.rankBy === "cross-encoder" && !served.reranker_id ? "colbert+sparse+dense" : form.rankBy;
}

function scoreOf(result, index, key) {
  return key === "cross-encoder" ? result.cross[index] : result.scores[index][key];
}

function render(result) {
  const key = rankKey(result.form);
  result.order = result.scores.map((_, i) => i).sort((a, b) => scoreOf(result, b, key) - scoreOf(result, a, key));
  $("results").hidden = false;
  const body = $("score-table").querySelector("tbody");
  body.replaceChildren();
  result.order.forEach((index, rank) => {
    const row = document.createElement("tr");
    row.dataset.passage = index;
    const passage = result.passages[index];
    const cells = [String(rank + 1), `#${index + 1}`, ...SCORES.map((s) => fmt(result.scores[index][s])),
                   fmt(result.cross ? result.cross[index] : null), `${passage.tokens}${passage.truncated ? " (cut)" : ""}`];
    cells.forEach((text, column) => {
      const cell = document.createElement(column < 2 ? "th" : "td");
      if (column < 2) cell.scope = "row";
      if (column >= 2 && column < 7) cell.dataset.score = SCORES[column - 2];
      if (column === 7) cell.dataset.score = "cross-encoder";
      cell.textContent = text;
      row.appendChild(cell);
    });
    body.appendChild(row);
  });
  const queryTokens = result.tokens[0];
  const queryWeights = weightsById(result.query.sparse);
  const heat = $("query-heat");
  heat.replaceChildren(...heatSpans(result.form.query, queryTokens, result.query, queryWeights, null),
                       ...truncationNote(result.query));
  const cards = $("cards");
  cards.replaceChildren(...result.order.map((index) => card(result, index, queryTokens, queryWeights)));
}

function weightsById(sparse) {
  const map = new Map();
  sparse.indices.forEach((id, i) => map.set(id, sparse.values[i]));
  return map;
}

// The tokens the model read: a cut text keeps its first tokens and its closing </s>.
function keptTokens(tokens, embedding) {
  if (!embedding.truncated || tokens.length <= embedding.tokens) return tokens;
  return [...tokens.slice(0, embedding.tokens - 1), tokens[tokens.length - 1]];
}

function heatSpans(text, tokens, embedding, weights, shared) {
  const kept = embedding.truncated ? embedding.tokens - 1 : tokens.length; // content tokens read: [1, kept)
  const max = Math.max(1e-9, ...weights.values());
  const spans = [];
  const starts = tokens.map((token) => (token.special ? null : token.start));
  let position = 0;
  tokens.forEach((token, i) => {
    if (token.special) return;
    if (token.start > position) spans.push(document.createTextNode(text.slice(position, token.start)));
    const span = document.createElement("span");
    span.className = "tok";
    // Each character is drawn once: spans may overlap (XLM-R's lone "▁" piece has the span of the next
    // token's first character), so a token draws from where the text drawn so far ends up to where the
    // next token starts; a piece left with no character of its own is drawn empty, still hoverable.
    const from = Math.max(position, token.start);
    const next = starts.slice(i + 1).find((start) => start !== null);
    const to = next !== undefined && next >= from ? Math.min(token.stop, next) : token.stop;
    span.textContent = text.slice(from, Math.max(from, to));
    if (!span.textContent) span.classList.add("empty");
    span.dataset.id = token.id;
    span.tabIndex = 0;
    if (i >= kept) {
      span.classList.add("cut");
      span.title = "not read: past the max length";
    } else {
      const weight = weights.get(token.id) || 0;
      span.style.setProperty("--w", (0.85 * weight / max).toFixed(3));
      span.title = `lexical weight ${weight.toFixed(4)}`;
      if (shared && shared.has(token.id)) {
        span.classList.add("shared");
        span.title += `; shared with the query, adds ${shared.get(token.id).toFixed(4)} to the sparse score`;
      }
    }
    span.setAttribute("aria-label", `${span.textContent.trim() || "space"}: ${span.title}`);
    spans.push(span);
    position = Math.max(position, from, to);
  });
  if (position < text.length) {
    const rest = text.slice(position);
    const tail = document.createElement("span");
    tail.className = "cut-text";
    tail.textContent = rest.length > CUT_PREVIEW ? rest.slice(0, CUT_PREVIEW) + ` … (${(rest.length - CUT_PREVIEW).toLocaleString()} more characters)` : rest;
    tail.title = "never tokenized: past the longest input the model takes";
    spans.push(tail);
  }
  return spans;
}

function truncationNote(embedding, what) {
  if (!embedding.truncated) return [];
  const badge = document.createElement("span");
  badge.className = "badge truncated";
  badge.textContent = `truncated at ${embedding.tokens} tokens`;
  badge.title = `${what || "the query"} was cut to its max length; struck-through text was not read`;
  return [badge];
}

function card(result, index, queryTokens, queryWeights) {
  const passage = result.passages[index];
  const weights = weightsById(passage.sparse);
  const shared = new Map();
  for (const [id, weight] of queryWeights) {
    if (weights.has(id)) shared.set(id, weight * weights.get(id));
  }
  const item = document.createElement("li");
  item.className = "card";
  item.dataset.passage = index;
  const title = document.createElement("h3");
  title.textContent = `Passage #${index + 1}`;
  const meta = document.createElement("p");
  meta.className = "scores";
  const s = result.scores[index];
  meta.textContent = `all three ${fmt(s["colbert+sparse+dense"])} · dense ${fmt(s.dense)} · sparse ${fmt(s.sparse)} · ` +
    `ColBERT ${fmt(s.colbert)}` + (result.cross ? ` · cross-encoder ${fmt(result.cross[index])}` : "") +
    ` · ${passage.tokens} tokens`;
  meta.append(...truncationNote(passage, `passage #${index + 1}`));
  const heat = document.createElement("div");
  heat.className = "heat";
  heat.append(...heatSpans(result.form.passages[index], result.tokens[index + 1], passage, weights, shared));
  const sharedBox = document.createElement("div");
  sharedBox.className = "shared-list";
  const total = [...shared.values()].reduce((a, b) => a + b, 0);
  const heading = document.createElement("p");
  heading.textContent = shared.size
    ? `Tokens shared with the query (their products add up to the sparse score, ${total.toFixed(4)}):`
    : "No token with a lexical weight is shared with the query.";
  const list = document.createElement("ul");
  const names = new Map(queryTokens.filter((t) => !t.special).map((t) => [t.id, result.form.query.slice(t.start, t.stop)]));
  [...shared.entries()].sort((a, b) => b[1] - a[1]).forEach(([id, contribution]) => {
    const li = document.createElement("li");
    li.dataset.token = id;
    li.textContent = `“${(names.get(id) || String(id)).trim()}” +${contribution.toFixed(4)}`;
    list.appendChild(li);
  });
  sharedBox.append(heading, list);
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "Show its ColBERT alignment";
  button.addEventListener("click", () => showAlignment(index).catch((error) => setStatus(error.message, "error")));
  item.append(title, meta, heat, sharedBox, button);
  return item;
}

// ---- ColBERT ----

function tokenLabel(token, text) {
  return token.special ? token.text : JSON.stringify(text.slice(token.start, token.stop));
}

async function showAlignment(index) {
  const { form } = last;
  const explained = await api("/v1/m3/explain", { query: form.query, passage: form.passages[index],
    max_query_length: form.queryLength, max_passage_length: form.passageLength });
  const queryTokens = keptTokens(last.tokens[0], explained.query);
  const passageTokens = keptTokens(last.tokens[index + 1], explained.passage);
  const { rows, cols, similarity, best, best_similarity: bestSimilarity, score } = explained.colbert;
  $("alignment").hidden = false;
  $("alignment").dataset.passage = index;
  $("alignment-summary").textContent = `Query against passage #${index + 1}: ${rows} query vectors, ${cols} passage ` +
    `vectors; the ColBERT score is the mean of each query token's best similarity, ${score.toFixed(4)}.`;
  const body = $("alignment-table").querySelector("tbody");
  body.replaceChildren();
  for (let i = 0; i < rows; i++) {
    const row = document.createElement("tr");
    const q = queryTokens[i + 1];
    const p = passageTokens[best[i] + 1];
    [q ? tokenLabel(q, form.query) : `#${i + 1}`, p ? tokenLabel(p, form.passages[index]) : `#${best[i] + 1}`,
     bestSimilarity[i].toFixed(4)].forEach((text) => {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.appendChild(cell);
    });
    body.appendChild(row);
  }
  drawHeatmap(rows, cols, similarity, queryTokens, passageTokens, form.query, form.passages[index]);
}

function drawHeatmap(rows, cols, similarity, queryTokens, passageTokens, query, passage) {
  const canvas = $("heatmap");
  const cell = Math.max(2, Math.min(16, Math.floor(1100 / Math.max(cols, 1))));
  canvas.width = Math.max(1, cols * cell);
  canvas.height = Math.max(1, rows * cell);
  canvas.setAttribute("aria-label", `heat map of ${rows} query tokens by ${cols} passage tokens; ` +
                                    "the table above gives each query token's best match");
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const value = Math.max(0, similarity[r * cols + c]);
      context.fillStyle = `rgba(11, 92, 173, ${value.toFixed(3)})`;
      context.fillRect(c * cell, r * cell, cell, cell);
    }
  }
  const tip = $("heatmap-tip");
  canvas.onmousemove = (event) => {
    const box = canvas.getBoundingClientRect();
    const c = Math.floor((event.clientX - box.left) / cell);
    const r = Math.floor((event.clientY - box.top) / cell);
    if (r < 0 || c < 0 || r >= rows || c >= cols) {
      tip.hidden = true;
      return;
    }
    const q = queryTokens[r + 1];
    const p = passageTokens[c + 1];
    tip.textContent = `${q ? tokenLabel(q, query) : r + 1} × ${p ? tokenLabel(p, passage) : c + 1}: ` +
                      similarity[r * cols + c].toFixed(4);
    tip.style.left = `${event.clientX + 12}px`;
    tip.style.top = `${event.clientY + 12}px`;
    tip.hidden = false;
  };
  canvas.onmouseleave = () => { tip.hidden = true; };
}

// ---- start ----

document.addEventListener("DOMContentLoaded", () => {
  $("add-passage").addEventListener("click", () => addPassage(""));
  $("api-key").value = apiKey;
  $("api-key").addEventListener("change", () => {
    apiKey = $("api-key").value.trim();
    sessionStorage.setItem("bge-m3-api-key", apiKey);
  });
  $("form").addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  if (fillFromUrl()) run();
});
