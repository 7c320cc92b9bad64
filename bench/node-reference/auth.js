// What a Node team would bolt onto the seed: an HS256 JWT check at the Socket.IO
// handshake and a POST /auth/login route that verifies argon2id hashes.
//
// The secret is a KeyObject (`crypto.createSecretKey`): given a string secret,
// jsonwebtoken re-imports it on every verify (~600 µs instead of ~10 µs), which
// would make the reference look slower than a competent Node team's server.
'use strict';

const crypto = require('node:crypto');
const argon2 = require('argon2');
const jwt = require('jsonwebtoken');

const ISSUER = 'callgate';
const AUDIENCE = 'callgate';
const TOKEN_TTL_SECS = 3600;

/**
 * The signing and verifying key.
 * @param {string} secret at least 32 bytes
 */
function secretKey(secret) {
  if (!secret || Buffer.byteLength(secret) < 32) {
    throw new Error('set CALLGATE_JWT_SECRET to a secret of at least 32 bytes');
  }
  return crypto.createSecretKey(Buffer.from(secret, 'utf8'));
}

/**
 * `io.use` middleware: verifies `auth.token` and binds the socket to the token's
 * `sub`, in the seed's `userSocketMap` (so `userOnline` is no longer needed).
 */
function handshakeAuth(key, userSocketMap) {
  const options = { algorithms: ['HS256'], issuer: ISSUER, audience: AUDIENCE };
  return (socket, next) => {
    const token = socket.handshake.auth && socket.handshake.auth.token;
    if (typeof token !== 'string') {
      return next(new Error('unauthorized'));
    }
    let claims;
    try {
      claims = jwt.verify(token, key, options);
    } catch (err) {
      return next(new Error(err.name === 'TokenExpiredError' ? 'token_expired' : 'unauthorized'));
    }
    if (typeof claims.sub !== 'string') {
      return next(new Error('unauthorized'));
    }
    socket.data.userId = claims.sub;
    userSocketMap.set(claims.sub, socket.id);
    next();
  };
}

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
      } else {
        chunks.push(chunk);
      }
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/**
 * POST /auth/login {username, password} → 200 {token, expiresAt, user} or 401,
 * the same shapes as callgate's route.
 */
function loginHandler(key, usersByName) {
  return async (req, res) => {
    let body;
    try {
      body = JSON.parse(await readBody(req, 16 * 1024));
    } catch {
      return sendJson(res, 400, { error: { code: 'bad_request', message: 'invalid JSON body' } });
    }
    const user = usersByName.get(body.username);
    const ok = user && user.passwordHash && typeof body.password === 'string'
      && await argon2.verify(user.passwordHash, body.password);
    if (!ok) {
      return sendJson(res, 401, { error: { code: 'invalid_credentials', message: 'invalid username or password' } });
    }
    const token = jwt.sign({ name: user.displayName }, key, {
      algorithm: 'HS256',
      subject: user.id,
      issuer: ISSUER,
      audience: AUDIENCE,
      expiresIn: TOKEN_TTL_SECS,
      notBefore: 0,
      jwtid: crypto.randomUUID(),
    });
    const expiresAt = Math.floor(Date.now() / 1000) + TOKEN_TTL_SECS;
    sendJson(res, 200, { token, expiresAt, user: { id: user.id, username: user.username, displayName: user.displayName } });
  };
}

module.exports = { secretKey, handshakeAuth, loginHandler, sendJson };
