"""fakenode.py - a fake Redis node on loopback that answers with chosen
bytes, to feed a client bad redirections and slot maps.

Used by test_library_cluster.py (the one-hash store's connection) and
test_net.py (the network layer for many nodes). It speaks just enough RESP:
reads commands, answers SCRIPT with an error, CLUSTER with `slots`, and
everything else with `reply`.
"""
import socket
import threading


class FakeNode:
    """A RESP server on loopback that answers the handshake, then answers
    every script call with `reply` (bytes): to feed the client bad
    redirections. Bounded: serves at most 200 connections."""

    def __init__(self, reply, slots=b"-ERR This instance has cluster support disabled\r\n"):
        self.reply, self.slots = reply, slots
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        self.sock.settimeout(60)
        for _ in range(200):
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.talk, args=(conn,), daemon=True).start()

    def talk(self, conn):
        f = conn.makefile("rb")
        try:
            for _ in range(10000):
                line = f.readline()
                if not line.startswith(b"*"):
                    return
                args = []
                for _ in range(int(line[1:])):
                    n = int(f.readline()[1:])
                    args.append(f.read(n + 2)[:-2])
                cmd = args[0].upper()
                if cmd == b"SCRIPT":
                    conn.sendall(b"-ERR no scripts here\r\n")
                elif cmd == b"CLUSTER":
                    conn.sendall(self.slots)
                else:
                    conn.sendall(self.reply)
        except (OSError, ValueError):
            return
        finally:
            conn.close()

    def close(self):
        self.sock.close()
