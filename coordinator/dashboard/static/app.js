// The steering group's dashboard: reads released results through the coordinator's API with
// the user's bearer token (kept in sessionStorage only) and never computes a rate from a
// suppressed count. Code-list labels come from the results; only the page's own words are here.
"use strict";

// The page's own words, one file per language (i18n/sv.json, i18n/en.json), loaded before
// anything is shown; code-list labels come with the results.
const T = { sv: {}, en: {} };

async function loadTexts() {
  for (const lang of ["sv", "en"]) T[lang] = await (await fetch("/dashboard/i18n/" + lang + ".json")).json();
}
// Okabe–Ito: safe for the common forms of colour blindness.
const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"];
const SEQ = ["#eff3ff", "#c6dbef", "#9ecae1", "#6baed6", "#2171b5", "#08519c"];

const state = { lang: "sv", page: "overview", period: null, studies: [], layout: null, charts: [] };
const $ = (s) => document.querySelector(s);
const t = (k) => T[state.lang][k] || k;
const token = () => sessionStorage.getItem("samsyn-token");

async function api(path, accept) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + token(), Accept: accept || "application/json" } });
  if (r.status === 401 || r.status === 403) throw Object.assign(new Error(t("badToken")), { auth: true });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return accept && accept !== "application/json" ? r.blob() : r.json();
}

function label(table, dim, code) {
  const l = table.labels[dim] && table.labels[dim][code];
  return l ? l[state.lang] : code;
}

// periodName says a period in words: a calendar year as the year, the widest as the whole
// project, anything else as its dates.
function periodName(p, widest) {
  const y = p.from.slice(0, 4);
  if (p.from === y + "-01-01" && p.to === y + "-12-31") return y;
  const dates = fmtDate(p.from) + " – " + fmtDate(p.to);
  return widest ? t("wholeProject") + " (" + dates + ")" : dates;
}

function fmtDate(iso) {
  const d = new Date(iso.length === 10 ? iso + "T12:00:00" : iso);
  return d.toLocaleDateString(state.lang === "sv" ? "sv-SE" : "en-GB", { year: "numeric", month: "long", day: "numeric" });
}

// Released studies with their queries, newest first; periods are their distinct parameters.
async function loadStudies() {
  const list = await api("/api/v1/studies");
  const out = [];
  for (const s of list) {
    if (s.state !== "released") continue;
    out.push(await api("/api/v1/studies/" + s.id));
  }
  state.studies = out;
  const periods = new Map();
  for (const s of out) for (const q of s.queries) {
    if (q.params && q.params.from) periods.set(q.params.from + "|" + q.params.to, q.params);
  }
  const sel = $("#period");
  sel.innerHTML = "";
  // The widest period (the whole project) first, then the others in time order.
  const span = (p) => Date.parse(p.to) - Date.parse(p.from);
  const ordered = [...periods.values()].sort((a, b) => span(b) - span(a)).slice(0, 1)
    .concat([...periods.values()].sort((a, b) => span(b) - span(a)).slice(1).sort((a, b) => a.from.localeCompare(b.from)));
  ordered.forEach((p, i) => {
    const o = document.createElement("option");
    o.value = p.from + "|" + p.to;
    o.textContent = periodName(p, i === 0);
    sel.appendChild(o);
  });
  state.periodList = ordered;
  state.widest = ordered.length ? ordered[0].from + "|" + ordered[0].to : null;
  state.years = ordered.slice(1).filter((p) => p.from.endsWith("-01-01") && p.to.endsWith("-12-31") && p.from.slice(0, 4) === p.to.slice(0, 4))
    .map((p) => p.from + "|" + p.to);
  if (state.widest && !state.period) state.period = state.widest;
  if (state.period) sel.value = state.period;
}

// find returns {study, index} of the newest released result of query for the chosen period.
function find(query, period) {
  const [from, to] = (period || state.period || "|").split("|");
  for (const s of state.studies) {
    const i = s.queries.findIndex((q) => q.id === query && q.params.from === from && q.params.to === to);
    const r = (s.results || []).find((x) => x.query_index === i);
    if (i >= 0 && r) return { study: s.id, index: i, query, releasedAt: r.released_at, run: s.run || 0 };
  }
  return null;
}

async function result(query, period) {
  const f = find(query, period);
  if (!f) return null;
  const table = await api("/api/v1/studies/" + f.study + "/results/" + f.index);
  table.ref = f;
  return table;
}

function cell(table, dims) {
  return table.rows.find((r) => Object.entries(dims).every(([k, v]) => r[k] === v));
}

// share is released only when every count it needs is released.
function share(part, whole) {
  if (part.some((r) => !r || r.n === null) || !whole || whole.n === null || whole.n === 0) return null;
  return part.reduce((a, r) => a + r.n, 0) / whole.n;
}

// groupShare is the share of an outcome group (work_or_studies, ordinary_programme) among the
// exits of sel, from a targets_by_* table: the group is one released cell, not a sum of
// outcomes each of which may be withheld.
function groupShare(table, sel, group) {
  const total = cell(table, Object.assign({ outcome_group: "_total" }, sel));
  return { s: share([cell(table, Object.assign({ outcome_group: group }, sel))], total), total };
}

// missing reports a cell only associations absent from the result could fill: unknown, never 0.
function missing(...cells) { return cells.some((c) => c && c.missing); }

function fmtN(n, c) { return c && c.missing ? t("missing") : n === null || n === undefined ? t("suppressed") : String(n); }
// A share needs every count behind it; where one is withheld the share is "protected", not
// "fewer than 5" (the counts behind it may be in the hundreds).
function fmtPct(x, c) {
  if (c && c.missing) return t("missing");
  if (x === null) return t("protected");
  return (100 * x).toLocaleString(state.lang === "sv" ? "sv-SE" : "en-GB", { minimumFractionDigits: 1, maximumFractionDigits: 1 }) + " %";
}

// coverage says which associations a result lacks, when it lacks any.
function coverage(table) {
  const all = Object.keys(state.layout.associations);
  const have = (table.checks && table.checks.associations) || all;
  const lack = all.filter((a) => !have.includes(a));
  // The release's date: a standing study's latest run is the one shown.
  const when = table.ref && table.ref.releasedAt ? t("releasedOn").replace("{d}", fmtDate(table.ref.releasedAt)) + (table.ref.run ? " (" + t("runN").replace("{n}", table.ref.run) + ")" : "") + " " : "";
  if (!lack.length) return state.report ? el("p", { class: "coverage", text: when + t("coversAll").replace("{m}", all.length) }) : (when ? el("p", { class: "coverage", text: when.trim() }) : null);
  const names = lack.map((a) => (state.layout.associations[a] || {})[state.lang] || a).join(", ");
  return el("p", { class: "coverage", text: when + t("coverage").replace("{n}", have.length).replace("{m}", all.length).replace("{list}", names) });
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    // style through the CSSOM: the page's CSP allows no inline style attributes.
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
    else if (k === "style") e.style.cssText = v; else e.setAttribute(k, v);
  }
  for (const k of kids) if (k) e.appendChild(typeof k === "string" ? document.createTextNode(k) : k);
  return e;
}

function tableEl(headers, rows) {
  const tb = el("table");
  const head = el("tr");
  headers.forEach((h) => head.appendChild(el("th", { scope: "col", text: h })));
  tb.appendChild(el("thead", {}, head));
  const body = el("tbody");
  const seen = new Set();
  for (const r of rows) {
    const tr = el("tr");
    r.forEach((v, i) => {
      const sup = v === t("suppressed") || v === t("protected") || v === t("fewer10"), miss = v === t("missing");
      // Why a value is hidden, on hover and to screen readers: the legend's words.
      const why = v === t("suppressed") ? t("whySuppressed") : v === t("protected") ? t("whyProtected") : v === t("fewer10") ? t("whyFewer10") : miss ? t("whyMissing") : null;
      const td = el("td", { class: (i > 0 ? "num" : "") + (sup ? " suppressed" : "") + (miss ? " missing" : ""), text: v });
      if (why) { td.title = why; seen.add(v); }
      tr.appendChild(td);
    });
    body.appendChild(tr);
  }
  tb.appendChild(body);
  if (!seen.size) return tb;
  // A legend under the table says why each kind of hidden value is hidden.
  const why = { [t("suppressed")]: t("whySuppressed"), [t("protected")]: t("whyProtected"), [t("fewer10")]: t("whyFewer10"), [t("missing")]: t("whyMissing") };
  return el("div", {}, tb, el("p", { class: "legend-note muted" }, ...[...seen].map((v) => el("span", { text: "”" + v + "”: " + why[v] + " " }))));
}

async function download(ref, format) {
  const blob = await api("/api/v1/studies/" + ref.study + "/results/" + ref.index + "?format=" + format, "*/*");
  const a = el("a", { href: URL.createObjectURL(blob), download: ref.query + "." + format });
  document.body.appendChild(a);
  a.click();
  a.remove();
}

function downloads(table) {
  // Each pair says which table it downloads: a card may offer more than one.
  const title = table.title[state.lang];
  const d = el("div", { class: "downloads", role: "group", "aria-label": t("download") + ": " + title },
    el("span", { class: "muted", text: t("download") + " ”" + title + "”:" }));
  for (const f of ["csv", "xlsx"]) {
    const b = el("button", { type: "button", "data-download": f, "data-query": table.ref.query, text: f.toUpperCase(), "aria-label": t(f) + ": " + title });
    b.addEventListener("click", () => download(table.ref, f));
    d.appendChild(b);
  }
  return d;
}

function card(title, ...kids) {
  return el("section", { class: "card" }, el("h2", { text: title }), ...kids);
}

function chart(type, labels, datasets, opts) {
  const box = el("div", { class: "chart" });
  if (opts.height) box.style.height = opts.height + "px";
  const canvas = el("canvas", { role: "img", "aria-label": opts.aria || "" });
  box.appendChild(canvas);
  if (state.report) {
    // A printed page has no window to follow: draw at a fixed size, sharp on paper.
    canvas.width = 1000;
    canvas.height = opts.height || 320;
    canvas.style.width = "100%";
  }
  queueMicrotask(() => {
    state.charts.push(new Chart(canvas, { type, data: { labels, datasets },
      options: Object.assign({ responsive: !state.report, maintainAspectRatio: state.report, animation: false, devicePixelRatio: state.report ? 2 : undefined }, opts.options || {}) }));
    if (state.report) { canvas.style.width = "100%"; canvas.style.height = "auto"; }
  });
  return box;
}

const PAGES = {
  async overview(main) {
    const exits = await result("targets_by_association");
    const parts = await result("participants_by_association");
    if (!exits) { main.appendChild(card(t("overview"), el("p", { text: t("none") }))); return; }
    const assocs = Object.keys(state.layout.associations);
    const rows = [], wsShare = [], ordShare = [], names = [];
    for (const a of assocs) {
      const { s: s1, total } = groupShare(exits, { association: a }, "work_or_studies");
      const { s: s2 } = groupShare(exits, { association: a }, "ordinary_programme");
      const p = parts && cell(parts, { association: a, gender: "_total", age_band: "_total" });
      names.push(label(exits, "association", a));
      wsShare.push(s1 === null ? null : 100 * s1);
      ordShare.push(s2 === null ? null : 100 * s2);
      rows.push([label(exits, "association", a), fmtN(p ? p.n : null, p), fmtN(total ? total.n : null, total), fmtPct(s1, total), fmtPct(s2, total)]);
    }
    const line = (v, name, color) => ({ type: "line", label: name, data: names.map(() => v), borderColor: color, borderDash: [6, 4], pointRadius: 0, borderWidth: 2 });
    main.appendChild(card(t("overview"),
      chart("bar", names, [
        { label: t("workStudies"), data: wsShare, backgroundColor: PALETTE[0] },
        { label: t("ordinary"), data: ordShare, backgroundColor: PALETTE[1] },
        // Each target line in the colour of the bars it is the target of.
        line(30, t("target30"), PALETTE[0]), line(40, t("target40"), PALETTE[1]),
      ], { aria: t("workStudies"), options: { scales: { y: { min: 0, max: 100, title: { display: true, text: "%" } } } } }),
      coverage(exits),
      tableEl([t("association"), t("participants"), t("exits"), t("workStudies"), t("ordinary")], rows),
      downloads(exits), parts ? downloads(parts) : null));

    // Drill-down: one association's municipalities, from the same released targets by municipality.
    const mun = await result("targets_by_municipality");
    if (mun) {
      const pick = state.drill || assocs[0];
      const sel = el("select", { id: "drill", "aria-label": t("association") });
      for (const a of assocs) {
        const o = el("option", { value: a, text: label(exits, "association", a) });
        if (a === pick) o.selected = true;
        sel.appendChild(o);
      }
      sel.addEventListener("change", () => { state.drill = sel.value; render(); });
      const mrows = state.layout.municipalities.filter((m) => m.association === pick).map((m) => {
        const { s: a1, total } = groupShare(mun, { municipality: m.code }, "work_or_studies");
        const { s: a2 } = groupShare(mun, { municipality: m.code }, "ordinary_programme");
        return [m.label[state.lang], fmtN(total ? total.n : null, total), fmtPct(a1, total), fmtPct(a2, total)];
      });
      main.appendChild(card(t("drill"), el("label", {}, t("association") + " ", sel), coverage(mun),
        tableEl([t("municipality"), t("exits"), t("workStudies"), t("ordinary")], mrows), downloads(mun)));
    }

    // Progress against each association's plan: participants who started in the project period.
    const inflow = await result("inflow_by_quarter", state.widest);
    const plans = state.layout.plans || {};
    if (inflow && Object.keys(plans).length) {
      const prow = [], pnames = [], pshare = [];
      for (const a of assocs) {
        const c = cell(inflow, { association: a, quarter: "_total" });
        const plan = plans[a];
        const got = c && !c.missing && c.n !== null ? c.n : null;
        const sh = plan && got !== null ? got / plan : null;
        pnames.push(label(inflow, "association", a));
        pshare.push(sh === null ? null : 100 * sh);
        prow.push([label(inflow, "association", a), plan ? String(plan) : t("noPlan"), fmtN(got, c), plan ? fmtPct(sh, c) : "–"]);
      }
      main.appendChild(card(t("plan"), coverage(inflow),
        chart("bar", pnames, [{ label: t("ofPlan"), data: pshare, backgroundColor: PALETTE[2] }, line(100, "100 %", PALETTE[7])],
          { aria: t("plan"), options: { scales: { y: { min: 0, suggestedMax: 120, title: { display: true, text: "%" } } } } }),
        tableEl([t("association"), t("planned"), t("started"), t("ofPlan")], prow), downloads(inflow)));
    }

    // Year against year: the share to work or studies per association in each calendar year.
    const years = state.years || [];
    if (years.length >= 2) {
      const byYear = [];
      for (const y of years) byYear.push(await result("targets_by_association", y));
      const yrow = [], ydata = years.map(() => []);
      const ynames = [];
      for (const a of assocs.concat(["_total"])) {
        const vals = byYear.map((tb) => {
          if (!tb) return { s: null, c: null };
          const g = groupShare(tb, { association: a }, "work_or_studies");
          return { s: g.s, c: g.total };
        });
        ynames.push(label(exits, "association", a));
        vals.forEach((v, i) => ydata[i].push(v.s === null ? null : 100 * v.s));
        const last = vals[vals.length - 1].s, prev = vals[vals.length - 2].s;
        const ch = last !== null && prev !== null ? (100 * (last - prev)) : null;
        yrow.push([label(exits, "association", a)].concat(vals.map((v) => byYear[0] === null ? "–" : fmtPct(v.s, v.c)),
          [ch === null ? t("protected") : (ch >= 0 ? "+" : "−") + Math.abs(ch).toFixed(1).replace(".", state.lang === "sv" ? "," : ".") + " " + t("pp")]));
      }
      const ylabels = years.map((y) => y.slice(0, 4));
      main.appendChild(card(t("yearOnYear"),
        chart("bar", ynames, ydata.map((d, i) => ({ label: ylabels[i], data: d, backgroundColor: [PALETTE[4], PALETTE[0], PALETTE[3], PALETTE[2]][i % 4] }))
          .concat([Object.assign(line(30, t("target30"), PALETTE[5]), { data: ynames.map(() => 30) })]), { aria: t("yearOnYear"), options: { scales: { y: { min: 0, max: 100, title: { display: true, text: "%" } } } } }),
        tableEl([t("association")].concat(ylabels, [t("change").replace("2021–2022", ylabels[ylabels.length - 2] + "–" + ylabels[ylabels.length - 1])]), yrow)));
    }
  },

  async map(main) {
    const exits = await result("targets_by_municipality");
    if (!exits) { main.appendChild(card(t("map"), el("p", { text: t("none") }))); return; }
    // Coloured by a rate by default: raw counts would only show where most people live.
    const measure = state.mapMeasure || "work_or_studies";
    const value = (code) => {
      const total = cell(exits, { municipality: code, outcome_group: "_total" });
      if (total && total.missing) return undefined;
      if (measure === "exits") return total ? total.n : null;
      const { s } = groupShare(exits, { municipality: code }, measure);
      return s === null ? null : 100 * s;
    };
    const inside = state.layout.municipalities.filter((m) => m.association);
    const vals = inside.map((m) => value(m.code)).filter((v) => v !== null && v !== undefined);
    const lo = Math.min(...vals), hi = Math.max(...vals);
    const colour = (v) => SEQ[Math.min(SEQ.length - 1, Math.floor(((v - lo) / ((hi - lo) || 1)) * (SEQ.length - 1)))];
    const sel = el("select", { id: "measure", "aria-label": t("measure") });
    for (const [k, name] of [["work_or_studies", t("workStudies")], ["ordinary_programme", t("ordinary")], ["exits", t("exits")]]) {
      const o = el("option", { value: k, text: name });
      if (k === measure) o.selected = true;
      sel.appendChild(o);
    }
    sel.addEventListener("change", () => { state.mapMeasure = sel.value; render(); });
    const grid = el("div", { class: "tilemap", role: "group", "aria-label": t("map") });
    const rows = [];
    for (const m of state.layout.municipalities) {
      const name = m.label[state.lang];
      let text, attrs = { class: "tile", type: "button", style: "grid-row:" + (m.row + 1) + ";grid-column:" + (m.col + 1) };
      if (!m.association) {
        attrs.class += " outside";
        attrs["data-inside"] = "false";
        text = t("outside");
      } else {
        const v = value(m.code);
        attrs["data-inside"] = "true";
        attrs["data-suppressed"] = v === null ? "true" : "false";
        attrs["data-missing"] = v === undefined ? "true" : "false";
        if (v === null) attrs.class += " suppressed";
        else if (v === undefined) attrs.class += " missing";
        // White text on the two darkest blues (at least 5:1), dark text on the rest.
        else attrs.style += ";background:" + colour(v) + (SEQ.indexOf(colour(v)) > 3 ? ";color:#fff" : "");
        text = v === undefined ? t("missing") : v === null ? t("suppressed") : (measure === "exits" ? String(v) : fmtPct(v / 100));
        rows.push([name, text]);
      }
      // The count behind a rate, on hover and focus (the tile is a button).
      const tot = m.association ? cell(exits, { municipality: m.code, outcome_group: "_total" }) : null;
      attrs.title = name + ": " + text + (measure !== "exits" && tot && !tot.missing ? " (" + t("exits").toLowerCase() + ": " + fmtN(tot.n, tot) + ")" : "");
      grid.appendChild(el("button", attrs, el("span", { text: name }), el("span", { class: "v", text: m.association ? text : "" })));
    }
    const legend = el("div", { class: "legend" }, ...SEQ.map((c) => el("span", { class: "swatch", style: "background:" + c })),
      el("span", { class: "muted", text: (measure === "exits" ? lo + " – " + hi : lo.toFixed(0) + " – " + hi.toFixed(0) + " %") }));
    main.appendChild(card(t("map"), el("label", {}, t("measure") + " ", sel), coverage(exits), grid, legend,
      tableEl([t("dimension"), measure === "exits" ? t("exits") : measure === "ordinary_programme" ? t("ordinary") : t("workStudies")], rows), downloads(exits)));
  },

  async patterns(main) {
    const queries = ["targets_by_referral_party", "targets_by_method", "targets_by_gender_age", "targets_by_born_abroad",
      "targets_by_education", "targets_by_support_years"];
    let any = false;
    for (const q of queries) {
      const table = await result(q);
      if (!table) continue;
      any = true;
      const dims = table.dimensions.map((d) => d.name).filter((d) => d !== "outcome_group");
      const keys = [];
      for (const r of table.rows) {
        if (dims.some((d) => r[d] === "_total" || r[d] === "_other")) continue;
        const k = dims.map((d) => r[d]).join("|");
        if (!keys.includes(k)) keys.push(k);
      }
      const names = [], shares = [], rows = [];
      for (const k of keys) {
        const parts = k.split("|");
        const sel = Object.fromEntries(dims.map((d, i) => [d, parts[i]]));
        const { s, total } = groupShare(table, sel, "work_or_studies");
        const name = dims.map((d, i) => label(table, d, parts[i])).join(", ");
        names.push(name);
        shares.push(s === null ? null : 100 * s);
        rows.push([name, fmtN(total ? total.n : null, total), fmtPct(s, total)]);
      }
      main.appendChild(card(table.title[state.lang], coverage(table),
        chart("bar", names, [{ label: t("workStudies"), data: shares, backgroundColor: PALETTE[2] },
          { type: "line", label: t("target30"), data: names.map(() => 30), borderColor: PALETTE[2], borderDash: [6, 4], pointRadius: 0 }],
        { aria: table.title[state.lang], options: { indexAxis: "x", scales: { y: { min: 0, max: 100 } } } }),
        tableEl([t("dimension"), t("exits"), t("workStudies")], rows), downloads(table)));
    }
    const mia = await result("targets_by_method_association");
    if (mia) {
      any = true;
      const methods = [...new Set(mia.rows.map((r) => r.method).filter((m) => m !== "_total" && m !== "_other"))];
      const mrows = [];
      for (const a of Object.keys(state.layout.associations)) {
        mrows.push([label(mia, "association", a)].concat(methods.map((m) => {
          const { s, total } = groupShare(mia, { association: a, method: m }, "work_or_studies");
          return fmtPct(s, total);
        })));
      }
      main.appendChild(card(t("methodInAssoc"), coverage(mia),
        el("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": t("methodInAssoc") }, tableEl([t("association")].concat(methods.map((m) => label(mia, "method", m))), mrows)), downloads(mia)));
    }
    if (!any) main.appendChild(card(t("patterns"), el("p", { text: t("none") })));
  },

  async trends(main) {
    // Trends always run over every quarter of the project, whatever period is chosen.
    const inflow = await result("inflow_by_quarter", state.widest);
    const exits = await result("exits_by_quarter", state.widest);
    if (!inflow && !exits) { main.appendChild(card(t("trends"), el("p", { text: t("none") }))); return; }
    const base = inflow || exits;
    const quarters = [...new Set(base.rows.map((r) => r.quarter).filter((q) => q !== "_total" && q !== "_other"))].sort();
    const series = (tb) => quarters.map((q) => { const c = tb && cell(tb, { association: "_total", quarter: q }); return c ? c.n : null; });
    const a = series(inflow), b = series(exits);
    const keep = quarters.map((_, i) => a[i] !== null || b[i] !== null);
    const qs = quarters.filter((_, i) => keep[i]);
    const A = a.filter((_, i) => keep[i]), B = b.filter((_, i) => keep[i]);
    main.appendChild(card(t("trends"),
      chart("line", qs.map((q) => label(base, "quarter", q)), [
        { label: t("inflow"), data: A, borderColor: PALETTE[0], backgroundColor: PALETTE[0], spanGaps: false },
        { label: t("exits"), data: B, borderColor: PALETTE[1], backgroundColor: PALETTE[1], spanGaps: false }],
      { aria: t("trends"), options: { scales: { y: { beginAtZero: true } } } }),
      tableEl([t("quarter"), t("inflow"), t("exits")], qs.map((q, i) => [label(base, "quarter", q), fmtN(A[i]), fmtN(B[i])])),
      inflow ? downloads(inflow) : null, exits ? downloads(exits) : null));

    // Inflow per referral party and quarter, for the county or one association.
    const ref = await result("inflow_by_referral_party", state.widest);
    if (!ref) return;
    const who = state.refAssoc || "_total";
    const sel = el("select", { id: "refassoc", "aria-label": t("association") });
    for (const a of ["_total"].concat(Object.keys(state.layout.associations))) {
      const o = el("option", { value: a, text: a === "_total" ? t("county") : label(ref, "association", a) });
      if (a === who) o.selected = true;
      sel.appendChild(o);
    }
    sel.addEventListener("change", () => { state.refAssoc = sel.value; render(); });
    const rq = [...new Set(ref.rows.map((r) => r.quarter).filter((q) => q !== "_total" && q !== "_other"))].sort()
      .filter((q) => ref.rows.some((r) => r.quarter === q && r.association === "_total" && r.referral_party === "_total" && r.n));
    const parties = [...new Set(ref.rows.map((r) => r.referral_party).filter((p) => p !== "_total" && p !== "_other"))];
    const rseries = parties.map((p, i) => ({ label: label(ref, "referral_party", p), borderColor: PALETTE[i % 8], backgroundColor: PALETTE[i % 8], spanGaps: false,
      data: rq.map((q) => { const c = cell(ref, { association: who, referral_party: p, quarter: q }); return c && !c.missing ? c.n : null; }) }));
    const trows = rq.map((q) => [label(ref, "quarter", q)].concat(parties.map((p) => { const c = cell(ref, { association: who, referral_party: p, quarter: q }); return fmtN(c ? c.n : null, c); })));
    main.appendChild(card(t("byReferral"), el("label", {}, t("association") + " ", sel), coverage(ref),
      chart("line", rq.map((q) => label(ref, "quarter", q)), rseries, { aria: t("byReferral"), options: { scales: { y: { beginAtZero: true } } } }),
      tableEl([t("quarter")].concat(parties.map((p) => label(ref, "referral_party", p))), trows), downloads(ref)));
  },

  async whatworks(main) {
    const model = await result("what_works");
    const km = await result("time_to_work");
    const num = (x, d) => x.toLocaleString(state.lang === "sv" ? "sv-SE" : "en-GB", { minimumFractionDigits: d, maximumFractionDigits: d });
    if (!model) {
      main.appendChild(card(t("whatworks"), el("p", { text: t("noModel") })));
    } else {
      const terms = model.rows.filter((r) => r.term !== "(intercept)");
      const names = terms.map((r) => label(model, "term", r.term));
      const m = (model.checks && model.checks.model) || {};
      main.appendChild(card(t("forest"), coverage(model),
        el("p", { class: "note", text: t("modelNote").replace("{n}", m.n).replace("{e}", m.events).replace("{k}", (model.checks.associations || []).length) }),
        chart("bar", names, [
          { label: t("oddsRatio"), data: terms.map((r) => [r.or_lower, r.or_upper]), backgroundColor: PALETTE[4], borderColor: PALETTE[0], borderWidth: 1, barPercentage: 0.35 },
          { type: "line", label: t("oddsRatio"), data: terms.map((r) => r.odds_ratio), showLine: false, pointRadius: 4, pointStyle: "rectRot", borderColor: PALETTE[7], backgroundColor: PALETTE[7] },
          { type: "line", label: "1", data: terms.map(() => 1), borderColor: PALETTE[5], borderDash: [6, 4], pointRadius: 0, borderWidth: 2 }],
        { aria: t("forest"), height: 60 + 24 * terms.length, options: { indexAxis: "y", plugins: { legend: { display: false } },
          scales: { x: { type: "logarithmic", min: 0.1, max: 10 }, y: { ticks: { autoSkip: false } } } } }),
        tableEl([t("term"), t("oddsRatio"), t("pValue")], terms.map((r, i) => [names[i],
          num(r.odds_ratio, 2) + " (" + num(r.or_lower, 2) + "–" + num(r.or_upper, 2) + ")", r.p_value < 0.001 ? "< 0,001".replace(",", state.lang === "sv" ? "," : ".") : num(r.p_value, 3)])),
        downloads(model)));
    }
    if (!km) return;
    const strata = [...new Set(km.rows.map((r) => r.method))].filter((s) => s !== "_other");
    const months = [...Array(37).keys()];
    const datasets = [], rows = [];
    strata.forEach((s, i) => {
      const rs = km.rows.filter((r) => r.method === s);
      const name = label(km, "method", s);
      if (rs.length === 1 && rs[0].missing) { rows.push([name, t("missing"), t("missing"), t("missing")]); return; }
      if (rs.length === 1 && rs[0].suppressed) { rows.push([name, t("fewer10"), "–", "–"]); return; }
      // y at month m: the share left at the end of month m; unknown inside the pooled tail.
      const at = (m) => { const r = rs.find((r) => r.month_to === m && Number(r.month) === m); return r ? r.survival : null; };
      const tail = rs.find((r) => r.month_to !== Number(r.month));
      const after = (m) => { const v = at(m); return v !== null ? num(100 * v, 1) + " %" : tail && m >= Number(tail.month) ? t("protected") : "–"; };
      datasets.push({ label: name, data: months.map((m) => { const v = at(m); return v === null ? (tail && m === 36 ? 100 * tail.survival : null) : 100 * v; }),
        // Seven colours and, past them, dashes: no two methods look alike.
        stepped: true, spanGaps: false, borderColor: s === "_total" ? PALETTE[7] : PALETTE[i % 7], backgroundColor: s === "_total" ? PALETTE[7] : PALETTE[i % 7],
        borderDash: s !== "_total" && i >= 7 ? [6, 3] : [],
        borderWidth: s === "_total" ? 3 : 1.5, pointRadius: 0 });
      rows.push([name, String(rs[0].n), after(6), after(12)]);
    });
    main.appendChild(card(t("survivalTitle"), coverage(km), el("p", { class: "note", text: t("survivalNote") }),
      chart("line", months.map(String), datasets, { aria: t("survivalTitle"), options: { scales: { y: { min: 0, max: 100 }, x: { title: { display: true, text: t("months") } } } } }),
      tableEl([t("dimension"), t("atStart"), t("after6"), t("after12")], rows), downloads(km)));
  },

  async studies(main) {
    const list = await api("/api/v1/studies");
    const name = (a) => (state.layout.associations[a] || {})[state.lang] || a;
    const rows = [];
    for (const s of list) {
      const d = await api("/api/v1/studies/" + s.id);
      const decided = new Map((d.approvals || []).map((a) => [a.association, a]));
      const appr = (d.associations || []).map((a) => {
        const x = decided.get(a);
        if (!x) return name(a) + ": " + t("notDecided");
        if (d.revoked && d.revoked[a]) return name(a) + ": " + t("revoked") + " " + fmtDate(d.revoked[a]);
        return name(a) + ": " + t(x.decision) + (x.reason ? " (" + x.reason + ")" : "");
      }).join("; ");
      const prog = Object.entries(d.progress || {}).map(([a, p]) => name(a) + ": " + t(p.state) + (p.error ? " – " + p.error : "")).join("; ");
      const note = (d.transitions || []).map((x) => x.note).filter(Boolean).slice(-1)[0] || "";
      const standing = d.standing ? " (" + t("standingUntil").replace("{d}", fmtDate(d.standing.until)) + (d.run ? "; " + t("runN").replace("{n}", d.run) : "") + ")" : "";
      rows.push([s.title + standing, fmtDate(s.created_at || d.created_at || ""), t(s.state) + (note ? ": " + note : ""), appr || "–", prog || "–"]);
    }
    main.appendChild(card(t("studies"), tableEl([t("title2"), t("created"), t("state"), t("approvals"), t("progress")], rows)));
  },

  async nodes(main) {
    const nodes = await api("/api/v1/nodes");
    const seen = (iso) => new Date(iso).toLocaleString(state.lang === "sv" ? "sv-SE" : "en-GB", { dateStyle: "short", timeStyle: "short" });
    const mode = (n) => n.mode === "dial-out" ? t("modeDialOut") + (n.tunnel_since ? "" : " (" + t("tunnelDown") + ")") : t("modeListen");
    main.appendChild(card(t("nodes"), tableEl([t("association"), t("status"), t("connection"), t("lastSeen"), t("latency"), t("lastImport"), t("snapshot"), t("versions")],
      nodes.map((n) => [(state.layout.associations[n.association] || {})[state.lang] || n.association, t(n.status), mode(n), n.last_seen ? seen(n.last_seen) : "–", n.latency_ms.toFixed(1),
        n.last_import ? fmtDate(n.last_import) : "–", n.snapshot ? n.snapshot.slice(0, 12) : "–", n.schema_version ? "schema " + n.schema_version + ", " + t("catalog") + " " + n.catalog : "–"]))));
  },
};

async function render() {
  document.documentElement.lang = state.lang;
  document.querySelectorAll("[data-t]").forEach((e) => { e.textContent = t(e.dataset.t); });
  $("#lang").textContent = state.lang === "sv" ? "English" : "Svenska";
  [...$("#period").options].forEach((o, i) => { if (state.periodList && state.periodList[i]) o.textContent = periodName(state.periodList[i], i === 0); });
  document.querySelectorAll("#tabs button").forEach((b) => b.setAttribute("aria-selected", String(b.dataset.page === state.page)));
  state.charts.forEach((c) => c.destroy());
  state.charts = [];
  const main = $("#page");
  main.innerHTML = "";
  main.setAttribute("data-page", state.page);
  const pp = (state.periodList || []).find((x) => x.from + "|" + x.to === state.period);
  main.setAttribute("data-print", t("title") + " · " + t(state.page) + " · " + t("period") + ": " + (pp ? periodName(pp, state.period === state.widest) : ""));
  main.setAttribute("aria-busy", "true");
  try {
    await PAGES[state.page](main);
  } catch (e) {
    if (e.auth) { logout(); return; }
    main.appendChild(el("p", { class: "error", role: "alert", text: String(e.message || e) }));
  }
  main.setAttribute("aria-busy", "false");
  main.setAttribute("data-ready", String(Date.now()));
  const anyResult = state.studies.find((s) => (s.results || []).length);
  if (anyResult && !$("#help").dataset.loaded) {
    const r = anyResult.results[0];
    const table = await api("/api/v1/studies/" + anyResult.id + "/results/" + r.query_index);
    state.help = table.notes.help;
    $("#help").dataset.loaded = "1";
  }
  if (state.help) $("#help").textContent = state.help[state.lang];
}

function logout() {
  sessionStorage.removeItem("samsyn-token");
  $("#tabs").hidden = true;
  document.querySelectorAll(".controls .signed-in").forEach((e) => { e.hidden = true; });
  $("#page").innerHTML = "";
  $("#login").hidden = false;
}

async function start() {
  try {
    state.layout = await (await fetch("/dashboard/layout.json")).json();
    await loadStudies();
  } catch (e) {
    logout();
    $("#loginerror").textContent = e.auth ? t("badToken") : String(e.message || e);
    return;
  }
  $("#login").hidden = true;
  $("#tabs").hidden = false;
  document.querySelectorAll(".controls .signed-in").forEach((e) => { e.hidden = false; });
  await render();
}

// resolvePeriod reads the report's period: "project" (the widest), a year, or FROM..TO.
function resolvePeriod(p) {
  if (!p || p === "project") return state.widest;
  if (/^\d{4}$/.test(p)) return p + "-01-01|" + p + "-12-31";
  return p.replace("..", "|");
}

// runReport renders every page of the dashboard, in order, into one printable document: the
// same code and the same released results as on screen.
async function runReport() {
  const q = new URLSearchParams(location.search);
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.get("token")) {
    sessionStorage.setItem("samsyn-token", h.get("token"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  state.report = true;
  state.lang = q.get("lang") === "en" ? "en" : "sv";
  document.documentElement.lang = state.lang;
  const main = $("#page");
  try {
    state.layout = await (await fetch("/dashboard/layout.json")).json();
    await loadStudies();
    state.period = resolvePeriod(q.get("period"));
    const p = (state.periodList || []).find((x) => x.from + "|" + x.to === state.period);
    if (!p) throw new Error((state.lang === "sv" ? "Ingen frisläppt studie för perioden " : "No released study for the period ") + state.period.replace("|", " – "));
    document.title = t("reportTitle") + " – " + periodName(p, state.period === state.widest);
    main.appendChild(el("section", { class: "report-cover" }, el("h1", { text: t("reportTitle") }),
      el("p", { class: "report-period", text: t("period") + ": " + periodName(p, state.period === state.widest) }),
      el("p", { text: t("generated") + " " + fmtDate(new Date().toISOString()) }), el("p", { class: "note", text: t("reportIntro") })));
    for (const page of ["overview", "map", "patterns", "trends", "whatworks"]) {
      const sec = el("section", { class: "report-section", "data-section": page }, el("h2", { class: "report-h", text: t(page) }));
      main.appendChild(sec);
      await PAGES[page](sec);
    }
    const any = state.studies.find((x) => (x.results || []).length);
    if (any) {
      const table = await api("/api/v1/studies/" + any.id + "/results/" + any.results[0].query_index);
      main.appendChild(el("section", { class: "report-section" }, el("h2", { class: "report-h", text: t("aboutNumbers") }),
        el("p", { text: table.notes.help[state.lang] }), el("p", { text: t("survivalNote") })));
    }
  } catch (e) {
    main.appendChild(el("p", { class: "error", role: "alert", "data-error": "1", text: String(e.message || e) }));
  }
  await new Promise((r) => setTimeout(r, 100)); // let the charts draw
  document.body.dataset.ready = "1";
}

// snapshot turns the report into one self-contained page: charts become images.
window.samsynSnapshot = async function () {
  document.querySelectorAll("canvas").forEach((c) => {
    const img = el("img", { src: c.toDataURL("image/png"), alt: c.getAttribute("aria-label") || "" });
    img.style.width = "100%";
    c.replaceWith(img);
  });
  const css = await (await fetch("/dashboard/style.css")).text();
  document.querySelectorAll("script, link[rel=stylesheet]").forEach((e) => e.remove());
  document.head.appendChild(el("style", { text: css }));
  return "<!doctype html>\n" + document.documentElement.outerHTML;
};

document.addEventListener("DOMContentLoaded", async () => {
  await loadTexts();
  if (document.body.dataset.mode === "report") { runReport(); return; }
  $("#reportbtn").addEventListener("click", () => {
    window.open("/dashboard/report.html?period=" + encodeURIComponent((state.period || "").replace("|", "..")) + "&lang=" + state.lang, "_blank");
  });
  $("#login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("samsyn-token", $("#token").value.trim());
    $("#token").value = "";
    start();
  });
  $("#logout").addEventListener("click", logout);
  $("#lang").addEventListener("click", () => { state.lang = state.lang === "sv" ? "en" : "sv"; render(); });
  $("#helpbtn").addEventListener("click", () => {
    const h = $("#help");
    h.hidden = !h.hidden;
    $("#helpbtn").setAttribute("aria-expanded", String(!h.hidden));
  });
  $("#period").addEventListener("change", () => { state.period = $("#period").value; render(); });
  document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => { state.page = b.dataset.page; render(); }));
  $("#tabs").addEventListener("keydown", (ev) => {
    if (ev.key !== "ArrowRight" && ev.key !== "ArrowLeft") return;
    const tabs = [...document.querySelectorAll("#tabs button")];
    const i = tabs.indexOf(document.activeElement);
    const next = tabs[(i + (ev.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
    next.focus();
    next.click();
  });
  if (token()) start(); else logout();
});
