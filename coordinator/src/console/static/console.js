// ferry console: plain JavaScript, no framework, nothing loaded from elsewhere.
// Polls the JSON endpoints of /api once a second and redraws the current view.
'use strict';

const POLL_MS = 1000;
const TOKEN_KEY = 'ferry-token';
const COLORS = { P: '#cbd5e1', R: '#3b82f6', V: '#16a34a', F: '#dc2626' };
const STATE_NAMES = { P: 'planned', R: 'running', V: 'verified', F: 'failed' };

let session = null;        // {identity, role}
let timer = null;
let route = null;
let lastRows = null;       // {at, rows} for rows/s
let samples = [];          // throttle samples of the job on screen
let mapState = null;       // the job page's last chunk map
let actionErrorUntil = 0;  // an action's refusal stays shown this long (ms since epoch)

const $ = (id) => document.getElementById(id);
const esc = (text) => String(text ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const fmt = (n) => (n ?? 0).toLocaleString('en-US');
const when = (ms) => (ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 19) + 'Z' : '');
const duration = (s) => {
  if (s == null) return '–';
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
};
const isOperator = () => session && session.role === 'operator';

async function api(method, path, body) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = 'Bearer ' + token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch('/api/' + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error + (data.leader ? ` (leader: ${data.leader})` : ''));
  return data;
}

function showError(message) {
  const error = $('error');
  error.textContent = message || '';
  error.hidden = !message;
}

async function signIn() {
  const data = await api('GET', 'session');
  if (!data.ok) {
    session = null;
    $('login').hidden = false;
    $('view').hidden = true;
    $('login-message').textContent = sessionStorage.getItem(TOKEN_KEY) ? data.message : 'This console needs a token.';
    $('who').textContent = '';
    $('sign-out').hidden = true;
    return false;
  }
  session = data;
  $('login').hidden = true;
  $('view').hidden = false;
  $('who').textContent = `${data.identity} (${data.role})`;
  $('sign-out').hidden = !data.authenticates;
  return true;
}

function currentRoute() {
  const hash = location.hash || '#/jobs';
  const job = hash.match(/^#\/job\/(.+)$/);
  if (job) return { page: 'job', job: decodeURIComponent(job[1]) };
  if (hash === '#/workers') return { page: 'workers' };
  return { page: 'jobs' };
}

async function refresh() {
  clearTimeout(timer);
  try {
    if (session) {
      if (route.page === 'jobs') await showJobs();
      else if (route.page === 'job') await showJob(route.job);
      else await showWorkers();
      if (Date.now() > actionErrorUntil) showError('');
    }
  } catch (error) {
    showError(error.message);
  }
  timer = setTimeout(refresh, POLL_MS);
}

function navigate() {
  route = currentRoute();
  lastRows = null;
  samples = [];
  mapState = null;
  $('view').innerHTML = '';
  refresh();
}

function progressBar(total, verified, failed) {
  const v = total ? (100 * verified) / total : 0;
  const f = total ? (100 * failed) / total : 0;
  return `<div class="bar" title="${fmt(verified)} of ${fmt(total)} verified"><span class="v" style="width:${v}%"></span><span class="f" style="left:${v}%;width:${f}%"></span></div>`;
}

// ---- Jobs ----------------------------------------------------------------

let jobRows = {};          // job -> {at, rows}, for the job list's rows/s

async function showJobs() {
  const data = await api('GET', 'jobs');
  const now = Date.now();
  const rows = data.jobs.map((job) => {
    const s = job.status || {};
    const last = jobRows[job.job];
    const rate = s.state === 'RUNNING' && last && now > last.at ? ((s.rows_streamed - last.rows) * 1000) / (now - last.at) : null;
    if (!last || now - last.at > 3000) jobRows[job.job] = { at: now, rows: s.rows_streamed };
    return `<tr id="job-${esc(job.job)}"><td><a href="#/job/${encodeURIComponent(job.job)}">${esc(job.job)}</a></td>
      <td><span class="state ${esc(s.state || job.state)}">${esc(s.state || job.state)}</span></td>
      <td>${progressBar(s.chunks_total, s.chunks_verified, s.chunks_failed)}</td>
      <td>${fmt(s.rows_verified)}</td><td>${rate == null ? '–' : fmt(Math.max(0, Math.round(rate)))}</td><td>${duration(s.eta_seconds)}</td>
      <td>${when(job.submitted_at_unix_ms)}</td><td>${esc(job.submitted_by || '–')}</td></tr>`;
  });
  $('view').innerHTML = `<h1>Jobs</h1><table><thead><tr><th>Job</th><th>State</th><th>Progress</th>
    <th>Rows verified</th><th>Rows/s</th><th>ETA</th><th>Submitted</th><th>By</th></tr></thead><tbody>${rows.join('') || '<tr><td colspan="8">No jobs.</td></tr>'}</tbody></table>`;
}

// ---- A job ---------------------------------------------------------------

function jobSkeleton(job) {
  $('view').innerHTML = `<h1>Job ${esc(job)} <span id="job-state" class="state"></span></h1>
    <div class="summary" id="summary"></div>
    <div class="actions" id="actions" hidden>
      <button id="action-pause" class="action">Pause</button>
      <button id="action-resume" class="action">Resume</button>
      <label>Max concurrency <input id="throttle-concurrency" type="number" min="1"></label>
      <button id="action-throttle" class="action">Apply</button>
      <button id="action-clear-throttle" class="action">Clear override</button>
    </div>
    <h2>Tables</h2><table><thead><tr><th>Table</th><th>Progress</th><th>Chunks</th><th>Rows verified</th><th>Rows planned</th><th>ETA</th><th></th></tr></thead><tbody id="tables"></tbody></table>
    <h2>Chunk map</h2><div class="legend" id="legend"></div>
    <canvas id="map" width="1000" height="40"></canvas>
    <div id="chunk-detail"></div>
    <h2>Failures</h2><div id="failures"></div>
    <h2>Throttle</h2><div id="throttle-now"></div>
    <canvas id="throttle-chart" width="1000" height="180"></canvas>
    <h2>History</h2><table><thead><tr><th>When</th><th>Action</th><th>Who</th><th>What</th></tr></thead><tbody id="history"></tbody></table>`;
  $('action-pause').onclick = () => act(`Pause job ${job}?`, `jobs/${encodeURIComponent(job)}/pause`, {});
  $('action-resume').onclick = () => act(`Resume job ${job}?`, `jobs/${encodeURIComponent(job)}/resume`, {});
  $('action-throttle').onclick = () => {
    const n = parseInt($('throttle-concurrency').value, 10);
    if (!(n > 0)) return showError('give a max concurrency of at least 1');
    act(`Limit job ${job} to ${n} chunks at once?`, `jobs/${encodeURIComponent(job)}/throttle`, { max_concurrency: n });
  };
  $('action-clear-throttle').onclick = () => act(`Remove the operator's concurrency cap of job ${job}?`, `jobs/${encodeURIComponent(job)}/throttle`, { clear_override: true });
  $('map').onclick = (event) => showCell(job, event);
}

async function act(question, path, body) {
  if (!isOperator() || !window.confirm(question)) return;
  try {
    await api('POST', path, body);
    actionErrorUntil = 0;
    showError('');
  } catch (error) {
    actionErrorUntil = Date.now() + 15000;
    showError(error.message);
  }
  refresh();
}

async function showJob(job) {
  const since = samples.length ? samples[0].at : Date.now();
  const data = await api('GET', `jobs/${encodeURIComponent(job)}?since=${since}`);
  if (!$('summary')) jobSkeleton(job);
  const s = data.status;
  const now = Date.now();
  let rate = null;
  if (s.state === 'RUNNING' && lastRows && now > lastRows.at) rate = ((s.rows_streamed - lastRows.rows) * 1000) / (now - lastRows.at);
  if (!lastRows || now - lastRows.at > 3000) lastRows = { at: now, rows: s.rows_streamed };
  $('job-state').textContent = s.state;
  $('job-state').className = 'state ' + s.state;
  $('summary').innerHTML = `<div>Chunks<b id="chunks-verified">${fmt(s.chunks_verified)} / ${fmt(s.chunks_total)}</b></div>
    <div>Rows verified<b id="rows-verified">${fmt(s.rows_verified)}</b></div>
    <div>Rows streamed<b id="rows-streamed">${fmt(s.rows_streamed)}</b></div>
    <div>Rows/s<b>${rate == null ? '–' : fmt(Math.max(0, Math.round(rate)))}</b></div>
    <div>ETA<b>${duration(s.eta_seconds)}</b></div>
    <div>Running<b>${fmt(s.chunks_running)}</b></div>
    <div>Failed<b>${fmt(s.chunks_failed)}</b></div>${s.waiting ? `<div>Waiting<b>${esc(s.waiting)}</b></div>` : ''}`;
  const live = s.state === 'RUNNING' || s.state === 'PAUSED';
  $('actions').hidden = !isOperator() || !live;
  $('action-pause').disabled = s.state !== 'RUNNING';
  $('action-resume').disabled = s.state !== 'PAUSED';
  renderTables(job, data.tables, s);
  renderMap(data.map);
  renderFailures(data.failures);
  renderThrottle(data.throttle, data.history);
  $('history').innerHTML = data.history.slice().reverse().map((h) =>
    `<tr><td>${when(h.at_unix_ms)}</td><td>${esc(h.action)}</td><td>${esc(h.actor)}</td><td>${esc(h.summary)}</td></tr>`).join('');
}

function renderTables(job, tables, status) {
  const pace = status.eta_seconds && status.chunks_total > status.chunks_verified
    ? status.eta_seconds / (status.chunks_total - status.chunks_verified) : null;
  $('tables').innerHTML = tables.map((t) => {
    const left = t.chunks - t.verified - t.failed;
    const eta = pace && left > 0 ? duration(pace * left) : left > 0 ? '–' : 'done';
    const recopy = isOperator() ? `<button class="action recopy-table" id="recopy-${esc(t.table)}" data-table="${esc(t.table)}">Re-copy</button>` : '';
    const parts = t.partitions.map((p) => `<tr class="partition"><td>&nbsp;&nbsp;↳ ${esc(p.partition)}</td>
      <td>${progressBar(p.chunks, p.verified, 0)}</td><td>${fmt(p.verified)} / ${fmt(p.chunks)}</td>
      <td>${fmt(p.rows_verified)}</td><td>${fmt(p.rows_estimated)}</td><td></td><td></td></tr>`).join('');
    return `<tr id="table-${esc(t.table)}" class="table-row"><td>${esc(t.table)}</td>
      <td>${progressBar(t.chunks, t.verified, t.failed)}</td><td>${fmt(t.verified)} / ${fmt(t.chunks)}</td>
      <td>${fmt(t.rows_verified)}</td><td>${fmt(t.rows_estimated)}</td><td>${eta}</td><td>${recopy}</td></tr>${parts}`;
  }).join('');
  for (const button of document.querySelectorAll('.recopy-table')) {
    button.onclick = () => act(`Re-copy every chunk of table ${button.dataset.table} (overwriting its rows in the target)?`,
      `jobs/${encodeURIComponent(job)}/recopy`, { table: button.dataset.table });
  }
}

const CELL = 10; // pixels per map cell, gap included

function renderMap(map) {
  mapState = map;
  const canvas = $('map');
  const perRow = Math.floor(canvas.width / CELL);
  const rows = Math.max(1, Math.ceil(map.cells.length / perRow));
  if (canvas.height !== rows * CELL) canvas.height = rows * CELL;
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < map.cells.length; i++) {
    ctx.fillStyle = COLORS[map.cells[i]] || COLORS.P;
    ctx.fillRect((i % perRow) * CELL, Math.floor(i / perRow) * CELL, CELL - 2, CELL - 2);
  }
  const per = map.chunks_per_cell > 1 ? ` · one cell = ${fmt(map.chunks_per_cell)} chunks (colour of the one needing most attention)` : '';
  $('legend').innerHTML = ['P', 'R', 'V', 'F'].map((k, i) =>
    `<span><i style="background:${COLORS[k]}"></i>${STATE_NAMES[k]} <b id="count-${STATE_NAMES[k]}">${fmt(map.counts[i])}</b></span>`).join('') + `<span class="hint">${per} · click a cell</span>`;
}

async function showCell(job, event) {
  if (!mapState) return;
  const canvas = $('map');
  const rect = canvas.getBoundingClientRect();
  const x = Math.floor(((event.clientX - rect.left) * canvas.width) / rect.width / CELL);
  const y = Math.floor(((event.clientY - rect.top) * canvas.height) / rect.height / CELL);
  const cell = y * Math.floor(canvas.width / CELL) + x;
  if (cell < 0 || cell >= mapState.cells.length) return;
  const per = mapState.chunks_per_cell;
  try {
    const data = await api('GET', `jobs/${encodeURIComponent(job)}/chunks?offset=${cell * per}&limit=${Math.min(per, 50)}`);
    $('chunk-detail').innerHTML = `<table><thead><tr><th>Chunk</th><th>Table</th><th>Range</th><th>State</th><th>Attempt</th><th>Failures</th><th>Worker</th><th>Rows</th><th>Checksum</th><th>Last error</th><th></th></tr></thead><tbody>` +
      data.chunks.map((c) => `<tr class="chunk-row" id="chunk-${c.id}"><td>${c.id}</td><td>${esc(c.table)}${c.partition ? ' / ' + esc(c.partition) : ''}</td><td>${esc(c.range)}</td>
        <td>${esc(c.state)}</td><td>${c.attempt}</td><td>${c.failures}</td><td>${esc(c.worker)}</td><td>${fmt(c.rows)} / ${fmt(c.estimated_rows)}</td>
        <td class="reason">${esc(c.checksum)}</td><td class="reason">${esc(c.last_error)}</td>
        <td>${isOperator() ? `<button class="action recopy-chunk" data-chunk="${c.id}">Re-copy</button>` : ''}</td></tr>`).join('') +
      `</tbody></table>${per > 50 ? `<p class="hint">The first 50 of this cell's ${fmt(per)} chunks.</p>` : ''}`;
    for (const button of document.querySelectorAll('.recopy-chunk')) {
      button.onclick = () => act(`Re-copy chunk ${button.dataset.chunk} (overwriting its range in the target)?`,
        `jobs/${encodeURIComponent(job)}/recopy`, { chunk_ids: [parseInt(button.dataset.chunk, 10)] });
    }
  } catch (error) {
    showError(error.message);
  }
}

function renderFailures(groups) {
  $('failures').innerHTML = groups.length === 0 ? '<p class="hint" id="no-failures">No failures.</p>' :
    `<table><thead><tr><th>Reason</th><th>Failed</th><th>Retrying</th><th>Chunks</th></tr></thead><tbody>` +
    groups.map((g) => `<tr class="failure"><td class="reason">${esc(g.reason)}</td><td>${g.failed}</td><td>${g.retrying}</td><td>${g.chunk_ids.join(', ')}</td></tr>`).join('') +
    '</tbody></table>';
}

// The throttle over time: allowed concurrency and chunks in flight (left axis), the
// load probe's value against max and critical (right axis), operator changes marked.
function renderThrottle(throttle, history) {
  $('throttle-chart').hidden = !throttle;
  if (!throttle) {
    $('throttle-now').innerHTML = '<p class="hint">No throttle here: the job is not running, or this coordinator is a standby (the leader\'s console shows it).</p>';
    return;
  }
  const e = throttle.effective;
  const load = (throttle.policy && throttle.policy.load) || null;
  samples.push({ at: Date.now(), concurrency: e.concurrency, inFlight: e.in_flight, load: e.load, paused: e.paused });
  if (samples.length > 600) samples.shift();
  $('throttle-now').innerHTML = `<p id="throttle-effective">Allowed: <b>${e.paused ? 'paused' : e.concurrency + ' chunks at once'}</b> · in flight ${e.in_flight}` +
    `${e.load != null ? ` · load ${e.load.toFixed(1)}` : ''}${load ? ` (max ${load.max}, critical ${load.critical})` : ''}` +
    `${e.rows_per_sec ? ` · ${fmt(e.rows_per_sec)} rows/s` : ''} · ${e.reasons.map(esc).join('; ')}</p>`;
  const canvas = $('throttle-chart');
  const ctx = canvas.getContext('2d');
  const W = canvas.width, H = canvas.height, pad = 24;
  ctx.clearRect(0, 0, W, H);
  const t0 = samples[0].at, t1 = Math.max(samples[samples.length - 1].at, t0 + 60000);
  const x = (t) => pad + ((t - t0) / (t1 - t0)) * (W - 2 * pad);
  const maxC = Math.max(1, ...samples.map((s) => Math.max(s.concurrency, s.inFlight)));
  const maxL = Math.max(1, load ? load.critical * 1.2 : 0, ...samples.map((s) => s.load || 0));
  const yC = (v) => H - pad - (v / maxC) * (H - 2 * pad);
  const yL = (v) => H - pad - (v / maxL) * (H - 2 * pad);
  ctx.font = '11px sans-serif';
  for (const span of throttle.schedule_spans || []) {
    const from = Math.max(span.from_unix_ms, t0);
    ctx.fillStyle = 'rgba(59, 130, 246, 0.10)';
    ctx.fillRect(x(from), pad, Math.max(1, x(span.to_unix_ms) - x(from)), H - 2 * pad);
    ctx.fillStyle = '#1d4ed8';
    ctx.fillText(`schedule window ${span.window + 1}: max ${span.max_concurrency}`, x(from) + 3, H - pad - 4);
  }
  for (const s of samples) if (s.paused) { ctx.fillStyle = '#fef3c7'; ctx.fillRect(x(s.at) - 2, pad, 4, H - 2 * pad); }
  if (load) {
    for (const [v, color, label] of [[load.max, '#f59e0b', 'max'], [load.critical, '#dc2626', 'critical']]) {
      ctx.strokeStyle = color; ctx.setLineDash([4, 4]); ctx.beginPath(); ctx.moveTo(pad, yL(v)); ctx.lineTo(W - pad, yL(v)); ctx.stroke();
      ctx.setLineDash([]); ctx.fillStyle = color; ctx.fillText(`load ${label} ${v}`, W - pad - 90, yL(v) - 3);
    }
  }
  const line = (key, y, color) => {
    ctx.strokeStyle = color; ctx.beginPath();
    samples.forEach((s, i) => { if (s[key] == null) return; const px = x(s.at), py = y(s[key]); if (i) ctx.lineTo(px, py); else ctx.moveTo(px, py); });
    ctx.stroke();
  };
  ctx.lineWidth = 2; line('concurrency', yC, '#2563eb'); ctx.lineWidth = 1; line('inFlight', yC, '#16a34a'); line('load', yL, '#a855f7');
  let mark = 0;
  for (const h of history) {
    if (h.at_unix_ms < t0 || h.origin === 'spec') continue;
    ctx.strokeStyle = '#475569'; ctx.beginPath(); ctx.moveTo(x(h.at_unix_ms), pad); ctx.lineTo(x(h.at_unix_ms), H - pad); ctx.stroke();
    // Labels step down so that close changes stay readable.
    ctx.fillStyle = '#475569'; ctx.fillText(`${h.summary.slice(0, 40)} (${h.actor})`, x(h.at_unix_ms) + 3, pad + 10 + 12 * (mark++ % 8));
  }
  ctx.fillStyle = '#0f172a';
  ctx.fillText(`allowed concurrency (blue, max ${maxC}) · in flight (green) · load (purple) · paused (yellow) · schedule windows (blue) · last ${duration((t1 - t0) / 1000)}`, pad, 14);
}

// ---- Workers -------------------------------------------------------------

async function showWorkers() {
  const data = await api('GET', 'workers');
  const now = Date.now();
  $('view').innerHTML = `<h1>Workers</h1><table><thead><tr><th>Worker</th><th>Slots busy</th><th>Current chunks</th><th>Registered</th><th>Host</th><th>Draining</th><th></th></tr></thead><tbody>` +
    (data.workers.map((w) => `<tr id="worker-${esc(w.id)}" class="worker"><td>${esc(w.id)}</td><td>${w.busy} / ${w.slots}</td>
      <td>${w.chunks.map((c) => `<a href="#/job/${encodeURIComponent(c.job)}">${esc(c.job)}</a> #${c.chunk} ${esc(c.table)} ${esc(c.state)} (attempt ${c.attempt})`).join('<br>')}</td>
      <td>${when(w.registered_at_unix_ms)} (${duration((now - w.registered_at_unix_ms) / 1000)} ago)</td><td>${esc(w.host)} pid ${w.pid}</td>
      <td>${w.draining ? 'draining' : ''}</td>
      <td>${isOperator() && !w.draining ? `<button class="action drain" id="drain-${esc(w.id)}" data-worker="${esc(w.id)}">Drain</button>` : ''}</td></tr>`).join('') ||
      '<tr><td colspan="7">No live workers.</td></tr>') + '</tbody></table>';
  for (const button of document.querySelectorAll('.drain')) {
    button.onclick = () => act(`Drain worker ${button.dataset.worker}? It finishes its chunks and takes no more.`,
      `workers/${encodeURIComponent(button.dataset.worker)}/drain`, {});
  }
}

// ---- Start ---------------------------------------------------------------

$('login-form').onsubmit = async (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
  $('token').value = '';
  if (await signIn()) navigate();
};
$('sign-out').onclick = async () => {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(timer);
  $('view').innerHTML = '';
  await signIn();
};
window.addEventListener('hashchange', navigate);
signIn().then((ok) => { if (ok) navigate(); }).catch((error) => showError(error.message));
