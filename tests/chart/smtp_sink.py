"""A minimal SMTP sink (stdlib only) for tests/chart/run_test.py: accepts every mail and
prints it as one JSON line {"to": [...], "data": "<raw message>"} on stdout."""
import json
import socketserver
import sys

MAX_BYTES = 1 << 20


class Session(socketserver.StreamRequestHandler):
    timeout = 30

    def reply(self, text):
        self.wfile.write(f"{text}\r\n".encode())

    def handle(self):
        self.reply("220 sink ESMTP")
        to, sender = [], None
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            cmd = line.decode("utf-8", "replace").strip()
            verb = cmd[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250-sink\r\n250 8BITMIME" if verb == "EHLO" else "250 sink")
            elif verb == "MAIL":
                sender, to = cmd, []
                self.reply("250 OK")
            elif verb == "RCPT":
                to.append(cmd.split(":", 1)[1].strip().strip("<>"))
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end with .")
                data, size = [], 0
                while True:
                    part = self.rfile.readline(65536)
                    size += len(part)
                    if not part or part in (b".\r\n", b".\n") or size > MAX_BYTES:
                        break
                    data.append(part[1:] if part.startswith(b"..") else part)
                print(json.dumps({"from": sender, "to": to, "data": b"".join(data).decode("utf-8", "replace")}), flush=True)
                self.reply("250 OK queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            elif verb in ("RSET", "NOOP"):
                self.reply("250 OK")
            else:
                self.reply("502 not implemented")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    port = int(sys.argv[1])
    with Server(("0.0.0.0", port), Session) as s:
        print(f"smtp sink on {port}", flush=True)
        s.serve_forever()
