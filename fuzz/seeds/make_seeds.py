#!/usr/bin/env python3
"""Writes the committed seed inputs under fuzz/seeds/<target>/.

Run from anywhere: python3 fuzz/seeds/make_seeds.py. Standard library only.
The layouts are described at the top of each fuzz_targets/<target>.rs and in
docs/fuzzing.md. token_verify/issued-by-callgate is written by the fuzz target
itself (CALLGATE_FUZZ_MINT_TOKEN, see docs/fuzzing.md), not by this script.
"""

import base64
import hashlib
import hmac
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
# Must match SECRET in fuzz_targets/token_verify.rs.
SECRET = b"callgate-fuzz-secret-0123456789abcdefghi"
USER = "6860e2e85547033af89987ba"
FAR_FUTURE = 4102444800  # 2100-01-01

# Order of callgate::signaling::events::CLIENT_EVENTS (byte 0 of event_payload).
CLIENT_EVENTS = [
    "userOnline", "joinVideoRoom", "joinGroup", "leaveGroup", "groupCreated",
    "initiateVideoCall", "initiateGroupVideoCall", "acceptVideoCall",
    "rejectVideoCall", "endVideoCall",
]


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(header, claims, key=SECRET, sig=None):
    h = b64(json.dumps(header, separators=(",", ":")).encode())
    p = b64(json.dumps(claims, separators=(",", ":")).encode())
    if sig is None:
        sig = b64(hmac.new(key, f"{h}.{p}".encode(), hashlib.sha256).digest())
    return f"{h}.{p}.{sig}"


def claims(**over):
    c = {"sub": USER, "name": "Alice Adams", "iat": 1700000000, "nbf": 1700000000,
         "exp": FAR_FUTURE, "iss": "callgate", "aud": "callgate",
         "jti": "0b6f2a4e-7a43-4d0c-9a55-2f0c3c1e8f10"}
    c.update(over)
    return c


HS = {"alg": "HS256", "typ": "JWT"}

# token_verify: first byte < 0x80 means "the whole input is the token".
write("token_verify", "valid-until-2100", jwt(HS, claims()))
write("token_verify", "expired-genuine", jwt(HS, claims(exp=1700000600)))
write("token_verify", "not-yet-valid", jwt(HS, claims(nbf=FAR_FUTURE - 10)))
write("token_verify", "wrong-key", jwt(HS, claims(), key=b"x" * 40))
write("token_verify", "alg-none", jwt({"alg": "none", "typ": "JWT"}, claims(), sig=""))
write("token_verify", "alg-hs512", jwt({"alg": "HS512"}, claims()))
write("token_verify", "aud-array", jwt(HS, claims(aud=["other", "callgate"])))
write("token_verify", "numeric-sub", jwt(HS, claims(sub=12345)))
write("token_verify", "not-a-jwt", "not.a.jwt")
# 0x80..0xBF: structured; 0xC0..0xFF: template (all-zero picks = all good claims).
write("token_verify", "structured-zeros", b"\x80" + bytes(48))
write("token_verify", "structured-mixed", b"\x80" + bytes(range(1, 97)))
write("token_verify", "template-all-good", b"\xc0" + bytes(16))
write("token_verify", "template-mixed", b"\xc0" + bytes([3, 5, 2, 7, 4, 1, 0, 9, 1, 2, 3]))

# event_payload: byte 0 = event index (< 0xF0) or 0xF0 + "name\n"; byte 1 even = JSON.
def event(name, payload, mode=0):
    body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    if isinstance(body, str):
        body = body.encode()
    return bytes([CLIENT_EVENTS.index(name), mode]) + body


CALL = "123e4567-e89b-42d3-a456-426614174000"
write("event_payload", "userOnline-bare", event("userOnline", USER))
write("event_payload", "joinVideoRoom", event("joinVideoRoom", {"userId": USER}))
write("event_payload", "joinGroup-bare", event("joinGroup", "507f1f77bcf86cd799439011"))
write("event_payload", "groupCreated", event("groupCreated", {"groupId": "507f1f77bcf86cd799439011", "memberIds": [USER]}))
write("event_payload", "initiateVideoCall", event("initiateVideoCall", {
    "receiverId": "507f191e810c19729de860ea", "callerId": USER, "roomName": "call-abc123",
    "callerName": "Alice Adams", "receiverName": "Bob", "timestamp": "2025-01-01T00:00:00Z",
    "isGroupCall": False}))
write("event_payload", "initiateGroupVideoCall", event("initiateGroupVideoCall", {
    "groupId": "507f1f77bcf86cd799439011", "roomName": "group-room-1", "groupName": "Project Team"}))
write("event_payload", "acceptVideoCall", event("acceptVideoCall", {"callId": CALL, "roomName": "call-abc123"}))
write("event_payload", "rejectVideoCall", event("rejectVideoCall", {"callId": CALL, "callerId": USER}))
write("event_payload", "endVideoCall", event("endVideoCall", {"callId": CALL, "endForAll": True}))
write("event_payload", "injection", event("initiateVideoCall", {"receiverId": {"$ne": None}}))
write("event_payload", "named-unknown-event", b"\xf0\x00unknownEventName\n{}")
write("event_payload", "generated", bytes([5, 1]) + bytes(range(0, 64)))

# login_body: the raw request body.
write("login_body", "login", json.dumps({"username": "alice", "password": "alice-demo-pass"}))
write("login_body", "register", json.dumps({"username": "new_user.1", "password": "correct horse battery", "displayName": "  New User  "}))
write("login_body", "group-create", json.dumps({"name": "Project Team", "memberIds": [USER, "507f191e810c19729de860ea"]}))
write("login_body", "add-member", json.dumps({"userId": USER}))
write("login_body", "injection", json.dumps({"username": {"$ne": None}, "password": {"$gt": ""}}))
write("login_body", "not-an-object", "[\"alice\",\"alice-demo-pass\"]")

# client_ip: line 1 = peer, then x:/f:/X:/F: headers (see fuzz_targets/client_ip.rs).
write("client_ip", "untrusted-peer-spoofing", "203.0.113.9\nx:1.2.3.4\nf:for=5.6.7.8\n")
write("client_ip", "xff-chain", "127.0.0.1\nx:6.6.6.6, 198.51.100.7, 10.1.2.3\n")
write("client_ip", "forwarded-ipv6", "10.0.0.2\nf:for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https\n")
write("client_ip", "garbage-hop", "10.0.0.2\nx:1.2.3.4, not-an-ip\n")
write("client_ip", "mapped-peer", "::ffff:10.9.9.9\nX:192.0.2.1:8080\nr:198.51.100.1\n")
write("client_ip", "both-headers", "10.1.1.1\nx:192.0.2.7\nF:For=unknown;by=10.0.0.1, for=192.0.2.60\n")
