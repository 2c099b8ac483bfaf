'use strict';
// The user service of berth's shop written as a classic Node.js microservice: Express,
// better-sqlite3 (WAL), argon2id hashes, HS256 JWTs with jsonwebtoken. It is the baseline
// that berth's benchmarks compare against, so it answers what berth answers: the same
// routes, JSON bodies, validation rules, status codes and error bodies as
// components/user (the service) behind berth's gateway (request ids, trace context, bearer
// token checks, the 1 MiB body limit), which here is middleware in the same process.
//
// One Node process, no cluster: like one container of the classic stack. argon2 hashes
// run on libuv's thread pool (UV_THREADPOOL_SIZE, 4 by default), everything else on the
// event loop.
//
// Environment: PORT (required), JWT_SECRET (required, at least 16 bytes, the key berth's
// gateway verifies with), DB_PATH (required, a SQLite file, created if missing),
// TOKEN_TTL_SECONDS (3600 unless set). No request logging.

const fs = require('node:fs');
const crypto = require('node:crypto');
const path = require('node:path');
const argon2 = require('argon2');
const Database = require('better-sqlite3');
const express = require('express');
const jwt = require('jsonwebtoken');

// ---------------------------------------------------------------- configuration

function fail(message) {
  console.error(`node-user-service: ${message}`);
  process.exit(1);
}

const PORT = process.env.PORT;
if (!PORT || !/^\d+$/.test(PORT) || Number(PORT) > 65535) fail('set PORT to the port to listen on');
const JWT_SECRET = process.env.JWT_SECRET ?? '';
if (Buffer.byteLength(JWT_SECRET) < 16) {
  fail(`JWT_SECRET is ${Buffer.byteLength(JWT_SECRET)} bytes; use at least 16 random bytes`);
}
const DB_PATH = process.env.DB_PATH;
if (!DB_PATH) fail('set DB_PATH to the SQLite file to keep users in');
const TOKEN_TTL = process.env.TOKEN_TTL_SECONDS ?? '3600';
if (!/^\d+$/.test(TOKEN_TTL)) fail(`TOKEN_TTL_SECONDS is not a number of seconds: ${TOKEN_TTL}`);
const TOKEN_TTL_SECONDS = Number(TOKEN_TTL);

// What berth's gateway applies to every request (its defaults).
const MAX_REQUEST_BYTES = 1024 * 1024;
const JWT_LEEWAY_SECONDS = 30;

// ---------------------------------------------------------------- storage

const db = new Database(DB_PATH);
// As berth opens every SQLite database: WAL, NORMAL sync, foreign keys, a busy timeout.
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
db.pragma('foreign_keys = ON');
db.pragma('busy_timeout = 5000');
// The user service's own migrations, applied in order once each (tracked in user_version),
// so both sides of the benchmark store users in the same schema.
const MIGRATIONS = path.join(__dirname, '..', '..', '..', 'migrations', 'user');
const migrations = fs.readdirSync(MIGRATIONS).filter((f) => f.endsWith('.sql')).sort();
const applied = db.pragma('user_version', { simple: true });
for (const file of migrations.slice(applied)) {
  db.exec(fs.readFileSync(path.join(MIGRATIONS, file), 'utf8'));
}
db.pragma(`user_version = ${migrations.length}`);

const USER_COLUMNS = 'id, email, first_name, last_name, created_at';
const sql = {
  insert: db.prepare(
    `INSERT INTO users (id, email, password_hash, first_name, last_name, created_at, updated_at)
     VALUES (?, ?, ?, ?, ?, ?, ?)`,
  ),
  byEmail: db.prepare(`SELECT ${USER_COLUMNS}, password_hash FROM users WHERE email = ?`),
  byId: db.prepare(`SELECT ${USER_COLUMNS} FROM users WHERE id = ?`),
  updateNames: db.prepare(
    'UPDATE users SET first_name = ?, last_name = ?, updated_at = ? WHERE id = ?',
  ),
};

// ---------------------------------------------------------------- passwords

// The Rust argon2 crate's defaults (OWASP's recommendation): argon2id v19, 19 MiB,
// 2 passes, 1 lane, 32-byte hash, 16-byte salt, as a PHC string.
const ARGON2 = {
  type: argon2.argon2id,
  version: 0x13,
  memoryCost: 19456,
  timeCost: 2,
  parallelism: 1,
  hashLength: 32,
  saltLength: 16,
};

// A hash of a password nobody has, checked when the email is unknown so that a login for
// an unknown user takes as long as one for a known user (the Rust service's decoy).
const DECOY =
  '$argon2id$v=19$m=19456,t=2,p=1$YmVydGgtZGVjb3ktc2FsdA$2iXTPeu5hLHNKnMrlq9rWzLCpGC/ExhAnqUeF1GCXwc';

function hashPassword(password) {
  return argon2.hash(password, ARGON2);
}

// Whether `password` matches `stored`; without a stored hash, checks the decoy and fails.
async function verifyPassword(password, stored) {
  let matches = false;
  try {
    matches = await argon2.verify(stored ?? DECOY, password);
  } catch {
    matches = false;
  }
  return matches && stored != null;
}

// ---------------------------------------------------------------- tokens

function issueToken(user) {
  const now = Math.floor(Date.now() / 1000);
  // Claims in the order the Rust service writes them (serde_json sorts keys), so the
  // tokens are the same bytes.
  return jwt.sign(
    { email: user.email, exp: now + TOKEN_TTL_SECONDS, iat: now, iss: 'berth-user', sub: user.id },
    JWT_SECRET,
    { algorithm: 'HS256' },
  );
}

const AUTH_MISSING = 'this route needs `Authorization: Bearer <token>` (log in to get a token)';

// The user id (`sub`) of a valid token in an `Authorization` header value: the checks of
// berth's gateway (HS256 only, signature, `exp` required, `nbf`, 30 s leeway, a subject
// that fits in a header).
function verifyBearer(authorization) {
  const invalid = (why) => new ApiError(401, 'TOKEN_INVALID', `the bearer token is not valid: ${why}`);
  if (authorization === undefined) throw new ApiError(401, 'AUTH_REQUIRED', AUTH_MISSING);
  const value = authorization.trim();
  const space = value.indexOf(' ');
  if (space < 0 || value.slice(0, space).toLowerCase() !== 'bearer') {
    throw new ApiError(401, 'AUTH_REQUIRED', AUTH_MISSING);
  }
  const token = value.slice(space + 1).trim();
  if (token.split('.').length < 3) throw invalid('not a JWT');
  let claims;
  try {
    claims = jwt.verify(token, JWT_SECRET, {
      algorithms: ['HS256'],
      clockTolerance: JWT_LEEWAY_SECONDS,
    });
  } catch (e) {
    if (e instanceof jwt.TokenExpiredError) {
      throw new ApiError(401, 'TOKEN_EXPIRED', 'the bearer token has expired: log in again');
    }
    if (e instanceof jwt.NotBeforeError) throw invalid('not valid yet');
    if (e.message === 'invalid algorithm') throw invalid('only HS256 tokens are accepted');
    if (e.message === 'invalid signature' || e.message === 'jwt signature is required') {
      throw invalid('bad signature');
    }
    throw invalid('malformed claims');
  }
  if (!Number.isSafeInteger(claims.exp) || claims.exp < 0 || typeof claims.sub !== 'string') {
    throw invalid('malformed claims');
  }
  if (claims.sub.length === 0 || claims.sub.length > 128 || !/^[\x21-\x7e]+$/.test(claims.sub)) {
    throw invalid('bad subject');
  }
  return claims.sub;
}

// ---------------------------------------------------------------- errors

// `{"error":{"code":"…","message":"…","details":[…]},"traceId":"…"}`
class ApiError extends Error {
  constructor(status, code, message, { details = [], headers = {} } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    this.headers = headers;
  }
}

function validationError(details) {
  const fields = details.map((d) => d.field).join(', ');
  return new ApiError(400, 'VALIDATION_FAILED', `invalid fields: ${fields}`, { details });
}

const methodNotAllowed = (allow) =>
  new ApiError(405, 'METHOD_NOT_ALLOWED', `use ${allow}`, { headers: { allow } });

const routeNotFound = (path) => new ApiError(404, 'ROUTE_NOT_FOUND', `no route matches ${path}`);

function sendJson(res, status, body) {
  res.status(status);
  // setHeader: Express's res.set/res.json would add `; charset=utf-8`, which berth does not.
  res.setHeader('content-type', 'application/json');
  res.send(Buffer.from(JSON.stringify(body)));
}

function sendError(req, res, error) {
  res.set(error.headers);
  // Keys in serde_json's (sorted) order, as the Rust service writes them.
  const body = { code: error.code };
  if (error.details.length > 0) body.details = error.details;
  body.message = error.message;
  sendJson(res, error.status, { error: body, traceId: req.traceId });
}

// ---------------------------------------------------------------- request bodies

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

// What serde says of a JSON value that is not the type it expected.
function unexpected(value) {
  if (value === null) return 'null';
  if (typeof value === 'boolean') return `boolean \`${value}\``;
  if (typeof value === 'number') {
    return Number.isInteger(value) ? `integer \`${value}\`` : `floating point \`${value}\``;
  }
  if (typeof value === 'string') return `string ${JSON.stringify(value)}`;
  if (Array.isArray(value)) return 'sequence';
  return 'map';
}

function expectedFields(names) {
  const quoted = names.map((n) => `\`${n}\``);
  if (quoted.length === 1) return `expected ${quoted[0]}`;
  if (quoted.length === 2) return `expected ${quoted[0]} or ${quoted[1]}`;
  return `expected one of ${quoted.join(', ')}`;
}

// Parses a JSON request body into `fields` ({name: 'required' | 'optional'} string fields,
// no others): 415 when it is not JSON, 400 INVALID_JSON when it does not parse, 400
// VALIDATION_FAILED naming the field when it does not fit (as the Rust service's serde
// structs with `deny_unknown_fields` answer).
function parseJson(req, struct, fields) {
  const contentType = req.headers['content-type'] ?? '';
  if (contentType.split(';')[0].trim().toLowerCase() !== 'application/json') {
    throw new ApiError(
      415,
      'UNSUPPORTED_MEDIA_TYPE',
      'send the body as JSON with `content-type: application/json`',
    );
  }
  let value;
  try {
    value = JSON.parse(utf8.decode(req.body ?? Buffer.alloc(0)));
  } catch (e) {
    throw new ApiError(400, 'INVALID_JSON', `the body is not valid JSON: ${e.message}`);
  }
  const invalid = (field, message) => validationError([{ field, message }]);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw invalid('body', `invalid type: ${unexpected(value)}, expected struct ${struct}`);
  }
  const names = Object.keys(fields);
  const out = {};
  for (const [key, v] of Object.entries(value)) {
    if (!Object.hasOwn(fields, key)) {
      throw invalid(key, `unknown field \`${key}\`, ${expectedFields(names)}`);
    }
    if (v === null && fields[key] === 'optional') continue;
    if (typeof v !== 'string') throw invalid(key, `invalid type: ${unexpected(v)}, expected a string`);
    out[key] = v;
  }
  for (const name of names) {
    if (fields[name] === 'required' && out[name] === undefined) {
      throw invalid('body', `missing field \`${name}\``);
    }
  }
  return out;
}

// ---------------------------------------------------------------- validation

const chars = (s) => {
  let n = 0;
  for (const _ of s) n++;
  return n;
};

// Field checks that report every invalid field at once.
class Validator {
  constructor() {
    this.errors = [];
  }

  check(ok, field, message) {
    if (!ok) this.errors.push({ field, message });
  }

  // A present string of `min..=max` characters after trimming.
  text(value, field, min, max) {
    const trimmed = (value ?? '').trim();
    if (value === undefined) this.check(false, field, 'is required');
    else {
      const len = chars(trimmed);
      this.check(len >= min && len <= max, field, `must be ${min} to ${max} characters`);
    }
    return trimmed;
  }

  finish() {
    if (this.errors.length > 0) throw validationError(this.errors);
  }
}

// An address with one `@`, a local part, and a dotted domain, without spaces.
function isEmail(s) {
  const at = s.indexOf('@');
  if (at < 0) return false;
  const local = s.slice(0, at);
  const domain = s.slice(at + 1);
  return (
    Buffer.byteLength(s) <= 254 &&
    local.length > 0 &&
    Buffer.byteLength(local) <= 64 &&
    !domain.includes('@') &&
    domain.includes('.') &&
    !domain.startsWith('.') &&
    !domain.endsWith('.') &&
    !/[\p{White_Space}\p{Cc}]/u.test(s)
  );
}

// ---------------------------------------------------------------- time and ids

// Now, as RFC 3339 UTC with microseconds and a fixed width, so strings sort like times.
function now() {
  const micros = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  const iso = new Date(Math.floor(micros / 1000)).toISOString();
  return `${iso.slice(0, 23)}${String(micros % 1000).padStart(3, '0')}Z`;
}

// `User` of the public API: never the password hash. Field order of the Rust struct.
const userFromRow = (row) => ({
  id: row.id,
  email: row.email,
  firstName: row.first_name,
  lastName: row.last_name,
  createdAt: row.created_at,
});

// The same user with its keys sorted, as the Rust service writes it inside `json!({…})`.
const sortedUser = (u) => ({
  createdAt: u.createdAt,
  email: u.email,
  firstName: u.firstName,
  id: u.id,
  lastName: u.lastName,
});

// ---------------------------------------------------------------- the gateway's part

const app = express();
app.disable('x-powered-by');
app.set('etag', false);
app.set('case sensitive routing', true);

const USERS_ROUTE = /^\/api\/v1\/users(\/|$)/;
const PUBLIC_ROUTE = /^\/api\/v1\/users\/(register|login)\/?$/;

function nonzeroHex(bytes) {
  for (;;) {
    const hex = crypto.randomBytes(bytes).toString('hex');
    if (!/^0+$/.test(hex)) return hex;
  }
}

// W3C trace context: the caller's trace id if its `traceparent` is valid, else a new one.
function parseTraceparent(header) {
  if (typeof header !== 'string') return null;
  const [version, trace, span, flags, ...rest] = header.trim().split('-');
  if (flags === undefined) return null;
  if (!/^[0-9a-fA-F]{2}$/.test(version) || version.toLowerCase() === 'ff') return null;
  if (version === '00' && rest.length > 0) return null;
  if (!/^[0-9a-f]{32}$/.test(trace) || /^0+$/.test(trace)) return null;
  if (!/^[0-9a-fA-F]{16}$/.test(span) || /^0+$/.test(span)) return null;
  if (!/^[0-9a-fA-F]{2}$/.test(flags)) return null;
  return { traceId: trace, sampled: (parseInt(flags, 16) & 1) === 1 };
}

app.use((req, res, next) => {
  const parent = parseTraceparent(req.headers.traceparent);
  req.traceId = parent ? parent.traceId : nonzeroHex(16);
  const sampled = parent ? parent.sampled : true;
  const requestId = req.headers['x-request-id'];
  res.set(
    'x-request-id',
    typeof requestId === 'string' && /^[\x21-\x7e]{1,128}$/.test(requestId)
      ? requestId
      : crypto.randomUUID(),
  );
  res.set('traceparent', `00-${req.traceId}-${nonzeroHex(8)}-${sampled ? '01' : '00'}`);
  next();
});

// Routing ("/api/v1/users/..." only), then the bearer token unless the route is public.
app.use((req, res, next) => {
  if (!USERS_ROUTE.test(req.path)) return next(routeNotFound(req.path));
  if (!PUBLIC_ROUTE.test(req.path)) {
    try {
      req.userId = verifyBearer(req.headers.authorization);
    } catch (e) {
      e.headers = { 'www-authenticate': 'Bearer' };
      return next(e);
    }
  }
  next();
});

app.use(express.raw({ type: () => true, limit: MAX_REQUEST_BYTES, inflate: false }));

// ---------------------------------------------------------------- the user service

// Express 5 hands what a handler throws, or its rejected promise, to the error handler.
app.post('/api/v1/users/register', async (req, res) => {
  const body = parseJson(req, 'Registration', {
    email: 'optional',
    password: 'optional',
    firstName: 'optional',
    lastName: 'optional',
  });
  const v = new Validator();
  const email = (body.email ?? '').trim().toLowerCase();
  v.check(body.email !== undefined, 'email', 'is required');
  v.check(body.email === undefined || isEmail(email), 'email', 'must be an email address');
  const password = body.password ?? '';
  v.check(body.password !== undefined, 'password', 'is required');
  const len = chars(password);
  v.check(
    body.password === undefined || (len >= 8 && len <= 256),
    'password',
    'must be 8 to 256 characters',
  );
  const firstName = v.text(body.firstName, 'firstName', 1, 100);
  const lastName = v.text(body.lastName, 'lastName', 1, 100);
  v.finish();

  const user = { id: crypto.randomUUID(), email, firstName, lastName, createdAt: now() };
  const hash = await hashPassword(password);
  try {
    sql.insert.run(user.id, user.email, hash, firstName, lastName, user.createdAt, user.createdAt);
  } catch (e) {
    if (/UNIQUE constraint failed/.test(e.message)) {
      throw new ApiError(409, 'USER_EXISTS', 'a user with this email already exists');
    }
    throw e;
  }
  sendJson(res, 201, { user: sortedUser(user) });
});

app.post('/api/v1/users/login', async (req, res) => {
  const body = parseJson(req, 'Login', { email: 'required', password: 'required' });
  const row = sql.byEmail.get(body.email.trim().toLowerCase());
  // An unknown email costs one hash check too, so timing does not reveal who is registered.
  const passwordOk = await verifyPassword(body.password, row?.password_hash);
  if (!row || !passwordOk) {
    throw new ApiError(401, 'INVALID_CREDENTIALS', 'the email or password is wrong');
  }
  const user = userFromRow(row);
  sendJson(res, 200, { token: issueToken(user), user: sortedUser(user) });
});

app.all(['/api/v1/users/register', '/api/v1/users/login'], (req, res, next) =>
  next(methodNotAllowed('POST')),
);

// Only the caller's own profile: anyone else's is 403, whether or not it exists.
function ownId(req) {
  if (req.userId !== req.params.id) {
    throw new ApiError(403, 'FORBIDDEN', 'you can only access your own profile');
  }
  return req.params.id;
}

function loadUser(id) {
  const row = sql.byId.get(id);
  if (!row) throw new ApiError(404, 'USER_NOT_FOUND', 'user not found');
  return userFromRow(row);
}

// Express would answer HEAD with the GET handler; the Rust service does not.
app.head('/api/v1/users/:id', (req, res, next) => next(methodNotAllowed('GET, PATCH')));

app.get('/api/v1/users/:id', (req, res) => {
  sendJson(res, 200, loadUser(ownId(req)));
});

app.patch('/api/v1/users/:id', (req, res) => {
  const id = ownId(req);
  const body = parseJson(req, 'ProfileUpdate', { firstName: 'optional', lastName: 'optional' });
  const v = new Validator();
  const firstName =
    body.firstName !== undefined ? v.text(body.firstName, 'firstName', 1, 100) : undefined;
  const lastName =
    body.lastName !== undefined ? v.text(body.lastName, 'lastName', 1, 100) : undefined;
  v.finish();
  const user = loadUser(id);
  user.firstName = firstName ?? user.firstName;
  user.lastName = lastName ?? user.lastName;
  sql.updateNames.run(user.firstName, user.lastName, now(), id);
  sendJson(res, 200, user);
});

app.all('/api/v1/users/:id', (req, res, next) => next(methodNotAllowed('GET, PATCH')));

app.use((req, res, next) => next(routeNotFound(req.path)));

// Every failure as the API's JSON error.
// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  let error = err;
  if (!(err instanceof ApiError)) {
    if (err.type === 'entity.too.large') {
      error = new ApiError(
        413,
        'BODY_TOO_LARGE',
        `the request body is larger than the limit of ${MAX_REQUEST_BYTES} bytes`,
        { headers: { connection: 'close' } },
      );
    } else if (err.type && err.status < 500) {
      // body-parser could not read the body (aborted, wrong length, encoded).
      error = new ApiError(400, 'BODY_UNREADABLE', `the request body could not be read: ${err.message}`);
    } else {
      // A failure of this service itself; the detail goes to the log, not the client.
      console.error(`internal error: ${err.stack ?? err}`);
      error = new ApiError(500, 'INTERNAL', 'the service failed; the trace id finds it in the log');
    }
  }
  sendError(req, res, error);
});

// ---------------------------------------------------------------- serve

const server = app.listen(Number(PORT), '127.0.0.1', () => {
  console.log(`listening on ${server.address().port}`);
});
// Idle keep-alive connections are kept longer than a load balancer's (Node's default is 5 s).
server.keepAliveTimeout = 65_000;
server.on('error', (e) => fail(`cannot listen on 127.0.0.1:${PORT}: ${e.message}`));

function shutdown() {
  server.close(() => {
    db.close();
    process.exit(0);
  });
  server.closeIdleConnections();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
