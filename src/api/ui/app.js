// The script of the node's web page: reads the API token from the URL fragment (#token=...),
// keeps it in sessionStorage, polls the API with it and renders the node, files, transfers and
// peers; uploads, downloads and deletes files. No dependencies; every value from the API is
// written as text (never as HTML).
'use strict';

const TOKEN_KEY = 'dfs-api-token';
/** Pause between two refreshes. */
const POLL_MS = 1500;
/** Holders are read from one stat per file, at most this many files, every few refreshes. */
const HOLDERS_MAX_FILES = 100;
const HOLDERS_EVERY = 3;
const HOLDERS_CONCURRENCY = 4;

const state = {
  token: null,
  id: null,
  files: [],
  transfers: [],
  peers: [],
  members: [],
  /** content id -> {bytes, at, rate}: each transfer's progress at the last poll. */
  rates: new Map(),
  /** Whether the node's stats carry `holders`: null until known. */
  holdersSupported: null,
  /** key -> holders (as the stat gave them), for nodes whose stats carry them. */
  holders: new Map(),
  /** Whether the node has GET /v1/transfers (older nodes answer 404). */
  transfersSupported: true,
  polls: 0,
  timer: null,
  uploading: false,
};

const $ = (id) => document.getElementById(id);

// ---- the token ----------------------------------------------------------------------------

/** Takes the token from the fragment (then removes it from the address bar), else from the
 *  session. */
function readToken() {
  const hash = new URLSearchParams(location.hash.replace(/^#/, ''));
  const fromHash = hash.get('token');
  if (fromHash) {
    sessionStorage.setItem(TOKEN_KEY, fromHash.trim());
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function showLogin(reason) {
  stopPolling();
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $('app').hidden = true;
  $('login').hidden = false;
  if (reason) $('login-reason').textContent = reason;
  setStatus('error', 'no token');
}

// ---- the API --------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** A key as one path segment: everything but A-Z a-z 0-9 - . _ ~ percent-encoded. */
function encodeKey(key) {
  return encodeURIComponent(key).replace(/[!'()*]/g,
    (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers, { Authorization: 'Bearer ' + state.token });
  const res = await fetch(path, Object.assign({}, options, { headers, cache: 'no-store' }));
  if (res.status === 401) {
    showLogin('The node refused the token. Run dfs ui again and open the new address.');
    throw new ApiError(401, 'the node refused the token');
  }
  if (!res.ok) {
    let message = res.status + ' ' + res.statusText;
    try {
      const body = await res.json();
      if (body && body.error) message = body.error;
    } catch (_) { /* not JSON */ }
    throw new ApiError(res.status, message);
  }
  return res;
}

async function apiJson(path, options) {
  return (await api(path, options)).json();
}

// ---- formatting -----------------------------------------------------------------------------

function humanSize(n) {
  if (n < 1024) return n + ' B';
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let u = -1;
  do { v /= 1024; u += 1; } while (v >= 1024 && u < units.length - 1);
  return (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + ' ' + units[u];
}

function shortId(id) {
  return id && id.length > 16 ? id.slice(0, 8) + '…' + id.slice(-6) : String(id);
}

function fileState(f) {
  if (f.deleted) return 'deleted';
  if (f.damaged > 0) return 'damaged';
  return f.local ? 'local' : 'remote';
}

/** Makes an element with text content and attributes. */
function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  if (text !== undefined) e.textContent = text;
  return e;
}

/** The connection's state in the header (replaced by each poll). */
function setStatus(kind, text) {
  const s = $('status');
  s.dataset.state = kind;
  s.textContent = text;
}

/** An action's failure: shown until the user dismisses it (a poll does not replace it). */
function showError(text) {
  $('notice-text').textContent = text;
  $('notice').hidden = false;
}

/** Whether this node may write (and delete): a writer or an admin. */
function canWrite() {
  return !!state.id && (state.id.role === 'writer' || state.id.role === 'admin');
}

// ---- rendering ------------------------------------------------------------------------------

function renderNode() {
  const id = state.id;
  if (!id) return;
  $('node-peer-id').textContent = id.peer_id;
  $('node-network').textContent = id.network || '(not known yet)';
  const owner = id.network && id.network === id.peer_id ? ' (owner of the network)' : '';
  $('node-role').textContent = (id.role || 'reader (no grant)') + owner +
    (id.writes_refused ? ' — writes refused: ' + id.writes_refused : '');
  const addrs = $('node-addrs');
  addrs.replaceChildren(...(id.addrs || []).map((a) => {
    const li = el('li');
    li.append(el('code', {}, a));
    return li;
  }));
  document.title = 'dfs · ' + shortId(id.peer_id);
  const writes = canWrite();
  $('upload-button').disabled = !writes || state.uploading;
  $('upload-file').disabled = !writes;
  $('upload-key').disabled = !writes;
  if (!writes && !state.uploading) {
    $('upload-status').textContent = 'this node may not write (a reader): ask an admin for `dfs allow`';
  } else if ($('upload-status').dataset.reader === '1') {
    $('upload-status').textContent = '';
  }
  $('upload-status').dataset.reader = writes ? '0' : '1';
}

/** The replication cell of a file: how many and which peers hold it, when the node says. */
function holdersCell(f) {
  const td = el('td', { class: 'holders' });
  if (f.deleted) return td;
  const h = f.holders !== undefined ? f.holders : state.holders.get(f.key);
  if (h === undefined || h === null) {
    td.textContent = state.holdersSupported === false ? '—' : '';
    if (state.holdersSupported === false) td.title = 'this node does not report which peers hold a file';
    return td;
  }
  let ids = [];
  if (Array.isArray(h)) ids = h.map((x) => (typeof x === 'string' ? x : (x && x.peer_id) || '?'));
  const count = Array.isArray(h) ? h.length : Number(h);
  td.dataset.holders = String(count);
  td.textContent = count === 1 ? '1 peer' : count + ' peers';
  if (ids.length) {
    td.title = ids.join('\n');
    td.append(el('br'), el('span', { class: 'note' }, ids.map(shortId).join(', ')));
  }
  return td;
}

function renderFiles() {
  const showDeleted = $('files-show-deleted').checked;
  const files = state.files.filter((f) => showDeleted || !f.deleted);
  const live = state.files.filter((f) => !f.deleted).length;
  $('files-count').textContent = '(' + live + ')';
  const fetching = new Map(state.transfers.map((t) => [t.content_id, t]));
  const rows = files.map((f) => {
    const tr = el('tr', { 'data-key': f.key, 'data-state': fileState(f) });
    tr.append(el('td', { class: 'key' }, f.key));
    const size = el('td', { class: 'num', title: f.size + ' bytes' }, f.deleted ? '' : humanSize(f.size));
    tr.append(size);
    const st = el('td');
    const s = fileState(f);
    st.append(el('span', { class: 'state state-' + s }, s));
    const t = f.content_id && fetching.get(f.content_id);
    if (t && !f.local && t.size > 0) {
      st.append(' ', el('span', { class: 'note' }, Math.floor((100 * t.bytes_done) / t.size) + '%'));
    }
    const conflicts = (f.conflicts || []).length;
    if (conflicts > 0) {
      st.append(' ', el('span', { class: 'note conflicts', title: 'written concurrently: History shows them; a new upload or a restore resolves them' },
        conflicts + (conflicts === 1 ? ' conflict' : ' conflicts')));
    }
    tr.append(st);
    tr.append(holdersCell(f));
    const actions = el('td', { class: 'actions' });
    if (!f.deleted) {
      const dl = el('button', { type: 'button', class: 'download', title: 'Download ' + f.key }, 'Download');
      dl.addEventListener('click', () => download(f.key, dl));
      const rm = el('button', { type: 'button', class: 'danger delete', title: 'Delete ' + f.key + ' everywhere' }, 'Delete');
      if (!canWrite()) {
        rm.disabled = true;
        rm.title = 'this node may not delete (a reader): ask an admin for `dfs allow`';
      }
      rm.addEventListener('click', () => remove(f.key, rm));
      actions.append(dl, ' ', rm);
    }
    const log = el('button', { type: 'button', class: 'history', title: 'Versions of ' + f.key }, 'History');
    log.addEventListener('click', () => showHistory(f.key));
    actions.append(' ', log);
    tr.append(actions);
    return tr;
  });
  // Keep a delete button that waits for its confirming click.
  const tbody = document.querySelector('#files tbody');
  if (tbody.querySelector('button.armed')) return;
  tbody.replaceChildren(...rows);
  $('files-empty').hidden = rows.length > 0;
}

function renderTransfers() {
  const tbody = document.querySelector('#transfers tbody');
  const rows = state.transfers.map((t) => {
    const tr = el('tr', { 'data-key': t.key, 'data-content-id': t.content_id });
    tr.append(el('td', { class: 'key' }, t.key));
    tr.append(el('td', { class: 'num', title: t.size + ' bytes' }, humanSize(t.size)));
    tr.append(el('td', {}, t.phase));
    const p = el('td');
    const bar = el('progress', { max: Math.max(t.size, 1), value: t.bytes_done });
    p.append(bar, ' ', el('span', { class: 'note' },
      humanSize(t.bytes_done) + ' of ' + humanSize(t.size) +
      ' (' + t.chunks_done + '/' + t.chunks_total + ' chunks)'));
    tr.append(p);
    tr.append(el('td', { class: 'rate' }, rateText(t)));
    return tr;
  });
  tbody.replaceChildren(...rows);
  $('transfers-count').textContent = '(' + rows.length + ')';
  $('transfers-empty').hidden = rows.length > 0;
  if (!state.transfersSupported) {
    $('transfers-empty').hidden = false;
    $('transfers-empty').textContent = 'This node does not report its transfers.';
  }
}

function renderPeers() {
  const tbody = document.querySelector('#peers tbody');
  const rows = state.peers.map((p) => {
    const tr = el('tr', { 'data-peer-id': p.peer_id });
    const id = el('td');
    id.append(el('code', {}, p.peer_id));
    tr.append(id);
    tr.append(el('td', {}, p.agent || '—'));
    tr.append(el('td', { class: 'clock' }, clockText(p.clock_offset_ms)));
    const addrs = el('td');
    (p.addrs || []).forEach((a, i) => {
      if (i) addrs.append(el('br'));
      addrs.append(el('code', {}, a));
    });
    tr.append(addrs);
    return tr;
  });
  tbody.replaceChildren(...rows);
  $('peers-count').textContent = '(' + rows.length + ')';
  $('peers-empty').hidden = rows.length > 0;
}

/** A peer's clock offset from this node: `+3 ms`, flagged when over half a second. */
function clockText(ms) {
  if (ms === null || ms === undefined) return 'not measured';
  const text = (ms > 0 ? '+' : '') + ms + ' ms';
  return Math.abs(ms) > 500 ? text + ' (off!)' : text;
}

/** A transfer's rate and time left, from the bytes done at the previous polls. */
function rateText(t) {
  const seen = state.rates.get(t.content_id);
  if (!seen || !(seen.rate > 0)) return '—';
  const left = Math.max(t.size - t.bytes_done, 0) / seen.rate;
  return humanSize(Math.round(seen.rate)) + '/s, ' + (left < 1 ? '<1' : Math.round(left)) + ' s left';
}

/** Updates each transfer's rate (bytes per second, smoothed) from its progress since the last poll. */
function updateRates(transfers, now) {
  const next = new Map();
  for (const t of transfers) {
    const before = state.rates.get(t.content_id);
    let rate = before ? before.rate : 0;
    if (before && now > before.at && t.bytes_done >= before.bytes) {
      const r = ((t.bytes_done - before.bytes) * 1000) / (now - before.at);
      rate = rate > 0 ? 0.5 * rate + 0.5 * r : r;
    }
    next.set(t.content_id, { bytes: t.bytes_done, at: now, rate });
  }
  state.rates = next;
}

function renderMembers() {
  const tbody = document.querySelector('#members tbody');
  const rows = state.members.map((m) => {
    const tr = el('tr', { 'data-peer-id': m.peer_id });
    const id = el('td');
    id.append(el('code', {}, m.peer_id));
    tr.append(id);
    let role = m.owner ? 'owner' : m.role;
    if (!m.owner && m.role === 'reader' && m.cutoff !== undefined) role = 'revoked (records up to #' + m.cutoff + ' stay)';
    if (m.equivocated) role += ', signed two records under one number';
    if (m.failed_proofs) role += ', failed ' + m.failed_proofs + ' proofs of possession';
    tr.append(el('td', {}, role));
    return tr;
  });
  tbody.replaceChildren(...rows);
  $('members-count').textContent = '(' + rows.length + ')';
  const admin = !!state.id && state.id.role === 'admin';
  $('invite-button').disabled = !admin;
  $('invite-button').title = admin ? 'A ticket for one new machine' : 'only an admin invites';
}

/** Makes a ticket for one new machine (admins). */
async function invite() {
  $('invite-button').disabled = true;
  try {
    const res = await apiJson('/v1/invite', { method: 'POST' });
    $('invite-ticket').value = res.ticket;
    $('invite-peer').textContent = res.peer_id || '';
    $('invite').hidden = false;
    $('invite-status').textContent = '';
  } catch (e) {
    showError('invite failed: ' + e.message);
  } finally {
    renderMembers();
  }
}

/** Shows every version of `key` this node knows, with Restore for the earlier writes. */
async function showHistory(key) {
  try {
    const entries = await apiJson('/v1/log/' + encodeKey(key));
    $('history-key').textContent = key;
    const rows = entries.map((e) => {
      const tr = el('tr', { 'data-version': e.version, 'data-state': e.state });
      const v = el('td');
      v.append(el('code', { title: e.version }, e.version.slice(0, 16)));
      tr.append(v);
      tr.append(el('td', {}, new Date(e.time).toISOString()));
      tr.append(el('td', {}, e.state));
      tr.append(el('td', { class: 'num' }, e.deleted ? '' : humanSize(e.size)));
      tr.append(el('td', {}, e.deleted ? 'delete' : 'write'));
      const a = el('td');
      a.append(el('code', {}, e.author.slice(0, 16) + '…'));
      tr.append(a);
      const act = el('td');
      if (!e.deleted && e.state !== 'current') {
        const b = el('button', { type: 'button', class: 'restore', title: 'Make this version current again (a new write that spreads)' }, 'Restore');
        if (!canWrite()) b.disabled = true;
        b.addEventListener('click', () => restore(key, e.version, b));
        act.append(b);
      }
      tr.append(act);
      return tr;
    });
    document.querySelector('#history tbody').replaceChildren(...rows);
    $('history').hidden = false;
  } catch (e) {
    showError('history of ' + key + ' failed: ' + e.message);
  }
}

async function restore(key, version, button) {
  button.disabled = true;
  try {
    await apiJson('/v1/restore/' + encodeKey(key), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ version }),
    });
    await showHistory(key);
  } catch (e) {
    showError('restore of ' + key + ' failed: ' + e.message);
    button.disabled = false;
  }
  refresh();
}

// ---- polling --------------------------------------------------------------------------------

async function refresh() {
  try {
    const [id, files, peers, members, transfers] = await Promise.all([
      apiJson('/v1/id'),
      apiJson('/v1/files'),
      apiJson('/v1/peers'),
      apiJson('/v1/members').catch((e) => {
        if (e instanceof ApiError && e.status === 401) throw e;
        return [];
      }),
      state.transfersSupported
        ? apiJson('/v1/transfers').catch((e) => {
          if (e.status === 404 || e.status === 405) { state.transfersSupported = false; return []; }
          throw e;
        })
        : Promise.resolve([]),
    ]);
    state.id = id;
    state.files = files;
    state.peers = peers;
    state.members = members;
    updateRates(transfers, Date.now());
    state.transfers = transfers;
    state.polls += 1;
    if (files.some((f) => f.holders !== undefined)) state.holdersSupported = true;
    if (state.holdersSupported !== false && state.polls % HOLDERS_EVERY === 1) {
      await refreshHolders();
    }
    renderNode();
    renderFiles();
    renderTransfers();
    renderPeers();
    renderMembers();
    setStatus('ok', 'connected');
    $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    setStatus('error', 'cannot reach the node: ' + e.message);
  }
}

/** Reads `holders` from the stat of each live file (the list does not carry it), a few at a
 *  time; stops asking for good when a stat has no `holders` (an older node). */
async function refreshHolders() {
  const live = state.files.filter((f) => !f.deleted && f.holders === undefined)
    .slice(0, HOLDERS_MAX_FILES);
  const queue = live.slice();
  const seen = new Map();
  const worker = async () => {
    while (queue.length && state.holdersSupported !== false) {
      const f = queue.shift();
      try {
        const stat = await apiJson('/v1/stat/' + encodeKey(f.key) + '?holders=1');
        if (stat.holders === undefined) { state.holdersSupported = false; return; }
        state.holdersSupported = true;
        seen.set(f.key, stat.holders);
      } catch (e) {
        if (e instanceof ApiError && e.status === 401) throw e;
      }
    }
  };
  await Promise.all(Array.from({ length: HOLDERS_CONCURRENCY }, worker));
  if (state.holdersSupported) state.holders = seen;
}

function startPolling() {
  stopPolling();
  const tick = async () => {
    await refresh();
    if (state.token) state.timer = setTimeout(tick, POLL_MS);
  };
  tick();
}

function stopPolling() {
  if (state.timer) clearTimeout(state.timer);
  state.timer = null;
}

// ---- actions --------------------------------------------------------------------------------

/** Uploads the chosen file with PUT /v1/files/{key} (XMLHttpRequest, for upload progress). */
function upload(event) {
  event.preventDefault();
  const input = $('upload-file');
  const file = input.files && input.files[0];
  const status = $('upload-status');
  if (!file) { status.textContent = 'choose a file first'; return; }
  const key = $('upload-key').value.trim() || file.name;
  const bar = $('upload-progress');
  const button = $('upload-button');
  const xhr = new XMLHttpRequest();
  xhr.open('PUT', '/v1/files/' + encodeKey(key));
  xhr.setRequestHeader('Authorization', 'Bearer ' + state.token);
  xhr.setRequestHeader('Content-Type', 'application/octet-stream');
  xhr.upload.addEventListener('progress', (e) => {
    if (e.lengthComputable) { bar.max = e.total || 1; bar.value = e.loaded; }
  });
  const done = (text) => {
    state.uploading = false;
    button.disabled = false;
    bar.hidden = true;
    status.textContent = text;
    refresh();
  };
  xhr.addEventListener('load', () => {
    if (xhr.status === 201) {
      input.value = '';
      $('upload-key').value = '';
      done('stored ' + key + ' (' + humanSize(file.size) + ')');
      return;
    }
    if (xhr.status === 401) { showLogin('The node refused the token.'); return; }
    let message = 'the node answered ' + xhr.status;
    try { message = JSON.parse(xhr.responseText).error || message; } catch (_) { /* not JSON */ }
    done('upload failed: ' + message);
  });
  xhr.addEventListener('error', () => done('upload failed: cannot reach the node'));
  state.uploading = true;
  button.disabled = true;
  bar.hidden = false;
  bar.max = file.size || 1;
  bar.value = 0;
  status.textContent = 'uploading ' + key + '…';
  xhr.send(file);
}

/** Downloads a file: fetched with the token (a plain link cannot carry it), then saved. The
 *  browser holds the whole file in memory meanwhile: for very large files use `dfs get`. */
async function download(key, button) {
  button.disabled = true;
  const old = button.textContent;
  button.textContent = 'Downloading…';
  try {
    const res = await api('/v1/files/' + encodeKey(key));
    const blob = await res.blob();
    const url = URL.createObjectURL(blob);
    const a = el('a', { href: url, download: key.split('/').pop() || 'download' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (e) {
    showError('download of ' + key + ' failed: ' + e.message);
  } finally {
    button.disabled = false;
    button.textContent = old;
  }
}

/** Deletes a file everywhere: the first click arms the button, a second within 4 s confirms. */
async function remove(key, button) {
  if (!button.classList.contains('armed')) {
    button.classList.add('armed');
    button.textContent = 'Confirm delete';
    setTimeout(() => {
      if (button.isConnected && button.classList.contains('armed')) {
        button.classList.remove('armed');
        button.textContent = 'Delete';
        renderFiles();
      }
    }, 4000);
    return;
  }
  button.classList.remove('armed');
  button.disabled = true;
  try {
    await api('/v1/files/' + encodeKey(key), { method: 'DELETE' });
  } catch (e) {
    showError('delete of ' + key + ' failed: ' + e.message);
  }
  refresh();
}

// ---- start ----------------------------------------------------------------------------------

function start() {
  $('upload').addEventListener('submit', upload);
  $('notice-dismiss').addEventListener('click', () => { $('notice').hidden = true; });
  $('history-close').addEventListener('click', () => { $('history').hidden = true; });
  $('invite-button').addEventListener('click', invite);
  $('files-show-deleted').addEventListener('change', renderFiles);
  $('login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const t = $('login-token').value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    $('login-token').value = '';
    begin();
  });
  window.addEventListener('hashchange', begin);
  begin();
}

function begin() {
  state.token = readToken();
  if (!state.token) {
    showLogin(null);
    return;
  }
  $('login').hidden = true;
  $('app').hidden = false;
  setStatus('starting', 'connecting…');
  startPolling();
}

document.addEventListener('DOMContentLoaded', start);
