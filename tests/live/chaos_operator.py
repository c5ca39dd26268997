"""The operator of the chaos run (tests/live/chaos.py): one process beside the clients.

It works in the Django admin over HTTP, as a person would (a logged-in session, the CSRF token of
each form), while the clients create, send and pay invoices and gunicorn is killed under them:

- opens a client's invoice in the admin and saves its notes (the form read before a payment lands
  or a send issues it): the save must never lose or undo what happened since;
- creates a draft of its own through the API and, at once, deletes it in the admin and sends it
  through the API: either it is deleted and the send finds nothing (404), or it is sent and the
  delete is refused; never a sent invoice deleted;
- creates a draft and deletes it through the API from two threads at once: one 204, one 404.

What it sees goes to its journal in the clients' format ("unexpected", "server_error"), which the
checker reads with theirs. The operator's saves mark the notes with OPERATOR_MARK, which the
checker strips to find the client's key; its own drafts' notes start with OPERATOR_DRAFT.
"""

from __future__ import annotations

import json
import random
import threading
import time

import requests
from admin_form import PostedFields

OPERATOR_MARK = " · checked by the operator"
OPERATOR_DRAFT = "operator-draft-"
TIMEOUT = (2.0, 10.0)
CLIENT_INDEX = -1  # the journal's "client" of the operator's records


class Operator:
    def __init__(self, *, base_url, username, password, token, customer, journal_path, seed, deadline):
        self.base_url = base_url
        self.username, self.password = username, password
        self.api = requests.Session()
        self.api.headers["Authorization"] = f"Token {token}"
        self.customer = customer
        self.rng = random.Random(seed)
        self.deadline = deadline
        self.journal = open(journal_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in run())
        self.lock = threading.Lock()
        # The session and CSRF cookies are Secure (DJANGO_DEBUG=0), which requests never sends over
        # plain HTTP: they are kept here and sent by hand.
        self.cookies: dict[str, str] = {}
        self.drafts = 0

    # --- plumbing --------------------------------------------------------------------------------

    def record(self, kind: str, **fields) -> None:
        with self.lock:
            self.journal.write(json.dumps({"t": kind, "client": CLIENT_INDEX, **fields}) + "\n")
            self.journal.flush()

    def unexpected(self, what: str, **fields) -> None:
        self.record("unexpected", what=what, **fields)

    def _checked(self, method: str, path: str, response: requests.Response | None):
        if response is not None and response.status_code >= 500:
            self.record(
                "server_error",
                method=method,
                path=path,
                status=response.status_code,
                body=response.text[:500],
            )
        return response

    def admin(self, method: str, path: str, data: dict | None = None) -> requests.Response | None:
        """One admin request with the operator's cookies; None when the server gave no answer."""
        cookie = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        try:
            response = requests.request(
                method,
                self.base_url + path,
                data=data,
                headers={"Cookie": cookie, "Referer": self.base_url + path},
                allow_redirects=False,
                timeout=TIMEOUT,
            )
        except requests.RequestException:
            return None
        self.cookies.update(response.cookies.get_dict())
        return self._checked(method, path, response)

    def api_call(self, method: str, path: str, body: dict | None = None) -> requests.Response | None:
        try:
            response = self.api.request(method, self.base_url + path, json=body, timeout=TIMEOUT)
        except requests.RequestException:
            return None
        return self._checked(method, path, response)

    def form(self, path: str) -> dict | None:
        page = self.admin("GET", path)
        if page is None or page.status_code != 200:
            return None
        parser = PostedFields()
        parser.feed(page.text)
        return parser.fields

    def log_in(self) -> bool:
        fields = self.form("/admin/login/")
        if fields is None:
            return False
        fields.update(username=self.username, password=self.password, next="/admin/")
        response = self.admin("POST", "/admin/login/", fields)
        return response is not None and response.status_code == 302 and "sessionid" in self.cookies

    # --- the operator's work ---------------------------------------------------------------------

    def run(self) -> None:
        try:
            while time.monotonic() < self.deadline:
                if "sessionid" not in self.cookies and not self.log_in():
                    time.sleep(0.2)
                    continue
                step = self.rng.choice(
                    (self.save_notes, self.save_notes, self.delete_racing_send, self.double_delete)
                )
                step()
        finally:
            self.journal.close()

    def save_notes(self) -> None:
        """Save a client's invoice in the admin with its notes marked (the form read before the race)."""
        listing = self.api_call("GET", "/api/invoices/?page_size=50&status=draft&status=sent&status=overdue")
        if listing is None or listing.status_code != 200:
            return
        candidates = [i for i in listing.json()["results"] if not i["notes"].startswith(OPERATOR_DRAFT)]
        if not candidates:
            return
        invoice = self.rng.choice(candidates)
        path = f"/admin/invoices/invoice/{invoice['id']}/change/"
        fields = self.form(path)
        if fields is None or "notes" not in fields:
            return
        fields["notes"] = fields["notes"].split(OPERATOR_MARK)[0] + OPERATOR_MARK
        fields["_save"] = "Save"
        response = self.admin("POST", path, fields)
        if response is not None and response.status_code not in (302,):
            self.unexpected("admin save of an invoice", status=response.status_code, invoice=invoice["id"])
        self.record("operator_save", invoice=invoice["id"], status=getattr(response, "status_code", None))

    def new_draft(self) -> int | None:
        self.drafts += 1
        body = {
            "customer": self.customer,
            "due_date": "2030-01-31",
            "notes": f"{OPERATOR_DRAFT}{self.drafts}",
            "lines": [{"description": "Operator's draft", "quantity": "1", "unit_price": "1.00"}],
        }
        response = self.api_call("POST", "/api/invoices/", body)
        return response.json()["id"] if response is not None and response.status_code == 201 else None

    def delete_racing_send(self) -> None:
        """The admin's delete confirmation and the API's send of one draft, at once."""
        draft = self.new_draft()
        if draft is None:
            return
        delete_path = f"/admin/invoices/invoice/{draft}/delete/"
        confirm = self.form(delete_path)
        if confirm is None:
            return
        confirm["post"] = "yes"
        results: dict = {}
        barrier = threading.Barrier(2, timeout=5)

        def deleting():
            barrier.wait()
            results["delete"] = self.admin("POST", delete_path, confirm)

        thread = threading.Thread(target=deleting)
        thread.start()
        barrier.wait()
        results["send"] = self.api_call("POST", f"/api/invoices/{draft}/send/")
        thread.join(30)
        deleted, sent = results.get("delete"), results["send"]
        after = self.api_call("GET", f"/api/invoices/{draft}/")
        if deleted is None or sent is None or after is None:
            return  # the server was killed under it: the outcome is unknown
        exists = after.status_code == 200
        if sent.status_code == 200 and not exists:
            self.unexpected("a sent invoice was deleted", invoice=draft, delete=deleted.status_code)
        if exists and after.json()["status"] == "draft":
            self.unexpected("a draft neither deleted nor sent", invoice=draft, send=sent.status_code)
        if sent.status_code not in (200, 404, 409):
            self.unexpected("send racing a delete", invoice=draft, status=sent.status_code)
        self.record("operator_delete_race", invoice=draft, send=sent.status_code, exists=exists)

    def double_delete(self) -> None:
        """Two API deletes of one draft at once: one 204, the other 404."""
        draft = self.new_draft()
        if draft is None:
            return
        results: list = [None, None]
        barrier = threading.Barrier(2, timeout=5)

        def deleting(slot: int) -> None:
            barrier.wait()
            results[slot] = self.api_call("DELETE", f"/api/invoices/{draft}/")

        threads = [threading.Thread(target=deleting, args=(slot,)) for slot in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        if None in results:
            return
        statuses = sorted(r.status_code for r in results)
        if statuses != [204, 404]:
            self.unexpected("two deletes of one draft", invoice=draft, statuses=statuses)
        self.record("operator_double_delete", invoice=draft, statuses=statuses)


def operator_main(base_url, username, password, token, customer, journal_path, seed, deadline) -> None:
    Operator(
        base_url=base_url,
        username=username,
        password=password,
        token=token,
        customer=customer,
        journal_path=journal_path,
        seed=seed,
        deadline=deadline,
    ).run()
