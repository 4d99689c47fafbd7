#!/usr/bin/env python3
"""A loopback stand-in for the Anthropic Messages API, to see what the real Claude Code CLI
writes when the provider refuses it.

Usage: stub_api.py PORT MODE LOGFILE [BODYLOG]

Every POST /v1/messages is answered as MODE says, and logged (one line a request) to LOGFILE:
  429          rate_limit_error, with retry-after
  429-unified  the same, with the unified limit headers of a plan's five-hour usage limit
               (anthropic-ratelimit-unified-status: rejected, …-5h-reset: now + 1 h)
  529          overloaded_error
  500          api_error
  success      a streamed answer "hi" with usage (12 input, 5 output tokens)
  hang         no answer at all (the CLI is then killed mid-request, to record a resumed session)
With BODYLOG, each request's body is appended to it too (one JSON a line), to see what the CLI
sent (scripts/claude/encrypted-resume-check.sh reads the resumed conversation there).
Used by scripts/record-claude-fixtures.sh.
"""
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, MODE, LOG = int(sys.argv[1]), sys.argv[2], sys.argv[3]
BODYLOG = sys.argv[4] if len(sys.argv) > 4 else None
RESET = int(time.time()) + 3600

def log(line):
    with open(LOG, "a") as f:
        f.write(line + "\n")

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_HEAD(self):
        self.send_response(200); self.end_headers()

    def do_GET(self):
        self.send_response(200); self.send_header("content-type", "application/json"); self.end_headers()
        self.wfile.write(b"{}")

    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        body = self.rfile.read(n)
        log(f"{self.path} {MODE}")
        if BODYLOG:
            with open(BODYLOG, "ab") as f:
                f.write(body.replace(b"\n", b" ") + b"\n")
        if not self.path.startswith("/v1/messages") or self.path.startswith("/v1/messages/count_tokens"):
            self.send_response(200); self.send_header("content-type", "application/json"); self.end_headers()
            self.wfile.write(json.dumps({"input_tokens": 10}).encode())
            return
        try:
            req = json.loads(body)
        except ValueError:
            req = {}
        if MODE in ("429", "429-unified"):
            self.send_response(429)
            self.send_header("content-type", "application/json")
            self.send_header("request-id", f"req_stub_{time.time_ns()}")
            self.send_header("retry-after", "1")
            if MODE == "429-unified":
                self.send_header("anthropic-ratelimit-unified-status", "rejected")
                self.send_header("anthropic-ratelimit-unified-5h-status", "rejected")
                self.send_header("anthropic-ratelimit-unified-5h-reset", str(RESET))
                self.send_header("anthropic-ratelimit-unified-5h-utilization", "1.0")
                self.send_header("anthropic-ratelimit-unified-reset", str(RESET))
                self.send_header("anthropic-ratelimit-unified-representative-claim", "five_hour")
            self.end_headers()
            self.wfile.write(json.dumps({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}}).encode())
            return
        if MODE == "hang":
            time.sleep(3600)
            return
        if MODE in ("529", "500"):
            code = int(MODE)
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("request-id", f"req_stub_{time.time_ns()}")
            self.end_headers()
            kind = "overloaded_error" if code == 529 else "api_error"
            self.wfile.write(json.dumps({"type": "error", "error": {"type": kind, "message": "Overloaded" if code == 529 else "Internal server error"}}).encode())
            return
        # success
        model = req.get("model", "claude-sonnet-4-5")
        usage = {"input_tokens": 12, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        msg = {"id": f"msg_stub_{time.time_ns()}", "type": "message", "role": "assistant", "model": model,
               "content": [], "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}
        if req.get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("request-id", f"req_stub_{time.time_ns()}")
            self.send_header("anthropic-ratelimit-unified-status", "allowed")
            self.send_header("anthropic-ratelimit-unified-5h-utilization", "0.42")
            self.end_headers()
            def ev(name, data):
                self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()); self.wfile.flush()
            ev("message_start", {"type": "message_start", "message": msg})
            ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
            ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}})
            ev("content_block_stop", {"type": "content_block_stop", "index": 0})
            ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 5}})
            ev("message_stop", {"type": "message_stop"})
        else:
            msg.update(content=[{"type": "text", "text": "hi"}], stop_reason="end_turn", usage=usage)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(msg).encode())

ThreadingHTTPServer(("127.0.0.1", PORT), H).serve_forever()
