// The berth dashboard: live components from /admin/v1/stream (server-sent events), actions
// through the admin API, dead letters and traces. No framework, no build step: the host
// serves this file as it is. The session cookie authenticates every request; requests that
// change something also send the session's CSRF token, which the page got in a <meta>.
'use strict';

const csrf = document.querySelector('meta[name="berth-csrf"]').content;
const $ = (selector, root = document) => root.querySelector(selector);
const SVG = 'http://www.w3.org/2000/svg';

/// An element with a class and text, for building the page without innerHTML.
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svg(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

/// Calls the admin API; resolves to {status, body} (body parsed when it is JSON).
async function api(method, path, body, contentType) {
  const headers = {};
  if (method !== 'GET') headers['X-Berth-Csrf'] = csrf;
  if (contentType) headers['Content-Type'] = contentType;
  const response = await fetch(path, { method, headers, body, credentials: 'same-origin' });
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  if (response.status === 401) sessionEnded();
  return { status: response.status, body: json, text };
}

/// What an error answer says, for a person.
function reason(answer) {
  return (answer.body && answer.body.error && answer.body.error.message) || `HTTP ${answer.status}`;
}

let toastTimer = null;
function toast(text, ok = true) {
  const node = $('#toast');
  node.textContent = text;
  node.className = ok ? 'ok shown' : 'bad shown';
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { node.className = ''; }, 8000);
}

/// Asks before an action; resolves to true when confirmed.
function confirmAction(text) {
  const dialog = $('#confirm');
  $('#confirm-text').textContent = text;
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
  });
}

function sessionEnded() {
  const live = $('#live');
  live.textContent = 'session ended: reload to log in';
  live.className = 'live down';
}

// ---- numbers ----

function fixed(n, digits) {
  return n === null || n === undefined ? '–' : Number(n).toFixed(digits);
}

function ms(n) {
  if (n === null || n === undefined) return '–';
  if (n < 1) return `${n.toFixed(2)} ms`;
  if (n < 10) return `${n.toFixed(1)} ms`;
  return `${Math.round(n)} ms`;
}

function when(rfc3339) {
  const date = new Date(rfc3339);
  return Number.isNaN(date.getTime()) ? rfc3339 : date.toLocaleTimeString();
}

// ---- charts ----

const CHART = { width: 150, height: 36 };

/// A small line chart of one or more series (arrays of numbers or nulls, oldest first).
function chart(series, label) {
  const root = svg('svg', {
    viewBox: `0 0 ${CHART.width} ${CHART.height}`, width: CHART.width, height: CHART.height,
    class: 'chart', role: 'img', 'aria-label': label,
  });
  const values = series.flatMap((s) => s.values.filter((v) => v !== null));
  const max = Math.max(1e-9, ...values);
  root.append(svg('line', { x1: 0, y1: CHART.height - 0.5, x2: CHART.width, y2: CHART.height - 0.5, class: 'axis' }));
  for (const s of series) {
    const step = CHART.width / Math.max(1, s.values.length - 1);
    let points = [];
    const flush = () => {
      if (points.length > 0) root.append(svg('polyline', { points: points.join(' '), class: s.className }));
      points = [];
    };
    s.values.forEach((v, i) => {
      if (v === null) { flush(); return; }
      const y = CHART.height - 2 - (v / max) * (CHART.height - 13);
      points.push(`${(i * step).toFixed(1)},${y.toFixed(1)}`);
    });
    if (points.length === 1) points.push(points[0]);
    flush();
  }
  // The scale, at the left: the latest seconds are drawn at the right.
  const top = svg('text', { x: 0, y: 8, class: 'chart-max' });
  if (label.endsWith('ms')) top.textContent = values.length ? `max ${ms(max)}` : 'no requests';
  else top.textContent = `max ${fixed(values.length ? max : 0, max < 10 ? 1 : 0)}/s`;
  root.append(top);
  const title = svg('title', {});
  title.textContent = label;
  root.append(title);
  return root;
}

// ---- components ----

const cards = new Map();

function componentCard(id) {
  const card = el('article', 'card');
  card.dataset.component = id;
  const head = el('header', 'card-head');
  head.append(el('h3', null, id), el('span', 'source'));
  const meta = el('p', 'meta');
  const split = el('div', 'split');
  split.append(el('span', 'share-stable'), el('span', 'share-canary'));
  const splitText = el('p', 'split-text');
  const table = el('table', 'versions');
  const headRow = el('tr');
  for (const name of ['state', 'version', 'traffic', 'req/s', '5xx/s', 'p50', 'p99', 'requests · 5xx', 'latency p50 · p99']) {
    headRow.append(el('th', null, name));
  }
  table.append(el('thead'), el('tbody'));
  table.tHead.append(headRow);
  const actions = el('div', 'buttons');
  const deploy = el('button', 'deploy', 'Deploy…');
  const promote = el('button', 'promote', 'Promote…');
  const rollback = el('button', 'rollback', 'Roll back…');
  for (const b of [deploy, promote, rollback]) b.type = 'button';
  actions.append(deploy, promote, rollback);
  card.append(head, meta, split, splitText, table, actions);
  deploy.addEventListener('click', () => openDeploy(id));
  promote.addEventListener('click', () => act(id, 'promote'));
  rollback.addEventListener('click', () => act(id, 'rollback'));
  $('#components').append(card);
  return card;
}

function renderComponent(component) {
  const card = cards.get(component.id) || componentCard(component.id);
  cards.set(component.id, card);
  $('.source', card).textContent = component.source === 'manifest' ? 'as in spin.toml' : 'deployed';
  const meta = [];
  const routes = component.routes.map((r) => (r.includes('private') ? 'private: reached by other components only' : r));
  if (routes.length) meta.push(`routes ${routes.join(' ')}`);
  if (component.subscriptions.length) meta.push(`events ${component.subscriptions.join(' ')}`);
  $('.meta', card).textContent = meta.join(' · ');

  const stable = component.versions.find((v) => v.state === 'stable');
  const canary = component.versions.find((v) => v.state === 'canary');
  const previous = component.versions.find((v) => v.state === 'previous');
  const stableShare = stable ? stable.trafficPercent : 0;
  const canaryShare = canary ? canary.trafficPercent : 0;
  const [stableBar, canaryBar] = $('.split', card).children;
  stableBar.style.width = `${stableShare}%`;
  canaryBar.style.width = `${canaryShare}%`;
  stableBar.textContent = stableShare >= 12 ? `stable ${stableShare} %` : '';
  canaryBar.textContent = canaryShare >= 12 ? `canary ${canaryShare} %` : '';
  $('.split-text', card).textContent = canary
    ? `stable ${stableShare} % · canary ${canaryShare} %`
    : `stable ${stableShare} %`;

  const body = el('tbody');
  for (const v of component.versions) {
    const row = el('tr', `state-${v.state}`);
    row.dataset.version = v.short;
    const seconds = v.minute.seconds;
    row.append(
      el('td', null, v.state),
      el('td', 'digest', v.short),
      el('td', null, `${v.trafficPercent} %`),
      el('td', null, fixed(v.requestsPerSecond, 2)),
      el('td', v.errorsPerSecond > 0 ? 'bad-number' : null, fixed(v.errorsPerSecond, 2)),
      el('td', null, ms(v.minute.p50Ms)),
      el('td', null, ms(v.minute.p99Ms)),
    );
    const traffic = el('td');
    traffic.append(chart([
      { values: seconds.map((s) => s.requests), className: 'line-requests' },
      { values: seconds.map((s) => s.errors), className: 'line-errors' },
    ], `${component.id} ${v.short}: requests and 5xx per second, last minute`));
    const latency = el('td');
    latency.append(chart([
      { values: seconds.map((s) => s.p50Ms), className: 'line-p50' },
      { values: seconds.map((s) => s.p99Ms), className: 'line-p99' },
    ], `${component.id} ${v.short}: p50 and p99 latency, last minute, ms`));
    row.append(traffic, latency);
    row.title = `${v.digest}, loaded ${when(v.loadedAt)}`;
    body.append(row);
  }
  $('table.versions', card).tBodies[0].replaceWith(body);
  $('button.promote', card).disabled = !canary;
  $('button.rollback', card).disabled = !canary && !previous;
  $('button.rollback', card).title = canary
    ? 'drop the canary: the stable version takes all traffic'
    : 'return to the previous version';
}

function renderSnapshot(snapshot) {
  $('#app-name').textContent = snapshot.app ? `· ${snapshot.app}` : '';
  $('#components-empty').hidden = snapshot.components.length > 0;
  if (snapshot.components.length === 0) $('#components-empty').textContent = 'No components.';
  const seen = new Set();
  for (const component of snapshot.components) {
    renderComponent(component);
    seen.add(component.id);
  }
  for (const [id, card] of cards) {
    if (!seen.has(id)) { card.remove(); cards.delete(id); }
  }
}

async function act(id, action) {
  const text = action === 'promote'
    ? `Promote the canary of ${id}? It takes all of ${id}'s traffic.`
    : `Roll back ${id}? ${cards.get(id) && !$('button.promote', cards.get(id)).disabled
      ? 'The canary is dropped and the stable version takes all traffic.'
      : 'The previous version serves again.'}`;
  if (!(await confirmAction(text))) return;
  const answer = await api('POST', `/admin/v1/components/${encodeURIComponent(id)}/${action}`);
  if (answer.status === 200) toast(action === 'promote' ? `${id}: canary promoted` : `${id}: rolled back`);
  else toast(`${id}: ${action} failed: ${reason(answer)}`, false);
}

let deployTarget = null;

function openDeploy(id) {
  deployTarget = id;
  $('#deploy-component').textContent = id;
  $('#deploy-form').reset();
  $('#deploy').returnValue = '';
  $('#deploy').showModal();
}

async function deploy() {
  const id = deployTarget;
  const file = $('#deploy-file').files[0];
  const canary = $('#deploy-canary').value.trim();
  if (!id || !file) return;
  const share = canary ? `as a canary taking ${canary} % of its traffic` : 'taking all of its traffic';
  const kb = (file.size / 1024).toFixed(0);
  if (!(await confirmAction(`Deploy ${file.name} (${kb} KB) to ${id}, ${share}?`))) return;
  toast(`${id}: deploying ${file.name}…`);
  const query = canary ? `?canary=${encodeURIComponent(canary)}` : '';
  const answer = await api('POST', `/admin/v1/components/${encodeURIComponent(id)}/versions${query}`,
    file, 'application/wasm');
  if (answer.status === 201) {
    toast(`${id}: deployed ${answer.body.digest.slice(7, 19)} in ${answer.body.tookMs} ms`);
  } else {
    toast(`${id}: not deployed: ${reason(answer)}`, false);
  }
}

// ---- the live stream ----

function connect() {
  const live = $('#live');
  const source = new EventSource('/admin/v1/stream');
  source.addEventListener('open', () => { live.textContent = 'live'; live.className = 'live up'; });
  source.addEventListener('message', (event) => {
    try { renderSnapshot(JSON.parse(event.data)); } catch (e) { console.error(e); }
  });
  source.addEventListener('error', async () => {
    // A stream ends every few seconds and the browser reconnects by itself; only a refusal
    // closes it for good.
    if (source.readyState !== EventSource.CLOSED) return;
    live.textContent = 'reconnecting…';
    live.className = 'live down';
    const check = await api('GET', '/admin/v1/components').catch(() => null);
    if (check && check.status === 401) return;
    setTimeout(connect, 2000);
  });
}

// ---- dead letters ----

let deadLetters = [];
let deadShown = null;
let deadKey = '';

async function loadDeadLetters() {
  const answer = await api('GET', '/admin/v1/dead-letters').catch(() => null);
  if (!answer || answer.status !== 200 || !answer.body) return;
  deadLetters = answer.body.deadLetters || [];
  const key = JSON.stringify(deadLetters);
  if (key === deadKey) return;
  deadKey = key;
  $('#dead-empty').hidden = deadLetters.length > 0;
  $('#dead-letters').hidden = deadLetters.length === 0;
  const body = el('tbody');
  for (const letter of [...deadLetters].reverse()) {
    const row = el('tr', 'clickable');
    row.dataset.id = letter.id;
    row.dataset.group = letter.group;
    row.tabIndex = 0;
    row.append(
      el('td', null, letter.subject),
      el('td', null, letter.group),
      el('td', null, letter.attempts),
      el('td', 'error-text', letter.error.length > 90 ? `${letter.error.slice(0, 90)}…` : letter.error),
      el('td', null, when(letter.failedAt)),
    );
    row.addEventListener('click', () => showDeadLetter(letter));
    row.addEventListener('keydown', (e) => { if (e.key === 'Enter') showDeadLetter(letter); });
    body.append(row);
  }
  $('#dead-letters').tBodies[0].replaceWith(body);
}

function showDeadLetter(letter) {
  deadShown = letter;
  $('#dead-title').textContent = `${letter.subject} · ${letter.group} · ${letter.id}`;
  $('#dead-error').textContent = `${letter.error} (after ${letter.attempts} attempt${letter.attempts === 1 ? '' : 's'}, ${when(letter.failedAt)})`;
  $('#dead-body').textContent = prettyBody(letter.body);
  $('#dead-detail').hidden = false;
}

function prettyBody(body) {
  try { return JSON.stringify(JSON.parse(body), null, 2); } catch { return body; }
}

/// A dead letter's group or id as one admin path segment, spelled as the host reads it
/// (`messaging::path_segment`): as it is when plain, else `~` and its unpadded base64url.
function pathSegment(text) {
  if (/^[A-Za-z0-9\-_.:@]+$/.test(text) && text !== '.' && text !== '..') return text;
  const bytes = new TextEncoder().encode(text);
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return `~${btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')}`;
}

async function redrive() {
  const letter = deadShown;
  if (!letter) return;
  if (!(await confirmAction(`Redrive ${letter.subject} (${letter.id}) to ${letter.group}? It is delivered again, as new.`))) return;
  const path = `/admin/v1/dead-letters/${pathSegment(letter.group)}/${pathSegment(letter.id)}/redrive`;
  const answer = await api('POST', path);
  if (answer.status === 200) {
    toast(`Redriven: ${letter.subject} to ${letter.group}`);
    $('#dead-detail').hidden = true;
    deadShown = null;
    deadKey = '';
    loadDeadLetters();
  } else {
    toast(`Not redriven: ${reason(answer)}`, false);
  }
}

// ---- traces ----

let tracesKey = '';
/// Rows of the traces list; the host keeps more.
const TRACES_SHOWN = 20;

async function loadTraces() {
  const answer = await api('GET', '/admin/v1/traces').catch(() => null);
  const all = answer && answer.status === 200 && answer.body ? answer.body.traces || [] : [];
  // Across services: a saga, rather than one request to one component.
  const across = $('#traces-across').checked;
  const traces = across
    ? all.filter((t) => (t.services || []).filter((s) => s !== 'berth').length > 1)
    : all;
  const key = JSON.stringify([across, traces.slice(0, TRACES_SHOWN)]);
  if (key === tracesKey) return;
  tracesKey = key;
  $('#traces-empty').hidden = traces.length > 0;
  $('#traces-empty').textContent = all.length > 0 ? 'No trace across services yet.' : 'No traces yet.';
  $('#traces').hidden = traces.length === 0;
  $('#traces-more').hidden = traces.length <= TRACES_SHOWN;
  $('#traces-more').textContent = `The newest ${TRACES_SHOWN} of ${traces.length}.`;
  const body = el('tbody');
  for (const trace of traces.slice(0, TRACES_SHOWN)) {
    const row = el('tr', trace.error ? 'clickable failed' : 'clickable');
    row.dataset.trace = trace.traceId;
    row.tabIndex = 0;
    row.append(
      el('td', null, when(trace.startedAt)),
      el('td', null, trace.root),
      el('td', null, (trace.services || []).join(', ')),
      el('td', null, trace.spans),
      el('td', null, ms(trace.durationMs)),
    );
    row.addEventListener('click', () => showTrace(trace.traceId));
    row.addEventListener('keydown', (e) => { if (e.key === 'Enter') showTrace(trace.traceId); });
    body.append(row);
  }
  $('#traces').tBodies[0].replaceWith(body);
}

/// Spans in reading order: each after its parent, siblings by start; with their depth.
function treeOrder(spans) {
  const ids = new Set(spans.map((s) => s.spanId));
  const children = new Map();
  const roots = [];
  for (const span of spans) {
    if (span.parentSpanId && ids.has(span.parentSpanId) && span.parentSpanId !== span.spanId) {
      if (!children.has(span.parentSpanId)) children.set(span.parentSpanId, []);
      children.get(span.parentSpanId).push(span);
    } else {
      roots.push(span);
    }
  }
  const byStart = (a, b) => a.startOffsetMs - b.startOffsetMs;
  const ordered = [];
  const visit = (span, depth) => {
    ordered.push({ span, depth });
    for (const child of (children.get(span.spanId) || []).sort(byStart)) visit(child, depth + 1);
  };
  for (const root of roots.sort(byStart)) visit(root, 0);
  return ordered;
}

async function showTrace(traceId) {
  const answer = await api('GET', `/admin/v1/traces/${encodeURIComponent(traceId)}`);
  if (answer.status !== 200 || !answer.body) {
    toast(`Trace ${traceId}: ${answer.status === 404 ? 'no longer kept' : reason(answer)}`, false);
    return;
  }
  const spans = answer.body.spans || [];
  const total = Math.max(1e-6, ...spans.map((s) => s.startOffsetMs + s.durationMs));
  $('#waterfall-title').textContent = `Trace ${traceId} · ${spans.length} spans · ${ms(total)}`;
  const rows = el('div', 'waterfall-rows');
  rows.id = 'waterfall-rows';
  for (const { span, depth } of treeOrder(spans)) {
    const row = el('div', span.error ? 'span-row failed' : 'span-row');
    row.dataset.span = span.spanId;
    row.dataset.service = span.service;
    const label = el('div', 'span-label');
    label.style.paddingLeft = `${depth * 14 + 4}px`;
    label.append(el('span', 'span-service', span.service), el('span', 'span-name', span.name));
    const track = el('div', 'span-track');
    const bar = el('div', 'span-bar');
    bar.style.left = `${(span.startOffsetMs / total) * 100}%`;
    bar.style.width = `${Math.max(0.3, (span.durationMs / total) * 100)}%`;
    track.append(bar);
    const duration = el('div', 'span-duration', ms(span.durationMs));
    const attributes = Object.entries(span.attributes || {});
    row.title = [`${span.service} · ${span.name}`, `starts at ${ms(span.startOffsetMs)}, takes ${ms(span.durationMs)}`,
      ...attributes.map(([k, v]) => `${k} = ${v}`)].join('\n');
    row.tabIndex = 0;
    row.addEventListener('click', () => showSpan(span));
    row.addEventListener('keydown', (e) => { if (e.key === 'Enter') showSpan(span); });
    row.append(label, track, duration);
    rows.append(row);
  }
  $('#waterfall-rows').replaceWith(rows);
  $('#span-detail').hidden = true;
  $('#waterfall').hidden = false;
}

function showSpan(span) {
  $('#span-title').textContent = `${span.service} · ${span.name} · ${ms(span.durationMs)}${span.error ? ' · failed' : ''}`;
  const list = el('dl');
  list.id = 'span-attributes';
  const entries = Object.entries(span.attributes || {});
  if (entries.length === 0) list.append(el('dt', null, 'no attributes'));
  for (const [key, value] of entries) list.append(el('dt', null, key), el('dd', null, value));
  $('#span-attributes').replaceWith(list);
  $('#span-detail').hidden = false;
}

// ---- start ----

document.addEventListener('DOMContentLoaded', () => {
  // The dialog closes with the value of the button that closed it.
  $('#deploy').addEventListener('close', () => { if ($('#deploy').returnValue === 'ok') deploy(); });
  $('#dead-refresh').addEventListener('click', () => { deadKey = ''; loadDeadLetters(); });
  $('#dead-close').addEventListener('click', () => { $('#dead-detail').hidden = true; deadShown = null; });
  $('#redrive').addEventListener('click', redrive);
  $('#traces-refresh').addEventListener('click', () => { tracesKey = ''; loadTraces(); });
  $('#traces-across').addEventListener('change', () => { tracesKey = ''; loadTraces(); });
  $('#waterfall-close').addEventListener('click', () => { $('#waterfall').hidden = true; });
  connect();
  loadDeadLetters();
  loadTraces();
  setInterval(loadDeadLetters, 3000);
  setInterval(loadTraces, 3000);
});
