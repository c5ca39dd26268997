"""What a browser posts from an admin page, read from its HTML; shared by the admin tests
(tests/admin_helpers.py) and the chaos run's operator (tests/live/chaos_operator.py). Standard
library only: the operator runs in its own process, without Django."""

from html.parser import HTMLParser


class PostedFields(HTMLParser):
    """What a browser posts from a page: its named inputs (no buttons, checkboxes only when
    checked), the selected option of each select (a list of them for a multiple select, which
    posts nothing when none is selected), the text of each textarea."""

    def __init__(self):
        super().__init__()
        self.fields: dict[str, str | list[str]] = {}
        self._select: str | None = None
        self._multiple = False
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        name = attrs.get("name")
        if tag == "input" and name and attrs.get("type") not in ("submit", "button"):
            if attrs.get("type") != "checkbox" or "checked" in attrs:
                self.fields[name] = attrs.get("value") or ""
        elif tag == "select" and name:
            self._select, self._multiple = name, "multiple" in attrs
            if not self._multiple:
                self.fields.setdefault(name, "")
        elif tag == "option" and self._select and "selected" in attrs:
            if self._multiple:
                self.fields.setdefault(self._select, []).append(attrs.get("value") or "")
            else:
                self.fields[self._select] = attrs.get("value") or ""
        elif tag == "textarea" and name:
            self._textarea = name
            self.fields[name] = ""

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea" and self._textarea:
            # A browser drops the one newline Django writes after the opening tag.
            text = self.fields[self._textarea]
            self.fields[self._textarea] = text.removeprefix("\r\n").removeprefix("\n")
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.fields[self._textarea] += data
