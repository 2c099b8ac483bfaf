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
// JWT_ISSUER (berth-user unless set), TOKEN_TTL_SECONDS (3600 unless set). No request
// logging.

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
const JWT_ISSUER = process.env.JWT_ISSUER ?? 'berth-user';

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
  // The normalised email first, then the form rows written before NFC have.
  byEmail: db.prepare(
    `SELECT ${USER_COLUMNS}, password_hash FROM users WHERE email IN (?, ?)
     ORDER BY email = ? DESC LIMIT 1`,
  ),
  emailTaken: db.prepare('SELECT 1 FROM users WHERE email = ?'),
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
    { email: user.email, exp: now + TOKEN_TTL_SECONDS, iat: now, iss: JWT_ISSUER, sub: user.id },
    JWT_SECRET,
    { algorithm: 'HS256' },
  );
}

const AUTH_MISSING = 'this route needs `Authorization: Bearer <token>` (log in to get a token)';

// Algorithms the Rust jsonwebtoken crate knows; any other `alg` is a malformed header there.
const KNOWN_ALGS = new Set([
  'HS256', 'HS384', 'HS512', 'ES256', 'ES384', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384',
  'PS512', 'EdDSA',
]);

// The user id (`sub`) of a valid token in an `Authorization` header value: the checks of
// berth's gateway, in its order (the Rust jsonwebtoken crate's): HS256 only, the signature,
// `exp`, `iss` and `sub` required, expiry and `nbf` with 30 s leeway, the issuer, no
// audience, a subject that fits in a header.
function verifyBearer(authorization) {
  const invalid = (why) => new ApiError(401, 'TOKEN_INVALID', `the bearer token is not valid: ${why}`);
  const malformed = () => invalid('not a well-formed JWT');
  if (authorization === undefined) throw new ApiError(401, 'AUTH_REQUIRED', AUTH_MISSING);
  const value = authorization.trim();
  const space = value.indexOf(' ');
  if (space < 0 || value.slice(0, space).toLowerCase() !== 'bearer') {
    throw new ApiError(401, 'AUTH_REQUIRED', AUTH_MISSING);
  }
  const token = value.slice(space + 1).trim();
  const decoded = token.split('.').length === 3 ? jwt.decode(token, { complete: true }) : null;
  if (decoded === null || typeof decoded.payload !== 'object' || decoded.payload === null) {
    throw malformed();
  }
  if (!KNOWN_ALGS.has(decoded.header.alg)) throw malformed();
  if (decoded.header.alg !== 'HS256') throw invalid('only HS256 tokens are accepted');
  try {
    // The signature only; the claims are checked below, as the gateway checks them.
    jwt.verify(token, JWT_SECRET, {
      algorithms: ['HS256'],
      ignoreExpiration: true,
      ignoreNotBefore: true,
    });
  } catch (e) {
    if (e.message === 'invalid signature') throw invalid('bad signature');
    throw malformed();
  }
  const claims = decoded.payload;
  const whole = (n) => Number.isSafeInteger(n) && n >= 0;
  if (!whole(claims.exp) || typeof claims.iss !== 'string' || typeof claims.sub !== 'string') {
    throw invalid('a required claim is missing');
  }
  if (claims.nbf !== undefined && !whole(claims.nbf)) throw malformed();
  const now = Math.floor(Date.now() / 1000);
  if (claims.exp < now - JWT_LEEWAY_SECONDS) {
    throw new ApiError(401, 'TOKEN_EXPIRED', 'the bearer token has expired: log in again');
  }
  if (claims.nbf !== undefined && claims.nbf > now + JWT_LEEWAY_SECONDS) {
    throw invalid('not valid yet');
  }
  if (claims.iss !== JWT_ISSUER) throw invalid('issued by someone else');
  if (claims.aud !== undefined) throw invalid('meant for someone else');
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

// Parses a JSON request body into `fields` (string fields, no others, each 'required' as
// serde's `String`, 'optional' as `Option<String>`, where null is absent, or 'notNull' as
// `common::validate::not_null`, absent or a string): 415 when it is not JSON, 400 INVALID_JSON when it does not parse, 400
// VALIDATION_FAILED naming the field when it does not fit (as the Rust service's serde
// structs with `deny_unknown_fields` answer).
function parseJson(req, fields) {
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
    throw invalid('body', `invalid type: ${unexpected(value)}, expected a JSON object`);
  }
  const names = Object.keys(fields);
  const out = {};
  for (const [key, v] of Object.entries(value)) {
    if (!Object.hasOwn(fields, key)) {
      throw invalid(key, `unknown field \`${key}\`, ${expectedFields(names)}`);
    }
    if (v === null && fields[key] === 'optional') continue;
    // serde's `String` reads null as the wrong type, `Option<String>` as absent.
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

// components/common/src/{text,validate}.rs, rule for rule and message for message.

const chars = (s) => {
  let n = 0;
  for (const _ of s) n++;
  return n;
};

// Characters stored text may not hold: control, format, line and paragraph separators.
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;
const isInvisible = (c) => INVISIBLE.test(c);
// Spaces that may surround text and are trimmed: White_Space but not invisible.
const isEdgeSpace = (c) => /\p{White_Space}/u.test(c) && !isInvisible(c);

// Why `s` cannot be stored, naming its first invisible character; null when it can.
function invisibleProblem(s) {
  for (const c of s) {
    if (!isInvisible(c)) continue;
    const kind = /\p{Cc}/u.test(c)
      ? 'a control character'
      : /\p{Cf}/u.test(c)
        ? 'an invisible formatting character'
        : 'a line or paragraph separator';
    const code = c.codePointAt(0).toString(16).toUpperCase().padStart(4, '0');
    return `contains U+${code}, ${kind}; send the text without it`;
  }
  return null;
}

function trimEdges(s) {
  const cs = [...s];
  let start = 0;
  let end = cs.length;
  while (start < end && isEdgeSpace(cs[start])) start++;
  while (end > start && isEdgeSpace(cs[end - 1])) end--;
  return cs.slice(start, end).join('');
}

// The form an email is stored and looked up in: trimmed, NFC, lower case (then NFC again);
// throws the problem for an address holding invisible characters.
function normalizeEmail(raw) {
  const problem = invisibleProblem(raw);
  if (problem) throw problem;
  return trimEdges(raw).normalize('NFC').toLowerCase().normalize('NFC');
}

// How emails were keyed before NFC: trimmed and lowercased.
const legacyEmailKey = (raw) => raw.replace(/^\p{White_Space}+|\p{White_Space}+$/gu, '').toLowerCase();

// An address as RFC 5321 and RFC 6531 write one (common::validate::is_email).
function isEmail(s) {
  const at = s.lastIndexOf('@');
  if (at < 0) return false;
  const local = s.slice(0, at);
  const domain = s.slice(at + 1);
  const atext = (c) =>
    /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]$/.test(c) ||
    (c.codePointAt(0) > 0x7f && !/\p{White_Space}/u.test(c) && !isInvisible(c));
  const label = (l) =>
    l.length >= 1 &&
    l.length <= 63 &&
    /^[A-Za-z0-9-]+$/.test(l) &&
    !l.startsWith('-') &&
    !l.endsWith('-') &&
    (l.slice(2, 4) !== '--' || l.slice(0, 2).toLowerCase() === 'xn');
  const labels = domain.split('.');
  return (
    Buffer.byteLength(s) <= 254 &&
    Buffer.byteLength(local) <= 64 &&
    local.split('.').every((atom) => atom.length > 0 && [...atom].every(atext)) &&
    Buffer.byteLength(domain) <= 253 &&
    labels.length >= 2 &&
    labels.every(label)
  );
}

// Field checks that report every invalid field at once.
class Validator {
  constructor() {
    this.errors = [];
  }

  check(ok, field, message) {
    if (!ok) this.errors.push({ field, message });
  }

  // A present string with no invisible characters, at most `max` characters as sent and at
  // least `min` once trimmed; returns it trimmed.
  text(value, field, min, max) {
    if (value === undefined) {
      this.check(false, field, 'is required');
      return '';
    }
    const trimmed = trimEdges(value);
    const problem = invisibleProblem(value);
    if (problem) this.check(false, field, problem);
    else if (chars(value) > max) this.check(false, field, `must be at most ${max} characters`);
    else if (chars(trimmed) < min) {
      this.check(
        false,
        field,
        min === 1
          ? 'must not be empty or only spaces'
          : `must be at least ${min} characters, not counting spaces around it`,
      );
    }
    return trimmed;
  }

  finish() {
    if (this.errors.length > 0) throw validationError(this.errors);
  }
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
  const body = parseJson(req, {
    email: 'optional',
    password: 'optional',
    firstName: 'optional',
    lastName: 'optional',
  });
  const v = new Validator();
  let email = '';
  if (body.email === undefined) v.check(false, 'email', 'is required');
  else {
    try {
      email = normalizeEmail(body.email);
      // The address as sent, which is what `format: idn-email` judges too.
      v.check(
        isEmail(body.email),
        'email',
        'must be an email address such as ada@example.com, without spaces around it',
      );
    } catch (problem) {
      v.check(false, 'email', problem);
    }
  }
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
  const exists = () =>
    new ApiError(409, 'USER_EXISTS', 'a user with this email already exists; log in instead');
  // A row written before emails were NFC-normalised keys the same address differently.
  const legacy = legacyEmailKey(body.email ?? '');
  if (legacy !== email && sql.emailTaken.get(legacy)) throw exists();
  try {
    sql.insert.run(user.id, user.email, hash, firstName, lastName, user.createdAt, user.createdAt);
  } catch (e) {
    if (/UNIQUE constraint failed/.test(e.message)) throw exists();
    throw e;
  }
  sendJson(res, 201, { user: sortedUser(user) });
});

app.post('/api/v1/users/login', async (req, res) => {
  const body = parseJson(req, { email: 'required', password: 'required' });
  let email;
  try {
    email = normalizeEmail(body.email);
  } catch (problem) {
    throw validationError([{ field: 'email', message: problem }]);
  }
  const row = sql.byEmail.get(email, legacyEmailKey(body.email), email);
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
  // Both names optional; `null` is refused, not read as "unchanged".
  const body = parseJson(req, { firstName: 'notNull', lastName: 'notNull' });
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
