// kmd's web page: polls the status, rekey views and events of kmd's JSON
// API and drives Rekey Now and the rotation schedules through it. Every
// text from kmd goes in with textContent, never as markup.
'use strict';

const SCOPES = ['cluster', 'sed'];
const POLL_MS = 1500;
const MAX_EVENTS = 20;
// The CLI's question (kmctl ... rekey start without --yes).
const CONFIRM = 'Are you sure you want to rekey the master passphrase?';

const state = {
  csrf: '',       // the session's CSRF token, sent on every change
  stopped: false, // signed out or session over: no more requests
  polling: false,
  timer: 0,
  dirty: { cluster: false, sed: false }, // the schedule form is being edited
  events: [],     // the last MAX_EVENTS, oldest first
};

const $ = (id) => document.getElementById(id);

class APIError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// call sends one API request and returns its decoded JSON answer; an error
// answer throws an APIError with kmd's one-line message.
async function call(method, path, body) {
  if (state.stopped) {
    throw new APIError(0, 'signed out');
  }
  const opts = { method, headers: {}, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  if (method !== 'GET' && state.csrf) {
    opts.headers['X-CSRF-Token'] = state.csrf;
  }
  let resp;
  try {
    resp = await fetch(path, opts);
  } catch (e) {
    throw new APIError(0, 'kmd did not answer: ' + e.message);
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (e) {
    data = null;
  }
  if (resp.status === 401) {
    signedOut('Your session has ended. Sign in again with kmctl ui url.');
  }
  if (!resp.ok) {
    throw new APIError(resp.status, (data && data.error) || 'kmd answered ' + resp.status + ' ' + resp.statusText);
  }
  return data;
}

// fmtTime shows an RFC 3339 time as the CLI does: UTC, to the second,
// without the zone letter. Anything else (Never) is shown as it is.
function fmtTime(s) {
  if (!s) {
    return '';
  }
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z$/.exec(s);
  return m ? m[1] : s;
}

function cell(text, cls) {
  const td = document.createElement('td');
  td.textContent = text === undefined || text === null ? '' : String(text);
  if (cls) {
    td.className = cls;
  }
  return td;
}

function running(status) {
  return status === 'IN_PROGRESS' || status === 'MIGRATING';
}

// progressOf is a row's progress, as kmctl's --wait counts it.
function progressOf(row) {
  if (row.rekey) {
    return [row.rekey.done, row.rekey.total];
  }
  return running(row.status) ? [0, row.entries] : [row.entries, row.entries];
}

function statusCell(row) {
  const td = cell(row.status, 'status status-' + row.status);
  if (row.rekey) {
    const [done, total] = progressOf(row);
    const bar = document.createElement('progress');
    bar.max = Math.max(total, 1);
    bar.value = total > 0 ? done : 0;
    td.append(' ', bar);
  }
  return td;
}

function renderProgress(scope, rows) {
  const box = $(scope + '-progress');
  const active = rows.filter((r) => running(r.status) || r.rekey);
  if (active.length === 0) {
    box.hidden = true;
    return;
  }
  let done = 0;
  let total = 0;
  for (const r of active) {
    const [d, t] = progressOf(r);
    done += d;
    total += t;
  }
  const pct = total > 0 ? Math.floor((100 * done) / total) : 0;
  const bar = box.querySelector('progress');
  bar.max = Math.max(total, 1);
  bar.value = total > 0 ? done : 0;
  const what = scope === 'sed' ? 'the SED key store' : active.length + (active.length === 1 ? ' domain' : ' domains');
  box.querySelector('.progress-text').textContent = `Rekeying ${what}: ${done}/${total} entries (${pct}%)`;
  box.hidden = false;
}

function renderCluster(st) {
  const rows = st.domains.map((d) => {
    const tr = document.createElement('tr');
    tr.dataset.domain = d.domain;
    tr.append(cell(d.domain), statusCell(d), cell(fmtTime(d.key_created)), cell(d.key_id, 'key-id'),
      cell(d.entries, 'num'), cell(d.error, 'error'));
    return tr;
  });
  $('cluster-table').tBodies[0].replaceChildren(...rows);
  $('cluster-total').textContent = 'Total: ' + st.total;
  renderProgress('cluster', st.domains);
}

function renderSED(st) {
  const rows = st.nodes.map((n) => {
    const tr = document.createElement('tr');
    tr.dataset.node = n.node;
    tr.dataset.keyId = n.key_id;
    tr.append(cell(n.node), statusCell(n), cell(n.location), cell(n.remote_key_id),
      cell(fmtTime(n.key_created)), cell(n.error, 'error'));
    return tr;
  });
  $('sed-table').tBodies[0].replaceChildren(...rows);
  $('sed-total').textContent = 'Total: ' + st.total;
  renderProgress('sed', st.nodes);
}

// renderView shows a rekey view and, unless the user is editing it, sets
// the schedule form from it.
function renderView(scope, v) {
  for (const dd of $(scope + '-view').querySelectorAll('dd')) {
    dd.textContent = fmtTime(v[dd.dataset.field]);
  }
  if (!state.dirty[scope]) {
    const auto = v.key_rotation !== 'Never';
    $(scope + '-auto').checked = auto;
    $(scope + '-rotation').value = auto ? v.key_rotation : '';
    $(scope + '-rotation').disabled = !auto;
  }
}

function renderEvents() {
  const rows = state.events.slice().reverse().map((e) => {
    const tr = document.createElement('tr');
    tr.dataset.seq = e.seq;
    let msg = e.message || '';
    if (e.error) {
      msg += (msg ? ': ' : '') + e.error;
    }
    let where = e.domain || '';
    if (e.node) {
      where += (where ? ' ' : '') + '(node ' + e.node + ')';
    }
    tr.append(cell(fmtTime(e.time)), cell(e.event), cell(e.scope), cell(where), cell(msg));
    return tr;
  });
  $('events-table').tBodies[0].replaceChildren(...rows);
  $('events-empty').hidden = rows.length > 0;
}

async function pollEvents() {
  const last = state.events[state.events.length - 1];
  // since= keeps events at or after a time: the last one comes again and
  // is dropped by its sequence number.
  const q = last ? '?since=' + encodeURIComponent(last.time) : '';
  const l = await call('GET', '/v1/events' + q);
  const seen = new Set(state.events.map((e) => e.seq));
  const fresh = l.events.filter((e) => !seen.has(e.seq));
  if (fresh.length === 0 && last) {
    return;
  }
  state.events = state.events.concat(fresh).sort((a, b) => a.seq - b.seq).slice(-MAX_EVENTS);
  renderEvents();
}

async function poll() {
  if (state.stopped || state.polling) {
    return;
  }
  state.polling = true;
  clearTimeout(state.timer);
  const results = await Promise.allSettled([
    call('GET', '/v1/status/cluster').then(renderCluster),
    call('GET', '/v1/status/sed').then(renderSED),
    ...SCOPES.map((s) => call('GET', '/v1/rekey/' + s).then((v) => renderView(s, v))),
    pollEvents(),
  ]);
  state.polling = false;
  if (state.stopped) {
    return;
  }
  const failed = results.find((r) => r.status === 'rejected');
  const banner = $('banner');
  if (failed) {
    banner.textContent = 'Could not refresh: ' + failed.reason.message;
    banner.hidden = false;
  } else {
    banner.hidden = true;
    $('updated').textContent = 'Updated ' + fmtTime(new Date().toISOString()) + ' UTC';
  }
  state.timer = setTimeout(poll, POLL_MS);
}

function pollSoon() {
  clearTimeout(state.timer);
  state.timer = setTimeout(poll, 0);
}

async function rekeyNow(scope) {
  const result = $(scope + '-result');
  if (!window.confirm(CONFIRM)) {
    result.className = 'result';
    result.textContent = 'Rekey cancelled.';
    return;
  }
  const btn = $(scope + '-rekey');
  btn.disabled = true;
  try {
    const r = await call('POST', '/v1/rekey/' + scope, {});
    result.className = 'result';
    result.textContent = 'Rekey started: ' + (r.started.length ? r.started.join(', ') : 'none');
  } catch (e) {
    result.className = 'result error';
    result.textContent = e.message;
  } finally {
    btn.disabled = false;
    pollSoon();
  }
}

async function saveSchedule(scope) {
  const err = $(scope + '-form-error');
  const value = $(scope + '-auto').checked ? $(scope + '-rotation').value : 'Never';
  try {
    const v = await call('PUT', '/v1/rekey/' + scope, { key_rotation: value });
    err.textContent = '';
    state.dirty[scope] = false;
    renderView(scope, v);
    err.className = 'saved';
    err.textContent = 'Saved.';
  } catch (e) {
    err.className = 'error';
    err.textContent = e.message;
  }
}

// signedOut stops polling and takes every piece of kmd's state off the
// page.
function signedOut(message) {
  if (state.stopped) {
    return;
  }
  state.stopped = true;
  clearTimeout(state.timer);
  const main = document.querySelector('main');
  if (main) {
    main.remove();
  }
  $('signout').hidden = true;
  $('who').textContent = '';
  $('updated').textContent = '';
  const banner = $('banner');
  banner.textContent = message;
  banner.hidden = false;
}

async function signOut() {
  try {
    await call('POST', '/ui/signout');
  } catch (e) {
    // A session already over is signed out all the same.
  }
  signedOut('Signed out. Sign in again with kmctl ui url.');
}

function wire() {
  for (const scope of SCOPES) {
    $(scope + '-rekey').addEventListener('click', () => rekeyNow(scope));
    const auto = $(scope + '-auto');
    const rotation = $(scope + '-rotation');
    auto.addEventListener('change', () => {
      state.dirty[scope] = true;
      rotation.disabled = !auto.checked;
      if (auto.checked) {
        rotation.focus();
      }
    });
    rotation.addEventListener('input', () => {
      state.dirty[scope] = true;
    });
    $(scope + '-form').addEventListener('submit', (e) => {
      e.preventDefault();
      saveSchedule(scope);
    });
  }
  $('signout').addEventListener('click', signOut);
}

async function start() {
  wire();
  try {
    const s = await call('GET', '/ui/session');
    state.csrf = s.csrf;
    $('who').textContent = s.who;
    $('signout').hidden = !s.csrf;
  } catch (e) {
    if (!state.stopped) {
      signedOut('Could not start: ' + e.message);
    }
    return;
  }
  poll();
}

document.addEventListener('DOMContentLoaded', start);
