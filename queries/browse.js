"use strict";
// The label browser that `python -m queries browse` writes (queries/browse.py says why it
// is shaped so). data/index.js says what there is; a category's pairs and images and a
// page's labels are read when shown, as scripts: that works from file://, with no network.

window.LG = {
  waiting: new Map(),
  loaded(path, data) {
    const resolve = this.waiting.get(path);
    this.waiting.delete(path);
    if (resolve) resolve(data);
  },
};
const cache = new Map();

function load(name) {
  const path = `data/${name}.js`;
  if (!cache.has(path)) {
    cache.set(path, new Promise((resolve, reject) => {
      const script = document.createElement("script");
      LG.waiting.set(path, resolve);
      script.src = path;
      script.onload = () => script.remove();
      script.onerror = () => {
        cache.delete(path);
        reject(new Error(`cannot read ${path}: is the folder complete?`));
      };
      document.head.append(script);
    }));
  }
  return cache.get(path);
}

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const BOX = 400; // each image of a pair is drawn within BOX x BOX pixels
const GAP = 16;
const TRUTH = { true: ["#2ca02c", "correct"], false: ["#d62728", "wrong"], null: ["#f2c500", "no truth"] };
const state = { index: null, category: null, pages: [], page: 0, imagePage: 0, open: null };

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

const count = (n) => n.toLocaleString("en");
const share = (v) => (v === null ? "–" : v.toFixed(2));

function fail(error) {
  $("error").style.display = "block";
  $("error").textContent = String(error.message || error);
  console.error(error);
}

function confidenceColour(c) {
  return c === null ? "#888" : `hsl(${Math.round(120 * c)}, 85%, 42%)`;
}

function pager(node, pages, at, go) {
  const button = (text, to) => {
    const b = el("button", { type: "button" }, text);
    b.disabled = to < 0 || to >= pages;
    b.onclick = () => go(to);
    return b;
  };
  node.replaceChildren(button("‹ previous", at - 1), `page ${at + 1} of ${Math.max(pages, 1)}`, " ",
    button("next ›", at + 1));
}

function range(first, n) {
  return Array.from({ length: n }, (_, k) => first + k);
}

function showIndex(index) {
  state.index = index;
  $("summary").replaceChildren(
    el("span", { id: "total-pairs" }, count(index.pairs)), " pairs, ",
    el("span", { id: "total-labels" }, count(index.labels)), ` current labels in ${index.categories.length} `,
    `categories · store ${index.store} at snapshot ${index.snapshot} · written ${index.written}`);
  $("categories").replaceChildren(...index.categories.map((c) => {
    const row = el("tr", { class: "category", "data-name": c.name }, el("td", {}, c.name),
      el("td", { class: "n pairs" }, count(c.pairs)), el("td", { class: "n labels" }, count(c.labels)));
    row.onclick = () => choose(c);
    return row;
  }));
  $("charts").replaceChildren(...index.charts.map((chart) => el("a", { href: chart.file, target: "_blank",
    title: chart.about }, el("img", { src: chart.file, alt: chart.name }))));
  for (const id of ["hops", "colour"]) $(id).onchange = () => { showPairs(); draw(); };
  $("most").onchange = draw;
  $("confidence").oninput = draw;
  $("run").onchange = () => { state.page = 0; showPairs(); };
  if (index.categories.length) choose(index.categories[0]);
  else $("pairs-title").textContent = "No current labels in this store";
}

function choose(category) {
  state.category = category;
  state.page = state.imagePage = 0;
  state.open = null;
  $("pair-svg").replaceChildren();
  $("pair-title").textContent = "Pair";
  $("pair-shown").textContent = "open a pair on the left";
  $("legend").replaceChildren();
  for (const row of $("categories").children) row.classList.toggle("chosen", row.dataset.name === category.name);
  $("run").replaceChildren(el("option", { value: "" }, `every run (${count(category.pairs)} pairs)`),
    ...category.runs.map((r) => el("option", { value: r.run }, `${r.run} (${count(r.pairs)} pairs)`)));
  $("hops").replaceChildren(el("option", { value: "" }, "any"),
    ...category.hops.map((h) => el("option", { value: h }, String(h))));
  showPairs();
  showImages();
}

function filters() {
  const hops = $("hops").value === "" ? null : Number($("hops").value);
  const confidence = Number($("confidence").value);
  $("confidence-value").textContent = confidence.toFixed(2);
  const most = $("most").value === "" ? Infinity : Number($("most").value);
  return { hops, confidence, colour: $("colour").value, most };
}

async function showPairs() {
  const c = state.category;
  const runs = c.runs.filter((r) => $("run").value === "" || r.run === $("run").value);
  state.pages = runs.flatMap((r) => range(r.first, r.pages).map((page) => ({ page, run: r.run })));
  const { page, run } = state.pages[state.page];
  $("pairs-title").textContent = `Pairs of ${c.name}`;
  pager($("pairs-pager"), state.pages.length, state.page, (to) => { state.page = to; showPairs(); });
  const pairs = await load(`pairs/${page}`);
  if (state.category !== c || state.pages[state.page]?.page !== page) return; // another was asked for meanwhile
  const { hops } = filters();
  $("pairs").replaceChildren(...pairs.labels.map((n, i) => {
    const row = el("tr", { class: "pair" }, el("td", {}, pairs.src_image_id[i]), el("td", {}, pairs.tgt_image_id[i]),
      el("td", {}, run), el("td", { class: "n" }, count(n)),
      el("td", { class: "n" }, pairs.hops_min[i] === pairs.hops_max[i] ? String(pairs.hops_min[i])
        : `${pairs.hops_min[i]}–${pairs.hops_max[i]}`),
      el("td", { class: "n" }, share(pairs.confidence[i])), el("td", { class: "n" }, share(pairs.correct[i])));
    if (hops !== null && (hops < pairs.hops_min[i] || hops > pairs.hops_max[i])) row.classList.add("muted");
    const open = state.open;
    if (open && open.page === page && open.i === i) row.classList.add("chosen");
    row.onclick = () => openPair(page, run, i);
    return row;
  }));
}

async function openPair(page, run, i) {
  const [pairs, labels] = await Promise.all([load(`pairs/${page}`), load(`labels/${page}`)]);
  state.open = { page, run, i, pairs, labels };
  const shown = state.pages[state.page]?.page === page;
  [...$("pairs").children].forEach((row, k) => row.classList.toggle("chosen", shown && k === i));
  draw();
}

function place(w, h) {
  const scale = BOX / Math.max(w, h);
  return { scale, w: w * scale, h: h * scale };
}

function draw() {
  const open = state.open;
  if (!open) return;
  const { pairs, labels, i } = open;
  const { hops, confidence, colour, most } = filters();
  const src = place(pairs.src_w[i], pairs.src_h[i]);
  const tgt = place(pairs.tgt_w[i], pairs.tgt_h[i]);
  const x0 = src.w + GAP;
  const svg = $("pair-svg");
  const width = x0 + tgt.w;
  const height = Math.max(src.h, tgt.h);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const lines = [];
  const first = labels.start[i];
  const end = i + 1 < labels.start.length ? labels.start[i + 1] : labels.hops.length;
  const byTruth = colour === "truth" && labels.correct.slice(first, end).some((v) => v !== null);
  const kept = [];
  for (let k = first; k < end; k++) {
    const c = labels.confidence[k];
    if ((hops !== null && labels.hops[k] !== hops) || (confidence > 0 && (c === null || c < confidence))) continue;
    kept.push(k);
  }
  const step = Math.max(1, kept.length / most);  // labels come in source order: a stride spreads them
  for (let j = 0; j < kept.length; j += step) {
    const k = kept[Math.floor(j)];
    const c = labels.confidence[k];
    lines.push(el("svg:line", {
      class: "label", x1: labels.src_x[k] * src.scale, y1: labels.src_y[k] * src.scale,
      x2: x0 + labels.tgt_x[k] * tgt.scale, y2: labels.tgt_y[k] * tgt.scale,
      stroke: byTruth ? TRUTH[labels.correct[k]][0] : confidenceColour(c),
    }, el("svg:title", {}, `hops ${labels.hops[k]}, confidence ${share(c)}`)));
  }
  svg.replaceChildren(
    el("svg:image", { href: `data/img/${pairs.src_n[i]}.jpg`, x: 0, y: 0, width: src.w, height: src.h }),
    el("svg:image", { href: `data/img/${pairs.tgt_n[i]}.jpg`, x: x0, y: 0, width: tgt.w, height: tgt.h }),
    ...lines);
  $("pair-title").textContent = `${pairs.src_image_id[i]} → ${pairs.tgt_image_id[i]} (run ${open.run})`;
  $("pair-shown").replaceChildren(el("span", { id: "shown-lines" }, count(lines.length)), " of ",
    el("span", { id: "pair-labels" }, count(end - first)), " labels drawn");
  const truth = Object.values(TRUTH).map(([c, name]) => el("span", {}, el("i", { style: `background:${c}` }), name));
  const scale = [0, 0.5, 1].map((c) => el("span", {}, el("i", { style: `background:${confidenceColour(c)}` }),
    `confidence ${c}`));
  $("legend").replaceChildren(...(byTruth ? truth : scale));
}

async function showImages() {
  const { images } = state.category;
  pager($("gallery-pager"), images.pages, state.imagePage, (to) => { state.imagePage = to; showImages(); });
  $("gallery-title").textContent = `Images of ${state.category.name} (${count(images.count)})`;
  const at = images.first + state.imagePage;
  const page = await load(`images/${at}`);
  if (state.category.images.first + state.imagePage !== at) return;
  $("gallery").replaceChildren(...page.image_id.map((id, k) => el("figure", { class: "image" },
    el("img", { src: `data/img/${page.n[k]}.jpg`, alt: id, loading: "lazy" }),
    el("figcaption", {}, `${id}: ${count(page.as_source[k])} labels from, ${count(page.as_target[k])} to`))));
}

window.addEventListener("unhandledrejection", (event) => fail(event.reason));
load("index").then(showIndex).catch(fail);
