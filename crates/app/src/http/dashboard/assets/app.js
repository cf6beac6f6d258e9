// spool dashboard: plain JavaScript, no framework. Every value from the server is inserted as
// text (textContent), never as HTML.
'use strict';

(function () {
  const KEY_STORAGE = 'spool.apiKey';
  const REFRESH_MS = 2000;
  const LIST_LIMIT = 20;
  // The listings shown for the selected queue: [status query value, title, action].
  const LISTINGS = [
    ['queued', 'Queued', 'cancel'],
    ['running', 'Running', 'cancel'],
    ['failed', 'Failed (retrying)', 'cancel'],
    ['scheduled', 'Scheduled', 'cancel'],
    ['dead', 'Dead', 'retry'],
    ['finished', 'Recently finished', 'retry-if-dead'],
  ];

  const $ = (sel) => document.querySelector(sel);
  const params = new URLSearchParams(window.location.search);
  let refreshTimer = null;
  let selectedQueue = params.get('queue');

  // ---------------------------------------------------------------- API access and auth

  function apiKey() {
    try { return window.sessionStorage.getItem(KEY_STORAGE); } catch (_) { return null; }
  }

  function setApiKey(key) {
    try {
      if (key) window.sessionStorage.setItem(KEY_STORAGE, key);
      else window.sessionStorage.removeItem(KEY_STORAGE);
    } catch (_) { /* storage disabled: the key lives until reload */ }
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function authHeaders(extra) {
    const headers = Object.assign({ Accept: 'application/json' }, extra || {});
    const key = apiKey();
    if (key) headers.Authorization = 'Bearer ' + key;
    return headers;
  }

  async function api(method, path) {
    const res = await fetch(path, { method, headers: authHeaders(), cache: 'no-store' });
    let body = null;
    const text = await res.text();
    if (text) {
      try { body = JSON.parse(text); } catch (_) { body = null; }
    }
    if (!res.ok) {
      const err = body && body.error ? body.error : { code: 'http_' + res.status, message: text };
      throw new ApiError(res.status, err.code, err.message || ('HTTP ' + res.status));
    }
    return body;
  }

  function showLogin(message) {
    stopRefresh();
    $('#overview').hidden = true;
    $('#operation').hidden = true;
    $('#login').hidden = false;
    $('#sign-out').hidden = true;
    const err = $('#login-error');
    err.textContent = message || '';
    err.hidden = !message;
    $('#api-key').focus();
  }

  // Runs `f`; a 401 brings the key form back (with the server's reason when a key was sent).
  async function guarded(f) {
    try {
      return await f();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        const hadKey = !!apiKey();
        setApiKey(null);
        showLogin(hadKey ? e.message : '');
        return undefined;
      }
      throw e;
    }
  }

  // ---------------------------------------------------------------- small helpers

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children || []) node.append(c);
    return node;
  }

  function fmtTime(s) {
    if (!s) return '—';
    const d = new Date(s);
    if (isNaN(d.getTime())) return s;
    return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  }

  function fmtMs(ms) {
    if (ms === null || ms === undefined) return '—';
    if (ms < 1000) return ms + ' ms';
    const s = ms / 1000;
    if (s < 60) return s.toFixed(1) + ' s';
    if (s < 3600) return (s / 60).toFixed(1) + ' min';
    if (s < 86400) return (s / 3600).toFixed(1) + ' h';
    return (s / 86400).toFixed(1) + ' d';
  }

  function flash(message, kind) {
    const f = $('#flash');
    f.textContent = message;
    f.className = kind === 'error' ? 'error' : '';
    f.hidden = false;
  }

  function badge(text, cls) {
    return el('span', { class: 'badge ' + (cls || text), text });
  }

  function stopRefresh() {
    if (refreshTimer) window.clearTimeout(refreshTimer);
    refreshTimer = null;
  }

  // ---------------------------------------------------------------- overview

  async function loadHealth() {
    try {
      const res = await fetch('/health/ready', { headers: { Accept: 'application/json' }, cache: 'no-store' });
      const h = await res.json();
      return h;
    } catch (e) {
      return { status: 'down', services: {}, error: String(e) };
    }
  }

  function renderHealth(h) {
    const b = $('#health');
    b.textContent = h.status || 'unknown';
    b.className = 'badge ' + (h.status || '');
    b.title = h.error || ('latency ' + (h.latency_ms === null || h.latency_ms === undefined ? '—' : h.latency_ms.toFixed(2) + ' ms'));
    const tbody = $('#services tbody');
    tbody.replaceChildren();
    for (const [name, s] of Object.entries(h.services || {})) {
      tbody.append(el('tr', { 'data-service': name }, [
        el('td', { text: name }),
        el('td', {}, [badge(s.mode)]),
        el('td', {}, [s.breaker ? badge(s.breaker) : el('span', { class: 'muted', text: '—' })]),
        el('td', { class: 'num', text: String(s.local_pending || 0) }),
      ]));
    }
  }

  function renderSession(o) {
    $('#backend').textContent = 'backend: ' + o.backend;
    const s = o.session;
    const out = $('#session');
    if (s.mode === 'api_key') {
      out.textContent = 'key ' + s.key_id + ' · projects: ' + (s.projects.length ? s.projects.join(', ') : 'none');
      $('#sign-out').hidden = false;
    } else {
      out.textContent = 'open (no API keys, loopback only)';
      $('#sign-out').hidden = true;
    }
  }

  function renderPolicies(o) {
    const tbody = $('#rate-limits tbody');
    tbody.replaceChildren();
    for (const p of o.rate_limits) {
      tbody.append(el('tr', { 'data-policy': p.name }, [
        el('td', { text: p.name }),
        el('td', { class: 'num', text: String(p.limit) }),
        el('td', { text: fmtMs(p.window_ms) }),
        el('td', { text: p.scope }),
        el('td', { text: p.failure_mode }),
        el('td', { text: p.algorithm }),
      ]));
    }
    $('#no-rate-limits').hidden = o.rate_limits.length > 0;
  }

  function renderQueues(stats) {
    const tbody = $('#queues tbody');
    tbody.replaceChildren();
    for (const q of stats.queues) {
      const link = el('a', { href: '/?queue=' + encodeURIComponent(q.name), class: 'queue-link', text: q.name });
      link.addEventListener('click', (ev) => {
        ev.preventDefault();
        selectedQueue = q.name;
        window.history.replaceState(null, '', '/?queue=' + encodeURIComponent(q.name));
        refreshNow();
      });
      const cell = (col, v) => el('td', { class: 'num', 'data-col': col, 'data-value': String(v), text: String(v) });
      tbody.append(el('tr', { 'data-queue': q.name, class: q.name === selectedQueue ? 'selected' : '' }, [
        el('td', {}, [link]),
        cell('queued', q.queued),
        cell('scheduled', q.scheduled),
        cell('running', q.running),
        cell('succeeded', q.succeeded),
        cell('dead', q.dead),
        cell('cancelled', q.cancelled),
        el('td', { class: 'num', 'data-col': 'oldest_waiting', text: fmtMs(q.oldest_waiting_ms) }),
      ]));
    }
    $('#no-queues').hidden = stats.queues.length > 0;
  }

  function actionButton(task, action) {
    const wants = action === 'retry-if-dead'
      ? (task.status === 'dead' || task.status === 'cancelled' ? 'retry' : null)
      : action;
    if (!wants) return el('span');
    const button = el('button', { type: 'button', class: wants, text: wants === 'retry' ? 'Retry' : 'Cancel' });
    button.addEventListener('click', async () => {
      button.disabled = true;
      const path = '/v1/queues/' + encodeURIComponent(task.queue) + '/tasks/' + encodeURIComponent(task.id);
      try {
        const t = await guarded(() => wants === 'retry' ? api('POST', path + '/retry') : api('DELETE', path));
        if (t) flash('Task ' + t.id + ' is ' + t.status + '.');
      } catch (e) {
        flash((wants === 'retry' ? 'Retry' : 'Cancel') + ' failed: ' + e.message, 'error');
      }
      refreshNow();
    });
    return button;
  }

  function renderList(status, title, action, listing) {
    const box = el('div', { class: 'listing', 'data-listing': status });
    box.append(el('h3', { text: title + ' (' + listing.tasks.length + (listing.tasks.length >= listing.limit ? '+' : '') + ')' }));
    if (listing.tasks.length === 0) {
      box.append(el('p', { class: 'muted', text: 'none' }));
      return box;
    }
    const rows = listing.tasks.map((t) => el('tr', { 'data-task': t.id, 'data-status': t.status }, [
      el('td', {}, [el('code', { text: t.id })]),
      el('td', { text: t.kind }),
      el('td', {}, [badge(t.status)]),
      el('td', { class: 'num', text: t.attempts + '/' + t.max_attempts }),
      el('td', { class: 'num', text: String(t.priority) }),
      el('td', { text: fmtTime(t.enqueued_at) }),
      el('td', { text: fmtTime(t.scheduled_for) }),
      el('td', { text: fmtTime(t.started_at) }),
      el('td', { text: fmtTime(t.finished_at) }),
      el('td', { class: 'error', text: t.last_error || '' }),
      el('td', {}, [actionButton(t, action)]),
    ]));
    const head = ['id', 'kind', 'status', 'attempts', 'priority', 'enqueued', 'due', 'started', 'finished', 'last error', '']
      .map((h) => el('th', { text: h }));
    box.append(el('table', {}, [el('thead', {}, [el('tr', {}, head)]), el('tbody', {}, rows)]));
    return box;
  }

  async function loadQueueDetail(queue) {
    const base = '/v1/queues/' + encodeURIComponent(queue) + '/tasks?limit=' + LIST_LIMIT + '&status=';
    const listings = await Promise.all(LISTINGS.map(([status]) => api('GET', base + status)));
    $('#selected-queue').textContent = queue;
    const lists = $('#lists');
    lists.replaceChildren(...LISTINGS.map(([status, title, action], i) => renderList(status, title, action, listings[i])));
    $('#queue-detail').hidden = false;
  }

  async function refreshOverview() {
    stopRefresh();
    await guarded(async () => {
      const [overview, stats, health] = await Promise.all([
        api('GET', '/v1/dashboard'),
        api('GET', '/v1/queues'),
        loadHealth(),
      ]);
      $('#login').hidden = true;
      $('#overview').hidden = false;
      renderSession(overview);
      renderPolicies(overview);
      renderHealth(health);
      if (!selectedQueue && stats.queues.length) selectedQueue = stats.queues[0].name;
      renderQueues(stats);
      if (selectedQueue) await loadQueueDetail(selectedQueue);
      document.body.dataset.loaded = 'overview';
      refreshTimer = window.setTimeout(refreshNow, REFRESH_MS);
      return true;
    }).catch((e) => {
      flash('Cannot load: ' + e.message, 'error');
      refreshTimer = window.setTimeout(refreshNow, REFRESH_MS * 2);
    });
  }

  function refreshNow() {
    if (params.get('operation')) return;
    refreshOverview();
  }

  // ---------------------------------------------------------------- one operation, live

  function renderOperation(op) {
    $('#op-id').textContent = op.id;
    const state = $('#op-state');
    state.textContent = op.state;
    state.className = 'badge ' + op.state;
    $('#op-percent').textContent = op.percent.toFixed(1) + '%';
    $('#op-percent').dataset.value = op.percent.toFixed(1);
    $('#op-bar').value = op.percent;
    $('#op-message').textContent = op.message || '';
    $('#op-updated').textContent = fmtTime(op.updated_at);
    $('#op-correlation').textContent = op.correlation_id || '—';
    const tbody = $('#op-steps tbody');
    tbody.replaceChildren(...op.steps.map((s) => el('tr', { 'data-step': s.name }, [
      el('td', { text: s.name }),
      el('td', { class: 'num', text: String(s.weight) }),
      el('td', { class: 'num', 'data-col': 'fraction', 'data-value': String(Math.round(s.fraction * 100)), text: Math.round(s.fraction * 100) + '%' }),
    ])));
  }

  function setLive(text) {
    $('#op-live').textContent = text;
    document.body.dataset.live = text;
  }

  function onStreamEvent(kind, data) {
    let op;
    try { op = JSON.parse(data); } catch (_) { return; }
    renderOperation(op);
    if (kind === 'end') setLive('finished');
  }

  // Without a key: EventSource, which resumes with Last-Event-ID by itself.
  function followWithEventSource(url) {
    const source = new EventSource(url);
    let ended = false;
    source.onopen = () => setLive('live');
    for (const kind of ['snapshot', 'progress']) {
      source.addEventListener(kind, (ev) => onStreamEvent(kind, ev.data));
    }
    source.addEventListener('end', (ev) => {
      ended = true;
      onStreamEvent('end', ev.data);
      source.close();
    });
    source.onerror = () => {
      if (!ended) setLive(source.readyState === EventSource.CLOSED ? 'disconnected' : 'reconnecting');
    };
  }

  // Parses one SSE block ("id:", "event:", "data:" lines; ":" comments ignored).
  function parseBlock(block) {
    const ev = { id: null, event: 'message', data: [] };
    for (const line of block.split('\n')) {
      if (!line || line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? '' : line.slice(i + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'id') ev.id = value;
      else if (field === 'event') ev.event = value;
      else if (field === 'data') ev.data.push(value);
    }
    return ev.data.length || ev.id ? { id: ev.id, event: ev.event, data: ev.data.join('\n') } : null;
  }

  // With a key: a fetch()-based reader (EventSource cannot send Authorization) that resumes
  // after a dropped connection with the last event id it saw, as EventSource would.
  async function followWithFetch(url) {
    let lastId = null;
    let delay = 500;
    for (;;) {
      try {
        const headers = authHeaders({ Accept: 'text/event-stream' });
        if (lastId) headers['Last-Event-ID'] = lastId;
        const res = await fetch(url, { headers, cache: 'no-store' });
        if (res.status === 401) {
          setApiKey(null);
          showLogin('the API key was refused');
          return;
        }
        if (!res.ok || !res.body) throw new Error('HTTP ' + res.status);
        setLive('live');
        delay = 500;
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
          let cut;
          while ((cut = buf.indexOf('\n\n')) >= 0) {
            const ev = parseBlock(buf.slice(0, cut));
            buf = buf.slice(cut + 2);
            if (!ev) continue;
            if (ev.id) lastId = ev.id;
            onStreamEvent(ev.event, ev.data);
            if (ev.event === 'end') {
              reader.cancel().catch(() => {});
              return;
            }
          }
        }
      } catch (_) {
        // Dropped or refused: reconnect below.
      }
      setLive('reconnecting');
      await new Promise((r) => window.setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }

  async function showOperation(id) {
    $('#overview').hidden = true;
    $('#login').hidden = true;
    $('#operation').hidden = false;
    $('#op-id').textContent = id;
    const path = '/v1/operations/' + encodeURIComponent(id);
    try {
      const op = await guarded(() => api('GET', path));
      if (!op) return;
      renderOperation(op);
      document.body.dataset.loaded = 'operation';
    } catch (e) {
      flash('Cannot load operation: ' + e.message, 'error');
      return;
    }
    try {
      const o = await api('GET', '/v1/dashboard');
      renderSession(o);
    } catch (_) { /* the session line is optional */ }
    if (apiKey()) followWithFetch(path + '/events');
    else followWithEventSource(path + '/events');
  }

  // ---------------------------------------------------------------- start

  function start() {
    $('#key-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const key = $('#api-key').value.trim();
      if (!key) return;
      setApiKey(key);
      $('#api-key').value = '';
      route();
    });
    $('#sign-out').addEventListener('click', () => {
      setApiKey(null);
      window.location.reload();
    });
    $('#operation-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const id = $('#operation-input').value.trim();
      if (id) window.location.search = '?operation=' + encodeURIComponent(id);
    });
    route();
  }

  function route() {
    const op = params.get('operation');
    if (op) showOperation(op);
    else refreshOverview();
  }

  start();
}());
