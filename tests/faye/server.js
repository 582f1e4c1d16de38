#!/usr/bin/env node
// Faye (Bayeux) test peer for chatwatch integration tests.
//
//   node tests/faye/server.js --port PORT [--timeout SECONDS] [--host 127.0.0.1]
//                             [--max-lifetime SECONDS] [--die-with-stdin] [--verbose]
//
// Prints exactly one line on stdout once listening: "LISTENING <port>".
// Everything else goes to stderr. See README.md for the /control side door.
'use strict';

const http = require('http');
const faye = require('faye');

const MOUNT = '/api/v2/notifications';
const MAX_CONTROL_BODY = 16 * 1024 * 1024;
const DEFAULT_OVERSIZE = 16 * 1024 * 1024;
const MAX_PUBLISH_COUNT = 1000000;
// Same grammar Faye uses for channel names (protocol/grammar.js).
const CHANNEL_NAME = /^\/(((([a-z]|[A-Z])|[0-9])|(\-|\_|\!|\~|\(|\)|\$|\@)))+(\/(((([a-z]|[A-Z])|[0-9])|(\-|\_|\!|\~|\(|\)|\$|\@)))+)*$/;

function log(...args) {
  process.stderr.write('[faye-peer] ' + args.join(' ') + '\n');
}

function usage(msg) {
  if (msg) process.stderr.write('server.js: ' + msg + '\n');
  process.stderr.write('usage: node server.js --port PORT [--timeout SECONDS] [--host HOST] ' +
    '[--max-lifetime SECONDS] [--die-with-stdin] [--verbose]\n');
  process.exit(2);
}

// ---------------------------------------------------------------- arguments
function parseArgs(argv) {
  const opts = { port: null, host: '127.0.0.1', timeout: 20, maxLifetime: 1800, dieWithStdin: false, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i], val = null;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) { val = arg.slice(eq + 1); arg = arg.slice(0, eq); }
    const need = () => {
      if (val !== null) return val;
      if (i + 1 >= argv.length) usage('missing value for ' + arg);
      return argv[++i];
    };
    switch (arg) {
      case '--port': opts.port = Number(need()); break;
      case '--host': opts.host = need(); break;
      case '--timeout': opts.timeout = Number(need()); break;
      case '--max-lifetime': opts.maxLifetime = Number(need()); break;
      case '--die-with-stdin': opts.dieWithStdin = true; break;
      case '--verbose': opts.verbose = true; break;
      case '-h': case '--help': usage(); break;
      default: usage('unknown argument ' + arg);
    }
  }
  if (opts.port === null) usage('--port is required (0 = pick a free port)');
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) usage('bad --port');
  if (!Number.isFinite(opts.timeout) || opts.timeout <= 0) usage('bad --timeout (seconds, > 0)');
  if (!Number.isFinite(opts.maxLifetime) || opts.maxLifetime < 0) usage('bad --max-lifetime');
  return opts;
}

const opts = parseArgs(process.argv.slice(2));

// ---------------------------------------------------------------- faye
// No `ping` option on purpose. Faye keeps its engine on adapter._server._engine
// (an Engine.Proxy wrapping the in-memory engine); that is the object Faye's own
// Server#process uses to publish and to destroy clients.
const adapter = new faye.NodeAdapter({ mount: MOUNT, timeout: opts.timeout });
const engine = adapter._server._engine;
if (!engine || typeof engine.publish !== 'function' || typeof engine.destroyClient !== 'function') {
  log('FATAL: unexpected faye internals (adapter._server._engine)');
  process.exit(1);
}

const state = {
  clients: new Map(),      // clientId -> Set(channel), insertion ordered
  handshakes: 0,
  subscribes: 0,
  connects: 0,
  requests: 0,
};

adapter.on('handshake', (clientId) => {
  state.handshakes++;
  state.clients.set(clientId, new Set());
  if (opts.verbose) log('handshake', clientId);
});
adapter.on('subscribe', (clientId, channel) => {
  state.subscribes++;
  if (!state.clients.has(clientId)) state.clients.set(clientId, new Set());
  state.clients.get(clientId).add(channel);
  if (opts.verbose) log('subscribe', clientId, channel);
});
adapter.on('unsubscribe', (clientId, channel) => {
  const subs = state.clients.get(clientId);
  if (subs) subs.delete(channel);
  if (opts.verbose) log('unsubscribe', clientId, channel);
});
adapter.on('disconnect', (clientId) => {
  // Fired for explicit /meta/disconnect, for session expiry and for destroyClient.
  state.clients.delete(clientId);
  if (opts.verbose) log('disconnect', clientId);
});
adapter.addExtension({
  incoming(message, callback) {
    if (message && message.channel === '/meta/connect') state.connects++;
    callback(message);
  },
});

// ---------------------------------------------------------------- faults
const fault = { mode: 'none', remaining: 0, sizeBytes: DEFAULT_OVERSIZE };
const hung = new Set();

function applyFault(req, res) {
  if (fault.mode === 'none' || fault.remaining <= 0) return false;
  const mode = fault.mode, sizeBytes = fault.sizeBytes;
  fault.remaining--;
  if (fault.remaining <= 0) fault.mode = 'none';
  log('fault', mode, req.method, req.url, 'remaining', fault.remaining);

  res.on('error', () => {});
  if (mode === 'hang') {
    // Read (and discard) the body, never answer. Socket stays open until exit.
    hung.add(res);
    res.on('close', () => hung.delete(res));
    req.resume();
    return true;
  }
  req.resume();
  req.on('error', () => {});
  req.on('end', () => {
    if (mode === '500') {
      const body = 'Internal Server Error (injected fault)\n';
      res.writeHead(500, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    } else if (mode === 'garbage') {
      const body = 'this is not json{{';
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    } else if (mode === 'oversize') {
      streamOversize(res, sizeBytes);
    }
  });
  return true;
}

// A valid JSON array of exactly `total` bytes (or the bare envelope if total is
// smaller), sent chunked (no Content-Length), honouring backpressure.
function streamOversize(res, total) {
  const head = Buffer.from('[{"channel":"/v2/me/chats","data":{"padding":"');
  const tail = Buffer.from('"}}]');
  let pad = Math.max(0, total - head.length - tail.length);
  const chunk = Buffer.alloc(64 * 1024, 'x');
  let aborted = false;
  res.on('close', () => { aborted = true; });
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.write(head);
  const pump = () => {
    while (!aborted && pad > 0) {
      const n = Math.min(pad, chunk.length);
      pad -= n;
      const ok = res.write(n === chunk.length ? chunk : chunk.subarray(0, n));
      if (!ok) { res.once('drain', pump); return; }
    }
    if (!aborted) res.end(tail);
  };
  pump();
}

// ---------------------------------------------------------------- side door
function sendJson(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

class BadRequest extends Error {}

function readJsonBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let len = 0, tooBig = false;
    req.on('data', (c) => {
      if (tooBig) return;
      len += c.length;
      if (len > MAX_CONTROL_BODY) { tooBig = true; return; }
      chunks.push(c);
    });
    req.on('error', reject);
    req.on('end', () => {
      if (tooBig) return reject(new BadRequest('body too large'));
      const text = Buffer.concat(chunks).toString('utf8').trim();
      if (text === '') return resolve({});
      let v;
      try { v = JSON.parse(text); } catch (e) { return reject(new BadRequest('invalid JSON body: ' + e.message)); }
      if (v === null || typeof v !== 'object' || Array.isArray(v)) return reject(new BadRequest('body must be a JSON object'));
      resolve(v);
    });
  });
}

function intField(body, name, dflt, min, max) {
  const v = body[name];
  if (v === undefined || v === null) return dflt;
  if (!Number.isInteger(v) || v < min || v > max) throw new BadRequest(`"${name}" must be an integer in [${min}, ${max}]`);
  return v;
}

function numField(body, name, dflt, min, max) {
  const v = body[name];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw new BadRequest(`"${name}" must be a number in [${min}, ${max}]`);
  return v;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let publishCounter = 0;

async function controlPublish(body) {
  const channel = body.channel === undefined ? '/v2/me/chats' : body.channel;
  if (typeof channel !== 'string' || !CHANNEL_NAME.test(channel) || channel.startsWith('/meta/') || channel.startsWith('/service/')) {
    throw new BadRequest('"channel" must be a plain Bayeux channel name (no wildcards, not /meta/ or /service/)');
  }
  const count = intField(body, 'count', 1, 0, MAX_PUBLISH_COUNT);
  const start = intField(body, 'start', 1, -Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER - MAX_PUBLISH_COUNT);
  const delayMs = numField(body, 'delay_ms', 0, 0, 600000);
  // Paced publishing: message i is due at start + i / rate_per_s (absolute schedule, so timer
  // granularity does not lower the rate); 0 means as fast as possible (or delay_ms).
  const ratePerS = numField(body, 'rate_per_s', 0, 0, 1000000);
  const stamp = body.stamp === undefined ? false : body.stamp;
  if (typeof stamp !== 'boolean') throw new BadRequest('"stamp" must be a boolean');
  let template = null;
  if (body.data !== undefined && body.data !== null) {
    if (typeof body.data !== 'object' || Array.isArray(body.data)) throw new BadRequest('"data" must be a JSON object');
    template = JSON.stringify(body.data);
  }
  const withId = body.with_id === undefined ? true : body.with_id;
  if (typeof withId !== 'boolean') throw new BadRequest('"with_id" must be a boolean');

  const t0 = process.hrtime.bigint();
  const wallStart = performance.timeOrigin + performance.now();
  for (let i = 0; i < count; i++) {
    if (ratePerS > 0) {
      const due = wallStart + (i * 1000) / ratePerS;
      const wait = due - (performance.timeOrigin + performance.now());
      if (wait > 0) await sleep(wait);
    }
    const seq = start + i;
    const data = template !== null ? JSON.parse(template) : {
      messageType: 'ChatStateChangeMessage',
      notificationType: 'StatusChange',
      chat: { id: 'chat-' + seq, state: 'Chatting', capabilities: ['Leave'] },
    };
    data.seq = seq;
    // Wall-clock milliseconds (fractional) when the message is handed to the engine.
    if (stamp) data.published_at_ms = performance.timeOrigin + performance.now();
    const message = { channel, data };
    if (withId) message.id = 'pub-' + (++publishCounter);
    // Same call Faye's Server#_handle makes for a client publish: synchronous
    // queueing into the in-memory engine, so order is preserved.
    engine.publish(message);
    if (ratePerS === 0 && delayMs > 0 && i + 1 < count) await sleep(delayMs);
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  log(`published ${count} to ${channel} (seq ${start}..${start + count - 1}) in ${ms.toFixed(1)} ms`);
  return { published: count };
}

function knownClientIds() {
  const ids = new Set(state.clients.keys());
  // Authoritative list kept by the in-memory engine, if present.
  const ns = engine._engine && engine._engine._namespace && engine._engine._namespace._used;
  if (ns && typeof ns[Symbol.iterator] === 'function') for (const id of ns) ids.add(id);
  return ids;
}

function controlDropSessions() {
  let dropped = 0;
  for (const id of knownClientIds()) {
    let existed = false;
    engine.clientExists(id, (e) => { existed = e; });
    if (existed) dropped++;
    engine.destroyClient(id);
    state.clients.delete(id);
  }
  log('drop-sessions dropped', dropped);
  return { dropped };
}

function controlState() {
  const clients = [], subscriptions = {};
  for (const [id, subs] of state.clients) {
    clients.push(id);
    subscriptions[id] = Array.from(subs);
  }
  return {
    clients,
    subscriptions,
    handshakes: state.handshakes,
    subscribes: state.subscribes,
    requests: state.requests,
    connects: state.connects,
    fault: { mode: fault.mode, remaining: fault.remaining },
    websocket: { upgrades: ws.upgrades, refused: ws.refused, open: ws.sockets.size, refuse: ws.refuse },
  };
}

function controlFault(body) {
  const modes = ['500', 'garbage', 'oversize', 'hang', 'none'];
  const mode = body.mode;
  if (typeof mode !== 'string' || !modes.includes(mode)) throw new BadRequest('"mode" must be one of ' + modes.join(', '));
  let count = intField(body, 'count', 1, 0, 1000000);
  const sizeBytes = intField(body, 'size_bytes', DEFAULT_OVERSIZE, 0, 1024 * 1024 * 1024);
  if (mode === 'none') count = 0;
  fault.mode = count > 0 ? mode : 'none';
  fault.remaining = count;
  fault.sizeBytes = sizeBytes;
  log('fault armed', mode, 'count', count);
  return { armed: count, mode };
}

function handleControl(req, res) {
  const path = new URL(req.url, 'http://localhost').pathname.replace(/(.)\/+$/, '$1');
  const route = req.method + ' ' + path;
  const reply = (status, obj) => { if (!res.headersSent) sendJson(res, status, obj); };

  (async () => {
    switch (route) {
      case 'GET /control/state':
        req.resume();
        return reply(200, controlState());
      case 'POST /control/publish': {
        const body = await readJsonBody(req);
        return reply(200, await controlPublish(body));
      }
      case 'POST /control/drop-sessions':
        await readJsonBody(req).catch(() => ({}));
        return reply(200, controlDropSessions());
      case 'POST /control/fault': {
        const body = await readJsonBody(req);
        return reply(200, controlFault(body));
      }
      case 'POST /control/websocket': {
        const body = await readJsonBody(req);
        return reply(200, controlWebsocket(body));
      }
      case 'POST /control/shutdown':
        req.resume();
        res.on('finish', () => exitNow('shutdown requested'));
        setTimeout(() => exitNow('shutdown requested (reply not flushed)'), 500).unref();
        return reply(200, { shutting_down: true });
      default:
        req.resume();
        if (path.startsWith('/control/')) return reply(404, { error: 'unknown control endpoint: ' + route });
        return reply(404, { error: 'not found: ' + route });
    }
  })().catch((err) => {
    if (err instanceof BadRequest) return reply(400, { error: err.message });
    log('control error:', err && err.stack || err);
    reply(500, { error: String(err && err.message || err) });
  });
}

// ---------------------------------------------------------------- http server
const server = http.createServer((req, res) => {
  try {
    if (adapter.check(req)) {
      state.requests++;
      if (opts.verbose) log('bayeux', req.method, req.url);
      if (applyFault(req, res)) return;
      return adapter.handle(req, res);
    }
    handleControl(req, res);
  } catch (err) {
    log('request error:', err && err.stack || err);
    try { if (!res.headersSent) sendJson(res, 500, { error: 'internal error' }); } catch (_) { /* ignore */ }
  }
});

// WebSocket upgrades to the mount go to Faye (not subject to the HTTP faults), unless the
// side door says to refuse them (as a proxy that breaks WebSocket would) or to make the open
// sockets go silent (they stay open but nothing more is read or written).
const ws = { refuse: false, sockets: new Set(), upgrades: 0, refused: 0 };
server.on('upgrade', (req, socket, head) => {
  if (!adapter.check(req)) return socket.destroy();
  if (ws.refuse) {
    ws.refused++;
    socket.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  ws.upgrades++;
  ws.sockets.add(socket);
  socket.on('close', () => ws.sockets.delete(socket));
  return adapter.handleUpgrade(req, socket, head);
});

function controlWebsocket(body) {
  if (body.refuse !== undefined) ws.refuse = !!body.refuse;
  let silenced = 0;
  if (body.silence) {
    for (const socket of ws.sockets) {
      // Keep the TCP connection, drop everything: the client sees a socket that just stops.
      socket.pause();
      socket.write = () => true;
      socket.removeAllListeners('data');
      ws.sockets.delete(socket);
      silenced++;
    }
  }
  log('websocket control', JSON.stringify({ refuse: ws.refuse, silenced }));
  return { refuse: ws.refuse, silenced, upgrades: ws.upgrades, refused: ws.refused, open: ws.sockets.size };
}
server.on('clientError', (err, socket) => {
  if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
  else socket.destroy();
});

// Long polls and hung requests must not be cut by Node's own timers; keep idle
// keep-alive sockets long enough that client pools don't race a server close.
server.requestTimeout = 0;
server.keepAliveTimeout = 60000;
server.headersTimeout = 65000;

server.on('error', (err) => {
  log('FATAL: listen failed:', err.message);
  process.exit(1);
});

server.listen(opts.port, opts.host, () => {
  const port = server.address().port;
  process.stdout.write('LISTENING ' + port + '\n');
  log(`listening on ${opts.host}:${port}${MOUNT} timeout=${opts.timeout}s`);
});

// ---------------------------------------------------------------- lifecycle
function exitNow(why) {
  log('exiting:', why);
  process.exit(0);
}
process.on('SIGTERM', () => exitNow('SIGTERM'));
process.on('SIGINT', () => exitNow('SIGINT'));
process.on('SIGHUP', () => exitNow('SIGHUP'));
process.on('uncaughtException', (err) => log('uncaught exception:', err && err.stack || err));
process.on('unhandledRejection', (err) => log('unhandled rejection:', err && err.stack || err));
process.stdout.on('error', () => {}); // parent closed our stdout: keep serving

if (opts.maxLifetime > 0) {
  setTimeout(() => exitNow('max lifetime reached'), opts.maxLifetime * 1000).unref();
}
if (opts.dieWithStdin) {
  process.stdin.on('end', () => exitNow('stdin closed'));
  process.stdin.on('error', () => exitNow('stdin error'));
  process.stdin.resume();
}
