"""A Discord/Slack-like webhook on loopback that records and counts what was posted."""

from __future__ import annotations

from tests.fakes.base import FakeServer, Request, Response


class FakeWebhook(FakeServer):
    """Accepts JSON POSTs on any path (answering 204 like Discord) and keeps them.

    `messages` holds the posted JSON bodies in order; `texts()` their readable text
    ("content" for Discord, "text" for Slack); `fail(...)` scripts an outage.
    """

    def route(self, req: Request) -> Response:
        if req.method != "POST":
            return Response(405, {"message": "405: Method Not Allowed"})
        return Response(204)

    @property
    def messages(self) -> list[dict]:
        return [r.json() for r in self.requests if r.method == "POST" and r.body]

    def texts(self) -> list[str]:
        return [m.get("content") or m.get("text") or "" for m in self.messages]

    def matching(self, needle: str) -> list[str]:
        """The posted texts that contain needle (case-insensitive)."""
        return [t for t in self.texts() if needle.lower() in t.lower()]

    @property
    def raw_bodies(self) -> list[bytes]:
        return [r.body for r in self.requests]
