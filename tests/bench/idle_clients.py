#!/usr/bin/python3
"""Open N PostgreSQL client connections, log each one in, and keep them idle.

Used by bench.py to measure a pooler's memory per idle client.  It speaks
just enough of the wire protocol to log in (StartupMessage, then trust,
cleartext, MD5 or SCRAM-SHA-256 until ReadyForQuery) and then holds the
socket open without sending anything.  SCRAM's salted password is computed
once per (salt, iterations), so 10,000 logins cost the client almost nothing
and the pooler's side of the handshake is what is measured.

Sources are spread over several loopback addresses (IP_BIND_ADDRESS_NO_PORT:
the port is chosen at connect time, per 4-tuple), so 10,000 connections do not
compete with the rest of the machine for one address's ephemeral ports.

Protocol with the parent, one line each on stdout / stdin:
  -> READY <open> ok=<n> failed=<n> [first error]   after each --counts step
  <- any line: go on to the next step (after the last: close all and exit)

  idle_clients.py --host H --port P --counts 1000,10000 [--src-net 127.0.23]
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import resource
import socket
import struct
import sys

IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h


def _msg(kind, body):
    return kind + struct.pack("!I", len(body) + 4) + body


def _startup(user, dbname):
    params = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in
                      (("user", user), ("database", dbname),
                       ("application_name", "bench-idle")))
    body = struct.pack("!I", 196608) + params + b"\0"
    return struct.pack("!I", len(body) + 4) + body


_salted = {}


def _salted_password(password, salt, iters):
    key = (salt, iters)
    if key not in _salted:
        _salted[key] = hashlib.pbkdf2_hmac("sha256", password.encode(), salt,
                                           iters)
    return _salted[key]


class LoginError(Exception):
    pass


async def _read_msg(reader):
    hdr = await reader.readexactly(5)
    n = struct.unpack("!I", hdr[1:])[0]
    return hdr[:1], await reader.readexactly(n - 4)


async def login(host, port, src, user, password, dbname):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        if src:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((src, 0))
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(_startup(user, dbname))
        nonce = client_first_bare = None
        while True:
            kind, body = await _read_msg(reader)
            if kind == b"Z":
                return writer
            if kind == b"E":
                fields = dict((f[:1], f[1:].decode(errors="replace"))
                              for f in body.split(b"\0") if f)
                raise LoginError("%s %s" % (fields.get(b"C"), fields.get(b"M")))
            if kind != b"R":
                continue  # ParameterStatus, BackendKeyData, NoticeResponse
            code = struct.unpack("!I", body[:4])[0]
            if code == 0:
                continue
            if code == 3:  # cleartext
                writer.write(_msg(b"p", password.encode() + b"\0"))
            elif code == 5:  # md5
                inner = hashlib.md5((password + user).encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                writer.write(_msg(b"p", b"md5" + outer.encode() + b"\0"))
            elif code == 10:  # SASL
                if b"SCRAM-SHA-256\0" not in body[4:]:
                    raise LoginError("no SCRAM-SHA-256 offered")
                nonce = base64.b64encode(os.urandom(18)).decode()
                client_first_bare = "n=,r=" + nonce
                first = ("n,," + client_first_bare).encode()
                writer.write(_msg(b"p", b"SCRAM-SHA-256\0" +
                                  struct.pack("!I", len(first)) + first))
            elif code == 11:  # SASLContinue: server-first
                server_first = body[4:].decode()
                attrs = dict(a.split("=", 1) for a in server_first.split(","))
                if not attrs["r"].startswith(nonce):
                    raise LoginError("bad SCRAM nonce")
                salted = _salted_password(password,
                                          base64.b64decode(attrs["s"]),
                                          int(attrs["i"]))
                final_wo_proof = "c=biws,r=" + attrs["r"]
                auth_msg = ",".join((client_first_bare, server_first,
                                     final_wo_proof)).encode()
                client_key = hmac.new(salted, b"Client Key",
                                      hashlib.sha256).digest()
                stored = hashlib.sha256(client_key).digest()
                sig = hmac.new(stored, auth_msg, hashlib.sha256).digest()
                proof = bytes(a ^ b for a, b in zip(client_key, sig))
                writer.write(_msg(b"p", (final_wo_proof + ",p=" +
                                         base64.b64encode(proof).decode())
                                  .encode()))
            elif code == 12:  # SASLFinal (server signature not checked)
                continue
            else:
                raise LoginError("unsupported auth request %d" % code)
    except BaseException:
        writer.close()
        raise


async def main(a):
    loop = asyncio.get_running_loop()
    srcs = ["%s.%d" % (a.src_net, 100 + i) for i in range(a.src_addrs)] \
        if a.src_net else [None]
    conns, failed, first_err = [], 0, ""
    sem = asyncio.Semaphore(a.parallel)

    async def one(i):
        nonlocal failed, first_err
        async with sem:
            try:
                w = await asyncio.wait_for(
                    login(a.host, a.port, srcs[i % len(srcs)], a.user,
                          a.password, a.dbname), a.timeout)
                conns.append(w)
            except Exception as e:  # count, report the first, go on
                failed += 1
                if not first_err:
                    first_err = "%s: %s" % (type(e).__name__, e)

    for target in a.counts:
        todo = target - len(conns) - failed
        if todo > 0:
            await asyncio.gather(*(one(len(conns) + failed + k)
                                   for k in range(todo)))
        print("READY %d ok=%d failed=%d %s" % (len(conns), len(conns), failed,
                                               first_err), flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
    for w in conns:
        try:
            w.write(_msg(b"X", b""))
            w.close()
        except Exception:
            pass
    await asyncio.sleep(0.2)


def _parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", default="app")
    ap.add_argument("--password", default="app-secret")
    ap.add_argument("--dbname", default="app")
    ap.add_argument("--counts", default="1000,10000",
                    type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--src-net", default="",
                    help="bind sources to SRC_NET.100, .101, ...")
    ap.add_argument("--src-addrs", type=int, default=20)
    ap.add_argument("--parallel", type=int, default=200,
                    help="logins in flight at once")
    ap.add_argument("--timeout", type=float, default=60.0)
    return ap.parse_args()


if __name__ == "__main__":
    args = _parse()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        asyncio.run(main(args))
    except KeyboardInterrupt:
        pass
