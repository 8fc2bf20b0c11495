#!/usr/bin/env python3
"""A local stand-in for the GitHub REST API, for the demo that scripts/run.sh gives.

Serves a few documented endpoints with the real API's response shapes (trimmed to the
fields a client reads) on 127.0.0.1. It prints the port it listens on, then one line
per request saying whether an Authorization header came with it (never its value).
"""
import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMITS = [
    {
        "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
        "commit": {
            "message": "Fix all the bugs",
            "author": {"name": "Monalisa Octocat", "email": "octocat@github.com", "date": "2026-11-28T16:00:49Z"},
        },
        "author": {"login": "octocat", "id": 1},
        "html_url": "https://github.com/octocat/Hello-World/commit/6dcb09b5b57875f334f61aebed695e2e4193db5e",
    },
    {
        "sha": "553c2077f0edc3d5dc5d17262f6aa498e69d6f8e",
        "commit": {
            "message": "Initial commit",
            "author": {"name": "The Octocat", "email": "octocat@github.com", "date": "2026-11-27T09:12:00Z"},
        },
        "author": {"login": "octocat", "id": 1},
        "html_url": "https://github.com/octocat/Hello-World/commit/553c2077f0edc3d5dc5d17262f6aa498e69d6f8e",
    },
]


def repository(owner, repo):
    return {
        "id": 1296269,
        "name": repo,
        "full_name": f"{owner}/{repo}",
        "private": False,
        "default_branch": "main",
        "description": "This your first repo!",
        "html_url": f"https://github.com/{owner}/{repo}",
        "updated_at": "2026-11-28T16:00:49Z",
    }


def pull(owner, repo):
    return {
        "number": 1347,
        "state": "open",
        "title": "Amazing new feature",
        "draft": False,
        "user": {"login": "octocat", "id": 1},
        "head": {"ref": "new-topic", "sha": COMMITS[0]["sha"]},
        "base": {"ref": "main", "sha": COMMITS[1]["sha"]},
        "html_url": f"https://github.com/{owner}/{repo}/pull/1347",
        "created_at": "2026-11-28T19:01:12Z",
    }


ROUTES = [
    (re.compile(r"^/repos/([^/]+)/([^/]+)/commits$"), lambda o, r: COMMITS),
    (re.compile(r"^/repos/([^/]+)/([^/]+)/pulls$"), lambda o, r: [pull(o, r)]),
    (re.compile(r"^/repos/([^/]+)/([^/]+)$"), repository),
    (re.compile(r"^/users/([^/]+)/repos$"), lambda o: [repository(o, "Hello-World")]),
    # github.repositories asks what the owner is (a user or an organisation) first.
    (re.compile(r"^/users/([^/]+)$"), lambda o: {"login": o, "type": "User"}),
]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        path = self.path.split("?", 1)[0]
        auth = "with" if self.headers.get("Authorization") else "without"
        print(f"fake-github: GET {self.path} ({auth} Authorization)", flush=True)
        for pattern, answer in ROUTES:
            match = pattern.match(path)
            if match:
                return self.reply(200, answer(*match.groups()))
        self.reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
