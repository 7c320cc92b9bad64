// A small Socket.IO client: protocol v5 (socket.io-client 4.x) over an
// Engine.IO v4 websocket, default namespace only, text frames only.
//
// It exists so that the demo has no third-party code and no build step, and
// so that you can see every byte a Socket.IO client sends. A real frontend
// should use the official `socket.io-client`; its API is the same in spirit:
//
//   const socket = new Socket("/socket.io/", { auth: () => ({ token }) });
//   socket.on("incomingVideoCall", (call) => ...);      // server events
//   socket.on("connect", () => ...);                    // local events: connect,
//   socket.on("connect_error", (err) => err.message);   //   connect_error, disconnect,
//   socket.connect();                                    //   reconnecting
//   const reply = await socket.request("initiateVideoCall", { receiverId }); // with an ack
//
// The wire format, one websocket text frame per Engine.IO packet:
//
//   Engine.IO   0{"sid",...,"pingInterval","pingTimeout"}  open (server -> client)
//               2 ping (server -> client)   3 pong (client -> server)
//               4<Socket.IO packet> message 1 close
//   Socket.IO   0{auth}         CONNECT, client -> server; the server answers 0{"sid"}
//               4{"message"}    CONNECT_ERROR (e.g. "unauthorized", "token_expired")
//               2[name,arg]     EVENT; 2<id>[name,arg] asks for an acknowledgement
//               3<id>[reply]    ACK, the answer to event <id>
//               1               DISCONNECT
//
// So "42[\"userOnline\",\"u1\"]" is an event, and "4317[{\"ok\":true}]" is the
// ack of event 17.

const EIO = { OPEN: "0", CLOSE: "1", PING: "2", PONG: "3", MESSAGE: "4" };
const SIO = { CONNECT: "0", DISCONNECT: "1", EVENT: "2", ACK: "3", CONNECT_ERROR: "4" };

/** Errors a new token cannot fix by retrying the same one: stop reconnecting. */
const FATAL_CONNECT_ERRORS = new Set(["unauthorized", "token_expired"]);

export class Socket {
  /**
   * @param {string} path  the Socket.IO path on this page's host, e.g. "/socket.io/"
   * @param {object} options
   * @param {() => object} options.auth  returns the CONNECT payload, e.g. { token }; called on every (re)connect
   * @param {number} [options.ackTimeoutMs]  how long request() waits for an ack
   */
  constructor(path, { auth, ackTimeoutMs = 10000 }) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.url = `${scheme}//${location.host}${path}?EIO=4&transport=websocket`;
    this.auth = auth;
    this.ackTimeoutMs = ackTimeoutMs;
    this.listeners = new Map(); // event name -> Set of functions
    this.pendingAcks = new Map(); // ack id -> { resolve, reject, timer }
    this.nextAckId = 0;
    this.ws = null;
    this.connected = false;
    this.wantConnection = false;
    this.attempts = 0; // failed attempts since the last successful connect
    this.heartbeat = null;
    this.retryTimer = null;
  }

  // ---- events ---------------------------------------------------------------

  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(fn);
    return this;
  }

  off(event, fn) {
    this.listeners.get(event)?.delete(fn);
    return this;
  }

  fire(event, ...args) {
    for (const fn of this.listeners.get(event) ?? []) {
      try {
        fn(...args);
      } catch (err) {
        console.error(`listener for ${event} failed`, err);
      }
    }
  }

  // ---- connection ------------------------------------------------------------

  /** Opens the connection, and keeps reopening it until disconnect(). */
  connect() {
    this.wantConnection = true;
    this.open();
  }

  /** Closes the connection for good (a later connect() starts again). */
  disconnect() {
    this.wantConnection = false;
    clearTimeout(this.retryTimer);
    if (this.connected) this.sendEngine(EIO.MESSAGE + SIO.DISCONNECT);
    this.closeTransport("client disconnect");
  }

  open() {
    clearTimeout(this.retryTimer);
    const ws = new WebSocket(this.url);
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
    };
    ws.onmessage = (frame) => {
      if (this.ws === ws && typeof frame.data === "string") this.onEnginePacket(frame.data);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return; // an old transport we already gave up on
      if (!opened) {
        // The browser does not say why a websocket failed to open. Here it is
        // usually a server that is down, or one that refused this page's Origin
        // with 403 (server.allowed_origins).
        this.fire("connect_error", new Error("websocket_failed"));
      }
      this.closeTransport("transport close");
    };
  }

  /** Drops the current transport, tells listeners, and schedules a retry. */
  closeTransport(reason) {
    const ws = this.ws;
    this.ws = null;
    clearTimeout(this.heartbeat);
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close();
    const wasConnected = this.connected;
    this.connected = false;
    for (const [id, pending] of this.pendingAcks) {
      clearTimeout(pending.timer);
      pending.reject(new Error("disconnected"));
      this.pendingAcks.delete(id);
    }
    if (wasConnected) this.fire("disconnect", reason);
    if (this.wantConnection) this.scheduleRetry();
  }

  /** Exponential back-off with jitter: ~0.5 s, 1 s, 2 s, ... at most ~10 s. */
  scheduleRetry() {
    const base = Math.min(10000, 500 * 2 ** this.attempts);
    const delayMs = Math.round(base * (0.75 + Math.random() * 0.5));
    this.attempts += 1;
    this.fire("reconnecting", { attempt: this.attempts, delayMs });
    this.retryTimer = setTimeout(() => this.open(), delayMs);
  }

  /** If the server says nothing for pingInterval + pingTimeout, it is gone. */
  armHeartbeat() {
    clearTimeout(this.heartbeat);
    this.heartbeat = setTimeout(() => this.closeTransport("ping timeout"), this.pingInterval + this.pingTimeout);
  }

  // ---- Engine.IO -----------------------------------------------------------------

  sendEngine(packet) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(packet);
  }

  onEnginePacket(packet) {
    const type = packet[0];
    const body = packet.slice(1);
    if (type === EIO.OPEN) {
      const open = JSON.parse(body);
      this.pingInterval = open.pingInterval;
      this.pingTimeout = open.pingTimeout;
      this.armHeartbeat();
      // Join the default namespace, with the token in the CONNECT payload
      // (never in the URL: URLs end up in logs).
      this.sendEngine(EIO.MESSAGE + SIO.CONNECT + JSON.stringify(this.auth()));
    } else if (type === EIO.PING) {
      this.armHeartbeat();
      this.sendEngine(EIO.PONG);
    } else if (type === EIO.MESSAGE) {
      this.armHeartbeat();
      this.onSocketPacket(body);
    } else if (type === EIO.CLOSE) {
      this.closeTransport("transport close");
    }
  }

  // ---- Socket.IO -----------------------------------------------------------------

  onSocketPacket(packet) {
    const type = packet[0];
    // What follows the type: an optional ack id (digits), then JSON.
    const match = /^(\d*)(.*)$/s.exec(packet.slice(1));
    const id = match[1] === "" ? null : Number(match[1]);
    const data = match[2] === "" ? undefined : JSON.parse(match[2]);

    if (type === SIO.CONNECT) {
      this.connected = true;
      this.attempts = 0;
      this.fire("connect");
    } else if (type === SIO.CONNECT_ERROR) {
      const message = data?.message ?? "connect_error";
      if (FATAL_CONNECT_ERRORS.has(message)) this.wantConnection = false;
      this.fire("connect_error", new Error(message));
      this.closeTransport("connect error");
    } else if (type === SIO.EVENT) {
      const [event, ...args] = data;
      this.fire(event, ...args);
      // The demo never asks the browser for acks; a server that does gets an empty one.
      if (id !== null) this.sendEngine(EIO.MESSAGE + SIO.ACK + id + "[]");
    } else if (type === SIO.ACK) {
      const pending = this.pendingAcks.get(id);
      if (pending) {
        this.pendingAcks.delete(id);
        clearTimeout(pending.timer);
        pending.resolve(data[0]);
      }
    } else if (type === SIO.DISCONNECT) {
      // The server closed the session on purpose: do not come back on our own.
      this.wantConnection = false;
      this.closeTransport("io server disconnect");
    }
  }

  /** Sends an event without asking for an ack. */
  emit(event, payload) {
    if (!this.connected) return false;
    this.sendEngine(EIO.MESSAGE + SIO.EVENT + JSON.stringify([event, payload]));
    return true;
  }

  /**
   * Sends an event and resolves with the server's ack (callgate answers every
   * event with { ok: true, ... } or { ok: false, error: { code, message } }).
   * Rejects when not connected, on disconnect, or after ackTimeoutMs.
   */
  request(event, payload) {
    if (!this.connected) return Promise.reject(new Error("not_connected"));
    const id = this.nextAckId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pendingAcks.delete(id);
        reject(new Error("ack_timeout"));
      }, this.ackTimeoutMs);
      this.pendingAcks.set(id, { resolve, reject, timer });
      this.sendEngine(EIO.MESSAGE + SIO.EVENT + id + JSON.stringify([event, payload]));
    });
  }
}
