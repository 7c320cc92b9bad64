// The Node reference server: socket.io 4.8 with the seed's handlers unchanged,
// an HS256 handshake check and an argon2id login route.
//
//   CALLGATE_JWT_SECRET=... node server.js --listen 127.0.0.1:4102 --seed seed.json
//
// SEED_LOG=1 turns the seed's console.log lines back on.
'use strict';

const http = require('node:http');
const { parseArgs } = require('node:util');
const { Server } = require('socket.io');

const { attachSeedHandlers } = require('./seed-handlers');
const { loadDirectory } = require('./directory');
const { secretKey, handshakeAuth, loginHandler, sendJson } = require('./auth');

const { values: args } = parseArgs({
  options: {
    listen: { type: 'string', default: '127.0.0.1:4000' },
    seed: { type: 'string' },
  },
});
if (!args.seed) {
  console.error('usage: node server.js --listen HOST:PORT --seed SEED.json');
  process.exit(2);
}
const separator = args.listen.lastIndexOf(':');
const host = args.listen.slice(0, separator);
const port = Number(args.listen.slice(separator + 1));

const key = secretKey(process.env.CALLGATE_JWT_SECRET);
const { usersByName, Group } = loadDirectory(args.seed);
const userSocketMap = new Map(); // userId -> socketId, as in the seed

const login = loginHandler(key, usersByName);
const server = http.createServer({ noDelay: true }, (req, res) => {
  if (req.method === 'POST' && req.url === '/auth/login') {
    login(req, res).catch(() => sendJson(res, 500, { error: { code: 'internal', message: 'internal error' } }));
  } else if (req.method === 'GET' && req.url === '/healthz') {
    sendJson(res, 200, { status: 'ok' });
  } else {
    sendJson(res, 404, { error: { code: 'not_found', message: 'not found' } });
  }
});

// The same heartbeat as callgate's defaults.
const io = new Server(server, { pingInterval: 25000, pingTimeout: 20000 });
io.use(handshakeAuth(key, userSocketMap));
attachSeedHandlers(io, { userSocketMap, Group });

server.listen(port, host, () => {
  console.error(`node reference listening on ${host}:${port} (${usersByName.size} users)`);
});

const stop = () => {
  io.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
